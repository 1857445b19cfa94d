//! Generation through the real ONNX Runtime on the shipped packages.

mod common;

use base64::Engine;
use common::*;
use ndarray::Array2;
use unigrpo::text::{decode_reasoning, DecodeSettings, SamplingParams};
use unigrpo::{
    generate_batch, CancelToken, ErrorKind, GenerateParams, Generation, Model, Progress,
};

fn gen(model: &Model, prompts: &[&str], seeds: &[u64], p: &GenerateParams) -> Vec<Generation> {
    generate_batch(
        model,
        &model.params,
        prompts,
        seeds,
        p,
        None,
        &mut Progress::none(),
    )
    .expect("generate")
}

fn max_pixel_diff(a: &[u8], b: &[u8]) -> u8 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| x.abs_diff(y))
        .max()
        .unwrap_or(0)
}

const GOLDEN_PROMPTS: [&str; 4] = [
    "a circle the colour of the sky",
    "a blue square left of a green triangle",
    "a few warm-coloured shapes",
    "two red circles",
];

/// Golden reasoning tokens (exact) and pixels (within a tolerance: ONNX Runtime's CPU kernels
/// differ in the last bits between CPU models). `UNIGRPO_BLESS=1` rewrites the golden file.
#[test]
fn golden_outputs_for_fixed_seeds() {
    let model = load(&shapes_dir());
    let path = root().join("tests/data/golden_tiny_shapes.json");
    let mut cases = Vec::new();
    for (k, prompt) in GOLDEN_PROMPTS.iter().enumerate() {
        for (noise, temp) in [(0.0f32, 1.0f32), (0.7, 0.0)] {
            let mut p = GenerateParams::defaults(&model);
            p.seed = 100 + k as u64;
            p.noise_level = noise;
            p.temperature = temp;
            let g = gen(&model, &[prompt], &[p.seed], &p).remove(0);
            cases.push(serde_json::json!({
                "prompt": prompt, "seed": p.seed, "noise_level": noise, "temperature": temp,
                "reasoning": g.reasoning, "tokens": g.reasoning_tokens.tokens,
                "rgb": base64::engine::general_purpose::STANDARD.encode(&g.image.data),
            }));
        }
    }
    if std::env::var_os("UNIGRPO_BLESS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&cases).unwrap() + "\n").unwrap();
        return;
    }
    let golden: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(&path).expect("golden file (UNIGRPO_BLESS=1 writes it)"),
    )
    .unwrap();
    assert_eq!(golden.len(), cases.len());
    for (g, c) in golden.iter().zip(&cases) {
        assert_eq!(
            g["tokens"], c["tokens"],
            "reasoning tokens for {} (seed {})",
            g["prompt"], g["seed"]
        );
        assert_eq!(g["reasoning"], c["reasoning"]);
        let a = base64::engine::general_purpose::STANDARD
            .decode(g["rgb"].as_str().unwrap())
            .unwrap();
        let b = base64::engine::general_purpose::STANDARD
            .decode(c["rgb"].as_str().unwrap())
            .unwrap();
        let d = max_pixel_diff(&a, &b);
        assert!(
            d <= 12,
            "pixels of {} (seed {}) differ by {d}",
            g["prompt"],
            g["seed"]
        );
    }
}

#[test]
fn repeated_runs_are_identical_and_seeds_matter() {
    let model = load(&shapes_dir());
    let mut p = GenerateParams::defaults(&model);
    p.noise_level = 0.7;
    let a = gen(&model, &["a few warm-coloured shapes"], &[5], &p).remove(0);
    let b = gen(&model, &["a few warm-coloured shapes"], &[5], &p).remove(0);
    assert_eq!(a.reasoning_tokens, b.reasoning_tokens);
    assert_eq!(a.image.data, b.image.data);
    let c = gen(&model, &["a few warm-coloured shapes"], &[6], &p).remove(0);
    assert_ne!(a.image.data, c.image.data);
}

