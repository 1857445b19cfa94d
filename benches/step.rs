//! One trainer configuration's step time, for the thread A/B of `scripts/bench-threads.sh`:
//! 4 prompts x the model's group size with its training defaults, one warm-up step, then
//! UNIGRPO_BENCH_STEPS steps (default 4); prints `step_ms median=... mean=... min=... max=...`
//! and the median of each phase (`phases_ms rollout ... rewards ... update 1 ... commit ...`; the
//! rollout includes decoding the reasoning). UNIGRPO_BENCH_PLAIN=1 loads the model with plain
//! weights (`ModelOptions::plain_weights`), UNIGRPO_BENCH_RECOMPUTE=1 on session 6's path: the
//! later updates recomputing their forward and every denoising step running the whole velocity
//! graph (`ModelOptions::recompute_activations`, `recompute_context`).
//! UNIGRPO_BENCH_ANCHORS=K sets `mse_anchor_steps` (the cost of the velocity-MSE anchors).
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
                plain_weights: env("UNIGRPO_BENCH_PLAIN", 0) == 1,
                recompute_activations: env("UNIGRPO_BENCH_RECOMPUTE", 0) == 1,
                recompute_context: env("UNIGRPO_BENCH_RECOMPUTE", 0) == 1,
                ..Default::default()
            },
        )
        .expect("load model"),
    );
    let mut cfg = unigrpo::TrainConfig::defaults(&*model);
    cfg.mse_anchor_steps = env("UNIGRPO_BENCH_ANCHORS", cfg.mse_anchor_steps as usize) as u32;
    let mut trainer = unigrpo::train::Trainer::new(model.clone(), cfg).expect("trainer");
    let prompts = [
        "a few warm-coloured shapes",
        "a circle the colour of the sky",
        "two red circles",
        "a blue square left of a green triangle",
    ];
    let mut reward = unigrpo::reward::ShapesReward;
    let mut step = || {
        let p = &mut Progress::none();
        let mut marks = vec![Instant::now()];
        let r = trainer.rollout(&prompts, None, p).expect("rollout");
        marks.push(Instant::now());
        let rewards = trainer.rewards(&r, &mut reward, None, p).expect("rewards");
        marks.push(Instant::now());
        let mut up = trainer.begin_update(&r, &rewards).expect("update");
        for u in 0..trainer.config().updates_per_step {
            let (g, terms) = trainer.gradients(&up, &r, u, None).expect("gradients");
            trainer.apply(&mut up, &g, &terms).expect("apply");
            marks.push(Instant::now());
        }
        trainer.commit(up).expect("commit");
        marks.push(Instant::now());
        marks
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
            .collect::<Vec<f64>>()
    };
    step();
    let rows: Vec<Vec<f64>> = (0..env("UNIGRPO_BENCH_STEPS", 4)).map(|_| step()).collect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut ms: Vec<f64> = rows.iter().map(|r| r.iter().sum()).collect();
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    ms.sort_by(f64::total_cmp);
    println!(
        "step_ms median={:.0} mean={mean:.0} min={:.0} max={:.0}",
        ms[ms.len() / 2],
        ms[0],
        ms[ms.len() - 1]
    );
    let n = rows[0].len();
    let col = |i: usize| median(rows.iter().map(|r| r[i]).collect());
    let mut line = format!("phases_ms rollout {:.0} rewards {:.0}", col(0), col(1));
    for u in 2..n - 1 {
        line += &format!(" update {} {:.0}", u - 1, col(u));
    }
    line += &format!(" commit {:.0}", col(n - 1));
    println!("{line}");
}
