//! AdamW with a global gradient-norm clip over named f32 tensors, with parameter groups that
//! each have their own learning rate.

use std::collections::BTreeMap;

use ndarray::ArrayD;

use crate::package::ParamSet;

/// The parameter groups of the C contract: a tensor consumed only by text graphs, only by image
/// graphs, or by both (shared, trained at `learning_rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    Shared = 0,
    Text = 1,
    Image = 2,
}

/// The group of each parameter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParamGroups(pub BTreeMap<String, Group>);

impl ParamGroups {
    /// From which side consumes each parameter (`text(name)`, `image(name)`).
    pub fn classify(
        names: &[String],
        text: impl Fn(&str) -> bool,
        image: impl Fn(&str) -> bool,
    ) -> ParamGroups {
        ParamGroups(
            names
                .iter()
                .map(|n| {
                    let g = match (text(n), image(n)) {
                        (true, false) => Group::Text,
                        (false, true) => Group::Image,
                        _ => Group::Shared,
                    };
                    (n.clone(), g)
                })
                .collect(),
        )
    }
    pub fn of(&self, name: &str) -> Group {
        self.0.get(name).copied().unwrap_or(Group::Shared)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate of each group, indexed by `Group as usize`.
    pub lr: [f64; 3],
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// 0 = no clip.
    pub max_grad_norm: f64,
    /// Clip each group's gradient to `max_grad_norm` on its own instead of the joint norm.
    pub clip_per_group: bool,
}

/// Gradient norms before clipping: of everything and of each group (by `Group as usize`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Norms {
    pub global: f64,
    pub groups: [f64; 3],
}

/// The factor `max / (norm + 1e-6)` when `norm` exceeds `max > 0`, else 1.
pub fn clip_factor(norm: f64, max: f64) -> f64 {
    if max > 0.0 && norm > max {
        max / (norm + 1e-6)
    } else {
        1.0
    }
}

/// The gradient scale of each group: one factor from the joint norm, or one per group's norm.
pub fn clip_scales(n: &Norms, cfg: &AdamWConfig) -> [f64; 3] {
    if cfg.clip_per_group {
        n.groups.map(|g| clip_factor(g, cfg.max_grad_norm))
    } else {
        [clip_factor(n.global, cfg.max_grad_norm); 3]
    }
}

/// First and second moments per parameter, and the number of steps taken.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdamWState {
    pub t: u64,
    pub m: BTreeMap<String, ArrayD<f32>>,
    pub v: BTreeMap<String, ArrayD<f32>>,
}

/// Parameters and optimiser state: what an optimiser step changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OptimState {
    pub params: ParamSet,
    pub opt: AdamWState,
}

/// L2 norms of the gradients of each group (indexed by `Group as usize`), in one pass.
pub fn group_norms(grads: &BTreeMap<String, ArrayD<f64>>, groups: &ParamGroups) -> [f64; 3] {
    let mut sq = [0f64; 3];
    for (n, a) in grads {
        sq[groups.of(n) as usize] += a.iter().map(|x| x * x).sum::<f64>();
    }
    sq.map(f64::sqrt)
}

