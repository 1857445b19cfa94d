//! The UniGRPO loss terms and their derivatives (algorithm.md sections 4 and 5), one function per
//! formula. Values are per element; the trainer applies the normalisers.

/// True when the PPO clip binds for advantage `a` and ratio `rho` (the gradient is then 0).
pub fn clip_binds(a: f64, rho: f64, eps: f64) -> bool {
    (a > 0.0 && rho > 1.0 + eps) || (a < 0.0 && rho < 1.0 - eps)
}

/// Clipped surrogate to *maximise*: `min(rho A, clip(rho, 1 - eps, 1 + eps) A)`.
pub fn clipped_surrogate(a: f64, rho: f64, eps: f64) -> f64 {
    (rho * a).min(rho.clamp(1.0 - eps, 1.0 + eps) * a)
}

/// d(-surrogate)/d(logp) with `rho = exp(logp - logp_old)`: `-A rho`, or 0 when the clip binds.
pub fn surrogate_grad_logp(a: f64, rho: f64, eps: f64) -> f64 {
    if clip_binds(a, rho, eps) {
        0.0
    } else {
        -a * rho
    }
}

/// k3 estimator of KL(pi || ref): `exp(ref - logp) - (ref - logp) - 1`.
pub fn k3(logp: f64, logp_ref: f64) -> f64 {
    let d = logp_ref - logp;
    d.exp() - d - 1.0
}

/// d k3 / d logp = `1 - exp(ref - logp)`.
pub fn k3_grad_logp(logp: f64, logp_ref: f64) -> f64 {
    1.0 - (logp_ref - logp).exp()
}

/// Velocity MSE `mean((v - v_ref)^2)` and its gradient `2 (v - v_ref) / D` written into `grad`
/// scaled by `scale`.
pub fn velocity_mse(v: &[f32], v_ref: &[f32], scale: f64, grad: &mut [f64]) -> f64 {
    let d = v.len() as f64;
    let mut s = 0.0;
    for ((g, &a), &b) in grad.iter_mut().zip(v).zip(v_ref) {
        let diff = a as f64 - b as f64;
        s += diff * diff;
        *g += scale * 2.0 * diff / d;
    }
    s / d
}

/// d logp_j / d v (elementwise) for the SDE step: `c_v (x_next - mu) / (D s^2)`, accumulated into
/// `grad` scaled by `scale`.
pub fn sde_logprob_grad_v(
    x_next: &[f32],
    mu: &[f64],
    cv: f64,
    std: f64,
    scale: f64,
    grad: &mut [f64],
) {
    let d = x_next.len() as f64;
    let k = scale * cv / (d * std * std);
    for ((g, &x), &m) in grad.iter_mut().zip(x_next).zip(mu) {
        *g += k * (x as f64 - m);
    }
}

