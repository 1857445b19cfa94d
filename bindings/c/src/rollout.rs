//! Split phases: a trainer step is a rollout, its rewards, and an update. Rewards can come later,
//! from another thread, process or machine (a remote judge).

use super::clear_out;
use std::ffi::{c_char, CString};

use super::stats::{stats_size, write_stats};
use super::trainer::trainer_mut;
use super::{
    boxed, guard, null_arg, quiet, str_array, unbox, unigrpo_cancel_token, unigrpo_error,
    unigrpo_image, unigrpo_sample, unigrpo_step_stats, unigrpo_trainer,
};
use unigrpo::error::{Error, Result};
use unigrpo::progress::Progress;
use unigrpo::train::Rollout;

/// The samples of one trainer step, drawn by `unigrpo_trainer_rollout`. Owns everything it
/// shows (readable and freeable after its trainer and model are freed); bound to its trainer by
/// a process-unique id and to the trainer's state (step, checkpoint loads).
pub struct unigrpo_rollout {
    inner: Rollout,
    /// Per sample: prompt and reasoning as C strings.
    strings: Vec<(CString, CString)>,
    rewards: Option<Vec<f32>>,
    used: bool,
}

/// Draw the samples `unigrpo_trainer_step` would draw at the trainer's current step (a second
/// rollout at the same step draws the same samples). Changes nothing in the trainer. The prompts
/// are copied. `*out` is set to NULL first, written on success; free with `unigrpo_rollout_free`.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_trainer_rollout(
    t: *mut unigrpo_trainer,
    prompts: *const *const c_char,
    n_prompts: usize,
    cancel: *const unigrpo_cancel_token,
    out: *mut *mut unigrpo_rollout,
) -> *mut unigrpo_error {
    guard(|| {
        // SAFETY: the out-parameter argument.
        unsafe { clear_out(out) }?;
        // SAFETY: the handle argument.
        let t = unsafe { trainer_mut(t, "unigrpo_trainer_rollout") }?;
        if n_prompts == 0 {
            return Err(Error::invalid("n_prompts is 0"));
        }
        // SAFETY: the contract: `prompts` points to `n_prompts` strings.
        let ps = unsafe { str_array(prompts, n_prompts, "prompts") }?;
        let mut cb = t.progress();
        // SAFETY: a token handle, or NULL.
        let cancel = unsafe { cancel.as_ref() }.map(|c| &c.0);
        let r = t.inner.rollout(&ps, cancel, &mut Progress::new(&mut cb))?;
        let strings = (0..r.len())
            .map(|k| {
                (
                    CString::new(r.prompts[r.prompt_of[k]].replace('\0', " ")).unwrap_or_default(),
                    CString::new(r.reasoning_text[k].replace('\0', " ")).unwrap_or_default(),
                )
            })
            .collect();
        let b = boxed(unigrpo_rollout {
            inner: r,
            strings,
            rewards: None,
            used: false,
        });
        // SAFETY: as above.
        unsafe { *out = b };
        Ok(())
    })
}

/// n_prompts x group_size; 0 for NULL. May be called from several threads at once.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_rollout_size(r: *const unigrpo_rollout) -> usize {
    // SAFETY: a rollout handle, or NULL.
    quiet(0, || unsafe { r.as_ref() }.map_or(0, |r| r.inner.len()))
}

fn zero_sample() -> unigrpo_sample {
    unigrpo_sample {
        prompt_index: 0,
        sample_index: 0,
        prompt: std::ptr::null(),
        reasoning: std::ptr::null(),
        image: unigrpo_image::zeroed(),
    }
}

/// Sample `i` (prompt index, index in group, prompt, reasoning, image); all fields zero / NULL
/// for NULL or `i` out of range. Its pointers stay valid until the rollout is freed. May be
/// called from several threads at once.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_rollout_sample(
    r: *const unigrpo_rollout,
    i: usize,
) -> unigrpo_sample {
    quiet(zero_sample(), || {
        // SAFETY: a rollout handle, or NULL.
        let Some(r) = (unsafe { r.as_ref() }) else {
            return zero_sample();
        };
        if i >= r.inner.len() {
            return zero_sample();
        }
        unigrpo_sample {
            prompt_index: r.inner.prompt_of[i] as u32,
            sample_index: r.inner.index_in_group[i] as u32,
            prompt: r.strings[i].0.as_ptr(),
            reasoning: r.strings[i].1.as_ptr(),
            image: unigrpo_image::of(&r.inner.images[i]),
        }
    })
}

