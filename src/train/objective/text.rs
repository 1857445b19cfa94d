//! The text GRPO terms (algorithm.md section 4, "Text"): token-level clipped ratios against the
//! rollout's log-probs, the optional k3 KL against the reference, normalised over the share as
//! `text_aggregation` says; gradients through `text_logprob_vjp`.

use ndarray::Array2;

use super::{batch, Grads, Mode, Objective, Pass, Terms};
use crate::error::Result;
use crate::nets::LogprobBatch;
use crate::train::losses::{clip_binds, clipped_surrogate, k3, k3_grad_logp, surrogate_grad_logp};
use crate::train::rollout::Rollout;

/// One reasoning token's term before the normalisers: the policy part (normalised over the
/// share's tokens, or with dynamic sampling over those of groups with a reward spread) and the
/// k3 regulariser (always over the share's tokens).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenTerm {
    /// -min(rho A, clip(rho) A)
    pub policy: f64,
    /// d policy / d logp (0 exactly where the clip binds)
    pub policy_grad: f64,
    /// k3 against the reference (0 without one)
    pub kl: f64,
    /// beta d k3 / d logp
    pub kl_grad: f64,
    pub clipped: bool,
    beta: f64,
}

impl TokenTerm {
    /// The token's loss with the policy part weighted `wp` and the regulariser `wr`.
    pub fn loss(&self, wp: f64, wr: f64) -> f64 {
        self.policy * wp + self.beta * self.kl * wr
    }
    /// d loss / d logp with the same weights.
    pub fn grad(&self, wp: f64, wr: f64) -> f64 {
        self.policy_grad * wp + self.kl_grad * wr
    }
}

/// The GRPO term of a token with advantage `a`, current and rollout log-probs `lp`, `old`, and
/// the reference log-prob when the k3 term is on (`beta` > 0).
pub fn token_term(
    a: f64,
    lp: f64,
    old: f64,
    reference: Option<f64>,
    eps: f64,
    beta: f64,
) -> TokenTerm {
    let rho = (lp - old).exp();
    let (kl, kl_grad) = match reference {
        Some(lr) => (k3(lp, lr), beta * k3_grad_logp(lp, lr)),
        None => (0.0, 0.0),
    };
    TokenTerm {
        policy: -clipped_surrogate(a, rho, eps),
        policy_grad: surrogate_grad_logp(a, rho, eps),
        kl,
        kl_grad,
        clipped: clip_binds(a, rho, eps),
        beta,
    }
}

/// The log-prob graphs' batch for samples `samples`: inputs are each sequence (prompt then
/// reasoning) without its last token, targets the sequence shifted by one; and for each sample
/// the columns of its reasoning tokens' log-probs.
pub fn logprob_batch(
    r: &Rollout,
    samples: &[usize],
    pad: i64,
) -> (LogprobBatch, Vec<std::ops::Range<usize>>) {
    let seqs: Vec<Vec<i64>> = samples
        .iter()
        .map(|&i| [r.prompt_ids[i].as_slice(), r.reasoning[i].tokens.as_slice()].concat())
        .collect();
    let inputs: Vec<&[i64]> = seqs.iter().map(|s| &s[..s.len() - 1]).collect();
    let targets: Vec<&[i64]> = seqs.iter().map(|s| &s[1..]).collect();
    let p = crate::text::left_pad(&inputs, pad);
    let n = p.ids.ncols();
    let cols = samples
        .iter()
        .map(|&i| n - r.reasoning[i].tokens.len()..n)
        .collect();
    (
        LogprobBatch {
            targets: crate::text::left_pad(&targets, pad).ids,
            ids: p.ids,
            mask: p.mask,
            positions: p.positions,
        },
        cols,
    )
}

