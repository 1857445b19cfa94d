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
    /// The normalisers' counts to divide by; None = the pass's own share's (one process).
    /// Data-parallel, every rank's share counts summed (`Update`'s agreement reduction).
    pub counts: Option<ShareCounts>,
}

/// What the normalisers of a share divide by (algorithm.md section 4; docs/training.md): the
/// share's reasoning tokens and non-empty reasonings, trained (sample, step) rows, each in full
/// (the regularisers) and without the groups dynamic sampling skips (the policy terms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShareCounts {
    pub text_tokens: usize,
    pub text_seqs: usize,
    pub text_policy_tokens: usize,
    pub text_policy_seqs: usize,
    pub image_rows: usize,
    pub image_policy_rows: usize,
}

impl ShareCounts {
    pub const LEN: usize = 6;
    pub fn to_f32(self) -> [f32; Self::LEN] {
        [
            self.text_tokens,
            self.text_seqs,
            self.text_policy_tokens,
            self.text_policy_seqs,
            self.image_rows,
            self.image_policy_rows,
        ]
        .map(|x| x as f32)
    }
    /// From a reduced buffer (sums of counts, exact in f32 below 2^24).
    pub fn from_f32(v: &[f32]) -> ShareCounts {
        let c = |i: usize| v[i].round() as usize;
        ShareCounts {
            text_tokens: c(0),
            text_seqs: c(1),
            text_policy_tokens: c(2),
            text_policy_seqs: c(3),
            image_rows: c(4),
            image_policy_rows: c(5),
        }
    }
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

    /// The normaliser counts of the samples `share` of this objective's rollout.
    pub fn share_counts(&self, share: &[usize]) -> ShareCounts {
        let r = self.rollout;
        let mut c = ShareCounts::default();
        for &i in share {
            let (l, rows) = (r.reasoning[i].tokens.len(), r.trained[i].len());
            let live = self.in_policy_normaliser(i);
            c.text_tokens += l;
            c.text_seqs += (l > 0) as usize;
            c.image_rows += rows;
            if live {
                c.text_policy_tokens += l;
                c.text_policy_seqs += (l > 0) as usize;
                c.image_policy_rows += rows;
            }
        }
        c
    }

    /// The counts a pass over `share` divides by: the given ones, else the share's own.
    pub fn counts_for(&self, share: &[usize]) -> ShareCounts {
        self.counts.unwrap_or_else(|| self.share_counts(share))
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
