//! Crash tests: a training run killed (SIGKILL) at each deterministic fault point, or hit by a
//! full disk inside its checkpoint or model export, is resumed with `--resume` and ends with the
//! uninterrupted run's parameters, every step logged once and no temporary files. The fault
//! points are those of `src/fault.rs`, compiled only into the CLI built with the
//! `fault-injection` feature (`common::features_bin`). The seeded random SIGKILLs and the
//! `/dev/full` case are in tests/cli.rs.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;

const STEPS: u64 = 4;

struct Scratch {
    _dir: tempfile::TempDir,
    prompts: PathBuf,
    root: PathBuf,
}

fn scratch() -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("p.txt");
    std::fs::write(&prompts, "a red circle\ntwo blue squares\n").unwrap();
    let root = dir.path().to_path_buf();
    Scratch {
        _dir: dir,
        prompts,
        root,
    }
}

/// `train` for STEPS steps into `run` (resuming its checkpoint when there is one), with the
/// fault `fault` armed when given.
fn train(s: &Scratch, run: &Path, fault: Option<&str>) -> Output {
    let mut c = common::tiny_train(&common::features_bin(), &s.prompts, run, STEPS, "shapes", 2);
    let ckpt = run.join("checkpoint.safetensors");
    if ckpt.exists() {
        c.arg("--resume").arg(ckpt);
    }
    match fault {
        Some(f) => c.env("UNIGRPO_FAULT", f),
        None => c.env_remove("UNIGRPO_FAULT"),
    };
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn params(run: &Path) -> Vec<u8> {
    std::fs::read(run.join("model/params.safetensors")).unwrap()
}

/// Names under `run` (one level, and inside model/) of temporary or moved-aside files.
fn leftovers(run: &Path) -> Vec<String> {
    let mut out = vec![];
    for d in [run.to_path_buf(), run.join("model")] {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.contains(".tmp-") || n.contains(".old-") {
                out.push(format!("{}/{n}", d.display()));
            }
        }
    }
    out
}

/// The uninterrupted run the interrupted ones must reproduce.
fn clean_run(s: &Scratch) -> Vec<u8> {
    let clean = s.root.join("clean");
    let o = train(s, &clean, None);
    assert!(o.status.success(), "{}", stderr(&o));
    params(&clean)
}

fn assert_recovered(s: &Scratch, run: &Path, clean: &[u8], what: &str) {
    let o = train(s, run, None);
    assert!(
        o.status.success(),
        "{what}: the resume failed: {}",
        stderr(&o)
    );
    assert!(params(run) == clean, "{what}: the parameters differ");
    assert_eq!(
        common::logged_steps(run),
        (1..=STEPS).collect::<Vec<_>>(),
        "{what}: metrics.jsonl"
    );
    assert!(leftovers(run).is_empty(), "{what}: {:?}", leftovers(run));
}

/// A SIGKILL after a metrics line (before its checkpoint: the first step's, so there is none
/// yet, and the third's), inside the checkpoint write, inside the export's parameter and
/// manifest writes, between the export's files and its manifest, and before the export's swap.
#[test]
fn a_kill_at_each_fault_point_resumes_to_the_uninterrupted_run() {
    let s = scratch();
    let clean = clean_run(&s);
    for (i, fault) in [
        "metrics-line@1",
        "metrics-line@3",
        "write:checkpoint.safetensors@2",
        "write:params.safetensors",
        "export:manifest",
        "write:unigrpo.json",
        "export:swap",
    ]
    .into_iter()
    .enumerate()
    {
        let run = s.root.join(format!("killed-{i}"));
        let o = train(&s, &run, Some(fault));
        assert_eq!(o.status.signal(), Some(9), "{fault}: {}", stderr(&o));
        if fault.starts_with("write:checkpoint") {
            // the checkpoint of step 1 stays whole while step 2's is half written
            assert!(leftovers(&run)
                .iter()
                .any(|n| n.contains(".checkpoint.safetensors.tmp-")));
        }
        if fault.contains("params") || fault.starts_with("export") || fault.contains("unigrpo") {
            // killed during the first export: no model directory, only the temporary one
            assert!(!run.join("model").exists(), "{fault}: a half model/ exists");
        }
        assert_recovered(&s, &run, &clean, fault);
    }
}