#[test]
fn batched_generation_matches_one_by_one() {
    let model = load(&shapes_dir());
    let mut p = GenerateParams::defaults(&model);
    p.noise_level = 0.5;
    let seeds = [11u64, 12, 13, 14];
    let batch = gen(&model, &GOLDEN_PROMPTS, &seeds, &p);
    for (i, prompt) in GOLDEN_PROMPTS.iter().enumerate() {
        let one = gen(&model, &[prompt], &[seeds[i]], &p).remove(0);
        assert_eq!(
            one.reasoning_tokens.tokens, batch[i].reasoning_tokens.tokens,
            "{prompt}"
        );
        for (x, y) in one
            .reasoning_tokens
            .logprobs
            .iter()
            .zip(&batch[i].reasoning_tokens.logprobs)
        {
            assert!((x - y).abs() < 1e-4, "{prompt}: log-prob {x} vs {y}");
        }
        let d = max_pixel_diff(&one.image.data, &batch[i].image.data);
        assert!(d <= 2, "{prompt}: batched pixels differ by {d}");
    }
}

/// The KV-cache decoder's token log-probs equal the training graph's on the same sequences.
#[test]
fn kv_cache_logprobs_match_the_training_graph() {
    for dir in [shapes_dir(), shared_dir()] {
        let model = load(&dir);
        let tok = &model.tokenizer;
        let prompts: Vec<Vec<i64>> = GOLDEN_PROMPTS
            .iter()
            .map(|p| tok.reasoning_prompt(p, 12).unwrap())
            .collect();
        let temperature = 0.8;
        let settings = DecodeSettings {
            max_new_tokens: 12,
            sampling: SamplingParams {
                temperature,
                top_k: 0,
                top_p: 1.0,
            },
        };
        let mut rngs: Vec<_> = (0..prompts.len())
            .map(|i| unigrpo::rng::stream(i as u64, 0))
            .collect();
        let rs = decode_reasoning(
            &model.text,
            &model.tokenizer,
            &model.params,
            &prompts,
            &settings,
            &mut rngs,
            None,
            &mut Progress::none(),
        )
        .unwrap();
        // left-padded [prompt + reasoning] sequences, next-token targets
        let seqs: Vec<Vec<i64>> = prompts
            .iter()
            .zip(&rs)
            .map(|(p, r)| [p.clone(), r.tokens.clone()].concat())
            .collect();
        let n = seqs.iter().map(|s| s.len() - 1).max().unwrap();
        let b = seqs.len();
        let (mut ids, mut mask, mut pos, mut tgt) = (
            Array2::<i64>::zeros((b, n)),
            Array2::<i64>::zeros((b, n)),
            Array2::<i64>::zeros((b, n)),
            Array2::<i64>::zeros((b, n)),
        );
        for (i, s) in seqs.iter().enumerate() {
            let off = n - (s.len() - 1);
            for j in 0..s.len() - 1 {
                ids[[i, off + j]] = s[j];
                tgt[[i, off + j]] = s[j + 1];
                mask[[i, off + j]] = 1;
                pos[[i, off + j]] = j as i64;
            }
        }
        let batch = unigrpo::nets::LogprobBatch {
            ids,
            mask,
            positions: pos,
            targets: tgt.clone(),
        };
        let lp = model
            .text
            .token_logprobs(&model.params, &batch, temperature, None)
            .unwrap();
        let mut worst = 0f32;
        for (i, (p, r)) in prompts.iter().zip(&rs).enumerate() {
            assert!(!r.tokens.is_empty());
            for (k, &want) in r.logprobs.iter().enumerate() {
                let j = n - r.tokens.len() + k; // target index of reasoning token k
                assert_eq!(tgt[[i, j]], r.tokens[k]);
                worst = worst.max((lp[[i, j]] - want).abs());
            }
            let _ = p;
        }
        assert!(
            worst < 1e-4,
            "{}: max |logp_kv - logp_train| = {worst}",
            dir.display()
        );
    }
}

