//! The `unigrpo` command, run as a user would.

mod common;

use std::process::Command;

fn unigrpo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_unigrpo"))
}

#[test]
fn generate_prints_reasoning_and_writes_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let o = unigrpo()
        .args(["generate", "--model"])
        .arg(common::shapes_dir())
        .args([
            "--prompt",
            "a circle the colour of the sky",
            "--seed",
            "3",
            "--threads",
            "1",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("reasoning: "), "{stdout}");
    let img = unigrpo::RgbImage::load_png(&out).unwrap();
    assert_eq!((img.width, img.height), (16, 16));
}

#[test]
fn eval_json_is_one_object_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("p.txt");
    std::fs::write(&prompts, "# a comment\na red circle\n\ntwo blue squares\n").unwrap();
    let grid = dir.path().join("grid.png");
    let o = unigrpo()
        .args(["eval", "--model"])
        .arg(common::shapes_dir())
        .arg("--prompts")
        .arg(&prompts)
        .args([
            "--reward",
            "shapes",
            "--samples",
            "3",
            "--seed",
            "1",
            "--threads",
            "1",
            "--json",
            "--grid",
        ])
        .arg(&grid)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("exactly one JSON object on stdout");
    assert_eq!(v["n_prompts"], 2);
    assert_eq!(v["n_images"], 6);
    let mean = v["reward_mean"].as_f64().unwrap();
    let strict = v["strict_rate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&mean) && (0.0..=1.0).contains(&strict));
    assert!(grid.exists());
}

#[test]
fn errors_name_the_problem() {
    let o = unigrpo()
        .args([
            "generate",
            "--model",
            "/no/such/model",
            "--prompt",
            "a red circle",
            "--out",
            "/tmp/never.png",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/no/such/model"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("p.txt");
    std::fs::write(&prompts, "a red circle\na purple elephant\n").unwrap();
    let o = unigrpo()
        .args(["eval", "--model"])
        .arg(common::shapes_dir())
        .arg("--prompts")
        .arg(&prompts)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("p.txt:2") && err.contains("purple elephant"),
        "{err}"
    );
}

#[test]
fn inspect_describes_the_package() {
    let o = unigrpo()
        .args(["inspect", "--model"])
        .arg(common::shapes_dir())
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for needle in [
        "tiny-shapes",
        "velocity_vjp",
        "text_decode",
        "cond_ids <- context_ids",
        "parameters:",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in\n{s}");
    }
}
