//! Fine-tuning with the host's reward.

use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

use super::{
    boxed, check_not_in_callback, check_struct_size, fields, generate_into, guard, null_arg,
    progress_adapter, quiet, read_versioned, str_arg, unbox, unigrpo_cancel_token, unigrpo_error,
    unigrpo_generate_params, unigrpo_generation, unigrpo_image, unigrpo_model, unigrpo_progress_fn,
    CallbackScope,
};
use crate::error::{Error, ErrorKind, Result};
use crate::progress::Progress;
use crate::reward::{Reward, Sample};
use crate::train::{StepStats, TrainConfig, Trainer};

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
    }
}

/// Set `struct_size` and every default: the model's when `m` is given, else the library's.
/// `p` NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_train_params_init(
    m: *const unigrpo_model,
    p: *mut unigrpo_train_params,
) {
    quiet((), || {
        let Some(p) = p.as_mut() else { return };
        let mut d = library_train_defaults();
        if let Some(m) = m.as_ref() {
            let c = TrainConfig::defaults(&m.inner);
            d.group_size = c.group_size;
            d.updates_per_step = c.updates_per_step;
            d.learning_rate = c.learning_rate;
            d.weight_decay = c.weight_decay;
            d.max_grad_norm = c.max_grad_norm;
            d.advantage_clip = c.advantage_clip;
            d.text_clip_range = c.text_clip_range;
            d.image_clip_range = c.image_clip_range;
            d.velocity_mse_weight = c.velocity_mse_weight;
            d.num_steps = c.num_steps;
            d.noise_level = c.noise_level;
            d.train_timestep_fraction = c.train_timestep_fraction;
            d.max_reasoning_tokens = c.max_reasoning_tokens;
            d.temperature = c.temperature;
        }
        *p = d;
    })
}

fn to_config(model: &crate::Model, p: &unigrpo_train_params) -> TrainConfig {
    let d = TrainConfig::defaults(model);
    let or = |v: u32, def: u32| if v == 0 { def } else { v };
    TrainConfig {
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
        // the C contract has no field for it: the default ("dapo")
        text_aggregation: d.text_aggregation,
        image_kl_weight: p.image_kl_weight,
        train_text: p.train_text,
        train_image: p.train_image,
        num_steps: or(p.num_steps, d.num_steps),
        noise_level: p.noise_level,
        train_timestep_fraction: p.train_timestep_fraction,
        max_reasoning_tokens: or(p.max_reasoning_tokens, d.max_reasoning_tokens),
        temperature: p.temperature,
        seed: p.seed,
    }
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
}

/// A trainer: its own trainable parameters; keeps its model alive. One thread at a time.
pub struct unigrpo_trainer {
    inner: Trainer,
    progress: unigrpo_progress_fn,
    progress_user_data: usize,
}

