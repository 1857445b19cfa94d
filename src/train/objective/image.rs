//! The image terms (algorithm.md section 4, "Image"): FlowGRPO without classifier-free guidance
//! on the trained denoising steps, plus the velocity-MSE penalty against the reference (and
//! FlowGRPO's latent KL for ablations); gradients through `velocity_vjp`.

use std::borrow::Cow;

use ndarray::{Array1, ArrayD, Axis, IxDyn};

use super::{batch, Grads, Mode, Objective, Pass, Terms};
use crate::error::Result;
use crate::generate::Conditioning;
use crate::runtime::Tensor;
use crate::sampler::{sde_logprob, sde_mean, SdeCoefficients};
use crate::train::losses::{
    clip_binds, clipped_surrogate, latent_kl, sde_logprob_grad_v, surrogate_grad_logp, velocity_mse,
};
use crate::train::rollout::Rollout;

/// Weights of one denoising step's terms.
#[derive(Debug, Clone, Copy)]
pub struct StepWeights {
    /// eps_img
    pub clip: f64,
    /// lambda_v
    pub mse: f64,
    /// beta_img
    pub kl: f64,
    /// 1 / (trained steps x samples): the mean over both (the regularisers' normaliser)
    pub mean: f64,
    /// The policy term's normaliser: `mean`, or with dynamic sampling the mean over the rows of
    /// the groups with a reward spread only
    pub policy_mean: f64,
}

/// One (sample, step) row's contribution: its share of the loss and its parts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RowTerm {
    pub loss: f64,
    pub velocity_mse: f64,
    pub latent_kl: f64,
    pub clipped: bool,
    /// log-prob of x_next under the current velocity
    pub logp: f64,
}

/// The terms of one denoising step with advantage `a`: SDE mean from `v`, log-prob of the
/// rollout's `x_next`, clipped ratio against `old`, and the regularisers against `v_ref`.
/// `grad_v` receives d(loss)/dv (the VJP cotangent of this row); `mu`/`mu_ref` are scratch.
#[allow(clippy::too_many_arguments)]
pub fn row_terms(
    a: f64,
    x: &[f32],
    x_next: &[f32],
    v: &[f32],
    v_ref: Option<&[f32]>,
    old: f64,
    c: &SdeCoefficients,
    w: &StepWeights,
    mu: &mut [f64],
    mu_ref: &mut [f64],
    grad_v: &mut [f64],
) -> RowTerm {
    sde_mean(x, v, c, mu);
    let lp = sde_logprob(x_next, mu, c.std);
    let ratio = (lp - old).exp();
    grad_v.iter_mut().for_each(|g| *g = 0.0);
    let mut t = RowTerm {
        loss: -clipped_surrogate(a, ratio, w.clip) * w.policy_mean,
        clipped: clip_binds(a, ratio, w.clip),
        logp: lp,
        ..Default::default()
    };
    let dl = surrogate_grad_logp(a, ratio, w.clip) * w.policy_mean;
    if dl != 0.0 {
        sde_logprob_grad_v(x_next, mu, c.cv, c.std, dl, grad_v);
    }
    if let Some(vr) = v_ref {
        if w.mse > 0.0 {
            let m = velocity_mse(v, vr, w.mse * w.mean, grad_v);
            t.velocity_mse = m * w.mean;
            t.loss += w.mse * m * w.mean;
        }
        if w.kl > 0.0 {
            sde_mean(x, vr, c, mu_ref);
            let kl = latent_kl(mu, mu_ref, c.cv, c.sigma, w.kl * w.mean, grad_v);
            t.latent_kl = kl * w.mean;
            t.loss += w.kl * kl * w.mean;
        }
    }
    t
}

/// A velocity-MSE anchor row (an untrained step, `mse_anchor_steps`): the penalty alone, with the
/// trained rows' weight, and its cotangent written into `grad_v`.
pub fn anchor_terms(v: &[f32], v_ref: &[f32], w: &StepWeights, grad_v: &mut [f64]) -> RowTerm {
    grad_v.iter_mut().for_each(|g| *g = 0.0);
    let m = velocity_mse(v, v_ref, w.mse * w.mean, grad_v);
    RowTerm {
        loss: w.mse * m * w.mean,
        velocity_mse: m * w.mean,
        ..Default::default()
    }
}

/// The coefficients of the rollout's stochastic step `j`; a trained step always has them.
fn step_coefficients(r: &Rollout, j: usize, t1: f64) -> Result<SdeCoefficients> {
    let g = &r.traj.grid;
    r.noise.coefficients(g[j], g[j + 1], t1).ok_or_else(|| {
        crate::error::Error::invalid(format!(
            "denoising step {j} is deterministic and cannot be trained"
        ))
    })
}

