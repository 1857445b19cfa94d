//! Choosing the next token: greedy, temperature, top-k, top-p.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = off.
    pub top_k: u32,
    /// 1 = off.
    pub top_p: f32,
}

/// log_softmax(logits / temperature) in f64.
pub fn log_softmax(logits: &[f32], temperature: f32) -> Vec<f64> {
    let t = if temperature > 0.0 {
        temperature as f64
    } else {
        1.0
    };
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64 / t));
    let lse = max
        + logits
            .iter()
            .map(|&x| (x as f64 / t - max).exp())
            .sum::<f64>()
            .ln();
    logits.iter().map(|&x| x as f64 / t - lse).collect()
}

/// Pick a token. Returns (token, log-prob of it under log_softmax(logits / temperature)), the
/// unfiltered distribution: rollouts, which need these log-probs, run with top-k and top-p off.
/// Greedy (temperature 0) reports the log-prob at temperature 1.
pub fn sample_token(logits: &[f32], p: &SamplingParams, rng: &mut ChaCha8Rng) -> (usize, f32) {
    let logp = log_softmax(logits, p.temperature);
    if p.temperature <= 0.0 {
        let best = argmax(&logp);
        return (best, logp[best] as f32);
    }
    let mut order: Vec<usize> = (0..logp.len()).collect();
    let filtered = p.top_k > 0 || p.top_p < 1.0;
    if filtered {
        order.sort_by(|&a, &b| logp[b].total_cmp(&logp[a]).then(a.cmp(&b)));
        if p.top_k > 0 {
            order.truncate((p.top_k as usize).max(1));
        }
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = 0;
            for &i in &order {
                cum += logp[i].exp();
                keep += 1;
                if cum >= p.top_p as f64 {
                    break;
                }
            }
            order.truncate(keep.max(1));
        }
    }
    let total: f64 = order.iter().map(|&i| logp[i].exp()).sum();
    let u: f64 = rng.random::<f64>() * total;
    let mut cum = 0.0;
    let mut pick = *order.last().expect("non-empty vocabulary");
    for &i in &order {
        cum += logp[i].exp();
        if u < cum {
            pick = i;
            break;
        }
    }
    (pick, logp[pick] as f32)
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::stream;

    #[test]
    fn log_softmax_matches_hand_values() {
        // logits [0, ln 3] at T=1: probabilities 1/4, 3/4
        let l = log_softmax(&[0.0, 3f32.ln()], 1.0);
        assert!((l[0] - 0.25f64.ln()).abs() < 1e-6 && (l[1] - 0.75f64.ln()).abs() < 1e-6);
        // temperature 2 halves the logits: [0, ln 3 / 2] -> p1 = sqrt3 / (1 + sqrt3)
        let l = log_softmax(&[0.0, 3f32.ln()], 2.0);
        let p1 = 3f64.sqrt() / (1.0 + 3f64.sqrt());
        assert!((l[1].exp() - p1).abs() < 1e-6);
    }

    #[test]
    fn greedy_top_k_and_top_p() {
        let logits = [1.0f32, 3.0, 2.0, 0.0];
        let mut r = stream(0, 0);
        let greedy = SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
        };
        assert_eq!(sample_token(&logits, &greedy, &mut r).0, 1);
        let k1 = SamplingParams {
            temperature: 1.0,
            top_k: 1,
            top_p: 1.0,
        };
        for _ in 0..50 {
            assert_eq!(sample_token(&logits, &k1, &mut r).0, 1);
        }
        let k2 = SamplingParams {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
        };
        for _ in 0..200 {
            let t = sample_token(&logits, &k2, &mut r).0;
            assert!(t == 1 || t == 2);
        }
        // top-p 0.5: the top token alone holds p = e^3 / sum = 0.64 > 0.5
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
        };
        for _ in 0..50 {
            assert_eq!(sample_token(&logits, &p, &mut r).0, 1);
        }
    }

    #[test]
    fn sampling_frequencies_follow_the_distribution() {
        let logits = [0.0f32, 3f32.ln()];
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        };
        let mut r = stream(3, 0);
        let n = 20000;
        let ones = (0..n)
            .filter(|_| sample_token(&logits, &p, &mut r).0 == 1)
            .count();
        let f = ones as f64 / n as f64;
        assert!((f - 0.75).abs() < 0.015, "frequency {f}");
    }
}
