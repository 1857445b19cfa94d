//! Fine-tuning with the host's reward.

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

use super::layout::{fields, size_through, Field};
use super::{
    boxed, check_not_in_callback, check_struct_size, generate_into, guard, host_struct_size,
    init_sized, null_arg, progress_adapter, quiet, read_struct, str_arg, str_array, unbox,
    unigrpo_cancel_token, unigrpo_error, unigrpo_generate_params, unigrpo_generation,
    unigrpo_image, unigrpo_model, unigrpo_progress_fn, write_prefix, CallbackScope,
};
use unigrpo::error::{Error, ErrorKind, Result};
use unigrpo::progress::Progress;
use unigrpo::reward::{Reward, Sample};
use unigrpo::train::{StepStats, TextAggregation, TrainConfig, Trainer};

/// One sample shown to the reward; everything is valid only during the callback.
#[repr(C)]
pub struct unigrpo_sample {
    /// Index into the prompts passed to the step.
    pub prompt_index: u32,
    /// 0..group_size-1 within that prompt's group.
    pub sample_index: u32,
    pub prompt: *const c_char,
    pub reasoning: *const c_char,
    pub image: unigrpo_image,
}

/// Called once per trainer step with every sample of the step (all prompts x group_size). Write
/// one reward per sample: NaN = no reward, the sample is left out; an infinite reward, no finite
/// reward at all, or a non-zero return aborts the step with `UNIGRPO_ERR_CALLBACK` and leaves the
/// trainer exactly as it was. Runs on the calling thread.
pub type unigrpo_reward_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        samples: *const unigrpo_sample,
        n_samples: usize,
        rewards: *mut f32,
    ) -> i32,
>;

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
}

pub(crate) fn train_fields() -> Vec<Field> {
    fields!(unigrpo_train_params: struct_size, group_size, updates_per_step, micro_batch_size, learning_rate,
        weight_decay, max_grad_norm, global_std, advantage_clip, text_clip_range, image_clip_range,
        velocity_mse_weight, text_kl_weight, image_kl_weight, train_text, train_image, num_steps, noise_level,
        train_timestep_fraction, max_reasoning_tokens, temperature, seed, progress, progress_user_data,
        text_learning_rate, image_learning_rate, text_aggregation, max_text_drift, max_image_drift)
}

/// The C struct of a configuration.
fn to_c(c: &TrainConfig) -> unigrpo_train_params {
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

fn to_config(model: &unigrpo::Model, p: &unigrpo_train_params) -> Result<TrainConfig> {
    let d = TrainConfig::defaults(model);
    let or = |v: u32, def: u32| if v == 0 { def } else { v };
    let text_aggregation = TextAggregation::from_index(p.text_aggregation).ok_or_else(|| {
        Error::invalid(format!(
            "unigrpo_train_params.text_aggregation is {}: 0 = dapo, 1 = grpo",
            p.text_aggregation
        ))
    })?;
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
    })
}

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
}

pub(crate) fn stats_fields() -> Vec<Field> {
    fields!(unigrpo_step_stats: struct_size, step, reward_mean, reward_std, frac_zero_std, loss, text_loss,
        image_loss, velocity_mse, text_kl, image_kl, text_clip_frac, image_clip_frac, approx_kl, grad_norm, seconds,
        text_grad_norm, image_grad_norm, text_consistency, image_consistency)
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
    };
    // SAFETY: `size` was checked against the host's struct_size by stats_size.
    unsafe { write_prefix(out, &full, size) }
}

/// A trainer: its own trainable parameters; keeps its model alive. One thread at a time.
pub struct unigrpo_trainer {
    pub(crate) inner: Trainer,
    progress: unigrpo_progress_fn,
    progress_user_data: usize,
}

impl unigrpo_trainer {
    /// The objects whose callbacks refuse re-entry: the trainer and its model.
    pub(crate) fn ids(&self) -> Vec<usize> {
        vec![
            self as *const _ as usize,
            Arc::as_ptr(self.inner.model()) as usize,
        ]
    }
    pub(crate) fn enter(&self, what: &str) -> Result<()> {
        for id in self.ids() {
            check_not_in_callback(id, what)?;
        }
        Ok(())
    }
    pub(crate) fn progress(&self) -> impl FnMut(unigrpo::Stage, u32, u32) -> bool {
        progress_adapter(
            self.progress,
            self.progress_user_data as *mut c_void,
            self.ids(),
        )
    }
}

/// The trainer behind a handle, for a call named `what` (NULL and re-entry checked).
pub(crate) unsafe fn trainer_mut<'a>(
    t: *mut unigrpo_trainer,
    what: &str,
) -> Result<&'a mut unigrpo_trainer> {
    // SAFETY: a trainer handle from unigrpo_trainer_new, or NULL; one thread at a time.
    let t = unsafe { t.as_mut() }.ok_or_else(|| null_arg("trainer"))?;
    t.enter(what)?;
    Ok(t)
}

