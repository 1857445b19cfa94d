//! The UniGRPO objective of one optimiser step's share of samples, through the FORWARD and VJP
//! graphs: loss terms, their derivatives with respect to the network outputs (losses.rs), and the
//! parameter gradients from the VJP graphs, summed by parameter name.

use std::borrow::Cow;
use std::collections::BTreeMap;

use ndarray::{Array1, Array2, ArrayD, Axis, IxDyn};

use super::losses::{
    clip_binds, clipped_surrogate, k3, k3_grad_logp, latent_kl, sde_logprob_grad_v,
    surrogate_grad_logp, velocity_mse,
};
use super::rollout::Rollout;
use super::TrainConfig;
use crate::cancel::CancelToken;
use crate::error::Result;
use crate::model::Model;
use crate::package::ParamSet;
use crate::runtime::{Tensor, TensorView};
use crate::sampler::{sde_coefficients, sde_logprob, sde_mean};

/// How the current policy's outputs are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// First update: the current policy equals the rollout's, its outputs are the stored ones;
    /// the VJP graph recomputes them (the recomputation is returned for the consistency check).
    OnPolicy,
    /// Later updates: run the FORWARD graph, then the VJP.
    Forward,
    /// Loss only, through the FORWARD graphs (finite-difference checks); no gradients.
    LossOnly,
}

/// Sums over a share, normalised as algorithm.md section 4 defines.
#[derive(Debug, Clone, Default)]
pub struct Terms {
    pub text_loss: f64,
    pub image_loss: f64,
    pub velocity_mse: f64,
    pub text_kl: f64,
    pub image_kl: f64,
    pub text_clipped: usize,
    pub text_tokens: usize,
    pub image_clipped: usize,
    pub image_steps: usize,
    /// Sum and count of 0.5 (logp - logp_old)^2 over tokens and trained steps.
    pub kl_sum: f64,
    pub kl_n: usize,
    /// OnPolicy: max |recomputed - stored| log-prob (text tokens, image steps).
    pub text_consistency: f64,
    pub image_consistency: f64,
}

pub type Grads = BTreeMap<String, ArrayD<f64>>;

fn add_grads(acc: &mut Grads, names: &[String], outs: Vec<Tensor>) -> Result<()> {
    for (n, t) in names.iter().zip(outs) {
        let g = t.into_f32()?;
        match acc.get_mut(n) {
            Some(a) => a.zip_mut_with(&g, |a, &b| *a += b as f64),
            None => {
                acc.insert(n.clone(), g.mapv(|x| x as f64));
            }
        }
    }
    Ok(())
}

fn chunks(samples: &[usize], micro: u32) -> Vec<&[usize]> {
    let m = if micro == 0 {
        samples.len().max(1)
    } else {
        micro as usize
    };
    samples.chunks(m).collect()
}

// ------------------------------------------------------------------ text

struct TextBatch {
    ids: Array2<i64>,
    mask: Array2<i64>,
    pos: Array2<i64>,
    targets: Array2<i64>,
    /// For sample k of the batch: column of each reasoning token's log-prob.
    cols: Vec<std::ops::Range<usize>>,
}

fn text_batch(r: &Rollout, samples: &[usize], pad: i64) -> TextBatch {
    // inputs are the sequence without its last token, targets the sequence shifted by one
    let seqs: Vec<Vec<i64>> = samples
        .iter()
        .map(|&i| [r.prompt_ids[i].as_slice(), r.reasoning[i].tokens.as_slice()].concat())
        .collect();
    let inputs: Vec<&[i64]> = seqs.iter().map(|s| &s[..s.len() - 1]).collect();
    let targets: Vec<&[i64]> = seqs.iter().map(|s| &s[1..]).collect();
    let p = crate::text::left_pad(&inputs, pad);
    let n = p.ids.ncols();
    TextBatch {
        targets: crate::text::left_pad(&targets, pad).ids,
        cols: samples
            .iter()
            .map(|&i| n - r.reasoning[i].tokens.len()..n)
            .collect(),
        ids: p.ids,
        mask: p.mask,
        pos: p.positions,
    }
}

