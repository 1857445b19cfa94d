//! `unigrpo_step_stats`: the C form of the core's step statistics (the table in
//! `unigrpo::options`; tests check the struct against it), written only up to `struct_size`.

use super::layout::{fields, Field};
use super::{check_struct_size, host_struct_size, write_prefix, zero_padding};
use unigrpo::error::Result;
use unigrpo::train::StepStats;

/// Statistics of a trainer step; written only up to the caller's `struct_size`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct unigrpo_step_stats {
    /// Set by the caller.
    pub struct_size: u32,
    /// Trainer steps completed, this one included.
    pub step: u64,
    pub reward_mean: f32,
    pub reward_std: f32,
    pub frac_zero_std: f32,
    pub loss: f32,
    pub text_loss: f32,
    pub image_loss: f32,
    pub velocity_mse: f32,
    pub text_kl: f32,
    pub image_kl: f32,
    pub text_clip_frac: f32,
    pub image_clip_frac: f32,
    pub approx_kl: f32,
    /// Global norm before clipping; text_kl / image_kl are 0 when their weight is 0.
    pub grad_norm: f32,
    pub seconds: f64,
    /// Version 2. Norms before clipping of the text-only and image-only groups' gradients.
    pub text_grad_norm: f32,
    pub image_grad_norm: f32,
    /// Version 2. First update: max |recomputed - rollout| log-prob (tokens, denoising steps).
    pub text_consistency: f32,
    pub image_consistency: f32,
    /// Version 2. Norm before clipping of the shared group's gradient.
    pub shared_grad_norm: f32,
    /// Version 2. The velocity-MSE weight the step used (adaptive with velocity_mse_target).
    pub velocity_mse_weight: f32,
    /// Version 2. Groups replaced by dynamic sampling's resampling in this step.
    pub resampled_groups: u32,
}

pub(crate) fn stats_fields() -> Vec<Field> {
    fields!(unigrpo_step_stats: struct_size, step, reward_mean, reward_std, frac_zero_std, loss, text_loss,
        image_loss, velocity_mse, text_kl, image_kl, text_clip_frac, image_clip_frac, approx_kl, grad_norm, seconds,
        text_grad_norm, image_grad_norm, text_consistency, image_consistency, shared_grad_norm,
        velocity_mse_weight, resampled_groups)
}

/// Check a stats argument's `struct_size` before anything runs; None for NULL.
pub(crate) unsafe fn stats_size(stats: *const unigrpo_step_stats) -> Result<Option<usize>> {
    if stats.is_null() {
        return Ok(None);
    }
    // SAFETY: a non-NULL stats struct starts with its struct_size.
    let size = unsafe { host_struct_size(stats) };
    check_struct_size::<unigrpo_step_stats>(size, &stats_fields(), "unigrpo_step_stats").map(Some)
}

/// Write `s` into the host's stats struct, only the bytes its `struct_size` covers.
pub(crate) unsafe fn write_stats(out: *mut unigrpo_step_stats, size: usize, s: &StepStats) {
    let full = unigrpo_step_stats {
        struct_size: size as u32,
        step: s.step,
        reward_mean: s.reward_mean,
        reward_std: s.reward_std,
        frac_zero_std: s.frac_zero_std,
        loss: s.loss,
        text_loss: s.text_loss,
        image_loss: s.image_loss,
        velocity_mse: s.velocity_mse,
        text_kl: s.text_kl,
        image_kl: s.image_kl,
        text_clip_frac: s.text_clip_frac,
        image_clip_frac: s.image_clip_frac,
        approx_kl: s.approx_kl,
        grad_norm: s.grad_norm,
        seconds: s.seconds,
        text_grad_norm: s.text_grad_norm,
        image_grad_norm: s.image_grad_norm,
        text_consistency: s.text_consistency,
        image_consistency: s.image_consistency,
        shared_grad_norm: s.shared_grad_norm,
        velocity_mse_weight: s.velocity_mse_weight,
        resampled_groups: s.resampled_groups,
    };
    // SAFETY: `size` was checked against the host's struct_size by stats_size.
    unsafe {
        write_prefix(out, &full, size);
        zero_padding(
            out as *mut u8,
            size.min(std::mem::size_of::<unigrpo_step_stats>()),
            &stats_fields(),
        );
    }
}
