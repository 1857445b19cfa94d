//! Process-wide log callback.

use std::ffi::{c_char, c_void, CString};
use std::sync::Mutex;

use super::quiet;

#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum unigrpo_log_level {
    UNIGRPO_LOG_ERROR = 0,
    UNIGRPO_LOG_WARN = 1,
    UNIGRPO_LOG_INFO = 2,
    UNIGRPO_LOG_DEBUG = 3,
}

/// Receives log messages; `message` is valid during the call only.
pub type unigrpo_log_fn = Option<
    unsafe extern "C" fn(user_data: *mut c_void, level: unigrpo_log_level, message: *const c_char),
>;

struct Sink {
    f: unigrpo_log_fn,
    user: usize,
    max: u32,
}

static SINK: Mutex<Sink> = Mutex::new(Sink {
    f: None,
    user: 0,
    max: unigrpo_log_level::UNIGRPO_LOG_WARN as u32,
});

/// Route the library's log messages up to `max_level` to `fn` (NULL = stderr). Process-wide;
/// `fn` may be called from any thread that calls into the library.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_set_log_callback(
    f: unigrpo_log_fn,
    user_data: *mut c_void,
    max_level: u32,
) {
    quiet((), || {
        let mut s = SINK.lock().unwrap_or_else(|e| e.into_inner());
        *s = Sink {
            f,
            user: user_data as usize,
            max: max_level.min(3),
        };
    })
}

pub(crate) fn log(level: unigrpo_log_level, msg: &str) {
    let (f, user, max) = {
        let s = SINK.lock().unwrap_or_else(|e| e.into_inner());
        (s.f, s.user, s.max)
    };
    if level as u32 > max {
        return;
    }
    match f {
        Some(f) => {
            let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
            unsafe { f(user as *mut c_void, level, c.as_ptr()) }
        }
        None => eprintln!("unigrpo: {msg}"),
    }
}
