//! The statistics of a trainer step: `StepStats`, `unigrpo_step_stats`, `metrics.jsonl`.

use super::{option_struct, NoDefaults, Range};

option_struct! {
    /// Statistics of one trainer step (the fields of `unigrpo_step_stats`, one line of metrics.jsonl).
    #[derive(Debug, Clone, Default, PartialEq)]
    pub struct StepStats, table STEP_STATS, defaults from NoDefaults {
        /// Trainer steps completed, this one included.
        step: u64 { ord: 1, flag: "", default: |_: &NoDefaults| 0, range: Range::any(), legacy: None }
        /// Mean of the step's finite rewards.
        reward_mean: f32 { ord: 2, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// Population std of the step's finite rewards.
        reward_std: f32 { ord: 3, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// Fraction of the groups whose rewards are all equal (zero advantage).
        frac_zero_std: f32 { ord: 4, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// Total loss, mean over the optimiser steps.
        loss: f32 { ord: 5, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// Text GRPO loss (with its k3 term), mean over the optimiser steps.
        text_loss: f32 { ord: 6, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// Image FlowGRPO loss (with its regularisers), mean over the optimiser steps.
        image_loss: f32 { ord: 7, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// Velocity MSE against the reference model.
        velocity_mse: f32 { ord: 8, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// Text k3 KL (0 when its weight is 0).
        text_kl: f32 { ord: 9, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// Latent KL (0 when its weight is 0).
        image_kl: f32 { ord: 10, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// Fraction of reasoning tokens whose clip binds.
        text_clip_frac: f32 { ord: 11, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// Fraction of trained denoising steps whose clip binds.
        image_clip_frac: f32 { ord: 12, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// 0.5 mean (logp - logp_old)^2 over tokens and trained steps.
        approx_kl: f32 { ord: 13, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// Global gradient norm before clipping, mean over the optimiser steps.
        grad_norm: f32 { ord: 14, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// Wall time of the step (local to the process).
        seconds: f64 { ord: 15, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// Norm of the text-only group's gradient before clipping, mean over the optimiser steps.
        text_grad_norm: f32 { ord: 16, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// Norm of the image-only group's gradient before clipping, mean over the optimiser steps.
        image_grad_norm: f32 { ord: 17, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// First update: max |recomputed - rollout| token log-prob.
        text_consistency: f32 { ord: 18, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// First update: max |recomputed - rollout| denoising-step log-prob.
        image_consistency: f32 { ord: 19, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// Norm of the shared group's gradient before clipping, mean over the optimiser steps.
        shared_grad_norm: f32 { ord: 20, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// The velocity-MSE weight the step used (adaptive with velocity_mse_target).
        velocity_mse_weight: f32 { ord: 21, flag: "", default: |_: &NoDefaults| 0.0, range: Range::any(), legacy: None }
        /// Groups replaced by dynamic sampling's resampling in this step.
        resampled_groups: u32 { ord: 22, flag: "", default: |_: &NoDefaults| 0, range: Range::any(), legacy: None }
    }
}