/// One AdamW step (decoupled weight decay); gradients are clipped first (`clip_scales`).
/// Reads the state from `src` when given (out of place: `dst` may hold stale buffers, which are
/// overwritten, so no copy of the whole state is made beforehand) or from `dst` itself. Tensors
/// without a gradient keep their values and moments. Returns the norms before clipping.
pub fn adamw_step(
    src: Option<&OptimState>,
    dst: &mut OptimState,
    grads: &BTreeMap<String, ArrayD<f64>>,
    groups: &ParamGroups,
    cfg: &AdamWConfig,
) -> Norms {
    let groups_n = group_norms(grads, groups);
    let norms = Norms {
        global: groups_n.iter().map(|x| x * x).sum::<f64>().sqrt(),
        groups: groups_n,
    };
    let scales = clip_scales(&norms, cfg);
    if let Some(src) = src {
        // the structure of dst becomes src's (same names; buffers reused where shapes agree)
        sync_into(&src.params.values, &mut dst.params.values);
        dst.params.names.clone_from(&src.params.names);
        sync_into(&src.opt.m, &mut dst.opt.m);
        sync_into(&src.opt.v, &mut dst.opt.v);
        dst.opt.t = src.opt.t;
    }
    dst.opt.t += 1;
    let t = dst.opt.t as f64;
    let (bc1, bc2) = (1.0 - cfg.beta1.powf(t), 1.0 - cfg.beta2.powf(t));
    for (name, g) in grads {
        if !dst.params.values.contains_key(name) {
            continue;
        }
        let gi = groups.of(name) as usize;
        let (lr, scale) = (cfg.lr[gi], scales[gi]);
        let shape = dst.params.values[name].raw_dim();
        let zeros = || ArrayD::<f32>::zeros(shape.clone());
        let m = dst.opt.m.entry(name.clone()).or_insert_with(zeros);
        let v = dst.opt.v.entry(name.clone()).or_insert_with(zeros);
        let p = dst.params.values.get_mut(name).expect("checked above");
        let (sp, sm, sv) = match src {
            Some(s) => (
                Some(&s.params.values[name]),
                s.opt.m.get(name),
                s.opt.v.get(name),
            ),
            None => (None, None, None),
        };
        // a moment absent from src (first step of this tensor) starts at zero
        let fresh = src.is_some() && sm.is_none();
        let (p, m, v) = (
            p.as_slice_mut().expect("contiguous"),
            m.as_slice_mut().expect("contiguous"),
            v.as_slice_mut().expect("contiguous"),
        );
        let (sp, sm, sv) = (
            sp.map(|a| a.as_slice().expect("contiguous")),
            sm.map(|a| a.as_slice().expect("contiguous")),
            sv.map(|a| a.as_slice().expect("contiguous")),
        );
        for (k, &g) in g.iter().enumerate() {
            let g = g * scale;
            let (p0, m0, v0) = match (sp, fresh) {
                (Some(sp), true) => (sp[k], 0.0, 0.0),
                (Some(sp), false) => (sp[k], sm.expect("present")[k], sv.expect("present")[k]),
                (None, _) => (p[k], m[k], v[k]),
            };
            let mn = cfg.beta1 * m0 as f64 + (1.0 - cfg.beta1) * g;
            let vn = cfg.beta2 * v0 as f64 + (1.0 - cfg.beta2) * g * g;
            m[k] = mn as f32;
            v[k] = vn as f32;
            let upd = (mn / bc1) / ((vn / bc2).sqrt() + cfg.eps);
            p[k] = (p0 as f64 * (1.0 - lr * cfg.weight_decay) - lr * upd) as f32;
        }
    }
    norms
}

