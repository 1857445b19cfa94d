//! SONAME `libunigrpo.so.1` (the ABI major version: every version 1.x library serves hosts built
//! against any earlier 1.x header), and the `libunigrpo.so.1` link beside the built library so
//! that programs linked in the build tree (which record the SONAME) find it at run time.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libunigrpo.so.1");
    println!("cargo:rerun-if-changed=build.rs");
    // OUT_DIR is <target>/<profile>/build/unigrpo-c-<hash>/out: the library goes to <target>/<profile>.
    let Some(out) = std::env::var_os("OUT_DIR") else {
        return;
    };
    let profile_dir = std::path::Path::new(&out)
        .ancestors()
        .nth(3)
        .map(|p| p.to_path_buf());
    if let Some(dir) = profile_dir {
        let link = dir.join("libunigrpo.so.1");
        if std::fs::symlink_metadata(&link).is_err() {
            #[cfg(unix)]
            let _ = std::os::unix::fs::symlink("libunigrpo.so", &link);
        }
    }
}