/// The text terms of `pass.share`, gradients added into `grads`.
pub fn terms(
    o: &Objective<'_>,
    pass: &Pass<'_>,
    grads: &mut Grads,
    terms: &mut Terms,
) -> Result<()> {
    let (r, cfg, net) = (o.rollout, o.config, &o.model.text);
    let lengths: Vec<usize> = pass
        .share
        .iter()
        .map(|&i| r.reasoning[i].tokens.len())
        .collect();
    if lengths.iter().all(|&l| l == 0) {
        return Ok(());
    }
    // the regulariser's normaliser counts every token of the share; the policy's leaves out
    // the groups dynamic sampling skips
    let policy_lengths: Vec<usize> = pass
        .share
        .iter()
        .zip(&lengths)
        .map(|(&i, &l)| if o.in_policy_normaliser(i) { l } else { 0 })
        .collect();
    let c = o.counts_for(pass.share);
    let agg = cfg.text_aggregation;
    let mut weight = vec![(0.0, 0.0); r.len()];
    for ((&i, wp), wr) in pass
        .share
        .iter()
        .zip(agg.token_weights_over(&policy_lengths, c.text_policy_tokens, c.text_policy_seqs))
        .zip(agg.token_weights_over(&lengths, c.text_tokens, c.text_seqs))
    {
        weight[i] = (wp, wr);
    }
    let (eps, beta) = (cfg.text_clip_range as f64, cfg.text_kl_weight as f64);
    let cancel = pass.cancel;
    // a policy that has not moved from the reference has its log-probs: the k3 term is exactly
    // zero there (a second graph's log-probs would differ by rounding noise)
    let at_reference = beta > 0.0 && pass.params.same_values(o.reference);
    for mb in batch::micro_batches(pass.share, cfg.micro_batch_size) {
        let (tb, cols) = logprob_batch(r, mb, o.model.tokenizer.pad);
        let current = match pass.mode {
            Mode::OnPolicy => None,
            _ => Some(net.token_logprobs(pass.params, &tb, r.temperature, cancel)?),
        };
        let refs = if beta > 0.0 && !at_reference {
            Some(net.token_logprobs(o.reference, &tb, r.temperature, cancel)?)
        } else {
            None
        };
        let mut cot = Array2::<f32>::zeros(tb.ids.raw_dim());
        let mut any = false;
        for (k, &i) in mb.iter().enumerate() {
            let a = o.advantages[i] as f64;
            let (wp, wr) = weight[i];
            for (t, col) in cols[k].clone().enumerate() {
                let old = r.reasoning[i].logprobs[t] as f64;
                let lp = current.as_ref().map_or(old, |c| c[[k, col]] as f64);
                let tt = token_term(
                    a,
                    lp,
                    old,
                    match &refs {
                        Some(rf) => Some(rf[[k, col]] as f64),
                        None if at_reference => Some(lp),
                        None => None,
                    },
                    eps,
                    beta,
                );
                terms.text_kl += tt.kl * wr;
                terms.text_loss += tt.loss(wp, wr);
                terms.text_clipped += tt.clipped as usize;
                terms.text_tokens += 1;
                terms.kl_sum += 0.5 * (lp - old).powi(2);
                terms.kl_n += 1;
                let g = tt.grad(wp, wr);
                cot[[k, col]] = g as f32;
                any |= g != 0.0;
            }
        }
        if pass.mode == Mode::LossOnly || (!any && pass.mode != Mode::OnPolicy) {
            continue;
        }
        let recomputed =
            net.token_logprobs_vjp(pass.params, &tb, r.temperature, &cot, grads, cancel)?;
        if pass.mode == Mode::OnPolicy {
            for (k, &i) in mb.iter().enumerate() {
                for (t, col) in cols[k].clone().enumerate() {
                    let d = (recomputed[[k, col]] - r.reasoning[i].logprobs[t]).abs() as f64;
                    terms.text_consistency = terms.text_consistency.max(d);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_term_by_hand() {
        // on-policy (rho = 1): loss -A, grad -A, no clip
        let t = token_term(0.5, -1.0, -1.0, None, 0.2, 0.0);
        assert_eq!(
            (t.loss(1.0, 1.0), t.grad(1.0, 1.0), t.clipped),
            (-0.5, -0.5, false)
        );
        // A > 0 and rho = e^0.3 > 1.2: the clip binds, the gradient is exactly 0
        let t = token_term(2.0, -0.7, -1.0, None, 0.2, 0.0);
        assert!(t.clipped && t.grad(1.0, 1.0) == 0.0);
        assert!((t.loss(1.0, 1.0) + 2.0 * 1.2).abs() < 1e-12, "{t:?}");
        // k3 at logp = ref is 0 with zero gradient; away from it, beta (1 - e^(ref - lp))
        let t = token_term(0.0, -1.0, -1.0, Some(-1.0), 0.2, 0.5);
        assert_eq!((t.kl, t.grad(1.0, 1.0)), (0.0, 0.0));
        let t = token_term(0.0, -1.0, -1.0, Some(-2.0), 0.2, 0.5);
        let k3 = (-1.0f64).exp() - (-1.0) - 1.0;
        assert!((t.kl - k3).abs() < 1e-12 && (t.loss(1.0, 1.0) - 0.5 * k3).abs() < 1e-12);
        assert!((t.grad(1.0, 1.0) - 0.5 * (1.0 - (-1.0f64).exp())).abs() < 1e-12);
        // the two parts take their own normalisers: policy 0.25, regulariser 0.5
        let t = token_term(2.0, -1.0, -1.0, Some(-2.0), 0.2, 0.5);
        assert!((t.loss(0.25, 0.5) - (-2.0 * 0.25 + 0.5 * k3 * 0.5)).abs() < 1e-12);
        let kg = 0.5 * (1.0 - (-1.0f64).exp());
        assert!((t.grad(0.25, 0.5) - (-2.0 * 0.25 + kg * 0.5)).abs() < 1e-12);
    }
}
