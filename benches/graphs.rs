//! The velocity graphs alone and the trainer step by phase, plain weights against weights built
//! into the session (`ImageNet::velocity_constant`), alternating in one process so that both see
//! the same machine load (`make bench`; figures only, asserts nothing).
//!
//! - `velocity` at 32 rows (one denoising step of a 4 x 8 rollout) and 80 rows (an update's
//!   share of trained steps), plain and constant, median of UNIGRPO_BENCH_ROUNDS rounds;
//! - `velocity_vjp` at 80 rows;
//! - the default trainer step (4 prompts x group 8) split into rollout, rewards and each
//!   optimiser step, with the ONNX Runtime time of each graph, for four models: plain weights,
//!   weights built in (the default), that with the later updates recomputing their forward
//!   (`ModelOptions::recompute_activations`: "recompute"), and that with every denoising step
//!   running the whole velocity graph too (`recompute_context`: "session6", session 6's path);
//!   UNIGRPO_BENCH_TRAINERS=constant,session6 (say) runs only those (skipped with
//!   UNIGRPO_BENCH_STEPS=0);
//! - ONNX Runtime's own profile of the forward (plain and built in) and of the VJP at 80 rows:
//!   milliseconds per run, GFLOP/s of the matrix products and the operator types' shares
//!   (UNIGRPO_BENCH_PROFILE=0 skips it).
//!
//! Threads: UNIGRPO_BENCH_THREADS (intra-op, 0 = ONNX Runtime's default). Device:
//! UNIGRPO_BENCH_DEVICE (default cpu; on `cuda:N` both models run there, and a CPU model gives
//! the reference of an agreement check first: velocity, VJP gradients and the SDE log-prob of a
//! step, as `scripts/gpu-check.sh` reports them).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ndarray::{Array1, ArrayD, IxDyn};
use unigrpo::runtime::Tensor;
use unigrpo::{Model, ModelOptions, Progress};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Rows {
    x: ArrayD<f32>,
    t: ArrayD<f32>,
    cond: Vec<(String, Tensor)>,
    cot: ArrayD<f32>,
}

fn rows(model: &Model, b: usize) -> Rows {
    let prompts: Vec<String> = (0..b)
        .map(|i| ["a red circle above a blue square", "two green triangles"][i % 2].to_string())
        .collect();
    let contexts: Vec<Vec<i64>> = prompts
        .iter()
        .map(|p| model.tokenizer.encode(p).expect("tokenize"))
        .collect();
    let cond = unigrpo::generate::build_conditioning(model, &model.params, &contexts, None)
        .expect("conditioning");
    let sh = &model.image.latent_shape;
    let n = b * sh.iter().product::<usize>();
    let wave = |k: usize, f: f32| (k as f32 * f).sin() * 0.9;
    Rows {
        x: ArrayD::from_shape_vec(
            IxDyn(&[b, sh[0], sh[1], sh[2]]),
            (0..n).map(|k| wave(k, 0.37)).collect(),
        )
        .unwrap(),
        t: Array1::from_iter((0..b).map(|i| 0.1 + 0.8 * (i as f32 / b as f32))).into_dyn(),
        cond: cond.inputs,
        cot: ArrayD::from_shape_vec(
            IxDyn(&[b, sh[0], sh[1], sh[2]]),
            (0..n).map(|k| wave(k, 0.11) * 1e-3).collect(),
        )
        .unwrap(),
    }
}

fn max_rel(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    let m = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter()
        .zip(b.iter())
        .fold(0f32, |e, (x, y)| e.max((x - y).abs()))
        / m
}

