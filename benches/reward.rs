//! `shapes` reward speed (`make bench`): microseconds per image at 16x16 and 32x32.

use std::time::Instant;

use base64::Engine;
use unigrpo::reward::shapes;
use unigrpo::RgbImage;

fn main() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/shapes_fixtures.json");
    let data: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixtures")).expect("json");
    let items: Vec<(shapes::Spec, RgbImage)> = data["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|it| {
            let rgb = base64::engine::general_purpose::STANDARD
                .decode(it["rgb"].as_str().unwrap())
                .unwrap();
            (
                shapes::parse_prompt(it["prompt"].as_str().unwrap()).unwrap(),
                RgbImage::new(16, 16, rgb),
            )
        })
        .collect();
    for scale in [1u32, 2] {
        let imgs: Vec<(shapes::Spec, RgbImage)> = items
            .iter()
            .map(|(s, i)| {
                (
                    s.clone(),
                    if scale == 1 {
                        i.clone()
                    } else {
                        i.upscale(scale)
                    },
                )
            })
            .collect();
        let reps = 200;
        let t = Instant::now();
        let mut sum = 0.0;
        for _ in 0..reps {
            for (s, i) in &imgs {
                sum += shapes::score_spec(s, i).value();
            }
        }
        let per = t.elapsed().as_secs_f64() / (reps * imgs.len()) as f64;
        println!(
            "shapes reward at {}x{}: {:.1} us per image (mean score {:.3} over {} fixtures)",
            16 * scale,
            16 * scale,
            per * 1e6,
            sum / (reps * imgs.len()) as f32,
            imgs.len()
        );
    }
    if std::env::var_os("UNIGRPO_REWARD_DIFF").is_some() {
        for (s, i) in &items {
            let (a, b) = (
                shapes::score_spec(s, i),
                shapes::score_spec(s, &i.upscale(2)),
            );
            if a != b {
                println!("{s:?}: 16x16 {a:?} 32x32 {b:?}");
                println!(
                    "  {:?}\n  {:?}",
                    shapes::components(i),
                    shapes::components(&i.upscale(2))
                );
            }
        }
    }
    let prompts: Vec<&str> = data["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["prompt"].as_str().unwrap())
        .collect();
    let t2 = Instant::now();
    for p in &prompts {
        shapes::parse_prompt(p).unwrap();
    }
    println!(
        "prompt parsing: {:.1} us per prompt",
        t2.elapsed().as_secs_f64() / prompts.len() as f64 * 1e6
    );
}
