//! The C API from real C and C++ programs (tests/c/, examples/), compiled with the system
//! compiler against include/unigrpo.h and the cdylib: plain, under AddressSanitizer and
//! UndefinedBehaviorSanitizer (with leak detection), and one small generation under Valgrind.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// target/<profile>/, where cargo puts libunigrpo.so (built by the unigrpo-c crate; brought up
/// to date here, a no-op when it is).
fn lib_dir() -> PathBuf {
    common::build_package("unigrpo-c");
    common::target_dir()
}

fn compile(compiler: &str, sources: &[&str], out: &Path, extra: &[&str]) {
    let root = common::root();
    let lib = lib_dir();
    assert!(
        lib.join("libunigrpo.so").exists(),
        "{} has no libunigrpo.so",
        lib.display()
    );
    let mut cmd = Command::new(compiler);
    if compiler == "cc" {
        cmd.args(["-std=c11", "-D_DEFAULT_SOURCE"]);
    } else {
        cmd.arg("-std=c++17");
    }
    cmd.args(["-Wall", "-Wextra", "-Werror", "-g"])
        .arg(format!("-I{}", root.join("include").display()))
        .arg(format!("-I{}", root.join("bindings/cpp").display()))
        .args(extra)
        .args(sources.iter().map(|s| root.join(s)))
        .arg(format!("-L{}", lib.display()))
        .args(["-lunigrpo", "-lpthread", "-lm"])
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(out);
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(
        o.status.success(),
        "{compiler} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn run(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let o = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(common::root())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{} failed:\n{out}", bin.display());
    out
}

fn model() -> String {
    common::shapes_dir().to_string_lossy().into_owned()
}

#[test]
fn c_api_conformance() {
    for src in ["test_api", "test_api_v2", "test_collective"] {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join(src);
        compile("cc", &[&format!("tests/c/{src}.c")], &bin, &[]);
        let out = run(&bin, &[&model(), dir.path().to_str().unwrap()], &[]);
        assert!(out.contains(", 0 failed"), "{src}: {out}");
    }
}

#[test]
fn c_api_conformance_under_sanitizers() {
    for src in ["test_api", "test_api_v2", "test_collective"] {
        sanitized(src);
    }
}

fn sanitized(src: &str) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join(format!("{src}_asan"));
    compile(
        "cc",
        &[&format!("tests/c/{src}.c")],
        &bin,
        &[
            "-fsanitize=address,undefined",
            "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=all",
        ],
    );
    let out = run(
        &bin,
        &[&model(), dir.path().to_str().unwrap()],
        &[("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")],
    );
    assert!(out.contains(", 0 failed"), "{src}: {out}");
    assert!(
        !out.contains("ERROR: AddressSanitizer")
            && !out.contains("LeakSanitizer")
            && !out.contains("runtime error"),
        "{out}"
    );
}

#[test]
fn cpp_wrapper() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("test_cpp");
    compile("c++", &["tests/c/test_cpp.cpp"], &bin, &[]);
    let out = run(&bin, &[&model()], &[]);
    assert!(out.contains(", 0 failed"), "{out}");
}

#[test]
fn examples_build_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    compile("cc", &["examples/generate.c"], &d.join("generate"), &[]);
    let png = d.join("x.png");
    let out = run(
        &d.join("generate"),
        &[&model(), "two red circles", png.to_str().unwrap()],
        &[],
    );
    assert!(out.contains("reasoning:") && png.exists(), "{out}");
    compile("cc", &["examples/finetune.c"], &d.join("finetune"), &[]);
    let exported = d.join("model");
    let out = run(
        &d.join("finetune"),
        &[&model(), "2", exported.to_str().unwrap()],
        &[],
    );
    assert!(
        out.contains("step   2") && exported.join("unigrpo.json").exists(),
        "{out}"
    );
    compile(
        "c++",
        &["examples/finetune.cpp"],
        &d.join("finetune_cpp"),
        &[],
    );
    let out = run(&d.join("finetune_cpp"), &[&model(), "1"], &[]);
    assert!(out.contains("step 1"), "{out}");
    compile(
        "cc",
        &["examples/finetune_remote.c"],
        &d.join("finetune_remote"),
        &[],
    );
    let out = run(&d.join("finetune_remote"), &[&model(), "2"], &[]);
    assert!(out.contains("step 2: 8 samples judged"), "{out}");
}

