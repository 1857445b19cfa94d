//! The training options: `TrainConfig`, `unigrpo_train_params` and `unigrpo train`'s flags.

use super::{option_struct, Range, Value};
use crate::error::{Error, Result};
use crate::package::Manifest;

/// The largest learning rate any group accepts: AdamW moves every parameter by about the
/// learning rate per step, so a rate above 1 only ever destroys a model (`--lr 1e30` trained and
/// exported parameters near 1e30).
pub const MAX_LEARNING_RATE: f32 = 1.0;

super::choice_enum! {
    /// Normaliser of the text GRPO loss over an optimiser step's share.
    pub enum TextAggregation {
        /// Sum over every reasoning token of the share divided by their number (TRL's default).
        Dapo = "dapo",
        /// Per-sequence mean of the token terms, then the mean over the share's samples
        /// (DeepSeekMath): every sequence weighs the same whatever its length.
        Grpo = "grpo",
    }
}

super::choice_enum! {
    /// Dynamic sampling (DAPO) of the groups whose rewards are all equal (zero advantage).
    pub enum DynamicSampling {
        /// They stay in every normaliser.
        Off = "off",
        /// They leave the policy terms' normalisers (their regularisers stay).
        Skip = "skip",
        /// The trainer step rolls their prompts out again and asks the reward for the
        /// replacements only (at most `resample_rounds` rounds), then skips what stays flat.
        Resample = "resample",
    }
}

super::choice_enum! {
    /// The stochastic denoising step of the rollouts (algorithm.md section 3).
    pub enum SdeType {
        /// FlowGRPO's SDE step: sigma_t = a sqrt(t / (1 - t)), std sigma_t sqrt(-dt).
        Sde = "sde",
        /// Coefficient-preserving sampling (arXiv 2509.05952): x_next = (1 - t') x0_hat +
        /// t' cos(a pi / 2) eps_hat + t' sin(a pi / 2) z; the last step is deterministic.
        Cps = "cps",
    }
}

impl TextAggregation {
    // the normalisers of algorithm.md section 4
    /// The weight of each token of sample `i`, given the token counts of the share's samples.
    pub fn token_weights(self, lengths: &[usize]) -> Vec<f64> {
        let (tokens, seqs) = Self::counts(lengths);
        self.token_weights_over(lengths, tokens, seqs)
    }

    /// The normalisers' counts of a share: its tokens and its non-empty sequences.
    pub fn counts(lengths: &[usize]) -> (usize, usize) {
        (
            lengths.iter().sum(),
            lengths.iter().filter(|&&l| l > 0).count(),
        )
    }

    /// `token_weights` with the normalisers' counts given (data-parallel: summed over the
    /// ranks' shares): `tokens` for dapo, `seqs` for grpo.
    pub fn token_weights_over(self, lengths: &[usize], tokens: usize, seqs: usize) -> Vec<f64> {
        match self {
            TextAggregation::Dapo => {
                vec![
                    if tokens == 0 {
                        0.0
                    } else {
                        1.0 / tokens as f64
                    };
                    lengths.len()
                ]
            }
            TextAggregation::Grpo => {
                let m = seqs.max(1) as f64;
                lengths
                    .iter()
                    .map(|&l| if l == 0 { 0.0 } else { 1.0 / (l as f64 * m) })
                    .collect()
            }
        }
    }
}

