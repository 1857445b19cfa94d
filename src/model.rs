//! A loaded model: package, tokenizer, its typed networks and its parameters.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Result;
use crate::nets::{ImageNet, TextNet};
use crate::package::{load_params, validate_graphs, Package, ParamSet, Verify, GRAPH_ROLES};
use crate::runtime::{self, Device, Graph, SessionConfig, ThreadPool};
use crate::text::Tokenizer;

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct ModelOptions {
    /// "cpu" (default) or "cuda:N".
    pub device: String,
    /// Intra-op threads of the process-wide pool; 0 = ONNX Runtime's default (first load), or
    /// whatever the pool has (later loads).
    pub intra_threads: usize,
    /// Inter-op threads of the process-wide pool; 0 as for `intra_threads`.
    pub inter_threads: usize,
    /// Let the pool's threads spin while waiting for work (faster on an idle machine, wasteful
    /// when other work shares the cores). Must agree with the pool once it exists.
    pub allow_spinning: bool,
    /// On a GPU device, fail the load when a graph has nodes ONNX Runtime would run on the CPU
    /// (instead of logging them).
    pub strict_device: bool,
    /// Explicit libonnxruntime path (else the search order of `runtime::candidates`).
    pub onnxruntime_path: Option<PathBuf>,
    /// How the package's files are checked against its manifest before anything is loaded.
    pub verify: Verify,
    /// Prompt words the vocabulary does not know are an error (default: a warning, once per
    /// prompt, and they are read as the unknown token).
    pub strict_vocabulary: bool,
    /// Run every velocity forward with the weights as graph inputs, never through a session with
    /// a parameter set built in (`ImageNet::velocity_constant`): slower on the CPU, no extra
    /// sessions in memory. For comparisons.
    pub plain_weights: bool,
    /// Compute an off-policy update's gradients (the second and later optimiser steps of a
    /// trainer step) with a separate forward and a VJP graph that recomputes it, instead of one
    /// forward that keeps the values its backward needs (`ImageNet::velocity_saving`): slower,
    /// without the saved values' memory (about 520 MB per 80-row micro-batch of tiny-shapes).
    pub recompute_activations: bool,
    /// Run the whole velocity graph at every denoising step, instead of computing what depends
    /// on the conditioning alone once per loop (`ImageNet::prepare`): slower; for comparisons.
    pub recompute_context: bool,
}

/// The most threads of either kind a pool may have per core this process may use: more only
/// thrash (`--threads 100000` on 2 cores did not finish in 120 s).
pub const MAX_THREADS_PER_CORE: usize = 4;

fn check_threads(opts: &ModelOptions) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max = MAX_THREADS_PER_CORE * cores;
    for (name, n) in [
        ("intra_op_threads (--threads)", opts.intra_threads),
        ("inter_op_threads (--inter-threads)", opts.inter_threads),
    ] {
        if n > max {
            return Err(crate::error::Error::invalid(format!(
                "{name} is {n}: at most {MAX_THREADS_PER_CORE} x the {cores} cores this process may use ({max})"
            )));
        }
    }
    Ok(())
}

pub struct Model {
    pub package: Package,
    pub tokenizer: Tokenizer,
    pub text: TextNet,
    pub image: ImageNet,
    /// The package's parameters (the initial, reference values for training).
    pub params: Arc<ParamSet>,
    pub device: Device,
}

