//! The text side: tokenisation with the package's template, and KV-cache decoding.

mod decode;
mod sampling;
mod tokenizer;

pub use decode::{decode_reasoning, DecodeSettings, Reasoning};
pub use sampling::{log_softmax, sample_token, SamplingParams};
pub use tokenizer::Tokenizer;

use ndarray::Array2;

/// A left-padded batch of token sequences (the layout every text-side graph takes).
pub struct Padded {
    /// [B, L], `pad` where there is no token.
    pub ids: Array2<i64>,
    /// [B, L], 1 for a real token.
    pub mask: Array2<i64>,
    /// [B, L], the number of real tokens before each one; 0 for padding.
    pub positions: Array2<i64>,
}

/// Left-pad `seqs` to the longest.
pub fn left_pad<S: AsRef<[i64]>>(seqs: &[S], pad: i64) -> Padded {
    let l = seqs.iter().map(|s| s.as_ref().len()).max().unwrap_or(0);
    let b = seqs.len();
    let mut p = Padded {
        ids: Array2::from_elem((b, l), pad),
        mask: Array2::zeros((b, l)),
        positions: Array2::zeros((b, l)),
    };
    for (i, s) in seqs.iter().enumerate() {
        let s = s.as_ref();
        let off = l - s.len();
        for (j, &t) in s.iter().enumerate() {
            p.ids[[i, off + j]] = t;
            p.mask[[i, off + j]] = 1;
            p.positions[[i, off + j]] = j as i64;
        }
    }
    p
}