/// The device's velocity (plain and built in), VJP gradients and one SDE step's log-prob
/// against the CPU's on the same inputs.
fn agreement(cpu: &Model, dev: &Model, dev_constant: &Model) {
    use unigrpo::sampler::{sde_coefficients, sde_logprob, sde_mean};
    let r = rows(cpu, 32);
    let p = &cpu.params;
    let v_cpu = cpu
        .image
        .velocity(p, &r.x, &r.t, &r.cond, None)
        .expect("cpu velocity");
    let v_dev = dev
        .image
        .velocity(p, &r.x, &r.t, &r.cond, None)
        .expect("device velocity");
    let v_con = dev_constant
        .image
        .velocity_constant(p, &r.x, &r.t, &r.cond, None)
        .expect("device velocity, built in");
    let (mut g_cpu, mut g_dev) = (unigrpo::nets::Grads::new(), unigrpo::nets::Grads::new());
    cpu.image
        .velocity_vjp(p, &r.x, &r.t, &r.cond, &r.cot, &mut g_cpu, None)
        .expect("cpu vjp");
    dev.image
        .velocity_vjp(p, &r.x, &r.t, &r.cond, &r.cot, &mut g_dev, None)
        .expect("device vjp");
    let grad_rel = g_cpu
        .iter()
        .map(|(n, a)| {
            let b = &g_dev[n];
            let m = a.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
            a.iter()
                .zip(b.iter())
                .fold(0f64, |e, (x, y)| e.max((x - y).abs()))
                / m
        })
        .fold(0f64, f64::max);
    // one SDE step per row from t to t - 0.1 with the CPU's mean, its log-prob under each velocity
    let d = cpu.image.latent_len();
    let (xs, tv) = (r.x.as_slice().unwrap(), r.t.as_slice().unwrap());
    let mut worst_lp = 0f64;
    let (mut mu_c, mut mu_d) = (vec![0f64; d], vec![0f64; d]);
    for i in 0..tv.len() {
        let t = tv[i] as f64;
        let c = sde_coefficients(t, t - 0.1, 0.7, 0.9);
        let x = &xs[i * d..(i + 1) * d];
        sde_mean(
            x,
            &v_cpu.as_slice().unwrap()[i * d..(i + 1) * d],
            &c,
            &mut mu_c,
        );
        sde_mean(
            x,
            &v_dev.as_slice().unwrap()[i * d..(i + 1) * d],
            &c,
            &mut mu_d,
        );
        let x_next: Vec<f32> = mu_c
            .iter()
            .enumerate()
            .map(|(k, m)| (m + c.std * ((k as f64 * 0.71).sin())) as f32)
            .collect();
        let diff = (sde_logprob(&x_next, &mu_c, c.std) - sde_logprob(&x_next, &mu_d, c.std)).abs();
        worst_lp = worst_lp.max(diff);
    }
    println!(
        "agreement with the CPU, 32 rows: velocity {:.1e} (built in {:.1e}) relative, VJP gradients {grad_rel:.1e} relative, SDE step log-prob {worst_lp:.1e} absolute (bound 1e-3)",
        max_rel(&v_dev, &v_cpu),
        max_rel(&v_con, &v_cpu)
    );
}

/// ONNX Runtime's profile of the velocity forward (plain and built in) and of its VJP at 80
/// rows: milliseconds per run, the GFLOP/s of the matrix-product nodes (convolutions and
/// matrix multiplications, counted on the plain graphs' shapes: the blocked layout of the
/// built-in session pads channels) and the operator types that take the most time.
fn profile(plain: &Model, constant: &Model, rounds: usize) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let graph = |name: &str| {
        plain
            .graphs()
            .find(|(n, _)| *n == name)
            .map(|(_, g)| g)
            .expect("graph")
    };
    let b = 80;
    let r = rows(plain, b);
    let p = &plain.params;
    println!("== ONNX Runtime profile, {b} rows ({rounds} runs each; profiling adds its own cost)");
    let fwd = graph("velocity")
        .with_profiling(&dir.path().join("fwd"))
        .expect("profiled session");
    let vjp = graph("velocity_vjp")
        .with_profiling(&dir.path().join("vjp"))
        .expect("profiled session");
    let built = constant
        .image
        .constant_velocity(p)
        .expect("constant session")
        .expect("a model with built-in weights")
        .with_profiling(&dir.path().join("const"))
        .expect("profiled session");
    let mut grads = unigrpo::nets::Grads::new();
    // ONNX Runtime profiles from the session's start: the figures are over every run, the first
    // (warm-up) included
    for _ in 0..rounds + 1 {
        plain
            .image
            .velocity_with(Some(&fwd), p, &r.x, &r.t, &r.cond, None)
            .expect("velocity");
        constant
            .image
            .velocity_with(Some(&built), p, &r.x, &r.t, &r.cond, None)
            .expect("velocity");
        plain
            .image
            .velocity_vjp_with(Some(&vjp), p, &r.x, &r.t, &r.cond, &r.cot, &mut grads, None)
            .expect("vjp");
    }
    let pf = fwd.end_profiling().expect("forward profile");
    let pc = built.end_profiling().expect("built-in profile");
    let pv = vjp.end_profiling().expect("VJP profile");
    let fwd_flops = pf.flops_per_run();
    for (label, prof, flops) in [
        ("velocity, plain weights", &pf, fwd_flops),
        ("velocity, weights built in", &pc, fwd_flops),
        ("velocity_vjp", &pv, pv.flops_per_run()),
    ] {
        let ms = prof.ms_per_run();
        let mut line = format!(
            "{label}: {ms:.1} ms per run, {:.2} GFLOP per run, {:.1} GFLOP/s; by operator:",
            flops * 1e-9,
            flops * 1e-9 / (ms * 1e-3)
        );
        for o in prof.ops.iter().take(8) {
            line += &format!(
                " {} {:.1}%",
                o.op,
                100.0 * o.micros / prof.node_micros.max(1e-9)
            );
            if o.flops > 0.0 {
                line += &format!(" ({:.1} GFLOP/s)", o.flops * 1e-9 / (o.micros * 1e-6));
            }
        }
        println!("{line}");
    }
}