impl Model {
    pub fn load(dir: &Path, opts: &ModelOptions) -> Result<Model> {
        let device = Device::parse(&opts.device)?;
        check_threads(opts)?;
        let package = Package::open(dir)?;
        package.verify(opts.verify)?;
        let m = &package.manifest;
        let params = load_params(&package.file(&m.params.file), &m.params.tensors)?;
        let mut tokenizer = Tokenizer::load(&package.file(&m.tokenizer), m)?;
        tokenizer.strict_vocabulary = opts.strict_vocabulary;
        let env = runtime::environment(
            opts.onnxruntime_path.as_deref(),
            &ThreadPool {
                intra_threads: opts.intra_threads,
                inter_threads: opts.inter_threads,
                allow_spinning: opts.allow_spinning,
            },
        )?;
        let cfg = SessionConfig {
            device,
            strict_device: opts.strict_device,
        };
        let mut graphs = std::collections::BTreeMap::new();
        for role in GRAPH_ROLES {
            let path = package.graph_path(role)?;
            graphs.insert(role.to_string(), Graph::load(role, &path, &cfg, env)?);
        }
        validate_graphs(m, &graphs)?;
        let mut take = |role: &str| graphs.remove(role).expect("every role was loaded");
        let text = TextNet::new(
            m.text.clone(),
            take("text_decode"),
            take("text_logprob"),
            take("text_logprob_vjp"),
        );
        let image = ImageNet::new(
            m.image.latent_shape.clone(),
            take("velocity"),
            take("velocity_vjp"),
            take("decoder"),
            opts.plain_weights,
            opts.recompute_activations,
            opts.recompute_context,
        );
        log::info!(
            "loaded {} from {} on {}",
            m.name,
            dir.display(),
            device.name()
        );
        Ok(Model {
            package,
            tokenizer,
            text,
            image,
            params: Arc::new(params),
            device,
        })
    }

    /// Every graph with its role (for descriptions and benchmarks).
    pub fn graphs(&self) -> impl Iterator<Item = (&'static str, &Graph)> {
        self.text.graphs().into_iter().chain(self.image.graphs())
    }

    /// (calls, seconds) spent inside ONNX Runtime over all graphs.
    pub fn run_stats(&self) -> (u64, f64) {
        self.graphs()
            .map(|(_, g)| g.run_stats())
            .fold((0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    pub fn manifest(&self) -> &crate::package::Manifest {
        &self.package.manifest
    }

    /// JSON summary: name, sizes, graphs with their ports, parameter counts, defaults.
    pub fn info(&self) -> serde_json::Value {
        let m = self.manifest();
        let graphs: serde_json::Map<String, serde_json::Value> = self
            .graphs()
            .map(|(role, g)| {
                let ports = |ps: &[runtime::Port]| -> Vec<serde_json::Value> {
                    ps.iter()
                        .filter(|p| self.params.get(&p.name).is_none() && !p.name.starts_with("grad."))
                        .map(|p| serde_json::json!({"name": p.name, "dtype": p.dtype.name(), "shape": p.shape}))
                        .collect()
                };
                let n_params = g.inputs.iter().filter(|p| self.params.get(&p.name).is_some()).count();
                let bytes = std::fs::metadata(&g.path).map(|md| md.len()).unwrap_or(0);
                (
                    role.to_string(),
                    serde_json::json!({
                        "file": g.path.file_name().and_then(|f| f.to_str()).unwrap_or(""),
                        "bytes": bytes,
                        "parameter_inputs": n_params,
                        "inputs": ports(&g.inputs),
                        "outputs": ports(&g.outputs),
                    }),
                )
            })
            .collect();
        let count = |role: &str| -> usize {
            m.params
                .tensors
                .iter()
                .filter(|t| t.graphs.iter().any(|g| g == role))
                .map(|t| t.shape.iter().product::<usize>())
                .sum()
        };
        serde_json::json!({
            "name": m.name,
            "description": m.description,
            "format_version": m.format_version,
            "device": self.device.name(),
            "image_size": m.image.image_size,
            "latent_shape": m.image.latent_shape,
            "vocab_size": m.text.vocab_size,
            "conditioning": m.image.conditioning,
            "graphs": graphs,
            "parameters": {
                "tensors": m.params.tensors.len(),
                "total": self.params.count(),
                "text": count("text_logprob"),
                "image": count("velocity"),
            },
            "onnxruntime": runtime::loaded().map(|(p, v)| serde_json::json!({"path": p, "version": v})),
            "threads": runtime::pool().map(|p| serde_json::json!({
                "intra_op": p.intra_threads, "inter_op": p.inter_threads, "allow_spinning": p.allow_spinning})),
            "sampler": m.sampler,
            "generation": m.generation,
            "training": m.training,
        })
    }
}

impl AsRef<crate::package::Manifest> for Model {
    fn as_ref(&self) -> &crate::package::Manifest {
        &self.package.manifest
    }
}
