//! `unigrpo.json`: the manifest of a model package (format version 1, see docs/model-package.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const FORMAT_NAME: &str = "unigrpo-model-package";
pub const FORMAT_VERSION: u32 = 1;

/// Graph roles every version-1 package has.
pub const GRAPH_ROLES: [&str; 6] = [
    "text_decode",
    "text_logprob",
    "text_logprob_vjp",
    "velocity",
    "velocity_vjp",
    "decoder",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub tokenizer: String,
    pub special_tokens: SpecialTokens,
    pub template: Template,
    pub max_sequence: usize,
    pub graphs: BTreeMap<String, String>,
    pub text: TextSpec,
    pub image: ImageSpec,
    pub sampler: SamplerDefaults,
    pub generation: GenerationDefaults,
    pub training: TrainingDefaults,
    pub params: ParamsSpec,
    #[serde(default)]
    pub export: serde_json::Value,
    #[serde(default)]
    pub files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecialTokens {
    pub pad: String,
    pub bos: String,
    pub begin_reasoning: String,
    pub end_reasoning: String,
    pub begin_image: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Fed to the text model before it reasons; contains `{prompt}`.
    pub reasoning_prompt: String,
    /// The image model's context with reasoning; `{prompt}` and `{reasoning}`.
    pub image_context: String,
    /// The image model's context without reasoning; `{prompt}`.
    pub image_context_no_reasoning: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSpec {
    pub vocab_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub head_dim: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// [C, H, W] of the velocity network's state.
    pub latent_shape: Vec<usize>,
    /// [H, W] of the decoded RGB image.
    pub image_size: Vec<usize>,
    pub conditioning: Vec<Conditioning>,
}

/// One velocity-graph input fed from the text side.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditioning {
    /// The velocity graph's input name.
    pub input: String,
    /// `context_ids`, `context_mask`, or `text_decode:<output>`.
    pub source: String,
    /// Version 1 supports only `stop` (no gradient through the hand-off).
    #[serde(default = "stop")]
    pub gradient: String,
}

fn stop() -> String {
    "stop".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerDefaults {
    pub steps: u32,
    pub shift: f64,
    pub noise_level: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationDefaults {
    pub max_reasoning_tokens: u32,
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingDefaults {
    pub learning_rate: f32,
    pub group_size: u32,
    pub prompts_per_step: u32,
    pub updates_per_step: u32,
    pub rollout_steps: u32,
    pub noise_level: f32,
    pub velocity_mse_weight: f32,
    pub train_timestep_fraction: f32,
    pub temperature: f32,
    pub text_clip_range: f32,
    pub image_clip_range: f32,
    pub advantage_clip: f32,
    pub weight_decay: f32,
    pub max_grad_norm: f32,
    /// Learning rate of the text-only parameter group; absent or 0 = learning_rate.
    #[serde(default)]
    pub text_learning_rate: f32,
    /// Weight of the text k3 KL against the reference model; absent = 0.
    #[serde(default)]
    pub text_kl_weight: f32,
    /// Untrained denoising steps per sample that carry the velocity MSE too; absent = 0.
    #[serde(default)]
    pub mse_anchor_steps: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamsSpec {
    pub file: String,
    pub tensors: Vec<ParamSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: String,
    /// Graph roles that take this parameter as an input.
    pub graphs: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub bytes: u64,
    pub sha256: String,
}

impl AsRef<Manifest> for Manifest {
    fn as_ref(&self) -> &Manifest {
        self
    }
}
