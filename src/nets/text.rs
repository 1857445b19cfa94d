//! The text network: `text_decode` (KV-cache decoding and the hand-off), `text_logprob` and
//! `text_logprob_vjp` (per-token log-probs of given next tokens, and their vector-Jacobian product).

use ndarray::{Array2, ArrayD, IxDyn};

use super::{feed, Grads, VjpPorts};
use crate::cancel::CancelToken;
use crate::error::Result;
use crate::package::{ParamSet, TextSpec};
use crate::runtime::{Graph, Tensor, TensorView};

pub struct TextNet {
    pub spec: TextSpec,
    decode: Graph,
    logprob: Graph,
    logprob_vjp: Graph,
    /// KV-cache input names, per layer (key, value).
    past: Vec<String>,
    vjp: VjpPorts,
    /// logits, then present_key.0, present_value.0, ...
    decode_want: Vec<String>,
}

/// A left-padded batch of sequences for the log-prob graphs: inputs and the next tokens.
pub struct LogprobBatch {
    pub ids: Array2<i64>,
    pub mask: Array2<i64>,
    pub positions: Array2<i64>,
    pub targets: Array2<i64>,
}

/// Left-padded token rows: ids, attention mask, positions (each [B, L]).
#[derive(Clone, Copy)]
pub struct Tokens<'a> {
    pub ids: &'a Array2<i64>,
    pub mask: &'a Array2<i64>,
    pub positions: &'a Array2<i64>,
}

/// One decoding step's results: the last position's logits and the grown cache.
pub struct DecodeOut {
    /// [B, T, vocab]
    pub logits: ArrayD<f32>,
    /// past_key.0, past_value.0, ... for the next step.
    pub cache: Vec<ArrayD<f32>>,
}

impl TextNet {
    pub(crate) fn new(
        spec: TextSpec,
        decode: Graph,
        logprob: Graph,
        logprob_vjp: Graph,
    ) -> TextNet {
        let past: Vec<String> = (0..spec.num_layers)
            .flat_map(|l| [format!("past_key.{l}"), format!("past_value.{l}")])
            .collect();
        let decode_want = std::iter::once("logits".to_string())
            .chain(past.iter().map(|n| n.replace("past_", "present_")))
            .collect();
        let vjp = VjpPorts::of(&logprob_vjp, "token_logprobs");
        TextNet {
            spec,
            decode,
            logprob,
            logprob_vjp,
            past,
            vjp,
            decode_want,
        }
    }

