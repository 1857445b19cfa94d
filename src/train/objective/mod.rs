//! The UniGRPO objective of one optimiser step's share of samples (algorithm.md section 4):
//! the text GRPO terms (`text.rs`) and the image FlowGRPO terms with the velocity-MSE penalty
//! (`image.rs`), through the typed networks' FORWARD and VJP graphs. The loss formulas and their
//! derivatives with respect to the network outputs are in `losses.rs`; shares, micro-batches
//! and normalisers in `batch.rs`.

pub mod batch;
pub mod image;
pub mod text;

use super::rollout::Rollout;
use super::TrainConfig;
use crate::cancel::CancelToken;
use crate::error::Result;
use crate::model::Model;
pub use crate::nets::Grads;
use crate::package::ParamSet;

/// How the current policy's outputs are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// First update: the current policy equals the rollout's, its outputs are the stored ones;
    /// the VJP graph recomputes them (the recomputation is returned for the consistency check).
    OnPolicy,
    /// Later updates: run the FORWARD graph, then the VJP.
    Forward,
    /// Loss only, through the FORWARD graphs (finite-difference checks); no gradients.
    LossOnly,
}

/// Sums over a share, normalised as algorithm.md section 4 defines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Terms {
    pub text_loss: f64,
    pub image_loss: f64,
    pub velocity_mse: f64,
    pub text_kl: f64,
    pub image_kl: f64,
    pub text_clipped: usize,
    pub text_tokens: usize,
    pub image_clipped: usize,
    pub image_steps: usize,
    /// Sum and count of 0.5 (logp - logp_old)^2 over tokens and trained steps.
    pub kl_sum: f64,
    pub kl_n: usize,
    /// OnPolicy: max |recomputed - stored| log-prob (text tokens, image steps).
    pub text_consistency: f64,
    pub image_consistency: f64,
}

impl Terms {
    pub fn loss(&self) -> f64 {
        self.text_loss + self.image_loss
    }
}

/// What the objective is evaluated on: a rollout, its advantages, the frozen reference.
pub struct Objective<'a> {
    pub model: &'a Model,
    pub reference: &'a ParamSet,
    pub rollout: &'a Rollout,
    pub advantages: &'a [f32],
    pub config: &'a TrainConfig,
    /// The velocity-MSE weight in use (the configured one, or the adaptive weight's state).
    pub velocity_mse_weight: f64,
    /// Per prompt of the rollout: its group leaves the policy terms' normalisers (dynamic
    /// sampling of zero-spread groups); empty = none does.
    pub skipped: &'a [bool],
}

/// One evaluation: at `params`, over the samples `share`, in `mode`.
pub struct Pass<'a> {
    pub params: &'a ParamSet,
    pub share: &'a [usize],
    pub mode: Mode,
    pub cancel: Option<&'a CancelToken>,
}

/// Which policies' terms to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policies {
    pub text: bool,
    pub image: bool,
}

impl Objective<'_> {
    /// Whether sample `i` counts in the policy terms' normalisers.
    pub fn in_policy_normaliser(&self, i: usize) -> bool {
        !self
            .skipped
            .get(self.rollout.prompt_of[i])
            .copied()
            .unwrap_or(false)
    }

    /// The text and image terms of one share, with their gradients summed by parameter name.
    pub fn evaluate(&self, pass: &Pass<'_>, which: Policies) -> Result<(Grads, Terms)> {
        let mut grads = Grads::new();
        let mut terms = Terms::default();
        if which.text {
            text::terms(self, pass, &mut grads, &mut terms)?;
        }
        if which.image {
            image::terms(self, pass, &mut grads, &mut terms)?;
        }
        Ok((grads, terms))
    }
}
