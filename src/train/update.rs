//! Phase 3 of a trainer step, the update: `begin_update` (checks the rollout belongs to the
//! trainer's state), per optimiser step `gradients` (at the working parameters) and `apply` (AdamW
//! on a working copy; the committed state is only read), and `commit`. Nothing but `commit`
//! changes the trainer, so a failure anywhere leaves it as it was; the working copy's buffers are
//! reused from one step to the next instead of cloning the state.

use std::time::Instant;

use super::adamw::{adamw_step, Group, OptimState};
use super::advantages::{deviation_sum, finite_sum, group_advantages_with};
use super::objective::{batch, Grads, Mode, Objective, Pass, Policies, ShareCounts, Terms};
use super::rollout::{Origin, Rollout};
use super::{DynamicSampling, StepStats, Trainer};
use crate::cancel::CancelToken;
use crate::error::{Error, ErrorKind, Result};
use crate::package::ParamSet;
use crate::reward::{check_reward_values, check_rewards};

/// The working state of one trainer step's optimiser steps, between `begin_update` and `commit`.
pub struct Update {
    origin: Origin,
    rewards: Vec<f32>,
    advantages: Vec<f32>,
    /// Per prompt: its group's rewards all agree.
    zero_spread: Vec<bool>,
    /// Per prompt: its group leaves the policy normalisers (dynamic sampling).
    skipped: Vec<bool>,
    n_prompts: usize,
    /// None until the first `apply` (which writes it from the committed state).
    state: Option<OptimState>,
    spare: Option<OptimState>,
    applied: u32,
    /// Groups replaced by dynamic sampling's resampling before this update.
    resampled: u32,
    sums: Sums,
    started: Instant,
    /// Data-parallel: per optimiser step, the normalisers' counts summed over the ranks.
    counts: Vec<ShareCounts>,
    /// Data-parallel: the global batch's rewards and groups.
    global: Option<GlobalBatch>,
    /// The rollout was drawn with older parameters (rewards that arrived late): its first
    /// optimiser step runs the current forward and skips the consistency check.
    stale: bool,
}

/// The global batch of a data-parallel update, from the agreement reduction.
#[derive(Debug, Clone, Copy)]
struct GlobalBatch {
    reward_mean: f64,
    reward_std: f64,
    zero_spread: usize,
    prompts: usize,
}

impl Update {
    pub fn advantages(&self) -> &[f32] {
        &self.advantages
    }
    pub fn rewards(&self) -> &[f32] {
        &self.rewards
    }
    /// Record how many groups dynamic sampling replaced before this update (for the stats).
    pub fn set_resampled(&mut self, n: u32) {
        self.resampled = n;
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
    shared_norm: f64,
    text_consistency: f64,
    image_consistency: f64,
}

impl Trainer {
    /// Phase 3a: check that `r` belongs to this trainer's current state and `rewards` fit it,
    /// and prepare the optimiser steps. Changes nothing.
    /// Data-parallel (W > 1), every rank's begin_update makes the update's agreement
    /// reduction: success flags, the rewarded samples' count and sum, the zero-spread groups,
    /// the prompts and every optimiser step's normaliser counts; then the squared deviations
    /// from the global mean (the stats' std and `global_std`'s).
    pub fn begin_update(&mut self, r: &Rollout, rewards: &[f32]) -> Result<Update> {
        let local = self.prepare_update(r, rewards);
        if self.world == 1 {
            return local;
        }
        let k = self.config.updates_per_step as usize;
        let mut buf = vec![0f32; 4 + ShareCounts::LEN * k];
        if let Ok(up) = &local {
            let (sum, n) = finite_sum(&up.rewards);
            buf[0] = n as f32;
            buf[1] = sum as f32;
            buf[2] = up.zero_spread.iter().filter(|&&z| z).count() as f32;
            buf[3] = up.n_prompts as f32;
            let obj = self.objective(r, &up.advantages, &up.skipped, None);
            for u in 0..k {
                let share = self.share(&up.rewards, u);
                let c = obj.share_counts(&share).to_f32();
                buf[4 + u * ShareCounts::LEN..][..ShareCounts::LEN].copy_from_slice(&c);
            }
        }
        let status = local.as_ref().map(|_| ()).map_err(Error::clone);
        self.agree(status, &mut buf, "the update's agreement")?;
        let mut up = local?;
        let n = buf[0].round() as usize;
        if n == 0 {
            return Err(Error::invalid(
                "no sample of the global batch (every rank's) has a reward (all NaN)",
            ));
        }
        let mean = buf[1] as f64 / n as f64;
        let mut dev = [deviation_sum(&up.rewards, mean) as f32];
        self.reduce(&mut dev, "the rewards' deviations")?;
        let std = (dev[0] as f64 / n as f64).sqrt();
        if self.config.global_std {
            let (adv, _) = group_advantages_with(
                &up.rewards,
                &r.prompt_of,
                Some(std),
                self.config.advantage_clip,
            );
            up.advantages = adv;
        }
        up.counts = (0..k)
            .map(|u| ShareCounts::from_f32(&buf[4 + u * ShareCounts::LEN..][..ShareCounts::LEN]))
            .collect();
        up.global = Some(GlobalBatch {
            reward_mean: mean,
            reward_std: std,
            zero_spread: buf[2].round() as usize,
            prompts: buf[3].round() as usize,
        });
        Ok(up)
    }

