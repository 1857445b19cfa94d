//! Cancellation tokens.

use super::{boxed, guard, null_arg, quiet, unbox, unigrpo_error};
use unigrpo::cancel::CancelToken;

/// A cancellation flag; `unigrpo_cancel_token_cancel` may be called from any thread.
pub struct unigrpo_cancel_token(pub(crate) CancelToken);

/// Create a token. `*out` is set to NULL first, written on success; free with `_free`.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_cancel_token_new(
    out: *mut *mut unigrpo_cancel_token,
) -> *mut unigrpo_error {
    guard(|| {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        // SAFETY: `out` is a non-NULL out-parameter owned by the host.
        unsafe { *out = boxed(unigrpo_cancel_token(CancelToken::new())) };
        Ok(())
    })
}

/// Cancel: running calls using the token stop (the ONNX Runtime call in flight is terminated)
/// and fail with `UNIGRPO_ERR_CANCELLED`. Any thread; idempotent; NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_cancel_token_cancel(t: *const unigrpo_cancel_token) {
    quiet((), || {
        // SAFETY: a token handle from unigrpo_cancel_token_new, or NULL.
        if let Some(t) = unsafe { t.as_ref() } {
            t.0.cancel()
        }
    })
}

/// Clear the flag so the token can be reused. NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_cancel_token_reset(t: *const unigrpo_cancel_token) {
    quiet((), || {
        // SAFETY: a token handle from unigrpo_cancel_token_new, or NULL.
        if let Some(t) = unsafe { t.as_ref() } {
            t.0.reset()
        }
    })
}

/// Free a token (no call may be using it); NULL does nothing.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_cancel_token_free(t: *mut unigrpo_cancel_token) {
    // SAFETY: a token handle, or NULL; the host gives up ownership.
    quiet((), || unsafe { unbox(t) })
}
