//! The one place that talks to ONNX Runtime: the library, devices, sessions and runs.

mod library;
mod onnx_edit;
pub mod profile;
mod tensor;

pub use library::{candidates, environment, loaded, pool, ThreadPool, TARGET_ORT_VERSION};
pub use onnx_edit::Constant;
pub use tensor::{DType, Tensor, TensorView};

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use ort::session::{RunOptions, Session, SessionInputValue};
use ort::value::{DynValue, TensorRef, ValueType};

use crate::cancel::CancelToken;
use crate::error::{Error, ErrorKind, Result};

/// Where graphs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(u32),
}

impl Device {
    pub fn parse(s: &str) -> Result<Device> {
        if s.is_empty() || s == "cpu" {
            return Ok(Device::Cpu);
        }
        if let Some(n) = s.strip_prefix("cuda:") {
            if let Ok(i) = n.parse::<u32>() {
                return Ok(Device::Cuda(i));
            }
        }
        if s == "cuda" {
            return Ok(Device::Cuda(0));
        }
        Err(Error::new(
            ErrorKind::DeviceUnavailable,
            format!("unknown device {s:?}: expected \"cpu\" or \"cuda:N\""),
        ))
    }
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Cuda(i) => format!("cuda:{i}"),
        }
    }
}

/// Session settings shared by every graph of a model (threads come from the process-wide pool).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub device: Device,
    /// On a GPU: fail when ONNX Runtime would place nodes on the CPU, instead of logging them.
    pub strict_device: bool,
}

/// Declared input or output of a graph.
#[derive(Debug, Clone)]
pub struct Port {
    pub name: String,
    pub dtype: DType,
    /// -1 for a dynamic dimension.
    pub shape: Vec<i64>,
}

/// One ONNX graph with its session. `run` serialises on the session (ONNX Runtime's `run` needs
/// exclusive access in this binding).
pub struct Graph {
    pub name: String,
    pub path: PathBuf,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    session: Mutex<Session>,
    /// The serialised graph and how its session was built (`with_constants` builds more).
    bytes: std::sync::Arc<Vec<u8>>,
    cfg: SessionConfig,
    env: &'static ort::environment::Environment,
    /// Total time spent inside ONNX Runtime's `run` for this graph (for benchmarks).
    run_nanos: AtomicU64,
    runs: AtomicU64,
    /// Whether the session records ONNX Runtime's profile (`with_profiling`).
    profiled: bool,
}

fn port(name: &str, t: &ValueType, path: &Path) -> Result<Port> {
    match t {
        ValueType::Tensor { ty, shape, .. } => Ok(Port {
            name: name.to_string(),
            dtype: DType::from_ort(*ty).ok_or_else(|| {
                Error::format(format!(
                    "{}: {name} has unsupported element type {ty:?}",
                    path.display()
                ))
            })?,
            shape: shape.iter().copied().collect(),
        }),
        other => Err(Error::format(format!(
            "{}: {name} is not a tensor ({other:?})",
            path.display()
        ))),
    }
}

