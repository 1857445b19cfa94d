//! UniGRPO fine-tuning: rollouts, host rewards, group-relative advantages, GRPO on the reasoning
//! tokens and FlowGRPO (no CFG, velocity-MSE regulariser) on the denoising steps.
//!
//! - `trainer`: the trainer, the rollout and reward phases, and `step`, the phases' composition
//! - `update`: the update phase (begin, gradients and apply per optimiser step, commit)
//! - `rollout`: what a rollout draws and keeps
//! - `objective`: the loss terms of a share (`text`, `image`), micro-batches and shares (`batch`)
//! - `losses`: each formula of algorithm.md and its derivative; `advantages`; `adamw` (groups)
//! - `checkpoint`: checkpoints and model export; `collective`: the data-parallel seam

pub mod adamw;
pub mod advantages;
mod checkpoint;
pub mod collective;
pub mod losses;
pub mod objective;
pub mod pipeline;
pub mod rollout;
mod trainer;
mod update;

pub use checkpoint::{serialize_typed, swap_dir_into_place, temp_beside, write_atomic};
pub use collective::{Collective, InProcess, Local};
pub use objective::{Grads, Policies, Terms};
pub use pipeline::{Pipeline, Stepped};
pub use rollout::Rollout;
pub use trainer::score_rollout;
pub use trainer::Trainer;
pub use update::{params_hash, Update};

pub use crate::options::{DynamicSampling, SdeType, StepStats, TextAggregation, TrainConfig};

#[cfg(test)]
mod tests {
    use super::TextAggregation;

    #[test]
    fn token_weights_by_hand() {
        // lengths 2, 3, 5 (and an empty sequence): dapo 1/10 each token; grpo 1/(3 len)
        let w = TextAggregation::Dapo.token_weights(&[2, 3, 5, 0]);
        assert_eq!(w, vec![0.1; 4]);
        let w = TextAggregation::Grpo.token_weights(&[2, 3, 5, 0]);
        let want = [1.0 / 6.0, 1.0 / 9.0, 1.0 / 15.0, 0.0];
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-15, "{w:?}");
        }
        // each sequence's weights sum to 1/3: sequences count equally
        for (l, x) in [2.0, 3.0, 5.0].iter().zip(&w) {
            assert!((l * x - 1.0 / 3.0).abs() < 1e-15);
        }
    }
}
