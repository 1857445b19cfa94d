//! Rewards that arrive late (`max_staleness`, `train::Pipeline`): a rollout drawn ahead draws the
//! samples of the step that consumes it; the update bounds its age; staleness 0 is the
//! synchronous trainer bit for bit; the reward's computation overlaps the next rollout (shown by
//! a reward that blocks until that rollout has reported progress, no timing); draining at a
//! checkpoint keeps a resume exact.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use common::*;
use unigrpo::reward::{Reward, Sample, ShapesReward};
use unigrpo::train::{Pipeline, StepStats, TrainConfig, Trainer};
use unigrpo::{Model, Progress, Result};

const PROMPTS: [&str; 2] = TRAIN_PROMPTS;

fn config(model: &Model, staleness: u32) -> TrainConfig {
    let mut c = small_config(model);
    c.max_staleness = staleness;
    c
}

fn flat(t: &Trainer) -> Vec<u32> {
    t.params()
        .values
        .values()
        .flat_map(|a| a.iter().map(|x| x.to_bits()))
        .collect()
}

fn without_seconds(mut s: StepStats) -> StepStats {
    s.seconds = 0.0;
    s
}

#[test]
fn staleness_zero_is_the_synchronous_trainer() {
    let model = Arc::new(load(&shapes_dir()));
    let mut a = Trainer::new(model.clone(), config(&model, 0)).unwrap();
    let mut b = Trainer::new(model.clone(), config(&model, 0)).unwrap();
    let mut p = Pipeline::new();
    for _ in 0..3 {
        let sa = a
            .step(&PROMPTS, &mut ShapesReward, None, &mut Progress::none())
            .unwrap();
        let sb = p
            .step(
                &mut b,
                &PROMPTS,
                Some(&PROMPTS),
                &mut ShapesReward,
                None,
                &mut Progress::none(),
            )
            .unwrap();
        assert!(!p.pending(), "nothing is drawn ahead at max_staleness 0");
        assert_eq!(without_seconds(sa), without_seconds(sb.stats));
    }
    assert!(flat(&a) == flat(&b));
}

#[test]
fn a_rollout_drawn_ahead_is_the_next_steps_and_its_age_is_bounded() {
    let model = Arc::new(load(&shapes_dir()));
    let mut t = Trainer::new(model.clone(), config(&model, 1)).unwrap();
    let e = t
        .rollout_ahead(&PROMPTS, 2, None, &mut Progress::none())
        .err()
        .unwrap();
    assert!(e.to_string().contains("beyond max_staleness 1"), "{e}");
    let r0 = t.rollout(&PROMPTS, None, &mut Progress::none()).unwrap();
    let r1 = t
        .rollout_ahead(&PROMPTS, 1, None, &mut Progress::none())
        .unwrap();
    let rewards0 = t
        .rewards(&r0, &mut ShapesReward, None, &mut Progress::none())
        .unwrap();
    let rewards1 = t
        .rewards(&r1, &mut ShapesReward, None, &mut Progress::none())
        .unwrap();
    // not before its step
    let e = t
        .update(&r1, &rewards1, None, &mut Progress::none())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("made at step 0 for step 1, the trainer is at step 0"),
        "{e}"
    );
    t.update(&r0, &rewards0, None, &mut Progress::none())
        .unwrap();
    // the samples of step 1, by seed: what a rollout at step 1 draws
    let sync1 = t.rollout(&PROMPTS, None, &mut Progress::none()).unwrap();
    assert_eq!(r1.seeds, sync1.seeds);
    // an on-policy rollout of step 0 is not step 1's
    let e = t
        .update(&r0, &rewards0, None, &mut Progress::none())
        .unwrap_err();
    assert!(e.to_string().contains("stale rollout"), "{e}");
    // the stale rollout's update runs the current forward and skips the consistency check
    let before = flat(&t);
    let s = t
        .update(&r1, &rewards1, None, &mut Progress::none())
        .unwrap();
    assert_eq!(s.step, 2);
    assert!(flat(&t) != before);
    // at max_staleness 0 nothing may be drawn ahead
    let mut t0 = Trainer::new(model.clone(), config(&model, 0)).unwrap();
    assert!(t0
        .rollout_ahead(&PROMPTS, 1, None, &mut Progress::none())
        .is_err());
}

