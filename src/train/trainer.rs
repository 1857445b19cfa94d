//! The trainer in phases: `rollout` (changes nothing), `rewards` on a rollout, then the update:
//! `begin_update`, per optimiser step `gradients` and `apply`, and `commit`. `step` is exactly
//! their composition. Every phase but `commit` leaves the trainer as it was, so a step that fails
//! anywhere (reward error, cancellation, non-finite value, log-prob drift) changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::adamw::{
    adamw_step, group_norm, AdamWConfig, AdamWState, Group, OptimState, ParamGroups,
};
use super::advantages::group_advantages;
use super::collective::{Collective, Local};
use super::objective::{batch, Grads, Mode, Objective, Pass, Policies, Terms};
use super::rollout::{self, Origin, Rollout};
use super::{StepStats, TrainConfig};
use crate::cancel::CancelToken;
use crate::error::{Error, ErrorKind, Result};
use crate::model::Model;
use crate::package::ParamSet;
use crate::progress::{Progress, Stage};
use crate::reward::{check_rewards, Reward, Sample};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A trainer: its own trainable parameters, AdamW state, step counter, random state and current
/// learning rates; the model's parameters stay the frozen reference. Sample k of step s uses the
/// seed `derive_seed(seed, s, k)`, so a resumed trainer continues bit-identically.
pub struct Trainer {
    model: Arc<Model>,
    config: TrainConfig,
    state: OptimState,
    /// Buffers of the last update's working copy, reused by the next one.
    scratch: Option<OptimState>,
    groups: ParamGroups,
    /// Current learning rates of the (shared, text, image) groups.
    rates: [f32; 3],
    step: u64,
    /// The random state's seed (restored from checkpoints; starts as `config.seed`).
    pub(super) seed: u64,
    id: u64,
    epoch: u64,
    started: bool,
    collective: Box<dyn Collective>,
}

/// The working state of one trainer step's optimiser steps, between `begin_update` and `commit`.
pub struct Update {
    origin: Origin,
    rewards: Vec<f32>,
    advantages: Vec<f32>,
    zero_groups: usize,
    n_prompts: usize,
    /// None until the first `apply` (which writes it from the committed state).
    state: Option<OptimState>,
    spare: Option<OptimState>,
    applied: u32,
    sums: Sums,
    started: Instant,
}

impl Update {
    pub fn advantages(&self) -> &[f32] {
        &self.advantages
    }
    pub fn rewards(&self) -> &[f32] {
        &self.rewards
    }
    /// Optimiser steps applied so far.
    pub fn applied(&self) -> u32 {
        self.applied
    }
    /// Count the step's wall time from `t` (the start of a whole `step`).
    pub fn started_at(&mut self, t: Instant) {
        self.started = t;
    }
}

#[derive(Debug, Clone, Default)]
struct Sums {
    loss: f64,
    text: f64,
    image: f64,
    terms: Terms,
    norm: f64,
    text_norm: f64,
    image_norm: f64,
    text_consistency: f64,
    image_consistency: f64,
}

impl Trainer {
    pub fn new(model: Arc<Model>, config: TrainConfig) -> Result<Trainer> {
        config.validate()?;
        let params = (*model.params).clone();
        let groups = ParamGroups::classify(
            &params.names,
            |n| model.text.consumes(n),
            |n| model.image.consumes(n),
        );
        Ok(Trainer {
            seed: config.seed,
            rates: config.group_learning_rates(),
            state: OptimState {
                params,
                opt: AdamWState::default(),
            },
            scratch: None,
            groups,
            model,
            config,
            step: 0,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            epoch: 0,
            started: false,
            collective: Box::new(Local),
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }
    pub fn params(&self) -> &ParamSet {
        &self.state.params
    }
    pub fn optimizer(&self) -> &AdamWState {
        &self.state.opt
    }
    pub fn step_count(&self) -> u64 {
        self.step
    }
    /// The process-unique id rollouts are bound to.
    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn groups(&self) -> &ParamGroups {
        &self.groups
    }
    /// Current learning rates of the (shared, text, image) parameter groups.
    pub fn learning_rates(&self) -> [f32; 3] {
        self.rates
    }

    /// For schedules: from the next optimiser step the text-only and image-only groups use these
    /// rates; 0 keeps a rate as it is; negative or non-finite is an error.
    pub fn set_learning_rate(&mut self, text: f32, image: f32) -> Result<()> {
        for (n, v) in [("text", text), ("image", image)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::invalid(format!(
                    "the {n} learning rate must be finite and >= 0 (0 keeps it), got {v}"
                )));
            }
        }
        if text > 0.0 {
            self.rates[Group::Text as usize] = text;
        }
        if image > 0.0 {
            self.rates[Group::Image as usize] = image;
        }
        Ok(())
    }

