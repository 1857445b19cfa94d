//! Model packages: a directory with `unigrpo.json`, a tokenizer, ONNX graphs and
//! `params.safetensors`. Opening a package validates the manifest, the parameter file and (once the
//! graphs are loaded) every graph's declared inputs and outputs, reporting every mismatch.

pub mod manifest;
mod params;
mod validate;
mod verify;

pub use manifest::*;
pub use params::{load_params, same_bits, ParamSet};
pub use validate::{expected_ports, validate_graphs, ExpectedPort};
pub use verify::{sha256_file, FileCheck, Verify};

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A package on disk with its manifest read and checked (graphs are not loaded here).
#[derive(Debug, Clone)]
pub struct Package {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Package {
    pub fn open(dir: &Path) -> Result<Package> {
        if !dir.is_dir() {
            return Err(Error::new(
                crate::error::ErrorKind::Io,
                format!(
                    "model directory {} does not exist or is not a directory",
                    dir.display()
                ),
            ));
        }
        let path = dir.join("unigrpo.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| Error::io("read manifest", &path, e))?;
        // Check the format version before the full schema, so a newer package gets the right error.
        let raw: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(format!("{}: invalid JSON: {e}", path.display())))?;
        match raw.get("format").and_then(|v| v.as_str()) {
            Some(FORMAT_NAME) => {}
            other => {
                return Err(Error::format(format!(
                    "{}: \"format\" is {other:?}, expected {FORMAT_NAME:?}",
                    path.display()
                )))
            }
        }
        match raw.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v == FORMAT_VERSION as u64 => {}
            other => {
                return Err(Error::format(format!(
                    "{}: unsupported format_version {}: this build reads version {FORMAT_VERSION}",
                    path.display(),
                    other
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "(missing)".into())
                )))
            }
        }
        let manifest: Manifest = serde_json::from_value(raw)
            .map_err(|e| Error::format(format!("{}: {e}", path.display())))?;
        let pkg = Package {
            dir: dir.to_path_buf(),
            manifest,
        };
        pkg.check_structure()?;
        Ok(pkg)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn graph_path(&self, role: &str) -> Result<PathBuf> {
        let f = self.manifest.graphs.get(role).ok_or_else(|| {
            Error::format(format!(
                "{}: graphs has no {role:?} entry",
                self.file("unigrpo.json").display()
            ))
        })?;
        Ok(self.file(f))
    }

    /// Everything that can be checked without ONNX Runtime.
    fn check_structure(&self) -> Result<()> {
        let m = &self.manifest;
        let mp = self.file("unigrpo.json");
        let mut problems = Vec::new();
        for role in GRAPH_ROLES {
            match m.graphs.get(role) {
                None => problems.push(format!("graphs: missing {role:?}")),
                Some(f) if !self.file(f).is_file() => problems.push(format!(
                    "graph {role}: file {} not found",
                    self.file(f).display()
                )),
                _ => {}
            }
        }
        for role in m.graphs.keys() {
            if !GRAPH_ROLES.contains(&role.as_str()) {
                problems.push(format!(
                    "graphs: unknown role {role:?} (version 1 knows {GRAPH_ROLES:?})"
                ));
            }
        }
        for f in [&m.tokenizer, &m.params.file] {
            if !self.file(f).is_file() {
                problems.push(format!("file {} not found", self.file(f).display()));
            }
        }
        if m.image.latent_shape.len() != 3 {
            problems.push(format!(
                "image.latent_shape must be [C, H, W], found {:?}",
                m.image.latent_shape
            ));
        }
        if m.image.image_size.len() != 2 {
            problems.push(format!(
                "image.image_size must be [H, W], found {:?}",
                m.image.image_size
            ));
        }
        for c in &m.image.conditioning {
            if c.gradient != "stop" {
                problems.push(format!(
                    "image.conditioning {}: gradient {:?} is not supported in format version 1 (only \"stop\")",
                    c.input, c.gradient
                ));
            }
            let ok = c.source == "context_ids"
                || c.source == "context_mask"
                || c.source
                    .strip_prefix("text_decode:")
                    .is_some_and(|o| !o.is_empty());
            if !ok {
                problems.push(format!(
                    "image.conditioning {}: unknown source {:?} (expected context_ids, context_mask or text_decode:<output>)",
                    c.input, c.source
                ));
            }
        }
        for (key, tpl, needs) in [
            (
                "reasoning_prompt",
                &m.template.reasoning_prompt,
                &["{prompt}"][..],
            ),
            (
                "image_context",
                &m.template.image_context,
                &["{reasoning}"][..],
            ),
            (
                "image_context_no_reasoning",
                &m.template.image_context_no_reasoning,
                &["{prompt}"][..],
            ),
        ] {
            for n in needs {
                if !tpl.contains(n) {
                    problems.push(format!("template.{key} {tpl:?} lacks {n}"));
                }
            }
        }
        for p in &m.params.tensors {
            if p.dtype != "f32" {
                problems.push(format!(
                    "params {}: dtype {:?} unsupported (f32 only)",
                    p.name, p.dtype
                ));
            }
            for g in &p.graphs {
                if !GRAPH_ROLES.contains(&g.as_str()) {
                    problems.push(format!("params {}: unknown consumer graph {g:?}", p.name));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::format(format!(
                "{}: {}",
                mp.display(),
                problems.join("; ")
            )))
        }
    }
}
