//! Flow-matching samplers (algorithm.md section 3): the shifted timestep grid, the Euler ODE step
//! and the two stochastic steps (FlowGRPO's SDE step and the coefficient-preserving CPS step),
//! both of the form `x_next = cx x + cv v + std z` with a normalised Gaussian per-step
//! log-probability. All arithmetic in f64.

pub use crate::options::SdeType;

/// The stochastic step of a denoising run: its kind and noise level `a` (0 = Euler ODE).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepNoise {
    pub level: f64,
    pub kind: SdeType,
}

impl StepNoise {
    /// The ODE sampler (no noise, no log-probs).
    pub const ODE: StepNoise = StepNoise {
        level: 0.0,
        kind: SdeType::Sde,
    };

    /// FlowGRPO's SDE step at noise level `a`.
    pub fn sde(a: f64) -> StepNoise {
        StepNoise {
            level: a,
            kind: SdeType::Sde,
        }
    }

    /// The coefficients of the stochastic step from `t` to `t_next` (`t1` the first grid point
    /// below 1), or None where the step is deterministic: no noise, or a CPS step to t = 0.
    pub fn coefficients(&self, t: f64, t_next: f64, t1: f64) -> Option<SdeCoefficients> {
        if self.level <= 0.0 {
            return None;
        }
        match self.kind {
            SdeType::Sde => Some(sde_coefficients(t, t_next, self.level, t1)),
            SdeType::Cps => (t_next > 0.0).then(|| cps_coefficients(t, t_next, self.level)),
        }
    }
}

/// `t' = s t / (1 + (s - 1) t)` on a uniform grid from 1 to 0: `steps + 1` points.
pub fn timestep_grid(steps: usize, shift: f64) -> Vec<f64> {
    (0..=steps)
        .map(|i| {
            let t = 1.0 - i as f64 / steps as f64;
            shift * t / (1.0 + (shift - 1.0) * t)
        })
        .collect()
}

/// Euler ODE step `x + v dt` with `dt = t_next - t < 0`.
pub fn euler_step(x: &[f32], v: &[f32], dt: f64, out: &mut [f32]) {
    for ((o, &x), &v) in out.iter_mut().zip(x).zip(v) {
        *o = (x as f64 + v as f64 * dt) as f32;
    }
}

/// The SDE noise scale `sigma_t = a sqrt(t / (1 - t))`; at t = 1 the denominator is `1 - t_1`
/// with `t_1` the first grid point below 1.
pub fn sde_sigma(t: f64, a: f64, t1: f64) -> f64 {
    let denom = if t >= 1.0 { 1.0 - t1 } else { 1.0 - t };
    a * (t / denom).sqrt()
}

/// Coefficients of the SDE mean `mu = cx * x + cv * v` and its std `s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SdeCoefficients {
    pub sigma: f64,
    pub cx: f64,
    pub cv: f64,
    pub std: f64,
}

pub fn sde_coefficients(t: f64, t_next: f64, a: f64, t1: f64) -> SdeCoefficients {
    let dt = t_next - t;
    let sigma = sde_sigma(t, a, t1);
    let s2 = sigma * sigma;
    SdeCoefficients {
        sigma,
        cx: 1.0 + s2 / (2.0 * t) * dt,
        cv: (1.0 + s2 * (1.0 - t) / (2.0 * t)) * dt,
        std: sigma * (-dt).sqrt(),
    }
}

/// The coefficient-preserving step (CPS, arXiv 2509.05952) from `t` to `t_next > 0` at noise
/// level `a`: with `x0_hat = x - t v` and `eps_hat = x + (1 - t) v`,
/// `x_next = (1 - t') x0_hat + t' cos(a pi / 2) eps_hat + t' sin(a pi / 2) z`, so the noise
/// share of `x_next` keeps the norm `t'` of the flow's interpolant. Written as `mu = cx x + cv v`:
/// `cx = (1 - t') + t' cos`, `cv = -t (1 - t') + t' cos (1 - t)`, `std = t' sin` (`sigma`
/// holds `std` too). flow_grpo's CPS log-prob drops the Gaussian's normaliser; here it is the
/// same normalised density as the SDE step's, so the image clip range keeps its meaning.
pub fn cps_coefficients(t: f64, t_next: f64, a: f64) -> SdeCoefficients {
    let (c, s) = (
        (a * std::f64::consts::FRAC_PI_2).cos(),
        (a * std::f64::consts::FRAC_PI_2).sin(),
    );
    SdeCoefficients {
        sigma: t_next * s,
        cx: (1.0 - t_next) + t_next * c,
        cv: -t * (1.0 - t_next) + t_next * c * (1.0 - t),
        std: t_next * s,
    }
}

