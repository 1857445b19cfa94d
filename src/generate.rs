//! Generation, one round: reasoning (KV-cache decoding), conditioning hand-off, flow sampling,
//! decoding to RGB. Every stage runs the whole batch in one graph call per step.

use std::collections::BTreeMap;

use ndarray::{Array1, ArrayD, IxDyn};
use rand_chacha::ChaCha8Rng;

use crate::cancel::CancelToken;
use crate::error::{Error, ErrorKind, Result};
use crate::image::RgbImage;
use crate::model::Model;
pub use crate::options::GenerateParams;
use crate::package::ParamSet;
use crate::progress::{Progress, Stage};
use crate::rng;
use crate::runtime::Tensor;
use crate::sampler;
use crate::text::{decode_reasoning, DecodeSettings, Reasoning, SamplingParams};

/// One generated sample.
#[derive(Debug, Clone)]
pub struct Generation {
    pub prompt: String,
    /// The reasoning text ("" when reasoning is off).
    pub reasoning: String,
    pub reasoning_tokens: Reasoning,
    pub image: RgbImage,
}

/// The denoising trajectory of a batch, kept for rollouts.
#[derive(Debug, Clone)]
pub struct Trajectory {
    /// The timestep grid actually used, `T + 1` points from 1 to 0.
    pub grid: Vec<f64>,
    /// `[B][T + 1][D]` latents, `[B][T][D]` velocities, `[B][T]` log-probs (SDE only).
    pub latents: Vec<Vec<Vec<f32>>>,
    pub velocities: Vec<Vec<Vec<f32>>>,
    pub logprobs: Vec<Vec<f64>>,
}

/// The conditioning inputs of the velocity graph, built once per batch.
pub struct Conditioning {
    pub inputs: Vec<(String, Tensor)>,
}

/// Left-pad the contexts and evaluate the manifest's hand-off sources.
pub fn build_conditioning(
    model: &Model,
    params: &ParamSet,
    contexts: &[Vec<i64>],
    cancel: Option<&CancelToken>,
) -> Result<Conditioning> {
    let crate::text::Padded {
        ids,
        mask,
        positions: pos,
    } = crate::text::left_pad(contexts, model.tokenizer.pad);
    let conds = &model.manifest().image.conditioning;
    let mut from_text: BTreeMap<String, Tensor> = BTreeMap::new();
    let text_outs: Vec<&str> = conds
        .iter()
        .filter_map(|c| c.source.strip_prefix("text_decode:"))
        .collect();
    if !text_outs.is_empty() {
        let outs = model.text.handoff(
            params,
            crate::nets::Tokens {
                ids: &ids,
                mask: &mask,
                positions: &pos,
            },
            &text_outs,
            cancel,
        )?;
        for (n, t) in text_outs.iter().zip(outs) {
            from_text.insert(n.to_string(), t);
        }
    }
    let mut inputs = Vec::new();
    for c in conds {
        let t = match c.source.as_str() {
            "context_ids" => Tensor::I64(ids.clone().into_dyn()),
            "context_mask" => Tensor::I64(mask.clone().into_dyn()),
            s => from_text
                .get(s.trim_start_matches("text_decode:"))
                .cloned()
                .ok_or_else(|| {
                    Error::format(format!("conditioning source {s} was not produced"))
                })?,
        };
        inputs.push((c.input.clone(), t));
    }
    Ok(Conditioning { inputs })
}