    /// Data-parallel, a rank that fails before its update (its rollout, its reward) still makes
    /// the update's agreement reduction, with its failure, so the other ranks fail alike.
    /// Returns `e`. With one process, returns `e` at once.
    pub fn fail_update(&self, e: Error) -> Error {
        if self.world > 1 {
            let k = self.config.updates_per_step as usize;
            let mut buf = vec![0f32; 4 + ShareCounts::LEN * k];
            let _ = self.agree(Err(e.clone()), &mut buf, "the update's agreement");
        }
        e
    }

    /// The samples of optimiser step `u`'s share, chosen by global sample index.
    fn share(&self, rewards: &[f32], u: usize) -> Vec<usize> {
        let k = self.config.updates_per_step as usize;
        let offset = self.prompt_offset(rewards.len()) as usize;
        batch::update_share(rewards, k, u, offset)
    }

    fn prepare_update(&mut self, r: &Rollout, rewards: &[f32]) -> Result<Update> {
        let o = self.origin();
        if r.origin.trainer != o.trainer {
            return Err(Error::invalid("the rollout was made by another trainer"));
        }
        if r.origin.epoch != o.epoch {
            return Err(Error::invalid(
                "the rollout was made before the trainer loaded a checkpoint: roll out again",
            ));
        }
        // the rollout drew the samples of step origin.step + ahead, with the parameters of
        // origin.step; it belongs to that step's update, at most max_staleness steps later
        let target = r.origin.step + r.origin.ahead;
        let staleness = o.step.saturating_sub(r.origin.step);
        if target != o.step || r.origin.step > o.step {
            return Err(Error::invalid(format!(
                "stale rollout: it was made at step {} for step {}, the trainer is at step {}",
                r.origin.step, target, o.step
            )));
        }
        if staleness > self.config.max_staleness as u64 {
            return Err(Error::invalid(format!(
                "stale rollout: it was made at step {}, {staleness} steps before the trainer's \
                 step {} (max_staleness {})",
                r.origin.step, o.step, self.config.max_staleness
            )));
        }
        if self.world > 1 {
            check_reward_values(rewards, r.len())
        } else {
            check_rewards(rewards, r.len())
        }
        .map_err(|e| Error::invalid(e.message().to_string()))?;
        let (advantages, zero_spread) = self.advantages(r, rewards);
        let skipped = match self.config.dynamic_sampling {
            DynamicSampling::Off => Vec::new(),
            DynamicSampling::Skip | DynamicSampling::Resample => zero_spread.clone(),
        };
        Ok(Update {
            origin: o,
            rewards: rewards.to_vec(),
            advantages,
            zero_spread,
            skipped,
            n_prompts: r.prompts.len(),
            state: None,
            spare: self.scratch.take(),
            applied: 0,
            resampled: 0,
            sums: Sums::default(),
            started: Instant::now(),
            counts: Vec::new(),
            global: None,
            stale: staleness > 0,
        })
    }

