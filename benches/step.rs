//! One trainer configuration's step time, for the thread A/B of `scripts/bench-threads.sh`:
//! 4 prompts x the model's group size with its training defaults, one warm-up step, then
//! UNIGRPO_BENCH_STEPS steps (default 4); prints `step_ms median=... mean=... min=... max=...`.
//! Threads: UNIGRPO_BENCH_THREADS (intra-op, 0 = ONNX Runtime's default), UNIGRPO_BENCH_SPIN=1.

use std::path::PathBuf;
use std::time::Instant;

use unigrpo::{Model, ModelOptions, Progress};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny-shapes");
    let model = std::sync::Arc::new(
        Model::load(
            &dir,
            &ModelOptions {
                intra_threads: env("UNIGRPO_BENCH_THREADS", 0),
                allow_spinning: env("UNIGRPO_BENCH_SPIN", 0) == 1,
                ..Default::default()
            },
        )
        .expect("load model"),
    );
    let cfg = unigrpo::TrainConfig::defaults(&*model);
    let mut trainer = unigrpo::train::Trainer::new(model.clone(), cfg).expect("trainer");
    let prompts = [
        "a few warm-coloured shapes",
        "a circle the colour of the sky",
        "two red circles",
        "a blue square left of a green triangle",
    ];
    let mut reward = unigrpo::reward::ShapesReward;
    let mut step = || {
        let t = Instant::now();
        trainer
            .step(&prompts, &mut reward, None, &mut Progress::none())
            .expect("step");
        t.elapsed().as_secs_f64() * 1e3
    };
    step();
    let mut ms: Vec<f64> = (0..env("UNIGRPO_BENCH_STEPS", 4)).map(|_| step()).collect();
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    ms.sort_by(f64::total_cmp);
    println!(
        "step_ms median={:.0} mean={mean:.0} min={:.0} max={:.0}",
        ms[ms.len() / 2],
        ms[0],
        ms[ms.len() - 1]
    );
}