unsafe fn trainer_ref<'a>(t: *const unigrpo_trainer, what: &str) -> Result<&'a unigrpo_trainer> {
    // SAFETY: a trainer handle from unigrpo_trainer_new, or NULL.
    let t = unsafe { t.as_ref() }.ok_or_else(|| null_arg("trainer"))?;
    t.enter(what)?;
    Ok(t)
}

/// Make a trainer on `m` with `p` (NULL = the model's defaults). `*out` is set to NULL first and
/// written on success; free with `unigrpo_trainer_free`.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_trainer_new(
    m: *mut unigrpo_model,
    p: *const unigrpo_train_params,
    out: *mut *mut unigrpo_trainer,
) -> *mut unigrpo_error {
    guard(|| {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        // SAFETY: `out` is a non-NULL out-parameter owned by the host.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: a model handle from unigrpo_model_load, or NULL.
        let m = unsafe { m.as_ref() }.ok_or_else(|| null_arg("model"))?;
        check_not_in_callback(m.id(), "unigrpo_trainer_new")?;
        let defaults = to_c(&TrainConfig::defaults(&*m.inner));
        let c = if p.is_null() {
            defaults
        } else {
            // SAFETY: a non-NULL versioned struct; read_struct reads only its struct_size bytes.
            unsafe { read_struct(p, defaults, &train_fields(), "unigrpo_train_params") }?
        };
        let trainer = Trainer::new(m.inner.clone(), to_config(&m.inner, &c)?)?;
        let t = boxed(unigrpo_trainer {
            inner: trainer,
            progress: c.progress,
            progress_user_data: c.progress_user_data as usize,
        });
        // SAFETY: as above.
        unsafe { *out = t };
        Ok(())
    })
}

struct CReward {
    f: unsafe extern "C" fn(*mut c_void, *const unigrpo_sample, usize, *mut f32) -> i32,
    user: *mut c_void,
    ids: Vec<usize>,
}

impl Reward for CReward {
    fn score(&mut self, samples: &[Sample<'_>]) -> Result<Vec<f32>> {
        let strings: Vec<(CString, CString)> = samples
            .iter()
            .map(|s| {
                (
                    CString::new(s.prompt.replace('\0', " ")).unwrap_or_default(),
                    CString::new(s.reasoning.replace('\0', " ")).unwrap_or_default(),
                )
            })
            .collect();
        let cs: Vec<unigrpo_sample> = samples
            .iter()
            .zip(&strings)
            .map(|(s, (p, r))| unigrpo_sample {
                prompt_index: s.prompt_index,
                sample_index: s.sample_index,
                prompt: p.as_ptr(),
                reasoning: r.as_ptr(),
                image: unigrpo_image::of(s.image),
            })
            .collect();
        let mut rewards = vec![f32::NAN; samples.len()];
        let rc = {
            let _scope = CallbackScope::enter(&self.ids);
            // SAFETY: the host's reward callback with its user_data; `cs` and `rewards` hold
            // n_samples entries and live through the call.
            unsafe { (self.f)(self.user, cs.as_ptr(), cs.len(), rewards.as_mut_ptr()) }
        };
        if rc != 0 {
            return Err(Error::new(
                ErrorKind::Callback,
                format!("the reward callback returned {rc}"),
            ));
        }
        Ok(rewards)
    }
}

/// One trainer step on `n_prompts` prompts: rollouts, `reward`, optimiser steps. `cancel` and
/// `stats` may be NULL. A failed, cancelled or aborted step changes nothing.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_trainer_step(
    t: *mut unigrpo_trainer,
    prompts: *const *const c_char,
    n_prompts: usize,
    reward: unigrpo_reward_fn,
    user_data: *mut c_void,
    cancel: *const unigrpo_cancel_token,
    stats: *mut unigrpo_step_stats,
) -> *mut unigrpo_error {
    guard(|| {
        // SAFETY: the handle argument.
        let t = unsafe { trainer_mut(t, "unigrpo_trainer_step") }?;
        if prompts.is_null() {
            return Err(null_arg("prompts"));
        }
        let f = reward.ok_or_else(|| null_arg("reward"))?;
        if n_prompts == 0 {
            return Err(Error::invalid("n_prompts is 0"));
        }
        // SAFETY: a stats argument, or NULL.
        let size = unsafe { stats_size(stats) }?;
        // SAFETY: the contract: `prompts` points to `n_prompts` strings.
        let ps = unsafe { str_array(prompts, n_prompts, "prompts") }?;
        let mut r = CReward {
            f,
            user: user_data,
            ids: t.ids(),
        };
        let mut cb = t.progress();
        // SAFETY: a token handle, or NULL.
        let cancel = unsafe { cancel.as_ref() }.map(|c| &c.0);
        let s: StepStats = t
            .inner
            .step(&ps, &mut r, cancel, &mut Progress::new(&mut cb))?;
        if let Some(size) = size {
            // SAFETY: `size` was checked against the host's struct_size.
            unsafe { write_stats(stats, size, &s) };
        }
        Ok(())
    })
}