/// Make `dst` hold exactly `src`'s tensors, reusing `dst`'s buffers where the shapes agree.
fn sync_into(src: &BTreeMap<String, ArrayD<f32>>, dst: &mut BTreeMap<String, ArrayD<f32>>) {
    dst.retain(|k, _| src.contains_key(k));
    for (k, a) in src {
        match dst.get_mut(k) {
            Some(d) if d.shape() == a.shape() => d.assign(a),
            _ => {
                dst.insert(k.clone(), a.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(p: Vec<f32>) -> OptimState {
        OptimState {
            params: ParamSet {
                names: vec!["w".into()],
                values: BTreeMap::from([(
                    "w".to_string(),
                    ArrayD::from_shape_vec(vec![p.len()], p).unwrap(),
                )]),
            },
            opt: AdamWState::default(),
        }
    }

    fn grads(g: Vec<f64>) -> BTreeMap<String, ArrayD<f64>> {
        BTreeMap::from([(
            "w".to_string(),
            ArrayD::from_shape_vec(vec![g.len()], g).unwrap(),
        )])
    }

    fn cfg(lr: f64, wd: f64, clip: f64) -> AdamWConfig {
        AdamWConfig {
            lr: [lr; 3],
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: wd,
            max_grad_norm: clip,
            clip_per_group: false,
        }
    }

    #[test]
    fn first_step_moves_by_lr_times_sign() {
        // Adam's first bias-corrected step is g / |g| (up to eps): p -= lr * sign(g), after decay
        let mut s = state(vec![1.0, -1.0]);
        let norm = adamw_step(
            None,
            &mut s,
            &grads(vec![0.5, -2.0]),
            &ParamGroups::default(),
            &cfg(0.1, 0.01, 0.0),
        );
        assert!((norm.global - (0.25f64 + 4.0).sqrt()).abs() < 1e-12);
        let w = &s.params.values["w"];
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
        assert_eq!(s.opt.t, 1);
    }

    #[test]
    fn clip_scales_gradients_to_the_max_norm() {
        // with clipping, the first moment holds (1 - beta1) * g * max / norm
        let mut s = state(vec![0.0, 0.0]);
        assert_eq!(
            adamw_step(
                None,
                &mut s,
                &grads(vec![3.0, 4.0]),
                &ParamGroups::default(),
                &cfg(0.1, 0.0, 1.0)
            )
            .global,
            5.0
        );
        assert!((s.opt.m["w"][0] as f64 - 0.1 * 0.6).abs() < 1e-6);
        assert!((s.opt.m["w"][1] as f64 - 0.1 * 0.8).abs() < 1e-6);
    }

    #[test]
    fn out_of_place_equals_in_place_and_leaves_the_source() {
        let g1 = grads(vec![0.3, -0.1]);
        let g2 = grads(vec![-0.2, 0.4]);
        let c = cfg(0.05, 0.01, 0.0);
        let groups = ParamGroups::default();
        let mut inplace = state(vec![0.5, 0.25]);
        adamw_step(None, &mut inplace, &g1, &groups, &c);
        let src = inplace.clone();
        adamw_step(None, &mut inplace, &g2, &groups, &c);
        // a stale destination of another shape and content is overwritten, src untouched
        let mut dst = state(vec![9.0, 9.0, 9.0]);
        dst.opt.m.insert("old".into(), ArrayD::zeros(vec![1]));
        adamw_step(Some(&src), &mut dst, &g2, &groups, &c);
        assert_eq!(dst, inplace);
        assert_eq!(src.opt.t, 1);
        // first step out of place (no moments in src)
        let fresh = state(vec![0.5, 0.25]);
        let mut a = state(vec![7.0, 7.0]);
        let mut b = fresh.clone();
        adamw_step(Some(&fresh), &mut a, &g1, &groups, &c);
        adamw_step(None, &mut b, &g1, &groups, &c);
        assert_eq!(a, b);
    }

    #[test]
    fn groups_take_their_own_learning_rate() {
        let names: Vec<String> = ["t", "i", "s"].iter().map(|s| s.to_string()).collect();
        let groups = ParamGroups::classify(&names, |n| n != "i", |n| n != "t");
        assert_eq!(
            (groups.of("t"), groups.of("i"), groups.of("s")),
            (Group::Text, Group::Image, Group::Shared)
        );
        let mut s = OptimState::default();
        let mut g = BTreeMap::new();
        for n in &names {
            s.params.names.push(n.clone());
            s.params.values.insert(n.clone(), ArrayD::zeros(vec![1]));
            g.insert(n.clone(), ArrayD::from_elem(vec![1], 1.0));
        }
        let c = AdamWConfig {
            lr: [0.1, 0.2, 0.3],
            ..cfg(0.0, 0.0, 0.0)
        };
        adamw_step(None, &mut s, &g, &groups, &c);
        // first step: p = -lr * sign(g)
        for (n, lr) in [("s", 0.1), ("t", 0.2), ("i", 0.3)] {
            assert!((s.params.values[n][0] as f64 + lr).abs() < 1e-6, "{n}");
        }
        assert!((group_norms(&g, &groups)[Group::Text as usize] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn per_group_clip_scales_each_group_by_its_own_norm() {
        // text gradient (3, 4): norm 5; image gradient 0.5: norm 0.5; max 1
        let names: Vec<String> = ["t", "i"].iter().map(|s| s.to_string()).collect();
        let groups = ParamGroups::classify(&names, |n| n == "t", |n| n == "i");
        let g = BTreeMap::from([
            (
                "t".to_string(),
                ArrayD::from_shape_vec(vec![2], vec![3.0, 4.0]).unwrap(),
            ),
            (
                "i".to_string(),
                ArrayD::from_shape_vec(vec![1], vec![0.5]).unwrap(),
            ),
        ]);
        let run = |per_group: bool| {
            let mut s = OptimState::default();
            for (n, len) in [("t", 2), ("i", 1)] {
                s.params.names.push(n.to_string());
                s.params
                    .values
                    .insert(n.to_string(), ArrayD::zeros(vec![len]));
            }
            let c = AdamWConfig {
                clip_per_group: per_group,
                ..cfg(0.1, 0.0, 1.0)
            };
            let n = adamw_step(None, &mut s, &g, &groups, &c);
            (n, s.opt.m)
        };
        let (n, joint) = run(false);
        let global = (25.0f64 + 0.25).sqrt();
        assert!((n.global - global).abs() < 1e-12);
        assert!((n.groups[Group::Text as usize] - 5.0).abs() < 1e-12);
        assert!((n.groups[Group::Image as usize] - 0.5).abs() < 1e-12);
        // joint: every gradient times 1 / 5.0249 (m = 0.1 g scale)
        let sj = 1.0 / (global + 1e-6);
        assert!((joint["i"][0] as f64 - 0.1 * 0.5 * sj).abs() < 1e-7);
        let (_, per) = run(true);
        // per group: text times 1 / 5, image unclipped (0.5 < 1)
        assert!((per["t"][0] as f64 - 0.1 * 3.0 / (5.0 + 1e-6)).abs() < 1e-7);
        assert!((per["i"][0] as f64 - 0.1 * 0.5).abs() < 1e-7);
    }
}
