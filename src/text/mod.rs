//! The text side: tokenisation with the package's template, and KV-cache decoding.

mod decode;
mod sampling;
mod tokenizer;

pub use decode::{decode_reasoning, DecodeSettings, Reasoning};
pub use sampling::{log_softmax, sample_token, SamplingParams};
pub use tokenizer::Tokenizer;