    pub(crate) fn graphs(&self) -> [(&'static str, &Graph); 3] {
        [
            ("text_decode", &self.decode),
            ("text_logprob", &self.logprob),
            ("text_logprob_vjp", &self.logprob_vjp),
        ]
    }

    /// Whether the decode graph takes the parameter `name` (the text side consumes it).
    pub fn consumes(&self, name: &str) -> bool {
        self.graphs().iter().any(|(_, g)| g.input(name).is_some())
    }

    /// The decode graph's inputs: parameters, the new tokens, the cached tokens' mask, the cache.
    fn decode_inputs<'a>(
        &'a self,
        params: &'a ParamSet,
        (ids, mask, positions): (&'a Array2<i64>, &'a Array2<i64>, &'a Array2<i64>),
        past_mask: &'a Array2<i64>,
        cache: &'a [ArrayD<f32>],
    ) -> Vec<(&'a str, TensorView<'a>)> {
        let mut inputs = feed(
            &self.decode,
            params,
            [
                ("input_ids", TensorView::I64(ids.view().into_dyn())),
                (
                    "past_attention_mask",
                    TensorView::I64(past_mask.view().into_dyn()),
                ),
                ("attention_mask", TensorView::I64(mask.view().into_dyn())),
                ("position_ids", TensorView::I64(positions.view().into_dyn())),
            ],
        );
        for (n, a) in self.past.iter().zip(cache) {
            inputs.push((n.as_str(), TensorView::F32(a.view())));
        }
        inputs
    }

    /// An empty cache for a batch of `b` rows.
    pub fn empty_cache(&self, b: usize) -> Vec<ArrayD<f32>> {
        let (h, dh) = (self.spec.num_heads, self.spec.head_dim);
        (0..2 * self.spec.num_layers)
            .map(|_| ArrayD::<f32>::zeros(IxDyn(&[b, h, 0, dh])))
            .collect()
    }

    /// One KV-cache decoding step over the new tokens `new`, after the cached ones (whose mask
    /// is `past_mask`).
    pub fn decode_step(
        &self,
        params: &ParamSet,
        new: Tokens<'_>,
        past_mask: &Array2<i64>,
        cache: &[ArrayD<f32>],
        cancel: Option<&CancelToken>,
    ) -> Result<DecodeOut> {
        let (ids, mask, positions) = (new.ids, new.mask, new.positions);
        let inputs = self.decode_inputs(params, (ids, mask, positions), past_mask, cache);
        let want: Vec<&str> = self.decode_want.iter().map(String::as_str).collect();
        let mut res = self.decode.run(&inputs, &want, cancel)?;
        let logits = res.remove(0).into_f32()?;
        let cache = res
            .into_iter()
            .map(|t| t.into_f32())
            .collect::<Result<Vec<_>>>()?;
        Ok(DecodeOut { logits, cache })
    }

    /// The decode graph's outputs `outputs` for whole contexts (a prefill with an empty cache):
    /// the hand-off the image side is conditioned on.
    pub fn handoff(
        &self,
        params: &ParamSet,
        context: Tokens<'_>,
        outputs: &[&str],
        cancel: Option<&CancelToken>,
    ) -> Result<Vec<Tensor>> {
        let (ids, mask, positions) = (context.ids, context.mask, context.positions);
        let b = ids.nrows();
        let empty = self.empty_cache(b);
        let past_mask = Array2::<i64>::zeros((b, 0));
        let inputs = self.decode_inputs(params, (ids, mask, positions), &past_mask, &empty);
        self.decode.run(&inputs, outputs, cancel)
    }

    fn logprob_inputs<'a>(
        g: &Graph,
        params: &'a ParamSet,
        b: &'a LogprobBatch,
        temp: &'a ArrayD<f32>,
    ) -> Vec<(&'a str, TensorView<'a>)> {
        feed(
            g,
            params,
            [
                ("input_ids", TensorView::I64(b.ids.view().into_dyn())),
                ("attention_mask", TensorView::I64(b.mask.view().into_dyn())),
                (
                    "position_ids",
                    TensorView::I64(b.positions.view().into_dyn()),
                ),
                ("targets", TensorView::I64(b.targets.view().into_dyn())),
                ("temperature", TensorView::F32(temp.view())),
            ],
        )
    }

    /// log_softmax(logits / temperature) at each next token: [B, T].
    pub fn token_logprobs(
        &self,
        params: &ParamSet,
        batch: &LogprobBatch,
        temperature: f32,
        cancel: Option<&CancelToken>,
    ) -> Result<ArrayD<f32>> {
        let temp = ndarray::arr0(temperature).into_dyn();
        let inputs = Self::logprob_inputs(&self.logprob, params, batch, &temp);
        self.logprob
            .run(&inputs, &["token_logprobs"], cancel)?
            .remove(0)
            .into_f32()
    }

    /// The token log-probs recomputed, and the parameter gradients of `sum(cotangent * logp)`
    /// added into `grads`.
    pub fn token_logprobs_vjp(
        &self,
        params: &ParamSet,
        batch: &LogprobBatch,
        temperature: f32,
        cotangent: &Array2<f32>,
        grads: &mut Grads,
        cancel: Option<&CancelToken>,
    ) -> Result<ArrayD<f32>> {
        let temp = ndarray::arr0(temperature).into_dyn();
        let mut inputs = Self::logprob_inputs(&self.logprob_vjp, params, batch, &temp);
        inputs.push((
            "d_token_logprobs",
            TensorView::F32(cotangent.view().into_dyn()),
        ));
        self.vjp.run(&self.logprob_vjp, &inputs, grads, cancel)
    }
}
