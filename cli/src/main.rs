//! The `unigrpo` command: generate, inspect, eval, train, rollout, score.

mod eval;
mod grid;
mod options;
mod ranks;
mod rundir;
mod train;

pub use options::SamplingArgs;

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use unigrpo::package::Verify;
use unigrpo::{generate_batch, CancelToken, Error, Model, ModelOptions, Progress, Stage};

#[derive(Parser)]
#[command(
    name = "unigrpo",
    version,
    about = "Reasoning-driven image generation and UniGRPO fine-tuning on ONNX Runtime"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Reason about a prompt, then draw it: prints the reasoning, writes a PNG.
    Generate(GenerateArgs),
    /// Describe a model package: manifest, graphs with inputs and outputs, parameter counts.
    Inspect(InspectArgs),
    /// Generate for every prompt of a file and score with a built-in reward.
    Eval(eval::EvalArgs),
    /// Fine-tune with UniGRPO on a reward.
    Train(train::TrainArgs),
    /// One group's rollout, dumped for offline analysis.
    Rollout(train::RolloutArgs),
    /// Score a PNG against a prompt with the shapes reward, showing what it saw.
    Score(ScoreArgs),
}

#[derive(Args, Clone)]
pub struct RuntimeArgs {
    /// Model package directory.
    #[arg(long)]
    pub model: PathBuf,
    /// cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Intra-op threads of ONNX Runtime's process-wide pool (0 = ONNX Runtime's default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Inter-op threads of the pool (0 = ONNX Runtime's default).
    #[arg(long, default_value_t = 0)]
    pub inter_threads: usize,
    /// Let the pool's threads spin while they wait for work (faster on idle cores).
    #[arg(long)]
    pub allow_spinning: bool,
    /// On cuda:N, fail when ONNX Runtime would run some nodes on the CPU.
    #[arg(long)]
    pub strict_device: bool,
    /// Path of libonnxruntime.so (default: search, see README).
    #[arg(long)]
    pub onnxruntime: Option<PathBuf>,
    /// Check the package's files against its manifest before loading: full (sizes and sha256)
    /// or size (sizes only, for packages too large to hash at every load).
    #[arg(long, default_value = "full", value_parser = ["full", "size"])]
    pub verify: String,
    /// Prompt words the vocabulary does not know are an error (default: a warning).
    #[arg(long)]
    pub strict_vocabulary: bool,
    /// Run every velocity forward with the weights as graph inputs (no session with a parameter
    /// set built in): slower on the CPU, less memory; for comparisons.
    #[arg(long)]
    pub plain_weights: bool,
    /// Off-policy updates (the second and later of a step) run a separate forward and a VJP
    /// that recomputes it, instead of one forward that keeps the values its backward reads:
    /// slower, without their memory (about 520 MB per 80-row micro-batch of tiny-shapes)
    #[arg(long)]
    pub recompute_activations: bool,
}

impl RuntimeArgs {
    pub fn load(&self) -> Result<Model, Error> {
        let t = Instant::now();
        let m = Model::load(
            &self.model,
            &ModelOptions {
                device: self.device.clone(),
                intra_threads: self.threads,
                inter_threads: self.inter_threads,
                allow_spinning: self.allow_spinning,
                strict_device: self.strict_device,
                onnxruntime_path: self.onnxruntime.clone(),
                verify: Verify::from_name(&self.verify).unwrap_or_default(),
                strict_vocabulary: self.strict_vocabulary,
                plain_weights: self.plain_weights,
                recompute_activations: self.recompute_activations,
                recompute_context: false,
            },
        )?;
        eprintln!(
            "loaded {} on {} in {:.0} ms ({})",
            m.manifest().name,
            m.device.name(),
            t.elapsed().as_secs_f64() * 1e3,
            unigrpo::version_string()
        );
        Ok(m)
    }
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    rt: RuntimeArgs,
    #[arg(long)]
    prompt: String,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Output PNG.
    #[arg(long)]
    out: PathBuf,
    /// Scale the PNG up by this integer factor (nearest neighbour).
    #[arg(long, default_value_t = 1)]
    upscale: u32,
}

#[derive(Args)]
struct InspectArgs {
    /// Model package directory.
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    onnxruntime: Option<PathBuf>,
    /// Print the full JSON description.
    #[arg(long)]
    json: bool,
    /// Check every file against the manifest's sizes and sha256 and report each (without
    /// loading the graphs); exit status 1 when any does not match.
    #[arg(long)]
    verify: bool,
}

