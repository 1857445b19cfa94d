#![allow(dead_code)]
//! Shared helpers for the integration tests: the real packages in models/ and the real ONNX Runtime.

use std::path::{Path, PathBuf};

use unigrpo::{Model, ModelOptions};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn shapes_dir() -> PathBuf {
    root().join("models/tiny-shapes")
}

pub fn shared_dir() -> PathBuf {
    root().join("models/tiny-shared")
}

pub fn load(dir: &Path) -> Model {
    Model::load(
        dir,
        &ModelOptions {
            device: "cpu".into(),
            intra_threads: 1,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

/// Copy a package into a temporary directory (to corrupt it).
pub fn copy_package(dir: &Path) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    for e in std::fs::read_dir(dir).expect("read package") {
        let e = e.expect("entry");
        if e.file_type().expect("type").is_file() {
            std::fs::copy(e.path(), tmp.path().join(e.file_name())).expect("copy");
        }
    }
    tmp
}

/// Rewrite a package's `files` section to the files as they are now (sizes and sha256), so a
/// test can reach the checks behind the verification with a deliberately damaged file.
#[allow(dead_code)]
pub fn restamp(dir: &Path) {
    let mp = dir.join("unigrpo.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mp).expect("manifest")).expect("json");
    let names: Vec<String> = m["files"]
        .as_object()
        .expect("files")
        .keys()
        .cloned()
        .collect();
    for n in names {
        let bytes = std::fs::read(dir.join(&n)).expect("listed file");
        m["files"][&n] = serde_json::json!({
            "bytes": bytes.len(),
            "sha256": unigrpo::package::sha256_file(&dir.join(&n)).expect("hash"),
        });
    }
    std::fs::write(&mp, serde_json::to_string_pretty(&m).expect("json")).expect("write manifest");
}

/// target/<profile>/ of this test binary.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// Build a workspace package (the CLI or the C ABI crate) for this test binary's profile, once
/// per package and process; `cargo test` builds only the core for the core's tests.
pub fn build_package(package: &str) {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.iter().any(|p| p == package) {
        return;
    }
    cargo_build(&["-p", package], None);
    built.push(package.to_string());
}

/// `cargo build ARGS` for this test binary's profile (into `target_dir` when given), failing
/// the test with cargo's output.
fn cargo_build(args: &[&str], target_dir_override: Option<&Path>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.arg("build").args(args).current_dir(root());
    if let Some(d) = target_dir_override {
        cmd.arg("--target-dir").arg(d);
    }
    if target_dir().ends_with("release") {
        cmd.arg("--release");
    }
    let o = cmd.output().expect("cargo build");
    assert!(
        o.status.success(),
        "cargo build {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The `unigrpo` command, built if needed.
pub fn unigrpo_bin() -> PathBuf {
    build_package("unigrpo-cli");
    target_dir().join("unigrpo")
}

/// Whether Open MPI's `mpirun` and `mpicc` are on the PATH and libclang is installed (the
/// Makefile's HAVE_MPI: mpi-sys runs bindgen).
#[allow(dead_code)]
pub fn have_mpi() -> bool {
    let sh = |c: &str| {
        std::process::Command::new("sh")
            .args(["-c", c])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    sh("command -v mpirun && command -v mpicc && ls /usr/lib/llvm-*/lib/libclang*.so")
}

/// The `unigrpo` command of the crash and MPI tests: the CLI built with the `fault-injection`
/// feature (UNIGRPO_FAULT points, src/fault.rs) and, where Open MPI is installed, the `mpi`
/// feature, into its own target directory (`target/test-features`, as `make test` builds it),
/// so the ordinary binary never carries the fault points or links libmpi.
#[allow(dead_code)]
pub fn features_bin() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let release = target_dir().ends_with("release");
    let dir = root().join("target/test-features");
    BUILT.call_once(|| {
        let features = if have_mpi() {
            "fault-injection,mpi"
        } else {
            "fault-injection"
        };
        cargo_build(&["-p", "unigrpo-cli", "--features", features], Some(&dir));
    });
    dir.join(if release { "release" } else { "debug" })
        .join("unigrpo")
}

/// `bin train` on the smallest configuration (groups of 2, one prompt per step, 3 rollout
/// steps, one thread) from `prompts` into `run`, with `reward`.
#[allow(dead_code)]
pub fn tiny_train(
    bin: &Path,
    prompts: &Path,
    run: &Path,
    steps: u64,
    reward: &str,
    samples_every: u64,
) -> std::process::Command {
    let mut c = std::process::Command::new(bin);
    c.args([
        "train",
        "--group-size",
        "2",
        "--prompts-per-step",
        "1",
        "--rollout-steps",
        "3",
    ])
    .args(["--threads", "1", "--reward", reward])
    .args([
        "--samples-every",
        &samples_every.to_string(),
        "--steps",
        &steps.to_string(),
    ])
    .arg("--model")
    .arg(shapes_dir())
    .arg("--prompts")
    .arg(prompts)
    .arg("--out")
    .arg(run);
    c
}

/// The steps of a run directory's `metrics.jsonl`, in order.
#[allow(dead_code)]
pub fn logged_steps(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// The Euclidean distance of two parameter vectors (in f64).
#[allow(dead_code)]
pub fn dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// The two prompts of the trainer tests (an open-ended one and an indirect one).
#[allow(dead_code)]
pub const TRAIN_PROMPTS: [&str; 2] = [
    "a few warm-coloured shapes",
    "a circle the colour of the sky",
];

/// The model's training defaults, made small: groups of 4, 6 rollout steps, seed 9.
#[allow(dead_code)]
pub fn small_config(model: &Model) -> unigrpo::train::TrainConfig {
    let mut c = unigrpo::train::TrainConfig::defaults(model);
    c.group_size = 4;
    c.num_steps = 6;
    c.seed = 9;
    c
}