impl unigrpo_trainer {
    fn ids(&self) -> Vec<usize> {
        vec![
            self as *const _ as usize,
            Arc::as_ptr(self.inner.model()) as usize,
        ]
    }
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
        *out = std::ptr::null_mut();
        let m = m.as_ref().ok_or_else(|| null_arg("model"))?;
        check_not_in_callback(m.id(), "unigrpo_trainer_new")?;
        let mut defaults = library_train_defaults();
        unigrpo_train_params_init(m, &mut defaults);
        let c = match p.as_ref() {
            None => defaults,
            Some(p) => {
                let f = fields!(unigrpo_train_params: struct_size, group_size, updates_per_step, micro_batch_size, learning_rate,
                    weight_decay, max_grad_norm, global_std, advantage_clip, text_clip_range, image_clip_range,
                    velocity_mse_weight, text_kl_weight, image_kl_weight, train_text, train_image, num_steps, noise_level,
                    train_timestep_fraction, max_reasoning_tokens, temperature, seed, progress, progress_user_data);
                read_versioned(p, p.struct_size, &f, defaults, "unigrpo_train_params")?
            }
        };
        let trainer = Trainer::new(m.inner.clone(), to_config(&m.inner, &c))?;
        *out = boxed(unigrpo_trainer {
            inner: trainer,
            progress: c.progress,
            progress_user_data: c.progress_user_data as usize,
        });
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
        let t = t.as_mut().ok_or_else(|| null_arg("trainer"))?;
        for id in t.ids() {
            check_not_in_callback(id, "unigrpo_trainer_step")?;
        }
        if prompts.is_null() {
            return Err(null_arg("prompts"));
        }
        let f = reward.ok_or_else(|| null_arg("reward"))?;
        if n_prompts == 0 {
            return Err(Error::invalid("n_prompts is 0"));
        }
        let stats_size = match stats.as_ref() {
            None => None,
            Some(s) => {
                let f = fields!(unigrpo_step_stats: struct_size, step, reward_mean, reward_std, frac_zero_std, loss, text_loss,
                    image_loss, velocity_mse, text_kl, image_kl, text_clip_frac, image_clip_frac, approx_kl, grad_norm, seconds);
                Some(check_struct_size::<unigrpo_step_stats>(
                    s.struct_size,
                    &f,
                    "unigrpo_step_stats",
                )?)
            }
        };
        let ps = std::slice::from_raw_parts(prompts, n_prompts)
            .iter()
            .enumerate()
            .map(|(i, &s)| str_arg(s, &format!("prompts[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        let ids = t.ids();
        let mut r = CReward {
            f,
            user: user_data,
            ids: ids.clone(),
        };
        let mut cb = progress_adapter(t.progress, t.progress_user_data as *mut c_void, ids);
        let s: StepStats = t.inner.step(
            &ps,
            &mut r,
            cancel.as_ref().map(|c| &c.0),
            &mut Progress::new(&mut cb),
        )?;
        if let (Some(size), Some(out)) = (stats_size, stats.as_mut()) {
            let full = unigrpo_step_stats {
                struct_size: out.struct_size,
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
            };
            std::ptr::copy_nonoverlapping(
                &full as *const _ as *const u8,
                out as *mut _ as *mut u8,
                size,
            );
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
        *out = std::ptr::null_mut();
        let t = t.as_ref().ok_or_else(|| null_arg("trainer"))?;
        for id in t.ids() {
            check_not_in_callback(id, "unigrpo_trainer_generate")?;
        }
        let prompt = str_arg(prompt, "prompt")?;
        let mut one = [std::ptr::null_mut()];
        generate_into(
            t.inner.model(),
            t.inner.params(),
            t.ids(),
            &[prompt],
            p,
            cancel,
            &mut one,
        )?;
        *out = one[0];
        Ok(())
    })
}

/// Save a checkpoint (parameters, optimiser state, step, random state, configuration) to
/// `path`, atomically: a crash mid-save never destroys the previous file.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_trainer_save(
    t: *const unigrpo_trainer,
    path: *const c_char,
) -> *mut unigrpo_error {
    guard(|| {
        let t = t.as_ref().ok_or_else(|| null_arg("trainer"))?;
        for id in t.ids() {
            check_not_in_callback(id, "unigrpo_trainer_save")?;
        }
        t.inner.save(std::path::Path::new(str_arg(path, "path")?))
    })
}

/// Resume: restores trainable parameters, optimiser state, step and random state; the training
/// params stay those given to `unigrpo_trainer_new`. Nothing changes on error.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_trainer_load(
    t: *mut unigrpo_trainer,
    path: *const c_char,
) -> *mut unigrpo_error {
    guard(|| {
        let t = t.as_mut().ok_or_else(|| null_arg("trainer"))?;
        for id in t.ids() {
            check_not_in_callback(id, "unigrpo_trainer_load")?;
        }
        t.inner.load(std::path::Path::new(str_arg(path, "path")?))
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
        let t = t.as_ref().ok_or_else(|| null_arg("trainer"))?;
        for id in t.ids() {
            check_not_in_callback(id, "unigrpo_trainer_export_model")?;
        }
        t.inner
            .export_model(std::path::Path::new(str_arg(dir, "dir")?))
    })
}

/// Free a trainer; NULL does nothing. Frees its model too if the model was already freed.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_trainer_free(t: *mut unigrpo_trainer) {
    quiet((), || unbox(t))
}