/// An experiment: the VJP graph with the parameters built in (as the forward's rollout
/// sessions), its build time and its runs against the plain VJP's, alternating.
fn vjp_constant(plain: &Model, rounds: usize) {
    let g = plain
        .graphs()
        .find(|(n, _)| *n == "velocity_vjp")
        .map(|(_, g)| g)
        .expect("graph");
    let p = &plain.params;
    let names: Vec<&str> = g
        .inputs
        .iter()
        .map(|i| i.name.as_str())
        .filter(|n| p.values.contains_key(*n))
        .collect();
    let values: Vec<ArrayD<f32>> = names
        .iter()
        .map(|n| p.values[*n].as_standard_layout().into_owned())
        .collect();
    let constants: Vec<unigrpo::runtime::Constant<'_>> = names
        .iter()
        .zip(&values)
        .map(|(n, v)| unigrpo::runtime::Constant {
            name: n,
            shape: v.shape(),
            data: v.as_slice().expect("standard layout"),
        })
        .collect();
    let t = Instant::now();
    let built = g.with_constants(&constants).expect("VJP with constants");
    let build = t.elapsed().as_secs_f64() * 1e3;
    let r = rows(plain, 80);
    let (mut ga, mut gb) = (unigrpo::nets::Grads::new(), unigrpo::nets::Grads::new());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds + 1 {
        a.push(time_ms(&mut || {
            plain
                .image
                .velocity_vjp(p, &r.x, &r.t, &r.cond, &r.cot, &mut ga, None)
                .expect("vjp");
        }));
        b.push(time_ms(&mut || {
            plain
                .image
                .velocity_vjp_with(Some(&built), p, &r.x, &r.t, &r.cond, &r.cot, &mut gb, None)
                .expect("vjp");
        }));
    }
    let worst = ga
        .iter()
        .map(|(k, x)| {
            let y = &gb[k];
            let m = x.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-12);
            x.iter()
                .zip(y.iter())
                .fold(0f64, |e, (u, v)| e.max((u - v).abs()))
                / m
        })
        .fold(0f64, f64::max);
    println!(
        "velocity_vjp 80 rows: plain {:.1} ms, weights built in {:.1} ms (build {build:.0} ms); gradients' worst relative difference {worst:.1e}",
        median(a),
        median(b)
    );
}