/// One small generation under Valgrind: no byte definitely lost.
#[test]
fn valgrind_small_generation() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("generate");
    compile("cc", &["examples/generate.c"], &bin, &[]);
    let o = Command::new("valgrind")
        .args(["--leak-check=full", "--errors-for-leak-kinds=definite"])
        .arg(format!(
            "--suppressions={}",
            common::root().join("tests/c/valgrind.supp").display()
        ))
        .arg(&bin)
        .args([
            &model(),
            "a red circle",
            dir.path().join("v.png").to_str().unwrap(),
        ])
        .output()
        .expect("valgrind is required (apt-get install valgrind)");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("definitely lost: 0 bytes in 0 blocks")
            || err.contains("All heap blocks were freed"),
        "{err}"
    );
}

fn make_install(prefix: &Path) {
    let o = Command::new("make")
        .arg("install")
        .arg(format!("PREFIX={}", prefix.display()))
        .current_dir(common::root())
        .output()
        .expect("make");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `make install PREFIX=...`: the pkg-config line compiles a program that finds ONNX Runtime
/// beside the installed library.
#[test]
fn make_install_and_pkg_config() {
    let _ = lib_dir();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("prefix");
    make_install(&prefix);
    let pc = Command::new("pkg-config")
        .args(["--cflags", "--libs", "unigrpo"])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .expect("pkg-config");
    let flags = String::from_utf8_lossy(&pc.stdout).to_string();
    assert!(
        pc.status.success() && flags.contains("-lunigrpo"),
        "{flags}"
    );
    let src = dir.path().join("info.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include \"unigrpo.h\"\nint main(int c, char **v) { (void)c; unigrpo_model *m = NULL;\n\
         unigrpo_error *e = unigrpo_model_load(v[1], NULL, &m); if (e) { puts(unigrpo_error_message(e)); return 1; }\n\
         puts(unigrpo_model_info(m)); unigrpo_model_free(m); return 0; }\n",
    )
    .unwrap();
    let bin = dir.path().join("info");
    let mut cc = Command::new("cc");
    cc.arg(&src)
        .arg("-o")
        .arg(&bin)
        .args(flags.split_whitespace());
    let o = cc.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // cargo test puts target/release on LD_LIBRARY_PATH, which would win over the rpath
    let o = Command::new(&bin)
        .arg(common::shapes_dir())
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    let info: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let ort = info["onnxruntime"]["path"].as_str().unwrap();
    assert!(
        ort.starts_with(prefix.join("lib").to_str().unwrap()),
        "ONNX Runtime loaded from {ort}"
    );
    // the versioned library, its links, and its SONAME
    let lib = prefix.join("lib");
    let real = std::fs::canonicalize(lib.join("libunigrpo.so")).unwrap();
    assert!(
        real.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("libunigrpo.so.1."),
        "{}",
        real.display()
    );
    assert!(lib.join("libunigrpo.so.1").exists() && lib.join("libunigrpo.a").exists());
    let o = Command::new("readelf")
        .arg("-d")
        .arg(&real)
        .output()
        .expect("readelf");
    let dynamic = String::from_utf8_lossy(&o.stdout);
    assert!(
        dynamic.contains("Library soname: [libunigrpo.so.1]"),
        "{dynamic}"
    );
}

/// The installed CMake package: `find_package(unigrpo)` gives `unigrpo::unigrpo`, which builds
/// and runs examples/generate.c.
#[test]
fn cmake_find_package_builds_an_example() {
    let _ = lib_dir();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("prefix");
    make_install(&prefix);
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("CMakeLists.txt"),
        format!(
            "cmake_minimum_required(VERSION 3.16)\nproject(gen C)\nfind_package(unigrpo 0.1 REQUIRED)\n\
             add_executable(generate {})\ntarget_link_libraries(generate PRIVATE unigrpo::unigrpo)\n",
            common::root().join("examples/generate.c").display()
        ),
    )
    .unwrap();
    let build = dir.path().join("build");
    let cmake = |args: &[&str]| {
        let o = Command::new("cmake")
            .args(args)
            .output()
            .expect("cmake is required (apt-get install cmake)");
        assert!(
            o.status.success(),
            "cmake {args:?}:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    };
    cmake(&[
        "-S",
        src.to_str().unwrap(),
        "-B",
        build.to_str().unwrap(),
        &format!("-DCMAKE_PREFIX_PATH={}", prefix.display()),
    ]);
    cmake(&["--build", build.to_str().unwrap()]);
    let png = dir.path().join("c.png");
    let o = Command::new(build.join("generate"))
        .args([
            common::shapes_dir().to_str().unwrap(),
            "two red circles",
            png.to_str().unwrap(),
        ])
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(
        o.status.success() && png.exists(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
