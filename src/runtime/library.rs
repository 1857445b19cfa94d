//! Finding and loading the ONNX Runtime shared library, once per process.
//!
//! Search order: an explicit path (options or `--onnxruntime`), the `ORT_DYLIB_PATH` environment
//! variable, a copy beside the running binary or library (`make install` puts one there, also
//! in `../lib`), the copy fetched into this source tree by `scripts/fetch-onnxruntime.sh`, then the
//! system loader (`libonnxruntime.so.1`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, ErrorKind, Result};

/// The ONNX Runtime version this build targets (`api-31` rejects older libraries).
pub const TARGET_ORT_VERSION: &str = "1.31.1";
const LIB_NAME: &str = "libonnxruntime.so";

struct Loaded {
    path: PathBuf,
    version: String,
    pool: ThreadPool,
    env: ort::environment::Environment,
}

/// The process-wide ONNX Runtime thread pool that every session of every model shares. ONNX
/// Runtime fixes it when the environment is created, so the first model load sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ThreadPool {
    /// 0 = ONNX Runtime's default (the first load) or the pool as it is (later loads).
    pub intra_threads: usize,
    pub inter_threads: usize,
    /// Spinning threads burn a core while they wait: off by default for an embedded library.
    pub allow_spinning: bool,
}

static LOADED: OnceLock<Loaded> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

/// Candidate library paths in search order, each with where it came from.
pub fn candidates(explicit: Option<&Path>) -> Vec<(PathBuf, &'static str)> {
    let mut out = Vec::new();
    if let Some(p) = explicit {
        out.push((p.to_path_buf(), "the path given"));
        return out;
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        out.push((PathBuf::from(p), "ORT_DYLIB_PATH"));
        return out;
    }
    if let Some(dir) = own_dir() {
        out.push((dir.join(LIB_NAME), "beside libunigrpo"));
        out.push((dir.join("../lib").join(LIB_NAME), "beside libunigrpo"));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            out.push((dir.join(LIB_NAME), "beside the program"));
            out.push((dir.join("../lib").join(LIB_NAME), "beside the program"));
        }
    }
    let tree = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".cache/onnxruntime/lib")
        .join(LIB_NAME);
    out.push((
        tree,
        "the source tree's .cache (scripts/fetch-onnxruntime.sh)",
    ));
    out
}

/// Directory of the shared object this code lives in (libunigrpo.so when used from C).
fn own_dir() -> Option<PathBuf> {
    // /proc/self/maps lists the file mapped at this function's address.
    let addr = own_dir as *const () as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    for line in maps.lines() {
        let mut it = line.split_whitespace();
        let range = it.next()?;
        let (a, b) = range.split_once('-')?;
        let (a, b) = (
            usize::from_str_radix(a, 16).ok()?,
            usize::from_str_radix(b, 16).ok()?,
        );
        if (a..b).contains(&addr) {
            let path = line.split_whitespace().nth(5)?;
            return Path::new(path).parent().map(Path::to_path_buf);
        }
    }
    None
}

fn version_of(path: &Path) -> String {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let name = real.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.strip_prefix("libonnxruntime.so.")
        .unwrap_or("unknown")
        .to_string()
}

