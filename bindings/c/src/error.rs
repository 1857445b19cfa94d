//! Error objects and codes.

use std::ffi::{c_char, CString};

use super::{quiet, unbox};
use unigrpo::error::{Error, ErrorKind};

/// Result codes. `UNIGRPO_OK` is never stored in an error object.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum unigrpo_code {
    UNIGRPO_OK = 0,
    UNIGRPO_ERR_NULL_ARGUMENT = 1,
    UNIGRPO_ERR_INVALID_ARGUMENT = 2,
    UNIGRPO_ERR_IO = 3,
    UNIGRPO_ERR_MODEL_FORMAT = 4,
    UNIGRPO_ERR_RUNTIME = 5,
    UNIGRPO_ERR_DEVICE_UNAVAILABLE = 6,
    UNIGRPO_ERR_CANCELLED = 7,
    UNIGRPO_ERR_CALLBACK = 8,
    UNIGRPO_ERR_NON_FINITE = 9,
    UNIGRPO_ERR_PANIC = 10,
}

impl From<ErrorKind> for unigrpo_code {
    fn from(k: ErrorKind) -> Self {
        use unigrpo_code::*;
        match k {
            ErrorKind::NullArgument => UNIGRPO_ERR_NULL_ARGUMENT,
            ErrorKind::InvalidArgument => UNIGRPO_ERR_INVALID_ARGUMENT,
            ErrorKind::Io => UNIGRPO_ERR_IO,
            ErrorKind::ModelFormat => UNIGRPO_ERR_MODEL_FORMAT,
            ErrorKind::Runtime => UNIGRPO_ERR_RUNTIME,
            ErrorKind::DeviceUnavailable => UNIGRPO_ERR_DEVICE_UNAVAILABLE,
            ErrorKind::Cancelled => UNIGRPO_ERR_CANCELLED,
            ErrorKind::Callback => UNIGRPO_ERR_CALLBACK,
            ErrorKind::NonFinite => UNIGRPO_ERR_NON_FINITE,
            ErrorKind::Panic => UNIGRPO_ERR_PANIC,
        }
    }
}

/// An error: a code and a message naming the cause. Freed with `unigrpo_error_free`.
pub struct unigrpo_error {
    code: unigrpo_code,
    message: CString,
}

pub(crate) fn new_error(e: Error) -> *mut unigrpo_error {
    let message = CString::new(e.message().replace('\0', " ")).unwrap_or_default();
    super::boxed(unigrpo_error {
        code: e.kind().into(),
        message,
    })
}

/// The error's code; `UNIGRPO_OK` for NULL.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_error_code(e: *const unigrpo_error) -> unigrpo_code {
    quiet(unigrpo_code::UNIGRPO_ERR_PANIC, || {
        // SAFETY: an error object from this library, or NULL.
        unsafe { e.as_ref() }.map_or(unigrpo_code::UNIGRPO_OK, |e| e.code)
    })
}

/// The error's message, owned by `e` (valid until `unigrpo_error_free`); "" for NULL.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_error_message(e: *const unigrpo_error) -> *const c_char {
    quiet(c"".as_ptr(), || {
        // SAFETY: an error object from this library, or NULL.
        unsafe { e.as_ref() }.map_or(c"".as_ptr(), |e| e.message.as_ptr())
    })
}

/// Free an error; NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_error_free(e: *mut unigrpo_error) {
    // SAFETY: an error object, or NULL; the host gives up ownership.
    quiet((), || unsafe { unbox(e) })
}
