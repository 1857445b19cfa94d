//! Generation, one round: reasoning (KV-cache decoding), conditioning hand-off, flow sampling,
//! decoding to RGB. Every stage runs the whole batch in one graph call per step.

use std::collections::BTreeMap;

use ndarray::{Array1, Array2, ArrayD, IxDyn};
use rand_chacha::ChaCha8Rng;

use crate::cancel::CancelToken;
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::model::Model;
use crate::package::ParamSet;
use crate::progress::{Progress, Stage};
use crate::rng;
use crate::runtime::{Tensor, TensorView};
use crate::sampler;
use crate::text::{decode_reasoning, DecodeSettings, Reasoning, SamplingParams};

/// Generation settings; `GenerateParams::defaults` takes the model's.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    pub seed: u64,
    /// false: condition the image on the prompt alone.
    pub reasoning: bool,
    pub max_reasoning_tokens: u32,
    /// 0 = greedy.
    pub temperature: f32,
    /// 1 = off.
    pub top_p: f32,
    /// 0 = off.
    pub top_k: u32,
    /// Denoising steps.
    pub num_steps: u32,
    /// 0 = Euler ODE; > 0 = FlowGRPO SDE with this noise level.
    pub noise_level: f32,
}

impl GenerateParams {
    pub fn defaults(model: &Model) -> GenerateParams {
        let m = model.manifest();
        GenerateParams {
            seed: 0,
            reasoning: true,
            max_reasoning_tokens: m.generation.max_reasoning_tokens,
            temperature: m.generation.temperature,
            top_p: m.generation.top_p,
            top_k: m.generation.top_k,
            num_steps: m.sampler.steps,
            noise_level: m.sampler.noise_level,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.num_steps == 0 || self.num_steps > 1000 {
            return Err(Error::invalid(format!(
                "num_steps must be in 1..=1000, got {}",
                self.num_steps
            )));
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::invalid(format!(
                "temperature must be finite and >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::invalid(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        if !(self.noise_level.is_finite() && self.noise_level >= 0.0) {
            return Err(Error::invalid(format!(
                "noise_level must be finite and >= 0, got {}",
                self.noise_level
            )));
        }
        Ok(())
    }
}

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

impl Conditioning {
    pub fn views(&self) -> impl Iterator<Item = (&str, TensorView<'_>)> {
        self.inputs.iter().map(|(n, t)| (n.as_str(), t.view()))
    }
}

/// Left-pad the contexts and evaluate the manifest's hand-off sources.
pub fn build_conditioning(
    model: &Model,
    params: &ParamSet,
    contexts: &[Vec<i64>],
    cancel: Option<&CancelToken>,
) -> Result<Conditioning> {
    let b = contexts.len();
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
        let g = model.graph("text_decode")?;
        let spec = &model.manifest().text;
        let empty = ArrayD::<f32>::zeros(IxDyn(&[b, spec.num_heads, 0, spec.head_dim]));
        let past_mask = Array2::<i64>::zeros((b, 0));
        let names: Vec<String> = (0..spec.num_layers)
            .flat_map(|l| [format!("past_key.{l}"), format!("past_value.{l}")])
            .collect();
        let mut inputs = params.inputs_for(g);
        inputs.push(("input_ids", TensorView::I64(ids.view().into_dyn())));
        inputs.push((
            "past_attention_mask",
            TensorView::I64(past_mask.view().into_dyn()),
        ));
        inputs.push(("attention_mask", TensorView::I64(mask.view().into_dyn())));
        inputs.push(("position_ids", TensorView::I64(pos.view().into_dyn())));
        for n in &names {
            inputs.push((n.as_str(), TensorView::F32(empty.view())));
        }
        let outs = g.run(&inputs, &text_outs, cancel)?;
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

/// Denoise a batch from its noise streams. `noise_level` 0 = Euler ODE, else SDE (log-probs kept).
#[allow(clippy::too_many_arguments)]
pub fn denoise(
    model: &Model,
    params: &ParamSet,
    cond: &Conditioning,
    noise_rngs: &mut [ChaCha8Rng],
    grid: &[f64],
    noise_level: f64,
    keep_trajectory: bool,
    cancel: Option<&CancelToken>,
    progress: &mut Progress<'_>,
) -> Result<(ArrayD<f32>, Option<Trajectory>)> {
    let g = model.graph("velocity")?;
    let shape = &model.manifest().image.latent_shape;
    let d: usize = shape.iter().product();
    let b = noise_rngs.len();
    let mut x = ArrayD::<f32>::zeros(IxDyn(&[b, shape[0], shape[1], shape[2]]));
    {
        let flat = x.as_slice_mut().expect("contiguous");
        for (i, r) in noise_rngs.iter_mut().enumerate() {
            rng::fill_normal(r, &mut flat[i * d..(i + 1) * d]);
        }
    }
    let steps = grid.len() - 1;
    let t1 = grid.get(1).copied().unwrap_or(0.0);
    let mut traj = keep_trajectory.then(|| Trajectory {
        grid: grid.to_vec(),
        latents: vec![Vec::with_capacity(steps + 1); b],
        velocities: vec![Vec::with_capacity(steps); b],
        logprobs: vec![Vec::with_capacity(steps); b],
    });
    let mut z = vec![0f32; d];
    for j in 0..steps {
        if !progress.report(Stage::Denoising, j as u32, steps as u32)
            || cancel.is_some_and(|c| c.is_cancelled())
        {
            return Err(Error::cancelled());
        }
        let (t, t_next) = (grid[j], grid[j + 1]);
        let tt = Array1::<f32>::from_elem(b, t as f32).into_dyn();
        let mut inputs = params.inputs_for(g);
        inputs.push(("x", TensorView::F32(x.view())));
        inputs.push(("t", TensorView::F32(tt.view())));
        inputs.extend(cond.views());
        let v = g
            .run(&inputs, &["velocity"], cancel)?
            .remove(0)
            .into_f32()?;
        let vs = v.as_slice().expect("contiguous");
        let mut next = ArrayD::<f32>::zeros(x.raw_dim());
        {
            let xs = x.as_slice().expect("contiguous");
            let ns = next.as_slice_mut().expect("contiguous");
            let coef =
                (noise_level > 0.0).then(|| sampler::sde_coefficients(t, t_next, noise_level, t1));
            for (i, noise) in noise_rngs.iter_mut().enumerate() {
                let r = i * d..(i + 1) * d;
                let lp = match &coef {
                    // sigma is taken at t > 0, so the last step (to t = 0) is an SDE step too
                    Some(c) => {
                        rng::fill_normal(noise, &mut z);
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

/// Denoise one sample per seed (noise from each seed's noise stream) on the model's shifted grid.
#[allow(clippy::too_many_arguments)]
pub fn denoise_seeded(
    model: &Model,
    params: &ParamSet,
    cond: &Conditioning,
    seeds: &[u64],
    steps: u32,
    noise_level: f64,
    keep_trajectory: bool,
    cancel: Option<&CancelToken>,
    progress: &mut Progress<'_>,
) -> Result<(ArrayD<f32>, Option<Trajectory>)> {
    let mut noise: Vec<_> = seeds
        .iter()
        .map(|&s| rng::stream(s, rng::STREAM_NOISE))
        .collect();
    let grid = sampler::timestep_grid(steps as usize, model.manifest().sampler.shift);
    denoise(
        model,
        params,
        cond,
        &mut noise,
        &grid,
        noise_level,
        keep_trajectory,
        cancel,
        progress,
    )
}

/// Decode latents to RGB8 images.
pub fn decode_images(
    model: &Model,
    latents: &ArrayD<f32>,
    cancel: Option<&CancelToken>,
) -> Result<Vec<RgbImage>> {
    let g = model.graph("decoder")?;
    let img = g
        .run(
            &[("latent", TensorView::F32(latents.view()))],
            &["image"],
            cancel,
        )?
        .remove(0)
        .into_u8()?;
    let sh = img.shape().to_vec();
    let (b, h, w) = (sh[0], sh[1], sh[2]);
    let flat = img.as_slice().expect("contiguous");
    Ok((0..b)
        .map(|i| {
            RgbImage::new(
                w as u32,
                h as u32,
                flat[i * h * w * 3..(i + 1) * h * w * 3].to_vec(),
            )
        })
        .collect())
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
        decode_reasoning(model, params, &ids, &settings, &mut rngs, cancel, progress)?
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
        p.num_steps,
        p.noise_level as f64,
        false,
        cancel,
        progress,
    )?;
    if !progress.report(Stage::Decoding, 0, 1) {
        return Err(Error::cancelled());
    }
    let images = decode_images(model, &x, cancel)?;
    progress.report(Stage::Decoding, 1, 1);
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
