//! Group-relative advantages (algorithm.md section 2).

/// Per-sample advantages for rewards grouped by `groups[i]` (group id of sample i).
/// NaN rewards are excluded (their advantage is NaN too). Population std + 1e-4; with
/// `global_std` the std is taken over every rewarded sample of the step. Clipped to +-`clip`.
/// Returns (advantages, number of groups with zero spread).
pub fn group_advantages(
    rewards: &[f32],
    groups: &[usize],
    global_std: bool,
    clip: f32,
) -> (Vec<f32>, Vec<bool>) {
    let global = global_std.then(|| {
        let (sum, n) = finite_sum(rewards);
        (deviation_sum(rewards, sum / n.max(1) as f64) / n.max(1) as f64).sqrt()
    });
    group_advantages_with(rewards, groups, global, clip)
}

/// The sum and count of the rewarded (non-NaN) values.
pub fn finite_sum(rewards: &[f32]) -> (f64, usize) {
    rewards
        .iter()
        .filter(|r| !r.is_nan())
        .fold((0.0, 0), |(s, n), &r| (s + r as f64, n + 1))
}

/// The sum of squared deviations of the rewarded values from `mean`.
pub fn deviation_sum(rewards: &[f32], mean: f64) -> f64 {
    rewards
        .iter()
        .filter(|r| !r.is_nan())
        .map(|&r| (r as f64 - mean).powi(2))
        .sum()
}

/// `group_advantages` with the std given: `Some(s)` divides every group by `s` (the global std,
/// over one process's batch or, data-parallel, over every rank's), None by each group's own.
pub fn group_advantages_with(
    rewards: &[f32],
    groups: &[usize],
    global: Option<f64>,
    clip: f32,
) -> (Vec<f32>, Vec<bool>) {
    let n_groups = groups.iter().copied().max().map_or(0, |g| g + 1);
    let mut sum = vec![0f64; n_groups];
    let mut cnt = vec![0usize; n_groups];
    for (&r, &g) in rewards.iter().zip(groups) {
        if !r.is_nan() {
            sum[g] += r as f64;
            cnt[g] += 1;
        }
    }
    let mean: Vec<f64> = sum
        .iter()
        .zip(&cnt)
        .map(|(&s, &c)| if c > 0 { s / c as f64 } else { 0.0 })
        .collect();
    let mut var = vec![0f64; n_groups];
    for (&r, &g) in rewards.iter().zip(groups) {
        if !r.is_nan() {
            var[g] += (r as f64 - mean[g]).powi(2);
        }
    }
    let group_std: Vec<f64> = var
        .iter()
        .zip(&cnt)
        .map(|(&v, &c)| if c > 0 { (v / c as f64).sqrt() } else { 0.0 })
        .collect();
    let zero_spread: Vec<bool> = (0..n_groups)
        .map(|g| cnt[g] > 0 && group_std[g] == 0.0)
        .collect();
    let adv = rewards
        .iter()
        .zip(groups)
        .map(|(&r, &g)| {
            if r.is_nan() {
                return f32::NAN;
            }
            if zero_spread[g] {
                return 0.0; // all equal: zero advantage, never NaN
            }
            let std = global.unwrap_or(group_std[g]);
            (((r as f64 - mean[g]) / (std + 1e-4)) as f32).clamp(-clip, clip)
        })
        .collect();
    (adv, zero_spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_group_advantages() {
        // group 0: [1, 0, 0, 1] mean 0.5 std 0.5 -> +-0.5 / 0.5001
        // group 1: [0.3, 0.3] zero spread; group 2: [0.2, NaN, 0.8] mean 0.5 std 0.3
        let r = [1.0, 0.0, 0.0, 1.0, 0.3, 0.3, 0.2, f32::NAN, 0.8];
        let g = [0, 0, 0, 0, 1, 1, 2, 2, 2];
        let (a, zero) = group_advantages(&r, &g, false, 5.0);
        let e = 0.5 / 0.5001;
        for (x, w) in a[..4].iter().zip([e, -e, -e, e]) {
            assert!((*x as f64 - w).abs() < 1e-6);
        }
        assert_eq!(&a[4..6], &[0.0, 0.0]);
        assert_eq!(zero, vec![false, true, false]);
        assert!(a[7].is_nan());
        assert!((a[6] as f64 + 0.3 / 0.3001).abs() < 1e-5, "{}", a[6]);
        // clip
        let (a, _) = group_advantages(&[0.0, 0.0, 0.0, 1.0], &[0, 0, 0, 0], false, 1.0);
        assert_eq!(a[3], 1.0);
    }

    #[test]
    fn global_std_uses_every_sample() {
        // groups [0, 1] and [2, 4]: global std of [0, 1, 2, 4] = sqrt(2.1875)
        let (a, _) = group_advantages(&[0.0, 1.0, 2.0, 4.0], &[0, 0, 1, 1], true, 5.0);
        let s = 2.1875f64.sqrt() + 1e-4;
        assert!((a[0] as f64 + 0.5 / s).abs() < 1e-6);
        assert!((a[3] as f64 - 1.0 / s).abs() < 1e-6);
    }
}
