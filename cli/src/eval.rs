//! `unigrpo eval`: batched generation over a prompt file, scored by a built-in reward.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use unigrpo::reward::shapes;
use unigrpo::rng::derive_seed;
use unigrpo::{generate_batch, Error, Progress};

use super::{ctrlc_token, RuntimeArgs, SamplingArgs};

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    rt: RuntimeArgs,
    /// Prompt file, one per line (blank lines and lines starting with # are skipped).
    #[arg(long)]
    prompts: PathBuf,
    /// Built-in reward: shapes.
    #[arg(long, default_value = "shapes")]
    reward: String,
    /// Samples per prompt; sample j of prompt i uses a seed derived from (seed, i, j).
    #[arg(long, default_value_t = 1)]
    samples: u32,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Samples per batched call.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Write one JSON line per image: prompt, kind, reasoning, score, all_met, unmet (the
    /// constraints missed, e.g. "group 2 count", "relation"), clean_distance.
    #[arg(long)]
    records: Option<PathBuf>,
    /// Write a labelled grid of samples (PNG).
    #[arg(long)]
    grid: Option<PathBuf>,
}

pub struct Scored {
    pub prompt: String,
    pub reasoning: String,
    pub image: unigrpo::RgbImage,
    pub value: f32,
    pub all_met: bool,
}

impl Scored {
    pub fn with_value(
        prompt: &str,
        reasoning: &str,
        image: &unigrpo::RgbImage,
        value: f32,
    ) -> Scored {
        Scored {
            prompt: prompt.into(),
            reasoning: reasoning.into(),
            image: image.clone(),
            value,
            all_met: value >= 1.0,
        }
    }
}

/// One prompt kind's images in an evaluation.
#[derive(Default)]
struct KindTally {
    score_sum: f64,
    all_met: usize,
    images: usize,
    /// how many images missed each constraint, by its name
    unmet: std::collections::BTreeMap<String, usize>,
}

fn layout_name(s: &shapes::Spec) -> &'static str {
    match s.layout {
        shapes::Layout::Related(_) => "relation",
        shapes::Layout::At(_) => "position",
        shapes::Layout::Free
            if s.groups[0].colours.len() > 1
                || s.groups[0].shapes.len() > 1
                || s.groups[0].counts.len() > 1 =>
        {
            "open"
        }
        shapes::Layout::Free => "single_group",
    }
}