/// FlowGRPO's latent KL `mean((mu - mu_ref)^2) / (2 sigma^2)` and its gradient with respect to v,
/// `c_v (mu - mu_ref) / (D sigma^2)`, accumulated into `grad` scaled by `scale`.
pub fn latent_kl(
    mu: &[f64],
    mu_ref: &[f64],
    cv: f64,
    sigma: f64,
    scale: f64,
    grad: &mut [f64],
) -> f64 {
    let d = mu.len() as f64;
    let mut s = 0.0;
    for ((g, &a), &b) in grad.iter_mut().zip(mu).zip(mu_ref) {
        s += (a - b).powi(2);
        *g += scale * cv * (a - b) / (d * sigma * sigma);
    }
    s / d / (2.0 * sigma * sigma)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_surrogate_hand_values() {
        // A = 2, rho = 1.5, eps 0.2: min(3, 1.2 * 2 = 2.4) = 2.4, clip binds, gradient 0
        assert!((clipped_surrogate(2.0, 1.5, 0.2) - 2.4).abs() < 1e-12);
        assert_eq!(surrogate_grad_logp(2.0, 1.5, 0.2), 0.0);
        // A = -1, rho = 1.5: min(-1.5, -1.2) = -1.5, not clipped, d(-s)/dlogp = -A rho = 1.5
        assert!((clipped_surrogate(-1.0, 1.5, 0.2) + 1.5).abs() < 1e-12);
        assert!((surrogate_grad_logp(-1.0, 1.5, 0.2) - 1.5).abs() < 1e-12);
        // A = -1, rho = 0.5: clipped at 0.8 -> min(-0.5, -0.8) = -0.8, binds
        assert!((clipped_surrogate(-1.0, 0.5, 0.2) + 0.8).abs() < 1e-12);
        assert_eq!(surrogate_grad_logp(-1.0, 0.5, 0.2), 0.0);
        // on-policy: rho = 1, gradient -A
        assert_eq!(surrogate_grad_logp(0.7, 1.0, 0.2), -0.7);
    }

    #[test]
    fn k3_hand_values_and_derivative() {
        // logp = -1, ref = -2: d = -1 -> e^-1 + 1 - 1 = 0.367879
        assert!((k3(-1.0, -2.0) - (-1f64).exp()).abs() < 1e-12);
        assert_eq!(k3(-0.5, -0.5), 0.0);
        let h = 1e-6;
        let fd = (k3(-1.0 + h, -2.0) - k3(-1.0 - h, -2.0)) / (2.0 * h);
        assert!((fd - k3_grad_logp(-1.0, -2.0)).abs() < 1e-8);
    }

    #[test]
    fn velocity_mse_hand_values() {
        let mut g = vec![0.0; 2];
        let m = velocity_mse(&[1.0, 3.0], &[0.0, 1.0], 1.0, &mut g);
        assert!((m - 2.5).abs() < 1e-12); // (1 + 4) / 2
        assert_eq!(g, vec![1.0, 2.0]); // 2 * [1, 2] / 2
    }

    #[test]
    fn sde_logprob_derivative_matches_finite_differences() {
        use crate::sampler::{sde_coefficients, sde_logprob, sde_mean};
        let c = sde_coefficients(0.6, 0.5, 0.7, 0.9);
        let x = [0.3f32, -0.7, 1.1];
        let v = [0.2f32, 0.5, -0.4];
        let x_next = [0.25f32, -0.6, 1.0];
        let lp = |v: &[f32]| {
            let mut mu = vec![0.0; 3];
            sde_mean(&x, v, &c, &mut mu);
            sde_logprob(&x_next, &mu, c.std)
        };
        let mut mu = vec![0.0; 3];
        sde_mean(&x, &v, &c, &mut mu);
        let mut g = vec![0.0; 3];
        sde_logprob_grad_v(&x_next, &mu, c.cv, c.std, 1.0, &mut g);
        for k in 0..3 {
            let h = 1e-3f32;
            let (mut a, mut b) = (v, v);
            a[k] += h;
            b[k] -= h;
            let fd = (lp(&a) - lp(&b)) / (2.0 * h as f64);
            assert!(
                (fd - g[k]).abs() < 1e-4 * g[k].abs().max(1.0),
                "{k}: {fd} vs {}",
                g[k]
            );
        }
    }

    #[test]
    fn latent_kl_is_exact_kl_times_dt() {
        use crate::sampler::sde_coefficients;
        let c = sde_coefficients(0.6, 0.5, 0.7, 0.9);
        let (mu, mu_ref) = ([0.1, 0.4], [0.0, 0.2]);
        let mut g = vec![0.0; 2];
        let kl = latent_kl(&mu, &mu_ref, c.cv, c.sigma, 1.0, &mut g);
        let exact: f64 = mu
            .iter()
            .zip(&mu_ref)
            .map(|(a, b)| (a - b) * (a - b) / (2.0 * c.std * c.std))
            .sum::<f64>()
            / 2.0;
        assert!((kl - exact * 0.1).abs() < 1e-12, "{kl} vs {}", exact * 0.1);
        // gradient: d/dv of mean((mu - mu_ref)^2) / (2 sigma^2) with dmu/dv = cv
        assert!((g[0] - c.cv * 0.1 / (2.0 * c.sigma * c.sigma)).abs() < 1e-12);
    }
}