/// Denoise a batch from its noise streams: Euler ODE steps where `noise` has no stochastic step
/// (level 0, or a CPS step to t = 0; log-prob NaN there), else its SDE or CPS step (log-probs kept).
/// The initial latents are `x0` when given, else each row's first draw from its noise stream.
/// With `sde_steps`, row i takes SDE steps only at the steps in `sde_steps[i]` (an SDE window)
/// and Euler ODE steps elsewhere (log-prob NaN there).
#[allow(clippy::too_many_arguments)]
pub fn denoise(
    model: &Model,
    params: &ParamSet,
    cond: &Conditioning,
    x0: Option<ArrayD<f32>>,
    noise_rngs: &mut [ChaCha8Rng],
    grid: &[f64],
    noise: sampler::StepNoise,
    sde_steps: Option<&[std::ops::Range<usize>]>,
    keep_trajectory: bool,
    cancel: Option<&CancelToken>,
    progress: &mut Progress<'_>,
) -> Result<(ArrayD<f32>, Option<Trajectory>)> {
    let shape = &model.image.latent_shape;
    let d: usize = shape.iter().product();
    let b = noise_rngs.len();
    let mut x = match x0 {
        Some(x0) => x0,
        None => initial_latents(&[b, shape[0], shape[1], shape[2]], noise_rngs),
    };
    let steps = grid.len() - 1;
    let t1 = grid.get(1).copied().unwrap_or(0.0);
    let mut traj = keep_trajectory.then(|| Trajectory {
        grid: grid.to_vec(),
        latents: vec![Vec::with_capacity(steps + 1); b],
        velocities: vec![Vec::with_capacity(steps); b],
        logprobs: vec![Vec::with_capacity(steps); b],
    });
    let mut z = vec![0f32; d];
    // every step runs with the same parameters and conditioning: what depends on them alone is
    // computed once, through sessions with the parameters built in (else the whole graph runs
    // every step, through such a session)
    let prepared = model.image.prepare(params, &cond.inputs, cancel)?;
    let session = match prepared {
        Some(_) => None,
        None => model.image.constant_velocity(params)?,
    };
    for j in 0..steps {
        progress.report(Stage::Denoising, j as u32, steps as u32, cancel)?;
        let (t, t_next) = (grid[j], grid[j + 1]);
        let tt = Array1::<f32>::from_elem(b, t as f32).into_dyn();
        let v = match &prepared {
            Some(p) => model
                .image
                .velocity_prepared(p, params, &x, &tt, &cond.inputs, cancel)?,
            None => model.image.velocity_with(
                session.as_deref(),
                params,
                &x,
                &tt,
                &cond.inputs,
                cancel,
            )?,
        };
        let vs = v.as_slice().expect("contiguous");
        let mut next = ArrayD::<f32>::zeros(x.raw_dim());
        {
            let xs = x.as_slice().expect("contiguous");
            let ns = next.as_slice_mut().expect("contiguous");
            let coef = noise.coefficients(t, t_next, t1);
            for (i, stream) in noise_rngs.iter_mut().enumerate() {
                let r = i * d..(i + 1) * d;
                let in_window = sde_steps.is_none_or(|w| w[i].contains(&j));
                let lp = match coef.as_ref().filter(|_| in_window) {
                    // SDE: sigma is taken at t > 0, so the last step (to t = 0) is stochastic too
                    Some(c) => {
                        rng::fill_normal(stream, &mut z);
                        sampler::sde_step(&xs[r.clone()], &vs[r.clone()], &z, c, &mut ns[r.clone()])
                    }
                    None => {
                        sampler::euler_step(
                            &xs[r.clone()],
                            &vs[r.clone()],
                            t_next - t,
                            &mut ns[r.clone()],
                        );
                        f64::NAN
                    }
                };
                if lp.is_infinite()
                    || (lp.is_nan() && coef.is_some() && in_window)
                    || ns[r.clone()].iter().any(|v| !v.is_finite())
                {
                    return Err(Error::new(
                        ErrorKind::NonFinite,
                        format!(
                            "denoising step {} of {steps} (t = {t:.4} -> {t_next:.4}) gave sample {i} \
                             non-finite latents or log-prob ({})",
                            j + 1,
                            if coef.is_some() {
                                format!("{:?} step at noise level {}: lower the noise level", noise.kind, noise.level)
                            } else {
                                "ODE step: the parameters give non-finite velocities".to_string()
                            }
                        ),
                    ));
                }
                if let Some(tr) = traj.as_mut() {
                    tr.latents[i].push(xs[r.clone()].to_vec());
                    tr.velocities[i].push(vs[r.clone()].to_vec());
                    tr.logprobs[i].push(lp);
                }
            }
        }
        x = next;
    }
    if let Some(tr) = traj.as_mut() {
        let xs = x.as_slice().expect("contiguous");
        for i in 0..b {
            tr.latents[i].push(xs[i * d..(i + 1) * d].to_vec());
        }
    }
    Ok((x, traj))
}

/// Latents [B, C, H, W] of standard normal draws, row i from `rngs[i]`.
pub fn initial_latents(shape: &[usize], rngs: &mut [ChaCha8Rng]) -> ArrayD<f32> {
    let mut x = ArrayD::<f32>::zeros(IxDyn(shape));
    let d: usize = shape[1..].iter().product();
    let flat = x.as_slice_mut().expect("contiguous");
    for (i, r) in rngs.iter_mut().enumerate() {
        rng::fill_normal(r, &mut flat[i * d..(i + 1) * d]);
    }
    x
}

