//! The recipe levers of the trainer (dynamic sampling, the adaptive velocity-MSE weight, the
//! per-group gradient clip, the CPS step) and the resumption of a checkpoint written before
//! them, on the shipped package through the real ONNX Runtime.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use unigrpo::reward::{Sample, ShapesReward};
use unigrpo::train::{DynamicSampling, SdeType, StepStats, TrainConfig, Trainer};
use unigrpo::{Model, Progress, Result};

const PROMPTS: [&str; 2] = TRAIN_PROMPTS;

fn config(model: &Model) -> TrainConfig {
    small_config(model)
}

fn redness(s: &Sample<'_>) -> f32 {
    let n = (s.image.width * s.image.height) as f32;
    s.image
        .data
        .chunks(3)
        .map(|p| (p[0] as f32 - (p[1] as f32 + p[2] as f32) / 2.0) / 255.0)
        .sum::<f32>()
        / n
}

/// Prompt 0's group gets one reward for all its samples (zero spread), prompt 1's redness.
fn flat_first(samples: &[Sample<'_>]) -> Result<Vec<f32>> {
    Ok(samples
        .iter()
        .map(|s| {
            if s.prompt_index == 0 {
                0.25
            } else {
                redness(s)
            }
        })
        .collect())
}

fn step(t: &mut Trainer, reward: &mut dyn unigrpo::reward::Reward) -> StepStats {
    t.step(&PROMPTS, reward, None, &mut Progress::none())
        .unwrap()
}

/// Dynamic sampling "skip": a flat group's samples leave the policy terms' normalisers. On the
/// first update (ratio 1, no regulariser at the rollout's parameters) the policy losses are
/// -sum(A l) / N: the same numerator, over all samples' tokens and rows without skip, over the
/// live group's only with it; the second prompt's group is the only live one, so with equal
/// trained rows per sample the image loss doubles, and the text loss scales by the token ratio.
#[test]
fn skip_drops_flat_groups_from_the_policy_normalisers() {
    let model = Arc::new(load(&shapes_dir()));
    let mut out = Vec::new();
    for ds in [DynamicSampling::Off, DynamicSampling::Skip] {
        let mut c = config(&model);
        c.updates_per_step = 1;
        c.temperature = 3.0; // varied reasoning lengths
        c.dynamic_sampling = ds;
        let mut t = Trainer::new(model.clone(), c).unwrap();
        let r = t.rollout(&PROMPTS, None, &mut Progress::none()).unwrap();
        let mut reward = flat_first;
        let rewards = t
            .rewards(&r, &mut reward, None, &mut Progress::none())
            .unwrap();
        let (adv, flat) = t.advantages(&r, &rewards);
        assert_eq!(flat, vec![true, false]);
        let s = t.update(&r, &rewards, None, &mut Progress::none()).unwrap();
        assert_eq!(s.frac_zero_std, 0.5);
        let lens: Vec<f64> = (0..r.len())
            .map(|i| r.reasoning[i].tokens.len() as f64)
            .collect();
        let num: f64 = lens.iter().zip(&adv).map(|(l, &a)| l * a as f64).sum();
        let all: f64 = lens.iter().sum();
        let live: f64 = lens[4..].iter().sum();
        let want_text = -num
            / if ds == DynamicSampling::Skip {
                live
            } else {
                all
            };
        assert!(
            (s.text_loss as f64 - want_text).abs() < 1e-5,
            "{ds:?}: text loss {} want {want_text}",
            s.text_loss
        );
        out.push(s);
    }
    let ratio = out[1].image_loss as f64 / out[0].image_loss as f64;
    assert!((ratio - 2.0).abs() < 1e-4, "image loss ratio {ratio}");
}

/// Dynamic sampling "resample": a flat group is drawn again (fresh seeds, only its prompt), the
/// reward is asked for the replacements only, and a replacement with a spread takes its place;
/// the update then runs on the merged rollout (its first-update consistency check passes). A
/// group that stays flat costs `resample_rounds` extra reward calls and is kept (and skipped).
#[test]
fn resample_replaces_flat_groups() {
    let model = Arc::new(load(&shapes_dir()));
    let mut c = config(&model);
    c.dynamic_sampling = DynamicSampling::Resample;
    c.resample_rounds = 2;
    // the first call: prompt 0 flat; later calls: redness
    let calls: std::cell::RefCell<Vec<Vec<(u32, u32)>>> = Default::default();
    let first_images: std::cell::RefCell<Vec<Vec<u8>>> = Default::default();
    let mut reward = |s: &[Sample<'_>]| -> Result<Vec<f32>> {
        let n = calls.borrow().len();
        calls
            .borrow_mut()
            .push(s.iter().map(|x| (x.prompt_index, x.sample_index)).collect());
        if n == 0 {
            *first_images.borrow_mut() = s.iter().map(|x| x.image.data.clone()).collect();
            flat_first(s)
        } else {
            Ok(s.iter().map(redness).collect())
        }
    };
    let mut t = Trainer::new(model.clone(), c.clone()).unwrap();
    let s = step(&mut t, &mut reward);
    let calls_seen = calls.borrow().clone();
    assert_eq!(calls_seen.len(), 2, "{calls_seen:?}");
    assert_eq!(calls_seen[1], vec![(0, 0), (0, 1), (0, 2), (0, 3)]);
    assert_eq!(s.resampled_groups, 1);
    assert_eq!(s.frac_zero_std, 0.0);
    assert!(
        s.image_consistency < 1e-5 && s.text_consistency < 1e-4,
        "{s:?}"
    );
    // deterministic: the same seed resamples the same replacement
    calls.borrow_mut().clear();
    let mut t2 = Trainer::new(model.clone(), c.clone()).unwrap();
    let s2 = step(&mut t2, &mut reward);
    assert_eq!((s.loss, s.reward_mean), (s2.loss, s2.reward_mean));
    assert_eq!(t.params().values, t2.params().values);
    // always flat: 1 + resample_rounds calls, nothing replaced
    let mut n = 0;
    let mut always_flat = |s: &[Sample<'_>]| -> Result<Vec<f32>> {
        n += 1;
        flat_first(s)
    };
    let mut t3 = Trainer::new(model.clone(), c).unwrap();
    let s3 = step(&mut t3, &mut always_flat);
    assert_eq!((n, s3.resampled_groups, s3.frac_zero_std), (3, 0, 0.5));
}

/// The adaptive velocity-MSE weight is trainer state: it follows the PPO rule after each step,
/// is reported in the stats (the weight the step used), and a checkpoint restores it.
#[test]
fn adaptive_mse_weight_is_checkpointed_state() {
    let model = Arc::new(load(&shapes_dir()));
    let mut c = config(&model);
    c.velocity_mse_weight = 0.05;
    c.velocity_mse_target = 1e-12; // any drift is above it: the weight doubles every step
    let mut a = Trainer::new(model.clone(), c.clone()).unwrap();
    let s1 = step(&mut a, &mut ShapesReward);
    assert!(s1.velocity_mse > 0.0, "{s1:?}");
    assert_eq!(s1.velocity_mse_weight, 0.05);
    assert_eq!(a.velocity_mse_weight(), 0.1);
    let s2 = step(&mut a, &mut ShapesReward);
    assert_eq!(s2.velocity_mse_weight, 0.1);
    assert_eq!(a.velocity_mse_weight(), 0.2);
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("c.safetensors");
    a.save(&ckpt).unwrap();
    let mut b = Trainer::new(model.clone(), c.clone()).unwrap();
    b.load(&ckpt).unwrap();
    assert_eq!(b.velocity_mse_weight(), 0.2);
    let (sa, sb) = (
        step(&mut a, &mut ShapesReward),
        step(&mut b, &mut ShapesReward),
    );
    assert_eq!(
        (sa.loss, sa.velocity_mse_weight),
        (sb.loss, sb.velocity_mse_weight)
    );
    // a fixed weight never moves; a target without a weight is refused
    c.velocity_mse_target = 0.0;
    let mut f = Trainer::new(model.clone(), c.clone()).unwrap();
    step(&mut f, &mut ShapesReward);
    assert_eq!(f.velocity_mse_weight(), 0.05);
    c.velocity_mse_target = 0.01;
    c.velocity_mse_weight = 0.0;
    assert!(Trainer::new(model.clone(), c).is_err());
}

/// The stats report every group's norm and they make up the global one (one optimiser step);
/// the per-group clip changes the update wherever one group's norm exceeds the bound.
#[test]
fn group_norms_and_the_per_group_clip() {
    let model = Arc::new(load(&shapes_dir()));
    let mut params = Vec::new();
    for per_group in [false, true] {
        let mut c = config(&model);
        c.updates_per_step = 1;
        c.max_grad_norm = 1e-3; // binds for every group
        c.clip_per_group = per_group;
        let mut t = Trainer::new(model.clone(), c).unwrap();
        let s = step(&mut t, &mut ShapesReward);
        let sum = (s.text_grad_norm as f64).powi(2)
            + (s.image_grad_norm as f64).powi(2)
            + (s.shared_grad_norm as f64).powi(2);
        assert!(
            (sum.sqrt() - s.grad_norm as f64).abs() < 1e-4 * s.grad_norm as f64,
            "{s:?}"
        );
        assert!(s.text_grad_norm > 1e-3 && s.image_grad_norm > 1e-3, "{s:?}");
        // the second step's Adam moments see the clipped gradients
        step(&mut t, &mut ShapesReward);
        params.push(t.params().values.clone());
    }
    assert_ne!(params[0], params[1]);
}

/// The two largest entries of the image gradient of `conv_out.w` (the whole share, image policy
/// only) against central finite differences of the loss through the FORWARD graph.
/// Returns the advantages it used (the shapes reward on `r`).
fn image_gradient_matches_finite_differences(
    t: &mut Trainer,
    r: &unigrpo::train::rollout::Rollout,
) -> Vec<f32> {
    let rewards = t
        .rewards(r, &mut ShapesReward, None, &mut Progress::none())
        .unwrap();
    let (adv, _) = t.advantages(r, &rewards);
    let adv = &adv[..];
    let share: Vec<usize> = (0..r.len()).collect();
    let which = unigrpo::train::Policies {
        text: false,
        image: true,
    };
    let params = t.params().clone();
    let (_, grads) = t
        .loss_and_grad(&params, r, adv, &share, which, true)
        .unwrap();
    let name = "image.conv_out.w";
    let g = grads[name].as_slice().unwrap();
    let mut idx: Vec<usize> = (0..g.len()).collect();
    idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
    for &k in &idx[..2] {
        let h = 2e-3f32;
        let eval = |d: f32| {
            let mut p = params.clone();
            p.values.get_mut(name).unwrap().as_slice_mut().unwrap()[k] += d;
            t.loss_and_grad(&p, r, adv, &share, which, false).unwrap().0
        };
        let fd = (eval(h) - eval(-h)) / (2.0 * h as f64);
        let rel = (fd - g[k]).abs() / g[k].abs().max(1e-8);
        assert!(
            rel < 0.03,
            "{name}[{k}]: finite difference {fd:.6e} vs VJP {:.6e}",
            g[k]
        );
    }
    adv.to_vec()
}

/// CPS rollouts: the last step (to t = 0) is deterministic and never trained, every other step
/// is stochastic with a log-prob; the first update recomputes them; the image gradient matches
/// finite differences of the loss through the FORWARD graph.
#[test]
fn cps_rollouts_train_and_their_gradients_check() {
    let model = Arc::new(load(&shapes_dir()));
    let mut c = config(&model);
    c.sde_type = SdeType::Cps;
    c.train_timestep_fraction = 1.0;
    c.image_clip_range = 1e6;
    c.velocity_mse_weight = 1.0;
    c.train_text = false;
    c.learning_rate = 1e-3;
    let mut t = Trainer::new(model.clone(), c.clone()).unwrap();
    let r = t.rollout(&PROMPTS, None, &mut Progress::none()).unwrap();
    for i in 0..r.len() {
        assert_eq!(
            r.trained[i],
            0..5,
            "the deterministic last step is not trained"
        );
        for j in 0..6 {
            assert_eq!(
                r.traj.logprobs[i][j].is_nan(),
                j == 5,
                "sample {i} step {j}"
            );
        }
    }
    let s = step(&mut t, &mut ShapesReward);
    assert!(
        s.image_consistency < 1e-5 && s.image_grad_norm > 0.0,
        "{s:?}"
    );
    // finite differences at the stepped parameters on a fresh rollout
    let r = t.rollout(&PROMPTS, None, &mut Progress::none()).unwrap();
    image_gradient_matches_finite_differences(&mut t, &r);
    // CPS noise levels live in (0, 1]
    c.noise_level = 1.5;
    assert!(Trainer::new(model.clone(), c).is_err());
}

/// Velocity-MSE anchors: each sample's rows gain K of its untrained steps, drawn from its seed,
/// that carry the velocity MSE alone; away from the reference they add exactly lambda_v /
/// n_trained x their MSE to the loss, and the image gradient with them matches finite
/// differences of the loss.
#[test]
fn anchors_hold_untrained_steps_to_the_reference_and_their_gradients_check() {
    let model = Arc::new(load(&shapes_dir()));
    let mut c = config(&model);
    c.train_text = false;
    c.velocity_mse_weight = 1.0;
    c.image_clip_range = 1e6;
    c.learning_rate = 1e-3;
    c.mse_anchor_steps = 2;
    let mut t = Trainer::new(model.clone(), c.clone()).unwrap();
    step(&mut t, &mut ShapesReward);
    let mut r = t.rollout(&PROMPTS, None, &mut Progress::none()).unwrap();
    for i in 0..r.len() {
        assert_eq!(r.trained[i], 0..3);
        let a = &r.anchors[i];
        assert!(
            a.len() == 2 && a[0] < a[1] && a[0] >= 3 && a[1] < 6,
            "{a:?}"
        );
    }
    assert!(
        (1..r.len()).any(|i| r.anchors[i] != r.anchors[0]),
        "each sample draws its own anchors"
    );
    let adv = image_gradient_matches_finite_differences(&mut t, &r);
    let share: Vec<usize> = (0..r.len()).collect();
    let params = t.params().clone();
    let which = unigrpo::train::Policies {
        text: false,
        image: true,
    };
    let with = t
        .loss_and_grad(&params, &r, &adv, &share, which, false)
        .unwrap()
        .0;
    // the anchors' share of the loss: lambda_v / n_trained x the sum of their velocity MSEs,
    // computed here from the rollout's own velocities (the policy's) and the reference's
    use ndarray::Axis;
    use unigrpo::runtime::Tensor;
    let reference = unigrpo::package::ParamSet::clone(&model.params);
    let d = model.image.latent_len();
    let mut expected = 0.0;
    for i in 0..r.len() {
        for &j in &r.anchors[i] {
            let mut shape = vec![1];
            shape.extend_from_slice(&model.image.latent_shape);
            let x = ndarray::ArrayD::from_shape_vec(shape, r.traj.latents[i][j].clone()).unwrap();
            let tt = ndarray::arr1(&[r.traj.grid[j] as f32]).into_dyn();
            let cond: Vec<(String, Tensor)> = r
                .cond
                .inputs
                .iter()
                .map(|(n, v)| {
                    let row = match v {
                        Tensor::F32(a) => Tensor::F32(a.select(Axis(0), &[i])),
                        Tensor::I64(a) => Tensor::I64(a.select(Axis(0), &[i])),
                        Tensor::U8(a) => Tensor::U8(a.select(Axis(0), &[i])),
                    };
                    (n.clone(), row)
                })
                .collect();
            let vr = model
                .image
                .velocity(&reference, &x, &tt, &cond, None)
                .unwrap();
            let vp = &r.traj.velocities[i][j];
            let m: f64 = vp
                .iter()
                .zip(vr.as_slice().unwrap())
                .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                .sum::<f64>()
                / d as f64;
            expected += m;
        }
    }
    let rows = (r.len() * 3) as f64;
    for a in r.anchors.iter_mut() {
        a.clear();
    }
    let (without, _) = t
        .loss_and_grad(&params, &r, &adv, &share, which, false)
        .unwrap();
    assert!(expected > 0.0);
    assert!(
        ((with - without) - expected / rows).abs() < 1e-3 * expected / rows,
        "anchors add {:.6e}, expected {:.6e}",
        with - without,
        expected / rows
    );
    // without a velocity-MSE weight the anchors are off (the no-regulariser ablation needs no
    // second flag)
    c.velocity_mse_weight = 0.0;
    let mut t = Trainer::new(model.clone(), c).unwrap();
    let r = t.rollout(&PROMPTS, None, &mut Progress::none()).unwrap();
    assert!(r.anchors.iter().all(|a| a.is_empty()));
}

/// A checkpoint as version 2 (the previous release) wrote it: no adaptive weight, a
/// configuration without the options added since. Its configuration reads back with their
/// legacy values, and it resumes bit-identically to the trainer that wrote it.
#[test]
fn a_version_2_checkpoint_resumes_with_the_legacy_recipe() {
    use safetensors::SafeTensors;
    let model = Arc::new(load(&shapes_dir()));
    let mut c = config(&model);
    // a version 2 trainer had no anchors: it ran what their legacy value (0) means
    c.mse_anchor_steps = 0;
    let mut a = Trainer::new(model.clone(), c.clone()).unwrap();
    step(&mut a, &mut ShapesReward);
    let dir = tempfile::tempdir().unwrap();
    let (new, old) = (dir.path().join("v3"), dir.path().join("v2"));
    a.save(&new).unwrap();
    // rewrite it as version 2 did
    let bytes = std::fs::read(&new).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut m: HashMap<String, String> = meta.metadata().clone().unwrap();
    assert_eq!(m["version"], "3");
    m.insert("version".into(), "2".into());
    m.remove("velocity_mse_weight");
    m.remove("sha256");
    let mut cfg: serde_json::Value = serde_json::from_str(&m["config"]).unwrap();
    for k in [
        "clip_per_group",
        "velocity_mse_target",
        "dynamic_sampling",
        "resample_rounds",
        "sde_type",
        "max_staleness",
        "mse_anchor_steps",
    ] {
        assert!(cfg.as_object_mut().unwrap().remove(k).is_some(), "{k}");
    }
    m.insert("config".into(), cfg.to_string());
    let tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .names()
        .into_iter()
        .map(|n| (n.to_string(), st.tensor(n).unwrap()))
        .collect();
    std::fs::write(&old, safetensors::serialize(tensors, Some(m)).unwrap()).unwrap();
    let back = Trainer::checkpoint_config(&old, model.manifest()).unwrap();
    assert_eq!(
        back, c,
        "the legacy values are the recipe the checkpoint trained with"
    );
    let mut b = Trainer::new(model.clone(), back).unwrap();
    b.load(&old).unwrap();
    assert_eq!(b.velocity_mse_weight(), c.velocity_mse_weight);
    let (sa, sb) = (
        step(&mut a, &mut ShapesReward),
        step(&mut b, &mut ShapesReward),
    );
    assert_eq!((sa.loss, sa.reward_mean), (sb.loss, sb.reward_mean));
    assert_eq!(a.params().values, b.params().values);
}

/// A checkpoint with flipped bytes resumed and failed only later ("the update produced
/// non-finite parameters", naming no cause): its checksum now refuses it at load, naming the
/// file, and the trainer is left as it was.
#[test]
fn a_damaged_checkpoint_is_refused_at_load() {
    let model = Arc::new(load(&shapes_dir()));
    let mut a = Trainer::new(model.clone(), config(&model)).unwrap();
    step(&mut a, &mut ShapesReward);
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("c.safetensors");
    a.save(&ckpt).unwrap();
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let n = bytes.len();
    bytes[n - 1000] ^= 0x7f; // inside the tensor data
    std::fs::write(&ckpt, &bytes).unwrap();
    let mut b = Trainer::new(model.clone(), config(&model)).unwrap();
    let e = b.load(&ckpt).unwrap_err();
    assert_eq!(e.kind(), unigrpo::ErrorKind::ModelFormat);
    assert!(
        e.message()
            .contains("c.safetensors: the checkpoint's checksum does not match"),
        "{e}"
    );
    assert_eq!(b.step_count(), 0);
}
