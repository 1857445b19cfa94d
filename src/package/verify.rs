//! Package verification at load: every file the manifest's `files` section lists is checked for
//! its size, and by default its sha256 (streamed, so a multi-GB package is never read whole).

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::Package;
use crate::error::{Error, Result};

crate::options::choice_enum! {
    /// How much of each listed file `Model::load` checks.
    pub enum Verify {
        /// Size and sha256 (the default).
        Full = "full",
        /// Size only (for packages too large to hash at every load).
        Size = "size",
    }
}

/// The outcome for one file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileCheck {
    pub name: String,
    /// Size on disk (None when the file cannot be read).
    pub bytes: Option<u64>,
    /// Its sha256 (None in size mode or when unreadable).
    pub sha256: Option<String>,
    /// What is wrong with it; None = it matches the manifest.
    pub problem: Option<String>,
}

/// The sha256 of a file, read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

impl Package {
    /// The files a package must list: every graph, the tokenizer and the parameter file.
    pub fn required_files(&self) -> Vec<String> {
        let m = &self.manifest;
        let mut v: Vec<String> = m.graphs.values().cloned().collect();
        v.push(m.tokenizer.clone());
        v.push(m.params.file.clone());
        v.sort();
        v.dedup();
        v
    }

    /// Check every file against the manifest's `files` section (and that it lists every file
    /// the package needs); one entry per listed or required file.
    pub fn check_files(&self, mode: Verify) -> Vec<FileCheck> {
        let listed = &self.manifest.files;
        let mut names: Vec<String> = listed.keys().cloned().collect();
        names.extend(self.required_files());
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let path = self.file(&name);
                let mut c = FileCheck {
                    name: name.clone(),
                    bytes: std::fs::metadata(&path).ok().map(|m| m.len()),
                    sha256: None,
                    problem: None,
                };
                let Some(entry) = listed.get(&name) else {
                    c.problem = Some("not listed in the manifest's \"files\" section".into());
                    return c;
                };
                match c.bytes {
                    None => c.problem = Some(format!("cannot read {}", path.display())),
                    Some(b) if b != entry.bytes => {
                        c.problem =
                            Some(format!("size {b} bytes, the manifest says {}", entry.bytes))
                    }
                    Some(_) if mode == Verify::Full => match sha256_file(&path) {
                        Err(e) => c.problem = Some(format!("cannot read {}: {e}", path.display())),
                        Ok(h) => {
                            if !h.eq_ignore_ascii_case(&entry.sha256) {
                                c.problem =
                                    Some(format!("sha256 {h}, the manifest says {}", entry.sha256));
                            }
                            c.sha256 = Some(h);
                        }
                    },
                    Some(_) => {}
                }
                c
            })
            .collect()
    }

    /// `check_files`, as an error naming every file that does not match.
    pub fn verify(&self, mode: Verify) -> Result<()> {
        let bad: Vec<String> = self
            .check_files(mode)
            .into_iter()
            .filter_map(|c| c.problem.map(|p| format!("{}: {p}", c.name)))
            .collect();
        if bad.is_empty() {
            return Ok(());
        }
        Err(Error::format(format!(
                "{}: the package does not match its manifest ({}); the files are damaged or were changed \
                 after export (re-export the package, or restore the files)",
                self.file("unigrpo.json").display(),
                bad.join("; ")
        )))
    }
}
