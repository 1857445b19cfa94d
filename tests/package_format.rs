//! The model package format: the shipped packages agree with their manifests, and every kind of
//! damage gets its own clear error.

mod common;

use common::*;
use sha2::{Digest, Sha256};
use unigrpo::{ErrorKind, Model, ModelOptions};

fn open_err(dir: &std::path::Path) -> unigrpo::Error {
    match Model::load(dir, &ModelOptions::default()) {
        Ok(_) => panic!("{} loaded, expected an error", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn shipped_files_agree_with_their_manifests() {
    for dir in [shapes_dir(), shared_dir()] {
        let m = unigrpo::package::Package::open(&dir)
            .expect("open")
            .manifest;
        assert!(
            !m.files.is_empty(),
            "{}: manifest lists no files",
            dir.display()
        );
        for (name, entry) in &m.files {
            let bytes = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                bytes.len() as u64,
                entry.bytes,
                "{}: size of {name}",
                dir.display()
            );
            let hash = format!("{:x}", Sha256::digest(&bytes));
            assert_eq!(hash, entry.sha256, "{}: sha256 of {name}", dir.display());
        }
    }
}

#[test]
fn both_packages_load_and_every_graph_matches_its_manifest() {
    for dir in [shapes_dir(), shared_dir()] {
        let model = load(&dir);
        assert_eq!(model.graphs().count(), 6);
        let info = model.info();
        assert!(info["parameters"]["total"].as_u64().unwrap() > 0);
    }
    let shared = load(&shared_dir());
    // the BAGEL-like package feeds the velocity net from the text graph's key/value cache
    assert!(shared
        .manifest()
        .image
        .conditioning
        .iter()
        .any(|c| c.source.starts_with("text_decode:present_key")));
    // a parameter consumed by text and image graphs
    let shared_param = shared
        .manifest()
        .params
        .tensors
        .iter()
        .find(|t| t.name == "l0.qkv.w")
        .unwrap();
    assert!(shared_param.graphs.contains(&"velocity".to_string()));
    assert!(shared_param.graphs.contains(&"text_logprob".to_string()));
}

#[test]
fn missing_model_dir() {
    let e = open_err(std::path::Path::new("/nonexistent/model"));
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.message().contains("/nonexistent/model"), "{e}");
}

#[test]
fn missing_graph_file() {
    let tmp = copy_package(&shapes_dir());
    std::fs::remove_file(tmp.path().join("velocity.onnx")).unwrap();
    let e = open_err(tmp.path());
    assert_eq!(e.kind(), ErrorKind::ModelFormat);
    assert!(
        e.message().contains("velocity.onnx") && e.message().contains("not found"),
        "{e}"
    );
}

#[test]
fn unknown_format_version() {
    let tmp = copy_package(&shapes_dir());
    let p = tmp.path().join("unigrpo.json");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"format_version\": 1", "\"format_version\": 7");
    std::fs::write(&p, text).unwrap();
    let e = open_err(tmp.path());
    assert_eq!(e.kind(), ErrorKind::ModelFormat);
    assert!(e.message().contains("unsupported format_version 7"), "{e}");
}

#[test]
fn wrong_tensor_name_in_manifest() {
    let tmp = copy_package(&shapes_dir());
    let p = tmp.path().join("unigrpo.json");
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "\"name\": \"image.conv_in.w\"",
        "\"name\": \"image.conv_inn.w\"",
    );
    std::fs::write(&p, text).unwrap();
    let e = open_err(tmp.path());
    assert_eq!(e.kind(), ErrorKind::ModelFormat);
    let msg = e.message();
    assert!(msg.contains("params.safetensors"), "{e}");
    assert!(
        msg.contains("\"image.conv_inn.w\": expected by the manifest, not in the file"),
        "{e}"
    );
    assert!(
        msg.contains("\"image.conv_in.w\": in the file, not in the manifest"),
        "{e}"
    );
}

