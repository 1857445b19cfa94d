//! `unigrpo_train_params`: the C form of the core's training options (the table in
//! `unigrpo::options`; tests check the struct against it), defaults and conversion.

use super::layout::{fields, size_through, Field};
use super::{init_sized, quiet, unigrpo_model, unigrpo_progress_fn};
use std::ffi::c_void;
use unigrpo::error::{Error, Result};
use unigrpo::train::{DynamicSampling, SdeType, TextAggregation, TrainConfig};

#[repr(C)]
#[derive(Clone, Copy)]
pub struct unigrpo_train_params {
    pub struct_size: u32,
    /// Samples per prompt; 0 = the model's default.
    pub group_size: u32,
    /// Optimiser steps per rollout batch (k; the clip acts from the 2nd); 0 = default.
    pub updates_per_step: u32,
    /// Samples per VJP call; 0 = all.
    pub micro_batch_size: u32,
    pub learning_rate: f32,
    pub weight_decay: f32,
    pub max_grad_norm: f32,
    /// Advantage std over the whole step instead of the group.
    pub global_std: bool,
    /// |A| clip, e.g. 5.
    pub advantage_clip: f32,
    /// eps_txt.
    pub text_clip_range: f32,
    /// eps_img.
    pub image_clip_range: f32,
    /// lambda_v.
    pub velocity_mse_weight: f32,
    /// beta_txt (k3).
    pub text_kl_weight: f32,
    /// beta_img: FlowGRPO latent KL, for ablations.
    pub image_kl_weight: f32,
    pub train_text: bool,
    pub train_image: bool,
    /// Rollout denoising steps; 0 = the model's default.
    pub num_steps: u32,
    /// SDE noise level a.
    pub noise_level: f32,
    pub train_timestep_fraction: f32,
    /// 0 = the model's default.
    pub max_reasoning_tokens: u32,
    pub temperature: f32,
    pub seed: u64,
    /// May be NULL.
    pub progress: unigrpo_progress_fn,
    pub progress_user_data: *mut c_void,
    /// Version 2. Learning rate of the text-only parameter group; 0 = learning_rate.
    pub text_learning_rate: f32,
    /// Version 2. Learning rate of the image-only parameter group; 0 = learning_rate.
    pub image_learning_rate: f32,
    /// Version 2. 0 = "dapo" (over the update's tokens), 1 = "grpo" (per sequence); other =
    /// UNIGRPO_ERR_INVALID_ARGUMENT.
    pub text_aggregation: u32,
    /// Version 2. Largest allowed |recomputed - rollout| token log-prob at the first update
    /// (default 1e-4); a larger drift fails the step with UNIGRPO_ERR_RUNTIME.
    pub max_text_drift: f32,
    /// Version 2. The same for the denoising steps' log-probs; 0 = min(1e-5, 0.1 x
    /// image_clip_range).
    pub max_image_drift: f32,
    /// Version 2. Every sample of a group starts from the same initial noise (DanceGRPO); SDE
    /// noise and reasoning stay per sample. Default false.
    pub shared_initial_noise: bool,
    /// Version 2. SDE window: this many consecutive denoising steps are SDE steps and trained,
    /// the rest ODE; 0 = every step SDE and the first floor(f T) trained.
    pub sde_window: u32,
    /// Version 2. First step of the window (0-based) when it is not random.
    pub sde_window_start: u32,
    /// Version 2. Draw the window's start per group from (seed, step, prompt index).
    pub sde_window_random: bool,
    /// Version 2. Clip each parameter group's gradient (text, image, shared) to max_grad_norm
    /// on its own instead of their joint norm. Default false.
    pub clip_per_group: bool,
    /// Version 2. Adaptive velocity-MSE weight: starts at velocity_mse_weight, doubles after a
    /// step whose velocity MSE exceeds 1.5 x this target, halves below target / 1.5 (kept in
    /// checkpoints, reported in the stats); 0 = a fixed weight. Default 0.
    pub velocity_mse_target: f32,
    /// Version 2. Dynamic sampling of zero-spread groups: 0 = off, 1 = skip (they leave the
    /// policy terms' normalisers), 2 = resample (unigrpo_trainer_step only: their prompts are
    /// rolled out again and the reward called for the replacements, then skip); other =
    /// UNIGRPO_ERR_INVALID_ARGUMENT.
    pub dynamic_sampling: u32,
    /// Version 2. Most resampling rounds per step (dynamic_sampling = 2). Default 2.
    pub resample_rounds: u32,
    /// Version 2. Stochastic step of the rollouts: 0 = "sde" (FlowGRPO), 1 = "cps"
    /// (coefficient-preserving); other = UNIGRPO_ERR_INVALID_ARGUMENT.
    pub sde_type: u32,
    /// Version 2. Rewards that arrive late: the most optimiser steps a rollout may be older
    /// than the update that consumes it (0 = on-policy, the default). The C API draws on-policy
    /// rollouts only; a checkpoint or the CLI may carry a larger value.
    pub max_staleness: u32,
    /// Version 2. Velocity-MSE anchors: this many untrained denoising steps of each sample (all
    /// of them when no more remain, else drawn per sample from its seed) carry the velocity-MSE
    /// penalty too, with no policy term; 0 = the penalty on the trained steps only (the
    /// default). Inactive when train_image is false or velocity_mse_weight is 0.
    pub mse_anchor_steps: u32,
}

