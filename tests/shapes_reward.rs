//! The `shapes` reward on scenes rendered by the tooling (tests/data/shapes_fixtures.json, written
//! by models/unigrpo_export/make_data.py): ground truth scores 1, each perturbation loses exactly
//! the constraints it breaks.

mod common;

use base64::Engine;
use unigrpo::reward::shapes;
use unigrpo::RgbImage;

#[test]
fn rendered_scenes_score_as_expected() {
    let path = common::root().join("tests/data/shapes_fixtures.json");
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let size = data["size"].as_u64().unwrap() as u32;
    let mut counts = std::collections::BTreeMap::new();
    for item in data["items"].as_array().unwrap() {
        let prompt = item["prompt"].as_str().unwrap();
        let rgb = base64::engine::general_purpose::STANDARD
            .decode(item["rgb"].as_str().unwrap())
            .unwrap();
        let img = RgbImage::new(size, size, rgb);
        let got = shapes::score(prompt, &img).unwrap().value();
        let want = item["expected"].as_f64().unwrap() as f32;
        let what = item["what"].as_str().unwrap();
        assert!(
            (got - want).abs() < 1e-6,
            "{what} of {prompt:?}: score {got}, expected {want}"
        );
        *counts.entry(what.to_string()).or_insert(0) += 1;
    }
    for what in ["truth", "colour", "shape", "count", "position", "relation"] {
        assert!(
            counts.get(what).copied().unwrap_or(0) >= 10,
            "too few {what} fixtures: {counts:?}"
        );
    }
}

#[test]
fn scoring_is_deterministic() {
    let img = RgbImage::new(
        16,
        16,
        (0..16 * 16 * 3).map(|i| ((i * 37) % 256) as u8).collect(),
    );
    let a = shapes::score("two red circles", &img).unwrap();
    let b = shapes::score("two red circles", &img).unwrap();
    assert_eq!(a, b);
}

/// The independent check: every clean render of the tooling (truth and perturbations alike) is
/// its own clean render; speckle that leaves the score unchanged moves the distance.
#[test]
fn clean_render_distance_of_renders_and_speckle() {
    let path = common::root().join("tests/data/shapes_fixtures.json");
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let size = data["size"].as_u64().unwrap() as u32;
    let mut worst = 0.0f64;
    let mut speckled = Vec::new();
    for item in data["items"].as_array().unwrap() {
        let rgb = base64::engine::general_purpose::STANDARD
            .decode(item["rgb"].as_str().unwrap())
            .unwrap();
        let img = RgbImage::new(size, size, rgb);
        worst = worst.max(shapes::clean_render_distance(&img));
        if item["what"] == "truth" {
            // isolated dark-grey pixels: background to the analysis, not to the distance
            let mut noisy = img.clone();
            for i in (0..noisy.data.len() / 3).step_by(7) {
                if noisy.data[3 * i..3 * i + 3] == [0, 0, 0] {
                    noisy.data[3 * i..3 * i + 3].copy_from_slice(&[60, 60, 60]);
                }
            }
            let prompt = item["prompt"].as_str().unwrap();
            assert_eq!(
                shapes::score(prompt, &noisy).unwrap().value(),
                1.0,
                "{prompt}"
            );
            speckled.push(shapes::clean_render_distance(&noisy));
        }
    }
    assert!(
        worst < 1e-9,
        "a clean render is {worst} from its own clean render"
    );
    let least = speckled.iter().cloned().fold(f64::INFINITY, f64::min);
    assert!(least > 0.01, "speckle moved the distance by only {least}");
}
