//! Rewards that arrive late (docs/training.md, "Rewards that arrive late"): while the rewards
//! of one rollout are computed on a worker thread (a slow `exec:` program, a remote judge), the
//! next step's rollout is drawn ahead with the current parameters, so the reward's latency and
//! the rollout overlap. The trainer's `max_staleness` bounds how old a rollout may be; 0 keeps
//! the exact on-policy behaviour (nothing is drawn ahead, every result equals `Trainer::step`'s).

use super::trainer::score_rollout;
use super::{Rollout, StepStats, Trainer};
use crate::cancel::CancelToken;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::{Progress, Stage};
use crate::reward::Reward;

/// The rollouts drawn ahead and not yet consumed (at most one: staleness 1).
#[derive(Default)]
pub struct Pipeline {
    next: Option<Rollout>,
}

/// What one pipelined step did.
pub struct Stepped {
    pub stats: StepStats,
    pub rollout: Rollout,
    pub rewards: Vec<f32>,
}

impl Pipeline {
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    /// Whether a rollout drawn ahead is waiting.
    pub fn pending(&self) -> bool {
        self.next.is_some()
    }

    /// Drop the rollout drawn ahead, so the next step draws with the parameters of then (at
    /// every checkpoint: a resumed run draws that step's rollout after loading, so the
    /// uninterrupted run must too).
    pub fn drain(&mut self) {
        self.next = None;
    }

    /// One trainer step on `prompts`: its rollout (the one drawn ahead, or a new one), its
    /// rewards on a worker thread while the rollout of `upcoming` (the next step's prompts;
    /// None = draw nothing ahead) is drawn on this one when `max_staleness` >= 1, then the
    /// update. A failure leaves the trainer as it was and drains the pipeline.
    pub fn step(
        &mut self,
        trainer: &mut Trainer,
        prompts: &[&str],
        upcoming: Option<&[&str]>,
        reward: &mut (dyn Reward + Send),
        cancel: Option<&CancelToken>,
        progress: &mut Progress<'_>,
    ) -> Result<Stepped> {
        let res = self.run(trainer, prompts, upcoming, reward, cancel, progress);
        if res.is_err() {
            self.next = None;
        }
        res
    }

    fn run(
        &mut self,
        trainer: &mut Trainer,
        prompts: &[&str],
        upcoming: Option<&[&str]>,
        reward: &mut (dyn Reward + Send),
        cancel: Option<&CancelToken>,
        progress: &mut Progress<'_>,
    ) -> Result<Stepped> {
        let started = std::time::Instant::now();
        let rollout = match self.next.take() {
            Some(r)
                if r.prompts
                    .iter()
                    .map(String::as_str)
                    .eq(prompts.iter().copied()) =>
            {
                Ok(r)
            }
            Some(_) => Err(Error::invalid(
                "the rollout drawn ahead was for other prompts than this step's",
            )),
            None => trainer.rollout(prompts, cancel, progress),
        };
        let rollout = match rollout {
            Ok(r) => r,
            Err(e) => return Err(trainer.fail_update(e)),
        };
        let ahead = upcoming.filter(|_| trainer.config().max_staleness >= 1);
        let scored = progress.report(Stage::Reward, 0, 1, cancel);
        let (rewards, drawn) = std::thread::scope(|s| {
            let r = &rollout;
            let worker = s.spawn(move || scored.and_then(|()| score_rollout(r, reward)));
            let drawn = ahead.map(|p| trainer.rollout_ahead(p, 1, cancel, progress));
            let rewards = worker
                .join()
                .unwrap_or_else(|_| Err(Error::new(ErrorKind::Callback, "the reward panicked")));
            (rewards, drawn)
        });
        let drawn = drawn.transpose();
        let rewards = rewards
            .and_then(|r| progress.report(Stage::Reward, 1, 1, cancel).map(|()| r))
            .and_then(|r| drawn.map(|d| (r, d)));
        let (rewards, drawn) = match rewards {
            Ok(x) => x,
            Err(e) => return Err(trainer.fail_update(e)),
        };
        let mut stats = trainer.update(&rollout, &rewards, cancel, progress)?;
        // the step's wall time: its rollout (or none), the rewards beside the next rollout,
        // the update
        stats.seconds = started.elapsed().as_secs_f64();
        self.next = drawn;
        Ok(Stepped {
            stats,
            rollout,
            rewards,
        })
    }
}
