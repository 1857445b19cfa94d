//! Batched KV-cache decoding of the reasoning with the `text_decode` graph.
//!
//! Rows are left-padded; `position_ids` count each row's real tokens. A finished row is fed the
//! pad token with mask 0 until every row is done: one graph call per decoding step for the batch.

use ndarray::{s, Array2, Axis};
use rand_chacha::ChaCha8Rng;

use super::sampling::{sample_token, SamplingParams};
use super::Tokenizer;
use crate::cancel::CancelToken;
use crate::error::{Error, Result};
use crate::nets::{TextNet, Tokens};
use crate::progress::{Progress, Stage};

#[derive(Debug, Clone)]
pub struct DecodeSettings {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
}

/// One row's reasoning: the sampled tokens (with the end-of-reasoning token when it came), their
/// log-probs under log_softmax(logits / temperature), and whether `max_new_tokens` cut it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reasoning {
    pub tokens: Vec<i64>,
    pub logprobs: Vec<f32>,
    pub truncated: bool,
}

impl Reasoning {
    /// The reasoning tokens without the end token.
    pub fn content(&self, end: i64) -> &[i64] {
        match self.tokens.last() {
            Some(&t) if t == end => &self.tokens[..self.tokens.len() - 1],
            _ => &self.tokens,
        }
    }
}

/// Decode a reasoning for every prompt row (`prompts[i]` are token ids), one rng per row.
#[allow(clippy::too_many_arguments)]
pub fn decode_reasoning(
    net: &TextNet,
    tok: &Tokenizer,
    params: &crate::package::ParamSet,
    prompts: &[Vec<i64>],
    settings: &DecodeSettings,
    rngs: &mut [ChaCha8Rng],
    cancel: Option<&CancelToken>,
    progress: &mut Progress<'_>,
) -> Result<Vec<Reasoning>> {
    let b = prompts.len();
    let mut out: Vec<Reasoning> = (0..b)
        .map(|_| Reasoning {
            tokens: vec![],
            logprobs: vec![],
            truncated: false,
        })
        .collect();
    if b == 0 || settings.max_new_tokens == 0 {
        for r in &mut out {
            r.truncated = settings.max_new_tokens == 0;
        }
        return Ok(out);
    }
    let super::Padded {
        mut ids,
        mut mask,
        mut positions,
    } = super::left_pad(prompts, tok.pad);
    let mut next_pos: Vec<i64> = prompts.iter().map(|p| p.len() as i64).collect();
    let mut past_mask = Array2::<i64>::zeros((b, 0));
    let mut kv = net.empty_cache(b);
    let mut done = vec![false; b];
    let max_new = settings.max_new_tokens;
    for step in 0..max_new {
        progress.report(Stage::Reasoning, step as u32, max_new as u32, cancel)?;
        let res = net.decode_step(
            params,
            Tokens {
                ids: &ids,
                mask: &mask,
                positions: &positions,
            },
            &past_mask,
            &kv,
            cancel,
        )?;
        let logits = res.logits;
        let t_len = logits.shape()[1];
        let mut new_ids = Array2::<i64>::from_elem((b, 1), tok.pad);
        let mut new_mask = Array2::<i64>::zeros((b, 1));
        let mut new_pos = Array2::<i64>::zeros((b, 1));
        for i in 0..b {
            if done[i] {
                continue;
            }
            let row = logits.slice(s![i, t_len - 1, ..]);
            let row: Vec<f32> = row.iter().copied().collect();
            let (t, lp) = sample_token(&row, &settings.sampling, &mut rngs[i]);
            let t = t as i64;
            out[i].tokens.push(t);
            out[i].logprobs.push(lp);
            if t == tok.end_reasoning {
                done[i] = true;
            } else if out[i].tokens.len() >= max_new {
                done[i] = true;
                out[i].truncated = true;
            } else {
                new_ids[[i, 0]] = t;
                new_mask[[i, 0]] = 1;
                new_pos[[i, 0]] = next_pos[i];
                next_pos[i] += 1;
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
        past_mask = ndarray::concatenate(Axis(1), &[past_mask.view(), mask.view()])
            .map_err(|e| Error::runtime(format!("mask concat: {e}")))?;
        kv = res.cache;
        ids = new_ids;
        mask = new_mask;
        positions = new_pos;
    }
    Ok(out)
}
