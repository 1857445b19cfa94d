//! AdamW with a global gradient-norm clip, over named f32 tensors.

use std::collections::BTreeMap;

use ndarray::ArrayD;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// 0 = no clip.
    pub max_grad_norm: f64,
}

/// First and second moments per parameter, and the number of steps taken.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdamWState {
    pub t: u64,
    pub m: BTreeMap<String, ArrayD<f32>>,
    pub v: BTreeMap<String, ArrayD<f32>>,
}

/// Global L2 norm of all gradients.
pub fn global_norm(grads: &BTreeMap<String, ArrayD<f64>>) -> f64 {
    grads
        .values()
        .flat_map(|g| g.iter())
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
}

/// One AdamW step on `params` (decoupled weight decay); gradients are clipped to the global norm
/// first. Returns the norm before clipping.
pub fn adamw_step(
    params: &mut BTreeMap<String, ArrayD<f32>>,
    grads: &BTreeMap<String, ArrayD<f64>>,
    state: &mut AdamWState,
    cfg: &AdamWConfig,
) -> f64 {
    let norm = global_norm(grads);
    let scale = if cfg.max_grad_norm > 0.0 && norm > cfg.max_grad_norm {
        cfg.max_grad_norm / (norm + 1e-6)
    } else {
        1.0
    };
    state.t += 1;
    let t = state.t as f64;
    let (bc1, bc2) = (1.0 - cfg.beta1.powf(t), 1.0 - cfg.beta2.powf(t));
    for (name, g) in grads {
        let Some(p) = params.get_mut(name) else {
            continue;
        };
        let m = state
            .m
            .entry(name.clone())
            .or_insert_with(|| ArrayD::zeros(p.raw_dim()));
        let v = state
            .v
            .entry(name.clone())
            .or_insert_with(|| ArrayD::zeros(p.raw_dim()));
        for (((p, &g), m), v) in p
            .iter_mut()
            .zip(g.iter())
            .zip(m.iter_mut())
            .zip(v.iter_mut())
        {
            let g = g * scale;
            let mn = cfg.beta1 * *m as f64 + (1.0 - cfg.beta1) * g;
            let vn = cfg.beta2 * *v as f64 + (1.0 - cfg.beta2) * g * g;
            *m = mn as f32;
            *v = vn as f32;
            let upd = (mn / bc1) / ((vn / bc2).sqrt() + cfg.eps);
            let pv = *p as f64 * (1.0 - cfg.lr * cfg.weight_decay) - cfg.lr * upd;
            *p = pv as f32;
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_by_lr_times_sign() {
        // Adam's first bias-corrected step is g / |g| (up to eps): p -= lr * sign(g), after decay
        let mut p = BTreeMap::from([(
            "w".to_string(),
            ArrayD::from_shape_vec(vec![2], vec![1.0f32, -1.0]).unwrap(),
        )]);
        let g = BTreeMap::from([(
            "w".to_string(),
            ArrayD::from_shape_vec(vec![2], vec![0.5f64, -2.0]).unwrap(),
        )]);
        let cfg = AdamWConfig {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            max_grad_norm: 0.0,
        };
        let mut s = AdamWState::default();
        let norm = adamw_step(&mut p, &g, &mut s, &cfg);
        assert!((norm - (0.25f64 + 4.0).sqrt()).abs() < 1e-12);
        let w = &p["w"];
        assert!(
            (w[0] as f64 - (1.0 * (1.0 - 0.001) - 0.1)).abs() < 1e-6,
            "{}",
            w[0]
        );
        assert!(
            (w[1] as f64 - (-(1.0 - 0.001) + 0.1)).abs() < 1e-6,
            "{}",
            w[1]
        );
        assert_eq!(s.t, 1);
    }

    #[test]
    fn clip_scales_gradients_to_the_max_norm() {
        // with clipping, the first moment holds (1 - beta1) * g * max / norm
        let mut p = BTreeMap::from([(
            "w".to_string(),
            ArrayD::from_shape_vec(vec![2], vec![0.0f32, 0.0]).unwrap(),
        )]);
        let g = BTreeMap::from([(
            "w".to_string(),
            ArrayD::from_shape_vec(vec![2], vec![3.0f64, 4.0]).unwrap(),
        )]);
        let cfg = AdamWConfig {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
        };
        let mut s = AdamWState::default();
        assert_eq!(adamw_step(&mut p, &g, &mut s, &cfg), 5.0);
        assert!((s.m["w"][0] as f64 - 0.1 * 0.6).abs() < 1e-6);
        assert!((s.m["w"][1] as f64 - 0.1 * 0.8).abs() < 1e-6);
    }
}
