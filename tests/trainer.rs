//! The UniGRPO trainer on the shipped packages, through the real ONNX Runtime.

mod common;

use std::sync::Arc;

use common::*;
use unigrpo::reward::{Sample, ShapesReward};
use unigrpo::train::{Policies, Rollout, StepStats, TrainConfig, Trainer};
use unigrpo::{ErrorKind, Model, Progress, Result};

/// What a step drew and computed, through the phases.
struct Details {
    rollout: Rollout,
    advantages: Vec<f32>,
}

/// `step` through its phases, keeping the rollout and the advantages.
fn step_detailed(
    t: &mut Trainer,
    prompts: &[&str],
    reward: &mut dyn unigrpo::reward::Reward,
) -> (StepStats, Details) {
    let r = t.rollout(prompts, None, &mut Progress::none()).unwrap();
    let rewards = t.rewards(&r, reward, None, &mut Progress::none()).unwrap();
    let (advantages, _) = t.advantages(&r, &rewards);
    let s = t.update(&r, &rewards, None, &mut Progress::none()).unwrap();
    (
        s,
        Details {
            rollout: r,
            advantages,
        },
    )
}

fn which(text: bool, image: bool) -> Policies {
    Policies { text, image }
}

type RewardFn = dyn FnMut(&[Sample<'_>]) -> Result<Vec<f32>>;

const PROMPTS: [&str; 2] = TRAIN_PROMPTS;

fn config(model: &Model) -> TrainConfig {
    small_config(model)
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
        let (stats, _) = step_detailed(&mut t, &PROMPTS, &mut ShapesReward);
        assert!(
            stats.text_consistency < 1e-5,
            "{}: text |logp - logp_old| = {}",
            dir.display(),
            stats.text_consistency
        );
        assert!(
            stats.image_consistency < 1e-5,
            "{}: image |logp - logp_old| = {}",
            dir.display(),
            stats.image_consistency
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
    let (_, d) = step_detailed(&mut t, &PROMPTS, &mut ShapesReward);
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
                which(text, image),
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
                    t.loss_and_grad(
                        &p,
                        &d.rollout,
                        &d.advantages,
                        &share,
                        which(text, image),
                        false,
                    )
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

/// At the reference with no reward spread every term is zero: the policy terms (zero
/// advantages) and the regularisers (the policy's own outputs are the reference's). Before, the
/// reference's velocities and log-probs came from a second graph, and the rounding noise between
/// the two was a gradient (norm 1.3e-5 on the MPI test's first step) that Adam turned into a
/// step in a random direction.
#[test]
fn no_reward_spread_at_the_reference_leaves_the_policy_where_it_is() {
    let model = Arc::new(load(&shapes_dir()));
    let mut c = config(&model);
    c.weight_decay = 0.0;
    c.mse_anchor_steps = 5;
    assert!(c.velocity_mse_weight > 0.0 && c.text_kl_weight > 0.0);
    let mut t = Trainer::new(model.clone(), c).unwrap();
    let before = snapshot(&t).0;
    let mut constant = |s: &[Sample<'_>]| -> Result<Vec<f32>> { Ok(vec![0.5; s.len()]) };
    let stats = t
        .step(&PROMPTS, &mut constant, None, &mut Progress::none())
        .unwrap();
    assert_eq!(stats.grad_norm, 0.0, "{stats:?}");
    assert_eq!((stats.velocity_mse, stats.loss), (0.0, 0.0), "{stats:?}");
    let after = snapshot(&t).0;
    assert!(
        before == after,
        "the parameters moved without a reward spread"
    );
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
        let (stats, d) = step_detailed(&mut t, &PROMPTS, &mut redness);
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
    let (_, mut d) = step_detailed(&mut t, &PROMPTS, &mut redness);
    let share: Vec<usize> = (0..d.rollout.len()).collect();
    let params = t.params().clone();
    let loss = |d: &Details| {
        t.loss_and_grad(
            &params,
            &d.rollout,
            &d.advantages,
            &share,
            which(false, true),
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

/// Review finding 1: `save` wrote config.seed instead of the trainer's random state. A seed-2
/// checkpoint loaded into a seed-1 trainer, saved and loaded again must continue as the seed-2
/// trainer does.
#[test]
fn a_resaved_checkpoint_keeps_the_random_state() {
    let model = Arc::new(load(&shapes_dir()));
    let dir = tempfile::tempdir().unwrap();
    let (c1, c2) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    let mut cfg2 = config(&model);
    cfg2.seed = 2;
    let mut a = Trainer::new(model.clone(), cfg2).unwrap();
    a.step(&PROMPTS, &mut ShapesReward, None, &mut Progress::none())
        .unwrap();
    a.save(&c1).unwrap();
    let mut cfg1 = config(&model);
    cfg1.seed = 1;
    let mut b = Trainer::new(model.clone(), cfg1.clone()).unwrap();
    b.load(&c1).unwrap();
    b.save(&c2).unwrap();
    let mut c = Trainer::new(model.clone(), cfg1).unwrap();
    c.load(&c2).unwrap();
    let sa = a
        .step(&PROMPTS, &mut ShapesReward, None, &mut Progress::none())
        .unwrap();
    let sc = c
        .step(&PROMPTS, &mut ShapesReward, None, &mut Progress::none())
        .unwrap();
    assert_eq!((sa.reward_mean, sa.loss), (sc.reward_mean, sc.loss));
    assert!(
        snapshot(&a) == snapshot(&c),
        "the re-saved checkpoint lost the random state"
    );
}

/// The phases compose to `step`: rollout changes nothing and is repeatable; rollout + rewards +
/// update gives the same parameters and stats as `step`; a stale, foreign or pre-load rollout
/// is refused and changes nothing.
#[test]
fn phases_compose_to_step() {
    let model = Arc::new(load(&shapes_dir()));
    let mut a = Trainer::new(model.clone(), config(&model)).unwrap();
    let mut b = Trainer::new(model.clone(), config(&model)).unwrap();
    let before = snapshot(&b);
    let r1 = b.rollout(&PROMPTS, None, &mut Progress::none()).unwrap();
    let r2 = b.rollout(&PROMPTS, None, &mut Progress::none()).unwrap();
    assert!(snapshot(&b) == before, "a rollout changed the trainer");
    assert_eq!(r1.reasoning, r2.reasoning);
    assert!(r1
        .images
        .iter()
        .zip(&r2.images)
        .all(|(x, y)| x.data == y.data));
    let rewards = b
        .rewards(&r1, &mut ShapesReward, None, &mut Progress::none())
        .unwrap();
    let sa = a
        .step(&PROMPTS, &mut ShapesReward, None, &mut Progress::none())
        .unwrap();
    let sb = b
        .update(&r1, &rewards, None, &mut Progress::none())
        .unwrap();
    assert_eq!(
        StepStats { seconds: 0.0, ..sa },
        StepStats { seconds: 0.0, ..sb }
    );
    assert!(snapshot(&a) == snapshot(&b));
    // r2 was drawn at step 0: now stale
    let after = snapshot(&b);
    let e = b
        .update(&r2, &rewards, None, &mut Progress::none())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(
        e.message().contains("step 0") && e.message().contains("step 1"),
        "{e}"
    );
    // another trainer's rollout
    let r3 = a.rollout(&PROMPTS, None, &mut Progress::none()).unwrap();
    let e = b
        .update(&r3, &rewards, None, &mut Progress::none())
        .unwrap_err();
    assert!(e.message().contains("another trainer"), "{e}");
    // a load invalidates earlier rollouts
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("c.safetensors");
    b.save(&ck).unwrap();
    let r4 = b.rollout(&PROMPTS, None, &mut Progress::none()).unwrap();
    b.load(&ck).unwrap();
    let e = b
        .update(&r4, &rewards, None, &mut Progress::none())
        .unwrap_err();
    assert!(e.message().contains("checkpoint"), "{e}");
    assert!(snapshot(&b) == after);
    // the manual phases: gradients + apply per optimiser step, then commit
    let r5 = b.rollout(&PROMPTS, None, &mut Progress::none()).unwrap();
    let rw = b
        .rewards(&r5, &mut ShapesReward, None, &mut Progress::none())
        .unwrap();
    let mut up = b.begin_update(&r5, &rw).unwrap();
    let (g0, t0) = b.gradients(&up, &r5, 0, None).unwrap();
    b.apply(&mut up, &g0, &t0).unwrap();
    assert!(snapshot(&b) == after, "apply changed the committed state");
    let e = b.commit(up).unwrap_err();
    assert!(e.message().contains("1 of 2"), "{e}");
    assert!(snapshot(&b) == after);
}

/// Review finding 4: a first update whose recomputed log-probs drift from the rollout's fails
/// the step (Runtime, naming both values) and changes nothing; the drift is in the stats.
#[test]
fn log_prob_drift_fails_the_step() {
    let model = Arc::new(load(&shapes_dir()));
    let mut c = config(&model);
    c.max_image_drift = 1e-30; // any recomputation differs by more than this in f32
    c.max_text_drift = 1e-30;
    let mut t = Trainer::new(model.clone(), c).unwrap();
    let before = snapshot(&t);
    let e = t
        .step(&PROMPTS, &mut ShapesReward, None, &mut Progress::none())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Runtime, "{e}");
    assert!(
        e.message().contains("text") && e.message().contains("image"),
        "{e}"
    );
    assert!(snapshot(&t) == before);
    // with the default bounds the same step passes and reports both drifts
    let mut t = Trainer::new(model.clone(), config(&model)).unwrap();
    let s = t
        .step(&PROMPTS, &mut ShapesReward, None, &mut Progress::none())
        .unwrap();
    assert!(
        s.text_consistency < 1e-4 && s.image_consistency < 1e-5,
        "{s:?}"
    );
}

/// Parameter groups: with text_learning_rate tiny and the image rate large, the text-only
/// tensors barely move and the image-only ones move; set_learning_rate changes the rates from
/// the next step and checkpoints keep them.
#[test]
fn per_group_learning_rates() {
    use unigrpo::train::adamw::Group;
    let model = Arc::new(load(&shapes_dir()));
    let mut c = config(&model);
    c.text_learning_rate = 1e-12;
    c.image_learning_rate = 1e-3;
    let mut t = Trainer::new(model.clone(), c).unwrap();
    let s = t
        .step(&PROMPTS, &mut ShapesReward, None, &mut Progress::none())
        .unwrap();
    assert!(s.text_grad_norm > 0.0 && s.image_grad_norm > 0.0, "{s:?}");
    let moved = |g: Group, t: &Trainer| -> f32 {
        t.params()
            .values
            .iter()
            .filter(|(n, _)| t.groups().of(n) == g)
            .map(|(n, a)| {
                a.iter()
                    .zip(model.params.values[n].iter())
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max)
            })
            .fold(0.0, f32::max)
    };
    assert!(
        moved(Group::Text, &t) < 1e-9,
        "text moved {}",
        moved(Group::Text, &t)
    );
    assert!(
        moved(Group::Image, &t) > 1e-4,
        "image moved {}",
        moved(Group::Image, &t)
    );
    t.set_learning_rate(2e-4, 0.0).unwrap();
    assert_eq!(t.learning_rates()[1..], [2e-4, 1e-3]);
    assert!(t.set_learning_rate(-1.0, 0.0).is_err() && t.set_learning_rate(f32::NAN, 0.0).is_err());
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("c.safetensors");
    t.save(&ck).unwrap();
    let mut u = Trainer::new(model.clone(), config(&model)).unwrap();
    u.load(&ck).unwrap();
    assert_eq!(u.learning_rates(), t.learning_rates());
}

/// Review finding 2 in the trainer: a progress callback returning false at any report of a
/// step (every stage: reasoning, denoising, decoding, reward, backward, optimizer) fails it with
/// Cancelled and changes nothing.
#[test]
fn progress_false_cancels_a_step_at_every_stage() {
    use unigrpo::Stage;
    let model = Arc::new(load(&shapes_dir()));
    let mut c = config(&model);
    c.num_steps = 2;
    c.max_reasoning_tokens = 4;
    let mut t = Trainer::new(model.clone(), c).unwrap();
    let mut all = Vec::new();
    let mut u = Trainer::new(model.clone(), t.config().clone()).unwrap();
    let mut rec = |s: Stage, i: u32, _: u32| {
        all.push((s, i));
        true
    };
    u.step(
        &PROMPTS,
        &mut ShapesReward,
        None,
        &mut Progress::new(&mut rec),
    )
    .unwrap();
    for st in [
        Stage::Reasoning,
        Stage::Denoising,
        Stage::Decoding,
        Stage::Reward,
        Stage::Backward,
        Stage::Optimizer,
    ] {
        assert!(all.iter().any(|&(s, _)| s == st), "{st:?} never reported");
    }
    let before = snapshot(&t);
    for &stop in &all {
        let mut cb = |s: Stage, i: u32, _: u32| (s, i) != stop;
        let e = t
            .step(
                &PROMPTS,
                &mut ShapesReward,
                None,
                &mut Progress::new(&mut cb),
            )
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Cancelled, "{stop:?}: {e}");
        assert!(
            snapshot(&t) == before,
            "cancelling at {stop:?} changed the trainer"
        );
    }
}

/// Every option of the table reaches the config by name and round-trips through the
/// checkpoint's JSON; a checkpoint configuration without the newer options takes their legacy
/// values.
#[test]
fn option_table_round_trips_and_legacy_values() {
    use unigrpo::options::TRAIN_OPTIONS;
    let model = Arc::new(load(&shapes_dir()));
    let c = config(&model);
    let json = c.to_json();
    for o in TRAIN_OPTIONS {
        assert!(
            json.get(o.name).is_some(),
            "{} has no checkpoint key",
            o.name
        );
        assert!(c.get(o.name).is_some());
    }
    let back = TrainConfig::from_json(&json, TrainConfig::defaults(&*model), "test").unwrap();
    assert_eq!(back, c);
    let mut old = json.clone();
    for o in TRAIN_OPTIONS.iter().filter(|o| o.legacy.is_some()) {
        old.as_object_mut().unwrap().remove(o.name);
    }
    let back = TrainConfig::from_json(&old, TrainConfig::defaults(&*model), "test").unwrap();
    assert_eq!(back.text_aggregation, unigrpo::train::TextAggregation::Dapo);
    assert_eq!(back.text_learning_rate, 0.0);
    let mut bad = json.clone();
    bad.as_object_mut().unwrap().remove("group_size");
    assert!(TrainConfig::from_json(&bad, TrainConfig::defaults(&*model), "test").is_err());
}

/// Group-shared initial noise: with the option, a group's samples start from one latent (and
/// still differ after the SDE steps); groups differ; without it every sample has its own.
#[test]
fn shared_initial_noise_is_shared_within_groups_only() {
    let model = Arc::new(load(&shapes_dir()));
    for shared in [false, true] {
        let mut c = config(&model);
        c.shared_initial_noise = shared;
        let mut t = Trainer::new(model.clone(), c).unwrap();
        let r = t.rollout(&PROMPTS, None, &mut Progress::none()).unwrap();
        let x0 = |i: usize| &r.traj.latents[i][0];
        let g = 4;
        assert_eq!(x0(0) == x0(1), shared, "within a group");
        assert_ne!(x0(0), x0(g), "across groups");
        assert_ne!(
            r.traj.latents[0][1], r.traj.latents[1][1],
            "the SDE noise stays per sample"
        );
    }
}

/// An SDE window: SDE steps (with log-probs) only inside it, ODE elsewhere; only its steps are
/// trained; the first update still recomputes the rollout's log-probs; a random window is one
/// per group; a window that does not fit is refused.
#[test]
fn sde_window_trains_only_inside_it() {
    let model = Arc::new(load(&shapes_dir()));
    let mut c = config(&model); // 6 rollout steps
    c.sde_window = 2;
    c.sde_window_start = 3;
    let mut t = Trainer::new(model.clone(), c.clone()).unwrap();
    let r = t.rollout(&PROMPTS, None, &mut Progress::none()).unwrap();
    for i in 0..r.len() {
        assert_eq!(r.trained[i], 3..5);
        for j in 0..6 {
            assert_eq!(
                r.traj.logprobs[i][j].is_nan(),
                !(3..5).contains(&j),
                "sample {i} step {j}"
            );
        }
    }
    let s = t
        .step(&PROMPTS, &mut redness, None, &mut Progress::none())
        .unwrap();
    assert!(
        s.image_consistency < 1e-5 && s.image_grad_norm > 0.0,
        "{s:?}"
    );
    c.sde_window_random = true;
    let mut t = Trainer::new(model.clone(), c.clone()).unwrap();
    let r = t.rollout(&PROMPTS, None, &mut Progress::none()).unwrap();
    for i in 0..r.len() {
        assert_eq!(r.trained[i], r.trained[i - i % 4], "one window per group");
        assert!(r.trained[i].end <= 6 && r.trained[i].len() == 2);
    }
    c.sde_window_random = false;
    c.sde_window_start = 5;
    assert!(Trainer::new(model.clone(), c.clone()).is_err());
    c.sde_window = 7;
    assert!(Trainer::new(model.clone(), c).is_err());
}