/// A progress bar on stderr that follows the pipeline's stages; Ctrl-C cancels.
pub struct StageBar {
    bar: ProgressBar,
    stage: Option<Stage>,
}

impl Default for StageBar {
    fn default() -> Self {
        Self::new()
    }
}

impl StageBar {
    pub fn new() -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
                .expect("template")
                .progress_chars("=> "),
        );
        StageBar { bar, stage: None }
    }
    pub fn update(&mut self, stage: Stage, step: u32, total: u32) {
        if self.stage != Some(stage) {
            self.stage = Some(stage);
            self.bar.set_prefix(stage.name());
            self.bar.set_length(total as u64);
        }
        self.bar.set_position(step as u64);
    }
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

pub fn ctrlc_token() -> CancelToken {
    let token = CancelToken::new();
    let t = token.clone();
    let _ = ctrlc::set_handler(move || {
        eprintln!("\ncancelling ...");
        t.cancel();
    });
    token
}

/// The largest side `generate --upscale` writes (`--upscale 100000` grew to 22 GB before).
const MAX_IMAGE_SIDE: u64 = 8192;

fn generate(a: GenerateArgs) -> Result<(), Error> {
    if a.upscale == 0 {
        return Err(Error::invalid("--upscale must be at least 1"));
    }
    let model = a.rt.load()?;
    let [h, w] = [0, 1].map(|i| model.manifest().image.image_size[i] as u64);
    if h.max(w) * a.upscale as u64 > MAX_IMAGE_SIDE {
        return Err(Error::invalid(format!(
            "--upscale {}: the image would be {}x{} pixels; at most {MAX_IMAGE_SIDE} pixels a side \
             (--upscale {} for this model)",
            a.upscale,
            w * a.upscale as u64,
            h * a.upscale as u64,
            MAX_IMAGE_SIDE / h.max(w)
        )));
    }
    let p = a.sampling.params(&model)?;
    let cancel = ctrlc_token();
    let mut bar = StageBar::new();
    let mut cb = |s: Stage, i: u32, n: u32| {
        bar.update(s, i, n);
        true
    };
    let t = Instant::now();
    let out = generate_batch(
        &model,
        &model.params,
        &[a.prompt.as_str()],
        &[p.seed],
        &p,
        Some(&cancel),
        &mut Progress::new(&mut cb),
    );
    bar.finish();
    let g = out?.remove(0);
    let secs = t.elapsed().as_secs_f64();
    let img = if a.upscale > 1 {
        g.image.upscale(a.upscale)
    } else {
        g.image.clone()
    };
    img.save_png(&a.out)?;
    println!("prompt:    {}", g.prompt);
    if p.reasoning {
        let cut = if g.reasoning_tokens.truncated {
            " (truncated)"
        } else {
            ""
        };
        println!("reasoning: {}{cut}", g.reasoning);
    } else {
        println!("reasoning: (off)");
    }
    println!(
        "image:     {} ({}x{}), {:.0} ms",
        a.out.display(),
        img.width,
        img.height,
        secs * 1e3
    );
    Ok(())
}

fn inspect(a: InspectArgs) -> Result<(), Error> {
    if a.verify {
        return verify_report(&a);
    }
    let model = Model::load(
        &a.model,
        &ModelOptions {
            device: a.device.clone(),
            onnxruntime_path: a.onnxruntime.clone(),
            ..Default::default()
        },
    )?;
    let info = model.info();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info).expect("json"));
        return Ok(());
    }
    let m = model.manifest();
    println!("{} (format version {})", m.name, m.format_version);
    println!("  {}", m.description);
    println!(
        "  image {:?}, latent {:?}, vocabulary {}",
        m.image.image_size, m.image.latent_shape, m.text.vocab_size
    );
    println!(
        "  parameters: {} tensors, {} values (text graphs {}, velocity graphs {})",
        info["parameters"]["tensors"],
        info["parameters"]["total"],
        info["parameters"]["text"],
        info["parameters"]["image"]
    );
    println!("  conditioning:");
    for c in &m.image.conditioning {
        println!(
            "    velocity.{} <- {} (gradient: {})",
            c.input, c.source, c.gradient
        );
    }
    println!("  graphs:");
    for (role, g) in info["graphs"].as_object().expect("graphs") {
        println!(
            "    {role:<17} {} ({} KiB, {} parameter inputs)",
            g["file"].as_str().unwrap_or(""),
            g["bytes"].as_u64().unwrap_or(0) / 1024,
            g["parameter_inputs"]
        );
        for (kind, key) in [("in ", "inputs"), ("out", "outputs")] {
            for p in g[key].as_array().expect("ports") {
                println!(
                    "      {kind} {:<22} {} {}",
                    p["name"].as_str().unwrap_or(""),
                    p["dtype"].as_str().unwrap_or(""),
                    p["shape"]
                );
            }
        }
    }
    println!(
        "  sampler defaults:    {}",
        serde_json::to_string(&m.sampler).expect("json")
    );
    println!(
        "  generation defaults: {}",
        serde_json::to_string(&m.generation).expect("json")
    );
    println!(
        "  training defaults:   {}",
        serde_json::to_string(&m.training).expect("json")
    );
    Ok(())
}