fn time_ms(f: &mut dyn FnMut()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny-shapes");
    let device = std::env::var("UNIGRPO_BENCH_DEVICE").unwrap_or_else(|_| "cpu".into());
    let load_with = |plain: bool, recompute: bool, context: bool, device: &str| {
        Arc::new(
            Model::load(
                &dir,
                &ModelOptions {
                    device: device.to_string(),
                    intra_threads: env("UNIGRPO_BENCH_THREADS", 0),
                    plain_weights: plain,
                    recompute_activations: recompute,
                    recompute_context: context,
                    ..Default::default()
                },
            )
            .expect("load model"),
        )
    };
    let load = |plain: bool, device: &str| load_with(plain, false, false, device);
    let (plain, constant) = (load(true, &device), load(false, &device));
    println!("== device {device}");
    if device != "cpu" || env("UNIGRPO_BENCH_AGREE", 0) == 1 {
        agreement(&load(true, "cpu"), &plain, &constant);
    }
    let rounds = env("UNIGRPO_BENCH_ROUNDS", 5);
    println!("== velocity graphs (median of {rounds} alternating rounds)");
    for b in [32usize, 80] {
        let r = rows(&plain, b);
        let p = &plain.params;
        let mut fp = || {
            plain
                .image
                .velocity(p, &r.x, &r.t, &r.cond, None)
                .expect("velocity");
        };
        let mut fc = || {
            constant
                .image
                .velocity_constant(p, &r.x, &r.t, &r.cond, None)
                .expect("velocity");
        };
        let build = time_ms(&mut fc);
        fp();
        let (mut a, mut c) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            a.push(time_ms(&mut fp));
            c.push(time_ms(&mut fc));
        }
        let v0 = plain.image.velocity(p, &r.x, &r.t, &r.cond, None).unwrap();
        let v1 = constant
            .image
            .velocity_constant(p, &r.x, &r.t, &r.cond, None)
            .unwrap();
        let diff = v0
            .iter()
            .zip(v1.iter())
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        let (ma, mc) = (median(a), median(c));
        println!(
            "velocity {b:>3} rows: plain {ma:.1} ms, constant {mc:.1} ms ({:.2}x; first call with the session build {build:.0} ms); max |difference| {diff:.1e}",
            ma / mc
        );
    }
    {
        let b = 80;
        let r = rows(&plain, b);
        let mut grads = unigrpo::nets::Grads::new();
        let mut f = || {
            plain
                .image
                .velocity_vjp(&plain.params, &r.x, &r.t, &r.cond, &r.cot, &mut grads, None)
                .expect("vjp");
        };
        f();
        let v: Vec<f64> = (0..rounds).map(|_| time_ms(&mut f)).collect();
        println!("velocity_vjp {b} rows: {:.1} ms", median(v));
    }

    if env("UNIGRPO_BENCH_VJP_CONSTANT", 0) == 1 {
        vjp_constant(&plain, rounds);
    }
    if env("UNIGRPO_BENCH_PROFILE", 1) == 1 {
        profile(&plain, &constant, rounds);
    }

    let steps = env("UNIGRPO_BENCH_STEPS", 4);
    if steps == 0 {
        return;
    }
    println!("== trainer step by phase, 4 prompts x group 8, the model's training defaults");
    let prompts = [
        "a few warm-coloured shapes",
        "a circle the colour of the sky",
        "two red circles",
        "a blue square left of a green triangle",
    ];
    // weights built in, the later updates' forward and VJP recomputing; and that with every
    // denoising step running the whole velocity graph (session 6's path)
    let recompute = load_with(false, true, false, &device);
    let session6 = load_with(false, true, true, &device);
    let mut trainers: Vec<(&str, Arc<Model>, unigrpo::train::Trainer)> = [
        ("plain", &plain),
        ("constant", &constant),
        ("recompute", &recompute),
        ("session6", &session6),
    ]
    .into_iter()
    .filter(|(n, _)| {
        std::env::var("UNIGRPO_BENCH_TRAINERS").map_or(true, |l| l.split(',').any(|x| x == *n))
    })
    .map(|(n, m)| {
        let cfg = unigrpo::TrainConfig::defaults(&**m);
        (
            n,
            m.clone(),
            unigrpo::train::Trainer::new(m.clone(), cfg).expect("trainer"),
        )
    })
    .collect();
    let mut phases: Vec<Vec<Vec<f64>>> = vec![Vec::new(); trainers.len()];
    for s in 0..=steps {
        for (k, (_, model, t)) in trainers.iter_mut().enumerate() {
            let graphs0: Vec<f64> = model.graphs().map(|(_, g)| g.run_stats().1).collect();
            let c0 = model.image.constant_stats();
            let mut reward = unigrpo::reward::ShapesReward;
            let t0 = Instant::now();
            let r = t
                .rollout(&prompts, None, &mut Progress::none())
                .expect("rollout");
            let t1 = Instant::now();
            let rewards = t
                .rewards(&r, &mut reward, None, &mut Progress::none())
                .expect("rewards");
            let t2 = Instant::now();
            let mut up = t.begin_update(&r, &rewards).expect("begin");
            let mut marks = vec![t0, t1, t2];
            for u in 0..t.config().updates_per_step {
                let (g, terms) = t.gradients(&up, &r, u, None).expect("gradients");
                t.apply(&mut up, &g, &terms).expect("apply");
                marks.push(Instant::now());
            }
            t.commit(up).expect("commit");
            marks.push(Instant::now());
            let mut row: Vec<f64> = marks
                .windows(2)
                .map(|w| (w[1] - w[0]).as_secs_f64())
                .collect();
            row.push((marks[marks.len() - 1] - t0).as_secs_f64());
            let graphs1: Vec<f64> = model.graphs().map(|(_, g)| g.run_stats().1).collect();
            row.extend(graphs0.iter().zip(&graphs1).map(|(a, b)| b - a));
            let c1 = model.image.constant_stats();
            row.push(c1.1 - c0.1);
            row.push(c1.2 - c0.2);
            if s > 0 {
                phases[k].push(row);
            }
        }
    }
    let names: Vec<&str> = plain.graphs().map(|(n, _)| n).collect();
    for (k, (label, _, t)) in trainers.iter().enumerate() {
        if phases[k].is_empty() {
            continue;
        }
        let u = t.config().updates_per_step as usize;
        let col = |i: usize| median(phases[k].iter().map(|r| r[i]).collect()) * 1e3;
        let mut line = format!(
            "{label:>8}: step {:.0} ms = rollout {:.0} + rewards {:.0}",
            col(3 + u),
            col(0),
            col(1)
        );
        for i in 0..u {
            line += &format!(" + update {} {:.0}", i + 1, col(2 + i));
        }
        line += &format!(" + commit {:.0}", col(2 + u));
        println!("{line}");
        let mut g = String::from("          ONNX Runtime per step:");
        for (i, n) in names.iter().enumerate() {
            g += &format!(" {n} {:.0}", col(4 + u + i));
        }
        g += &format!(
            ", sessions with built-in weights: running {:.0}, building {:.0}",
            col(4 + u + names.len()),
            col(5 + u + names.len())
        );
        println!("{g}");
    }
}
