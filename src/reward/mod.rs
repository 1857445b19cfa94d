//! Rewards: the host's scorer of (prompt, reasoning, image), called once per trainer step with
//! every sample of the step. Built in: `shapes` and `exec:COMMAND`.

pub mod exec;
pub mod shapes;

use crate::error::{Error, Result};
use crate::image::RgbImage;

/// One sample shown to a reward.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub prompt_index: u32,
    pub sample_index: u32,
    pub prompt: &'a str,
    pub reasoning: &'a str,
    pub image: &'a RgbImage,
}

/// One reward per sample; NaN = no reward (the sample is left out). An error, an infinite reward,
/// or no finite reward at all aborts the step.
pub trait Reward {
    fn score(&mut self, samples: &[Sample<'_>]) -> Result<Vec<f32>>;
}

impl<F: FnMut(&[Sample<'_>]) -> Result<Vec<f32>>> Reward for F {
    fn score(&mut self, samples: &[Sample<'_>]) -> Result<Vec<f32>> {
        self(samples)
    }
}

/// The built-in `shapes` reward.
pub struct ShapesReward;

impl Reward for ShapesReward {
    fn score(&mut self, samples: &[Sample<'_>]) -> Result<Vec<f32>> {
        samples
            .iter()
            .map(|s| Ok(shapes::score(s.prompt, s.image)?.value()))
            .collect()
    }
}

/// Parse a reward name: `shapes` or `exec:COMMAND`.
pub fn from_name(name: &str) -> Result<Box<dyn Reward + Send>> {
    from_name_with(name, &ExecOptions::default())
}

/// How an `exec:` reward runs (the other rewards ignore these).
#[derive(Clone, Default)]
pub struct ExecOptions {
    /// None = `exec::DEFAULT_TIMEOUT`.
    pub timeout: Option<std::time::Duration>,
    pub cancel: Option<crate::cancel::CancelToken>,
    /// Where the samples' PNGs are written (None = the system's temporary directory).
    pub temp_root: Option<std::path::PathBuf>,
}

/// `from_name` with the exec reward's timeout, cancellation and temporary folder.
pub fn from_name_with(name: &str, o: &ExecOptions) -> Result<Box<dyn Reward + Send>> {
    if name == "shapes" {
        return Ok(Box::new(ShapesReward));
    }
    if let Some(cmd) = name.strip_prefix("exec:") {
        if cmd.trim().is_empty() {
            return Err(Error::invalid(
                "exec: needs a command, e.g. exec:python3 my_reward.py",
            ));
        }
        let mut r = exec::ExecReward::new(cmd);
        if let Some(t) = o.timeout {
            r = r.with_timeout(t);
        }
        if let Some(c) = &o.cancel {
            r = r.with_cancel(c.clone());
        }
        if let Some(d) = &o.temp_root {
            r = r.with_temp_root(d.clone());
        }
        return Ok(Box::new(r));
    }
    Err(Error::invalid(format!(
        "unknown reward {name:?}: expected \"shapes\" or \"exec:COMMAND\""
    )))
}

/// Check a reward vector: one per sample, no infinity, at least one finite.
pub fn check_rewards(rewards: &[f32], n: usize) -> Result<()> {
    check_reward_values(rewards, n)?;
    if rewards.iter().all(|r| r.is_nan()) {
        return Err(Error::new(
            crate::error::ErrorKind::Callback,
            "no sample has a reward (all NaN)",
        ));
    }
    Ok(())
}

/// `check_rewards` without the "some reward is finite" rule (data-parallel, that is judged over
/// the global batch at the update).
pub fn check_reward_values(rewards: &[f32], n: usize) -> Result<()> {
    let err = |m: String| Err(Error::new(crate::error::ErrorKind::Callback, m));
    if rewards.len() != n {
        return err(format!(
            "the reward returned {} values for {n} samples",
            rewards.len()
        ));
    }
    if let Some(i) = rewards.iter().position(|r| r.is_infinite()) {
        return err(format!(
            "the reward of sample {i} is {}: rewards must be finite (NaN = no reward)",
            rewards[i]
        ));
    }
    Ok(())
}