#[test]
fn shared_transformer_package_generates() {
    let model = load(&shared_dir());
    let p = GenerateParams::defaults(&model);
    let out = gen(&model, &["a red circle", "two blue squares"], &[1, 2], &p);
    assert_eq!((out[0].image.width, out[0].image.height), (16, 16));
    let again = gen(&model, &["a red circle"], &[1], &p).remove(0);
    assert_eq!(
        again.reasoning_tokens.tokens,
        out[0].reasoning_tokens.tokens
    );
    assert!(max_pixel_diff(&again.image.data, &out[0].image.data) <= 2);
    // the image depends on the reasoning through the key/value hand-off
    let mut q = p.clone();
    q.reasoning = false;
    let bare = gen(&model, &["a red circle"], &[1], &q).remove(0);
    assert_eq!(bare.reasoning, "");
    assert_ne!(bare.image.data, out[0].image.data);
}

#[test]
fn reasoning_is_cut_at_max_tokens_and_marked() {
    let model = load(&shapes_dir());
    let mut p = GenerateParams::defaults(&model);
    p.max_reasoning_tokens = 2;
    let g = gen(
        &model,
        &["a blue square left of a green triangle"],
        &[0],
        &p,
    )
    .remove(0);
    assert_eq!(g.reasoning_tokens.tokens.len(), 2);
    assert!(g.reasoning_tokens.truncated);
}

#[test]
fn bad_input_gets_clear_errors() {
    let model = load(&shapes_dir());
    let p = GenerateParams::defaults(&model);
    let run = |prompt: &str, p: &GenerateParams| {
        generate_batch(
            &model,
            &model.params,
            &[prompt],
            &[0],
            p,
            None,
            &mut Progress::none(),
        )
        .unwrap_err()
    };
    let e = run("   ", &p);
    assert!(
        e.kind() == ErrorKind::InvalidArgument && e.message().contains("empty"),
        "{e}"
    );
    let long = "red ".repeat(60);
    let e = run(&long, &p);
    assert!(
        e.kind() == ErrorKind::InvalidArgument && e.message().contains("at most"),
        "{e}"
    );
    let mut q = p.clone();
    q.num_steps = 0;
    assert_eq!(run("a red circle", &q).kind(), ErrorKind::InvalidArgument);
    let mut q = p.clone();
    q.top_p = 0.0;
    assert_eq!(run("a red circle", &q).kind(), ErrorKind::InvalidArgument);
    let mut q = p.clone();
    q.temperature = f32::NAN;
    assert_eq!(run("a red circle", &q).kind(), ErrorKind::InvalidArgument);
}

#[test]
fn unknown_or_unavailable_device_is_an_error() {
    let opts = |dev: &str| unigrpo::ModelOptions {
        device: dev.into(),
        intra_threads: 1,
        ..Default::default()
    };
    let e = Model::load(&shapes_dir(), &opts("tpu:0"))
        .err()
        .expect("tpu:0 loaded");
    assert_eq!(e.kind(), ErrorKind::DeviceUnavailable, "{e}");
    assert!(e.message().contains("unknown device"), "{e}");
    // cuda:0 either runs (a machine with CUDA and the GPU build of ONNX Runtime: the device in use
    // is the one asked for, never a silent CPU fallback) or is a clear error
    match Model::load(&shapes_dir(), &opts("cuda:0")) {
        Ok(m) => assert_eq!(m.device.name(), "cuda:0"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::DeviceUnavailable, "{e}");
            assert!(e.message().contains("cuda:0 is unavailable"), "{e}");
        }
    }
}

/// A progress callback returning false at any stage fails the call with Cancelled: every report
/// of a full generation (reasoning steps, denoising steps, before and after decoding) is tried.
#[test]
fn progress_false_cancels_at_every_stage() {
    let model = load(&shapes_dir());
    let p = GenerateParams::defaults(&model);
    let mut all = Vec::new();
    let mut record = |s: unigrpo::Stage, i: u32, _n: u32| {
        all.push((s, i));
        true
    };
    generate_batch(
        &model,
        &model.params,
        &["a red circle"],
        &[0],
        &p,
        None,
        &mut Progress::new(&mut record),
    )
    .unwrap();
    assert!(
        all.contains(&(unigrpo::Stage::Decoding, 0))
            && all.contains(&(unigrpo::Stage::Decoding, 1))
    );
    for &stop in &all {
        let mut cb = |s: unigrpo::Stage, i: u32, _n: u32| (s, i) != stop;
        let e = generate_batch(
            &model,
            &model.params,
            &["a red circle"],
            &[0],
            &p,
            None,
            &mut Progress::new(&mut cb),
        )
        .err()
        .unwrap_or_else(|| panic!("returning false at {stop:?} did not cancel"));
        assert_eq!(e.kind(), ErrorKind::Cancelled, "{stop:?}: {e}");
    }
}

