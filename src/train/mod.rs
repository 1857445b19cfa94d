//! UniGRPO fine-tuning: rollouts, host rewards, group-relative advantages, GRPO on the reasoning
//! tokens and FlowGRPO (no CFG, velocity-MSE regulariser) on the denoising steps. Gradients come
//! from the packages' VJP graphs; the loss derivatives, clipping and AdamW are here.

pub mod adamw;
pub mod advantages;
mod checkpoint;
pub use checkpoint::{serialize_typed, write_atomic};
mod config;
pub mod losses;
pub mod objective;
pub mod rollout;

pub use config::{TextAggregation, TrainConfig};
pub use rollout::Rollout;

use std::sync::Arc;
use std::time::Instant;

use crate::cancel::CancelToken;
use crate::error::{Error, ErrorKind, Result};
use crate::model::Model;
use crate::package::ParamSet;
use crate::progress::{Progress, Stage};
use crate::reward::{check_rewards, Reward, Sample};
use adamw::{adamw_step, AdamWConfig, AdamWState};
use objective::{policy_terms, Grads, Mode, Terms};

/// Statistics of one trainer step (the fields of `unigrpo_step_stats`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct StepStats {
    /// Trainer steps completed, this one included.
    pub step: u64,
    pub reward_mean: f32,
    pub reward_std: f32,
    pub frac_zero_std: f32,
    pub loss: f32,
    pub text_loss: f32,
    pub image_loss: f32,
    pub velocity_mse: f32,
    pub text_kl: f32,
    pub image_kl: f32,
    pub text_clip_frac: f32,
    pub image_clip_frac: f32,
    pub approx_kl: f32,
    /// Global norm before clipping (the mean over the step's optimiser steps).
    pub grad_norm: f32,
    pub seconds: f64,
}

/// What a step computed besides its stats (rollout data for dumps, consistency figures).
pub struct StepDetails {
    pub rollout: Rollout,
    pub rewards: Vec<f32>,
    pub advantages: Vec<f32>,
    /// Max |recomputed - rollout| log-prob at the first update (text tokens, image steps).
    pub text_consistency: f64,
    pub image_consistency: f64,
}

/// A trainer: its own trainable parameters, AdamW state and step counter; the model's parameters
/// stay the frozen reference. The random state is (seed, step): sample k of step s uses the seed
/// `derive_seed(seed, s, k)`, so a resumed trainer continues bit-identically.
pub struct Trainer {
    model: Arc<Model>,
    pub config: TrainConfig,
    params: ParamSet,
    opt: AdamWState,
    step: u64,
    /// The random state's seed (restored from checkpoints; starts as `config.seed`).
    seed: u64,
}

impl Trainer {
    pub fn new(model: Arc<Model>, config: TrainConfig) -> Result<Trainer> {
        config.validate()?;
        let params = (*model.params).clone();
        Ok(Trainer {
            model,
            seed: config.seed,
            config,
            params,
            opt: AdamWState::default(),
            step: 0,
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }
    pub fn params(&self) -> &ParamSet {
        &self.params
    }
    pub fn optimizer(&self) -> &AdamWState {
        &self.opt
    }
    pub fn step_count(&self) -> u64 {
        self.step
    }

    fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.config.learning_rate as f64,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: self.config.weight_decay as f64,
            max_grad_norm: self.config.max_grad_norm as f64,
        }
    }

    /// One trainer step: a rollout of every prompt x group, the reward, `updates_per_step`
    /// optimiser steps. Any failure (reward error, cancellation, non-finite value) leaves the
    /// trainer exactly as it was.
    pub fn step(
        &mut self,
        prompts: &[&str],
        reward: &mut dyn Reward,
        cancel: Option<&CancelToken>,
        progress: &mut Progress<'_>,
    ) -> Result<StepStats> {
        self.step_detailed(prompts, reward, cancel, progress)
            .map(|(s, _)| s)
    }