option_struct! {
    /// Everything a trainer is configured with (`unigrpo_train_params`).
    #[derive(Debug, Clone, PartialEq)]
    pub struct TrainConfig, table TRAIN_OPTIONS, defaults from Manifest {
        /// Samples per prompt (the group of group-relative advantages).
        group_size: u32 { ord: 1, flag: "group-size", default: |m: &Manifest| m.training.group_size,
            range: Range::closed(2.0, 65536.0), legacy: None }
        /// Optimiser steps per rollout batch (k; the clip acts from the second).
        updates_per_step: u32 { ord: 2, flag: "updates-per-step", default: |m: &Manifest| m.training.updates_per_step,
            range: Range::closed(1.0, 65536.0), legacy: None }
        /// Samples per VJP call; 0 = all of an update's share.
        micro_batch_size: u32 { ord: 3, flag: "micro-batch", default: |_: &Manifest| 0,
            range: Range::at_least(0.0), legacy: None }
        /// AdamW learning rate (the shared parameter group's; the default of the other two).
        learning_rate: f32 { ord: 4, flag: "lr", default: |m: &Manifest| m.training.learning_rate,
            range: Range::open_closed(0.0, MAX_LEARNING_RATE as f64), legacy: None }
        /// AdamW decoupled weight decay.
        weight_decay: f32 { ord: 5, flag: "weight-decay", default: |m: &Manifest| m.training.weight_decay,
            range: Range::at_least(0.0), legacy: None }
        /// Global gradient-norm clip before AdamW (0 = off).
        max_grad_norm: f32 { ord: 6, flag: "max-grad-norm", default: |m: &Manifest| m.training.max_grad_norm,
            range: Range::at_least(0.0), legacy: None }
        /// Advantage std over the whole step instead of the group.
        global_std: bool { ord: 7, flag: "global-std", default: |_: &Manifest| false,
            range: Range::any(), legacy: None }
        /// |A| clip of the advantages.
        advantage_clip: f32 { ord: 8, flag: "advantage-clip", default: |m: &Manifest| m.training.advantage_clip,
            range: Range::above(0.0), legacy: None }
        /// Text ratio clip range eps_txt.
        text_clip_range: f32 { ord: 9, flag: "text-clip-range", default: |m: &Manifest| m.training.text_clip_range,
            range: Range::at_least(0.0), legacy: None }
        /// Image (per denoising step) ratio clip range eps_img.
        image_clip_range: f32 { ord: 10, flag: "image-clip-range", default: |m: &Manifest| m.training.image_clip_range,
            range: Range::at_least(0.0), legacy: None }
        /// Weight lambda_v of the velocity-MSE penalty against the reference model.
        velocity_mse_weight: f32 { ord: 11, flag: "velocity-mse-weight", default: |m: &Manifest| m.training.velocity_mse_weight,
            range: Range::at_least(0.0), legacy: None }
        /// Weight beta_txt of the text k3 KL against the reference model.
        text_kl_weight: f32 { ord: 12, flag: "text-kl-weight", default: |m: &Manifest| m.training.text_kl_weight,
            range: Range::at_least(0.0), legacy: None }
        /// Weight beta_img of FlowGRPO's latent KL (for ablations).
        image_kl_weight: f32 { ord: 13, flag: "image-kl-weight", default: |_: &Manifest| 0.0,
            range: Range::at_least(0.0), legacy: None }
        /// Train the reasoning (text GRPO).
        train_text: bool { ord: 14, flag: "train-text", default: |_: &Manifest| true,
            range: Range::any(), legacy: None }
        /// Train the denoising (FlowGRPO).
        train_image: bool { ord: 15, flag: "train-image", default: |_: &Manifest| true,
            range: Range::any(), legacy: None }
        /// Rollout denoising steps T.
        num_steps: u32 { ord: 16, flag: "rollout-steps", default: |m: &Manifest| m.training.rollout_steps,
            range: Range::closed(1.0, 1000.0), legacy: None }
        /// SDE noise level a of the rollouts (> 0).
        noise_level: f32 { ord: 17, flag: "noise-level", default: |m: &Manifest| m.training.noise_level,
            range: Range::open_closed(0.0, 10.0), legacy: None }
        /// Fraction f of the denoising steps trained (the first floor(f T)).
        train_timestep_fraction: f32 { ord: 18, flag: "timestep-fraction", default: |m: &Manifest| m.training.train_timestep_fraction,
            range: Range::open_closed(0.0, 1.0), legacy: None }
        /// Longest reasoning of a rollout, in tokens.
        max_reasoning_tokens: u32 { ord: 19, flag: "max-reasoning-tokens", default: |m: &Manifest| m.generation.max_reasoning_tokens,
            range: Range::closed(1.0, 65536.0), legacy: None }
        /// Reasoning sampling temperature of the rollouts (> 0; top-k and top-p are off).
        temperature: f32 { ord: 20, flag: "temperature", default: |m: &Manifest| m.training.temperature,
            range: Range::open_closed(0.0, 100.0), legacy: None }
        /// Seed of every random draw of the trainer (0 is a seed like any other).
        seed: u64 { ord: 21, flag: "seed", default: |_: &Manifest| 0,
            range: Range::any(), legacy: None }
        /// Learning rate of the text-only parameter group; 0 = learning_rate.
        text_learning_rate: f32 { ord: 24, flag: "text-lr", default: |m: &Manifest| m.training.text_learning_rate,
            range: Range::closed(0.0, MAX_LEARNING_RATE as f64), legacy: Some(Value::F32(0.0)) }
        /// Learning rate of the image-only parameter group; 0 = learning_rate.
        image_learning_rate: f32 { ord: 25, flag: "image-lr", default: |_: &Manifest| 0.0,
            range: Range::closed(0.0, MAX_LEARNING_RATE as f64), legacy: Some(Value::F32(0.0)) }
        /// Normaliser of the text loss: dapo (over the update's tokens) or grpo (per sequence).
        text_aggregation: TextAggregation { ord: 26, flag: "text-aggregation", default: |_: &Manifest| TextAggregation::Dapo,
            range: Range::any(), legacy: Some(Value::Choice("dapo")) }
        /// Largest allowed |recomputed - rollout| token log-prob at the first update (a larger
        /// drift fails the step: the rollout and the update disagree).
        max_text_drift: f32 { ord: 27, flag: "max-text-drift", default: |_: &Manifest| 1e-4,
            range: Range::above(0.0), legacy: Some(Value::F32(1e-4)) }
        /// Largest allowed |recomputed - rollout| denoising-step log-prob at the first update;
        /// 0 = min(1e-5, 0.1 x image_clip_range).
        max_image_drift: f32 { ord: 28, flag: "max-image-drift", default: |_: &Manifest| 0.0,
            range: Range::at_least(0.0), legacy: Some(Value::F32(0.0)) }
        /// Every sample of a group starts from the same initial noise (DanceGRPO), so a group's
        /// reward spread comes from the policy's own SDE noise and reasoning; SDE noise and text
        /// sampling stay per sample.
        shared_initial_noise: bool { ord: 29, flag: "shared-initial-noise", default: |_: &Manifest| false,
            range: Range::any(), legacy: Some(Value::Bool(false)) }
        /// SDE window (Flow-GRPO-Fast, MixGRPO): this many consecutive denoising steps are SDE
        /// steps and trained, the rest ODE; 0 = every step SDE and the first floor(f T) trained.
        sde_window: u32 { ord: 30, flag: "sde-window", default: |_: &Manifest| 0,
            range: Range::closed(0.0, 1000.0), legacy: Some(Value::U32(0)) }
        /// First step of the SDE window (0-based; with sde_window > 0 and sde_window_random off).
        sde_window_start: u32 { ord: 31, flag: "sde-window-start", default: |_: &Manifest| 0,
            range: Range::closed(0.0, 1000.0), legacy: Some(Value::U32(0)) }
        /// Draw the SDE window's start per group from (seed, step, prompt index).
        sde_window_random: bool { ord: 32, flag: "sde-window-random", default: |_: &Manifest| false,
            range: Range::any(), legacy: Some(Value::Bool(false)) }
        /// Clip each parameter group's gradient (text, image, shared) to max_grad_norm on its
        /// own instead of their joint norm (one policy's large gradient no longer shrinks the
        /// other's step).
        clip_per_group: bool { ord: 33, flag: "clip-per-group", default: |_: &Manifest| false,
            range: Range::any(), legacy: Some(Value::Bool(false)) }
        /// Adaptive velocity-MSE weight: the weight is trainer state, starts at
        /// velocity_mse_weight and after each step doubles when the step's velocity MSE exceeds
        /// 1.5 x this target and halves below target / 1.5 (PPO's adaptive KL rule); 0 = a fixed
        /// weight.
        velocity_mse_target: f32 { ord: 34, flag: "velocity-mse-target", default: |_: &Manifest| 0.0,
            range: Range::at_least(0.0), legacy: Some(Value::F32(0.0)) }
        /// Dynamic sampling of zero-spread groups: off, skip or resample (DAPO).
        dynamic_sampling: DynamicSampling { ord: 35, flag: "dynamic-sampling", default: |_: &Manifest| DynamicSampling::Off,
            range: Range::any(), legacy: Some(Value::Choice("off")) }
        /// Most rounds of re-sampling per trainer step (dynamic_sampling = resample).
        resample_rounds: u32 { ord: 36, flag: "resample-rounds", default: |_: &Manifest| 2,
            range: Range::closed(0.0, 64.0), legacy: Some(Value::U32(2)) }
        /// Stochastic step of the rollouts: sde (FlowGRPO) or cps (coefficient-preserving).
        sde_type: SdeType { ord: 37, flag: "sde-type", default: |_: &Manifest| SdeType::Sde,
            range: Range::any(), legacy: Some(Value::Choice("sde")) }
        /// Rewards that arrive late: the most optimiser steps a rollout may be older than the
        /// update that consumes it (0 = on-policy, each rollout drawn after the previous update).
        max_staleness: u32 { ord: 38, flag: "max-staleness", default: |_: &Manifest| 0,
            range: Range::closed(0.0, 64.0), legacy: Some(Value::U32(0)) }
        /// Velocity-MSE anchors: this many untrained denoising steps of each sample (all of them
        /// when no more remain, else drawn per sample from its seed) carry the velocity-MSE
        /// penalty too, with no policy term, so the steps the policy gradient never reaches are
        /// held to the reference as well; 0 = the penalty on the trained steps only. Inactive
        /// without a velocity MSE or with the image policy frozen.
        mse_anchor_steps: u32 { ord: 39, flag: "mse-anchor-steps", default: |m: &Manifest| m.training.mse_anchor_steps,
            range: Range::closed(0.0, 1000.0), legacy: Some(Value::U32(0)) }
    }
}