fn gather(t: &Tensor, rows: &[usize]) -> Tensor {
    match t {
        Tensor::F32(a) => Tensor::F32(a.select(Axis(0), rows)),
        Tensor::I64(a) => Tensor::I64(a.select(Axis(0), rows)),
        Tensor::U8(a) => Tensor::U8(a.select(Axis(0), rows)),
    }
}

/// Rows `idx` of every conditioning input.
fn gather_rows(cond: &Conditioning, idx: &[usize]) -> Vec<(String, Tensor)> {
    cond.inputs
        .iter()
        .map(|(n, t)| (n.clone(), gather(t, idx)))
        .collect()
}

/// The velocity graphs' inputs for the rows of a micro-batch.
struct ImageRows {
    rows: Vec<(usize, usize, bool)>,
    x: ArrayD<f32>,
    t: ArrayD<f32>,
    cond: Vec<(String, Tensor)>,
}

fn image_rows(r: &Rollout, samples: &[usize], shape: &[usize]) -> ImageRows {
    let rows = batch::image_rows(samples, &r.trained, &r.anchors);
    let d: usize = shape.iter().product();
    let mut x = ArrayD::<f32>::zeros(IxDyn(&[rows.len(), shape[0], shape[1], shape[2]]));
    {
        let xs = x.as_slice_mut().expect("contiguous");
        for (k, &(i, j, _)) in rows.iter().enumerate() {
            xs[k * d..(k + 1) * d].copy_from_slice(&r.traj.latents[i][j]);
        }
    }
    let t = Array1::from_iter(rows.iter().map(|&(_, j, _)| r.traj.grid[j] as f32)).into_dyn();
    let idx: Vec<usize> = rows.iter().map(|&(i, _, _)| i).collect();
    let cond = gather_rows(&r.cond, &idx);
    ImageRows { rows, x, t, cond }
}

/// Whether the velocity graph's conditioning comes from text-graph outputs (a hand-off such as a
/// key/value cache), so that it depends on the text parameters; token ids and masks do not.
fn conditioning_depends_on_params(o: &Objective<'_>) -> bool {
    o.model
        .manifest()
        .image
        .conditioning
        .iter()
        .any(|c| c.source.starts_with("text_decode:"))
}

/// The conditioning rows of a micro-batch under `params` (the hand-off recomputed by the text
/// graph, still a stop-gradient), one row per (sample, step) as `image_rows` lays them out.
fn conditioning_under(
    o: &Objective<'_>,
    params: &crate::package::ParamSet,
    mb: &[usize],
    cancel: Option<&crate::cancel::CancelToken>,
) -> Result<Vec<(String, Tensor)>> {
    let contexts: Vec<Vec<i64>> = mb.iter().map(|&i| o.rollout.contexts[i].clone()).collect();
    let c = crate::generate::build_conditioning(o.model, params, &contexts, cancel)?;
    let idx: Vec<usize> = mb
        .iter()
        .enumerate()
        .flat_map(|(k, &i)| {
            std::iter::repeat_n(k, o.rollout.trained[i].len() + o.rollout.anchors[i].len())
        })
        .collect();
    Ok(gather_rows(&c, &idx))
}

