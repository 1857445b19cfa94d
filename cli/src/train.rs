//! `unigrpo train` and `unigrpo rollout`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use safetensors::Dtype;

use unigrpo::reward::{self, shapes, Reward, Sample};
use unigrpo::rng::derive_seed;
use unigrpo::train::{serialize_typed, write_atomic, TrainConfig, Trainer};
use unigrpo::{Error, ErrorKind, Progress};

use super::options::TrainFlags;
use super::{ctrlc_token, RuntimeArgs};

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    rt: RuntimeArgs,
    /// Prompt file, one per line.
    #[arg(long)]
    prompts: PathBuf,
    /// shapes, or exec:COMMAND (docs/rewards.md).
    #[arg(long)]
    reward: String,
    /// Trainer steps (each: a rollout batch and its optimiser steps).
    #[arg(long)]
    steps: u64,
    #[arg(long)]
    prompts_per_step: Option<u32>,
    #[command(flatten)]
    flags: TrainFlags,
    /// Continue from a checkpoint (its configuration, overridden by the flags given).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Start over in a run directory that already holds a run (its checkpoint, metrics, samples
    /// and model are removed first).
    #[arg(long)]
    force: bool,
    /// Write the checkpoint every K steps (1 = after every step: a kill loses at most the step
    /// in flight; 0 = only at the end).
    #[arg(long, default_value_t = 1)]
    checkpoint_every: u64,
    /// Also write the checkpoint after a step that ends M minutes or more after the last one
    /// (for models whose checkpoint is slow to write: with --checkpoint-every 0, by time only; a
    /// kill then loses at most M minutes and the step in flight).
    #[arg(long, value_name = "M", value_parser = positive_minutes)]
    checkpoint_minutes: Option<f64>,
    /// Write samples.jsonl entries and a sample grid every K steps (0 = never).
    #[arg(long, default_value_t = 10)]
    samples_every: u64,
    /// Stop after this many minutes of wall time (checkpoint and export as at the end).
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Run directory: metrics.jsonl, checkpoint.safetensors, samples, model/, reward.png.
    #[arg(long)]
    out: PathBuf,
    /// Compute each step's rewards on a worker thread while the next step's rollout is drawn
    /// (rewards that arrive late: a rollout at most --max-staleness steps old, 1 when not given;
    /// nothing is drawn ahead across a checkpoint, so use --checkpoint-every K > 1 to gain).
    #[arg(long)]
    async_rewards: bool,
    /// Seconds an exec: reward may take for one step before it is killed and the step fails.
    #[arg(long, default_value_t = 600.0, value_parser = positive_seconds)]
    reward_timeout: f64,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

fn positive_minutes(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of minutes")),
    }
}

pub fn read_prompts(path: &Path) -> Result<Vec<String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read prompts", path, e))?;
    let p: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if p.is_empty() {
        return Err(Error::invalid(format!(
            "{} holds no prompts",
            path.display()
        )));
    }
    Ok(p)
}

/// Prompts of trainer step `step`: consecutive entries of a seeded permutation of the file.
fn step_prompts(all: &[String], order: &[usize], step: u64, per_step: usize) -> Vec<String> {
    (0..per_step)
        .map(|k| all[order[(step as usize * per_step + k) % all.len()]].clone())
        .collect()
}

fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by_key(|&i| derive_seed(seed, i as u64, 0x5eed));
    idx
}

/// Wraps a reward to keep the last scored batch (for samples.jsonl and the grids).
/// The reward, recording every sample it scores in a step (with dynamic sampling's resampling,
/// the replacement draws too).
struct Recording<'a> {
    inner: &'a mut (dyn Reward + Send),
    last: Vec<(String, String, f32, unigrpo::RgbImage)>,
}

impl Reward for Recording<'_> {
    fn score(&mut self, samples: &[Sample<'_>]) -> unigrpo::Result<Vec<f32>> {
        let r = self.inner.score(samples)?;
        self.last.extend(samples.iter().zip(&r).map(|(s, &v)| {
            (
                s.prompt.to_string(),
                s.reasoning.to_string(),
                v,
                s.image.clone(),
            )
        }));
        Ok(r)
    }
}