impl TrainConfig {
    /// Number of trained denoising steps: the first floor(f T), at least 1.
    pub fn trained_steps(&self) -> usize {
        ((self.train_timestep_fraction as f64 * self.num_steps as f64).floor() as usize)
            .clamp(1, self.num_steps as usize)
    }

    /// Velocity-MSE anchors per sample in effect: `mse_anchor_steps` while the image policy
    /// trains with a velocity MSE, else none (so `--velocity-mse-weight 0` or `--no-train-image`
    /// need not also turn the anchors off).
    pub fn anchor_steps(&self) -> usize {
        if self.train_image && self.velocity_mse_weight > 0.0 {
            self.mse_anchor_steps as usize
        } else {
            0
        }
    }
    /// The rollouts' stochastic step.
    pub fn step_noise(&self) -> crate::sampler::StepNoise {
        crate::sampler::StepNoise {
            level: self.noise_level as f64,
            kind: self.sde_type,
        }
    }

    /// The image drift bound in use (`max_image_drift`, or its automatic value).
    pub fn image_drift_bound(&self) -> f64 {
        if self.max_image_drift > 0.0 {
            self.max_image_drift as f64
        } else {
            (1e-5f64).min(0.1 * self.image_clip_range as f64)
        }
    }

    /// The learning rates of the (shared, text, image) parameter groups.
    pub fn group_learning_rates(&self) -> [f32; 3] {
        let or = |v: f32| if v > 0.0 { v } else { self.learning_rate };
        [
            self.learning_rate,
            or(self.text_learning_rate),
            or(self.image_learning_rate),
        ]
    }

