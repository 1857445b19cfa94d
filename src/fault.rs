//! Deterministic fault points for the crash tests (cargo feature `fault-injection`, which no
//! release build enables: without it `hit` is an empty inline function).
//!
//! `UNIGRPO_FAULT=POINT[=ACTION][@N]` makes the N-th pass (default the first) of the named point
//! in this process do ACTION: `kill` (SIGKILL to the process itself, the default: no destructor,
//! no cleanup, exactly what `kill -9` does) or `enospc` (the operation there fails as a full disk
//! fails it). The points:
//! - `write:FILE` inside every atomic write of a file named FILE (`checkpoint.safetensors`,
//!   `params.safetensors`, `unigrpo.json`, ...), after half its bytes reached the temporary file;
//! - `export:manifest` in a model export, after the package's other files, before its manifest;
//! - `export:swap` in a model export, with the package complete, before it is swapped into place;
//! - `metrics-line` in `unigrpo train`, after a step's metrics line, before its checkpoint.

/// Pass the fault point `point` (with `detail`, the full name is `point:detail`; an empty detail
/// names `point` alone). Returns the injected error for `enospc`; never returns for `kill`.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn hit(_point: &str, _detail: &str) -> std::io::Result<()> {
    Ok(())
}

#[cfg(feature = "fault-injection")]
pub fn hit(point: &str, detail: &str) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PASSES: AtomicU64 = AtomicU64::new(0);
    let Some(spec) = std::env::var("UNIGRPO_FAULT").ok() else {
        return Ok(());
    };
    let name = if detail.is_empty() {
        point.to_string()
    } else {
        format!("{point}:{detail}")
    };
    let (rest, nth) = match spec.rsplit_once('@') {
        Some((r, n)) => (r, n.parse::<u64>().unwrap_or(1)),
        None => (spec.as_str(), 1),
    };
    let (target, action) = rest.split_once('=').unwrap_or((rest, "kill"));
    if target != name {
        return Ok(());
    }
    if PASSES.fetch_add(1, Ordering::SeqCst) + 1 != nth {
        return Ok(());
    }
    log::warn!("fault injection: {action} at {name}");
    match action {
        // SAFETY: sending a signal to this process; SIGKILL does not return.
        "kill" => unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
            unreachable!("SIGKILL returned")
        },
        "enospc" => Err(std::io::Error::from_raw_os_error(libc::ENOSPC)),
        other => panic!("UNIGRPO_FAULT: unknown action {other:?} (kill or enospc)"),
    }
}