/// Load ONNX Runtime (first call) and return the process-wide environment with its thread pool.
pub fn environment(
    explicit: Option<&Path>,
    pool: &ThreadPool,
) -> Result<&'static ort::environment::Environment> {
    if let Some(l) = LOADED.get() {
        return check_same(l, explicit, pool).map(|_| &l.env);
    }
    let _guard = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(l) = LOADED.get() {
        return check_same(l, explicit, pool).map(|_| &l.env);
    }
    let cands = candidates(explicit);
    for (p, why) in &cands {
        log::debug!(
            "ONNX Runtime candidate {} ({why}): {}",
            p.display(),
            if p.exists() { "found" } else { "absent" }
        );
    }
    let mut tried = Vec::new();
    let mut chosen = None;
    for (p, why) in &cands {
        if p.exists() {
            chosen = Some(p.clone());
            break;
        }
        tried.push(format!("{} ({why}): not found", p.display()));
    }
    let path = match chosen {
        Some(p) => p,
        None if explicit.is_some()
            || std::env::var_os("ORT_DYLIB_PATH").is_some_and(|p| !p.is_empty()) =>
        {
            return Err(not_found(&tried));
        }
        None => PathBuf::from("libonnxruntime.so.1"),
    };
    let builder = ort::init_from(&path).map_err(|e| {
        let mut t = tried.clone();
        t.push(format!("{}: {e}", path.display()));
        not_found(&t)
    })?;
    let opts = || -> ort::Result<ort::environment::GlobalThreadPoolOptions> {
        ort::environment::GlobalThreadPoolOptions::default()
            .with_intra_threads(pool.intra_threads)?
            .with_inter_threads(pool.inter_threads)?
            .with_spin_control(pool.allow_spinning)
    };
    let opts = opts().map_err(|e| Error::invalid(format!("thread pool settings {pool:?}: {e}")))?;
    let env = builder
        .with_name("unigrpo")
        .with_telemetry(false)
        .with_global_thread_pool(opts)
        .with_logger(std::sync::Arc::new(ort_log))
        .build()
        .map_err(|e| Error::runtime(format!("cannot create the ONNX Runtime environment: {e}")))?;
    log::debug!(
        "ONNX Runtime {} from {} with thread pool {pool:?}",
        version_of(&path),
        path.display()
    );
    let loaded = Loaded {
        version: version_of(&path),
        path,
        pool: *pool,
        env,
    };
    let _ = LOADED.set(loaded);
    Ok(&LOADED.get().expect("just set").env)
}

fn not_found(tried: &[String]) -> Error {
    Error::new(
        ErrorKind::Runtime,
        format!(
            "ONNX Runtime {TARGET_ORT_VERSION} (or newer) was not found or could not be loaded. Looked at: {}; \
             then the system loader. Fetch it with `make ort` (scripts/fetch-onnxruntime.sh), or point \
             ORT_DYLIB_PATH at libonnxruntime.so",
            tried.join("; ")
        ),
    )
}

/// ONNX Runtime's own log, into the `log` facade (target "onnxruntime"). Its verbose level is
/// only read for the node placement report of GPU sessions.
fn ort_log(
    level: ort::logging::LogLevel,
    category: &str,
    _id: &str,
    location: &str,
    message: &str,
) {
    use ort::logging::LogLevel as L;
    // The placement report (GPU sessions ask for it): nodes on the CPU beside a GPU provider are
    // worth a warning, everything else about placement is information.
    let lvl = if message.contains("placed on [") {
        if message.contains("Node(s) placed on [CPUExecutionProvider]") {
            log::Level::Warn
        } else {
            log::Level::Info
        }
    } else {
        match level {
            L::Fatal | L::Error => log::Level::Error,
            L::Warning => log::Level::Warn,
            L::Info => log::Level::Debug,
            L::Verbose => log::Level::Trace,
        }
    };
    log::log!(target: "onnxruntime", lvl, "{message} ({category}, {location})");
}

/// The process-wide thread pool, once ONNX Runtime is loaded.
pub fn pool() -> Option<ThreadPool> {
    LOADED.get().map(|l| l.pool)
}

fn check_same(l: &Loaded, explicit: Option<&Path>, pool: &ThreadPool) -> Result<()> {
    let p = &l.pool;
    let clash = (pool.intra_threads != 0 && pool.intra_threads != p.intra_threads)
        || (pool.inter_threads != 0 && pool.inter_threads != p.inter_threads)
        || pool.allow_spinning != p.allow_spinning;
    if clash {
        return Err(Error::invalid(format!(
            "ONNX Runtime's process-wide thread pool was created by the first model load with intra_op_threads {}, \
             inter_op_threads {}, allow_spinning {}; this load asks for intra_op_threads {}, inter_op_threads {}, \
             allow_spinning {} (0 threads = accept the pool as it is)",
            p.intra_threads, p.inter_threads, p.allow_spinning,
            pool.intra_threads, pool.inter_threads, pool.allow_spinning
        )));
    }
    if let Some(p) = explicit {
        let a = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let b = std::fs::canonicalize(&l.path).unwrap_or_else(|_| l.path.clone());
        if a != b {
            return Err(Error::invalid(format!(
                "ONNX Runtime is already loaded from {}; it cannot be switched to {} in the same process",
                l.path.display(),
                p.display()
            )));
        }
    }
    Ok(())
}

/// The loaded library's path and version, once loaded.
pub fn loaded() -> Option<(PathBuf, String)> {
    LOADED.get().map(|l| (l.path.clone(), l.version.clone()))
}
