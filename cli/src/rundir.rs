//! A training run directory: one trainer at a time (`.lock`), no leftovers of a killed run,
//! logs consistent with the checkpoint they resume from.

use std::os::fd::AsRawFd;
use std::path::Path;

use unigrpo::Error;

/// The run directory's lock, held while the value lives (the kernel drops it when the process
/// dies, however it dies).
pub struct Lock(#[allow(dead_code)] std::fs::File);

/// Take `dir/.lock` (flock, exclusive, non-blocking); a second trainer on the same directory is
/// refused with the reason.
pub fn lock(dir: &Path) -> Result<Lock, Error> {
    let p = dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| Error::io("open", &p, e))?;
    // SAFETY: flock on a descriptor this function owns.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(Error::invalid(format!(
            "{} is in use by another trainer (its lock {} is held): give this run another --out",
            dir.display(),
            p.display()
        )));
    }
    Ok(Lock(f))
}

/// Remove what a killed run left: temporary files (`.NAME.tmp-*`) and half-exported packages
/// (`.model.tmp-*`, `model.old-*`). Only called with the lock held, so none is in use.
pub fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let stale =
            (name.starts_with('.') && name.contains(".tmp-")) || name.starts_with("model.old-");
        if !stale {
            continue;
        }
        let p = e.path();
        let res = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        match res {
            Ok(()) => log::info!("removed the leftover {}", p.display()),
            Err(e) => log::warn!("could not remove the leftover {}: {e}", p.display()),
        }
    }
}

/// `--force`: remove a previous run's checkpoint, logs, sample grids, plot and model.
pub fn clear(dir: &Path) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let ours = matches!(
            name.as_str(),
            "checkpoint.safetensors"
                | "metrics.jsonl"
                | "samples.jsonl"
                | "reward.png"
                | "config.json"
        ) || (name.starts_with("samples-") && name.ends_with(".png"))
            || name == "model";
        if ours {
            let p = e.path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            }
            .map_err(|e| Error::io("remove", &p, e))?;
        }
    }
    Ok(())
}

/// Keep only the lines of a JSON-lines log whose "step" is at most `step` and that parse (a
/// torn last line from a kill or a full disk goes), rewritten atomically. A missing file is
/// fine.
pub fn cut_back(path: &Path, step: u64) -> Result<(), Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read", path, e)),
    };
    let mut kept = String::with_capacity(text.len());
    let mut dropped = 0usize;
    for line in text.split_inclusive('\n') {
        let keep = line.ends_with('\n')
            && serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step);
        if keep {
            kept.push_str(line);
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        log::warn!(
            "{}: dropped {dropped} lines past the checkpoint's step {step} (or torn)",
            path.display()
        );
        unigrpo::train::write_atomic(path, kept.as_bytes())?;
    }
    Ok(())
}
