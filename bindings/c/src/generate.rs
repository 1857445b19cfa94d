//! Generation.

use super::{clear_out, model::model_arg};
use std::ffi::{c_char, c_void, CString};

use super::layout::{fields, Field};
use super::{
    guard, init_sized, null_arg, progress_adapter, quiet, read_struct, str_arg, str_array, unbox,
    unigrpo_cancel_token, unigrpo_error, unigrpo_model,
};
use unigrpo::error::{Error, Result};
use unigrpo::generate::{generate_batch, GenerateParams};
use unigrpo::image::RgbImage;
use unigrpo::package::ParamSet;
use unigrpo::progress::Progress;
use unigrpo::Stage;

#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum unigrpo_stage {
    UNIGRPO_STAGE_REASONING = 0,
    UNIGRPO_STAGE_DENOISING = 1,
    UNIGRPO_STAGE_DECODING = 2,
    UNIGRPO_STAGE_REWARD = 3,
    UNIGRPO_STAGE_BACKWARD = 4,
    UNIGRPO_STAGE_OPTIMIZER = 5,
}

impl From<Stage> for unigrpo_stage {
    fn from(s: Stage) -> Self {
        use unigrpo_stage::*;
        match s {
            Stage::Reasoning => UNIGRPO_STAGE_REASONING,
            Stage::Denoising => UNIGRPO_STAGE_DENOISING,
            Stage::Decoding => UNIGRPO_STAGE_DECODING,
            Stage::Reward => UNIGRPO_STAGE_REWARD,
            Stage::Backward => UNIGRPO_STAGE_BACKWARD,
            Stage::Optimizer => UNIGRPO_STAGE_OPTIMIZER,
        }
    }
}

/// Progress: return false to cancel (the call then fails with `UNIGRPO_ERR_CANCELLED` and
/// changes nothing). Runs on the calling thread.
pub type unigrpo_progress_fn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        stage: unigrpo_stage,
        step: u32,
        total: u32,
    ) -> bool,
>;

/// An RGB8 image: `width * height * channels` bytes, row-major; `data` is owned by its parent.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct unigrpo_image {
    pub width: u32,
    pub height: u32,
    /// Always 3.
    pub channels: u32,
    pub data: *const u8,
}

