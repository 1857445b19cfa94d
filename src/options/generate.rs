//! The generation settings: `GenerateParams`, `unigrpo_generate_params` and the CLI's sampling flags.

use super::{option_struct, Range};
use crate::error::Result;
use crate::package::Manifest;

option_struct! {
    /// Generation settings (`unigrpo_generate_params`); `GenerateParams::defaults` takes the model's.
    #[derive(Debug, Clone, PartialEq)]
    pub struct GenerateParams, table GENERATE_OPTIONS, defaults from Manifest {
        /// Seed: the same seed, model and settings give the same tokens and image bytes.
        seed: u64 { ord: 1, flag: "seed", default: |_: &Manifest| 0, range: Range::any(), legacy: None }
        /// Reason before drawing (false: condition the image on the prompt alone).
        reasoning: bool { ord: 2, flag: "reasoning", default: |_: &Manifest| true, range: Range::any(), legacy: None }
        /// Longest reasoning, in tokens.
        max_reasoning_tokens: u32 { ord: 3, flag: "max-reasoning-tokens",
            default: |m: &Manifest| m.generation.max_reasoning_tokens, range: Range::closed(0.0, 65536.0), legacy: None }
        /// Reasoning temperature (0 = greedy).
        temperature: f32 { ord: 4, flag: "temperature", default: |m: &Manifest| m.generation.temperature,
            range: Range::closed(0.0, 100.0), legacy: None }
        /// Nucleus sampling mass (1 = off).
        top_p: f32 { ord: 5, flag: "top-p", default: |m: &Manifest| m.generation.top_p,
            range: Range::open_closed(0.0, 1.0), legacy: None }
        /// Top-k sampling (0 = off).
        top_k: u32 { ord: 6, flag: "top-k", default: |m: &Manifest| m.generation.top_k,
            range: Range::at_least(0.0), legacy: None }
        /// Denoising steps.
        num_steps: u32 { ord: 7, flag: "steps", default: |m: &Manifest| m.sampler.steps,
            range: Range::closed(1.0, 1000.0), legacy: None }
        /// 0 = deterministic Euler ODE sampler; > 0 = FlowGRPO SDE sampler with this noise level.
        noise_level: f32 { ord: 8, flag: "noise-level", default: |m: &Manifest| m.sampler.noise_level,
            range: Range::closed(0.0, 10.0), legacy: None }
    }
}

impl GenerateParams {
    pub fn validate(&self) -> Result<()> {
        super::check_ranges(GENERATE_OPTIONS, |n| self.get(n), "generation setting")
    }
}
