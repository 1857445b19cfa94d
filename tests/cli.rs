//! The `unigrpo` command, run as a user would.

mod common;

use std::process::Command;

fn unigrpo() -> Command {
    Command::new(common::unigrpo_bin())
}

/// A temporary directory with a prompt file (`text`) and the path of a run directory in it.
fn scratch_run(text: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("p.txt");
    std::fs::write(&prompts, text).unwrap();
    let run = dir.path().join("run");
    (dir, prompts, run)
}

/// `unigrpo train` on the smallest configuration (`common::tiny_train`).
fn tiny_train(
    prompts: &std::path::Path,
    run: &std::path::Path,
    steps: u64,
    reward: &str,
    samples_every: u64,
) -> Command {
    common::tiny_train(
        &common::unigrpo_bin(),
        prompts,
        run,
        steps,
        reward,
        samples_every,
    )
}

#[test]
fn generate_prints_reasoning_and_writes_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let o = unigrpo()
        .args(["generate", "--model"])
        .arg(common::shapes_dir())
        .args([
            "--prompt",
            "a circle the colour of the sky",
            "--seed",
            "3",
            "--threads",
            "1",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("reasoning: "), "{stdout}");
    let img = unigrpo::RgbImage::load_png(&out).unwrap();
    assert_eq!((img.width, img.height), (16, 16));
}

#[test]
fn eval_json_is_one_object_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("p.txt");
    std::fs::write(&prompts, "# a comment\na red circle\n\ntwo blue squares\n").unwrap();
    let grid = dir.path().join("grid.png");
    let records = dir.path().join("r.jsonl");
    let o = unigrpo()
        .args(["eval", "--model"])
        .arg(common::shapes_dir())
        .arg("--prompts")
        .arg(&prompts)
        .args([
            "--reward",
            "shapes",
            "--samples",
            "3",
            "--seed",
            "1",
            "--threads",
            "1",
            "--json",
            "--grid",
        ])
        .arg(&grid)
        .arg("--records")
        .arg(&records)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("exactly one JSON object on stdout");
    assert_eq!(v["n_prompts"], 2);
    assert_eq!(v["n_images"], 6);
    // one record per image; both prompts are single groups of 3 constraints, so a record's
    // score is the share of them met, and the summary's unmet rates are the records' tally
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&records)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    let mut tally = std::collections::BTreeMap::<String, f64>::new();
    for r in &lines {
        let unmet: Vec<&str> = r["unmet"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let score = r["score"].as_f64().unwrap();
        assert!((score - (3 - unmet.len()) as f64 / 3.0).abs() < 1e-6, "{r}");
        assert_eq!(r["all_met"], unmet.is_empty(), "{r}");
        for c in unmet {
            assert!(c.starts_with("group 1 "), "{r}");
            *tally.entry(c.to_string()).or_default() += 1.0 / 6.0;
        }
    }
    let rates = v["by_kind"]["single_group"]["unmet_rate"]
        .as_object()
        .unwrap();
    assert_eq!(rates.len(), tally.len(), "{v}");
    for (c, rate) in &tally {
        assert!((rates[c].as_f64().unwrap() - rate).abs() < 1e-9, "{c}: {v}");
    }
    let mean = v["reward_mean"].as_f64().unwrap();
    let strict = v["strict_rate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&mean) && (0.0..=1.0).contains(&strict));
    assert!(grid.exists());
    // the shipped model's reasoning reads every explicit prompt as the prompt does
    assert_eq!(v["reasoning_agreement"], 1.0, "{v}");
    // the sessions with the weights built in hold no initializer their nodes never read (ONNX
    // Runtime warned about each, 129 lines per denoising loop, before the cut parts dropped them)
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("Removing initializer"), "{err}");
}

