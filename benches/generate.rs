//! Generation benchmark (`make bench`): prints figures, asserts nothing.
//!
//! - latency of one demo image with reasoning at the model's default steps;
//! - a batch of 32 samples: images per second and the share of wall time outside ONNX Runtime;
//! - a UniGRPO trainer step of 4 prompts x group 8 with the model's training defaults: seconds per
//!   step and the share of step time outside ONNX Runtime.

use std::path::PathBuf;
use std::time::Instant;

use unigrpo::{generate_batch, GenerateParams, Model, ModelOptions, Progress};

fn main() {
    let dir = std::env::var_os("UNIGRPO_BENCH_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny-shapes"));
    let threads: usize = std::env::var("UNIGRPO_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let model = std::sync::Arc::new(
        Model::load(
            &dir,
            &ModelOptions {
                device: "cpu".into(),
                intra_threads: threads,
                ..Default::default()
            },
        )
        .expect("load model"),
    );
    let p = GenerateParams::defaults(&*model);
    let prompt = "a circle the colour of the sky";
    let run = |prompts: &[&str], seeds: &[u64], p: &GenerateParams| {
        generate_batch(
            &model,
            &model.params,
            prompts,
            seeds,
            p,
            None,
            &mut Progress::none(),
        )
        .expect("generate")
    };
    // warm-up
    run(&[prompt], &[0], &p);
    let reps = 20;
    let t = Instant::now();
    for i in 0..reps {
        run(&[prompt], &[i], &p);
    }
    let single = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "single image with reasoning ({} denoising steps, {}): {:.1} ms",
        p.num_steps,
        model.manifest().name,
        single * 1e3
    );
    let prompts: Vec<&str> = [
        "a circle the colour of the sky",
        "a blue square left of a green triangle",
        "a few warm-coloured shapes",
        "two red circles",
    ]
    .iter()
    .cycle()
    .take(32)
    .copied()
    .collect();
    let seeds: Vec<u64> = (0..32).collect();
    for noise in [0.0f32, 0.7] {
        let mut q = p.clone();
        q.noise_level = noise;
        run(&prompts, &seeds, &q);
        let (calls0, ort0) = model.run_stats();
        let reps = 5;
        let t = Instant::now();
        for _ in 0..reps {
            run(&prompts, &seeds, &q);
        }
        let wall = t.elapsed().as_secs_f64();
        let (calls1, ort1) = model.run_stats();
        let outside = 1.0 - (ort1 - ort0) / wall;
        println!(
            "batch of 32 ({}): {:.1} images/s, {:.1} ms per batch, {} ONNX Runtime calls per batch, {:.1}% of wall time outside ONNX Runtime",
            if noise > 0.0 { "SDE" } else { "ODE" },
            32.0 * reps as f64 / wall,
            wall / reps as f64 * 1e3,
            (calls1 - calls0) / reps,
            outside * 100.0
        );
    }
    let cfg = unigrpo::train::TrainConfig::defaults(&*model);
    let mut trainer = unigrpo::train::Trainer::new(model.clone(), cfg.clone()).expect("trainer");
    let prompts = [
        "a few warm-coloured shapes",
        "a circle the colour of the sky",
        "two red circles",
        "a blue square left of a green triangle",
    ];
    let mut reward = unigrpo::reward::ShapesReward;
    trainer
        .step(&prompts, &mut reward, None, &mut Progress::none())
        .expect("step");
    let (_, ort0) = model.run_stats();
    let per_graph0: Vec<(&str, f64)> = model.graphs().map(|(n, g)| (n, g.run_stats().1)).collect();
    let reps = 5;
    let t = Instant::now();
    for _ in 0..reps {
        trainer
            .step(&prompts, &mut reward, None, &mut Progress::none())
            .expect("step");
    }
    let wall = t.elapsed().as_secs_f64();
    let (_, ort1) = model.run_stats();
    println!(
        "trainer step, 4 prompts x group {} ({} rollout steps, {} trained, {} updates): {:.0} ms per step, {:.1}% of step time outside ONNX Runtime",
        cfg.group_size,
        cfg.num_steps,
        cfg.trained_steps(),
        cfg.updates_per_step,
        wall / reps as f64 * 1e3,
        (1.0 - (ort1 - ort0) / wall) * 100.0
    );
    for (name, before) in per_graph0 {
        let g = model.graphs().find(|(n, _)| *n == name).expect("graph").1;
        let secs = g.run_stats().1 - before;
        println!(
            "  {name:<17} {:>7.0} ms per step ({:.0}%)",
            secs / reps as f64 * 1e3,
            secs / wall * 100.0
        );
    }
}