#[test]
fn wrong_shape_in_manifest() {
    let tmp = copy_package(&shapes_dir());
    let p = tmp.path().join("unigrpo.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let t = m["params"]["tensors"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["name"] == "text.tok_emb")
        .unwrap();
    let (rows, cols) = (
        t["shape"][0].as_u64().unwrap(),
        t["shape"][1].as_u64().unwrap(),
    );
    t["shape"][1] = serde_json::json!(99);
    std::fs::write(&p, serde_json::to_string(&m).unwrap()).unwrap();
    let e = open_err(tmp.path());
    assert_eq!(e.kind(), ErrorKind::ModelFormat);
    let want = format!("\"text.tok_emb\": expected shape [{rows}, 99], found [{rows}, {cols}]");
    assert!(e.message().contains(&want), "{e}");
}

#[test]
fn graph_that_does_not_match_the_manifest() {
    // the tiny-shared decoder declares a different latent shape than tiny-shapes expects
    let tmp = copy_package(&shapes_dir());
    std::fs::copy(
        shared_dir().join("decoder.onnx"),
        tmp.path().join("decoder.onnx"),
    )
    .unwrap();
    restamp(tmp.path());
    let e = open_err(tmp.path());
    assert_eq!(e.kind(), ErrorKind::ModelFormat);
    assert!(
        e.message().contains(
            "decoder.onnx: input \"latent\": expected f32 [?, 3, 16, 16], found f32 [-1, 4, 8, 8]"
        ),
        "{e}"
    );
}

#[test]
fn corrupt_onnx() {
    let tmp = copy_package(&shapes_dir());
    std::fs::write(
        tmp.path().join("text_decode.onnx"),
        b"this is not a protobuf",
    )
    .unwrap();
    restamp(tmp.path());
    let e = open_err(tmp.path());
    assert_eq!(e.kind(), ErrorKind::ModelFormat);
    assert!(
        e.message()
            .contains("text_decode.onnx: not a loadable ONNX graph"),
        "{e}"
    );
}

#[test]
fn corrupt_safetensors() {
    let tmp = copy_package(&shapes_dir());
    let p = tmp.path().join("params.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    restamp(tmp.path());
    let e = open_err(tmp.path());
    assert_eq!(e.kind(), ErrorKind::ModelFormat);
    assert!(
        e.message()
            .contains("params.safetensors: not a valid safetensors file"),
        "{e}"
    );
}

#[test]
fn corrupt_manifest_and_tokenizer() {
    let tmp = copy_package(&shapes_dir());
    std::fs::write(tmp.path().join("unigrpo.json"), b"{ not json").unwrap();
    let e = open_err(tmp.path());
    assert!(
        e.kind() == ErrorKind::ModelFormat && e.message().contains("invalid JSON"),
        "{e}"
    );
    let tmp = copy_package(&shapes_dir());
    std::fs::write(tmp.path().join("tokenizer.json"), b"{}").unwrap();
    restamp(tmp.path());
    let e = open_err(tmp.path());
    assert!(
        e.kind() == ErrorKind::ModelFormat && e.message().contains("tokenizer.json"),
        "{e}"
    );
}

fn edit_manifest(dir: &std::path::Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mp = dir.join("unigrpo.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mp).unwrap()).unwrap();
    f(&mut m);
    std::fs::write(&mp, m.to_string()).unwrap();
}

/// One flipped bit in a graph (the decoder's constant 127.5 becoming 127.0 loaded and generated
/// before): the sha256 check refuses it, naming the file; size mode (for huge packages) does
/// not see it, by design. A wrong size is refused in both modes.
#[test]
fn a_flipped_bit_is_refused_at_load() {
    let tmp = copy_package(&shapes_dir());
    let p = tmp.path().join("decoder.onnx");
    let mut bytes = std::fs::read(&p).unwrap();
    let needle = 127.5f32.to_le_bytes();
    let at = bytes
        .windows(4)
        .position(|w| w == needle)
        .expect("the decoder holds 127.5");
    bytes[at + 2] ^= 0x01; // 127.5 (0x42FF0000) -> 127.0 (0x42FE0000): one bit
    assert_eq!(
        f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()),
        127.0
    );
    std::fs::write(&p, &bytes).unwrap();
    let e = open_err(tmp.path());
    assert_eq!(e.kind(), ErrorKind::ModelFormat);
    assert!(
        e.message().contains("decoder.onnx: sha256") && e.message().contains("the manifest says"),
        "{e}"
    );
    let size_only = ModelOptions {
        verify: unigrpo::package::Verify::Size,
        intra_threads: 1, // the pool's, as common::load creates it (one pool per process)
        ..Default::default()
    };
    assert!(Model::load(tmp.path(), &size_only).is_ok());
    std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
    let e = Model::load(tmp.path(), &size_only)
        .err()
        .expect("a short file");
    assert!(
        e.message()
            .contains("decoder.onnx: size 1401 bytes, the manifest says 1402"),
        "{e}"
    );
}

/// A manifest with a wrong sha256 or size, or without its files section, was accepted.
#[test]
fn the_manifest_must_list_every_file_with_its_checksum() {
    let tmp = copy_package(&shapes_dir());
    edit_manifest(tmp.path(), |m| {
        m["files"]["velocity.onnx"]["sha256"] = serde_json::json!("00".repeat(32));
        m["files"]["tokenizer.json"]["bytes"] = serde_json::json!(1);
    });
    let e = open_err(tmp.path());
    assert!(
        e.message().contains("velocity.onnx: sha256")
            && e.message()
                .contains("tokenizer.json: size 2612 bytes, the manifest says 1"),
        "both named: {e}"
    );
    let tmp = copy_package(&shapes_dir());
    edit_manifest(tmp.path(), |m| {
        m.as_object_mut().unwrap().remove("files");
    });
    let e = open_err(tmp.path());
    assert!(
        e.message()
            .contains("params.safetensors: not listed in the manifest's \"files\" section"),
        "{e}"
    );
}

/// NaN values in params.safetensors gave all-black images with rc 0: refused, naming the tensor.
#[test]
fn non_finite_parameters_are_refused() {
    let tmp = copy_package(&shapes_dir());
    let p = tmp.path().join("params.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let name = "image.conv_out.w";
    let t = st.tensor(name).unwrap();
    let mut data = t.data().to_vec();
    data[8..12].copy_from_slice(&f32::NAN.to_le_bytes());
    let mut all: Vec<(String, Vec<u8>, Vec<usize>, safetensors::Dtype)> = st
        .names()
        .into_iter()
        .map(|n| {
            let t = st.tensor(n).unwrap();
            (
                n.to_string(),
                t.data().to_vec(),
                t.shape().to_vec(),
                t.dtype(),
            )
        })
        .collect();
    for e in all.iter_mut().filter(|e| e.0 == name) {
        e.1 = data.clone();
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = all
        .iter()
        .map(|(n, b, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(&p, safetensors::serialize(views, None).unwrap()).unwrap();
    restamp(tmp.path());
    let e = open_err(tmp.path());
    assert_eq!(e.kind(), ErrorKind::ModelFormat);
    assert!(
        e.message().contains(
            "tensor \"image.conv_out.w\": 1 non-finite values (the first, NaN, at flat index 2)"
        ),
        "{e}"
    );
}

/// The validation split (models/unigrpo_export/make_val_split.py): the files agree with
/// splits.json; val.txt and rl_train.txt partition train.txt; val.txt shares nothing with the
/// test list and has its kind mix.
#[test]
fn validation_split_agrees_with_its_record() {
    let dir = shapes_dir().join("prompts");
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("splits.json")).unwrap()).unwrap();
    let lines = |name: &str| -> Vec<String> {
        std::fs::read_to_string(dir.join(name))
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    };
    for (name, entry) in rec["files"].as_object().unwrap() {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(
            format!("{:x}", Sha256::digest(&bytes)),
            entry["sha256"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            lines(name).len() as u64,
            entry["lines"].as_u64().unwrap(),
            "{name}"
        );
    }
    let (train, val, rl, test) = (
        lines("train.txt"),
        lines("val.txt"),
        lines("rl_train.txt"),
        lines("test.txt"),
    );
    let set = |v: &[String]| v.iter().cloned().collect::<std::collections::BTreeSet<_>>();
    assert!(set(&val).is_disjoint(&set(&rl)));
    assert!(set(&val).is_disjoint(&set(&test)));
    let mut union: Vec<String> = val.iter().chain(&rl).cloned().collect();
    union.sort();
    let mut t = train.clone();
    t.sort();
    assert_eq!(union, t);
    // rl_train keeps train.txt's order
    let rl_set = set(&rl);
    let ordered: Vec<&String> = train.iter().filter(|p| rl_set.contains(*p)).collect();
    assert!(ordered.iter().zip(&rl).all(|(a, b)| *a == b));
    assert_eq!(rec["kinds"]["val"], rec["kinds"]["test"]);
    assert_eq!(val.len(), test.len());
}