/// Set (or replace, before the update) the rewards: `n` must equal `unigrpo_rollout_size(r)`;
/// NaN = no reward; an infinite value or no finite value at all is
/// UNIGRPO_ERR_INVALID_ARGUMENT and sets nothing. Refused once the rollout was used.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_rollout_set_rewards(
    r: *mut unigrpo_rollout,
    rewards: *const f32,
    n: usize,
) -> *mut unigrpo_error {
    guard(|| {
        // SAFETY: a rollout handle, or NULL; the host gives exclusive use for this call.
        let r = unsafe { r.as_mut() }.ok_or_else(|| null_arg("rollout"))?;
        if rewards.is_null() {
            return Err(null_arg("rewards"));
        }
        if r.used {
            return Err(Error::invalid(
                "the rollout was already used for an update: its rewards cannot change",
            ));
        }
        if n != r.inner.len() {
            return Err(Error::invalid(format!(
                "{n} rewards for a rollout of {} samples",
                r.inner.len()
            )));
        }
        // SAFETY: the contract: `rewards` holds `n` floats.
        let v = unsafe { std::slice::from_raw_parts(rewards, n) }.to_vec();
        if r.inner.origin.data_parallel {
            unigrpo::reward::check_reward_values(&v, n)
        } else {
            unigrpo::reward::check_rewards(&v, n)
        }
        .map_err(|e| Error::invalid(e.message().to_string()))?;
        r.rewards = Some(v);
        Ok(())
    })
}

/// The optimiser steps of the trainer step the rollout belongs to, on its rewards. Fails with
/// UNIGRPO_ERR_INVALID_ARGUMENT and changes nothing when the rollout has no rewards, was made by
/// another trainer, at another step, before a `unigrpo_trainer_load`, or was already used. A
/// failed, cancelled or non-finite update changes nothing and the rollout can be used again.
/// rollout + set_rewards(R) + update is bit-identical to a step whose reward writes R.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_trainer_update(
    t: *mut unigrpo_trainer,
    r: *mut unigrpo_rollout,
    cancel: *const unigrpo_cancel_token,
    stats: *mut unigrpo_step_stats,
) -> *mut unigrpo_error {
    guard(|| {
        // SAFETY: the handle argument.
        let t = unsafe { trainer_mut(t, "unigrpo_trainer_update") }?;
        // SAFETY: a rollout handle, or NULL; the host gives exclusive use for this call.
        let r = unsafe { r.as_mut() }.ok_or_else(|| null_arg("rollout"))?;
        if r.used {
            return Err(Error::invalid("the rollout was already used for an update"));
        }
        let rewards: Result<&Vec<f32>> = r.rewards.as_ref().ok_or_else(|| {
            Error::invalid("the rollout has no rewards: call unigrpo_rollout_set_rewards first")
        });
        let rewards = rewards?;
        // SAFETY: a stats argument, or NULL.
        let size = unsafe { stats_size(stats) }?;
        let mut cb = t.progress();
        // SAFETY: a token handle, or NULL.
        let cancel = unsafe { cancel.as_ref() }.map(|c| &c.0);
        let s = t
            .inner
            .update(&r.inner, rewards, cancel, &mut Progress::new(&mut cb))?;
        r.used = true;
        if let Some(size) = size {
            // SAFETY: `size` was checked against the host's struct_size.
            unsafe { write_stats(stats, size, &s) };
        }
        Ok(())
    })
}

/// Free a rollout; NULL does nothing. Needs exclusive use.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_rollout_free(r: *mut unigrpo_rollout) {
    // SAFETY: a rollout handle, or NULL; the host gives up ownership.
    quiet((), || unsafe { unbox(r) })
}