pub fn run(a: EvalArgs) -> Result<(), Error> {
    if a.reward != "shapes" {
        return Err(Error::invalid(format!(
            "unknown reward {:?}: eval supports \"shapes\"",
            a.reward
        )));
    }
    if a.samples == 0 || a.batch == 0 {
        return Err(Error::invalid("--samples and --batch must be at least 1"));
    }
    let text = std::fs::read_to_string(&a.prompts)
        .map_err(|e| Error::io("read prompts", &a.prompts, e))?;
    let mut prompts = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let spec = shapes::parse_prompt(line)
            .map_err(|e| e.context(format!("{}:{}", a.prompts.display(), n + 1)))?;
        prompts.push((line.to_string(), spec));
    }
    if prompts.is_empty() {
        return Err(Error::invalid(format!(
            "{} holds no prompts",
            a.prompts.display()
        )));
    }
    let model = a.rt.load()?;
    let p = a.sampling.params(&model)?;
    let items: Vec<(usize, u64)> = (0..prompts.len())
        .flat_map(|i| (0..a.samples as u64).map(move |j| (i, j)))
        .map(|(i, j)| (i, derive_seed(p.seed, i as u64, j)))
        .collect();
    let bar = ProgressBar::new(items.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("eval [{bar:30}] {pos}/{len} images {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let mut records = a
        .records
        .as_deref()
        .map(|path| {
            std::fs::File::create(path)
                .map(|f| (path, std::io::BufWriter::new(f)))
                .map_err(|e| Error::io("create", path, e))
        })
        .transpose()?;
    let cancel = ctrlc_token();
    let t = Instant::now();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last_line = Instant::now();
    let mut scored: Vec<Scored> = Vec::with_capacity(items.len());
    let mut by_layout: std::collections::BTreeMap<&str, KindTally> = Default::default();
    let mut clean_sum = 0.0f64;
    // the reasoning's own reading against the prompt's (explicit and indirect prompts; an
    // open-ended prompt has many right readings): language drift of the text policy shows here
    // while the score may not move
    let (mut agree, mut judged) = (0usize, 0usize);
    for chunk in items.chunks(a.batch) {
        let ps: Vec<&str> = chunk.iter().map(|&(i, _)| prompts[i].0.as_str()).collect();
        let seeds: Vec<u64> = chunk.iter().map(|&(_, s)| s).collect();
        let gens = generate_batch(
            &model,
            &model.params,
            &ps,
            &seeds,
            &p,
            Some(&cancel),
            &mut Progress::none(),
        )?;
        for (&(i, _), g) in chunk.iter().zip(gens) {
            let score = shapes::score_spec(&prompts[i].1, &g.image);
            let clean = shapes::clean_render_distance(&g.image);
            clean_sum += clean;
            let kind = layout_name(&prompts[i].1);
            if p.reasoning && kind != "open" {
                judged += 1;
                agree +=
                    shapes::parse_prompt(&g.reasoning).is_ok_and(|r| r == prompts[i].1) as usize;
            }
            let unmet: Vec<String> = score.unmet.iter().map(|c| c.to_string()).collect();
            if let Some((path, w)) = records.as_mut() {
                let line = serde_json::json!({"prompt": g.prompt, "kind": kind, "reasoning": g.reasoning,
                    "score": score.value(), "all_met": score.all_met(), "unmet": unmet, "clean_distance": clean});
                writeln!(w, "{line}").map_err(|e| Error::io("write", path, e))?;
            }
            let e = by_layout.entry(kind).or_default();
            e.score_sum += score.value() as f64;
            e.all_met += score.all_met() as usize;
            e.images += 1;
            for c in unmet {
                *e.unmet.entry(c).or_default() += 1;
            }
            scored.push(Scored {
                prompt: g.prompt,
                reasoning: g.reasoning,
                image: g.image,
                value: score.value(),
                all_met: score.all_met(),
            });
        }
        bar.inc(chunk.len() as u64);
        let mean = scored.iter().map(|s| s.value as f64).sum::<f64>() / scored.len() as f64;
        bar.set_message(format!("mean {mean:.3}"));
        if !tty && (last_line.elapsed().as_secs() >= 10 || scored.len() == items.len()) {
            // a log file or pipe gets a plain line every 10 s instead of the bar
            eprintln!(
                "eval: {}/{} images, mean {mean:.3}",
                scored.len(),
                items.len()
            );
            last_line = Instant::now();
        }
    }
    bar.finish_and_clear();
    if let Some((path, w)) = records.as_mut() {
        w.flush().map_err(|e| Error::io("write", path, e))?;
    }
    let secs = t.elapsed().as_secs_f64();
    let n = scored.len();
    let mean = scored.iter().map(|s| s.value as f64).sum::<f64>() / n as f64;
    let strict = scored.iter().filter(|s| s.all_met).count() as f64 / n as f64;
    if let Some(path) = &a.grid {
        super::grid::write_grid(path, &scored[..n.min(48)])?;
    }
    let kinds: serde_json::Map<String, serde_json::Value> = by_layout
        .iter()
        .map(|(k, e)| {
            let n = e.images as f64;
            let unmet: serde_json::Map<String, serde_json::Value> = e
                .unmet
                .iter()
                .map(|(c, &m)| (c.clone(), serde_json::json!(m as f64 / n)))
                .collect();
            (k.to_string(), serde_json::json!({"reward_mean": e.score_sum / n, "strict_rate": e.all_met as f64 / n, "n_images": e.images,
                "unmet_rate": unmet}))
        })
        .collect();
    let out = serde_json::json!({
        "reward_mean": mean,
        "strict_rate": strict,
        "clean_distance": clean_sum / n as f64,
        "reasoning_agreement": (judged > 0).then(|| agree as f64 / judged as f64),
        "n_prompts": prompts.len(),
        "n_images": n,
        "samples_per_prompt": a.samples,
        "reasoning": p.reasoning,
        "seed": p.seed,
        "steps": p.num_steps,
        "noise_level": p.noise_level,
        "by_kind": kinds,
        "seconds": secs,
        "images_per_second": n as f64 / secs,
    });
    if a.json {
        println!("{out}");
    } else {
        println!(
            "{} prompts x {} samples: mean score {:.3}, all constraints met {:.1}%, distance to the clean render {:.4} ({:.1} images/s)",
            prompts.len(),
            a.samples,
            mean,
            strict * 100.0,
            clean_sum / n as f64,
            n as f64 / secs
        );
        if judged > 0 {
            println!(
                "  reasoning that reads as the prompt does: {:.1}% of {judged} (open-ended prompts left out)",
                agree as f64 * 100.0 / judged as f64
            );
        }
        for (k, v) in &kinds {
            println!(
                "  {k:<13} mean {:.3}  strict {:.1}%  ({} images)",
                v["reward_mean"].as_f64().unwrap_or(0.0),
                v["strict_rate"].as_f64().unwrap_or(0.0) * 100.0,
                v["n_images"]
            );
        }
    }
    Ok(())
}
