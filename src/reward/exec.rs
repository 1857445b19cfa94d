//! `exec:COMMAND`: an external program in any language scores the samples.
//!
//! Protocol (docs/rewards.md): the command runs once per trainer step through `sh -c`; it reads
//! one JSON object per sample on stdin, one per line: `{"prompt_index", "sample_index", "prompt",
//! "reasoning", "image"}` where `image` is the path of a PNG written for it; it writes one number
//! per line on stdout, in the same order (`nan` = no reward), and exits 0.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Reward, Sample};
use crate::cancel::CancelToken;
use crate::error::{Error, ErrorKind, Result};

/// How long a reward program may take for one step unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The program runs in its own process group, which is killed (SIGKILL) on a timeout, a
/// cancellation or when the caller drops the call; with `PR_SET_PDEATHSIG` the kernel kills the
/// program if this process dies first. (Grandchildren that leave the group, e.g. daemons started
/// by the program, escape both.) The PNGs go to a temporary folder, under `temp_root` when set
/// (`RUN/.tmp-reward-PID-*` for `unigrpo train`), removed on every return.
pub struct ExecReward {
    command: String,
    timeout: Duration,
    cancel: Option<CancelToken>,
    temp_root: Option<PathBuf>,
}

impl ExecReward {
    pub fn new(command: &str) -> Self {
        ExecReward {
            command: command.to_string(),
            timeout: DEFAULT_TIMEOUT,
            cancel: None,
            temp_root: None,
        }
    }
    /// Fail a call (and kill the program) after `t`.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    /// Kill the program and fail with `Cancelled` when `c` is cancelled.
    pub fn with_cancel(mut self, c: CancelToken) -> Self {
        self.cancel = Some(c);
        self
    }
    /// Write the samples' PNGs under `dir` instead of the system's temporary directory.
    pub fn with_temp_root(mut self, dir: PathBuf) -> Self {
        self.temp_root = Some(dir);
        self
    }
}

fn callback_err(msg: String) -> Error {
    Error::new(ErrorKind::Callback, msg)
}

/// Kills the child's process group when dropped (every return path, panics included).
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this struct's child leads; harmless if it is gone.
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

impl Reward for ExecReward {
    fn score(&mut self, samples: &[Sample<'_>]) -> Result<Vec<f32>> {
        let prefix = format!(".tmp-reward-{}-", std::process::id());
        let dir = match &self.temp_root {
            Some(root) => tempfile::Builder::new().prefix(&prefix).tempdir_in(root),
            None => tempfile::Builder::new().prefix(&prefix).tempdir(),
        }
        .map_err(|e| callback_err(format!("exec reward: temporary folder: {e}")))?;
        let mut input = String::new();
        for (k, s) in samples.iter().enumerate() {
            let path = dir.path().join(format!("sample-{k:05}.png"));
            s.image.save_png(&path)?;
            let line = serde_json::json!({
                "prompt_index": s.prompt_index, "sample_index": s.sample_index,
                "prompt": s.prompt, "reasoning": s.reasoning, "image": path,
            });
            input.push_str(&line.to_string());
            input.push('\n');
        }
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&self.command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; it only sets the child's parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = Group(cmd.spawn().map_err(|e| {
            callback_err(format!("exec reward: cannot start {:?}: {e}", self.command))
        })?);
        let mut stdin = child.0.stdin.take().expect("piped");
        let mut stdout = child.0.stdout.take().expect("piped");
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let reader = std::thread::spawn(move || {
            let mut b = Vec::new();
            stdout.read_to_end(&mut b).map(|_| b)
        });
        let t0 = Instant::now();
        let status = loop {
            if let Some(st) = child
                .0
                .try_wait()
                .map_err(|e| callback_err(format!("exec reward {:?}: {e}", self.command)))?
            {
                break st;
            }
            if self.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                drop(child);
                return Err(Error::new(
                    ErrorKind::Cancelled,
                    format!(
                        "cancelled while the exec reward {:?} ran (killed)",
                        self.command
                    ),
                ));
            }
            if t0.elapsed() > self.timeout {
                drop(child);
                return Err(callback_err(format!(
                    "exec reward {:?} did not answer within {} s (killed; the timeout is --reward-timeout)",
                    self.command,
                    self.timeout.as_secs_f64()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // the program exited: whatever it left in its group goes too
        drop(child);
        let _ = writer.join();
        let stdout = reader
            .join()
            .map_err(|_| callback_err("exec reward: reading its output panicked".into()))?
            .map_err(|e| callback_err(format!("exec reward {:?}: {e}", self.command)))?;
        if !status.success() {
            return Err(callback_err(format!(
                "exec reward {:?} failed: {}",
                self.command, status
            )));
        }
        parse_output(&String::from_utf8_lossy(&stdout), samples.len())
            .map_err(|m| callback_err(format!("exec reward {:?}: {m}", self.command)))
    }
}

/// The reward program's output: one number per non-empty line (`nan` = no reward), exactly `n`.
pub fn parse_output(text: &str, n: usize) -> std::result::Result<Vec<f32>, String> {
    let values: Vec<f32> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let t = l.trim();
            if t.eq_ignore_ascii_case("nan") {
                return Ok(f32::NAN);
            }
            t.parse::<f32>()
                .map_err(|_| format!("line {} is not a number: {t:?}", i + 1))
        })
        .collect::<std::result::Result<_, _>>()?;
    if values.len() != n {
        return Err(format!("wrote {} numbers for {n} samples", values.len()));
    }
    Ok(values)
}