    pub fn step_detailed(
        &mut self,
        prompts: &[&str],
        reward: &mut dyn Reward,
        cancel: Option<&CancelToken>,
        progress: &mut Progress<'_>,
    ) -> Result<(StepStats, StepDetails)> {
        let started = Instant::now();
        if prompts.is_empty() {
            return Err(Error::invalid("a trainer step needs at least one prompt"));
        }
        let cfg = self.config.clone();
        let model = self.model.clone();
        let g = cfg.group_size as usize;
        let n = prompts.len() * g;
        let seeds: Vec<u64> = (0..n as u64)
            .map(|k| crate::rng::derive_seed(self.seed, self.step, k))
            .collect();
        let r = rollout::rollout(
            &model,
            &self.params,
            prompts,
            &seeds,
            &cfg,
            cancel,
            progress,
        )?;

        if !progress.report(Stage::Reward, 0, 1) || cancel.is_some_and(|c| c.is_cancelled()) {
            return Err(Error::cancelled());
        }
        let samples: Vec<Sample<'_>> = (0..n)
            .map(|k| Sample {
                prompt_index: r.prompt_of[k] as u32,
                sample_index: r.index_in_group[k] as u32,
                prompt: &r.prompts[r.prompt_of[k]],
                reasoning: &r.reasoning_text[k],
                image: &r.images[k],
            })
            .collect();
        let rewards = reward.score(&samples).map_err(|e| {
            if e.kind() == ErrorKind::Callback {
                e
            } else {
                Error::new(ErrorKind::Callback, format!("the reward failed: {e}"))
            }
        })?;
        check_rewards(&rewards, n)?;
        progress.report(Stage::Reward, 1, 1);
        let (adv, zero_groups) = advantages::group_advantages(
            &rewards,
            &r.prompt_of,
            cfg.global_std,
            cfg.advantage_clip,
        );

        // Updates on copies; committed only when everything succeeded.
        let mut params = self.params.clone();
        let mut opt = self.opt.clone();
        let k = cfg.updates_per_step as usize;
        let mut total = Terms::default();
        let mut norms = Vec::with_capacity(k);
        let (mut loss_sum, mut text_sum, mut image_sum) = (0.0, 0.0, 0.0);
        let (mut text_cons, mut image_cons) = (0.0f64, 0.0f64);
        for u in 0..k {
            // share u: the rewarded samples at positions u, u + k, ... (every group is represented)
            let share: Vec<usize> = (0..n)
                .filter(|&i| i % k == u && !rewards[i].is_nan())
                .collect();
            if !progress.report(Stage::Backward, u as u32, k as u32)
                || cancel.is_some_and(|c| c.is_cancelled())
            {
                return Err(Error::cancelled());
            }
            let mode = if u == 0 {
                Mode::OnPolicy
            } else {
                Mode::Forward
            };
            let (grads, t) = policy_terms(
                &model,
                &params,
                &model.params,
                &r,
                &adv,
                &share,
                &cfg,
                mode,
                (cfg.train_text, cfg.train_image),
                cancel,
            )?;
            let loss = t.text_loss + t.image_loss;
            if !loss.is_finite() || grads.values().any(|g| g.iter().any(|x| !x.is_finite())) {
                return Err(Error::new(
                    ErrorKind::NonFinite,
                    format!(
                        "non-finite loss or gradient at update {} of step {} (loss {loss})",
                        u + 1,
                        self.step + 1
                    ),
                ));
            }
            progress.report(Stage::Optimizer, u as u32, k as u32);
            norms.push(adamw_step(
                &mut params.values,
                &grads,
                &mut opt,
                &self.adamw(),
            ));
            loss_sum += loss;
            text_sum += t.text_loss;
            image_sum += t.image_loss;
            if u == 0 {
                text_cons = t.text_consistency;
                image_cons = t.image_consistency;
            }
            total.velocity_mse += t.velocity_mse;
            total.text_kl += t.text_kl;
            total.image_kl += t.image_kl;
            total.text_clipped += t.text_clipped;
            total.text_tokens += t.text_tokens;
            total.image_clipped += t.image_clipped;
            total.image_steps += t.image_steps;
            total.kl_sum += t.kl_sum;
            total.kl_n += t.kl_n;
        }
        if params
            .values
            .values()
            .any(|p| p.iter().any(|x| !x.is_finite()))
        {
            return Err(Error::new(
                ErrorKind::NonFinite,
                "the update produced non-finite parameters",
            ));
        }
        self.params = params;
        self.opt = opt;
        self.step += 1;

        let finite: Vec<f64> = rewards
            .iter()
            .filter(|r| !r.is_nan())
            .map(|&r| r as f64)
            .collect();
        let mean = finite.iter().sum::<f64>() / finite.len() as f64;
        let std =
            (finite.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / finite.len() as f64).sqrt();
        let kf = k as f64;
        let stats = StepStats {
            step: self.step,
            reward_mean: mean as f32,
            reward_std: std as f32,
            frac_zero_std: zero_groups as f32 / prompts.len() as f32,
            loss: (loss_sum / kf) as f32,
            text_loss: (text_sum / kf) as f32,
            image_loss: (image_sum / kf) as f32,
            velocity_mse: (total.velocity_mse / kf) as f32,
            text_kl: (total.text_kl / kf) as f32,
            image_kl: (total.image_kl / kf) as f32,
            text_clip_frac: total.text_clipped as f32 / total.text_tokens.max(1) as f32,
            image_clip_frac: total.image_clipped as f32 / total.image_steps.max(1) as f32,
            approx_kl: (total.kl_sum / total.kl_n.max(1) as f64) as f32,
            grad_norm: (norms.iter().sum::<f64>() / kf) as f32,
            seconds: started.elapsed().as_secs_f64(),
        };
        Ok((
            stats,
            StepDetails {
                rollout: r,
                rewards,
                advantages: adv,
                text_consistency: text_cons,
                image_consistency: image_cons,
            },
        ))
    }

    /// The loss of a share through the FORWARD graphs at `params` (finite-difference checks), and
    /// the gradient from the VJP graphs at the same point.
    #[allow(clippy::too_many_arguments)]
    pub fn loss_and_grad(
        &self,
        params: &ParamSet,
        r: &Rollout,
        adv: &[f32],
        share: &[usize],
        text: bool,
        image: bool,
        want_grad: bool,
    ) -> Result<(f64, Grads)> {
        let mode = if want_grad {
            Mode::Forward
        } else {
            Mode::LossOnly
        };
        let (grads, t) = policy_terms(
            &self.model,
            params,
            &self.model.params,
            r,
            adv,
            share,
            &self.config,
            mode,
            (text, image),
            None,
        )?;
        Ok((t.text_loss + t.image_loss, grads))
    }

    /// Restore a state (checkpoint loading).
    fn restore(&mut self, params: ParamSet, opt: AdamWState, step: u64) {
        self.params = params;
        self.opt = opt;
        self.step = step;
    }
}
