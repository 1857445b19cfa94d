//! Models.

use super::clear_out;
use std::ffi::{c_char, CString};
use std::sync::Arc;
use unigrpo::error::Error;

use super::layout::{fields, size_through, Field};
use super::{
    boxed, guard, init_sized, null_arg, quiet, read_struct, str_arg, unbox, unigrpo_error,
};
use unigrpo::model::{Model, ModelOptions};
use unigrpo::package::Verify;

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

/// The model behind a handle, for a call named `what` (NULL and re-entry from its callbacks
/// refused).
pub(crate) unsafe fn model_arg<'a>(
    m: *const unigrpo_model,
    what: &str,
) -> Result<&'a unigrpo_model, Error> {
    // SAFETY: a model handle from unigrpo_model_load, or NULL.
    let m = unsafe { m.as_ref() }.ok_or_else(|| null_arg("model"))?;
    super::check_not_in_callback(m.id(), what)?;
    Ok(m)
}

/// Options for `unigrpo_model_load`; set `struct_size` and defaults with `_init`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct unigrpo_model_options {
    pub struct_size: u32,
    /// "cpu" (default) or "cuda:N"; an unavailable device is an error, never a silent fallback.
    pub device: *const c_char,
    /// Intra-op threads of the process-wide ONNX Runtime pool that every model shares. The first
    /// model load creates the pool; 0 = ONNX Runtime's default there, and "accept the pool as it
    /// is" on later loads; a later load asking for other values fails (INVALID_ARGUMENT).
    pub intra_op_threads: u32,
    /// NULL = search: ORT_DYLIB_PATH, beside libunigrpo, the source tree's .cache, the system loader.
    pub onnxruntime_path: *const c_char,
    /// Version 2. Inter-op threads of the process-wide pool (0 as for intra_op_threads).
    pub inter_op_threads: u32,
    /// Version 2. Let the pool's threads spin while waiting (faster when the cores are idle,
    /// wasteful when other work shares them); default false; must agree with the pool.
    pub allow_spinning: bool,
    /// Version 2. On "cuda:N", fail the load (DEVICE_UNAVAILABLE) when ONNX Runtime would run
    /// some nodes on the CPU; default false: such nodes are reported through the log.
    pub strict_device: bool,
    /// Version 2. How the package's files are checked against its manifest's sizes and sha256
    /// before loading: 0 = full (size and sha256, the default), 1 = size only (for packages too
    /// large to hash at every load); other = INVALID_ARGUMENT. A mismatch is MODEL_FORMAT.
    pub verify: u32,
    /// Version 2. Prompt words the vocabulary does not know are INVALID_ARGUMENT; default false:
    /// a warning through the log (once per prompt), and they are read as the unknown token.
    pub strict_vocabulary: bool,
}

pub(crate) fn options_fields() -> Vec<Field> {
    fields!(unigrpo_model_options: struct_size, device, intra_op_threads, onnxruntime_path, inter_op_threads,
        allow_spinning, strict_device, verify, strict_vocabulary)
}

fn default_options() -> unigrpo_model_options {
    unigrpo_model_options {
        struct_size: std::mem::size_of::<unigrpo_model_options>() as u32,
        device: std::ptr::null(),
        intra_op_threads: 0,
        onnxruntime_path: std::ptr::null(),
        inter_op_threads: 0,
        allow_spinning: false,
        strict_device: false,
        verify: 0,
        strict_vocabulary: false,
    }
}

/// Version 1 initialiser: writes exactly the version 1 layout (4 fields, 32 bytes). Code
/// compiled against this header calls `unigrpo_model_options_init_sized` through the macro.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_model_options_init(o: *mut unigrpo_model_options) {
    quiet((), || {
        let v1 = size_through::<unigrpo_model_options>(&options_fields(), "onnxruntime_path");
        // SAFETY: a version 1 host owns a version 1 struct at `o` (or NULL, ignored).
        unsafe { init_sized(o, default_options(), v1) }
    })
}