fn text_inputs<'a>(
    g: &crate::runtime::Graph,
    params: &'a ParamSet,
    tb: &'a TextBatch,
    temp: &'a ArrayD<f32>,
) -> Vec<(&'a str, TensorView<'a>)> {
    let mut inputs = params.inputs_for(g);
    inputs.push(("input_ids", TensorView::I64(tb.ids.view().into_dyn())));
    inputs.push(("attention_mask", TensorView::I64(tb.mask.view().into_dyn())));
    inputs.push(("position_ids", TensorView::I64(tb.pos.view().into_dyn())));
    inputs.push(("targets", TensorView::I64(tb.targets.view().into_dyn())));
    inputs.push(("temperature", TensorView::F32(temp.view())));
    inputs
}

fn text_logprobs(
    model: &Model,
    params: &ParamSet,
    tb: &TextBatch,
    temp: &ArrayD<f32>,
    cancel: Option<&CancelToken>,
) -> Result<ArrayD<f32>> {
    let g = model.graph("text_logprob")?;
    g.run(
        &text_inputs(g, params, tb, temp),
        &["token_logprobs"],
        cancel,
    )?
    .remove(0)
    .into_f32()
}

/// Text GRPO over `share` (samples with a reward): token-level clipped ratio, optional k3.
#[allow(clippy::too_many_arguments)]
pub fn text_terms(
    model: &Model,
    params: &ParamSet,
    reference: &ParamSet,
    r: &Rollout,
    adv: &[f32],
    share: &[usize],
    cfg: &TrainConfig,
    mode: Mode,
    grads: &mut Grads,
    terms: &mut Terms,
    cancel: Option<&CancelToken>,
) -> Result<()> {
    let lengths: Vec<usize> = share.iter().map(|&i| r.reasoning[i].tokens.len()).collect();
    if lengths.iter().all(|&l| l == 0) {
        return Ok(());
    }
    let mut weight = vec![0.0; r.len()];
    for (&i, w) in share
        .iter()
        .zip(cfg.text_aggregation.token_weights(&lengths))
    {
        weight[i] = w;
    }
    let (eps, beta) = (cfg.text_clip_range as f64, cfg.text_kl_weight as f64);
    let temp = ndarray::arr0(r.temperature).into_dyn();
    let vjp = model.graph("text_logprob_vjp")?;
    let grad_names: Vec<String> = vjp
        .outputs
        .iter()
        .filter_map(|p| p.name.strip_prefix("grad.").map(str::to_string))
        .collect();
    let mut want: Vec<String> = vec!["token_logprobs".into()];
    want.extend(grad_names.iter().map(|n| format!("grad.{n}")));
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    for mb in chunks(share, cfg.micro_batch_size) {
        let tb = text_batch(r, mb, model.tokenizer.pad);
        let current = match mode {
            Mode::OnPolicy => None,
            _ => Some(text_logprobs(model, params, &tb, &temp, cancel)?),
        };
        let refs = if beta > 0.0 {
            Some(text_logprobs(model, reference, &tb, &temp, cancel)?)
        } else {
            None
        };
        let mut cot = Array2::<f32>::zeros(tb.ids.raw_dim());
        let mut any = false;
        for (k, &i) in mb.iter().enumerate() {
            let a = adv[i] as f64;
            let norm = weight[i];
            for (t, col) in tb.cols[k].clone().enumerate() {
                let old = r.reasoning[i].logprobs[t] as f64;
                let lp = current.as_ref().map_or(old, |c| c[[k, col]] as f64);
                let rho = (lp - old).exp();
                let mut l = -clipped_surrogate(a, rho, eps);
                let mut d = surrogate_grad_logp(a, rho, eps);
                if let Some(rf) = &refs {
                    let lr = rf[[k, col]] as f64;
                    terms.text_kl += k3(lp, lr) * norm;
                    l += beta * k3(lp, lr);
                    d += beta * k3_grad_logp(lp, lr);
                }
                terms.text_loss += l * norm;
                terms.text_clipped += clip_binds(a, rho, eps) as usize;
                terms.text_tokens += 1;
                terms.kl_sum += 0.5 * (lp - old).powi(2);
                terms.kl_n += 1;
                cot[[k, col]] = (d * norm) as f32;
                any |= d != 0.0;
            }
        }
        if mode == Mode::LossOnly || (!any && mode != Mode::OnPolicy) {
            continue;
        }
        let mut inputs = text_inputs(vjp, params, &tb, &temp);
        inputs.push(("d_token_logprobs", TensorView::F32(cot.view().into_dyn())));
        let mut outs = vjp.run(&inputs, &want, cancel)?;
        let recomputed = outs.remove(0).into_f32()?;
        if mode == Mode::OnPolicy {
            for (k, &i) in mb.iter().enumerate() {
                for (t, col) in tb.cols[k].clone().enumerate() {
                    let d = (recomputed[[k, col]] - r.reasoning[i].logprobs[t]).abs() as f64;
                    terms.text_consistency = terms.text_consistency.max(d);
                }
            }
        }
        add_grads(grads, &grad_names, outs)?;
    }
    Ok(())
}

