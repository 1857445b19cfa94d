//! Fine-tuning with the host's reward.

use super::{clear_out, model::model_arg};
use std::ffi::{c_char, c_void, CString};
use std::sync::Arc;

use super::stats::{stats_size, unigrpo_step_stats, write_stats};
use super::train_params::{to_c, to_config, train_fields, unigrpo_train_params};
use super::{
    boxed, check_not_in_callback, generate_one, guard, null_arg, progress_adapter, quiet,
    read_struct, str_arg, str_array, unbox, unigrpo_cancel_token, unigrpo_error,
    unigrpo_generate_params, unigrpo_generation, unigrpo_image, unigrpo_model, unigrpo_progress_fn,
    CallbackScope,
};
use unigrpo::error::{Error, ErrorKind, Result};
use unigrpo::progress::Progress;
use unigrpo::reward::{Reward, Sample};
use unigrpo::train::{StepStats, TrainConfig, Trainer};

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
        // SAFETY: the out-parameter argument.
        unsafe { clear_out(out) }?;
        // SAFETY: the model handle argument.
        let m = unsafe { model_arg(m, "unigrpo_trainer_new") }?;
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
        if super::free_pending(&self.ids) {
            return Err(Error::new(
                ErrorKind::Cancelled,
                "the trainer or its model was freed from the reward callback: the step is cancelled \
                 (nothing changed) and the object is freed when the call returns",
            ));
        }
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
        // SAFETY: the out-parameter argument.
        unsafe { clear_out(out) }?;
        // SAFETY: the handle argument.
        let t = unsafe { trainer_ref(t, "unigrpo_trainer_generate") }?;
        // SAFETY: the host's arguments (checked inside); `out` is non-NULL.
        unsafe {
            generate_one(
                t.inner.model(),
                t.inner.params(),
                t.ids(),
                prompt,
                p,
                cancel,
                out,
            )
        }
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
/// Called from one of the trainer's own callbacks, the running call is cancelled (a step then
/// fails with UNIGRPO_ERR_CANCELLED and changes nothing) and the trainer is freed when that call
/// returns; the handle is invalid from this call on. Freeing a trainer another thread is using
/// is the host's error.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_trainer_free(t: *mut unigrpo_trainer) {
    if t.is_null() {
        return;
    }
    let addr = t as usize;
    quiet((), || {
        super::free_or_defer(addr, "unigrpo_trainer_free", move || {
            // SAFETY: a trainer handle from unigrpo_trainer_new; the host gives up ownership and
            // no library call uses it any more (deferred while one of its callbacks ran).
            unsafe { unbox(addr as *mut unigrpo_trainer) }
        })
    })
}
