//! The trainer in phases: `rollout` (changes nothing), `rewards` on a rollout, then the update:
//! `begin_update`, per optimiser step `gradients` and `apply`, and `commit`. `step` is exactly
//! their composition. Every phase but `commit` leaves the trainer as it was, so a step that fails
//! anywhere (reward error, cancellation, non-finite value, log-prob drift) changes nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::adamw::{AdamWConfig, AdamWState, Group, OptimState, ParamGroups};
use super::advantages::group_advantages;
use super::collective::{Collective, Local};
use super::objective::{Grads, Mode, Pass, Policies};
use super::rollout::{self, Origin, Rollout};
use super::update::Update;
use super::{DynamicSampling, StepStats, TrainConfig};
use crate::cancel::CancelToken;
use crate::error::{Error, ErrorKind, Result};
use crate::model::Model;
use crate::options::MAX_LEARNING_RATE;
use crate::package::ParamSet;
use crate::progress::{Progress, Stage};
use crate::reward::{check_reward_values, check_rewards, Reward, Sample};

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
    /// The velocity-MSE weight in use: `velocity_mse_weight`, adapted after every step when
    /// `velocity_mse_target` > 0 (checkpointed).
    pub(super) mse_weight: f32,
    pub(super) step: u64,
    /// The random state's seed (restored from checkpoints; starts as `config.seed`).
    pub(super) seed: u64,
    pub(super) id: u64,
    pub(super) epoch: u64,
    pub(super) started: bool,
    /// The data-parallel collective (Local = one process), behind a lock so the phases that
    /// only read the trainer can reduce; `rank` and `world` are its fixed answers.
    pub(super) collective: Mutex<Box<dyn Collective>>,
    pub(super) rank: u32,
    pub(super) world: u32,
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
            mse_weight: config.velocity_mse_weight,
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
            collective: Mutex::new(Box::new(Local)),
            rank: 0,
            world: 1,
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
    /// The velocity-MSE weight the next step uses (adaptive with `velocity_mse_target`).
    pub fn velocity_mse_weight(&self) -> f32 {
        self.mse_weight
    }

    /// For schedules: from the next optimiser step the text-only and image-only groups use these
    /// rates; 0 keeps a rate as it is; negative or non-finite is an error.
    pub fn set_learning_rate(&mut self, text: f32, image: f32) -> Result<()> {
        for (n, v) in [("text", text), ("image", image)] {
            if !(v.is_finite() && (0.0..=MAX_LEARNING_RATE).contains(&v)) {
                return Err(Error::invalid(format!(
                    "the {n} learning rate must be finite and in [0, {MAX_LEARNING_RATE}] (0 keeps it), got {v}"
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

    /// Use `c` for data-parallel training (docs/training.md, "Data-parallel training"); must come
    /// before the first rollout or step. World size 1 is a single process and never reduces.
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
        if c.world_size() > 1 && self.config.dynamic_sampling == DynamicSampling::Resample {
            return Err(Error::invalid(
                "dynamic_sampling resample is off with a collective (ranks would call the reward \
                 different numbers of times): use skip",
            ));
        }
        self.rank = c.rank();
        self.world = c.world_size();
        self.collective = Mutex::new(c);
        Ok(())
    }

    /// This trainer's rank and the world size of its collective (0 and 1 in one process).
    pub fn rank(&self) -> u32 {
        self.rank
    }
    pub fn world_size(&self) -> u32 {
        self.world
    }

    /// Sum `buf` over the ranks (never called with world size 1).
    pub(super) fn reduce(&self, buf: &mut [f32], what: &str) -> Result<()> {
        let mut c = self.collective.lock().unwrap_or_else(|e| e.into_inner());
        super::collective::reduce(c.as_mut(), buf, what)
    }

    /// With W > 1 ranks: sum `payload` over the ranks together with each rank's outcome (W
    /// slots appended: 0 = success, else its error kind + 1), so that a failure on one rank
    /// fails every rank alike. The rank that failed returns its own error; the others an error
    /// of the same kind naming the first failing rank. The payload is the reduced one after.
    pub(super) fn agree(
        &self,
        local: Result<()>,
        payload: &mut Vec<f32>,
        what: &str,
    ) -> Result<()> {
        let (n, w) = (payload.len(), self.world as usize);
        payload.resize(n + w, 0.0);
        if let Err(e) = &local {
            payload[n + self.rank as usize] = e.kind() as u32 as f32 + 1.0;
        }
        let reduced = self.reduce(payload, what);
        let flags = payload.split_off(n);
        local?;
        reduced?;
        match flags.iter().position(|&f| f != 0.0) {
            None => Ok(()),
            Some(r) => Err(Error::new(
                ErrorKind::from_code(flags[r] as u32 - 1).unwrap_or(ErrorKind::Runtime),
                format!(
                    "rank {r} of {w} failed {what} (every rank fails the step alike and changes nothing)"
                ),
            )),
        }
    }

    /// The global index of this rank's first prompt: the global batch is the ranks' prompt
    /// lists concatenated in rank order (every rank has `n_prompts`).
    pub(super) fn prompt_offset(&self, n_prompts: usize) -> u64 {
        self.rank as u64 * n_prompts as u64
    }

    /// Per sample of the groups of prompts `which` (round `round`), the SDE window (None without
    /// one): `sde_window` steps from `sde_window_start`, or from a start drawn per group from
    /// (seed, step, round and global prompt index).
    fn sde_windows(
        &self,
        which: &[usize],
        n_prompts: usize,
        round: u64,
        ahead: u64,
    ) -> Option<Vec<std::ops::Range<usize>>> {
        let c = &self.config;
        let w = c.sde_window as usize;
        if w == 0 {
            return None;
        }
        let starts = c.num_steps as usize - w + 1;
        let g = c.group_size as usize;
        Some(
            which
                .iter()
                .flat_map(|&p| {
                    let s = if c.sde_window_random {
                        let gp = self.prompt_offset(n_prompts) + p as u64;
                        let key = SDE_WINDOW_BASE + round * n_prompts as u64 + gp;
                        (crate::rng::derive_seed(self.seed, self.step + ahead, key) % starts as u64)
                            as usize
                    } else {
                        c.sde_window_start as usize
                    };
                    std::iter::repeat_n(s..s + w, g)
                })
                .collect(),
        )
    }

    pub(super) fn origin(&self) -> Origin {
        Origin {
            trainer: self.id,
            step: self.step,
            ahead: 0,
            epoch: self.epoch,
            data_parallel: self.world > 1,
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
            clip_per_group: self.config.clip_per_group,
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
        self.rollout_ahead(prompts, 0, cancel, progress)
    }

    /// Phase 1 for rewards that arrive late: the rollout of the step `ahead` steps after the
    /// trainer's current one (its samples exactly those that step draws, its parameters the
    /// current ones), at most `max_staleness` ahead; `ahead` 0 is `rollout`. The update of that
    /// step consumes it (docs/training.md, "Rewards that arrive late"). Changes nothing.
    pub fn rollout_ahead(
        &mut self,
        prompts: &[&str],
        ahead: u64,
        cancel: Option<&CancelToken>,
        progress: &mut Progress<'_>,
    ) -> Result<Rollout> {
        if prompts.is_empty() {
            return Err(Error::invalid("a trainer step needs at least one prompt"));
        }
        if ahead > self.config.max_staleness as u64 {
            return Err(Error::invalid(format!(
                "a rollout {ahead} steps ahead is beyond max_staleness {}",
                self.config.max_staleness
            )));
        }
        self.started = true;
        let all: Vec<usize> = (0..prompts.len()).collect();
        self.draw(prompts, &all, 0, ahead, cancel, progress)
    }

    /// The groups of the prompts `which` (indices into `prompts`, which the rollout's
    /// `prompt_of` keeps) in round `round`: 0 = the step's own samples (sample k = p g + i of
    /// prompt p has seed `derive_seed(seed, step, k)`), resampling rounds seeded past them
    /// (`round n_samples + k`); group-shared initial noise and random SDE windows likewise per
    /// (round, prompt).
    fn draw(
        &self,
        prompts: &[&str],
        which: &[usize],
        round: u64,
        ahead: u64,
        cancel: Option<&CancelToken>,
        progress: &mut Progress<'_>,
    ) -> Result<Rollout> {
        let g = self.config.group_size as u64;
        let (n_prompts, n) = (prompts.len() as u64, prompts.len() as u64 * g);
        let step = self.step + ahead;
        let key = |base: u64, k: u64| crate::rng::derive_seed(self.seed, step, base + k);
        // seeds by global prompt index (data-parallel: this rank's prompts start at the offset)
        let offset = self.prompt_offset(prompts.len());
        let samples = || {
            which.iter().flat_map(move |&p| {
                let gp = offset + p as u64;
                (0..g).map(move |i| (gp, gp * g + i))
            })
        };
        let seeds: Vec<u64> = samples().map(|(_, k)| key(round * n, k)).collect();
        // group-shared initial noise: one seed per (round, prompt), apart from the samples' seeds
        let initial: Option<Vec<u64>> = self.config.shared_initial_noise.then(|| {
            samples()
                .map(|(p, _)| key(SHARED_NOISE_BASE + round * n_prompts, p))
                .collect()
        });
        let windows = self.sde_windows(which, prompts.len(), round, ahead);
        let chosen: Vec<&str> = which.iter().map(|&p| prompts[p]).collect();
        let mut r = rollout::rollout(
            &self.model,
            &self.state.params,
            &chosen,
            &seeds,
            initial.as_deref(),
            windows.as_deref(),
            &self.config,
            cancel,
            progress,
        )?;
        r.prompts = prompts.iter().map(|s| s.to_string()).collect();
        for p in r.prompt_of.iter_mut() {
            *p = which[*p];
        }
        r.origin = self.origin();
        r.origin.ahead = ahead;
        Ok(r)
    }

    /// Dynamic sampling's resampling (DAPO): for at most `resample_rounds` rounds, roll the
    /// prompts whose group's rewards all agree out again (seeded past the step's samples), ask
    /// the reward for the replacements only, and take a replacement group that has a spread.
    /// Returns the number of groups replaced; the conditioning is rebuilt when any was.
    fn resample(
        &self,
        prompts: &[&str],
        r: &mut Rollout,
        rewards: &mut [f32],
        reward: &mut dyn Reward,
        cancel: Option<&CancelToken>,
        progress: &mut Progress<'_>,
    ) -> Result<u32> {
        if self.world > 1 {
            return Err(Error::invalid(
                "dynamic_sampling resample is off with a collective (ranks would call the reward \
                 different numbers of times): use skip",
            ));
        }
        let mut replaced = 0u32;
        for round in 1..=self.config.resample_rounds as u64 {
            let (_, flat) = self.advantages(r, rewards);
            let which: Vec<usize> = (0..prompts.len()).filter(|&p| flat[p]).collect();
            if which.is_empty() {
                break;
            }
            let sub = self.draw(prompts, &which, round, 0, cancel, progress)?;
            let sub_rewards = self.rewards(&sub, reward, cancel, progress)?;
            let (_, sub_flat) = self.advantages(&sub, &sub_rewards);
            for &p in &which {
                if sub_flat[p] {
                    continue;
                }
                r.replace_group(p, &sub);
                let (dst, src) = (
                    (0..r.len()).filter(|&k| r.prompt_of[k] == p),
                    (0..sub.len()).filter(|&k| sub.prompt_of[k] == p),
                );
                for (d, s) in dst.zip(src) {
                    rewards[d] = sub_rewards[s];
                }
                replaced += 1;
            }
        }
        if replaced > 0 {
            r.cond = crate::generate::build_conditioning(
                &self.model,
                &self.state.params,
                &r.contexts,
                cancel,
            )?;
        }
        Ok(replaced)
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
        let rewards = score_rollout(r, reward)?;
        progress.report(Stage::Reward, 1, 1, cancel)?;
        Ok(rewards)
    }

    /// Group-relative advantages of a rollout's rewards, and per prompt whether its group's
    /// rewards all agree (zero spread).
    pub fn advantages(&self, r: &Rollout, rewards: &[f32]) -> (Vec<f32>, Vec<bool>) {
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
        // data-parallel, a failure or cancellation between two reductions is carried to the
        // next one (the next optimiser step's gradient reduction, or the commit's), so every
        // rank makes the same reductions and fails alike
        let mut pending: Result<()> = Ok(());
        let mut run = || -> Result<()> {
            for u in 0..k {
                let before = pending
                    .clone()
                    .and_then(|()| progress.report(Stage::Backward, u, k, cancel));
                pending = Ok(());
                let (grads, terms) = self.gradients_after(before, &up, r, u, cancel)?;
                let reported = progress.report(Stage::Optimizer, u, k, cancel);
                if self.world == 1 {
                    reported?;
                } else {
                    pending = reported;
                }
                self.apply(&mut up, &grads, &terms)?;
            }
            Ok(())
        };
        let res = run();
        match res {
            Ok(()) => self.commit_after(pending, up),
            Err(e) => {
                self.abort(up);
                Err(e)
            }
        }
    }

    /// One trainer step: rollout, rewards (with dynamic sampling's resampling rounds), update.
    /// Any failure leaves the trainer as it was.
    pub fn step(
        &mut self,
        prompts: &[&str],
        reward: &mut dyn Reward,
        cancel: Option<&CancelToken>,
        progress: &mut Progress<'_>,
    ) -> Result<StepStats> {
        let started = Instant::now();
        let rolled = self.rollout(prompts, cancel, progress).and_then(|r| {
            let rewards = self.rewards(&r, reward, cancel, progress)?;
            Ok((r, rewards))
        });
        let (mut r, mut rewards) = match rolled {
            Ok(x) => x,
            // data-parallel, the other ranks learn of the failure at the update's agreement
            Err(e) => return Err(self.fail_update(e)),
        };
        let resampled = match self.config.dynamic_sampling {
            DynamicSampling::Resample => {
                self.resample(prompts, &mut r, &mut rewards, reward, cancel, progress)?
            }
            _ => 0,
        };
        let mut up = self.begin_update(&r, &rewards)?;
        up.set_resampled(resampled);
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
        let (grads, t) = self.objective(r, adv, &[], None).evaluate(&pass, which)?;
        Ok((t.loss(), grads))
    }

    /// Restore a state (checkpoint loading); rollouts made before it become invalid.
    pub(super) fn restore(
        &mut self,
        state: OptimState,
        step: u64,
        seed: u64,
        rates: [f32; 3],
        mse_weight: f32,
    ) {
        self.state = state;
        self.step = step;
        self.seed = seed;
        self.rates = rates;
        self.mse_weight = mse_weight;
        self.scratch = None;
        self.epoch += 1;
    }
}

/// The reward of every sample of `r` (one call), checked: one per sample, none infinite, and
/// (one process) some finite; a data-parallel rollout's "some finite" is judged at the update.
/// Needs only the rollout, so it may run on another thread than the trainer's.
pub fn score_rollout(r: &Rollout, reward: &mut dyn Reward) -> Result<Vec<f32>> {
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
        if matches!(e.kind(), ErrorKind::Callback | ErrorKind::Cancelled) {
            e
        } else {
            Error::new(ErrorKind::Callback, format!("the reward failed: {e}"))
        }
    })?;
    if r.origin.data_parallel {
        check_reward_values(&rewards, r.len())?;
    } else {
        check_rewards(&rewards, r.len())?;
    }
    Ok(rewards)
}