// ------------------------------------------------------------------ image

fn gather(t: &Tensor, rows: &[usize]) -> Tensor {
    match t {
        Tensor::F32(a) => Tensor::F32(a.select(Axis(0), rows)),
        Tensor::I64(a) => Tensor::I64(a.select(Axis(0), rows)),
        Tensor::U8(a) => Tensor::U8(a.select(Axis(0), rows)),
    }
}

struct ImageRows {
    /// (sample, step) per row.
    rows: Vec<(usize, usize)>,
    x: ArrayD<f32>,
    t: ArrayD<f32>,
    cond: Vec<(String, Tensor)>,
}

fn image_rows(r: &Rollout, samples: &[usize], steps: usize, shape: &[usize]) -> ImageRows {
    let rows: Vec<(usize, usize)> = samples
        .iter()
        .flat_map(|&i| (0..steps).map(move |j| (i, j)))
        .collect();
    let d: usize = shape.iter().product();
    let mut x = ArrayD::<f32>::zeros(IxDyn(&[rows.len(), shape[0], shape[1], shape[2]]));
    {
        let xs = x.as_slice_mut().expect("contiguous");
        for (k, &(i, j)) in rows.iter().enumerate() {
            xs[k * d..(k + 1) * d].copy_from_slice(&r.traj.latents[i][j]);
        }
    }
    let t = Array1::from_iter(rows.iter().map(|&(_, j)| r.traj.grid[j] as f32)).into_dyn();
    let idx: Vec<usize> = rows.iter().map(|&(i, _)| i).collect();
    let cond = gather_rows(&r.cond, &idx);
    ImageRows { rows, x, t, cond }
}

/// Rows `idx` of every conditioning input.
fn gather_rows(cond: &crate::generate::Conditioning, idx: &[usize]) -> Vec<(String, Tensor)> {
    cond.inputs
        .iter()
        .map(|(n, t)| (n.clone(), gather(t, idx)))
        .collect()
}

fn velocity_inputs<'a>(
    g: &crate::runtime::Graph,
    params: &'a ParamSet,
    ir: &'a ImageRows,
    cond: &'a [(String, Tensor)],
) -> Vec<(&'a str, TensorView<'a>)> {
    let mut inputs = params.inputs_for(g);
    inputs.push(("x", TensorView::F32(ir.x.view())));
    inputs.push(("t", TensorView::F32(ir.t.view())));
    inputs.extend(cond.iter().map(|(n, t)| (n.as_str(), t.view())));
    inputs
}

fn velocities(
    model: &Model,
    params: &ParamSet,
    ir: &ImageRows,
    cond: &[(String, Tensor)],
    cancel: Option<&CancelToken>,
) -> Result<ArrayD<f32>> {
    let g = model.graph("velocity")?;
    g.run(&velocity_inputs(g, params, ir, cond), &["velocity"], cancel)?
        .remove(0)
        .into_f32()
}

