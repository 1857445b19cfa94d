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
use crate::sampler::StepNoise;
use crate::text::{decode_reasoning, DecodeSettings, Reasoning, SamplingParams};

use super::TrainConfig;

/// Which trainer state a rollout was drawn from (the update refuses a rollout of another).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Origin {
    /// The trainer's process-unique id.
    pub trainer: u64,
    /// Trainer steps completed when it was drawn (with the parameters of then).
    pub step: u64,
    /// Drawn `ahead` steps early: its samples are those of step `step + ahead`, the update that
    /// consumes it (0 = on-policy; at most `max_staleness`).
    pub ahead: u64,
    /// The trainer's load count (a checkpoint load invalidates earlier rollouts).
    pub epoch: u64,
    /// The trainer's collective has more than one rank (its rewards' "some reward is finite"
    /// rule is then judged over the global batch at the update).
    pub data_parallel: bool,
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
    /// Per sample: untrained denoising steps that carry the velocity-MSE penalty alone
    /// (`mse_anchor_steps`), ascending; empty without anchors.
    pub anchors: Vec<Vec<usize>>,
    pub images: Vec<RgbImage>,
    /// The rollout's stochastic step (kind and noise level).
    pub noise: StepNoise,
    pub temperature: f32,
}

impl Rollout {
    /// Replace the samples of group `p` with those of `src`'s group `p` (same group size): their
    /// seeds, reasoning, contexts, trajectories, trained steps and images. The conditioning is
    /// left as it was: rebuild it from `contexts` after the last replacement.
    pub fn replace_group(&mut self, p: usize, src: &Rollout) {
        let rows = |r: &Rollout, g: usize| -> Vec<usize> {
            (0..r.len()).filter(|&k| r.prompt_of[k] == g).collect()
        };
        for (d, s) in rows(self, p).into_iter().zip(rows(src, p)) {
            self.seeds[d] = src.seeds[s];
            self.prompt_ids[d].clone_from(&src.prompt_ids[s]);
            self.reasoning[d] = src.reasoning[s].clone();
            self.reasoning_text[d].clone_from(&src.reasoning_text[s]);
            self.contexts[d].clone_from(&src.contexts[s]);
            self.traj.latents[d].clone_from(&src.traj.latents[s]);
            self.traj.velocities[d].clone_from(&src.traj.velocities[s]);
            self.traj.logprobs[d].clone_from(&src.traj.logprobs[s]);
            self.trained[d] = src.trained[s].clone();
            self.anchors[d].clone_from(&src.anchors[s]);
            self.images[d] = src.images[s].clone();
        }
    }

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
        cfg.step_noise(),
        true,
        cancel,
        progress,
    )?;
    let images = decode_images(model, &x, cancel, progress)?;
    let traj = traj.expect("trajectory kept");
    // a deterministic step (only ever the last: a CPS step to t = 0) has no log-prob and is
    // never trained
    let noise = cfg.step_noise();
    let (grid, t1) = (&traj.grid, traj.grid.get(1).copied().unwrap_or(0.0));
    let stochastic = |j: usize| noise.coefficients(grid[j], grid[j + 1], t1).is_some();
    let trained = match windows {
        Some(w) => w.to_vec(),
        None => vec![0..cfg.trained_steps(); seeds.len()],
    }
    .into_iter()
    .map(|w| match w.end.checked_sub(1) {
        Some(last) if last >= w.start && !stochastic(last) => w.start..last,
        _ => w,
    })
    .collect::<Vec<_>>();
    let anchors = seeds
        .iter()
        .zip(&trained)
        .map(|(&s, w)| anchor_steps(cfg.num_steps as usize, w, cfg.anchor_steps(), s))
        .collect();
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
        traj,
        trained,
        anchors,
        images,
        noise,
        temperature: cfg.temperature,
    })
}

/// The velocity-MSE anchors of a sample with seed `seed` (`mse_anchor_steps` = `k`): its
/// denoising steps outside `trained`, all of them when there are at most `k`, else `k` of them
/// drawn without replacement from the sample's own anchor stream; ascending.
pub fn anchor_steps(
    steps: usize,
    trained: &std::ops::Range<usize>,
    k: usize,
    seed: u64,
) -> Vec<usize> {
    let mut free: Vec<usize> = (0..steps).filter(|j| !trained.contains(j)).collect();
    if k == 0 {
        return Vec::new();
    }
    if free.len() > k {
        use rand::Rng;
        let mut r = rng::stream(seed, rng::STREAM_ANCHORS);
        // a partial Fisher-Yates shuffle: the first k places
        for a in 0..k {
            let b = r.random_range(a..free.len());
            free.swap(a, b);
        }
        free.truncate(k);
        free.sort_unstable();
    }
    free
}

#[cfg(test)]
mod tests {
    use super::anchor_steps;

    #[test]
    fn anchors_are_the_untrained_steps_or_a_seeded_draw_of_them() {
        assert_eq!(anchor_steps(10, &(0..5), 0, 7), Vec::<usize>::new());
        assert_eq!(anchor_steps(10, &(0..5), 5, 7), vec![5, 6, 7, 8, 9]);
        assert_eq!(anchor_steps(10, &(0..5), 9, 7), vec![5, 6, 7, 8, 9]);
        // an SDE window in the middle: the steps on both sides
        assert_eq!(anchor_steps(6, &(2..4), 4, 1), vec![0, 1, 4, 5]);
        // fewer than the free steps: k distinct untrained steps, the same for the same seed,
        // and not the same draw for every seed
        let draws: Vec<Vec<usize>> = (0..32).map(|s| anchor_steps(10, &(0..5), 2, s)).collect();
        for d in &draws {
            assert_eq!(d.len(), 2);
            assert!(d[0] < d[1] && d[0] >= 5 && d[1] <= 9, "{d:?}");
        }
        assert_eq!(draws[3], anchor_steps(10, &(0..5), 2, 3));
        assert!(draws.iter().any(|d| d != &draws[0]));
        // every free step is drawn by some seed
        for j in 5..10 {
            assert!(draws.iter().any(|d| d.contains(&j)), "step {j} never drawn");
        }
    }
}
