//! Rollouts: for each prompt a group of samples, reasoning sampled at the rollout temperature
//! (top-k and top-p off), then the image by the SDE sampler with per-step log-probs and no
//! classifier-free guidance. Everything the losses need is kept.

use crate::cancel::CancelToken;
use crate::error::Result;
use crate::generate::{
    build_conditioning, decode_images, denoise_seeded, Conditioning, Trajectory,
};
use crate::image::RgbImage;
use crate::model::Model;
use crate::package::ParamSet;
use crate::progress::Progress;
use crate::rng;
use crate::text::{decode_reasoning, DecodeSettings, Reasoning, SamplingParams};

use super::TrainConfig;

/// Which trainer state a rollout was drawn from (the update refuses a rollout of another).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Origin {
    /// The trainer's process-unique id.
    pub trainer: u64,
    /// Trainer steps completed when it was drawn.
    pub step: u64,
    /// The trainer's load count (a checkpoint load invalidates earlier rollouts).
    pub epoch: u64,
}

pub struct Rollout {
    pub origin: Origin,
    pub prompts: Vec<String>,
    /// Per sample: its prompt's index, its index in the group, its seed.
    pub prompt_of: Vec<usize>,
    pub index_in_group: Vec<usize>,
    pub seeds: Vec<u64>,
    /// Per sample: the text model's prompt ids and the sampled reasoning.
    pub prompt_ids: Vec<Vec<i64>>,
    pub reasoning: Vec<Reasoning>,
    pub reasoning_text: Vec<String>,
    /// Per sample: the image context's token ids (template with prompt and reasoning).
    pub contexts: Vec<Vec<i64>>,
    /// The velocity graph's conditioning as the rollout computed it (rollout parameters).
    pub cond: Conditioning,
    pub traj: Trajectory,
    /// Per sample: the denoising steps the loss trains (the SDE window, or the first
    /// floor(f T) steps without one).
    pub trained: Vec<std::ops::Range<usize>>,
    pub images: Vec<RgbImage>,
    pub noise_level: f64,
    pub temperature: f32,
}

impl Rollout {
    pub fn len(&self) -> usize {
        self.prompt_of.len()
    }
    pub fn is_empty(&self) -> bool {
        self.prompt_of.is_empty()
    }
}

/// Roll out `group_size` samples for every prompt; sample k uses `seeds[k]`, and starts from the
/// initial noise of `initial_seeds[k]` when given (shared within a group); with `windows`, sample
/// k takes SDE steps only in `windows[k]` (ODE elsewhere) and is trained there.
#[allow(clippy::too_many_arguments)]
pub fn rollout(
    model: &Model,
    params: &ParamSet,
    prompts: &[&str],
    seeds: &[u64],
    initial_seeds: Option<&[u64]>,
    windows: Option<&[std::ops::Range<usize>]>,
    cfg: &TrainConfig,
    cancel: Option<&CancelToken>,
    progress: &mut Progress<'_>,
) -> Result<Rollout> {
    let g = cfg.group_size as usize;
    let tok = &model.tokenizer;
    let max_new = cfg.max_reasoning_tokens as usize;
    let per_prompt = prompts
        .iter()
        .map(|p| tok.reasoning_prompt(p, max_new))
        .collect::<Result<Vec<_>>>()?;
    let prompt_of: Vec<usize> = (0..prompts.len() * g).map(|k| k / g).collect();
    let prompt_ids: Vec<Vec<i64>> = prompt_of.iter().map(|&i| per_prompt[i].clone()).collect();
    let mut text_rngs: Vec<_> = seeds
        .iter()
        .map(|&s| rng::stream(s, rng::STREAM_TEXT))
        .collect();
    let settings = DecodeSettings {
        max_new_tokens: max_new,
        sampling: SamplingParams {
            temperature: cfg.temperature,
            top_k: 0,
            top_p: 1.0,
        },
    };
    let reasoning = decode_reasoning(
        &model.text,
        tok,
        params,
        &prompt_ids,
        &settings,
        &mut text_rngs,
        cancel,
        progress,
    )?;
    let contexts = prompt_of
        .iter()
        .zip(&reasoning)
        .map(|(&i, r)| tok.image_context(prompts[i], Some(r.content(tok.end_reasoning))))
        .collect::<Result<Vec<_>>>()?;
    let cond = build_conditioning(model, params, &contexts, cancel)?;
    let (x, traj) = denoise_seeded(
        model,
        params,
        &cond,
        seeds,
        initial_seeds,
        windows,
        cfg.num_steps,
        cfg.noise_level as f64,
        true,
        cancel,
        progress,
    )?;
    let images = decode_images(model, &x, cancel, progress)?;
    let reasoning_text = reasoning
        .iter()
        .map(|r| tok.decode(r.content(tok.end_reasoning)))
        .collect();
    Ok(Rollout {
        origin: Origin::default(),
        prompts: prompts.iter().map(|s| s.to_string()).collect(),
        index_in_group: (0..prompt_of.len()).map(|k| k % g).collect(),
        prompt_of,
        seeds: seeds.to_vec(),
        prompt_ids,
        reasoning,
        reasoning_text,
        contexts,
        cond,
        traj: traj.expect("trajectory kept"),
        trained: match windows {
            Some(w) => w.to_vec(),
            None => vec![0..cfg.trained_steps(); seeds.len()],
        },
        images,
        noise_level: cfg.noise_level as f64,
        temperature: cfg.temperature,
    })
}