/// Denoise one sample per seed (noise from each seed's noise stream) on the model's shifted grid.
/// With `initial_seeds`, sample i starts from the first draw of `initial_seeds[i]`'s noise stream
/// instead (samples that share a seed share their initial noise); its own stream then drives the
/// SDE steps only.
#[allow(clippy::too_many_arguments)]
pub fn denoise_seeded(
    model: &Model,
    params: &ParamSet,
    cond: &Conditioning,
    seeds: &[u64],
    initial_seeds: Option<&[u64]>,
    sde_steps: Option<&[std::ops::Range<usize>]>,
    steps: u32,
    noise: sampler::StepNoise,
    keep_trajectory: bool,
    cancel: Option<&CancelToken>,
    progress: &mut Progress<'_>,
) -> Result<(ArrayD<f32>, Option<Trajectory>)> {
    let streams = |seeds: &[u64]| -> Vec<ChaCha8Rng> {
        seeds
            .iter()
            .map(|&s| rng::stream(s, rng::STREAM_NOISE))
            .collect()
    };
    let mut rngs = streams(seeds);
    let grid = sampler::timestep_grid(steps as usize, model.manifest().sampler.shift);
    let x0 = initial_seeds.map(|s| {
        let shape = &model.image.latent_shape;
        initial_latents(&[s.len(), shape[0], shape[1], shape[2]], &mut streams(s))
    });
    denoise(
        model,
        params,
        cond,
        x0,
        &mut rngs,
        &grid,
        noise,
        sde_steps,
        keep_trajectory,
        cancel,
        progress,
    )
}

/// Decode latents to RGB8 images, reporting the Decoding stage before and after.
pub fn decode_images(
    model: &Model,
    latents: &ArrayD<f32>,
    cancel: Option<&CancelToken>,
    progress: &mut Progress<'_>,
) -> Result<Vec<RgbImage>> {
    progress.report(Stage::Decoding, 0, 1, cancel)?;
    let images = model.image.decode(latents, cancel)?;
    progress.report(Stage::Decoding, 1, 1, cancel)?;
    Ok(images)
}

/// Generate one sample per prompt; prompt i uses `seeds[i]`.
pub fn generate_batch(
    model: &Model,
    params: &ParamSet,
    prompts: &[&str],
    seeds: &[u64],
    p: &GenerateParams,
    cancel: Option<&CancelToken>,
    progress: &mut Progress<'_>,
) -> Result<Vec<Generation>> {
    p.validate()?;
    if prompts.is_empty() {
        return Err(Error::invalid("no prompts given"));
    }
    assert_eq!(prompts.len(), seeds.len());
    let tok = &model.tokenizer;
    let max_new = p.max_reasoning_tokens as usize;
    let reasonings: Vec<Reasoning> = if p.reasoning {
        let ids = prompts
            .iter()
            .map(|pr| tok.reasoning_prompt(pr, max_new))
            .collect::<Result<Vec<_>>>()?;
        let mut rngs: Vec<_> = seeds
            .iter()
            .map(|&s| rng::stream(s, rng::STREAM_TEXT))
            .collect();
        let settings = DecodeSettings {
            max_new_tokens: max_new,
            sampling: SamplingParams {
                temperature: p.temperature,
                top_k: p.top_k,
                top_p: p.top_p,
            },
        };
        decode_reasoning(
            &model.text,
            tok,
            params,
            &ids,
            &settings,
            &mut rngs,
            cancel,
            progress,
        )?
    } else {
        for pr in prompts {
            tok.image_context(pr, None)?;
        }
        vec![
            Reasoning {
                tokens: vec![],
                logprobs: vec![],
                truncated: false
            };
            prompts.len()
        ]
    };
    let contexts = prompts
        .iter()
        .zip(&reasonings)
        .map(|(pr, r)| tok.image_context(pr, p.reasoning.then(|| r.content(tok.end_reasoning))))
        .collect::<Result<Vec<_>>>()?;
    let cond = build_conditioning(model, params, &contexts, cancel)?;
    let (x, _) = denoise_seeded(
        model,
        params,
        &cond,
        seeds,
        None,
        None,
        p.num_steps,
        sampler::StepNoise::sde(p.noise_level as f64),
        false,
        cancel,
        progress,
    )?;
    let images = decode_images(model, &x, cancel, progress)?;
    Ok(prompts
        .iter()
        .zip(reasonings)
        .zip(images)
        .map(|((pr, r), image)| Generation {
            prompt: pr.to_string(),
            reasoning: if p.reasoning {
                tok.decode(r.content(tok.end_reasoning))
            } else {
                String::new()
            },
            reasoning_tokens: r,
            image,
        })
        .collect())
}
