//! Data-parallel runs under real MPI (Open MPI's `mpirun` on loopback, 2 ranks at one intra-op
//! thread each): `unigrpo train` built with the `mpi` feature against one process on the
//! concatenated prompts, its resume, and the example host `examples/finetune_mpi.c` with its own
//! MPI_Allreduce. Without Open MPI the tests print the install line and pass.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const SKIP: &str = "SKIPPED: apt-get install openmpi-bin libopenmpi-dev libclang-dev";

fn have_mpi() -> bool {
    let ok = common::have_mpi();
    if !ok {
        eprintln!("{SKIP}");
    }
    ok
}

/// `mpirun -n N` on loopback, allowed as root, without core binding (threads per rank are set by
/// `--threads`).
fn mpirun(n: u32) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-n", &n.to_string(), "--bind-to", "none", "--oversubscribe"])
        .args(["--mca", "btl", "self,vader"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c
}

const PROMPTS: &str =
    "a red circle\ntwo blue squares\na few warm-coloured shapes\na circle the colour of the sky\n";

/// The train arguments of these runs: groups of 2, 3 rollout steps, one thread, no samples.
fn train_args(c: &mut Command, prompts: &Path, out: &Path, steps: u64, per_step: u32) {
    c.arg("train")
        .args([
            "--group-size",
            "2",
            "--rollout-steps",
            "3",
            "--threads",
            "1",
        ])
        .args(["--reward", "shapes", "--samples-every", "0"])
        .args(["--steps", &steps.to_string()])
        .args(["--prompts-per-step", &per_step.to_string()])
        .arg("--model")
        .arg(common::shapes_dir())
        .arg("--prompts")
        .arg(prompts)
        .arg("--out")
        .arg(out);
}

fn run(mut c: Command, what: &str) -> String {
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        o.status.success(),
        "{what} failed:\n{}\n{err}",
        String::from_utf8_lossy(&o.stdout)
    );
    err + &String::from_utf8_lossy(&o.stdout)
}

fn params(dir: &Path) -> Vec<f32> {
    let bytes = std::fs::read(dir.join("params.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| {
            st.tensor(n)
                .unwrap()
                .data()
                .chunks(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The hashes of the ranks' closing lines "rank R of W: ... parameter hash H" (found anywhere:
/// the ranks' stderr lines may interleave).
fn rank_hashes(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .match_indices("parameter hash ")
        .map(|(i, m)| out[i + m.len()..].chars().take(16).collect())
        .collect();
    v.sort();
    v
}

#[test]
fn mpirun_train_matches_one_process_and_resumes_exactly() {
    if !have_mpi() {
        return;
    }
    let bin: PathBuf = common::features_bin();
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("p.txt");
    std::fs::write(&prompts, PROMPTS).unwrap();
    // one process, 4 prompts per step
    let single = dir.path().join("single");
    let mut c = Command::new(&bin);
    train_args(&mut c, &prompts, &single, 3, 4);
    run(c, "one process");
    // 2 ranks x 2 prompts
    let two = dir.path().join("two");
    let mut c = mpirun(2);
    c.arg(&bin);
    train_args(&mut c, &prompts, &two, 3, 2);
    let out = run(c, "mpirun -n 2");
    let hashes = rank_hashes(&out);
    assert_eq!(hashes.len(), 2, "{out}");
    assert_eq!(hashes[0], hashes[1], "the ranks' parameters differ:\n{out}");
    assert!(
        out.contains("2 ranks x 2 prompts = 4 prompts per step"),
        "{out}"
    );
    let theta0 = params(&common::shapes_dir());
    let (t1, tw) = (params(&single.join("model")), params(&two.join("model")));
    let (d, moved) = (common::dist(&tw, &t1), common::dist(&t1, &theta0));
    assert!(moved > 0.0);
    assert!(
        d <= 1e-4 * moved,
        "||theta_W - theta_1|| = {d:e} > 1e-4 x {moved:e}"
    );
    // only rank 0 wrote the run directory; its metrics have every step once
    let lines = std::fs::read_to_string(two.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 3, "{lines}");
    // 2 steps, then a resumed 2-rank run to 3: exactly the uninterrupted 2-rank run
    let resumed = dir.path().join("resumed");
    let mut c = mpirun(2);
    c.arg(&bin);
    train_args(&mut c, &prompts, &resumed, 2, 2);
    run(c, "mpirun -n 2, 2 steps");
    let mut c = mpirun(2);
    c.arg(&bin);
    train_args(&mut c, &prompts, &resumed, 3, 2);
    c.arg("--resume")
        .arg(resumed.join("checkpoint.safetensors"));
    run(c, "mpirun -n 2, resumed");
    let tr = params(&resumed.join("model"));
    assert!(
        tr.iter().zip(&tw).all(|(a, b)| a.to_bits() == b.to_bits()),
        "the resumed 2-rank run differs from the uninterrupted one"
    );
    // the same run resumed by one process with the same global batch continues norm-wise alike
    let mut c = Command::new(&bin);
    train_args(&mut c, &prompts, &resumed, 3, 4);
    c.arg("--resume")
        .arg(resumed.join("checkpoint.safetensors"));
    run(c, "one process resuming the 2-rank checkpoint");
}

#[test]
fn example_host_runs_under_mpirun() {
    if !have_mpi() {
        return;
    }
    common::build_package("unigrpo-c");
    let lib = common::target_dir();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("finetune_mpi");
    let o = Command::new("mpicc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg(format!("-I{}", common::root().join("include").display()))
        .arg(common::root().join("examples/finetune_mpi.c"))
        .arg(format!("-L{}", lib.display()))
        .arg("-lunigrpo")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&bin)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = dir.path().join("model");
    let mut c = mpirun(2);
    c.arg(&bin).arg(common::shapes_dir()).arg("2").arg(&model);
    let out = run(c, "finetune_mpi");
    assert!(
        out.contains("step   2") && out.contains("(2 ranks)"),
        "{out}"
    );
    assert!(model.join("unigrpo.json").exists());
}