pub(crate) fn train_fields() -> Vec<Field> {
    fields!(unigrpo_train_params: struct_size, group_size, updates_per_step, micro_batch_size, learning_rate,
        weight_decay, max_grad_norm, global_std, advantage_clip, text_clip_range, image_clip_range,
        velocity_mse_weight, text_kl_weight, image_kl_weight, train_text, train_image, num_steps, noise_level,
        train_timestep_fraction, max_reasoning_tokens, temperature, seed, progress, progress_user_data,
        text_learning_rate, image_learning_rate, text_aggregation, max_text_drift, max_image_drift,
        shared_initial_noise, sde_window, sde_window_start, sde_window_random, clip_per_group,
        velocity_mse_target, dynamic_sampling, resample_rounds, sde_type, max_staleness,
        mse_anchor_steps)
}

/// The C struct of a configuration.
pub(crate) fn to_c(c: &TrainConfig) -> unigrpo_train_params {
    unigrpo_train_params {
        struct_size: std::mem::size_of::<unigrpo_train_params>() as u32,
        group_size: c.group_size,
        updates_per_step: c.updates_per_step,
        micro_batch_size: c.micro_batch_size,
        learning_rate: c.learning_rate,
        weight_decay: c.weight_decay,
        max_grad_norm: c.max_grad_norm,
        global_std: c.global_std,
        advantage_clip: c.advantage_clip,
        text_clip_range: c.text_clip_range,
        image_clip_range: c.image_clip_range,
        velocity_mse_weight: c.velocity_mse_weight,
        text_kl_weight: c.text_kl_weight,
        image_kl_weight: c.image_kl_weight,
        train_text: c.train_text,
        train_image: c.train_image,
        num_steps: c.num_steps,
        noise_level: c.noise_level,
        train_timestep_fraction: c.train_timestep_fraction,
        max_reasoning_tokens: c.max_reasoning_tokens,
        temperature: c.temperature,
        seed: c.seed,
        progress: None,
        progress_user_data: std::ptr::null_mut(),
        text_learning_rate: c.text_learning_rate,
        image_learning_rate: c.image_learning_rate,
        text_aggregation: c.text_aggregation as u32,
        max_text_drift: c.max_text_drift,
        max_image_drift: c.max_image_drift,
        shared_initial_noise: c.shared_initial_noise,
        sde_window: c.sde_window,
        sde_window_start: c.sde_window_start,
        sde_window_random: c.sde_window_random,
        clip_per_group: c.clip_per_group,
        velocity_mse_target: c.velocity_mse_target,
        dynamic_sampling: c.dynamic_sampling as u32,
        resample_rounds: c.resample_rounds,
        sde_type: c.sde_type as u32,
        max_staleness: c.max_staleness,
        mse_anchor_steps: c.mse_anchor_steps,
    }
}

fn library_train_defaults() -> unigrpo_train_params {
    unigrpo_train_params {
        struct_size: std::mem::size_of::<unigrpo_train_params>() as u32,
        group_size: 0,
        updates_per_step: 2,
        micro_batch_size: 0,
        learning_rate: 1e-4,
        weight_decay: 1e-4,
        max_grad_norm: 1.0,
        global_std: false,
        advantage_clip: 5.0,
        text_clip_range: 0.2,
        image_clip_range: 1e-4,
        velocity_mse_weight: 1.0,
        text_kl_weight: 0.0,
        image_kl_weight: 0.0,
        train_text: true,
        train_image: true,
        num_steps: 0,
        noise_level: 0.7,
        train_timestep_fraction: 0.99,
        max_reasoning_tokens: 0,
        temperature: 1.0,
        seed: 0,
        progress: None,
        progress_user_data: std::ptr::null_mut(),
        text_learning_rate: 0.0,
        image_learning_rate: 0.0,
        text_aggregation: 0,
        max_text_drift: 1e-4,
        max_image_drift: 0.0,
        shared_initial_noise: false,
        sde_window: 0,
        sde_window_start: 0,
        sde_window_random: false,
        clip_per_group: false,
        velocity_mse_target: 0.0,
        dynamic_sampling: 0,
        resample_rounds: 2,
        sde_type: 0,
        max_staleness: 0,
        mse_anchor_steps: 0,
    }
}

fn defaults_for(m: *const unigrpo_model) -> unigrpo_train_params {
    // SAFETY: a model handle from unigrpo_model_load, or NULL.
    match unsafe { m.as_ref() } {
        Some(m) => to_c(&TrainConfig::defaults(&*m.inner)),
        None => library_train_defaults(),
    }
}

/// Version 1 initialiser: writes exactly the version 1 layout (through progress_user_data).
/// Code compiled against this header calls `unigrpo_train_params_init_sized` through the macro.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_train_params_init(
    m: *const unigrpo_model,
    p: *mut unigrpo_train_params,
) {
    quiet((), || {
        let v1 = size_through::<unigrpo_train_params>(&train_fields(), "progress_user_data");
        // SAFETY: a version 1 host owns a version 1 struct at `p` (or NULL, ignored).
        unsafe { init_sized(p, defaults_for(m), v1) }
    })
}

