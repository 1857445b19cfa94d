//! The trainer in phases: `rollout` (changes nothing), `rewards` on a rollout, then the update:
//! `begin_update`, per optimiser step `gradients` and `apply`, and `commit`. `step` is exactly
//! their composition. Every phase but `commit` leaves the trainer as it was, so a step that fails
//! anywhere (reward error, cancellation, non-finite value, log-prob drift) changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::adamw::{AdamWConfig, AdamWState, Group, OptimState, ParamGroups};
use super::advantages::group_advantages;
use super::collective::{Collective, Local};
use super::objective::{Grads, Mode, Pass, Policies};
use super::rollout::{self, Origin, Rollout};
use super::update::Update;
use super::{StepStats, TrainConfig};
use crate::cancel::CancelToken;
use crate::error::{Error, ErrorKind, Result};
use crate::model::Model;
use crate::package::ParamSet;
use crate::progress::{Progress, Stage};
use crate::reward::{check_rewards, Reward, Sample};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Offset of the per-prompt seeds of group-shared initial noise (sample seeds use 0, 1, ...).
const SHARED_NOISE_BASE: u64 = 1 << 48;
/// Offset of the per-prompt seeds of random SDE window starts.
const SDE_WINDOW_BASE: u64 = 2 << 48;

/// A trainer: its own trainable parameters, AdamW state, step counter, random state and current
/// learning rates; the model's parameters stay the frozen reference. Sample k of step s uses the
/// seed `derive_seed(seed, s, k)`, so a resumed trainer continues bit-identically.
pub struct Trainer {
    pub(super) model: Arc<Model>,
    pub(super) config: TrainConfig,
    pub(super) state: OptimState,
    /// Buffers of the last update's working copy, reused by the next one.
    pub(super) scratch: Option<OptimState>,
    pub(super) groups: ParamGroups,
    /// Current learning rates of the (shared, text, image) groups.
    pub(super) rates: [f32; 3],
    pub(super) step: u64,
    /// The random state's seed (restored from checkpoints; starts as `config.seed`).
    pub(super) seed: u64,
    pub(super) id: u64,
    pub(super) epoch: u64,
    pub(super) started: bool,
    pub(super) collective: Box<dyn Collective>,
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

    /// Per sample, the SDE window of this step (None without one): `sde_window` steps from
    /// `sde_window_start`, or from a start drawn per group from (seed, step, prompt index).
    fn sde_windows(&self, n_prompts: usize) -> Option<Vec<std::ops::Range<usize>>> {
        let c = &self.config;
        let w = c.sde_window as usize;
        if w == 0 {
            return None;
        }
        let starts = c.num_steps as usize - w + 1;
        let g = c.group_size as usize;
        Some(
            (0..n_prompts * g)
                .map(|k| {
                    let s = if c.sde_window_random {
                        let d = crate::rng::derive_seed(
                            self.seed,
                            self.step,
                            SDE_WINDOW_BASE + (k / g) as u64,
                        );
                        (d % starts as u64) as usize
                    } else {
                        c.sde_window_start as usize
                    };
                    s..s + w
                })
                .collect(),
        )
    }

    pub(super) fn origin(&self) -> Origin {
        Origin {
            trainer: self.id,
            step: self.step,
            epoch: self.epoch,
        }
    }

    pub(super) fn adamw(&self) -> AdamWConfig {
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
        // group-shared initial noise: one seed per prompt (by its index in the step), apart from
        // the samples' seeds
        let initial: Option<Vec<u64>> = self.config.shared_initial_noise.then(|| {
            let g = self.config.group_size as u64;
            (0..n as u64)
                .map(|k| crate::rng::derive_seed(self.seed, self.step, SHARED_NOISE_BASE + k / g))
                .collect()
        });
        let windows = self.sde_windows(prompts.len());
        let mut r = rollout::rollout(
            &self.model,
            &self.state.params,
            prompts,
            &seeds,
            initial.as_deref(),
            windows.as_deref(),
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