/// `inspect --verify`: one line (or JSON object) per file.
fn verify_report(a: &InspectArgs) -> Result<(), Error> {
    let pkg = unigrpo::package::Package::open(&a.model)?;
    let t = Instant::now();
    let checks = pkg.check_files(Verify::Full);
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let bad = checks.iter().filter(|c| c.problem.is_some()).count();
    if a.json {
        let files: Vec<serde_json::Value> = checks
            .iter()
            .map(|c| {
                serde_json::json!({"file": c.name, "bytes": c.bytes, "sha256": c.sha256,
                    "ok": c.problem.is_none(), "problem": c.problem})
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"files": files, "ok": bad == 0, "milliseconds": ms})
        );
    } else {
        for c in &checks {
            match &c.problem {
                None => println!("ok       {:<24} {} bytes", c.name, c.bytes.unwrap_or(0)),
                Some(p) => println!("MISMATCH {:<24} {p}", c.name),
            }
        }
        println!(
            "{} files, {bad} not matching the manifest ({ms:.0} ms)",
            checks.len()
        );
    }
    if bad > 0 {
        return Err(Error::format(format!(
            "{}: {bad} files do not match the manifest",
            a.model.display()
        )));
    }
    Ok(())
}

#[derive(Args)]
struct ScoreArgs {
    #[arg(long)]
    prompt: String,
    /// An RGB PNG (as written by generate; scaled-up images are scored as they are).
    #[arg(long)]
    image: PathBuf,
}

fn score(a: ScoreArgs) -> Result<(), Error> {
    use unigrpo::reward::shapes;
    let img = unigrpo::RgbImage::load_png(&a.image)?;
    let spec = shapes::parse_prompt(&a.prompt)?;
    let s = shapes::score_spec(&spec, &img);
    println!("constraints: {spec:?}");
    for c in shapes::components(&img) {
        println!(
            "  {:?} {:?}: {} pixels, box centre ({:.1}, {:.1})",
            c.colour, c.shape, c.pixels, c.cx, c.cy
        );
    }
    println!(
        "score {:.3} ({} of {} constraints met)",
        s.value(),
        s.met,
        s.total
    );
    if !s.unmet.is_empty() {
        let names: Vec<String> = s.unmet.iter().map(|c| c.to_string()).collect();
        println!("not met: {}", names.join(", "));
    }
    Ok(())
}

/// Run the CLI; returns the process exit code.
pub fn run() -> i32 {
    // a closed pipe (`unigrpo inspect --json | head`) ends the process quietly, as for any
    // Unix filter, instead of a panic in println!
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // the core's log and ONNX Runtime's (target "onnxruntime"), filtered RUST_LOG-style
    env_logger::Builder::from_env(env_logger::Env::default().filter_or("RUST_LOG", "warn"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Generate(a) => generate(a),
        Cmd::Inspect(a) => inspect(a),
        Cmd::Eval(a) => eval::run(a),
        Cmd::Train(a) => train::train(a),
        Cmd::Rollout(a) => train::rollout_cmd(a),
        Cmd::Score(a) => score(a),
    };
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            if e.kind() == unigrpo::ErrorKind::Cancelled {
                130
            } else {
                1
            }
        }
    }
}

fn main() {
    std::process::exit(run());
}