    /// Use `c` for data-parallel training; must come before the first rollout or step. World
    /// size 1 is a single process; larger worlds are not implemented in this release.
    pub fn set_collective(&mut self, c: Box<dyn Collective>) -> Result<()> {
        if self.started {
            return Err(Error::invalid(
                "the collective must be set before the trainer's first rollout or step",
            ));
        }
        if c.rank() >= c.world_size() {
            return Err(Error::invalid(format!(
                "collective rank {} is not below its world size {}",
                c.rank(),
                c.world_size()
            )));
        }
        if c.world_size() > 1 {
            return Err(Error::invalid(format!(
                "data-parallel training (world size {}) is not implemented in this release: use world size 1",
                c.world_size()
            )));
        }
        self.collective = c;
        Ok(())
    }

    pub fn collective(&self) -> &dyn Collective {
        self.collective.as_ref()
    }

    fn origin(&self) -> Origin {
        Origin {
            trainer: self.id,
            step: self.step,
            epoch: self.epoch,
        }
    }

    fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.rates.map(|r| r as f64),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: self.config.weight_decay as f64,
            max_grad_norm: self.config.max_grad_norm as f64,
        }
    }

    // ------------------------------------------------------------------ phases

    /// Phase 1: a group of `group_size` samples for every prompt, drawn exactly as the step at
    /// the trainer's current state draws them. Changes nothing in the trainer.
    pub fn rollout(
        &mut self,
        prompts: &[&str],
        cancel: Option<&CancelToken>,
        progress: &mut Progress<'_>,
    ) -> Result<Rollout> {
        if prompts.is_empty() {
            return Err(Error::invalid("a trainer step needs at least one prompt"));
        }
        self.started = true;
        let n = prompts.len() * self.config.group_size as usize;
        let seeds: Vec<u64> = (0..n as u64)
            .map(|k| crate::rng::derive_seed(self.seed, self.step, k))
            .collect();
        let mut r = rollout::rollout(
            &self.model,
            &self.state.params,
            prompts,
            &seeds,
            &self.config,
            cancel,
            progress,
        )?;
        r.origin = self.origin();
        Ok(r)
    }

    /// Phase 2: the reward of every sample of `r` (one call), checked.
    pub fn rewards(
        &self,
        r: &Rollout,
        reward: &mut dyn Reward,
        cancel: Option<&CancelToken>,
        progress: &mut Progress<'_>,
    ) -> Result<Vec<f32>> {
        progress.report(Stage::Reward, 0, 1, cancel)?;
        let samples: Vec<Sample<'_>> = (0..r.len())
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
        check_rewards(&rewards, r.len())?;
        progress.report(Stage::Reward, 1, 1, cancel)?;
        Ok(rewards)
    }

    /// Group-relative advantages of a rollout's rewards and the number of groups with zero spread.
    pub fn advantages(&self, r: &Rollout, rewards: &[f32]) -> (Vec<f32>, usize) {
        group_advantages(
            rewards,
            &r.prompt_of,
            self.config.global_std,
            self.config.advantage_clip,
        )
    }

    /// Phase 3a: check that `r` belongs to this trainer's current state and `rewards` fit it,
    /// and prepare the optimiser steps. Changes nothing.
    pub fn begin_update(&mut self, r: &Rollout, rewards: &[f32]) -> Result<Update> {
        let o = self.origin();
        if r.origin.trainer != o.trainer {
            return Err(Error::invalid("the rollout was made by another trainer"));
        }
        if r.origin.epoch != o.epoch {
            return Err(Error::invalid(
                "the rollout was made before the trainer loaded a checkpoint: roll out again",
            ));
        }
        if r.origin.step != o.step {
            return Err(Error::invalid(format!(
                "stale rollout: it was made at step {}, the trainer is at step {}",
                r.origin.step, o.step
            )));
        }
        check_rewards(rewards, r.len()).map_err(|e| Error::invalid(e.message().to_string()))?;
        let (advantages, zero_groups) = self.advantages(r, rewards);
        Ok(Update {
            origin: o,
            rewards: rewards.to_vec(),
            advantages,
            zero_groups,
            n_prompts: r.prompts.len(),
            state: None,
            spare: self.scratch.take(),
            applied: 0,
            sums: Sums::default(),
            started: Instant::now(),
        })
    }

    /// The parameters an update's next optimiser step starts from.
    fn current<'a>(&'a self, up: &'a Update) -> &'a OptimState {
        up.state.as_ref().unwrap_or(&self.state)
    }

    /// Phase 3b: the gradients and loss terms of optimiser step `u` (its share of `r`) at the
    /// update's current parameters. Changes nothing.
    pub fn gradients(
        &self,
        up: &Update,
        r: &Rollout,
        u: u32,
        cancel: Option<&CancelToken>,
    ) -> Result<(Grads, Terms)> {
        let k = self.config.updates_per_step;
        if u >= k {
            return Err(Error::invalid(format!("update {u} of {k}: out of range")));
        }
        let share = batch::update_share(&up.rewards, k as usize, u as usize);
        let obj = self.objective(r, &up.advantages);
        let pass = Pass {
            params: &self.current(up).params,
            share: &share,
            mode: if u == 0 {
                Mode::OnPolicy
            } else {
                Mode::Forward
            },
            cancel,
        };
        obj.evaluate(
            &pass,
            Policies {
                text: self.config.train_text,
                image: self.config.train_image,
            },
        )
    }

    fn objective<'a>(&'a self, r: &'a Rollout, adv: &'a [f32]) -> Objective<'a> {
        Objective {
            model: &self.model,
            reference: &self.model.params,
            rollout: r,
            advantages: adv,
            config: &self.config,
        }
    }

    /// Phase 3c: one optimiser step on the update's working copy (the committed state is only
    /// read). Fails on a non-finite loss or gradient, and at the first optimiser step when the
    /// recomputed log-probs drift from the rollout's beyond `max_text_drift`/`max_image_drift`.
    pub fn apply(&self, up: &mut Update, grads: &Grads, terms: &Terms) -> Result<()> {
        let (u, k) = (up.applied, self.config.updates_per_step);
        if u >= k {
            return Err(Error::invalid(format!(
                "all {k} optimiser steps of this update are applied"
            )));
        }
        let loss = terms.loss();
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
        if u == 0 {
            let (tb, ib) = (
                self.config.max_text_drift as f64,
                self.config.image_drift_bound(),
            );
            if terms.text_consistency > tb || terms.image_consistency > ib {
                return Err(Error::runtime(format!(
                    "the first update's recomputed log-probs drift from the rollout's: text {:.3e} (bound {tb:.1e}), \
                     image {:.3e} (bound {ib:.1e}); the rollout and the update do not compute the same policy \
                     (max_text_drift / max_image_drift set the bounds)",
                    terms.text_consistency, terms.image_consistency
                )));
            }
        }
        let cfg = self.adamw();
        let norm = match up.state.as_mut() {
            Some(s) => adamw_step(None, s, grads, &self.groups, &cfg),
            None => {
                let mut dst = up.spare.take().unwrap_or_default();
                let n = adamw_step(Some(&self.state), &mut dst, grads, &self.groups, &cfg);
                up.state = Some(dst);
                n
            }
        };
        let s = &mut up.sums;
        s.loss += loss;
        s.text += terms.text_loss;
        s.image += terms.image_loss;
        s.norm += norm;
        s.text_norm += group_norm(grads, &self.groups, Group::Text);
        s.image_norm += group_norm(grads, &self.groups, Group::Image);
        if u == 0 {
            s.text_consistency = terms.text_consistency;
            s.image_consistency = terms.image_consistency;
        }
        let t = &mut s.terms;
        t.velocity_mse += terms.velocity_mse;
        t.text_kl += terms.text_kl;
        t.image_kl += terms.image_kl;
        t.text_clipped += terms.text_clipped;
        t.text_tokens += terms.text_tokens;
        t.image_clipped += terms.image_clipped;
        t.image_steps += terms.image_steps;
        t.kl_sum += terms.kl_sum;
        t.kl_n += terms.kl_n;
        up.applied += 1;
        Ok(())
    }

    /// Phase 3d: make the update's result the trainer's state (all optimiser steps applied and
    /// every parameter finite), count the step, and return its statistics.
    pub fn commit(&mut self, mut up: Update) -> Result<StepStats> {
        let k = self.config.updates_per_step;
        if up.origin != self.origin() {
            return Err(Error::invalid(
                "the update belongs to another trainer state",
            ));
        }
        if up.applied != k {
            return Err(Error::invalid(format!(
                "{} of {k} optimiser steps applied: nothing committed",
                up.applied
            )));
        }
        let new = up.state.take().expect("applied at least once");
        if new
            .params
            .values
            .values()
            .any(|p| p.iter().any(|x| !x.is_finite()))
        {
            self.scratch = Some(new);
            return Err(Error::new(
                ErrorKind::NonFinite,
                "the update produced non-finite parameters",
            ));
        }
        self.scratch = Some(std::mem::replace(&mut self.state, new));
        self.step += 1;
        Ok(self.stats(&up))
    }

    /// Hand an unfinished update's buffers back for reuse (dropping it is also correct).
    pub fn abort(&mut self, mut up: Update) {
        self.scratch = up.state.take().or(up.spare.take());
    }

    fn stats(&self, up: &Update) -> StepStats {
        let finite: Vec<f64> = up
            .rewards
            .iter()
            .filter(|r| !r.is_nan())
            .map(|&r| r as f64)
            .collect();
        let mean = finite.iter().sum::<f64>() / finite.len() as f64;
        let std =
            (finite.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / finite.len() as f64).sqrt();
        let kf = self.config.updates_per_step as f64;
        let (s, t) = (&up.sums, &up.sums.terms);
        StepStats {
            step: self.step,
            reward_mean: mean as f32,
            reward_std: std as f32,
            frac_zero_std: up.zero_groups as f32 / up.n_prompts as f32,
            loss: (s.loss / kf) as f32,
            text_loss: (s.text / kf) as f32,
            image_loss: (s.image / kf) as f32,
            velocity_mse: (t.velocity_mse / kf) as f32,
            text_kl: (t.text_kl / kf) as f32,
            image_kl: (t.image_kl / kf) as f32,
            text_clip_frac: t.text_clipped as f32 / t.text_tokens.max(1) as f32,
            image_clip_frac: t.image_clipped as f32 / t.image_steps.max(1) as f32,
            approx_kl: (t.kl_sum / t.kl_n.max(1) as f64) as f32,
            grad_norm: (s.norm / kf) as f32,
            seconds: up.started.elapsed().as_secs_f64(),
            text_grad_norm: (s.text_norm / kf) as f32,
            image_grad_norm: (s.image_norm / kf) as f32,
            text_consistency: s.text_consistency as f32,
            image_consistency: s.image_consistency as f32,
        }
    }

    // ------------------------------------------------------------------ compositions

    /// Phase 3: every optimiser step of the trainer step `r` belongs to, on `rewards`.
    pub fn update(
        &mut self,
        r: &Rollout,
        rewards: &[f32],
        cancel: Option<&CancelToken>,
        progress: &mut Progress<'_>,
    ) -> Result<StepStats> {
        let up = self.begin_update(r, rewards)?;
        self.finish(up, r, cancel, progress)
    }

    fn finish(
        &mut self,
        mut up: Update,
        r: &Rollout,
        cancel: Option<&CancelToken>,
        progress: &mut Progress<'_>,
    ) -> Result<StepStats> {
        let k = self.config.updates_per_step;
        let mut run = || -> Result<()> {
            for u in 0..k {
                progress.report(Stage::Backward, u, k, cancel)?;
                let (grads, terms) = self.gradients(&up, r, u, cancel)?;
                progress.report(Stage::Optimizer, u, k, cancel)?;
                self.apply(&mut up, &grads, &terms)?;
            }
            Ok(())
        };
        match run() {
            Ok(()) => self.commit(up),
            Err(e) => {
                self.abort(up);
                Err(e)
            }
        }
    }

    /// One trainer step: rollout, rewards, update. Any failure leaves the trainer as it was.
    pub fn step(
        &mut self,
        prompts: &[&str],
        reward: &mut dyn Reward,
        cancel: Option<&CancelToken>,
        progress: &mut Progress<'_>,
    ) -> Result<StepStats> {
        let started = Instant::now();
        let r = self.rollout(prompts, cancel, progress)?;
        let rewards = self.rewards(&r, reward, cancel, progress)?;
        let mut up = self.begin_update(&r, &rewards)?;
        up.started_at(started);
        self.finish(up, &r, cancel, progress)
    }

    /// The loss of a share through the FORWARD graphs at `params` (finite-difference checks), and
    /// the gradient from the VJP graphs at the same point when `want_grad`.
    pub fn loss_and_grad(
        &self,
        params: &ParamSet,
        r: &Rollout,
        adv: &[f32],
        share: &[usize],
        which: Policies,
        want_grad: bool,
    ) -> Result<(f64, Grads)> {
        let pass = Pass {
            params,
            share,
            mode: if want_grad {
                Mode::Forward
            } else {
                Mode::LossOnly
            },
            cancel: None,
        };
        let (grads, t) = self.objective(r, adv).evaluate(&pass, which)?;
        Ok((t.loss(), grads))
    }

    /// Restore a state (checkpoint loading); rollouts made before it become invalid.
    pub(super) fn restore(&mut self, state: OptimState, step: u64, seed: u64, rates: [f32; 3]) {
        self.state = state;
        self.step = step;
        self.seed = seed;
        self.rates = rates;
        self.scratch = None;
        self.epoch += 1;
    }
}