pub fn train(a: TrainArgs) -> Result<(), Error> {
    // first, so that MPI (when this process is one rank of mpirun) is finalised last
    let mut ranks = super::ranks::Ranks::detect()?;
    let lead = ranks.lead();
    let prompts = read_prompts(&a.prompts)?;
    std::fs::create_dir_all(&a.out).map_err(|e| Error::io("create", &a.out, e))?;
    let cancel = ctrlc_token();
    let mut reward = reward::from_name_with(
        &a.reward,
        &reward::ExecOptions {
            timeout: Some(std::time::Duration::from_secs_f64(a.reward_timeout)),
            cancel: Some(cancel.clone()),
            temp_root: Some(a.out.clone()),
        },
    )?;
    let model = Arc::new(a.rt.load()?);
    let mut cfg = match &a.resume {
        Some(p) => Trainer::checkpoint_config(p, model.manifest())?,
        None => TrainConfig::defaults(&*model),
    };
    a.flags.apply(&mut cfg)?;
    if a.async_rewards && cfg.max_staleness == 0 {
        cfg.max_staleness = 1;
    }
    cfg.validate()?;
    let per_step = a
        .prompts_per_step
        .unwrap_or(model.manifest().training.prompts_per_step)
        .max(1) as usize;
    let ckpt = a.out.join("checkpoint.safetensors");
    let metrics_path = a.out.join("metrics.jsonl");
    let samples_path = a.out.join("samples.jsonl");
    // rank 0 alone owns the run directory (lock, resume/force rules); the others follow it
    let setup = if lead {
        prepare_run_dir(&a, &ckpt, &metrics_path).map(Some)
    } else {
        Ok(None)
    };
    if !ranks.lead_says(setup.is_ok())? && !lead {
        return Err(Error::invalid(format!(
            "rank 0 could not set up the run directory {} (its error is in its output)",
            a.out.display()
        )));
    }
    let _lock = setup?;
    let mut trainer = Trainer::new(model.clone(), cfg.clone())?;
    if let Some(c) = ranks.trainer_collective() {
        trainer.set_collective(c)?;
    }
    let loaded = match &a.resume {
        Some(p) => trainer.load(p).map(|()| Some(p)),
        None => Ok(None),
    };
    if !ranks.all_ok(loaded.is_ok())? && loaded.is_ok() {
        return Err(Error::invalid(
            "another rank could not load the checkpoint (its error is in its output)",
        ));
    }
    if let (Some(p), true) = (loaded?, lead) {
        eprintln!(
            "resumed from {} at step {}",
            p.display(),
            trainer.step_count()
        );
        // what was logged after the checkpoint (and a torn last line) goes
        for f in [&metrics_path, &samples_path] {
            super::rundir::cut_back(f, trainer.step_count())?;
        }
    }
    let world = ranks.world as usize;
    let cfg_json = serde_json::json!({"train": cfg.to_json(), "prompts_per_step": per_step * world,
        "ranks": world, "prompts_per_step_per_rank": per_step, "prompts": a.prompts, "reward": a.reward});
    if lead {
        eprintln!("training configuration: {cfg_json}");
        if world > 1 {
            eprintln!(
                "{world} ranks x {per_step} prompts = {} prompts per step",
                world * per_step
            );
        }
        write_atomic(
            &a.out.join("config.json"),
            (serde_json::to_string_pretty(&cfg_json).expect("json") + "\n").as_bytes(),
        )?;
    }
    let order = permutation(prompts.len(), cfg.seed);
    let open_append = |p: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| Error::io("open", p, e))
    };
    let (mut metrics, mut samples_log) = if lead {
        (
            Some(open_append(&metrics_path)?),
            Some(open_append(&samples_path)?),
        )
    } else {
        (None, None)
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = if lead {
        ProgressBar::new(a.steps)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("train [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .expect("template")
            .progress_chars("=> "),
    );
    let start_step = trainer.step_count();
    bar.set_position(start_step.min(a.steps));
    let t0 = Instant::now();
    let mut last_checkpoint = Instant::now();
    let mut pipeline = unigrpo::train::Pipeline::new();
    let mut outcome = Ok(());
    while trainer.step_count() < a.steps {
        let budget = a
            .max_minutes
            .is_some_and(|m| t0.elapsed().as_secs_f64() > m * 60.0);
        // rank 0's decision: 0 = go on, 1 = the time budget is spent, 2 = it could not record
        // the last step (one process: the same, without a reduction)
        let code = match (&outcome, budget) {
            (Err(_), _) => 2.0,
            (Ok(()), true) => 1.0,
            (Ok(()), false) => 0.0,
        };
        let code = ranks.lead_values(&[code])?[0];
        if code == 1.0 {
            if lead {
                eprintln!(
                    "time budget of {} minutes reached",
                    a.max_minutes.unwrap_or(0.0)
                );
            }
            break;
        }
        if code == 2.0 {
            if !lead {
                outcome = Err(Error::runtime(
                    "rank 0 could not record a step (its error is in its output)",
                ));
            }
            break;
        }
        let step = trainer.step_count();
        // a step's global prompts; this rank rolls out its consecutive share of them
        let rank_prompts = |step: u64| {
            let global = step_prompts(&prompts, &order, step, per_step * world);
            global[ranks.rank as usize * per_step..][..per_step].to_vec()
        };
        let ps = rank_prompts(step);
        let refs: Vec<&str> = ps.iter().map(String::as_str).collect();
        let mut rec = Recording {
            inner: reward.as_mut(),
            last: vec![],
        };
        let stepped = if a.async_rewards {
            // draw the next step's rollout while these rewards are computed, unless a checkpoint
            // (by steps) or the end comes first: a resumed run must draw it after loading
            let next = step + 1;
            let upcoming = (next < a.steps
                && !(a.checkpoint_every > 0 && next % a.checkpoint_every == 0))
                .then(|| rank_prompts(next));
            let up: Option<Vec<&str>> = upcoming
                .as_ref()
                .map(|u| u.iter().map(String::as_str).collect());
            pipeline
                .step(
                    &mut trainer,
                    &refs,
                    up.as_deref(),
                    &mut rec,
                    Some(&cancel),
                    &mut Progress::none(),
                )
                .map(|s| s.stats)
        } else {
            trainer.step(&refs, &mut rec, Some(&cancel), &mut Progress::none())
        };
        match stepped {
            Ok(s) => {
                let mut record = || -> Result<(), Error> {
                    // the independent check on the score: distance to the nearest clean render
                    // of what the analysis found (rises when the policy hacks the reward)
                    let clean = rec
                        .last
                        .iter()
                        .map(|(_, _, _, img)| shapes::clean_render_distance(img))
                        .sum::<f64>()
                        / rec.last.len().max(1) as f64;
                    let Some(metrics) = metrics.as_mut() else {
                        return Ok(()); // another rank than 0: rank 0 records the step
                    };
                    let mut line = s.to_json();
                    line["clean_distance"] = serde_json::json!(clean);
                    writeln!(metrics, "{line}")
                        .and_then(|()| unigrpo::fault::hit("metrics-line", ""))
                        .map_err(|e| Error::io("write", &metrics_path, e))?;
                    bar.set_position(s.step);
                    let adaptive = if trainer.config().velocity_mse_target > 0.0 {
                        format!(", mse weight {:.3e}", s.velocity_mse_weight)
                    } else {
                        String::new()
                    };
                    let msg = format!(
                        "reward {:.3} ± {:.3}, clean distance {clean:.4}, loss {:+.4}, velocity mse {:.2e}{adaptive}, {:.2} s/step",
                        s.reward_mean, s.reward_std, s.loss, s.velocity_mse, s.seconds
                    );
                    if tty {
                        bar.set_message(msg);
                    } else {
                        // a log file or pipe gets one plain line per step instead of the bar
                        eprintln!("step {}/{}: {msg}", s.step, a.steps);
                    }
                    if a.samples_every > 0 && (s.step % a.samples_every == 0 || s.step == 1) {
                        for (p, r, v, _) in &rec.last {
                            let line = serde_json::json!({"step": s.step, "prompt": p, "reasoning": r, "reward": v});
                            let log = samples_log.as_mut().expect("rank 0's");
                            writeln!(log, "{line}")
                                .map_err(|e| Error::io("write", &samples_path, e))?;
                        }
                        let items: Vec<super::eval::Scored> = rec
                            .last
                            .iter()
                            .take(48)
                            .map(|(p, r, v, img)| super::eval::Scored::with_value(p, r, img, *v))
                            .collect();
                        super::grid::write_grid(
                            &a.out.join(format!("samples-{:05}.png", s.step)),
                            &items,
                        )?;
                    }
                    let by_steps = a.checkpoint_every > 0 && s.step % a.checkpoint_every == 0;
                    let by_time = a
                        .checkpoint_minutes
                        .is_some_and(|m| last_checkpoint.elapsed().as_secs_f64() >= m * 60.0);
                    if by_steps || by_time {
                        trainer.save(&ckpt)?;
                        last_checkpoint = Instant::now();
                        // nothing drawn ahead crosses a checkpoint (a by-time one drops it)
                        pipeline.drain();
                    }
                    Ok(())
                };
                if let Err(e) = record() {
                    outcome = Err(e);
                    if world == 1 {
                        break;
                    } // several ranks: rank 0 tells the others at the top of the loop
                }
            }
            Err(e) if e.kind() == ErrorKind::Cancelled => {
                eprintln!("cancelled: writing a final checkpoint");
                outcome = Err(e);
                break;
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    bar.finish();
    if world > 1 {
        let (secs, calls) = ranks.reduce_time();
        eprintln!(
            "rank {} of {world}: {:.2} s in {calls} all-reduce calls over {:.1} s; step {}, parameter hash {:016x}",
            ranks.rank,
            secs,
            t0.elapsed().as_secs_f64(),
            trainer.step_count(),
            unigrpo::train::params_hash(trainer.params())
        );
    }
    if !lead {
        return outcome;
    }
    // a final checkpoint whatever failed (a full disk may refuse it too: then both are reported)
    if let Err(e) = trainer.save(&ckpt) {
        return Err(match outcome {
            Ok(()) => e,
            Err(first) => Error::new(
                first.kind(),
                format!("{first}; the final checkpoint failed too: {e}"),
            ),
        });
    }
    eprintln!(
        "checkpoint at step {}: {}",
        trainer.step_count(),
        ckpt.display()
    );
    if let Err(e) = write_reward_plot(&metrics_path, &a.out.join("reward.png")) {
        log::warn!("reward.png not written: {e}");
    }
    if outcome.is_ok() {
        trainer.export_model(&a.out.join("model"))?;
        eprintln!(
            "{} steps in {:.0} s; checkpoint {}, model {}",
            trainer.step_count() - start_step,
            t0.elapsed().as_secs_f64(),
            ckpt.display(),
            a.out.join("model").display()
        );
    }
    outcome
}

/// Rank 0's run directory: its lock, leftovers of a killed run removed, and the rule that a
/// fresh run over an existing one needs --resume or --force.
fn prepare_run_dir(
    a: &TrainArgs,
    ckpt: &Path,
    metrics_path: &Path,
) -> Result<super::rundir::Lock, Error> {
    let lock = super::rundir::lock(&a.out)?;
    super::rundir::remove_leftovers(&a.out);
    if a.resume.is_none() {
        if ckpt.exists() && !a.force {
            return Err(Error::invalid(format!(
                "{} already holds a run: pass --resume {} to continue it, or --force to start over",
                a.out.display(),
                ckpt.display()
            )));
        }
        if ckpt.exists() || metrics_path.exists() {
            // --force, or logs of a run stopped before its first checkpoint (nothing to resume)
            if !ckpt.exists() {
                eprintln!(
                    "{} holds logs but no checkpoint (a run stopped before its first one): starting over",
                    a.out.display()
                );
            }
            super::rundir::clear(&a.out)?;
        }
    }
    Ok(lock)
}

fn write_reward_plot(metrics: &Path, out: &Path) -> Result<(), Error> {
    let text = std::fs::read_to_string(metrics).map_err(|e| Error::io("read", metrics, e))?;
    let rows: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect();
    let series = |key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|v| Some((v["step"].as_f64()?, v[key].as_f64()?)))
            .collect()
    };
    let (reward, clean) = (series("reward_mean"), series("clean_distance"));
    if reward.is_empty() {
        return Ok(());
    }
    let mut panels = vec![("reward_mean per step", reward)];
    if !clean.is_empty() {
        panels.push((
            "clean_distance per step (the score's independent check)",
            clean,
        ));
    }
    super::grid::write_line_plots(out, &panels)
}

#[derive(Args)]
pub struct RolloutArgs {
    #[command(flatten)]
    rt: RuntimeArgs,
    #[arg(long)]
    prompt: String,
    #[arg(long)]
    reward: String,
    #[command(flatten)]
    flags: TrainFlags,
    /// Output file (safetensors; format in docs/rollout-dump.md).
    #[arg(long)]
    dump: PathBuf,
}

fn f32_bytes(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn rollout_cmd(a: RolloutArgs) -> Result<(), Error> {
    let mut reward = reward::from_name(&a.reward)?;
    let model = Arc::new(a.rt.load()?);
    let mut cfg = TrainConfig::defaults(&*model);
    a.flags.apply(&mut cfg)?;
    cfg.updates_per_step = 1;
    // the trainer's first rollout: sample k uses derive_seed(seed, 0, k)
    let mut trainer = Trainer::new(model.clone(), cfg.clone())?;
    let g = cfg.group_size as usize;
    let r = trainer.rollout(&[a.prompt.as_str()], None, &mut Progress::none())?;
    let rewards = trainer.rewards(&r, reward.as_mut(), None, &mut Progress::none())?;
    let (adv, _) = trainer.advantages(&r, &rewards);
    let shape = model.manifest().image.latent_shape.clone();
    let t = cfg.num_steps as usize;
    let l = r
        .reasoning
        .iter()
        .map(|x| x.tokens.len())
        .max()
        .unwrap_or(0);
    let mut tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    let mut put = |name: &str, dt: Dtype, shape: Vec<usize>, bytes: Vec<u8>| {
        tensors.insert(name.to_string(), (dt, shape, bytes));
    };
    let lat_shape = |n: usize| [vec![g, n], shape.clone()].concat();
    put(
        "latents",
        Dtype::F32,
        lat_shape(t + 1),
        f32_bytes(r.traj.latents.iter().flatten().flatten().copied()),
    );
    put(
        "velocities",
        Dtype::F32,
        lat_shape(t),
        f32_bytes(r.traj.velocities.iter().flatten().flatten().copied()),
    );
    put(
        "timesteps",
        Dtype::F32,
        vec![t + 1],
        f32_bytes(r.traj.grid.iter().map(|&x| x as f32)),
    );
    put(
        "image_logprobs",
        Dtype::F32,
        vec![g, t],
        f32_bytes(r.traj.logprobs.iter().flatten().map(|&x| x as f32)),
    );
    put(
        "noise_level",
        Dtype::F32,
        vec![1],
        f32_bytes([cfg.noise_level]),
    );
    let pad = model.tokenizer.pad;
    let mut ids = Vec::new();
    let mut lps = Vec::new();
    let mut mask = Vec::new();
    for x in &r.reasoning {
        for k in 0..l {
            ids.extend(x.tokens.get(k).copied().unwrap_or(pad).to_le_bytes());
            lps.push(x.logprobs.get(k).copied().unwrap_or(0.0));
            mask.push((k < x.tokens.len()) as u8);
        }
    }
    put("token_ids", Dtype::I64, vec![g, l], ids);
    put("token_logprobs", Dtype::F32, vec![g, l], f32_bytes(lps));
    put("token_mask", Dtype::U8, vec![g, l], mask);
    put(
        "truncated",
        Dtype::U8,
        vec![g],
        r.reasoning.iter().map(|x| x.truncated as u8).collect(),
    );
    put(
        "rewards",
        Dtype::F32,
        vec![g],
        f32_bytes(rewards.iter().copied()),
    );
    put(
        "advantages",
        Dtype::F32,
        vec![g],
        f32_bytes(adv.iter().copied()),
    );
    let meta = HashMap::from([
        ("format".to_string(), "unigrpo-rollout".to_string()),
        ("prompt".to_string(), a.prompt.clone()),
        (
            "reasoning".to_string(),
            serde_json::to_string(&r.reasoning_text).expect("json"),
        ),
        ("seed".to_string(), cfg.seed.to_string()),
        ("model".to_string(), model.manifest().name.clone()),
        ("config".to_string(), cfg.to_json().to_string()),
    ]);
    write_atomic(&a.dump, &serialize_typed(&tensors, meta)?)?;
    for k in 0..g {
        println!(
            "{k:>3}  reward {:.3}  advantage {:+.3}  {}",
            rewards[k], adv[k], r.reasoning_text[k]
        );
    }
    eprintln!("wrote {}", a.dump.display());
    Ok(())
}
