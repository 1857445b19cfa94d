//! Progress by stage. A callback returning false asks to cancel.

use crate::cancel::CancelToken;
use crate::error::{Error, ErrorKind, Result};

/// Stages, numbered as `unigrpo_stage` in the C API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Stage {
    Reasoning = 0,
    Denoising = 1,
    Decoding = 2,
    Reward = 3,
    Backward = 4,
    Optimizer = 5,
}

impl Stage {
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Reasoning => "reasoning",
            Stage::Denoising => "denoising",
            Stage::Decoding => "decoding",
            Stage::Reward => "reward",
            Stage::Backward => "backward",
            Stage::Optimizer => "optimizer",
        }
    }
}

/// An optional progress callback: `(stage, step, total) -> keep going?`.
pub struct Progress<'a>(Option<&'a mut dyn FnMut(Stage, u32, u32) -> bool>);

impl<'a> Progress<'a> {
    pub fn none() -> Self {
        Progress(None)
    }
    pub fn new(f: &'a mut dyn FnMut(Stage, u32, u32) -> bool) -> Self {
        Progress(Some(f))
    }
    /// Report progress. `Err(Cancelled)` when the callback returned false or `cancel` is set:
    /// the caller must stop and change nothing (the `Result` cannot be ignored silently).
    pub fn report(
        &mut self,
        stage: Stage,
        step: u32,
        total: u32,
        cancel: Option<&CancelToken>,
    ) -> Result<()> {
        let go = match &mut self.0 {
            Some(f) => f(stage, step, total),
            None => true,
        };
        if !go {
            return Err(Error::new(
                ErrorKind::Cancelled,
                format!(
                    "cancelled by the progress callback at stage {} ({step}/{total})",
                    stage.name()
                ),
            ));
        }
        if cancel.is_some_and(|c| c.is_cancelled()) {
            return Err(Error::cancelled());
        }
        Ok(())
    }
}