    /// The parameters an update's next optimiser step starts from.
    fn current<'a>(&'a self, up: &'a Update) -> &'a OptimState {
        up.state.as_ref().unwrap_or(&self.state)
    }

    /// Phase 3b: the gradients and loss terms of optimiser step `u` (its share of `r`) at the
    /// update's current parameters. Changes nothing.
    /// Data-parallel, the result is every rank's sum (one reduction per optimiser step: the
    /// flattened gradient, its terms and the ranks' outcomes), the same on every rank.
    pub fn gradients(
        &self,
        up: &Update,
        r: &Rollout,
        u: u32,
        cancel: Option<&CancelToken>,
    ) -> Result<(Grads, Terms)> {
        self.gradients_after(Ok(()), up, r, u, cancel)
    }

    /// `gradients`, unless `before` (a failure or cancellation since the last reduction) is an
    /// error: then that error, which data-parallel the other ranks learn of in the reduction.
    pub(super) fn gradients_after(
        &self,
        before: Result<()>,
        up: &Update,
        r: &Rollout,
        u: u32,
        cancel: Option<&CancelToken>,
    ) -> Result<(Grads, Terms)> {
        let local = before.and_then(|()| self.local_gradients(up, r, u, cancel));
        if self.world == 1 {
            return local;
        }
        self.reduce_gradients(up, local)
    }