    /// Ranges from the table, then the rules that tie options together.
    pub fn validate(&self) -> Result<()> {
        super::check_ranges(TRAIN_OPTIONS, |n| self.get(n), "training option")?;
        if self.updates_per_step > self.group_size {
            return Err(Error::invalid(format!(
                "updates_per_step must be in 1..=group_size ({}), got {}",
                self.group_size, self.updates_per_step
            )));
        }
        if self.sde_window > 0
            && (self.sde_window > self.num_steps
                || (!self.sde_window_random
                    && self.sde_window_start + self.sde_window > self.num_steps))
        {
            return Err(Error::invalid(format!(
                "the SDE window of {} steps from step {} does not fit in {} rollout steps",
                self.sde_window, self.sde_window_start, self.num_steps
            )));
        }
        if self.sde_type == SdeType::Cps && self.noise_level > 1.0 {
            return Err(Error::invalid(format!(
                "noise_level {} with sde_type cps: the CPS noise share is sin(a pi / 2), a must be in (0, 1]",
                self.noise_level
            )));
        }
        if self.velocity_mse_target > 0.0 && self.velocity_mse_weight <= 0.0 {
            return Err(Error::invalid(
                "velocity_mse_target needs a velocity_mse_weight > 0 to start the adaptive weight from",
            ));
        }
        if !self.train_text && !self.train_image {
            return Err(Error::invalid(
                "train_text and train_image are both off: nothing to train",
            ));
        }
        Ok(())
    }
}