/// Generate with the trainer's current parameters (as `unigrpo_generate`).
#[no_mangle]
pub unsafe extern "C" fn unigrpo_trainer_generate(
    t: *mut unigrpo_trainer,
    prompt: *const c_char,
    p: *const unigrpo_generate_params,
    cancel: *const unigrpo_cancel_token,
    out: *mut *mut unigrpo_generation,
) -> *mut unigrpo_error {
    guard(|| {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        // SAFETY: `out` is a non-NULL out-parameter owned by the host.
        unsafe { *out = std::ptr::null_mut() };
        // SAFETY: the handle argument.
        let t = unsafe { trainer_ref(t, "unigrpo_trainer_generate") }?;
        // SAFETY: a string argument.
        let prompt = unsafe { str_arg(prompt, "prompt") }?;
        let mut one = [std::ptr::null_mut()];
        // SAFETY: `p` and `cancel` are the host's arguments (checked inside).
        unsafe {
            generate_into(
                t.inner.model(),
                t.inner.params(),
                t.ids(),
                &[prompt],
                p,
                cancel,
                &mut one,
            )
        }?;
        // SAFETY: as above.
        unsafe { *out = one[0] };
        Ok(())
    })
}

/// Save a checkpoint (parameters, optimiser state, step, random state, current learning rates,
/// configuration) to `path`, atomically: a crash mid-save never destroys the previous file.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_trainer_save(
    t: *const unigrpo_trainer,
    path: *const c_char,
) -> *mut unigrpo_error {
    guard(|| {
        // SAFETY: the handle argument and a string argument.
        let (t, path) = unsafe {
            (
                trainer_ref(t, "unigrpo_trainer_save")?,
                str_arg(path, "path")?,
            )
        };
        t.inner.save(std::path::Path::new(path))
    })
}

/// Resume: restores trainable parameters, optimiser state, step, random state and learning
/// rates; the training params stay those given to `unigrpo_trainer_new`. Nothing changes on
/// error. Rollouts made before a load can no longer be used for an update.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_trainer_load(
    t: *mut unigrpo_trainer,
    path: *const c_char,
) -> *mut unigrpo_error {
    guard(|| {
        // SAFETY: the handle argument and a string argument.
        let (t, path) = unsafe {
            (
                trainer_mut(t, "unigrpo_trainer_load")?,
                str_arg(path, "path")?,
            )
        };
        t.inner.load(std::path::Path::new(path))
    })
}

/// Write a complete model package with the trained parameters into `dir` (loadable by
/// `unigrpo_model_load`).
#[no_mangle]
pub unsafe extern "C" fn unigrpo_trainer_export_model(
    t: *const unigrpo_trainer,
    dir: *const c_char,
) -> *mut unigrpo_error {
    guard(|| {
        // SAFETY: the handle argument and a string argument.
        let (t, dir) = unsafe {
            (
                trainer_ref(t, "unigrpo_trainer_export_model")?,
                str_arg(dir, "dir")?,
            )
        };
        t.inner.export_model(std::path::Path::new(dir))
    })
}

/// Trainer steps completed (restored by `unigrpo_trainer_load`); 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_trainer_step_count(t: *const unigrpo_trainer) -> u64 {
    quiet(0, || {
        // SAFETY: a trainer handle, or NULL.
        unsafe { t.as_ref() }.map_or(0, |t| t.inner.step_count())
    })
}

/// For schedules: the text-only and image-only groups' learning rates from the next optimiser
/// step (the shared group keeps `learning_rate`); 0 keeps a rate as it is; negative or
/// non-finite is UNIGRPO_ERR_INVALID_ARGUMENT. Checkpoints hold the current rates.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_trainer_set_learning_rate(
    t: *mut unigrpo_trainer,
    text_lr: f32,
    image_lr: f32,
) -> *mut unigrpo_error {
    guard(|| {
        // SAFETY: the handle argument.
        let t = unsafe { trainer_mut(t, "unigrpo_trainer_set_learning_rate") }?;
        t.inner.set_learning_rate(text_lr, image_lr)
    })
}

/// Free a trainer; NULL does nothing. Frees its model too if the model was already freed.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_trainer_free(t: *mut unigrpo_trainer) {
    // SAFETY: a trainer handle, or NULL; the host gives up ownership.
    quiet((), || unsafe { unbox(t) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use unigrpo::options::{Kind, Value, TRAIN_OPTIONS};

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
                (Kind::Choice(_), _) => Value::Choice("grpo"),
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
