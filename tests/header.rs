//! include/unigrpo.h is what cbindgen generates from bindings/c (UNIGRPO_BLESS=1 rewrites it).

#[test]
fn committed_header_matches_a_fresh_generation() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let crate_dir = root.join("bindings/c");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("bindings/c/cbindgen.toml");
    let mut fresh = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen")
        .write(&mut fresh);
    let path = root.join("include/unigrpo.h");
    if std::env::var_os("UNIGRPO_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read(&path).expect("include/unigrpo.h");
    assert!(
        committed == fresh,
        "include/unigrpo.h differs from a fresh cbindgen generation: run `UNIGRPO_BLESS=1 cargo test --release --test header`"
    );
}