/// `mu = x (1 + sigma^2 / (2 t) dt) + v (1 + sigma^2 (1 - t) / (2 t)) dt`, elementwise.
pub fn sde_mean(x: &[f32], v: &[f32], c: &SdeCoefficients, mu: &mut [f64]) {
    for ((m, &x), &v) in mu.iter_mut().zip(x).zip(v) {
        *m = c.cx * x as f64 + c.cv * v as f64;
    }
}

/// Mean over elements of the Gaussian log-density of `x_next` under N(mu, std^2).
pub fn sde_logprob(x_next: &[f32], mu: &[f64], std: f64) -> f64 {
    let n = x_next.len() as f64;
    let c = -std.ln() - (2.0 * std::f64::consts::PI).sqrt().ln();
    let inv = 1.0 / (2.0 * std * std);
    let sq: f64 = x_next
        .iter()
        .zip(mu)
        .map(|(&x, &m)| (x as f64 - m).powi(2))
        .sum();
    -sq * inv / n + c
}

/// One SDE step: `x_next = mu + std z`; returns the step's log-prob (mean over elements).
pub fn sde_step(x: &[f32], v: &[f32], z: &[f32], c: &SdeCoefficients, x_next: &mut [f32]) -> f64 {
    let mut mu = vec![0f64; x.len()];
    sde_mean(x, v, c, &mut mu);
    for ((o, &m), &z) in x_next.iter_mut().zip(&mu).zip(z) {
        *o = (m + c.std * z as f64) as f32;
    }
    sde_logprob(x_next, &mu, c.std)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_shifted_and_ends_at_zero() {
        let g = timestep_grid(4, 1.0);
        assert_eq!(g, vec![1.0, 0.75, 0.5, 0.25, 0.0]);
        let g = timestep_grid(2, 3.0);
        // t = 0.5 -> 3 * 0.5 / (1 + 2 * 0.5) = 0.75
        assert!((g[1] - 0.75).abs() < 1e-12 && g[0] == 1.0 && g[2] == 0.0);
    }

    #[test]
    fn sde_step_matches_hand_computed_values() {
        // t = 0.5, t_next = 0.25, a = 0.7: sigma = 0.7, dt = -0.25
        let c = sde_coefficients(0.5, 0.25, 0.7, 0.9);
        assert!((c.sigma - 0.7).abs() < 1e-12);
        // cx = 1 + 0.49 / 1 * (-0.25) = 0.8775 ; cv = (1 + 0.49 * 0.5 / 1) * (-0.25) = -0.31125
        assert!((c.cx - 0.8775).abs() < 1e-12, "{}", c.cx);
        assert!((c.cv + 0.31125).abs() < 1e-12, "{}", c.cv);
        assert!((c.std - 0.35).abs() < 1e-12);
        let x = [1.0f32, -2.0];
        let v = [0.5f32, 1.0];
        let z = [1.0f32, 0.0];
        let mut out = [0f32; 2];
        let lp = sde_step(&x, &v, &z, &c, &mut out);
        let mu0 = 0.8775 * 1.0 - 0.31125 * 0.5;
        let mu1 = 0.8775 * -2.0 - 0.31125 * 1.0;
        assert!((out[0] as f64 - (mu0 + 0.35)).abs() < 1e-6);
        assert!((out[1] as f64 - mu1).abs() < 1e-6);
        // mean of [-(0.35)^2/(2*0.35^2), 0] - ln 0.35 - ln sqrt(2 pi) = -0.25 - ln 0.35 - 0.918939
        let want = -0.25 - 0.35f64.ln() - 0.918_938_533_204_672_7;
        assert!((lp - want).abs() < 1e-5, "{lp} vs {want}");
    }

    #[test]
    fn cps_step_matches_hand_computed_values() {
        // t = 0.5, t' = 0.25, a = 0.5: cos = sin = sqrt(1/2) = 0.70710678
        let r = std::f64::consts::FRAC_1_SQRT_2;
        let c = cps_coefficients(0.5, 0.25, 0.5);
        // cx = 0.75 + 0.25 r ; cv = -0.5 * 0.75 + 0.25 r * 0.5 ; std = 0.25 r
        assert!((c.cx - (0.75 + 0.25 * r)).abs() < 1e-12, "{c:?}");
        assert!((c.cv - (-0.375 + 0.125 * r)).abs() < 1e-12, "{c:?}");
        assert!((c.std - 0.25 * r).abs() < 1e-12, "{c:?}");
        // the same mean from the paper's form: (1 - t') x0_hat + t' cos eps_hat
        let (x, v) = (0.8f64, -0.6f64);
        let (x0, eps) = (x - 0.5 * v, x + 0.5 * v);
        let want = 0.75 * x0 + 0.25 * r * eps;
        assert!((c.cx * x + c.cv * v - want).abs() < 1e-12);
        // coefficient preserving: on the straight path x = (1 - t) x0 + t eps with v = eps - x0,
        // the mean plus noise has signal coefficient (1 - t') and noise norm^2 t'^2
        let (x0, e) = (1.5f64, -0.5f64);
        let xt = 0.5 * x0 + 0.5 * e;
        let mu = c.cx * xt + c.cv * (e - x0);
        assert!((mu - (0.75 * x0 + 0.25 * r * e)).abs() < 1e-12);
        assert!(((0.25 * r).powi(2) + c.std.powi(2) - 0.0625).abs() < 1e-12);
        // a CPS step to t = 0 is deterministic (never trained); the SDE step has noise there
        let n = StepNoise {
            level: 0.7,
            kind: SdeType::Cps,
        };
        assert!(n.coefficients(0.25, 0.0, 0.9).is_none());
        assert!(n.coefficients(0.5, 0.25, 0.9).is_some());
        assert!(StepNoise::sde(0.7).coefficients(0.25, 0.0, 0.9).is_some());
        assert!(StepNoise::ODE.coefficients(0.5, 0.25, 0.9).is_none());
        // its log-prob is the normalised Gaussian density of sde_logprob: at x_next = mu,
        // -ln std - ln sqrt(2 pi)
        let lp = sde_logprob(&[want as f32], &[want], c.std);
        assert!((lp - (-(c.std.ln()) - 0.918_938_533_204_672_7)).abs() < 1e-6);
    }

    #[test]
    fn sigma_at_t_one_uses_the_first_grid_point() {
        let g = timestep_grid(10, 1.0);
        let s = sde_sigma(1.0, 0.7, g[1]);
        assert!((s - 0.7 * (1.0f64 / 0.1).sqrt()).abs() < 1e-9);
    }

    #[test]
    fn euler_integrates_a_linear_field_to_its_end_point() {
        // Rectified flow between x0 = 2 and noise eps = -1: v = eps - x0 = -3 everywhere on the
        // straight path, so Euler from x_1 = eps reaches x0 exactly on any grid.
        for &(steps, shift) in &[(1usize, 1.0f64), (7, 1.0), (10, 3.0)] {
            let g = timestep_grid(steps, shift);
            let mut x = vec![-1.0f32];
            for w in g.windows(2) {
                let mut next = vec![0f32];
                euler_step(&x, &[-3.0], w[1] - w[0], &mut next);
                x = next;
            }
            assert!((x[0] - 2.0).abs() < 1e-5, "steps {steps}: {}", x[0]);
        }
        // A curved field: v(x) = x, so x_t = x_1 e^(t - 1); from t = 1 to 0.5 the exact end is
        // 3 e^-0.5. Euler's error is first order: 100x more steps, about 100x smaller error.
        let err = |steps: usize| {
            let g: Vec<f64> = timestep_grid(steps, 1.0)
                .into_iter()
                .map(|t| 0.5 + 0.5 * t)
                .collect();
            let mut x = vec![3.0f32];
            for w in g.windows(2) {
                let v = [x[0]];
                let mut next = vec![0f32];
                euler_step(&x, &v, w[1] - w[0], &mut next);
                x = next;
            }
            (x[0] as f64 - 3.0 * (-0.5f64).exp()).abs()
        };
        assert!(err(1000) < 5e-4, "{}", err(1000));
        assert!(err(1000) < err(10) / 50.0);
    }
}
