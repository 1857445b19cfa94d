//! Cancellation: a flag checked between steps, which also terminates running ONNX Runtime calls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use ort::session::RunOptions;

#[derive(Default)]
struct Inner {
    flag: AtomicBool,
    running: Mutex<Vec<Weak<RunOptions>>>,
}

/// Cloneable handle; `cancel` may be called from any thread.
#[derive(Clone, Default)]
pub struct CancelToken(Arc<Inner>);

/// Keeps a run registered with its token for the duration of the call.
pub struct Registration {
    token: CancelToken,
    opts: Weak<RunOptions>,
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        let running = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        for r in running.iter().filter_map(Weak::upgrade) {
            let _ = r.terminate();
        }
    }
    pub fn reset(&self) {
        self.0.flag.store(false, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }
    /// Register a run so that `cancel` terminates it.
    pub fn register(&self, opts: Arc<RunOptions>) -> Registration {
        let weak = Arc::downgrade(&opts);
        let mut running = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|w| w.strong_count() > 0);
        running.push(weak.clone());
        Registration {
            token: self.clone(),
            opts: weak,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut running = self
            .token
            .0
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        running.retain(|w| !w.ptr_eq(&self.opts) && w.strong_count() > 0);
    }
}