impl Graph {
    /// Build a session for `path`.
    pub fn load(
        name: &str,
        path: &Path,
        cfg: &SessionConfig,
        env: &'static ort::environment::Environment,
    ) -> Result<Graph> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("read graph", path, e))?;
        Self::from_bytes(name, path, std::sync::Arc::new(bytes), cfg, env)
    }

    /// A second session of this graph in which the inputs named in `constants` are constant
    /// initializers with the values given (they are no longer inputs): ONNX Runtime pre-packs
    /// them and, on the CPU, runs the convolutions in its blocked layout. Worth its build time
    /// (about twice the graph's) when many runs share the values.
    pub fn with_constants(&self, constants: &[Constant<'_>]) -> Result<Graph> {
        let frozen = onnx_edit::freeze_inputs(&self.bytes, constants)
            .map_err(|e| e.context(format!("{}", self.path.display())))?;
        Self::from_bytes(
            &self.name,
            &self.path,
            std::sync::Arc::new(frozen),
            &self.cfg,
            self.env,
        )
    }

    /// A second session of this graph (the same bytes, constants included) that records ONNX
    /// Runtime's profile of every run into a file named from `prefix`; `end_profiling` reads
    /// it back. For benchmarks: profiling costs time on every node.
    pub fn with_profiling(&self, prefix: &Path) -> Result<Graph> {
        let mut g = Self::build(
            &self.name,
            &self.path,
            self.bytes.clone(),
            &self.cfg,
            self.env,
            Some(prefix),
        )?;
        g.profiled = true;
        Ok(g)
    }

    /// Stop profiling (a session made by `with_profiling`) and summarise what it recorded.
    pub fn end_profiling(&self) -> Result<profile::Profile> {
        if !self.profiled {
            return Err(Error::invalid(format!(
                "graph {}: this session does not profile (make one with with_profiling)",
                self.name
            )));
        }
        let file = {
            let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
            session
                .end_profiling()
                .map_err(|e| Error::from(e).context(format!("graph {}", self.name)))?
        };
        profile::Profile::read(Path::new(&file))
    }

    fn from_bytes(
        name: &str,
        path: &Path,
        bytes: std::sync::Arc<Vec<u8>>,
        cfg: &SessionConfig,
        env: &'static ort::environment::Environment,
    ) -> Result<Graph> {
        Self::build(name, path, bytes, cfg, env, None)
    }

    fn build(
        name: &str,
        path: &Path,
        bytes: std::sync::Arc<Vec<u8>>,
        cfg: &SessionConfig,
        env: &'static ort::environment::Environment,
        profile: Option<&Path>,
    ) -> Result<Graph> {
        let session = build_session(&bytes, cfg, env, profile).map_err(|e| {
            let msg = e.message().to_string();
            if e.kind() == ErrorKind::DeviceUnavailable {
                e
            } else if cfg.strict_device && cfg.device != Device::Cpu {
                Error::new(
                    ErrorKind::DeviceUnavailable,
                    format!(
                        "{}: strict device mode: ONNX Runtime cannot run every node of this graph on {}: {msg}",
                        path.display(),
                        cfg.device.name()
                    ),
                )
            } else {
                Error::format(format!(
                    "{}: not a loadable ONNX graph: {msg}",
                    path.display()
                ))
            }
        })?;
        let inputs = session
            .inputs()
            .iter()
            .map(|o| port(o.name(), o.dtype(), path))
            .collect::<Result<Vec<_>>>()?;
        let outputs = session
            .outputs()
            .iter()
            .map(|o| port(o.name(), o.dtype(), path))
            .collect::<Result<Vec<_>>>()?;
        Ok(Graph {
            name: name.to_string(),
            path: path.to_path_buf(),
            inputs,
            outputs,
            session: Mutex::new(session),
            bytes,
            cfg: cfg.clone(),
            env,
            run_nanos: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            profiled: false,
        })
    }

    /// (calls, seconds) spent inside ONNX Runtime's `run` so far.
    pub fn run_stats(&self) -> (u64, f64) {
        (
            self.runs.load(Ordering::Relaxed),
            self.run_nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        )
    }

    pub fn input(&self, name: &str) -> Option<&Port> {
        self.inputs.iter().find(|p| p.name == name)
    }
    pub fn output(&self, name: &str) -> Option<&Port> {
        self.outputs.iter().find(|p| p.name == name)
    }

    /// Run with named inputs; returns the requested outputs in order (all outputs when empty).
    /// A cancelled token terminates the call and yields `ErrorKind::Cancelled`.
    pub fn run(
        &self,
        inputs: &[(&str, TensorView<'_>)],
        want: &[&str],
        cancel: Option<&CancelToken>,
    ) -> Result<Vec<Tensor>> {
        Ok(self.run_inner(inputs, None, want, &[], cancel)?.0)
    }

    /// `run`, also keeping the outputs named in `keep` as ONNX Runtime holds them (no copy), for
    /// a later `run_with_saved` of the second part of a split graph (`split_at`).
    pub fn run_saving(
        &self,
        inputs: &[(&str, TensorView<'_>)],
        want: &[&str],
        keep: &[String],
        cancel: Option<&CancelToken>,
    ) -> Result<(Vec<Tensor>, Saved)> {
        let (out, values) = self.run_inner(inputs, None, want, keep, cancel)?;
        Ok((out, Saved { values }))
    }

    /// `run` with the values `saved` (from `run_saving`) as further inputs.
    pub fn run_with_saved(
        &self,
        inputs: &[(&str, TensorView<'_>)],
        saved: &Saved,
        want: &[&str],
        cancel: Option<&CancelToken>,
    ) -> Result<Vec<Tensor>> {
        Ok(self.run_inner(inputs, Some(saved), want, &[], cancel)?.0)
    }

    /// This graph cut at the inputs `cut` (a VJP graph at its cotangents) into two sessions:
    /// the first runs what does not depend on them and also returns the values the second
    /// needs (their names, the third item); the second takes the same inputs plus those values.
    /// One forward and one backward then replace a forward followed by a VJP that recomputes it.
    pub fn split_at(&self, cut: &[&str]) -> Result<(Graph, Graph, Vec<String>)> {
        let split = onnx_edit::split_at(&self.bytes, cut)
            .map_err(|e| e.context(format!("{}", self.path.display())))?;
        let first = Self::from_bytes(
            &format!("{}.forward", self.name),
            &self.path,
            std::sync::Arc::new(split.forward),
            &self.cfg,
            self.env,
        )?;
        let second = Self::from_bytes(
            &format!("{}.backward", self.name),
            &self.path,
            std::sync::Arc::new(split.backward),
            &self.cfg,
            self.env,
        )?;
        Ok((first, second, split.saved))
    }

    fn run_inner(
        &self,
        inputs: &[(&str, TensorView<'_>)],
        extra: Option<&Saved>,
        want: &[&str],
        keep: &[String],
        cancel: Option<&CancelToken>,
    ) -> Result<(Vec<Tensor>, Kept)> {
        // ONNX Runtime needs row-major data: copy the rare view that is not.
        let owned: Vec<Option<Tensor>> = inputs
            .iter()
            .map(|(_, v)| match v {
                TensorView::F32(a) if !a.is_standard_layout() => {
                    Some(Tensor::F32(a.as_standard_layout().into_owned()))
                }
                TensorView::I64(a) if !a.is_standard_layout() => {
                    Some(Tensor::I64(a.as_standard_layout().into_owned()))
                }
                TensorView::U8(a) if !a.is_standard_layout() => {
                    Some(Tensor::U8(a.as_standard_layout().into_owned()))
                }
                _ => None,
            })
            .collect();
        let mut feed: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(inputs.len() + extra.map_or(0, |s| s.values.len()));
        for ((name, v), o) in inputs.iter().zip(&owned) {
            let v = o.as_ref().map(Tensor::view).unwrap_or_else(|| v.reborrow());
            let value: SessionInputValue<'_> = match v {
                TensorView::F32(a) => TensorRef::from_array_view(a)?.into(),
                TensorView::I64(a) => TensorRef::from_array_view(a)?.into(),
                TensorView::U8(a) => TensorRef::from_array_view(a)?.into(),
            };
            feed.push((Cow::Borrowed(*name), value));
        }
        if let Some(s) = extra {
            for (name, v) in &s.values {
                feed.push((Cow::Borrowed(name.as_str()), v.into()));
            }
        }
        let opts = std::sync::Arc::new(RunOptions::new()?);
        let _reg = cancel.map(|c| c.register(opts.clone()));
        if cancel.is_some_and(|c| c.is_cancelled()) {
            return Err(Error::cancelled());
        }
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        let outputs = session.run_with_options(feed, &*opts);
        self.run_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.runs.fetch_add(1, Ordering::Relaxed);
        let mut outputs =
            outputs.map_err(|e| Error::from(e).context(format!("graph {}", self.name)))?;
        let names: Vec<&str> = if want.is_empty() {
            self.outputs
                .iter()
                .map(|p| p.name.as_str())
                .filter(|n| !keep.iter().any(|k| k == n))
                .collect()
        } else {
            want.to_vec()
        };
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            let v = outputs.get(n).ok_or_else(|| {
                Error::format(format!("graph {}: no output named {n}", self.name))
            })?;
            out.push(
                Tensor::from_value(v)
                    .map_err(|e| e.context(format!("graph {} output {n}", self.name)))?,
            );
        }
        let mut kept = Vec::with_capacity(keep.len());
        for n in keep {
            let v = outputs.remove(n.as_str()).ok_or_else(|| {
                Error::format(format!("graph {}: no output named {n} to keep", self.name))
            })?;
            kept.push((n.clone(), v));
        }
        Ok((out, kept))
    }
}

/// Outputs a run keeps as ONNX Runtime holds them, by name.
type Kept = Vec<(String, DynValue)>;

/// Values one run of a split graph's first part keeps for its second (`Graph::run_saving`):
/// ONNX Runtime's own buffers, handed on without a copy.
pub struct Saved {
    values: Vec<(String, DynValue)>,
}

impl Saved {
    /// Bytes held (tensor elements times their size).
    pub fn bytes(&self) -> usize {
        self.values
            .iter()
            .map(|(_, v)| match v.dtype() {
                ValueType::Tensor { ty, shape, .. } => {
                    shape.iter().map(|&d| d.max(0) as usize).product::<usize>()
                        * ty.byte_size(1).unwrap_or(0)
                }
                _ => 0,
            })
            .sum()
    }
}

fn build_session(
    bytes: &[u8],
    cfg: &SessionConfig,
    env: &ort::environment::Environment,
    profile: Option<&Path>,
) -> Result<Session> {
    let mut b = Session::builder(env).map_err(Error::from)?;
    if let Some(prefix) = profile {
        b = b.with_profiling(prefix).map_err(Error::from)?;
    }
    if let Device::Cuda(id) = cfg.device {
        // The verbose session log carries ONNX Runtime's node placement report (runtime::library
        // forwards only that part of it).
        b = b
            .with_log_level(ort::logging::LogLevel::Verbose)
            .map_err(Error::from)?;
        if cfg.strict_device {
            b = b.with_disable_cpu_fallback().map_err(Error::from)?;
        }
        let ep = ort::ep::CUDA::default()
            .with_device_id(id as i32)
            .build()
            .error_on_failure();
        b = b.with_execution_providers([ep]).map_err(|e| {
            Error::new(
                ErrorKind::DeviceUnavailable,
                format!(
                    "device cuda:{id} is unavailable: {e}. It needs the onnxruntime-gpu build of libonnxruntime \
                     with libonnxruntime_providers_cuda.so beside it, the CUDA 13 runtime libraries and an NVIDIA \
                     driver (see docs/gpu.md)"
                ),
            )
        })?;
    }
    b.commit_from_memory(bytes).map_err(Error::from)
}
