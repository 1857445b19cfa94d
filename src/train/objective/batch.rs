//! Which samples an optimiser step sees, and how it splits them into VJP calls.

/// The share of optimiser step `u` of `k`: the rewarded samples at global positions u, u + k,
/// ... (groups are contiguous, so with k <= group size every group is represented in every
/// share). `offset` is the global index of `rewards[0]` (data-parallel: this rank's first
/// sample; 0 in one process).
pub fn update_share(rewards: &[f32], k: usize, u: usize, offset: usize) -> Vec<usize> {
    (0..rewards.len())
        .filter(|&i| (offset + i) % k == u && !rewards[i].is_nan())
        .collect()
}

/// Consecutive micro-batches of at most `micro` samples (0 = one batch of all).
pub fn micro_batches(samples: &[usize], micro: u32) -> Vec<&[usize]> {
    let m = if micro == 0 {
        samples.len().max(1)
    } else {
        micro as usize
    };
    samples.chunks(m).collect()
}

/// The (sample, step, anchor) rows of a micro-batch for the velocity graphs, sample-major: every
/// trained step of each sample (`trained[i]`, anchor false), then its velocity-MSE anchors
/// (`anchors[i]`, anchor true).
pub fn image_rows(
    samples: &[usize],
    trained: &[std::ops::Range<usize>],
    anchors: &[Vec<usize>],
) -> Vec<(usize, usize, bool)> {
    samples
        .iter()
        .flat_map(|&i| {
            trained[i]
                .clone()
                .map(move |j| (i, j, false))
                .chain(anchors[i].iter().map(move |&j| (i, j, true)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_interleave_and_skip_unrewarded_samples() {
        let r = [0.1, f32::NAN, 0.3, 0.4, 0.5, 0.6];
        assert_eq!(update_share(&r, 2, 0, 0), vec![0, 2, 4]);
        assert_eq!(update_share(&r, 2, 1, 0), vec![3, 5]);
        assert_eq!(update_share(&r, 1, 0, 0), vec![0, 2, 3, 4, 5]);
        // every sample is in exactly one share
        let mut all: Vec<usize> = (0..3).flat_map(|u| update_share(&r, 3, u, 0)).collect();
        all.sort();
        assert_eq!(all, vec![0, 2, 3, 4, 5]);
        // by global index: a rank whose first sample is global sample 3
        assert_eq!(update_share(&r, 2, 0, 3), vec![3, 5]);
        assert_eq!(update_share(&r, 2, 1, 3), vec![0, 2, 4]);
    }

    #[test]
    fn micro_batches_cover_the_share_in_order() {
        let s = [4, 7, 9, 10, 12];
        assert_eq!(micro_batches(&s, 2), vec![&[4, 7][..], &[9, 10], &[12]]);
        assert_eq!(micro_batches(&s, 0), vec![&s[..]]);
        assert_eq!(micro_batches(&s, 9), vec![&s[..]]);
        assert_eq!(micro_batches(&[], 0).len(), 0);
    }

    #[test]
    fn image_rows_are_sample_major() {
        let t = vec![0..2; 6];
        let none = vec![Vec::new(); 6];
        assert_eq!(
            image_rows(&[3, 5], &t, &none),
            vec![(3, 0, false), (3, 1, false), (5, 0, false), (5, 1, false)]
        );
        // SDE windows: each sample its own steps
        let w = vec![0..1, 2..4, 1..3];
        assert_eq!(
            image_rows(&[1, 2], &w, &none),
            vec![(1, 2, false), (1, 3, false), (2, 1, false), (2, 2, false)]
        );
        // velocity-MSE anchors follow each sample's trained steps
        let a = vec![vec![], vec![5], vec![3, 4]];
        assert_eq!(
            image_rows(&[1, 2], &w, &a),
            vec![
                (1, 2, false),
                (1, 3, false),
                (1, 5, true),
                (2, 1, false),
                (2, 2, false),
                (2, 3, true),
                (2, 4, true)
            ]
        );
    }
}
