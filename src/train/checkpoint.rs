//! Checkpoints (safetensors: parameters, AdamW moments, step, random state, configuration) and
//! export of a complete model package with the trained parameters. Files are written to a
//! temporary name, fsynced and renamed: a crash mid-save never destroys the previous file.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use ndarray::ArrayD;
use safetensors::{tensor::TensorView as StView, Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use super::adamw::{AdamWState, OptimState};
use super::{TrainConfig, Trainer};
use crate::error::{Error, ErrorKind, Result};
use crate::package::ParamSet;

const FORMAT: &str = "unigrpo-checkpoint";
/// 2: the configuration from the option table, the current learning rates; 3: the adaptive
/// velocity-MSE weight and a checksum of the contents (metadata "sha256").
const VERSION: u32 = 3;

fn bytes_of(a: &ArrayD<f32>) -> Vec<u8> {
    a.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A temporary name beside `path`, unique per process and call (two trainers in one process
/// never share one): `.NAME.tmp-PID-N`.
pub fn temp_beside(path: &Path) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Write `bytes` to `path` atomically (a unique temporary file, synced, renamed over `path`); the
/// temporary file is removed when anything fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_beside(path);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        let (first, second) = bytes.split_at(bytes.len() / 2);
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        f.write_all(first)
            .and_then(|()| crate::fault::hit("write", file))
            .and_then(|()| f.write_all(second))
            .map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("sync", &tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| Error::io("rename into", path, e))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res?;
    sync_parent(path);
    Ok(())
}

fn sync_parent(path: &Path) {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Put the directory `new` in the place of `dir` in one step: exchanged with an existing `dir`
/// (renameat2 RENAME_EXCHANGE) and the old one removed, or renamed into place when there is
/// none. Where the exchange is not supported, the old directory is moved aside to
/// `dir.old-PID-N` first (a crash in between leaves it there, complete).
pub fn swap_dir_into_place(new: &Path, dir: &Path) -> Result<()> {
    if !dir.exists() {
        std::fs::rename(new, dir).map_err(|e| Error::io("rename into", dir, e))?;
        sync_parent(dir);
        return Ok(());
    }
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok();
    if let (Some(a), Some(b)) = (c(new), c(dir)) {
        // SAFETY: two valid NUL-terminated paths; renameat2 only reads them.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if rc == 0 {
            // `new` now holds the old directory
            let _ = std::fs::remove_dir_all(new);
            sync_parent(dir);
            return Ok(());
        }
    }
    let aside = temp_beside(dir).with_file_name(format!(
        "{}.old-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("dir"),
        std::process::id()
    ));
    std::fs::rename(dir, &aside).map_err(|e| Error::io("move aside", dir, e))?;
    std::fs::rename(new, dir).map_err(|e| Error::io("rename into", dir, e))?;
    let _ = std::fs::remove_dir_all(&aside);
    sync_parent(dir);
    Ok(())
}

fn serialize(
    tensors: &BTreeMap<String, Vec<u8>>,
    shapes: &BTreeMap<String, Vec<usize>>,
    meta: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let typed: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, b)| (n.clone(), (Dtype::F32, shapes[n].clone(), b.clone())))
        .collect();
    serialize_typed(&typed, meta)
}

