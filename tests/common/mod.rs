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
            onnxruntime_path: None,
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
