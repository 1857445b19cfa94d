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