impl unigrpo_image {
    pub(crate) fn of(img: &RgbImage) -> Self {
        unigrpo_image {
            width: img.width,
            height: img.height,
            channels: 3,
            data: img.data.as_ptr(),
        }
    }
    pub(crate) fn zeroed() -> Self {
        unigrpo_image {
            width: 0,
            height: 0,
            channels: 0,
            data: std::ptr::null(),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct unigrpo_generate_params {
    pub struct_size: u32,
    /// The same seed, model and params give identical output on one machine.
    pub seed: u64,
    /// false: skip the reasoning phase, condition on the prompt alone.
    pub reasoning: bool,
    /// 0 = the model's default.
    pub max_reasoning_tokens: u32,
    /// 0 = greedy.
    pub temperature: f32,
    /// 1 = off.
    pub top_p: f32,
    /// 0 = off.
    pub top_k: u32,
    /// Denoising steps; 0 = the model's default.
    pub num_steps: u32,
    /// 0 = deterministic ODE sampler; > 0 = FlowGRPO SDE sampler.
    pub noise_level: f32,
    /// May be NULL.
    pub progress: unigrpo_progress_fn,
    pub progress_user_data: *mut c_void,
}

pub(crate) fn generate_fields() -> Vec<Field> {
    fields!(unigrpo_generate_params: struct_size, seed, reasoning, max_reasoning_tokens, temperature, top_p,
        top_k, num_steps, noise_level, progress, progress_user_data)
}

/// The C struct from the core's settings (0 where the C contract says "the model's default").
fn to_c(g: &GenerateParams) -> unigrpo_generate_params {
    unigrpo_generate_params {
        struct_size: std::mem::size_of::<unigrpo_generate_params>() as u32,
        seed: g.seed,
        reasoning: g.reasoning,
        max_reasoning_tokens: g.max_reasoning_tokens,
        temperature: g.temperature,
        top_p: g.top_p,
        top_k: g.top_k,
        num_steps: g.num_steps,
        noise_level: g.noise_level,
        progress: None,
        progress_user_data: std::ptr::null_mut(),
    }
}

/// The library's defaults (no model): 0 steps and tokens = the model's.
fn library_generate_defaults() -> unigrpo_generate_params {
    unigrpo_generate_params {
        struct_size: std::mem::size_of::<unigrpo_generate_params>() as u32,
        seed: 0,
        reasoning: true,
        max_reasoning_tokens: 0,
        temperature: 1.0,
        top_p: 1.0,
        top_k: 0,
        num_steps: 0,
        noise_level: 0.0,
        progress: None,
        progress_user_data: std::ptr::null_mut(),
    }
}

fn defaults_for(m: *const unigrpo_model) -> unigrpo_generate_params {
    // SAFETY: a model handle from unigrpo_model_load, or NULL.
    match unsafe { m.as_ref() } {
        Some(m) => to_c(&GenerateParams::defaults(&*m.inner)),
        None => library_generate_defaults(),
    }
}

/// Version 1 initialiser (the layout is unchanged in version 2): `struct_size` and every
/// default, the model's when `m` is given, else the library's. `p` NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_generate_params_init(
    m: *const unigrpo_model,
    p: *mut unigrpo_generate_params,
) {
    // SAFETY: the host owns a whole struct at `p` (or NULL, ignored).
    quiet((), || unsafe {
        init_sized(
            p,
            defaults_for(m),
            std::mem::size_of::<unigrpo_generate_params>(),
        )
    })
}

/// Write `min(size, sizeof(unigrpo_generate_params))` bytes of defaults (the model's when `m`
/// is given) and set `struct_size` to that. `p` NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_generate_params_init_sized(
    m: *const unigrpo_model,
    p: *mut unigrpo_generate_params,
    size: usize,
) {
    // SAFETY: the host owns `size` writable bytes at `p` (or NULL, ignored).
    quiet((), || unsafe { init_sized(p, defaults_for(m), size) })
}

pub(crate) unsafe fn read_generate_params(
    p: *const unigrpo_generate_params,
) -> Result<unigrpo_generate_params> {
    if p.is_null() {
        return Ok(library_generate_defaults());
    }
    // SAFETY: a non-NULL versioned struct; read_struct reads only its struct_size bytes.
    unsafe {
        read_struct(
            p,
            library_generate_defaults(),
            &generate_fields(),
            "unigrpo_generate_params",
        )
    }
}

fn to_core(model: &unigrpo::Model, c: &unigrpo_generate_params) -> GenerateParams {
    let d = GenerateParams::defaults(model);
    let or = |v: u32, def: u32| if v == 0 { def } else { v };
    GenerateParams {
        seed: c.seed,
        reasoning: c.reasoning,
        max_reasoning_tokens: or(c.max_reasoning_tokens, d.max_reasoning_tokens),
        temperature: c.temperature,
        top_p: c.top_p,
        top_k: c.top_k,
        num_steps: or(c.num_steps, d.num_steps),
        noise_level: c.noise_level,
    }
}

/// A generation result: reasoning text and image.
pub struct unigrpo_generation {
    reasoning: CString,
    image: RgbImage,
}

/// Shared by model and trainer generation: `ids` are the objects whose callbacks refuse re-entry.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn generate_into(
    model: &unigrpo::Model,
    params: &ParamSet,
    ids: Vec<usize>,
    prompts: &[&str],
    p: *const unigrpo_generate_params,
    cancel: *const unigrpo_cancel_token,
    out: &mut [*mut unigrpo_generation],
) -> Result<()> {
    // SAFETY: a params struct argument, or NULL.
    let c = unsafe { read_generate_params(p) }?;
    let core = to_core(model, &c);
    let seeds: Vec<u64> = (0..prompts.len() as u64)
        .map(|i| core.seed.wrapping_add(i))
        .collect();
    let mut cb = progress_adapter(c.progress, c.progress_user_data, ids);
    // SAFETY: a token handle from unigrpo_cancel_token_new, or NULL.
    let cancel = unsafe { cancel.as_ref() }.map(|t| &t.0);
    let gens = generate_batch(
        model,
        params,
        prompts,
        &seeds,
        &core,
        cancel,
        &mut Progress::new(&mut cb),
    )?;
    for (slot, g) in out.iter_mut().zip(gens) {
        let reasoning = CString::new(g.reasoning.replace('\0', " ")).unwrap_or_default();
        *slot = super::boxed(unigrpo_generation {
            reasoning,
            image: g.image,
        });
    }
    Ok(())
}

/// One prompt (a string argument) into the non-NULL out-parameter `out`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn generate_one(
    model: &unigrpo::Model,
    params: &ParamSet,
    ids: Vec<usize>,
    prompt: *const c_char,
    p: *const unigrpo_generate_params,
    cancel: *const unigrpo_cancel_token,
    out: *mut *mut unigrpo_generation,
) -> Result<()> {
    // SAFETY: a string argument.
    let prompt = unsafe { str_arg(prompt, "prompt") }?;
    let mut one = [std::ptr::null_mut()];
    // SAFETY: `p` and `cancel` are the host's arguments (checked inside).
    unsafe { generate_into(model, params, ids, &[prompt], p, cancel, &mut one) }?;
    // SAFETY: `out` is a non-NULL out-parameter owned by the host.
    unsafe { *out = one[0] };
    Ok(())
}