/// Write `min(size, sizeof(unigrpo_train_params))` bytes of defaults (the model's when `m` is
/// given, else the library's) and set `struct_size` to that. `p` NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_train_params_init_sized(
    m: *const unigrpo_model,
    p: *mut unigrpo_train_params,
    size: usize,
) {
    // SAFETY: the host owns `size` writable bytes at `p` (or NULL, ignored).
    quiet((), || unsafe { init_sized(p, defaults_for(m), size) })
}

pub(crate) fn to_config(model: &unigrpo::Model, p: &unigrpo_train_params) -> Result<TrainConfig> {
    let d = TrainConfig::defaults(model);
    let or = |v: u32, def: u32| if v == 0 { def } else { v };
    let text_aggregation = choice(
        TextAggregation::from_index(p.text_aggregation),
        TextAggregation::NAMES,
        "text_aggregation",
        p.text_aggregation,
    )?;
    let dynamic_sampling = choice(
        DynamicSampling::from_index(p.dynamic_sampling),
        DynamicSampling::NAMES,
        "dynamic_sampling",
        p.dynamic_sampling,
    )?;
    let sde_type = choice(
        SdeType::from_index(p.sde_type),
        SdeType::NAMES,
        "sde_type",
        p.sde_type,
    )?;
    Ok(TrainConfig {
        group_size: or(p.group_size, d.group_size),
        updates_per_step: or(p.updates_per_step, d.updates_per_step),
        micro_batch_size: p.micro_batch_size,
        learning_rate: p.learning_rate,
        weight_decay: p.weight_decay,
        max_grad_norm: p.max_grad_norm,
        global_std: p.global_std,
        advantage_clip: p.advantage_clip,
        text_clip_range: p.text_clip_range,
        image_clip_range: p.image_clip_range,
        velocity_mse_weight: p.velocity_mse_weight,
        text_kl_weight: p.text_kl_weight,
        text_aggregation,
        image_kl_weight: p.image_kl_weight,
        train_text: p.train_text,
        train_image: p.train_image,
        num_steps: or(p.num_steps, d.num_steps),
        noise_level: p.noise_level,
        train_timestep_fraction: p.train_timestep_fraction,
        max_reasoning_tokens: or(p.max_reasoning_tokens, d.max_reasoning_tokens),
        temperature: p.temperature,
        seed: p.seed,
        text_learning_rate: p.text_learning_rate,
        image_learning_rate: p.image_learning_rate,
        max_text_drift: p.max_text_drift,
        max_image_drift: p.max_image_drift,
        shared_initial_noise: p.shared_initial_noise,
        sde_window: p.sde_window,
        sde_window_start: p.sde_window_start,
        sde_window_random: p.sde_window_random,
        clip_per_group: p.clip_per_group,
        velocity_mse_target: p.velocity_mse_target,
        dynamic_sampling,
        resample_rounds: p.resample_rounds,
        sde_type,
        max_staleness: p.max_staleness,
        mse_anchor_steps: p.mse_anchor_steps,
    })
}

/// A choice field's value, or an error naming the field and listing the valid values.
fn choice<T>(v: Option<T>, names: &[&str], field: &str, got: u32) -> Result<T> {
    v.ok_or_else(|| {
        let valid: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{i} = {n}"))
            .collect();
        Error::invalid(format!(
            "unigrpo_train_params.{field} is {got}: {}",
            valid.join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use unigrpo::options::{Kind, Value, TRAIN_OPTIONS};
    #[allow(unused_imports)]
    use unigrpo::train::TrainConfig;

    fn model() -> unigrpo::Model {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny-shapes");
        unigrpo::Model::load(&dir, &Default::default()).expect("tiny-shapes")
    }

    /// The `_init` defaults (with a model) are the model's defaults for every option, and every
    /// option reaches the configuration from C: each set to a non-default value in the C struct
    /// comes out in the config.
    #[test]
    fn every_option_reaches_c_both_ways() {
        let m = model();
        let d = TrainConfig::defaults(&m);
        assert_eq!(to_config(&m, &to_c(&d)).unwrap(), d);
        for o in TRAIN_OPTIONS {
            let mut c = d.clone();
            let v = match (o.kind, c.get(o.name).unwrap()) {
                (Kind::Bool, Value::Bool(b)) => Value::Bool(!b),
                (Kind::Choice(names), _) => Value::Choice(names[1]),
                (_, Value::U32(x)) => Value::U32(x + 1),
                (_, Value::U64(x)) => Value::U64(x + 1),
                (_, Value::F32(x)) => Value::F32(x * 0.5 + 0.125),
                (_, v) => panic!("{}: {v:?}", o.name),
            };
            c.set(o.name, v).unwrap();
            let back = to_config(&m, &to_c(&c)).unwrap();
            assert_eq!(back.get(o.name), Some(v), "{} does not reach C", o.name);
        }
    }
}