/// The image terms of `pass.share`, gradients added into `grads`.
pub fn terms(
    o: &Objective<'_>,
    pass: &Pass<'_>,
    grads: &mut Grads,
    terms: &mut Terms,
) -> Result<()> {
    if pass.share.is_empty() {
        return Ok(());
    }
    let (r, cfg, net, cancel) = (o.rollout, o.config, &o.model.image, pass.cancel);
    let shape = net.latent_shape.clone();
    let d = net.latent_len();
    let c = o.counts_for(pass.share);
    let w = StepWeights {
        clip: cfg.image_clip_range as f64,
        mse: o.velocity_mse_weight,
        kl: cfg.image_kl_weight as f64,
        // the mean over the share's trained (sample, step) rows
        mean: 1.0 / c.image_rows.max(1) as f64,
        policy_mean: 1.0 / c.image_policy_rows.max(1) as f64,
    };
    let grid = &r.traj.grid;
    let t1 = grid.get(1).copied().unwrap_or(0.0);
    let mut mu = vec![0f64; d];
    let mut mu_ref = vec![0f64; d];
    let mut gv = vec![0f64; d];
    let fresh = conditioning_depends_on_params(o);
    // A policy that has not moved from the reference (the first update of a run) has the
    // reference's velocity: the regularisers are exactly zero there and no reference forward
    // runs. Computed by a second graph, the difference would be rounding noise, and the
    // optimiser would take that noise as a direction.
    let at_reference = (w.mse > 0.0 || w.kl > 0.0) && pass.params.same_values(o.reference);
    let needs_ref = (w.mse > 0.0 || w.kl > 0.0) && !at_reference;
    // the reference's parameters never change: its forwards run through a session with them
    // built in (made once per model)
    let ref_session = if needs_ref {
        net.constant_velocity(o.reference)?
    } else {
        None
    };
    for mb in batch::micro_batches(pass.share, cfg.micro_batch_size) {
        let ir = image_rows(r, mb, &shape);
        // The rollout's conditioning is the current policy's only on the first update; a hand-off
        // that depends on the text parameters is recomputed for later updates and the reference.
        let cond_cur: Cow<[(String, Tensor)]> = if fresh && pass.mode != Mode::OnPolicy {
            Cow::Owned(conditioning_under(o, pass.params, mb, cancel)?)
        } else {
            Cow::Borrowed(&ir.cond)
        };
        // Later updates: one forward that keeps what the backward reads, when the model does
        // (`ImageNet::velocity_saving`); else a forward here and a recomputing VJP below.
        let mut saved = None;
        let current = match pass.mode {
            Mode::OnPolicy => None,
            Mode::LossOnly => Some(net.velocity(pass.params, &ir.x, &ir.t, &cond_cur, cancel)?),
            Mode::Forward => {
                match net.velocity_saving(pass.params, &ir.x, &ir.t, &cond_cur, cancel)? {
                    Some((v, s)) => {
                        saved = Some(s);
                        Some(v)
                    }
                    None => Some(net.velocity(pass.params, &ir.x, &ir.t, &cond_cur, cancel)?),
                }
            }
        };
        let refs = if needs_ref {
            let cond_ref: Cow<[(String, Tensor)]> = if fresh {
                Cow::Owned(conditioning_under(o, o.reference, mb, cancel)?)
            } else {
                Cow::Borrowed(&ir.cond)
            };
            Some(net.velocity_with(
                ref_session.as_deref(),
                o.reference,
                &ir.x,
                &ir.t,
                &cond_ref,
                cancel,
            )?)
        } else {
            None
        };
        let mut cot = ArrayD::<f32>::zeros(ir.x.raw_dim());
        let mut any = false;
        {
            let cs = cot.as_slice_mut().expect("contiguous");
            for (k, &(i, j, anchor)) in ir.rows.iter().enumerate() {
                let v: &[f32] = match &current {
                    Some(c) => &c.as_slice().expect("contiguous")[k * d..(k + 1) * d],
                    None => &r.traj.velocities[i][j],
                };
                let v_ref = match &refs {
                    Some(rf) => Some(&rf.as_slice().expect("contiguous")[k * d..(k + 1) * d]),
                    None if at_reference => Some(v),
                    None => None,
                };
                if anchor {
                    // validate() keeps anchors to runs with a velocity-MSE weight
                    let vr = v_ref.expect("anchors need the reference's velocity");
                    let rt = anchor_terms(v, vr, &w, &mut gv);
                    terms.image_loss += rt.loss;
                    terms.velocity_mse += rt.velocity_mse;
                    for (o, &g) in cs[k * d..(k + 1) * d].iter_mut().zip(&gv) {
                        *o = g as f32;
                        any |= g != 0.0;
                    }
                    continue;
                }
                let c = step_coefficients(r, j, t1)?;
                let (x, x_next) = (&r.traj.latents[i][j], &r.traj.latents[i][j + 1]);
                let old = r.traj.logprobs[i][j];
                let rt = row_terms(
                    o.advantages[i] as f64,
                    x,
                    x_next,
                    v,
                    v_ref,
                    old,
                    &c,
                    &w,
                    &mut mu,
                    &mut mu_ref,
                    &mut gv,
                );
                terms.image_loss += rt.loss;
                terms.velocity_mse += rt.velocity_mse;
                terms.image_kl += rt.latent_kl;
                terms.image_clipped += rt.clipped as usize;
                terms.image_steps += 1;
                terms.kl_sum += 0.5 * (rt.logp - old).powi(2);
                terms.kl_n += 1;
                for (o, &g) in cs[k * d..(k + 1) * d].iter_mut().zip(&gv) {
                    *o = g as f32;
                    any |= g != 0.0;
                }
            }
        }
        if pass.mode == Mode::LossOnly || (!any && pass.mode != Mode::OnPolicy) {
            continue;
        }
        if let Some(s) = &saved {
            net.velocity_backward(s, pass.params, &ir.x, &ir.t, &cond_cur, &cot, grads, cancel)?;
            continue;
        }
        let recomputed =
            net.velocity_vjp(pass.params, &ir.x, &ir.t, &cond_cur, &cot, grads, cancel)?;
        if pass.mode == Mode::OnPolicy {
            let rs = recomputed.as_slice().expect("contiguous");
            for (k, &(i, j, _)) in ir.rows.iter().enumerate().filter(|(_, r)| !r.2) {
                let c = step_coefficients(r, j, t1)?;
                sde_mean(&r.traj.latents[i][j], &rs[k * d..(k + 1) * d], &c, &mut mu);
                let lp = sde_logprob(&r.traj.latents[i][j + 1], &mu, c.std);
                terms.image_consistency = terms
                    .image_consistency
                    .max((lp - r.traj.logprobs[i][j]).abs());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::sde_coefficients;

    #[test]
    fn row_terms_on_policy_by_hand() {
        // D = 2, one step t = 0.5 -> 0.25, a = 0.7: at the rollout's own velocity the ratio is 1
        let c = sde_coefficients(0.5, 0.25, 0.7, 0.5);
        let (x, v) = ([0.2f32, -0.4], [0.1f32, 0.3]);
        let mut mu = [0f64; 2];
        sde_mean(&x, &v, &c, &mut mu);
        let x_next = [(mu[0] + 0.5 * c.std) as f32, (mu[1] - 0.25 * c.std) as f32];
        let old = sde_logprob(&x_next, &mu, c.std);
        let w = StepWeights {
            clip: 1e-4,
            mse: 2.0,
            kl: 0.0,
            mean: 0.25,
            policy_mean: 0.25,
        };
        let (mut m1, mut m2, mut g) = ([0f64; 2], [0f64; 2], [0f64; 2]);
        let v_ref = [0.1f32, 0.5];
        let t = row_terms(
            1.5,
            &x,
            &x_next,
            &v,
            Some(&v_ref),
            old,
            &c,
            &w,
            &mut m1,
            &mut m2,
            &mut g,
        );
        // surrogate -A r = -1.5 at r = 1, times the mean weight; MSE mean((v - v_ref)^2) = 0.02
        assert!(!t.clipped);
        assert!((t.velocity_mse - 0.02 * 0.25).abs() < 1e-7, "{t:?}");
        assert!(
            (t.loss - (-1.5 * 0.25 + 2.0 * 0.02 * 0.25)).abs() < 1e-7,
            "{t:?}"
        );
        // the MSE part of the cotangent: 2 lambda (v - v_ref) / D times the mean weight
        let mut g_clip = [0f64; 2];
        sde_logprob_grad_v(&x_next, &m1, c.cv, c.std, -1.5 * 0.25, &mut g_clip);
        assert!(
            (g[1] - (g_clip[1] + 2.0 * 2.0 * (0.3 - 0.5) / 2.0 * 0.25)).abs() < 1e-6,
            "{g:?}"
        );
        assert!((g[0] - g_clip[0]).abs() < 1e-9);
        // dynamic sampling's policy normaliser (0.5) weighs the surrogate, the MSE keeps 0.25
        let wd = StepWeights {
            policy_mean: 0.5,
            ..w
        };
        let t2 = row_terms(
            1.5,
            &x,
            &x_next,
            &v,
            Some(&v_ref),
            old,
            &c,
            &wd,
            &mut m1,
            &mut m2,
            &mut g,
        );
        assert!(
            (t2.loss - (-1.5 * 0.5 + 2.0 * 0.02 * 0.25)).abs() < 1e-7,
            "{t2:?}"
        );
        assert!((g[0] - 2.0 * g_clip[0]).abs() < 1e-9);
    }

    #[test]
    fn an_anchor_row_carries_the_velocity_mse_alone() {
        let w = StepWeights {
            clip: 1e-4,
            mse: 2.0,
            kl: 0.5,
            mean: 0.25,
            policy_mean: 0.5,
        };
        let mut g = [9.0f64; 2];
        // mean((v - v_ref)^2) = (0.04 + 0.01) / 2 = 0.025
        let t = anchor_terms(&[0.1, 0.3], &[-0.1, 0.4], &w, &mut g);
        assert!((t.velocity_mse - 0.025 * 0.25).abs() < 1e-9, "{t:?}");
        assert!((t.loss - 2.0 * 0.025 * 0.25).abs() < 1e-9, "{t:?}");
        assert_eq!((t.latent_kl, t.clipped, t.logp), (0.0, false, 0.0));
        // d/dv: 2 lambda (v - v_ref) / D times the mean weight, nothing left from before
        assert!((g[0] - 2.0 * 2.0 * 0.2 / 2.0 * 0.25).abs() < 1e-7, "{g:?}");
        assert!((g[1] - 2.0 * 2.0 * -0.1 / 2.0 * 0.25).abs() < 1e-7, "{g:?}");
    }
}