/// Reason about `prompt`, then draw it. `p` and `cancel` may be NULL. `*out` is set to NULL
/// first, written on success; free with `unigrpo_generation_free`. Thread-safe on one model.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_generate(
    m: *mut unigrpo_model,
    prompt: *const c_char,
    p: *const unigrpo_generate_params,
    cancel: *const unigrpo_cancel_token,
    out: *mut *mut unigrpo_generation,
) -> *mut unigrpo_error {
    guard(|| {
        // SAFETY: the out-parameter argument.
        unsafe { clear_out(out) }?;
        // SAFETY: the model handle argument.
        let m = unsafe { model_arg(m, "unigrpo_generate") }?;
        // SAFETY: the host's arguments (checked inside); `out` is non-NULL.
        unsafe {
            generate_one(
                &m.inner,
                &m.inner.params,
                vec![m.id()],
                prompt,
                p,
                cancel,
                out,
            )
        }
    })
}

/// One batched call: prompt i is generated with seed `p->seed + i`. `out` points to an array of
/// `n_prompts` handles, all set to NULL first and written on success.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_generate_batch(
    m: *mut unigrpo_model,
    prompts: *const *const c_char,
    n_prompts: usize,
    p: *const unigrpo_generate_params,
    cancel: *const unigrpo_cancel_token,
    out: *mut *mut unigrpo_generation,
) -> *mut unigrpo_error {
    guard(|| {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        // SAFETY: the contract: `out` points to `n_prompts` writable handles.
        let slots = unsafe { std::slice::from_raw_parts_mut(out, n_prompts) };
        slots.iter_mut().for_each(|s| *s = std::ptr::null_mut());
        // SAFETY: the model handle argument.
        let m = unsafe { model_arg(m, "unigrpo_generate_batch") }?;
        if n_prompts == 0 {
            return Err(Error::invalid("n_prompts is 0"));
        }
        // SAFETY: the contract: `prompts` points to `n_prompts` strings.
        let ps = unsafe { str_array(prompts, n_prompts, "prompts") }?;
        // SAFETY: `p` and `cancel` are the host's arguments (checked inside).
        unsafe {
            generate_into(
                &m.inner,
                &m.inner.params,
                vec![m.id()],
                &ps,
                p,
                cancel,
                slots,
            )
        }
    })
}

/// The reasoning text ("" when reasoning was off), owned by `g`; "" for NULL.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_generation_reasoning(
    g: *const unigrpo_generation,
) -> *const c_char {
    quiet(c"".as_ptr(), || {
        // SAFETY: a generation handle, or NULL.
        unsafe { g.as_ref() }.map_or(c"".as_ptr(), |g| g.reasoning.as_ptr())
    })
}

/// The image; its data is owned by `g`. A zeroed image for NULL.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_generation_image(g: *const unigrpo_generation) -> unigrpo_image {
    quiet(unigrpo_image::zeroed(), || {
        // SAFETY: a generation handle, or NULL.
        unsafe { g.as_ref() }.map_or(unigrpo_image::zeroed(), |g| unigrpo_image::of(&g.image))
    })
}

/// Write an image as PNG (atomically: temporary file, then rename).
#[no_mangle]
pub unsafe extern "C" fn unigrpo_image_save_png(
    img: *const unigrpo_image,
    path: *const c_char,
) -> *mut unigrpo_error {
    guard(|| {
        // SAFETY: an image struct argument (frozen layout), or NULL.
        let img = unsafe { img.as_ref() }.ok_or_else(|| null_arg("img"))?;
        // SAFETY: a string argument.
        let path = unsafe { str_arg(path, "path") }?;
        if img.data.is_null() {
            return Err(null_arg("img->data"));
        }
        if img.channels != 3 || img.width == 0 || img.height == 0 {
            return Err(Error::invalid(format!(
                "image must be RGB8 with a positive size, got {}x{}x{}",
                img.width, img.height, img.channels
            )));
        }
        let n = img.width as usize * img.height as usize * 3;
        // SAFETY: the contract: `data` holds width * height * 3 bytes.
        let data = unsafe { std::slice::from_raw_parts(img.data, n) }.to_vec();
        RgbImage::new(img.width, img.height, data).save_png(std::path::Path::new(path))
    })
}

/// Free a generation; NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_generation_free(g: *mut unigrpo_generation) {
    // SAFETY: a generation handle, or NULL; the host gives up ownership.
    quiet((), || unsafe { unbox(g) })
}
