//! Property tests of the parsers that read untrusted input (a short run in `make test`; set
//! PROPTEST_CASES for longer ones): the manifest, the parameter file with the package's checks,
//! the prompt grammar and templates, and the exec reward's output. Each must answer Ok or a
//! clear error, never panic; what they found is kept as regression cases below.

mod common;

use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes at any position of the manifest: `Package::open` returns, naming the file on
    /// error.
    #[test]
    fn manifest_mutations_never_panic(at in 0usize..4000, bytes in proptest::collection::vec(any::<u8>(), 1..8)) {
        let tmp = common::copy_package(&common::shapes_dir());
        let p = tmp.path().join("unigrpo.json");
        let mut m = std::fs::read(&p).unwrap();
        let at = at % m.len();
        for (k, b) in bytes.iter().enumerate() {
            if at + k < m.len() {
                m[at + k] = *b;
            }
        }
        std::fs::write(&p, &m).unwrap();
        if let Err(e) = unigrpo::package::Package::open(tmp.path()) {
            prop_assert!(e.message().contains("unigrpo.json"), "{}", e);
        }
    }

    /// Truncated or overwritten parameter files: refused with the file's name, never a panic.
    #[test]
    fn params_mutations_never_panic(cut in 0usize..9_000_000, at in 0usize..2000, b in any::<u8>()) {
        let dir = common::shapes_dir();
        let pkg = unigrpo::package::Package::open(&dir).unwrap();
        let src = std::fs::read(dir.join("params.safetensors")).unwrap();
        let mut bytes = src[..cut.min(src.len())].to_vec();
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("params.safetensors");
        std::fs::write(&p, &bytes).unwrap();
        if let Err(e) = unigrpo::package::load_params(&p, &pkg.manifest.params.tensors) {
            prop_assert!(e.message().contains("params.safetensors"), "{}", e);
        }
    }

    /// Any text as a prompt: the grammar answers, and the tokenizer's templates either build
    /// the model's inputs or say why not.
    #[test]
    fn prompts_never_panic(prompt in "\\PC{0,80}") {
        let _ = unigrpo::reward::shapes::parse_prompt(&prompt);
        let model = model();
        let tok = &model.tokenizer;
        if let Ok(ids) = tok.reasoning_prompt(&prompt, 8) {
            prop_assert!(ids.len() <= tok.max_sequence());
        }
        let _ = tok.image_context(&prompt, Some(&[1, 2, 3]));
    }

    /// Any output of a reward program: numbers or a message with the line.
    #[test]
    fn exec_output_never_panics(text in "\\PC{0,200}", n in 0usize..6) {
        match unigrpo::reward::exec::parse_output(&text, n) {
            Ok(v) => prop_assert_eq!(v.len(), n),
            Err(m) => prop_assert!(m.contains("line") || m.contains("numbers for")),
        }
    }
}

fn model() -> &'static unigrpo::Model {
    static M: std::sync::OnceLock<unigrpo::Model> = std::sync::OnceLock::new();
    M.get_or_init(|| common::load(&common::shapes_dir()))
}

#[test]
fn exec_output_cases() {
    use unigrpo::reward::exec::parse_output;
    assert_eq!(parse_output("0.5\n\nnan\n 1 \n", 3).unwrap()[2], 1.0);
    assert!(parse_output("0.5\n", 2)
        .unwrap_err()
        .contains("wrote 1 numbers for 2"));
    assert!(parse_output("0.5\nhigh\n", 2)
        .unwrap_err()
        .contains("line 2 is not a number"));
}