/// A kill while an export replaces an existing model: the old package stays whole and loads,
/// and the next run puts the new one in place.
#[test]
fn a_kill_while_replacing_a_model_keeps_the_old_one_whole() {
    let s = scratch();
    let clean = clean_run(&s);
    let run = s.root.join("run");
    let o = train(&s, &run, None);
    assert!(o.status.success(), "{}", stderr(&o));
    // put an older package in place (the shipped model), then re-export over it and kill
    std::fs::remove_dir_all(run.join("model")).unwrap();
    let copy = common::copy_package(&common::shapes_dir());
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(copy.path())
        .arg(run.join("model"))
        .status()
        .unwrap();
    assert!(status.success());
    let before = std::fs::read(run.join("model/params.safetensors")).unwrap();
    for fault in ["export:manifest", "export:swap"] {
        let o = train(&s, &run, Some(fault));
        assert_eq!(o.status.signal(), Some(9), "{fault}: {}", stderr(&o));
        assert_eq!(params(&run), before, "{fault}: the old model changed");
        let v = std::process::Command::new(common::unigrpo_bin())
            .args(["inspect", "--verify", "--model"])
            .arg(run.join("model"))
            .output()
            .unwrap();
        assert!(v.status.success(), "{fault}: {}", stderr(&v));
    }
    assert_recovered(&s, &run, &clean, "re-export");
}

/// A full disk inside the checkpoint write (step 2's) and inside the export: the error names
/// the file and the reason, the final checkpoint is still written (a later write can succeed),
/// nothing temporary is left, and `--resume` ends with the uninterrupted parameters.
#[test]
fn a_full_disk_inside_the_checkpoint_or_the_export_loses_nothing() {
    let s = scratch();
    let clean = clean_run(&s);
    for (i, (fault, file, checkpointed)) in [
        (
            "write:checkpoint.safetensors=enospc@2",
            "checkpoint.safetensors",
            2,
        ),
        (
            "write:params.safetensors=enospc",
            "params.safetensors",
            STEPS,
        ),
        ("write:unigrpo.json=enospc", "unigrpo.json", STEPS),
    ]
    .into_iter()
    .enumerate()
    {
        let run = s.root.join(format!("full-{i}"));
        let o = train(&s, &run, Some(fault));
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{fault}: {e}");
        assert!(
            e.contains(file) && e.contains("No space left on device"),
            "{fault}: {e}"
        );
        assert!(
            e.contains(&format!("checkpoint at step {checkpointed}")),
            "{fault}: {e}"
        );
        assert!(leftovers(&run).is_empty(), "{fault}: {:?}", leftovers(&run));
        assert!(!run.join("model").exists(), "{fault}: a model/ was left");
        assert_recovered(&s, &run, &clean, fault);
    }
}

/// `--checkpoint-minutes`: with `--checkpoint-every 0` the checkpoint is written by time only;
/// a kill after step 3's metrics line finds step 2's checkpoint when the interval has passed at
/// every step, and none without the option.
#[test]
fn checkpoints_by_minutes() {
    let s = scratch();
    for (i, minutes, expect) in [(0, Some("0.000001"), Some(2)), (1, None, None)] {
        let run = s.root.join(format!("minutes-{i}"));
        let mut c = common::tiny_train(
            &common::features_bin(),
            &s.prompts,
            &run,
            STEPS,
            "shapes",
            0,
        );
        c.args(["--checkpoint-every", "0"])
            .env("UNIGRPO_FAULT", "metrics-line@3");
        if let Some(m) = minutes {
            c.args(["--checkpoint-minutes", m]);
        }
        let o = c.output().unwrap();
        assert_eq!(o.status.signal(), Some(9), "{}", stderr(&o));
        let ckpt = run.join("checkpoint.safetensors");
        let step = ckpt.exists().then(|| {
            let bytes = std::fs::read(&ckpt).unwrap();
            let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
            meta.metadata().as_ref().unwrap()["step"]
                .parse::<u64>()
                .unwrap()
        });
        assert_eq!(step, expect, "--checkpoint-minutes {minutes:?}");
    }
}
