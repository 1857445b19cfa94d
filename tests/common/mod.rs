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
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "-p", package]).current_dir(root());
    if target_dir().ends_with("release") {
        cmd.arg("--release");
    }
    let o = cmd.output().expect("cargo build");
    assert!(
        o.status.success(),
        "cargo build -p {package} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    built.push(package.to_string());
}

/// The `unigrpo` command, built if needed.
pub fn unigrpo_bin() -> PathBuf {
    build_package("unigrpo-cli");
    target_dir().join("unigrpo")
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