#[test]
fn errors_name_the_problem() {
    let o = unigrpo()
        .args([
            "generate",
            "--model",
            "/no/such/model",
            "--prompt",
            "a red circle",
            "--out",
            "/tmp/never.png",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/no/such/model"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("p.txt");
    std::fs::write(&prompts, "a red circle\na purple elephant\n").unwrap();
    let o = unigrpo()
        .args(["eval", "--model"])
        .arg(common::shapes_dir())
        .arg("--prompts")
        .arg(&prompts)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("p.txt:2") && err.contains("purple elephant"),
        "{err}"
    );
}

#[test]
fn inspect_describes_the_package() {
    let o = unigrpo()
        .args(["inspect", "--model"])
        .arg(common::shapes_dir())
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for needle in [
        "tiny-shapes",
        "velocity_vjp",
        "text_decode",
        "cond_ids <- context_ids",
        "parameters:",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in\n{s}");
    }
}

#[test]
fn train_writes_a_run_directory_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("p.txt");
    std::fs::write(
        &prompts,
        "a red circle\ntwo blue squares\na few warm-coloured shapes\n",
    )
    .unwrap();
    let run = dir.path().join("run");
    let train = |steps: &str, extra: &[&str]| {
        let o = unigrpo()
            .args(["train", "--model"])
            .arg(common::shapes_dir())
            .arg("--prompts")
            .arg(&prompts)
            .args([
                "--reward",
                "shapes",
                "--steps",
                steps,
                "--group-size",
                "3",
                "--prompts-per-step",
                "2",
            ])
            .args([
                "--rollout-steps",
                "4",
                "--threads",
                "1",
                "--checkpoint-every",
                "1",
                "--samples-every",
                "1",
                "--out",
            ])
            .arg(&run)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let err = train("2", &[]);
    assert!(err.contains("training configuration"), "{err}");
    // without a terminal the progress is one plain line per step
    assert!(
        err.contains("step 1/2: reward ") && err.contains("step 2/2: reward "),
        "{err}"
    );
    for f in [
        "metrics.jsonl",
        "checkpoint.safetensors",
        "samples.jsonl",
        "reward.png",
        "config.json",
        "model/unigrpo.json",
    ] {
        assert!(run.join(f).exists(), "missing {f}");
    }
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for key in [
        "step",
        "reward_mean",
        "reward_std",
        "frac_zero_std",
        "loss",
        "text_loss",
        "image_loss",
        "velocity_mse",
        "text_kl",
        "image_kl",
        "text_clip_frac",
        "image_clip_frac",
        "approx_kl",
        "grad_norm",
        "seconds",
    ] {
        assert!(lines[1].get(key).is_some(), "metrics lack {key}");
    }
    // resume: continues at step 3 with the checkpoint's configuration
    let err = train(
        "3",
        &[
            "--resume",
            run.join("checkpoint.safetensors").to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("resumed from") && err.contains("at step 2"),
        "{err}"
    );
    let n = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(n, 3);
    // the exported model generates
    let o = unigrpo()
        .args(["generate", "--model"])
        .arg(run.join("model"))
        .args(["--prompt", "a red circle", "--out"])
        .arg(dir.path().join("g.png"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn rollout_dump_has_the_documented_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("r.safetensors");
    let o = unigrpo()
        .args(["rollout", "--model"])
        .arg(common::shapes_dir())
        .args([
            "--prompt",
            "a few warm-coloured shapes",
            "--reward",
            "exec:python3 examples/reward_red.py",
        ])
        .args([
            "--group-size",
            "4",
            "--seed",
            "5",
            "--rollout-steps",
            "5",
            "--threads",
            "1",
            "--dump",
        ])
        .arg(&dump)
        .current_dir(common::root())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&dump).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let shape = |n: &str| {
        st.tensor(n)
            .unwrap_or_else(|_| panic!("no {n}"))
            .shape()
            .to_vec()
    };
    assert_eq!(shape("latents"), vec![4, 6, 3, 16, 16]);
    assert_eq!(shape("velocities"), vec![4, 5, 3, 16, 16]);
    assert_eq!(shape("timesteps"), vec![6]);
    assert_eq!(shape("image_logprobs"), vec![4, 5]);
    assert_eq!(shape("noise_level"), vec![1]);
    assert_eq!(shape("rewards"), vec![4]);
    assert_eq!(shape("advantages"), vec![4]);
    assert_eq!(shape("truncated"), vec![4]);
    let l = shape("token_ids")[1];
    assert_eq!(shape("token_logprobs"), vec![4, l]);
    assert_eq!(
        st.tensor("token_ids").unwrap().dtype(),
        safetensors::Dtype::I64
    );
    assert_eq!(
        st.tensor("token_mask").unwrap().dtype(),
        safetensors::Dtype::U8
    );
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let m = meta.metadata().clone().unwrap();
    assert_eq!(m["prompt"], "a few warm-coloured shapes");
    assert_eq!(m["seed"], "5");
    let reasoning: Vec<String> = serde_json::from_str(&m["reasoning"]).unwrap();
    assert_eq!(reasoning.len(), 4);
    // the exec reward (redness) was used: rewards are in [-1, 1], not the shapes score grid
    let rewards: Vec<f32> = st
        .tensor("rewards")
        .unwrap()
        .data()
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert!(rewards.iter().all(|r| (-1.0..=1.0).contains(r)));
}

#[test]
fn score_explains_what_the_reward_saw() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("s.png");
    // a red 5x5 square at the left of a black 16x16 image
    let mut data = vec![0u8; 16 * 16 * 3];
    for y in 5..10 {
        for x in 1..6 {
            data[(y * 16 + x) * 3] = 220;
            data[(y * 16 + x) * 3 + 1] = 40;
            data[(y * 16 + x) * 3 + 2] = 40;
        }
    }
    unigrpo::RgbImage::new(16, 16, data).save_png(&png).unwrap();
    let o = unigrpo()
        .args(["score", "--prompt", "a red square on the left", "--image"])
        .arg(&png)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        s.contains("Red Square: 25 pixels, box centre (3.5, 7.5)")
            && s.contains("score 1.000 (4 of 4")
            && !s.contains("not met"),
        "{s}"
    );
    let o = unigrpo()
        .args(["score", "--prompt", "a red square on the right", "--image"])
        .arg(&png)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains("score 0.750 (3 of 4") && s.contains("not met: position"),
        "{s}"
    );
}

