//! Training configuration: every field of `unigrpo_train_params`, defaults from the model.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Model;

/// Normaliser of the text GRPO loss over an optimiser step's share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TextAggregation {
    /// Sum over every reasoning token of the share divided by their number (TRL's default).
    #[default]
    Dapo,
    /// Per-sequence mean of the token terms, then the mean over the share's samples
    /// (DeepSeekMath): every sequence weighs the same whatever its length.
    Grpo,
}

impl TextAggregation {
    /// The weight of each token of sample `i`, given the token counts of the share's samples.
    pub fn token_weights(self, lengths: &[usize]) -> Vec<f64> {
        match self {
            TextAggregation::Dapo => {
                let n: usize = lengths.iter().sum();
                vec![if n == 0 { 0.0 } else { 1.0 / n as f64 }; lengths.len()]
            }
            TextAggregation::Grpo => {
                let m = lengths.iter().filter(|&&l| l > 0).count().max(1) as f64;
                lengths
                    .iter()
                    .map(|&l| if l == 0 { 0.0 } else { 1.0 / (l as f64 * m) })
                    .collect()
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Samples per prompt.
    pub group_size: u32,
    /// Optimiser steps per rollout batch (the clip acts from the second).
    pub updates_per_step: u32,
    /// Samples per VJP call; 0 = all of an update's share.
    pub micro_batch_size: u32,
    pub learning_rate: f32,
    pub weight_decay: f32,
    pub max_grad_norm: f32,
    /// Advantage std over the whole step instead of the group.
    pub global_std: bool,
    pub advantage_clip: f32,
    pub text_clip_range: f32,
    pub image_clip_range: f32,
    pub velocity_mse_weight: f32,
    pub text_kl_weight: f32,
    /// How the text GRPO term is normalised (algorithm.md section 4).
    #[serde(default)]
    pub text_aggregation: TextAggregation,
    pub image_kl_weight: f32,
    pub train_text: bool,
    pub train_image: bool,
    /// Rollout denoising steps.
    pub num_steps: u32,
    pub noise_level: f32,
    pub train_timestep_fraction: f32,
    pub max_reasoning_tokens: u32,
    pub temperature: f32,
    pub seed: u64,
}

impl TrainConfig {
    pub fn defaults(model: &Model) -> TrainConfig {
        let t = &model.manifest().training;
        TrainConfig {
            group_size: t.group_size,
            updates_per_step: t.updates_per_step,
            micro_batch_size: 0,
            learning_rate: t.learning_rate,
            weight_decay: t.weight_decay,
            max_grad_norm: t.max_grad_norm,
            global_std: false,
            advantage_clip: t.advantage_clip,
            text_clip_range: t.text_clip_range,
            image_clip_range: t.image_clip_range,
            velocity_mse_weight: t.velocity_mse_weight,
            text_kl_weight: 0.0,
            text_aggregation: TextAggregation::Dapo,
            image_kl_weight: 0.0,
            train_text: true,
            train_image: true,
            num_steps: t.rollout_steps,
            noise_level: t.noise_level,
            train_timestep_fraction: t.train_timestep_fraction,
            max_reasoning_tokens: model.manifest().generation.max_reasoning_tokens,
            temperature: t.temperature,
            seed: 0,
        }
    }

    /// Number of trained denoising steps: the first floor(f T), at least 1.
    pub fn trained_steps(&self) -> usize {
        ((self.train_timestep_fraction as f64 * self.num_steps as f64).floor() as usize)
            .clamp(1, self.num_steps as usize)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(m));
        if self.group_size < 2 {
            return bad(format!(
                "group_size must be at least 2 (group-relative advantages), got {}",
                self.group_size
            ));
        }
        if self.updates_per_step == 0 || self.updates_per_step > self.group_size {
            return bad(format!(
                "updates_per_step must be in 1..=group_size, got {}",
                self.updates_per_step
            ));
        }
        if self.num_steps < 1 || self.num_steps > 1000 {
            return bad(format!(
                "num_steps must be in 1..=1000, got {}",
                self.num_steps
            ));
        }
        if !(self.noise_level > 0.0 && self.noise_level.is_finite()) {
            return bad(format!(
                "rollouts need a positive noise_level (SDE), got {}",
                self.noise_level
            ));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad(format!(
                "rollouts sample the reasoning: temperature must be > 0, got {}",
                self.temperature
            ));
        }
        if !(self.train_timestep_fraction > 0.0 && self.train_timestep_fraction <= 1.0) {
            return bad(format!(
                "train_timestep_fraction must be in (0, 1], got {}",
                self.train_timestep_fraction
            ));
        }
        if !self.train_text && !self.train_image {
            return bad("train_text and train_image are both off: nothing to train".into());
        }
        for (name, v) in [
            ("learning_rate", self.learning_rate),
            ("weight_decay", self.weight_decay),
            ("max_grad_norm", self.max_grad_norm),
            ("advantage_clip", self.advantage_clip),
            ("text_clip_range", self.text_clip_range),
            ("image_clip_range", self.image_clip_range),
            ("velocity_mse_weight", self.velocity_mse_weight),
            ("text_kl_weight", self.text_kl_weight),
            ("image_kl_weight", self.image_kl_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("{name} must be finite and >= 0, got {v}"));
            }
        }
        if self.learning_rate <= 0.0 || self.advantage_clip <= 0.0 {
            return bad("learning_rate and advantage_clip must be > 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::TextAggregation;

    #[test]
    fn token_weights_by_hand() {
        // lengths 2, 3, 5 (and an empty sequence): dapo 1/10 each token; grpo 1/(3 len)
        let w = TextAggregation::Dapo.token_weights(&[2, 3, 5, 0]);
        assert_eq!(w, vec![0.1; 4]);
        let w = TextAggregation::Grpo.token_weights(&[2, 3, 5, 0]);
        let want = [1.0 / 6.0, 1.0 / 9.0, 1.0 / 15.0, 0.0];
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-15, "{w:?}");
        }
        // each sequence's weights sum to 1/3: sequences count equally
        for (l, x) in [2.0, 3.0, 5.0].iter().zip(&w) {
            assert!((l * x - 1.0 / 3.0).abs() < 1e-15);
        }
    }
}