/// The reward of steps 1 and 2 blocks until the main thread's rollout of the next step has
/// reported progress after the reward started: the run can only finish if they overlap.
#[test]
fn the_reward_overlaps_the_next_rollout() {
    let model = Arc::new(load(&shapes_dir()));
    let mut t = Trainer::new(model.clone(), config(&model, 1)).unwrap();
    let waiting = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU32::new(0));
    let (w, sn, n) = (waiting.clone(), seen.clone(), calls.clone());
    let mut reward = move |s: &[Sample<'_>]| -> Result<Vec<f32>> {
        let call = n.fetch_add(1, Ordering::SeqCst);
        if call < 2 {
            sn.store(false, Ordering::SeqCst);
            w.store(true, Ordering::SeqCst);
            let t0 = std::time::Instant::now();
            while !sn.load(Ordering::SeqCst) {
                if t0.elapsed().as_secs() > 120 {
                    return Err(unigrpo::Error::runtime(
                        "the next rollout never ran meanwhile",
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            w.store(false, Ordering::SeqCst);
        }
        ShapesReward.score(s)
    };
    let mut on_progress = |_: unigrpo::Stage, _: u32, _: u32| {
        if waiting.load(Ordering::SeqCst) {
            seen.store(true, Ordering::SeqCst);
        }
        true
    };
    let mut p = Pipeline::new();
    for step in 0..3u64 {
        let upcoming = (step < 2).then_some(&PROMPTS[..]);
        let s = p
            .step(
                &mut t,
                &PROMPTS,
                upcoming,
                &mut reward,
                None,
                &mut Progress::new(&mut on_progress),
            )
            .unwrap();
        assert_eq!(s.stats.step, step + 1);
        assert_eq!(p.pending(), step < 2);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// A checkpoint drains the pipeline (nothing drawn ahead across it), so a run resumed from it
/// continues exactly as the uninterrupted run.
#[test]
fn draining_at_a_checkpoint_keeps_the_resume_exact() {
    let model = Arc::new(load(&shapes_dir()));
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("c.safetensors");
    // the rule: draw ahead unless the next step ends at the checkpoint (after step 2) or the end
    let upcoming = |step: u64| (step + 1 != 2 && step + 1 < 4).then_some(&PROMPTS[..]);
    let mut a = Trainer::new(model.clone(), config(&model, 1)).unwrap();
    let mut pa = Pipeline::new();
    for step in 0..4 {
        pa.step(
            &mut a,
            &PROMPTS,
            upcoming(step),
            &mut ShapesReward,
            None,
            &mut Progress::none(),
        )
        .unwrap();
    }
    let mut b = Trainer::new(model.clone(), config(&model, 1)).unwrap();
    let mut pb = Pipeline::new();
    for step in 0..2 {
        pb.step(
            &mut b,
            &PROMPTS,
            upcoming(step),
            &mut ShapesReward,
            None,
            &mut Progress::none(),
        )
        .unwrap();
    }
    assert!(!pb.pending());
    b.save(&ckpt).unwrap();
    let mut c = Trainer::new(model.clone(), config(&model, 1)).unwrap();
    c.load(&ckpt).unwrap();
    let mut pc = Pipeline::new();
    for step in 2..4 {
        pc.step(
            &mut c,
            &PROMPTS,
            upcoming(step),
            &mut ShapesReward,
            None,
            &mut Progress::none(),
        )
        .unwrap();
    }
    assert!(flat(&a) == flat(&c), "the resumed run differs");
}