/// Ctrl-C (SIGINT) during `train`: the step in flight is abandoned, a final checkpoint holds every
/// completed step, the exit status is 130, and `--resume` continues from exactly there.
#[test]
fn train_interrupted_by_sigint_checkpoints_and_resumes() {
    interrupted_run_checkpoints_and_resumes("INT");
}

/// SIGTERM (a batch scheduler's stop) and SIGHUP (a closed terminal) killed the run without its
/// final checkpoint: they now act as Ctrl-C does.
#[test]
fn train_stopped_by_sigterm_or_sighup_checkpoints_and_resumes() {
    interrupted_run_checkpoints_and_resumes("TERM");
    interrupted_run_checkpoints_and_resumes("HUP");
}

fn interrupted_run_checkpoints_and_resumes(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("p.txt");
    std::fs::write(&prompts, "a red circle\ntwo blue squares\n").unwrap();
    let run = dir.path().join("run");
    let args = |steps: &str| {
        let mut c = unigrpo();
        c.args(["train", "--model"])
            .arg(common::shapes_dir())
            .arg("--prompts")
            .arg(&prompts)
            .args(["--reward", "shapes", "--steps", steps, "--group-size", "2"])
            .args([
                "--prompts-per-step",
                "1",
                "--rollout-steps",
                "3",
                "--threads",
                "1",
            ])
            .args(["--checkpoint-every", "0", "--samples-every", "0", "--out"])
            .arg(&run);
        c
    };
    let child = args("100000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = run.join("metrics.jsonl");
    let lines = || {
        std::fs::read_to_string(&metrics)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let t0 = std::time::Instant::now();
    while lines() < 2 {
        assert!(t0.elapsed().as_secs() < 300, "no training progress");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let kill = Command::new("sh")
        .args(["-c", &format!("kill -{signal} {}", child.id())])
        .status()
        .unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("final checkpoint"), "{err}");
    assert!(run.join("reward.png").exists());
    let done = lines();
    assert!(done >= 2);
    // the checkpoint holds exactly the completed steps: resume runs one more
    let o = args(&(done + 1).to_string())
        .args(["--resume"])
        .arg(run.join("checkpoint.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains(&format!("at step {done}")), "{err}");
    assert_eq!(lines(), done + 1);
}

/// The core's log (and ONNX Runtime's) reaches the command line's stderr, filtered by RUST_LOG.
#[test]
fn rust_log_shows_the_core_log() {
    let m = common::shapes_dir();
    let o = unigrpo()
        .args(["inspect", "--model", m.to_str().unwrap()])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("ONNX Runtime candidate") && err.contains("thread pool"),
        "{err}"
    );
    let o = unigrpo()
        .args(["inspect", "--model", m.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("ONNX Runtime candidate"), "{err}");
    // a CPU load has nothing to warn about (ONNX Runtime's placement report is information)
    assert!(!err.contains("WARN"), "{err}");
}

/// `unigrpo inspect --json | head -1` panicked on the broken pipe (rc 101): it now ends quietly
/// as any Unix filter does (killed by SIGPIPE, nothing on stderr).
#[test]
fn a_closed_stdout_pipe_ends_quietly() {
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;
    let mut child = unigrpo()
        .args(["inspect", "--json", "--model"])
        .arg(common::shapes_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "{");
    // the reader is gone: the rest of the output meets a closed pipe
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        o.status.success() || o.status.signal() == Some(libc_sigpipe()),
        "{:?}: {stderr}",
        o.status
    );
}

fn libc_sigpipe() -> i32 {
    13
}

/// `inspect --verify` reports every file, and names the damaged one with exit status 1.
#[test]
fn inspect_verify_reports_each_file() {
    let o = unigrpo()
        .args(["inspect", "--verify", "--model"])
        .arg(common::shapes_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok       velocity_vjp.onnx") && stdout.contains("8 files, 0 not matching"),
        "{stdout}"
    );
    let tmp = common::copy_package(&common::shapes_dir());
    let p = tmp.path().join("tokenizer.json");
    let mut b = std::fs::read(&p).unwrap();
    b[10] ^= 1;
    std::fs::write(&p, b).unwrap();
    let o = unigrpo()
        .args(["inspect", "--verify", "--model"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("MISMATCH tokenizer.json           sha256"),
        "{stdout}"
    );
}

/// Settings that ran for minutes, grew to 22 GB or trained parameters to 1e30 with rc 0 are
/// refused up front, naming the flag and the limit.
#[test]
fn absurd_settings_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let run = |extra: &[&str]| {
        let o = unigrpo()
            .args(["generate", "--prompt", "two red circles", "--model"])
            .arg(common::shapes_dir())
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{extra:?}");
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let e = run(&["--threads", "100000"]);
    assert!(
        e.contains("intra_op_threads (--threads) is 100000: at most 4 x the"),
        "{e}"
    );
    let e = run(&["--upscale", "100000"]);
    assert!(
        e.contains("--upscale 100000: the image would be 1600000x1600000 pixels"),
        "{e}"
    );
    assert!(!out.exists());
    let o = unigrpo()
        .args([
            "train", "--reward", "shapes", "--steps", "1", "--lr", "1e30", "--model",
        ])
        .arg(common::shapes_dir())
        .arg("--prompts")
        .arg(common::shapes_dir().join("prompts/val.txt"))
        .arg("--out")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(1) && e.contains("learning_rate must be finite and in (0, 1]"),
        "{e}"
    );
}

/// Run directories: a fresh `train` over an existing run was silently mixed into it, two
/// trainers on one directory both ran, and after a kill `metrics.jsonl` kept duplicate steps
/// and torn lines. Now: refused without --resume or --force; --force starts over; a held lock
/// refuses a second trainer; resuming cuts the logs back to the checkpoint's step; leftover
/// temporary files are removed.
#[test]
fn run_directories_are_never_mixed() {
    use std::os::fd::AsRawFd;
    let (_dir, prompts, run) = scratch_run("a red circle\ntwo blue squares\n");
    let train = |steps: &str, extra: &[&str]| {
        tiny_train(&prompts, &run, steps.parse().unwrap(), "shapes", 0)
            .args(extra)
            .output()
            .unwrap()
    };
    let ok = |o: std::process::Output| {
        let e = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "{e}");
        e
    };
    ok(train("2", &[]));
    let metrics = || std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let steps = |t: &str| -> Vec<u64> {
        t.lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(steps(&metrics()), vec![1, 2]);
    // a fresh run over it is refused, and changes nothing
    let o = train("2", &[]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(1) && e.contains("already holds a run: pass --resume"),
        "{e}"
    );
    assert_eq!(steps(&metrics()), vec![1, 2]);
    // a held lock refuses a second trainer
    let f = std::fs::File::open(run.join(".lock")).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let o = train(
        "3",
        &[
            "--resume",
            run.join("checkpoint.safetensors").to_str().unwrap(),
        ],
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("is in use by another trainer"),
        "{e}"
    );
    drop(f);
    // a kill after a metrics line but before its checkpoint, a torn line and a temporary file:
    // the resumed run logs every step once and leaves no leftovers
    let ckpt_step2 = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    ok(train(
        "3",
        &[
            "--resume",
            run.join("checkpoint.safetensors").to_str().unwrap(),
        ],
    ));
    std::fs::write(run.join("checkpoint.safetensors"), &ckpt_step2).unwrap();
    let mut m = metrics();
    m.push_str("{\"step\": 4, \"reward_me");
    std::fs::write(run.join("metrics.jsonl"), m).unwrap();
    std::fs::write(run.join(".checkpoint.safetensors.tmp-1-0"), b"half").unwrap();
    std::fs::create_dir(run.join(".model.tmp-1-1")).unwrap();
    ok(train(
        "4",
        &[
            "--resume",
            run.join("checkpoint.safetensors").to_str().unwrap(),
        ],
    ));
    assert_eq!(steps(&metrics()), vec![1, 2, 3, 4]);
    assert!(!run.join(".checkpoint.safetensors.tmp-1-0").exists());
    assert!(!run.join(".model.tmp-1-1").exists());
    // --force starts over
    ok(train("1", &["--force"]));
    assert_eq!(steps(&metrics()), vec![1]);
    assert!(run.join("model/unigrpo.json").exists());
    let leftovers: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".tmp-") || n.contains(".old-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// An `exec:` reward that never answers hung `train` forever (and Ctrl-C kept waiting, and a
/// kill left the child and its PNGs behind). Now the timeout kills its process group and fails
/// the step, the run ends with its checkpoint, and neither the program nor its folder is left.
#[test]
fn a_hanging_reward_program_times_out_and_leaves_nothing() {
    let (_dir, prompts, run) = scratch_run("a red circle\n");
    let marker = format!("unigrpo-test-hang-{}", std::process::id());
    let t0 = std::time::Instant::now();
    let o = tiny_train(&prompts, &run, 3, &format!("exec:sleep 1000 # {marker}"), 0)
        .args(["--reward-timeout", "2"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("did not answer within 2 s (killed"), "{e}");
    assert!(t0.elapsed().as_secs() < 60, "{:?}", t0.elapsed());
    assert!(
        run.join("checkpoint.safetensors").exists(),
        "the final checkpoint"
    );
    let left: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains("tmp-reward"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let ps = Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "the reward program survived: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
}

/// Out-of-vocabulary or upper-case words silently became `<unk>` ("TWO RED CIRCLES" reasoned
/// "two red triangle"): a warning names them, and --strict-vocabulary refuses the prompt.
#[test]
fn unknown_prompt_words_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let gen = |strict: bool| {
        let mut c = unigrpo();
        c.args([
            "generate",
            "--prompt",
            "TWO RED circles",
            "--threads",
            "1",
            "--model",
        ])
        .arg(common::shapes_dir())
        .arg("--out")
        .arg(dir.path().join("u.png"));
        if strict {
            c.arg("--strict-vocabulary");
        }
        c.output().unwrap()
    };
    let o = gen(false);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("does not know (TWO, RED)"), "{e}");
    let o = gen(true);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(1) && e.contains("does not know (TWO, RED)"),
        "{e}"
    );
}

/// A full disk while writing the logs killed the run without its final checkpoint: the error
/// names the file and the reason, and the checkpoint of the completed steps is written.
/// (`samples.jsonl` is a link to /dev/full, which fails every write with ENOSPC.)
#[test]
fn a_full_disk_ends_the_run_with_its_checkpoint() {
    let (_dir, prompts, run) = scratch_run("a red circle\n");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::symlink("/dev/full", run.join("samples.jsonl")).unwrap();
    let o = tiny_train(&prompts, &run, 3, "shapes", 1).output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("samples.jsonl") && e.contains("No space left on device"),
        "{e}"
    );
    assert!(e.contains("checkpoint at step 1"), "{e}");
    assert!(run.join("checkpoint.safetensors").exists());
}

/// SIGKILL at seeded random moments, each followed by `--resume`: the run ends with exactly the
/// uninterrupted run's parameters, every step logged once, and no temporary files.
#[test]
fn random_kills_and_resumes_reproduce_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("p.txt");
    std::fs::write(&prompts, "a red circle\ntwo blue squares\n").unwrap();
    let steps = 8;
    let cmd = |run: &std::path::Path| {
        let mut c = tiny_train(&prompts, run, steps, "shapes", 2);
        let ckpt = run.join("checkpoint.safetensors");
        if ckpt.exists() {
            c.arg("--resume").arg(ckpt);
        }
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    };
    let clean = dir.path().join("clean");
    assert!(cmd(&clean).status().unwrap().success());
    let killed = dir.path().join("killed");
    // a small LCG: the kill delays are fixed by the seed
    let mut x: u64 = 20261201;
    let mut kills = 0;
    for _ in 0..5 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = std::time::Duration::from_millis(800 + (x >> 33) % 1500);
        let mut child = cmd(&killed).spawn().unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
    }
    let last = cmd(&killed)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    assert!(
        kills >= 2,
        "only {kills} kills landed: the run is faster than the delays"
    );
    let params =
        |run: &std::path::Path| std::fs::read(run.join("model/params.safetensors")).unwrap();
    assert!(
        params(&clean) == params(&killed),
        "the resumed run's parameters differ"
    );
    assert_eq!(
        common::logged_steps(&killed),
        (1..=steps).collect::<Vec<u64>>()
    );
    let leftovers: Vec<String> = std::fs::read_dir(&killed)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".tmp-") || n.contains(".old-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `--async-rewards`: the rewards of a step are computed while the next rollout is drawn (a
/// rollout one step old: max_staleness 1 in the run's config); nothing is drawn ahead across a
/// checkpoint, so a run stopped at one and resumed ends with the uninterrupted parameters.
#[test]
fn async_rewards_run_and_resume_exactly_at_checkpoints() {
    // prompts the SFT model draws unevenly, so that groups of 2 have a reward spread (with none
    // the policy stays at the reference and both runs would end there)
    let (dir, prompts, run) = scratch_run(
        "a purple triangle above a green circle\na yellow square left of a red triangle\n",
    );
    let train = |run: &std::path::Path, steps: u64| {
        let mut c = tiny_train(&prompts, run, steps, "shapes", 0);
        c.args(["--async-rewards", "--checkpoint-every", "2"]);
        let ckpt = run.join("checkpoint.safetensors");
        if ckpt.exists() {
            c.arg("--resume").arg(ckpt);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    train(&run, 4);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["train"]["max_staleness"], 1);
    let resumed = dir.path().join("resumed");
    train(&resumed, 2);
    train(&resumed, 4);
    let params = |r: &std::path::Path| std::fs::read(r.join("model/params.safetensors")).unwrap();
    assert!(
        params(&run) == params(&resumed),
        "the resumed async run differs"
    );
    assert_eq!(common::logged_steps(&resumed), vec![1, 2, 3, 4]);
    // and it is not the synchronous run: steps 2 and 4 used rollouts drawn one step early
    let sync = dir.path().join("sync");
    let o = tiny_train(&prompts, &sync, 4, "shapes", 0)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(params(&run) != params(&sync));
}