/// Whether the velocity graph's conditioning comes from text-graph outputs (a hand-off such as a
/// key/value cache), so that it depends on the text parameters; token ids and masks do not.
fn conditioning_depends_on_params(model: &Model) -> bool {
    model
        .manifest()
        .image
        .conditioning
        .iter()
        .any(|c| c.source.starts_with("text_decode:"))
}

/// The conditioning rows of a micro-batch under `params` (the hand-off recomputed by the text
/// graph, still a stop-gradient), one row per (sample, step) as `image_rows` lays them out.
fn conditioning_under(
    model: &Model,
    params: &ParamSet,
    r: &Rollout,
    mb: &[usize],
    steps: usize,
    cancel: Option<&CancelToken>,
) -> Result<Vec<(String, Tensor)>> {
    let contexts: Vec<Vec<i64>> = mb.iter().map(|&i| r.contexts[i].clone()).collect();
    let c = crate::generate::build_conditioning(model, params, &contexts, cancel)?;
    let idx: Vec<usize> = (0..mb.len())
        .flat_map(|k| std::iter::repeat_n(k, steps))
        .collect();
    Ok(gather_rows(&c, &idx))
}

/// FlowGRPO without CFG over the trained steps of `share`, plus the velocity-MSE penalty (and the
/// latent KL for ablations) against the reference parameters.
#[allow(clippy::too_many_arguments)]
pub fn image_terms(
    model: &Model,
    params: &ParamSet,
    reference: &ParamSet,
    r: &Rollout,
    adv: &[f32],
    share: &[usize],
    cfg: &TrainConfig,
    mode: Mode,
    grads: &mut Grads,
    terms: &mut Terms,
    cancel: Option<&CancelToken>,
) -> Result<()> {
    if share.is_empty() {
        return Ok(());
    }
    let steps = cfg.trained_steps();
    let shape = model.manifest().image.latent_shape.clone();
    let d: usize = shape.iter().product();
    let w = 1.0 / (steps as f64 * share.len() as f64); // mean over trained steps and samples
    let (eps, lam, beta) = (
        cfg.image_clip_range as f64,
        cfg.velocity_mse_weight as f64,
        cfg.image_kl_weight as f64,
    );
    let grid = &r.traj.grid;
    let t1 = grid.get(1).copied().unwrap_or(0.0);
    let vjp = model.graph("velocity_vjp")?;
    let grad_names: Vec<String> = vjp
        .outputs
        .iter()
        .filter_map(|p| p.name.strip_prefix("grad.").map(str::to_string))
        .collect();
    let mut want: Vec<String> = vec!["velocity".into()];
    want.extend(grad_names.iter().map(|n| format!("grad.{n}")));
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    let mut mu = vec![0f64; d];
    let mut mu_ref = vec![0f64; d];
    let mut gv = vec![0f64; d];
    let fresh = conditioning_depends_on_params(model);
    for mb in chunks(share, cfg.micro_batch_size) {
        let ir = image_rows(r, mb, steps, &shape);
        // The rollout's conditioning is the current policy's only on the first update; a hand-off
        // that depends on the text parameters is recomputed for later updates and the reference.
        let cond_cur: Cow<[(String, Tensor)]> = if fresh && mode != Mode::OnPolicy {
            Cow::Owned(conditioning_under(model, params, r, mb, steps, cancel)?)
        } else {
            Cow::Borrowed(&ir.cond)
        };
        let current = match mode {
            Mode::OnPolicy => None,
            _ => Some(velocities(model, params, &ir, &cond_cur, cancel)?),
        };
        let refs = if lam > 0.0 || beta > 0.0 {
            let cond_ref: Cow<[(String, Tensor)]> = if fresh {
                Cow::Owned(conditioning_under(model, reference, r, mb, steps, cancel)?)
            } else {
                Cow::Borrowed(&ir.cond)
            };
            Some(velocities(model, reference, &ir, &cond_ref, cancel)?)
        } else {
            None
        };
        let mut cot = ArrayD::<f32>::zeros(ir.x.raw_dim());
        let mut any = false;
        {
            let cs = cot.as_slice_mut().expect("contiguous");
            for (k, &(i, j)) in ir.rows.iter().enumerate() {
                let a = adv[i] as f64;
                let v: &[f32] = match &current {
                    Some(c) => &c.as_slice().expect("contiguous")[k * d..(k + 1) * d],
                    None => &r.traj.velocities[i][j],
                };
                let c = sde_coefficients(grid[j], grid[j + 1], r.noise_level, t1);
                let (x, x_next) = (&r.traj.latents[i][j], &r.traj.latents[i][j + 1]);
                sde_mean(x, v, &c, &mut mu);
                let lp = sde_logprob(x_next, &mu, c.std);
                let old = r.traj.logprobs[i][j];
                let ratio = (lp - old).exp();
                gv.iter_mut().for_each(|g| *g = 0.0);
                terms.image_loss += -clipped_surrogate(a, ratio, eps) * w;
                let dl = surrogate_grad_logp(a, ratio, eps) * w;
                if dl != 0.0 {
                    sde_logprob_grad_v(x_next, &mu, c.cv, c.std, dl, &mut gv);
                }
                if let Some(rf) = &refs {
                    let vr = &rf.as_slice().expect("contiguous")[k * d..(k + 1) * d];
                    if lam > 0.0 {
                        let m = velocity_mse(v, vr, lam * w, &mut gv);
                        terms.velocity_mse += m * w;
                        terms.image_loss += lam * m * w;
                    }
                    if beta > 0.0 {
                        sde_mean(x, vr, &c, &mut mu_ref);
                        let kl = latent_kl(&mu, &mu_ref, c.cv, c.sigma, beta * w, &mut gv);
                        terms.image_kl += kl * w;
                        terms.image_loss += beta * kl * w;
                    }
                }
                terms.image_clipped += clip_binds(a, ratio, eps) as usize;
                terms.image_steps += 1;
                terms.kl_sum += 0.5 * (lp - old).powi(2);
                terms.kl_n += 1;
                for (o, &g) in cs[k * d..(k + 1) * d].iter_mut().zip(&gv) {
                    *o = g as f32;
                    any |= g != 0.0;
                }
            }
        }
        if mode == Mode::LossOnly || (!any && mode != Mode::OnPolicy) {
            continue;
        }
        let mut inputs = velocity_inputs(vjp, params, &ir, &cond_cur);
        inputs.push(("d_velocity", TensorView::F32(cot.view())));
        let mut outs = vjp.run(&inputs, &want, cancel)?;
        let recomputed = outs.remove(0).into_f32()?;
        if mode == Mode::OnPolicy {
            let rs = recomputed.as_slice().expect("contiguous");
            for (k, &(i, j)) in ir.rows.iter().enumerate() {
                let c = sde_coefficients(grid[j], grid[j + 1], r.noise_level, t1);
                sde_mean(&r.traj.latents[i][j], &rs[k * d..(k + 1) * d], &c, &mut mu);
                let lp = sde_logprob(&r.traj.latents[i][j + 1], &mu, c.std);
                terms.image_consistency = terms
                    .image_consistency
                    .max((lp - r.traj.logprobs[i][j]).abs());
            }
        }
        add_grads(grads, &grad_names, outs)?;
    }
    Ok(())
}

/// The text terms (when `text`) and image terms (when `image`) of one share, with their gradients
/// summed by parameter name.
#[allow(clippy::too_many_arguments)]
pub fn policy_terms(
    model: &Model,
    params: &ParamSet,
    reference: &ParamSet,
    r: &Rollout,
    adv: &[f32],
    share: &[usize],
    cfg: &TrainConfig,
    mode: Mode,
    (text, image): (bool, bool),
    cancel: Option<&CancelToken>,
) -> Result<(Grads, Terms)> {
    let mut grads = Grads::new();
    let mut terms = Terms::default();
    if text {
        text_terms(
            model, params, reference, r, adv, share, cfg, mode, &mut grads, &mut terms, cancel,
        )?;
    }
    if image {
        image_terms(
            model, params, reference, r, adv, share, cfg, mode, &mut grads, &mut terms, cancel,
        )?;
    }
    Ok((grads, terms))
}
