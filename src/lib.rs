//! unigrpo: an embeddable runtime for unified text-and-image models.
//!
//! Layout: `package` (model package format and validation), `runtime` (ONNX Runtime: library,
//! thread pool, devices, sessions), `nets` (the package's graphs as typed networks), `model`
//! (loading), `text` (tokeniser, KV-cache decoding, sampling), `sampler` (flow-matching ODE/SDE
//! steps), `generate` (the reasoning -> image pipeline), `reward` (built-in rewards), `train`
//! (UniGRPO in phases), `options` (the tables of training options, generation settings and
//! step statistics). Logging goes through the `log` facade (ONNX Runtime's own log too, target
//! "onnxruntime"). The C ABI is the `unigrpo-c` crate (bindings/c), the command line `unigrpo-cli`.

pub mod cancel;
pub mod error;
pub mod fault;
pub mod generate;
pub mod image;
pub mod model;
pub mod nets;
pub mod options;
pub mod package;
pub mod progress;
pub mod reward;
pub mod rng;
pub mod runtime;
pub mod sampler;
pub mod text;
pub mod train;

pub use cancel::CancelToken;
pub use error::{Error, ErrorKind, Result};
pub use generate::{generate_batch, GenerateParams, Generation};
pub use image::RgbImage;
pub use model::{Model, ModelOptions};
pub use options::{StepStats, TrainConfig};
pub use progress::{Progress, Stage};

/// "unigrpo 0.1.0 (onnxruntime X)": the loaded library's version once loaded, else the targeted one.
pub fn version_string() -> String {
    let ort = runtime::loaded()
        .map(|(_, v)| v)
        .unwrap_or_else(|| runtime::TARGET_ORT_VERSION.to_string());
    format!("unigrpo {} (onnxruntime {ort})", env!("CARGO_PKG_VERSION"))
}
