//! Data-parallel training through the collective seam, ranks as threads of one process
//! (`InProcess`, a real all-reduce over shared memory): W ranks of P prompts against one trainer
//! on the W x P concatenated prompts, with the contract of docs/training.md ("Data-parallel
//! training"): the same samples by global index, bit-identical parameters and identical stats
//! on every rank, parameters norm-wise within 1e-4 of the single process's update, and a failure
//! on one rank failing every rank alike with nothing changed.

mod common;

use std::sync::Arc;

use common::*;
use unigrpo::reward::{Sample, ShapesReward};
use unigrpo::train::{Collective, InProcess, StepStats, TrainConfig, Trainer};
use unigrpo::{CancelToken, ErrorKind, Model, Progress, Result};

const PROMPTS: [&str; 4] = [
    "a red circle",
    "two blue squares",
    "a few warm-coloured shapes",
    "a circle the colour of the sky",
];
const STEPS: usize = 3;

fn flat(t: &Trainer) -> Vec<f32> {
    t.params()
        .values
        .values()
        .flat_map(|a| a.iter().copied())
        .collect()
}

fn without_seconds(mut s: StepStats) -> StepStats {
    s.seconds = 0.0;
    s
}

/// Run `world` ranks, each stepping `steps` times on its share of `prompts` with `reward(rank)`,
/// each rank's thread given its trainer after the collective is set; returns per rank what
/// `body` returns.
fn ranks<T: Send + 'static>(
    model: &Arc<Model>,
    cfg: &TrainConfig,
    world: u32,
    body: impl Fn(u32, &mut Trainer) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let body = Arc::new(body);
    let handles: Vec<_> = InProcess::world(world)
        .into_iter()
        .map(|c| {
            let (model, cfg, body) = (model.clone(), cfg.clone(), body.clone());
            std::thread::spawn(move || {
                let rank = c.rank();
                let mut t = Trainer::new(model, cfg).unwrap();
                t.set_collective(Box::new(c)).unwrap();
                body(rank, &mut t)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn share(rank: u32, world: u32) -> Vec<&'static str> {
    let p = PROMPTS.len() / world as usize;
    PROMPTS[rank as usize * p..][..p].to_vec()
}

#[test]
fn two_ranks_match_one_process() {
    let model = Arc::new(load(&shapes_dir()));
    let mut variants = vec![];
    let base = small_config(&model);
    variants.push(("defaults", base.clone()));
    let mut c = base.clone();
    c.global_std = true;
    c.text_aggregation = unigrpo::train::TextAggregation::Grpo;
    c.updates_per_step = 2;
    variants.push(("global std, grpo aggregation, 2 updates", c));
    for (what, cfg) in variants {
        let theta0: Vec<f32> = Trainer::new(model.clone(), cfg.clone())
            .map(|t| flat(&t))
            .unwrap();
        // one process on all four prompts
        let mut single = Trainer::new(model.clone(), cfg.clone()).unwrap();
        let first = single
            .rollout(&PROMPTS, None, &mut Progress::none())
            .unwrap();
        let mut single_stats = vec![];
        for _ in 0..STEPS {
            let s = single
                .step(&PROMPTS, &mut ShapesReward, None, &mut Progress::none())
                .unwrap();
            single_stats.push(s);
        }
        let theta1 = flat(&single);
        // two ranks of two prompts
        let out = ranks(&model, &cfg, 2, |rank, t| {
            let mine = share(rank, 2);
            let r = t.rollout(&mine, None, &mut Progress::none()).unwrap();
            let reasonings: Vec<String> = r.reasoning_text.clone();
            let images: Vec<Vec<u8>> = r.images.iter().map(|i| i.data.clone()).collect();
            let stats: Vec<StepStats> = (0..STEPS)
                .map(|_| {
                    t.step(&mine, &mut ShapesReward, None, &mut Progress::none())
                        .unwrap()
                })
                .collect();
            (flat(t), stats, reasonings, images)
        });
        // the samples are those of the single process, by global index
        let n = first.len() / 2;
        for (rank, o) in out.iter().enumerate() {
            assert_eq!(
                o.2,
                first.reasoning_text[rank * n..(rank + 1) * n],
                "{what}: rank {rank}'s reasonings"
            );
            let imgs: Vec<Vec<u8>> = first.images[rank * n..(rank + 1) * n]
                .iter()
                .map(|i| i.data.clone())
                .collect();
            assert!(o.3 == imgs, "{what}: rank {rank}'s images");
        }
        // bit-identical parameters and identical stats on every rank
        assert!(
            out[0]
                .0
                .iter()
                .zip(&out[1].0)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{what}: the ranks' parameters differ"
        );
        let s0: Vec<StepStats> = out[0].1.iter().cloned().map(without_seconds).collect();
        let s1: Vec<StepStats> = out[1].1.iter().cloned().map(without_seconds).collect();
        assert_eq!(s0, s1, "{what}: the ranks' stats differ");
        // norm-wise the single process's update
        let (d, moved) = (
            common::dist(&out[0].0, &theta1),
            common::dist(&theta1, &theta0),
        );
        assert!(moved > 0.0, "{what}: the single process did not move");
        assert!(
            d <= 1e-4 * moved,
            "{what}: ||theta_W - theta_1|| = {d:e} > 1e-4 x ||theta_1 - theta_0|| = {moved:e}"
        );
        // the stats are the single process's up to the reductions' f32 sums
        for (a, b) in s0.iter().zip(&single_stats) {
            assert_eq!(a.step, b.step);
            for (x, y, name) in [
                (a.reward_mean, b.reward_mean, "reward_mean"),
                (a.reward_std, b.reward_std, "reward_std"),
                (a.frac_zero_std, b.frac_zero_std, "frac_zero_std"),
                (a.loss, b.loss, "loss"),
                (a.velocity_mse, b.velocity_mse, "velocity_mse"),
                (a.grad_norm, b.grad_norm, "grad_norm"),
                (a.text_clip_frac, b.text_clip_frac, "text_clip_frac"),
            ] {
                assert!(
                    (x - y).abs() <= 1e-4 * y.abs().max(1e-3),
                    "{what}: step {} {name}: {x} on the ranks, {y} in one process",
                    a.step
                );
            }
        }
        eprintln!(
            "{what}: ||theta_W - theta_1|| / ||theta_1 - theta_0|| = {:.2e}",
            d / moved
        );
    }
}

#[test]
fn a_failure_on_one_rank_fails_every_rank_and_changes_nothing() {
    let model = Arc::new(load(&shapes_dir()));
    let cfg = small_config(&model);
    let out = ranks(&model, &cfg, 2, |rank, t| {
        let mine = share(rank, 2);
        t.step(&mine, &mut ShapesReward, None, &mut Progress::none())
            .unwrap();
        let after_one = flat(t);
        // rank 1's reward fails
        let mut failing = |s: &[Sample<'_>]| -> Result<Vec<f32>> {
            if rank == 1 {
                Err(unigrpo::Error::runtime("the judge is down"))
            } else {
                unigrpo::reward::Reward::score(&mut ShapesReward, s)
            }
        };
        let e1 = t
            .step(&mine, &mut failing, None, &mut Progress::none())
            .unwrap_err();
        let unchanged1 = flat(t) == after_one && t.step_count() == 1;
        // rank 0 is cancelled
        let cancel = CancelToken::new();
        if rank == 0 {
            cancel.cancel();
        }
        let e2 = t
            .step(
                &mine,
                &mut ShapesReward,
                Some(&cancel),
                &mut Progress::none(),
            )
            .unwrap_err();
        let unchanged2 = flat(t) == after_one && t.step_count() == 1;
        // and the next step works on both
        let s = t
            .step(&mine, &mut ShapesReward, None, &mut Progress::none())
            .unwrap();
        (e1, unchanged1, e2, unchanged2, s.step, flat(t))
    });
    for (rank, o) in out.iter().enumerate() {
        assert_eq!(o.0.kind(), ErrorKind::Callback, "rank {rank}: {}", o.0);
        assert_eq!(o.2.kind(), ErrorKind::Cancelled, "rank {rank}: {}", o.2);
        assert!(o.1 && o.3, "rank {rank} changed after a failed step");
        assert_eq!(o.4, 2);
    }
    assert!(
        out[0].0.to_string().contains("rank 1 of 2 failed"),
        "{}",
        out[0].0
    );
    assert!(
        out[1].0.to_string().contains("the judge is down"),
        "{}",
        out[1].0
    );
    assert!(
        out[1].2.to_string().contains("rank 0 of 2 failed"),
        "{}",
        out[1].2
    );
    assert!(
        out[0].5 == out[1].5,
        "the ranks' parameters differ after recovering"
    );
}
