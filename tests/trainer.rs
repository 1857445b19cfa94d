//! The UniGRPO trainer on the shipped packages, through the real ONNX Runtime.

mod common;

use std::sync::Arc;

use common::*;
use unigrpo::reward::{Sample, ShapesReward};
use unigrpo::train::{TrainConfig, Trainer};
use unigrpo::{ErrorKind, Model, Progress, Result};

type RewardFn = dyn FnMut(&[Sample<'_>]) -> Result<Vec<f32>>;

const PROMPTS: [&str; 2] = [
    "a few warm-coloured shapes",
    "a circle the colour of the sky",
];

fn config(model: &Model) -> TrainConfig {
    let mut c = TrainConfig::defaults(model);
    c.group_size = 4;
    c.num_steps = 6;
    c.seed = 9;
    c
}

fn redness(samples: &[Sample<'_>]) -> Result<Vec<f32>> {
    Ok(samples
        .iter()
        .map(|s| {
            let px = s.image.data.chunks(3);
            let n = (s.image.width * s.image.height) as f32;
            px.map(|p| (p[0] as f32 - (p[1] as f32 + p[2] as f32) / 2.0) / 255.0)
                .sum::<f32>()
                / n
        })
        .collect())
}

#[test]
fn first_update_recomputes_the_rollout_logprobs() {
    for dir in [shapes_dir(), shared_dir()] {
        let model = Arc::new(load(&dir));
        let mut t = Trainer::new(model.clone(), config(&model)).unwrap();
        let (stats, d) = t
            .step_detailed(&PROMPTS, &mut ShapesReward, None, &mut Progress::none())
            .unwrap();
        assert!(
            d.text_consistency < 1e-5,
            "{}: text |logp - logp_old| = {}",
            dir.display(),
            d.text_consistency
        );
        assert!(
            d.image_consistency < 1e-5,
            "{}: image |logp - logp_old| = {}",
            dir.display(),
            d.image_consistency
        );
        assert_eq!(stats.step, 1);
        assert!(stats.loss.is_finite() && stats.grad_norm > 0.0, "{stats:?}");
    }
}

/// Gradient check of the whole loss (text terms, then image terms) against central finite
/// differences through the FORWARD graphs, off-policy (after one update) so that the ratios, the
/// velocity MSE and k3 are all away from their on-policy values.
#[test]
fn gradients_match_finite_differences() {
    let model = Arc::new(load(&shapes_dir()));
    let mut c = config(&model);
    c.text_clip_range = 1e6; // no clipping: the loss is smooth
    c.image_clip_range = 1e6;
    c.velocity_mse_weight = 1.0;
    c.text_kl_weight = 0.1;
    c.learning_rate = 1e-3;
    let mut t = Trainer::new(model.clone(), c).unwrap();
    let (_, d) = t
        .step_detailed(&PROMPTS, &mut ShapesReward, None, &mut Progress::none())
        .unwrap();
    let share: Vec<usize> = (0..d.rollout.len()).collect();
    let params = t.params().clone();
    for (text, image, names) in [
        (true, false, ["text.head.w", "text.l1.ff2.w"]),
        (false, true, ["image.conv_out.w", "image.x2.o.w"]),
    ] {
        let (_, grads) = t
            .loss_and_grad(
                &params,
                &d.rollout,
                &d.advantages,
                &share,
                text,
                image,
                true,
            )
            .unwrap();
        for name in names {
            let g = &grads[name];
            // the three entries with the largest gradient
            let mut idx: Vec<usize> = (0..g.len()).collect();
            idx.sort_by(|&a, &b| {
                g.as_slice().unwrap()[b]
                    .abs()
                    .total_cmp(&g.as_slice().unwrap()[a].abs())
            });
            for &k in &idx[..3] {
                let h = 2e-3f32;
                let eval = |delta: f32| {
                    let mut p = params.clone();
                    p.values.get_mut(name).unwrap().as_slice_mut().unwrap()[k] += delta;
                    t.loss_and_grad(&p, &d.rollout, &d.advantages, &share, text, image, false)
                        .unwrap()
                        .0
                };
                let fd = (eval(h) - eval(-h)) / (2.0 * h as f64);
                let an = g.as_slice().unwrap()[k];
                let rel = (fd - an).abs() / an.abs().max(1e-8);
                eprintln!("{name}[{k}]: finite difference {fd:.6e}, VJP {an:.6e}, relative error {rel:.1e}");
                assert!(
                    rel < 0.03,
                    "{name}[{k}] ({}): finite difference {fd:.6e} vs VJP {an:.6e}",
                    if text { "text" } else { "image" }
                );
            }
        }
    }
}

fn snapshot(t: &Trainer) -> (Vec<Vec<f32>>, u64, u64) {
    (
        t.params()
            .values
            .values()
            .map(|a| a.iter().copied().collect())
            .collect(),
        t.step_count(),
        t.optimizer().t,
    )
}

#[test]
fn a_failed_step_changes_nothing() {
    let model = Arc::new(load(&shapes_dir()));
    let mut t = Trainer::new(model.clone(), config(&model)).unwrap();
    t.step(&PROMPTS, &mut ShapesReward, None, &mut Progress::none())
        .unwrap();
    let before = snapshot(&t);
    let failing: [(&str, Box<RewardFn>); 4] = [
        (
            "error",
            Box::new(|_s: &[Sample<'_>]| Err(unigrpo::Error::invalid("host says no"))),
        ),
        (
            "all NaN",
            Box::new(|s: &[Sample<'_>]| Ok(vec![f32::NAN; s.len()])),
        ),
        (
            "infinite",
            Box::new(|s: &[Sample<'_>]| {
                Ok((0..s.len())
                    .map(|i| if i == 1 { f32::INFINITY } else { 0.5 })
                    .collect())
            }),
        ),
        (
            "short",
            Box::new(|s: &[Sample<'_>]| Ok(vec![0.5; s.len() - 1])),
        ),
    ];
    for (what, mut f) in failing {
        let e = t
            .step(&PROMPTS, &mut f, None, &mut Progress::none())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Callback, "{what}: {e}");
        assert!(snapshot(&t) == before, "{what} changed the trainer");
    }
    // cancelled from the progress callback in the middle of the backward pass
    let mut stop = |s: unigrpo::Stage, i: u32, _: u32| !(s == unigrpo::Stage::Backward && i == 1);
    let e = t
        .step(
            &PROMPTS,
            &mut ShapesReward,
            None,
            &mut Progress::new(&mut stop),
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert!(snapshot(&t) == before, "cancellation changed the trainer");
    // and the next step is the same as if nothing had happened
    let mut u = Trainer::new(model.clone(), config(&model)).unwrap();
    u.step(&PROMPTS, &mut ShapesReward, None, &mut Progress::none())
        .unwrap();
    let a = t
        .step(&PROMPTS, &mut ShapesReward, None, &mut Progress::none())
        .unwrap();
    let b = u
        .step(&PROMPTS, &mut ShapesReward, None, &mut Progress::none())
        .unwrap();
    assert_eq!((a.reward_mean, a.loss), (b.reward_mean, b.loss));
    assert!(snapshot(&t) == snapshot(&u));
}

#[test]
fn nan_rewards_exclude_samples() {
    let model = Arc::new(load(&shapes_dir()));
    let mut t = Trainer::new(model.clone(), config(&model)).unwrap();
    let mut some_nan = |s: &[Sample<'_>]| -> Result<Vec<f32>> {
        Ok((0..s.len())
            .map(|i| if i % 3 == 0 { f32::NAN } else { (i % 2) as f32 })
            .collect())
    };
    let stats = t
        .step(&PROMPTS, &mut some_nan, None, &mut Progress::none())
        .unwrap();
    assert!(stats.reward_mean.is_finite() && stats.loss.is_finite());
}

#[test]
fn checkpoint_resume_is_bit_identical() {
    let model = Arc::new(load(&shapes_dir()));
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.safetensors");
    let mut a = Trainer::new(model.clone(), config(&model)).unwrap();
    for _ in 0..2 {
        a.step(&PROMPTS, &mut ShapesReward, None, &mut Progress::none())
            .unwrap();
    }
    a.save(&ckpt).unwrap();
    let mut b = Trainer::new(model.clone(), config(&model)).unwrap();
    b.load(&ckpt).unwrap();
    assert!(snapshot(&a) == snapshot(&b));
    for _ in 0..2 {
        let sa = a
            .step(&PROMPTS, &mut ShapesReward, None, &mut Progress::none())
            .unwrap();
        let sb = b
            .step(&PROMPTS, &mut ShapesReward, None, &mut Progress::none())
            .unwrap();
        assert_eq!(
            (sa.reward_mean, sa.loss, sa.grad_norm),
            (sb.reward_mean, sb.loss, sb.grad_norm)
        );
    }
    assert!(snapshot(&a) == snapshot(&b), "resumed trainer diverged");
    // the exported package loads and generates with the trained parameters
    let out = dir.path().join("model");
    a.export_model(&out).unwrap();
    let m = load(&out);
    assert_eq!(m.params.values, a.params().values);
    let p = unigrpo::GenerateParams::defaults(&m);
    unigrpo::generate_batch(
        &m,
        &m.params,
        &["two red circles"],
        &[0],
        &p,
        None,
        &mut Progress::none(),
    )
    .unwrap();
    // a checkpoint of another model is refused and changes nothing
    let shared = Arc::new(load(&shared_dir()));
    let mut s = Trainer::new(shared.clone(), config(&shared)).unwrap();
    let e = s.load(&ckpt).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(s.step_count(), 0);
}

/// A short image-only run where "how red is the image" clearly rises.
#[test]
fn a_simple_reward_rises() {
    let model = Arc::new(load(&shapes_dir()));
    let mut c = config(&model);
    c.group_size = 8;
    c.train_text = false;
    c.learning_rate = 3e-4;
    c.image_clip_range = 1e-2;
    c.velocity_mse_weight = 0.0;
    let mut t = Trainer::new(model.clone(), c).unwrap();
    let prompts = ["a few warm-coloured shapes", "one or two red shapes"];
    let mut rewards = Vec::new();
    for _ in 0..24 {
        let s = t
            .step(&prompts, &mut redness, None, &mut Progress::none())
            .unwrap();
        rewards.push(s.reward_mean);
    }
    let first: f32 = rewards[..4].iter().sum::<f32>() / 4.0;
    let last: f32 = rewards[rewards.len() - 4..].iter().sum::<f32>() / 4.0;
    eprintln!("redness per step: {rewards:?}");
    assert!(last > first + 0.02, "redness did not rise: {rewards:?}");
}

/// The text loss of an on-policy update (ratio 1, so each token contributes -A) under both
/// normalisers, against the formulas of algorithm.md section 4 computed by hand from the rollout.
/// At temperature 3 the text policy samples reasonings of many lengths (at 1 the readings of one
/// prompt all have the same length, where the two normalisers agree).
#[test]
fn text_aggregation_normalisers() {
    use unigrpo::train::TextAggregation;
    let model = Arc::new(load(&shapes_dir()));
    let mut losses = Vec::new();
    for agg in [TextAggregation::Dapo, TextAggregation::Grpo] {
        let mut c = config(&model);
        c.updates_per_step = 1;
        c.train_image = false;
        c.text_aggregation = agg;
        c.temperature = 3.0;
        let mut t = Trainer::new(model.clone(), c).unwrap();
        let (stats, d) = t
            .step_detailed(&PROMPTS, &mut redness, None, &mut Progress::none())
            .unwrap();
        let lens: Vec<f64> = (0..d.rollout.len())
            .map(|i| d.rollout.reasoning[i].tokens.len() as f64)
            .collect();
        let adv: Vec<f64> = d.advantages.iter().map(|&a| a as f64).collect();
        assert!(
            lens.iter().any(|&l| l != lens[0]),
            "equal reasoning lengths {lens:?}: the test needs varied ones"
        );
        let expected = match agg {
            TextAggregation::Dapo => {
                -lens.iter().zip(&adv).map(|(l, a)| l * a).sum::<f64>() / lens.iter().sum::<f64>()
            }
            TextAggregation::Grpo => -adv.iter().sum::<f64>() / adv.len() as f64,
        };
        eprintln!(
            "{agg:?}: text loss {} expected {expected:.6}",
            stats.text_loss
        );
        assert!(
            (stats.text_loss as f64 - expected).abs() < 1e-5,
            "{agg:?}: text loss {} expected {expected}",
            stats.text_loss
        );
        losses.push(stats.text_loss);
    }
    // same rollout, different weighting: the two differ unless every sequence has one length
    assert_ne!(losses[0], losses[1]);
}

/// tiny-shared hands a key/value cache from the text graph to the velocity graph, so the
/// conditioning depends on the parameters. Off the first update, and for the reference, the
/// objective recomputes it under the parameters in use instead of reusing the rollout's: the loss
/// through the FORWARD graphs does not change when the rollout's stored conditioning is wiped.
#[test]
fn handoff_is_recomputed_off_policy_and_for_the_reference() {
    use unigrpo::runtime::Tensor;
    let model = Arc::new(load(&shared_dir()));
    let mut c = config(&model);
    c.velocity_mse_weight = 1.0;
    c.learning_rate = 1e-3;
    let mut t = Trainer::new(model.clone(), c).unwrap();
    t.step(&PROMPTS, &mut redness, None, &mut Progress::none())
        .unwrap();
    let (_, mut d) = t
        .step_detailed(&PROMPTS, &mut redness, None, &mut Progress::none())
        .unwrap();
    let share: Vec<usize> = (0..d.rollout.len()).collect();
    let params = t.params().clone();
    let loss = |d: &unigrpo::train::StepDetails| {
        t.loss_and_grad(
            &params,
            &d.rollout,
            &d.advantages,
            &share,
            false,
            true,
            false,
        )
        .unwrap()
        .0
    };
    let before = loss(&d);
    let mut wiped = 0;
    for (name, tensor) in d.rollout.cond.inputs.iter_mut() {
        if let Tensor::F32(a) = tensor {
            a.fill(0.0);
            wiped += 1;
            eprintln!("wiped {name}");
        }
    }
    assert!(wiped > 0, "tiny-shared should hand over float tensors");
    let after = loss(&d);
    assert!(before.is_finite() && before != 0.0);
    assert_eq!(before, after);
}