#[test]
fn cancellation_before_and_from_progress() {
    let model = load(&shapes_dir());
    let p = GenerateParams::defaults(&model);
    let token = CancelToken::new();
    token.cancel();
    let e = generate_batch(
        &model,
        &model.params,
        &["a red circle"],
        &[0],
        &p,
        Some(&token),
        &mut Progress::none(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    token.reset();
    assert!(generate_batch(
        &model,
        &model.params,
        &["a red circle"],
        &[0],
        &p,
        Some(&token),
        &mut Progress::none()
    )
    .is_ok());
    let mut seen = Vec::new();
    let mut stop_at_denoise_3 = |s: unigrpo::Stage, i: u32, _n: u32| {
        seen.push((s, i));
        !(s == unigrpo::Stage::Denoising && i == 3)
    };
    let e = generate_batch(
        &model,
        &model.params,
        &["a red circle"],
        &[0],
        &p,
        None,
        &mut Progress::new(&mut stop_at_denoise_3),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert!(seen.iter().any(|&(s, _)| s == unigrpo::Stage::Reasoning));
    assert_eq!(seen.last(), Some(&(unigrpo::Stage::Denoising, 3)));
}

/// Parameters that blow the velocity up (1e37 x the output convolution) gave an all-black
/// image with success: the denoiser refuses non-finite latents, naming the step.
#[test]
fn non_finite_latents_fail_naming_the_step() {
    let model = common::load(&common::shapes_dir());
    let mut params = (*model.params).clone();
    for v in params
        .values
        .get_mut("image.conv_out.w")
        .unwrap()
        .iter_mut()
    {
        *v *= 1e37;
    }
    let p = GenerateParams::defaults(&model);
    let e = generate_batch(
        &model,
        &params,
        &["two red circles"],
        &[0],
        &p,
        None,
        &mut Progress::none(),
    )
    .map(|_| ())
    .expect_err("non-finite latents");
    assert_eq!(e.kind(), ErrorKind::NonFinite);
    assert!(
        e.message().contains("denoising step 2 of 20")
            && e.message().contains("non-finite latents"),
        "{e}"
    );
}

/// The velocity through a session with the parameters built in (`velocity_constant`, what the
/// denoising loop and the reference forwards use) agrees with the plain graph to rounding; one
/// session per parameter set, reused, the last two kept; a model loaded with `plain_weights`
/// builds none and matches the plain graph exactly.
#[test]
fn constant_weight_sessions_agree_with_plain_weights_and_are_reused() {
    use ndarray::{Array1, ArrayD, IxDyn};
    let model = load(&shapes_dir());
    let plain = Model::load(
        &shapes_dir(),
        &unigrpo::ModelOptions {
            device: "cpu".into(),
            intra_threads: 1,
            plain_weights: true,
            ..Default::default()
        },
    )
    .unwrap();
    let ctx = vec![
        model
            .tokenizer
            .encode("a red circle above a blue square")
            .unwrap();
        3
    ];
    let cond = unigrpo::generate::build_conditioning(&model, &model.params, &ctx, None).unwrap();
    let n = 3 * model.image.latent_len();
    let x = ArrayD::from_shape_vec(
        IxDyn(&[3, 3, 16, 16]),
        (0..n).map(|k| (k as f32 * 0.37).sin()).collect(),
    )
    .unwrap();
    let t = Array1::from(vec![0.9f32, 0.5, 0.2]).into_dyn();
    let p0 = &*model.params;
    let want = model
        .image
        .velocity(p0, &x, &t, &cond.inputs, None)
        .unwrap();
    let rel = |a: &ArrayD<f32>, b: &ArrayD<f32>| {
        let m = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        a.iter()
            .zip(b.iter())
            .fold(0f32, |e, (x, y)| e.max((x - y).abs()))
            / m
    };
    let got = model
        .image
        .velocity_constant(p0, &x, &t, &cond.inputs, None)
        .unwrap();
    assert!(rel(&got, &want) < 1e-5, "relative {}", rel(&got, &want));
    assert_eq!(model.image.constant_session_builds(), 1);
    let again = model
        .image
        .velocity_constant(p0, &x, &t, &cond.inputs, None)
        .unwrap();
    assert_eq!(again, got, "the same session gives the same bits");
    assert_eq!(model.image.constant_session_builds(), 1);
    // other values (one weight changed by one ulp's worth) get their own session...
    let bumped = |k: f32| {
        let mut p = p0.clone();
        let w = p.values.get_mut("image.conv_out.w").unwrap();
        w[[0, 0, 0, 0]] += k;
        p
    };
    let (p1, p2) = (bumped(1e-3), bumped(2e-3));
    let v1 = model
        .image
        .velocity_constant(&p1, &x, &t, &cond.inputs, None)
        .unwrap();
    assert_eq!(model.image.constant_session_builds(), 2);
    let w1 = model
        .image
        .velocity(&p1, &x, &t, &cond.inputs, None)
        .unwrap();
    assert!(rel(&v1, &w1) < 1e-5 && v1 != got);
    // ...the last two sets are kept, a third evicts the least recently used (p0)
    model
        .image
        .velocity_constant(p0, &x, &t, &cond.inputs, None)
        .unwrap();
    assert_eq!(model.image.constant_session_builds(), 2);
    model
        .image
        .velocity_constant(&p2, &x, &t, &cond.inputs, None)
        .unwrap();
    assert_eq!(model.image.constant_session_builds(), 3);
    model
        .image
        .velocity_constant(p0, &x, &t, &cond.inputs, None)
        .unwrap();
    assert_eq!(model.image.constant_session_builds(), 3);
    model
        .image
        .velocity_constant(&p1, &x, &t, &cond.inputs, None)
        .unwrap();
    assert_eq!(model.image.constant_session_builds(), 4);
    // plain weights: never a session of its own, exactly the plain graph
    let pv = plain
        .image
        .velocity_constant(p0, &x, &t, &cond.inputs, None)
        .unwrap();
    assert_eq!(pv, want);
    assert_eq!(plain.image.constant_session_builds(), 0);
    // generation through both: the same reasoning, pixels within rounding
    let mut gp = GenerateParams::defaults(&model);
    gp.noise_level = 0.7;
    let a = gen(&model, &["a few warm-coloured shapes"], &[3], &gp).remove(0);
    let b = gen(&plain, &["a few warm-coloured shapes"], &[3], &gp).remove(0);
    assert_eq!(a.reasoning_tokens, b.reasoning_tokens);
    let d = max_pixel_diff(&a.image.data, &b.image.data);
    assert!(d <= 2, "pixels differ by {d}");
}

/// A profiling session of the velocity graph gives the plain graph's outputs exactly, counts its
/// runs, and its matrix-product arithmetic scales with the rows (the GFLOP/s of `make bench`);
/// a session that does not profile says so.
#[test]
fn profiled_sessions_count_runs_and_arithmetic() {
    use ndarray::{Array1, ArrayD, IxDyn};
    let model = load(&shapes_dir());
    let p = &*model.params;
    let vel = model
        .graphs()
        .find(|(n, _)| *n == "velocity")
        .map(|(_, g)| g)
        .unwrap();
    let e = vel.end_profiling().unwrap_err();
    assert!(e.to_string().contains("does not profile"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let one = vel.with_profiling(&dir.path().join("one")).unwrap();
    let two = vel.with_profiling(&dir.path().join("two")).unwrap();
    let ctx = |b: usize| vec![model.tokenizer.encode("two green triangles").unwrap(); b];
    for b in [1usize, 2, 2] {
        let prof = if b == 1 { &one } else { &two };
        let cond = unigrpo::generate::build_conditioning(&model, p, &ctx(b), None).unwrap();
        let n = b * model.image.latent_len();
        let x = ArrayD::from_shape_vec(
            IxDyn(&[b, 3, 16, 16]),
            (0..n).map(|k| (k as f32 * 0.21).cos()).collect(),
        )
        .unwrap();
        let t = Array1::from(vec![0.6f32; b]).into_dyn();
        let want = model.image.velocity(p, &x, &t, &cond.inputs, None).unwrap();
        let got = model
            .image
            .velocity_with(Some(prof), p, &x, &t, &cond.inputs, None)
            .unwrap();
        assert_eq!(got, want, "the profiled session runs the same kernels");
    }
    let (a, b) = (one.end_profiling().unwrap(), two.end_profiling().unwrap());
    assert_eq!((a.runs, b.runs), (1, 2));
    assert!(b.ops.iter().any(|o| o.op.contains("Conv")), "{:?}", b.ops);
    assert!(b.node_micros > 0.0 && b.node_micros <= b.run_micros * 1.05);
    // two runs of 2 rows: four times one row's arithmetic (integers: exact), which is tens of
    // MFLOP for this U-Net
    assert_eq!(b.flops, 4.0 * a.flops);
    assert!((1e7..1e9).contains(&a.flops), "{}", a.flops);
    let per_op: f64 = b.ops.iter().map(|o| o.flops).sum();
    assert_eq!(per_op, b.flops);
}

/// `velocity_vjp` cut at its cotangent (`ImageNet::velocity_saving` + `velocity_backward`): the
/// forward gives the velocity and the backward the VJP's gradients, to rounding (other
/// sessions, other fusions); a model that recomputes has no split.
#[test]
fn a_forward_that_keeps_its_values_and_its_backward_match_the_vjp() {
    split_matches_vjp(&shapes_dir(), "a blue square left of a green triangle");
    // a package whose VJP passes zero gradients through as initializers, its hand-off from the
    // text graph as conditioning
    split_matches_vjp(&shared_dir(), "a red circle");
}

fn split_matches_vjp(dir: &std::path::Path, prompt: &str) {
    use ndarray::{Array1, ArrayD, IxDyn};
    let model = load(dir);
    let p = &*model.params;
    let b = 3;
    let ctx = vec![model.tokenizer.encode(prompt).unwrap(); b];
    let cond = unigrpo::generate::build_conditioning(&model, p, &ctx, None).unwrap();
    let sh = model.image.latent_shape.clone();
    let n = b * model.image.latent_len();
    let x = ArrayD::from_shape_vec(
        IxDyn(&[b, sh[0], sh[1], sh[2]]),
        (0..n).map(|k| (k as f32 * 0.13).sin()).collect(),
    )
    .unwrap();
    let t = Array1::from(vec![0.8f32, 0.45, 0.1]).into_dyn();
    let cot = ArrayD::from_shape_vec(
        IxDyn(&[b, sh[0], sh[1], sh[2]]),
        (0..n).map(|k| (k as f32 * 0.71).cos() * 0.3).collect(),
    )
    .unwrap();
    let rel = |a: &ArrayD<f64>, b: &ArrayD<f64>| {
        let m = b.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
        a.iter()
            .zip(b.iter())
            .fold(0f64, |e, (x, y)| e.max((x - y).abs()))
            / m
    };
    assert!(model.image.saves_activations());
    let want_v = model.image.velocity(p, &x, &t, &cond.inputs, None).unwrap();
    let mut want_g = unigrpo::nets::Grads::new();
    model
        .image
        .velocity_vjp(p, &x, &t, &cond.inputs, &cot, &mut want_g, None)
        .unwrap();
    let (v, saved) = model
        .image
        .velocity_saving(p, &x, &t, &cond.inputs, None)
        .unwrap()
        .expect("a split");
    assert!(saved.bytes() > n * 4, "{} bytes saved", saved.bytes());
    let dv = rel(&v.mapv(|a| a as f64), &want_v.mapv(|a| a as f64));
    assert!(dv < 1e-5, "velocity: relative difference {dv:e}");
    let mut got_g = unigrpo::nets::Grads::new();
    model
        .image
        .velocity_backward(&saved, p, &x, &t, &cond.inputs, &cot, &mut got_g, None)
        .unwrap();
    assert_eq!(
        got_g.keys().collect::<Vec<_>>(),
        want_g.keys().collect::<Vec<_>>()
    );
    for (k, w) in &want_g {
        let d = rel(&got_g[k], w);
        assert!(d < 1e-4, "grad.{k}: relative difference {d:e}");
    }
    // a second backward from the same saved values gives the same gradients again
    let mut again = unigrpo::nets::Grads::new();
    model
        .image
        .velocity_backward(&saved, p, &x, &t, &cond.inputs, &cot, &mut again, None)
        .unwrap();
    assert_eq!(again, got_g);
    let recompute = Model::load(
        dir,
        &unigrpo::ModelOptions {
            device: "cpu".into(),
            intra_threads: 1,
            recompute_activations: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!recompute.image.saves_activations());
    assert!(recompute
        .image
        .velocity_saving(p, &x, &t, &cond.inputs, None)
        .unwrap()
        .is_none());
}

/// The velocity graph cut at `x` and `t` (`ImageNet::prepare` once, `velocity_prepared` per
/// step) gives the whole graph's velocity to rounding, with weights built in and plain, for
/// both packages; a model that recomputes the context runs the whole graph.
#[test]
fn a_prepared_context_gives_the_whole_graphs_velocity() {
    use ndarray::{Array1, ArrayD, IxDyn};
    for (dir, prompt) in [
        (shapes_dir(), "two red circles above a blue square"),
        (shared_dir(), "a red circle"),
    ] {
        for plain in [false, true] {
            let model = Model::load(
                &dir,
                &unigrpo::ModelOptions {
                    device: "cpu".into(),
                    intra_threads: 1,
                    plain_weights: plain,
                    ..Default::default()
                },
            )
            .unwrap();
            let p = &*model.params;
            let b = 2;
            let ctx = vec![model.tokenizer.encode(prompt).unwrap(); b];
            let cond = unigrpo::generate::build_conditioning(&model, p, &ctx, None).unwrap();
            let sh = model.image.latent_shape.clone();
            let n = b * model.image.latent_len();
            let prepared = model
                .image
                .prepare(p, &cond.inputs, None)
                .unwrap()
                .expect("a cut");
            for (k, t) in [0.9f32, 0.3].into_iter().enumerate() {
                let x = ArrayD::from_shape_vec(
                    IxDyn(&[b, sh[0], sh[1], sh[2]]),
                    (0..n).map(|i| ((i + 7 * k) as f32 * 0.29).sin()).collect(),
                )
                .unwrap();
                let tt = Array1::from(vec![t; b]).into_dyn();
                let want = model
                    .image
                    .velocity(p, &x, &tt, &cond.inputs, None)
                    .unwrap();
                let got = model
                    .image
                    .velocity_prepared(&prepared, p, &x, &tt, &cond.inputs, None)
                    .unwrap();
                let m = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = got
                    .iter()
                    .zip(want.iter())
                    .fold(0f32, |e, (a, b)| e.max((a - b).abs()))
                    / m;
                assert!(
                    d < 1e-5,
                    "{} plain {plain} t {t}: relative {d:e}",
                    dir.display()
                );
            }
        }
        let whole = Model::load(
            &dir,
            &unigrpo::ModelOptions {
                device: "cpu".into(),
                intra_threads: 1,
                recompute_context: true,
                ..Default::default()
            },
        )
        .unwrap();
        let ctx = vec![whole.tokenizer.encode(prompt).unwrap()];
        let cond =
            unigrpo::generate::build_conditioning(&whole, &whole.params, &ctx, None).unwrap();
        assert!(whole
            .image
            .prepare(&whole.params, &cond.inputs, None)
            .unwrap()
            .is_none());
    }
}