/// Serialise named tensors of any dtype (raw little-endian bytes) with string metadata.
pub fn serialize_typed(
    tensors: &BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
    meta: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let views: Vec<(String, StView<'_>)> = tensors
        .iter()
        .map(|(n, (dt, shape, b))| {
            StView::new(*dt, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::runtime(format!("tensor {n}: {e}")))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, Some(meta)).map_err(|e| Error::runtime(format!("serialise: {e}")))
}

/// The checksum a checkpoint carries (metadata "sha256"): over every tensor (name, shape, bytes)
/// in name order, then every other metadata entry in key order.
fn digest<'a>(
    tensors: impl Iterator<Item = (&'a str, &'a [usize], &'a [u8])>,
    meta: &HashMap<String, String>,
) -> String {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    for (n, shape, bytes) in tensors {
        field(n.as_bytes());
        let dims: Vec<u8> = shape
            .iter()
            .flat_map(|d| (*d as u64).to_le_bytes())
            .collect();
        field(&dims);
        field(bytes);
    }
    let mut keys: Vec<&String> = meta.keys().filter(|k| *k != "sha256").collect();
    keys.sort();
    for k in keys {
        field(k.as_bytes());
        field(meta[k].as_bytes());
    }
    format!("{:x}", h.finalize())
}

fn read_f32(st: &SafeTensors<'_>, name: &str, path: &Path) -> Result<ArrayD<f32>> {
    let t = st
        .tensor(name)
        .map_err(|_| Error::format(format!("{}: tensor {name:?} missing", path.display())))?;
    if t.dtype() != Dtype::F32 {
        return Err(Error::format(format!(
            "{}: tensor {name:?} is {:?}, expected F32",
            path.display(),
            t.dtype()
        )));
    }
    let v: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    ArrayD::from_shape_vec(t.shape().to_vec(), v)
        .map_err(|e| Error::format(format!("{}: {name}: {e}", path.display())))
}

impl Trainer {
    /// Save a checkpoint to `path` (atomic): parameters, AdamW moments, step, random state,
    /// current learning rates and the configuration.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = BTreeMap::new();
        let mut shapes = BTreeMap::new();
        let (params, opt) = (self.params(), self.optimizer());
        for (n, a) in &params.values {
            for (prefix, arr) in [
                ("param", Some(a)),
                ("adam_m", opt.m.get(n)),
                ("adam_v", opt.v.get(n)),
            ] {
                if let Some(arr) = arr {
                    tensors.insert(format!("{prefix}/{n}"), bytes_of(arr));
                    shapes.insert(format!("{prefix}/{n}"), arr.shape().to_vec());
                }
            }
        }
        let rates: Vec<serde_json::Value> = self
            .learning_rates()
            .iter()
            .map(|&r| crate::options::Value::F32(r).to_json())
            .collect();
        let meta = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("version".to_string(), VERSION.to_string()),
            ("model".to_string(), self.model().manifest().name.clone()),
            ("step".to_string(), self.step_count().to_string()),
            ("adam_t".to_string(), opt.t.to_string()),
            // the random state is the trainer's seed (a loaded checkpoint's), not config.seed
            ("seed".to_string(), self.seed.to_string()),
            (
                "learning_rates".to_string(),
                serde_json::to_string(&rates).expect("json"),
            ),
            (
                "velocity_mse_weight".to_string(),
                crate::options::Value::F32(self.mse_weight)
                    .to_json()
                    .to_string(),
            ),
            ("config".to_string(), self.config().to_json().to_string()),
        ]);
        let mut meta = meta;
        let sum = digest(
            tensors
                .iter()
                .map(|(n, b)| (n.as_str(), shapes[n].as_slice(), b.as_slice())),
            &meta,
        );
        meta.insert("sha256".to_string(), sum);
        write_atomic(path, &serialize(&tensors, &shapes, meta)?)
    }

    /// Read a checkpoint's training configuration (for `--resume` in the CLI); options the
    /// checkpoint predates take their legacy values.
    pub fn checkpoint_config(
        path: &Path,
        manifest: &crate::package::Manifest,
    ) -> Result<TrainConfig> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("read checkpoint", path, e))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::format(format!("{}: not a checkpoint: {e}", path.display())))?;
        let m = meta.metadata().clone().unwrap_or_default();
        let cfg = m
            .get("config")
            .ok_or_else(|| Error::format(format!("{}: no configuration", path.display())))?;
        let json: serde_json::Value = serde_json::from_str(cfg)
            .map_err(|e| Error::format(format!("{}: configuration: {e}", path.display())))?;
        TrainConfig::from_json(
            &json,
            TrainConfig::defaults(manifest),
            &format!("{} configuration", path.display()),
        )
    }

    /// Restore parameters, optimiser state, step, random state, learning rates and the adaptive
    /// velocity-MSE weight from `path`.
    /// The training configuration stays this trainer's; nothing changes if the file does not fit.
    /// Rollouts made before the load can no longer be used for an update.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("read checkpoint", path, e))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| {
            Error::format(format!("{}: not a valid checkpoint: {e}", path.display()))
        })?;
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::format(format!("{}: {e}", path.display())))?;
        let m = meta.metadata().clone().unwrap_or_default();
        if m.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(Error::format(format!(
                "{}: not a unigrpo checkpoint",
                path.display()
            )));
        }
        // checkpoints before version 3 carry no checksum
        if let Some(want) = m.get("sha256") {
            let mut names: Vec<&str> = st.names().into_iter().collect();
            names.sort();
            let views: Vec<_> = names.iter().map(|n| (*n, st.tensor(n))).collect();
            let got = digest(
                views
                    .iter()
                    .filter_map(|(n, t)| t.as_ref().ok().map(|t| (*n, t.shape(), t.data()))),
                &m,
            );
            if &got != want {
                return Err(Error::format(format!(
                    "{}: the checkpoint's checksum does not match its contents (sha256 {got}, recorded {want}): \
                     the file is damaged; resume from an intact copy",
                    path.display()
                )));
            }
        }
        let model = &self.model().manifest().name;
        if m.get("model") != Some(model) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{}: checkpoint of model {:?}, this trainer's model is {model:?}",
                    path.display(),
                    m.get("model")
                ),
            ));
        }
        let num = |k: &str| -> Result<u64> {
            m.get(k).and_then(|v| v.parse().ok()).ok_or_else(|| {
                Error::format(format!(
                    "{}: metadata {k:?} missing or invalid",
                    path.display()
                ))
            })
        };
        let (step, adam_t, seed) = (num("step")?, num("adam_t")?, num("seed")?);
        // version 1 checkpoints have no learning rates: the configured ones
        let rates = match m.get("learning_rates") {
            None => self.config().group_learning_rates(),
            Some(s) => {
                let v: Vec<f32> = serde_json::from_str(s).map_err(|e| {
                    Error::format(format!("{}: learning_rates {s:?}: {e}", path.display()))
                })?;
                <[f32; 3]>::try_from(v.as_slice())
                    .ok()
                    .filter(|r| r.iter().all(|x| x.is_finite() && *x > 0.0))
                    .ok_or_else(|| {
                        Error::format(format!(
                            "{}: learning_rates {s:?} are not 3 positive rates",
                            path.display()
                        ))
                    })?
            }
        };
        // checkpoints before the adaptive weight: the configured weight
        let mse_weight = match m.get("velocity_mse_weight") {
            None => self.config().velocity_mse_weight,
            Some(s) => s
                .parse::<f32>()
                .ok()
                .filter(|w| w.is_finite() && *w >= 0.0)
                .ok_or_else(|| {
                    Error::format(format!(
                        "{}: velocity_mse_weight {s:?} is not a finite weight >= 0",
                        path.display()
                    ))
                })?,
        };
        let mine = self.params();
        let mut params = ParamSet {
            names: mine.names.clone(),
            values: BTreeMap::new(),
        };
        let mut opt = AdamWState {
            t: adam_t,
            ..Default::default()
        };
        for n in &mine.names {
            let p = read_f32(&st, &format!("param/{n}"), path)?;
            if p.shape() != mine.values[n].shape() {
                return Err(Error::format(format!(
                    "{}: parameter {n:?} has shape {:?}, the model's is {:?}",
                    path.display(),
                    p.shape(),
                    mine.values[n].shape()
                )));
            }
            params.values.insert(n.clone(), p);
            for (prefix, map) in [("adam_m", &mut opt.m), ("adam_v", &mut opt.v)] {
                let key = format!("{prefix}/{n}");
                if st.names().iter().any(|k| *k == key) {
                    map.insert(n.clone(), read_f32(&st, &key, path)?);
                }
            }
        }
        self.restore(OptimState { params, opt }, step, seed, rates, mse_weight);
        Ok(())
    }

    /// Write a complete model package with the trained parameters into `dir`.
    /// The package is written into a unique temporary directory beside `dir` and swapped into
    /// place when complete (`swap_dir_into_place`), so a crash never leaves a half-written or
    /// mixed package at `dir`.
    pub fn export_model(&self, dir: &Path) -> Result<()> {
        let tmp = temp_beside(dir);
        let res = self
            .write_package(&tmp)
            .and_then(|()| {
                crate::fault::hit("export", "swap").map_err(|e| Error::io("export", dir, e))
            })
            .and_then(|()| swap_dir_into_place(&tmp, dir));
        if res.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        res
    }

    fn write_package(&self, dir: &Path) -> Result<()> {
        let src = &self.model().package;
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        let mut manifest = src.manifest.clone();
        let mut tensors = BTreeMap::new();
        let mut shapes = BTreeMap::new();
        for (n, a) in &self.params().values {
            tensors.insert(n.clone(), bytes_of(a));
            shapes.insert(n.clone(), a.shape().to_vec());
        }
        let params = serialize(
            &tensors,
            &shapes,
            HashMap::from([("format".to_string(), "unigrpo-params".to_string())]),
        )?;
        let mut files: Vec<String> = manifest.graphs.values().cloned().collect();
        files.push(manifest.tokenizer.clone());
        for f in &files {
            let bytes =
                std::fs::read(src.file(f)).map_err(|e| Error::io("read", &src.file(f), e))?;
            write_atomic(&dir.join(f), &bytes)?;
        }
        let pfile = manifest.params.file.clone();
        write_atomic(&dir.join(&pfile), &params)?;
        manifest.files.insert(
            pfile,
            crate::package::FileEntry {
                bytes: params.len() as u64,
                sha256: format!("{:x}", Sha256::digest(&params)),
            },
        );
        manifest.description = format!(
            "{} Fine-tuned with UniGRPO for {} steps.",
            manifest.description,
            self.step_count()
        );
        crate::fault::hit("export", "manifest").map_err(|e| Error::io("export", dir, e))?;
        let text = serde_json::to_string_pretty(&manifest).expect("manifest json") + "\n";
        write_atomic(&dir.join("unigrpo.json"), text.as_bytes())
    }
}
