//! Models.

use std::ffi::{c_char, CString};
use std::sync::Arc;

use super::{
    boxed, fields, guard, log, null_arg, quiet, read_versioned, str_arg, unbox, unigrpo_error,
    unigrpo_log_level,
};
use crate::model::{Model, ModelOptions};

/// A loaded model. May be used by several threads at once (calls may serialise).
pub struct unigrpo_model {
    pub(crate) inner: Arc<Model>,
    device: CString,
    info: CString,
}

impl unigrpo_model {
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }
}

/// Options for `unigrpo_model_load`; set `struct_size` and defaults with `_init`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct unigrpo_model_options {
    pub struct_size: u32,
    /// "cpu" (default) or "cuda:N"; an unavailable device is an error, never a silent fallback.
    pub device: *const c_char,
    /// 0 = ONNX Runtime's default.
    pub intra_op_threads: u32,
    /// NULL = search: ORT_DYLIB_PATH, beside libunigrpo, the source tree's .cache, the system loader.
    pub onnxruntime_path: *const c_char,
}

fn default_options() -> unigrpo_model_options {
    unigrpo_model_options {
        struct_size: std::mem::size_of::<unigrpo_model_options>() as u32,
        device: std::ptr::null(),
        intra_op_threads: 0,
        onnxruntime_path: std::ptr::null(),
    }
}

/// Set `struct_size` and every default. NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_model_options_init(o: *mut unigrpo_model_options) {
    quiet((), || {
        if let Some(o) = o.as_mut() {
            *o = default_options();
        }
    })
}

/// Load a model package directory. `o` may be NULL (defaults). `*out` is set to NULL first and
/// written on success; free with `unigrpo_model_free`. Loads ONNX Runtime on first use.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_model_load(
    model_dir: *const c_char,
    o: *const unigrpo_model_options,
    out: *mut *mut unigrpo_model,
) -> *mut unigrpo_error {
    guard(|| {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        *out = std::ptr::null_mut();
        let dir = str_arg(model_dir, "model_dir")?;
        let opts = match o.as_ref() {
            None => default_options(),
            Some(o) => {
                let f = fields!(unigrpo_model_options: struct_size, device, intra_op_threads, onnxruntime_path);
                read_versioned(
                    o,
                    o.struct_size,
                    &f,
                    default_options(),
                    "unigrpo_model_options",
                )?
            }
        };
        let device = if opts.device.is_null() {
            "cpu".to_string()
        } else {
            str_arg(opts.device, "options.device")?.to_string()
        };
        let ort = if opts.onnxruntime_path.is_null() {
            None
        } else {
            Some(std::path::PathBuf::from(str_arg(
                opts.onnxruntime_path,
                "options.onnxruntime_path",
            )?))
        };
        let model = Model::load(
            std::path::Path::new(dir),
            &ModelOptions {
                device,
                intra_threads: opts.intra_op_threads as usize,
                onnxruntime_path: ort,
            },
        )?;
        log(
            unigrpo_log_level::UNIGRPO_LOG_INFO,
            &format!(
                "loaded {} from {dir} on {}",
                model.manifest().name,
                model.device.name()
            ),
        );
        let info = CString::new(serde_json::to_string(&model.info()).unwrap_or_default())
            .unwrap_or_default();
        let device = CString::new(model.device.name()).unwrap_or_default();
        *out = boxed(unigrpo_model {
            inner: Arc::new(model),
            device,
            info,
        });
        Ok(())
    })
}

/// The device actually in use, e.g. "cpu"; owned by the model. "" for NULL.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_model_device(m: *const unigrpo_model) -> *const c_char {
    quiet(c"".as_ptr(), || {
        m.as_ref().map_or(c"".as_ptr(), |m| m.device.as_ptr())
    })
}

/// JSON: name, image size, graphs, parameter counts, defaults; owned by the model. "" for NULL.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_model_info(m: *const unigrpo_model) -> *const c_char {
    quiet(c"".as_ptr(), || {
        m.as_ref().map_or(c"".as_ptr(), |m| m.info.as_ptr())
    })
}

/// Free a model; NULL does nothing. Trainers made from it keep what they need alive.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_model_free(m: *mut unigrpo_model) {
    quiet((), || unbox(m))
}
