//! `exec:COMMAND`: an external program in any language scores the samples.
//!
//! Protocol (docs/rewards.md): the command runs once per trainer step through `sh -c`; it reads
//! one JSON object per sample on stdin, one per line: `{"prompt_index", "sample_index", "prompt",
//! "reasoning", "image"}` where `image` is the path of a PNG written for it; it writes one number
//! per line on stdout, in the same order (`nan` = no reward), and exits 0.

use std::io::Write;
use std::process::{Command, Stdio};

use super::{Reward, Sample};
use crate::error::{Error, ErrorKind, Result};

pub struct ExecReward {
    command: String,
}

impl ExecReward {
    pub fn new(command: &str) -> Self {
        ExecReward {
            command: command.to_string(),
        }
    }
}

fn callback_err(msg: String) -> Error {
    Error::new(ErrorKind::Callback, msg)
}

impl Reward for ExecReward {
    fn score(&mut self, samples: &[Sample<'_>]) -> Result<Vec<f32>> {
        let dir = tempfile::tempdir()
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
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                callback_err(format!("exec reward: cannot start {:?}: {e}", self.command))
            })?;
        let mut stdin = child.stdin.take().expect("piped");
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let out = child
            .wait_with_output()
            .map_err(|e| callback_err(format!("exec reward {:?}: {e}", self.command)))?;
        let _ = writer.join();
        if !out.status.success() {
            return Err(callback_err(format!(
                "exec reward {:?} failed: {}",
                self.command, out.status
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let values: Vec<f32> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                let t = l.trim();
                if t.eq_ignore_ascii_case("nan") {
                    return Ok(f32::NAN);
                }
                t.parse::<f32>().map_err(|_| {
                    callback_err(format!(
                        "exec reward {:?}: line {} is not a number: {t:?}",
                        self.command,
                        i + 1
                    ))
                })
            })
            .collect::<Result<_>>()?;
        if values.len() != samples.len() {
            return Err(callback_err(format!(
                "exec reward {:?} wrote {} numbers for {} samples",
                self.command,
                values.len(),
                samples.len()
            )));
        }
        Ok(values)
    }
}