/// Write `min(size, sizeof(unigrpo_model_options))` bytes of defaults into `o` and set
/// `struct_size` to that. NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_model_options_init_sized(
    o: *mut unigrpo_model_options,
    size: usize,
) {
    // SAFETY: the host owns `size` writable bytes at `o` (or NULL, ignored).
    quiet((), || unsafe { init_sized(o, default_options(), size) })
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
        // SAFETY: the out-parameter argument.
        unsafe { clear_out(out) }?;
        // SAFETY: a string argument.
        let dir = unsafe { str_arg(model_dir, "model_dir") }?;
        let opts = if o.is_null() {
            default_options()
        } else {
            // SAFETY: a non-NULL versioned struct; read_struct reads only its struct_size bytes.
            unsafe {
                read_struct(
                    o,
                    default_options(),
                    &options_fields(),
                    "unigrpo_model_options",
                )
            }?
        };
        let device = if opts.device.is_null() {
            "cpu".to_string()
        } else {
            // SAFETY: a string argument.
            unsafe { str_arg(opts.device, "options.device") }?.to_string()
        };
        let ort = if opts.onnxruntime_path.is_null() {
            None
        } else {
            // SAFETY: a string argument.
            let p = unsafe { str_arg(opts.onnxruntime_path, "options.onnxruntime_path") }?;
            Some(std::path::PathBuf::from(p))
        };
        let verify = Verify::from_index(opts.verify).ok_or_else(|| {
            Error::invalid(format!(
                "unigrpo_model_options.verify is {}: 0 = full, 1 = size",
                opts.verify
            ))
        })?;
        let model = Model::load(
            std::path::Path::new(dir),
            &ModelOptions {
                device,
                intra_threads: opts.intra_op_threads as usize,
                inter_threads: opts.inter_op_threads as usize,
                allow_spinning: opts.allow_spinning,
                strict_device: opts.strict_device,
                onnxruntime_path: ort,
                verify,
                strict_vocabulary: opts.strict_vocabulary,
                plain_weights: false,
                recompute_activations: false,
                recompute_context: false,
            },
        )?;
        let info = CString::new(serde_json::to_string(&model.info()).unwrap_or_default())
            .unwrap_or_default();
        let device = CString::new(model.device.name()).unwrap_or_default();
        let m = boxed(unigrpo_model {
            inner: Arc::new(model),
            device,
            info,
        });
        // SAFETY: as above.
        unsafe { *out = m };
        Ok(())
    })
}

/// The device actually in use, e.g. "cpu"; owned by the model. "" for NULL.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_model_device(m: *const unigrpo_model) -> *const c_char {
    quiet(c"".as_ptr(), || {
        // SAFETY: a model handle from unigrpo_model_load, or NULL.
        unsafe { m.as_ref() }.map_or(c"".as_ptr(), |m| m.device.as_ptr())
    })
}

/// JSON: name, image size, graphs, parameter counts, threads, defaults; owned by the model. ""
/// for NULL.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_model_info(m: *const unigrpo_model) -> *const c_char {
    quiet(c"".as_ptr(), || {
        // SAFETY: a model handle from unigrpo_model_load, or NULL.
        unsafe { m.as_ref() }.map_or(c"".as_ptr(), |m| m.info.as_ptr())
    })
}

/// Free a model; NULL does nothing. Trainers made from it keep what they need alive. Called from
/// one of the model's own callbacks (a generation's progress), the running call is cancelled and
/// the model freed when it returns; the handle is invalid from this call on.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_model_free(m: *mut unigrpo_model) {
    // SAFETY: a model handle from unigrpo_model_load, or NULL.
    let Some(h) = (unsafe { m.as_ref() }) else {
        return;
    };
    let (id, addr) = (h.id(), m as usize);
    quiet((), || {
        super::free_or_defer(id, "unigrpo_model_free", move || {
            // SAFETY: a model handle from unigrpo_model_load; the host gives up ownership and no
            // library call uses it any more (deferred while one of its callbacks ran).
            unsafe { unbox(addr as *mut unigrpo_model) }
        })
    })
}