    fn local_gradients(
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
        let share = self.share(&up.rewards, u as usize);
        let obj = self.objective(
            r,
            &up.advantages,
            &up.skipped,
            up.counts.get(u as usize).copied(),
        );
        let pass = Pass {
            params: &self.current(up).params,
            share: &share,
            mode: if u == 0 && !up.stale {
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

    /// The sum over the ranks of one optimiser step's gradients and terms (`local` is this
    /// rank's, or its failure). Layout: per trainable tensor (name order) a presence flag and
    /// its values, then the terms' sums and counts, then each rank's consistency (text, image)
    /// in its own slot (the maximum is taken after).
    fn reduce_gradients(
        &self,
        up: &Update,
        local: Result<(Grads, Terms)>,
    ) -> Result<(Grads, Terms)> {
        let params = &self.current(up).params.values;
        let w = self.world as usize;
        let len: usize = params.values().map(|p| 1 + p.len()).sum();
        let mut buf = vec![0f32; len + TERM_SLOTS + 2 * w];
        if let Ok((grads, terms)) = &local {
            let mut at = 0;
            for (name, p) in params {
                if let Some(g) = grads.get(name) {
                    buf[at] = 1.0;
                    for (b, x) in buf[at + 1..at + 1 + p.len()].iter_mut().zip(g.iter()) {
                        *b = *x as f32;
                    }
                }
                at += 1 + p.len();
            }
            buf[len..len + TERM_SLOTS].copy_from_slice(&term_slots(terms));
            buf[len + TERM_SLOTS + self.rank as usize] = terms.text_consistency as f32;
            buf[len + TERM_SLOTS + w + self.rank as usize] = terms.image_consistency as f32;
        }
        let status = local.as_ref().map(|_| ()).map_err(Error::clone);
        self.agree(status, &mut buf, "an optimiser step's gradient reduction")?;
        let mut grads = Grads::new();
        let mut at = 0;
        for (name, p) in params {
            if buf[at] != 0.0 {
                let v: Vec<f64> = buf[at + 1..at + 1 + p.len()]
                    .iter()
                    .map(|&x| x as f64)
                    .collect();
                let g = ndarray::ArrayD::from_shape_vec(p.raw_dim(), v)
                    .map_err(|e| Error::runtime(format!("gradient of {name}: {e}")))?;
                grads.insert(name.clone(), g);
            }
            at += 1 + p.len();
        }
        let mut terms = terms_of_slots(&buf[len..len + TERM_SLOTS]);
        let cons = &buf[len + TERM_SLOTS..];
        terms.text_consistency = cons[..w].iter().fold(0f64, |m, &x| m.max(x as f64));
        terms.image_consistency = cons[w..].iter().fold(0f64, |m, &x| m.max(x as f64));
        Ok((grads, terms))
    }

    pub(super) fn objective<'a>(
        &'a self,
        r: &'a Rollout,
        adv: &'a [f32],
        skipped: &'a [bool],
        counts: Option<ShareCounts>,
    ) -> Objective<'a> {
        Objective {
            model: &self.model,
            reference: &self.model.params,
            rollout: r,
            advantages: adv,
            config: &self.config,
            velocity_mse_weight: self.mse_weight as f64,
            skipped,
            counts,
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
        if u == 0 && !up.stale {
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
        s.norm += norm.global;
        s.text_norm += norm.groups[Group::Text as usize];
        s.image_norm += norm.groups[Group::Image as usize];
        s.shared_norm += norm.groups[Group::Shared as usize];
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
    /// Data-parallel, the commit's agreement reduction compares a hash of the new parameters
    /// across the ranks: a divergence is an error on every rank, and nothing is committed.
    pub fn commit(&mut self, up: Update) -> Result<StepStats> {
        self.commit_after(Ok(()), up)
    }

    /// `commit`, unless `before` (a failure or cancellation since the last reduction) is an
    /// error: then nothing is committed on any rank.
    pub(super) fn commit_after(&mut self, before: Result<()>, mut up: Update) -> Result<StepStats> {
        let k = self.config.updates_per_step;
        let check = || -> Result<()> {
            before?;
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
            Ok(())
        };
        let checked = check();
        if self.world > 1 {
            let w = self.world as usize;
            let mut buf = vec![0f32; 4 * w];
            if let (Ok(()), Some(s)) = (&checked, &up.state) {
                let h = params_hash(&s.params);
                for j in 0..4 {
                    buf[4 * self.rank as usize + j] = ((h >> (16 * j)) & 0xffff) as f32;
                }
            }
            let agreed = self.agree(checked, &mut buf, "the commit's parameter check");
            if let Err(e) = agreed {
                self.abort(up);
                return Err(e);
            }
            let first = &buf[..4];
            if let Some(r) = (1..w).find(|&r| &buf[4 * r..4 * r + 4] != first) {
                self.abort(up);
                return Err(Error::runtime(format!(
                    "the ranks' parameters diverged: rank {r}'s hash differs from rank 0's after step {} \
                     (the ranks must run the same model, train params and collective)",
                    self.step + 1
                )));
            }
        } else {
            checked?;
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
        let stats = self.stats(&up);
        self.mse_weight = adapt_mse_weight(
            self.mse_weight,
            stats.velocity_mse,
            self.config.velocity_mse_target,
        );
        Ok(stats)
    }

    /// Hand an unfinished update's buffers back for reuse (dropping it is also correct).
    pub fn abort(&mut self, mut up: Update) {
        self.scratch = up.state.take().or(up.spare.take());
    }

    fn stats(&self, up: &Update) -> StepStats {
        let (mean, std, zero, prompts) = match up.global {
            Some(g) => (g.reward_mean, g.reward_std, g.zero_spread, g.prompts),
            None => {
                let finite: Vec<f64> = up
                    .rewards
                    .iter()
                    .filter(|r| !r.is_nan())
                    .map(|&r| r as f64)
                    .collect();
                let mean = finite.iter().sum::<f64>() / finite.len() as f64;
                let std = (finite.iter().map(|x| (x - mean).powi(2)).sum::<f64>()
                    / finite.len() as f64)
                    .sqrt();
                let zero = up.zero_spread.iter().filter(|&&z| z).count();
                (mean, std, zero, up.n_prompts)
            }
        };
        let kf = self.config.updates_per_step as f64;
        let (s, t) = (&up.sums, &up.sums.terms);
        StepStats {
            step: self.step,
            reward_mean: mean as f32,
            reward_std: std as f32,
            frac_zero_std: zero as f32 / prompts as f32,
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
            shared_grad_norm: (s.shared_norm / kf) as f32,
            velocity_mse_weight: self.mse_weight,
            resampled_groups: up.resampled,
        }
    }
}

/// The terms' sums and counts in a reduction buffer (data-parallel).
const TERM_SLOTS: usize = 11;

fn term_slots(t: &Terms) -> [f32; TERM_SLOTS] {
    [
        t.text_loss as f32,
        t.image_loss as f32,
        t.velocity_mse as f32,
        t.text_kl as f32,
        t.image_kl as f32,
        t.text_clipped as f32,
        t.text_tokens as f32,
        t.image_clipped as f32,
        t.image_steps as f32,
        t.kl_sum as f32,
        t.kl_n as f32,
    ]
}

fn terms_of_slots(v: &[f32]) -> Terms {
    let n = |x: f32| x.round() as usize;
    Terms {
        text_loss: v[0] as f64,
        image_loss: v[1] as f64,
        velocity_mse: v[2] as f64,
        text_kl: v[3] as f64,
        image_kl: v[4] as f64,
        text_clipped: n(v[5]),
        text_tokens: n(v[6]),
        image_clipped: n(v[7]),
        image_steps: n(v[8]),
        kl_sum: v[9] as f64,
        kl_n: n(v[10]),
        text_consistency: 0.0,
        image_consistency: 0.0,
    }
}

/// FNV-1a over the parameters' f32 bits in name order (the ranks' divergence check).
pub fn params_hash(p: &ParamSet) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for (name, a) in &p.values {
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        for x in a.iter() {
            h = (h ^ x.to_bits() as u64).wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// Bounds of the adaptive velocity-MSE weight.
pub const MSE_WEIGHT_MIN: f32 = 1e-6;
pub const MSE_WEIGHT_MAX: f32 = 1e6;

/// The adaptive velocity-MSE weight after a step that measured `mse` (PPO's adaptive KL rule):
/// doubled above 1.5 x `target`, halved below `target` / 1.5, kept in between, bounded by
/// [MSE_WEIGHT_MIN, MSE_WEIGHT_MAX]; `target` 0 keeps the weight fixed.
pub fn adapt_mse_weight(weight: f32, mse: f32, target: f32) -> f32 {
    if target <= 0.0 || !mse.is_finite() {
        return weight;
    }
    let w = if mse > 1.5 * target {
        weight * 2.0
    } else if mse < target / 1.5 {
        weight / 2.0
    } else {
        weight
    };
    w.clamp(MSE_WEIGHT_MIN, MSE_WEIGHT_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_weight_follows_the_ppo_rule() {
        assert_eq!(adapt_mse_weight(0.05, 0.004, 0.002), 0.1); // 0.004 > 0.003
        assert_eq!(adapt_mse_weight(0.05, 0.001, 0.002), 0.025); // 0.001 < 0.00133
        assert_eq!(adapt_mse_weight(0.05, 0.0025, 0.002), 0.05); // inside the band
        assert_eq!(adapt_mse_weight(0.05, 0.0029, 0.002), 0.05);
        assert_eq!(adapt_mse_weight(0.05, 9.0, 0.0), 0.05); // no target: fixed
        assert_eq!(adapt_mse_weight(0.05, f32::NAN, 0.002), 0.05);
        assert_eq!(adapt_mse_weight(MSE_WEIGHT_MAX, 1.0, 0.002), MSE_WEIGHT_MAX);
        assert_eq!(adapt_mse_weight(MSE_WEIGHT_MIN, 0.0, 0.002), MSE_WEIGHT_MIN);
    }
}
