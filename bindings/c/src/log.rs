//! Logging: the core logs through the `log` facade (ONNX Runtime's own log arrives there too,
//! target "onnxruntime"); this library's logger hands every message to the host's callback, or
//! to stderr. The callback may run on any thread, also concurrently; no lock is held while it
//! runs; `unigrpo_set_log_callback` returns only after running calls of the previous callback
//! have returned.

use std::cell::Cell;
use std::ffi::{c_char, c_void, CString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};

use super::quiet;

#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum unigrpo_log_level {
    UNIGRPO_LOG_ERROR = 0,
    UNIGRPO_LOG_WARN = 1,
    UNIGRPO_LOG_INFO = 2,
    UNIGRPO_LOG_DEBUG = 3,
}

/// Receives log messages; `message` is valid during the call only. May be called from any
/// thread, also concurrently; it must be thread-safe and must not call the library.
pub type unigrpo_log_fn = Option<
    unsafe extern "C" fn(user_data: *mut c_void, level: unigrpo_log_level, message: *const c_char),
>;

struct Sink {
    f: unigrpo_log_fn,
    user: usize,
    max: u32,
    /// Calls of this sink's callback now running (None for the default sink).
    running: Option<Arc<AtomicUsize>>,
}

static SINK: Mutex<Sink> = Mutex::new(Sink {
    f: None,
    user: 0,
    max: unigrpo_log_level::UNIGRPO_LOG_WARN as u32,
    running: None,
});

thread_local! {
    static IN_LOG: Cell<bool> = const { Cell::new(false) };
}

/// Route the library's log messages (and ONNX Runtime's) up to `max_level` to `fn` (NULL =
/// stderr). Process-wide. Returns after running calls of the previous callback have returned.
#[no_mangle]
pub unsafe extern "C" fn unigrpo_set_log_callback(
    f: unigrpo_log_fn,
    user_data: *mut c_void,
    max_level: u32,
) {
    quiet((), || {
        install();
        let max = max_level.min(3);
        let old = {
            let mut s = SINK.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(
                &mut *s,
                Sink {
                    f,
                    user: user_data as usize,
                    max,
                    running: Some(Arc::new(AtomicUsize::new(0))),
                },
            )
        };
        ::log::set_max_level(filter(max));
        // a callback calling this would wait for itself: the contract forbids it, never hang
        if !IN_LOG.with(|c| c.get()) {
            if let Some(r) = &old.running {
                while r.load(Ordering::Acquire) > 0 {
                    std::thread::yield_now();
                }
            }
        }
    })
}

fn filter(max: u32) -> ::log::LevelFilter {
    match max {
        0 => ::log::LevelFilter::Error,
        1 => ::log::LevelFilter::Warn,
        2 => ::log::LevelFilter::Info,
        _ => ::log::LevelFilter::Debug,
    }
}

struct Bridge;

static BRIDGE: Bridge = Bridge;

impl ::log::Log for Bridge {
    fn enabled(&self, m: &::log::Metadata<'_>) -> bool {
        m.level() <= ::log::max_level()
    }
    fn log(&self, r: &::log::Record<'_>) {
        let level = match r.level() {
            ::log::Level::Error => unigrpo_log_level::UNIGRPO_LOG_ERROR,
            ::log::Level::Warn => unigrpo_log_level::UNIGRPO_LOG_WARN,
            ::log::Level::Info => unigrpo_log_level::UNIGRPO_LOG_INFO,
            ::log::Level::Debug | ::log::Level::Trace => unigrpo_log_level::UNIGRPO_LOG_DEBUG,
        };
        let msg = if r.target().starts_with("unigrpo") {
            r.args().to_string()
        } else {
            format!("[{}] {}", r.target(), r.args())
        };
        emit(level, &msg);
    }
    fn flush(&self) {}
}

/// Install the bridge as the process's `log` logger (once; a no-op when the host's own Rust
/// code installed another logger first).
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if ::log::set_logger(&BRIDGE).is_ok() {
            ::log::set_max_level(filter(unigrpo_log_level::UNIGRPO_LOG_WARN as u32));
        }
    });
}

fn emit(level: unigrpo_log_level, msg: &str) {
    let (f, user, running) = {
        let s = SINK.lock().unwrap_or_else(|e| e.into_inner());
        if level as u32 > s.max {
            return;
        }
        // counted before the lock is released, so a new callback's setter waits for this call
        if let Some(r) = &s.running {
            r.fetch_add(1, Ordering::AcqRel);
        }
        (s.f, s.user, s.running.clone())
    };
    match f {
        Some(f) => {
            let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
            IN_LOG.with(|g| g.set(true));
            // SAFETY: the host's callback with its user_data; it must be thread-safe and not unwind.
            unsafe { f(user as *mut c_void, level, c.as_ptr()) };
            IN_LOG.with(|g| g.set(false));
            if let Some(r) = running {
                r.fetch_sub(1, Ordering::AcqRel);
            }
        }
        None => eprintln!("unigrpo: {msg}"),
    }
}
