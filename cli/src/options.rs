//! Command line flags from the core's option tables: one `--flag VALUE` per option, with its
//! help, range and default (the model's, when `--model DIR` is on the command line).

use std::sync::OnceLock;

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use unigrpo::options::{parse_value, Kind, OptionSpec, Value, GENERATE_OPTIONS, TRAIN_OPTIONS};
use unigrpo::package::{Manifest, Package};
use unigrpo::{GenerateParams, TrainConfig};

/// The manifest of the `--model` given on the command line, read before clap builds the help.
fn model_manifest() -> Option<&'static Manifest> {
    static M: OnceLock<Option<Manifest>> = OnceLock::new();
    M.get_or_init(|| {
        let args: Vec<String> = std::env::args().collect();
        let dir = args.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix("--model=")
                .map(str::to_string)
                .or_else(|| (a == "--model").then(|| args.get(i + 1).cloned()).flatten())
        })?;
        Package::open(std::path::Path::new(&dir))
            .ok()
            .map(|p| p.manifest)
    })
    .as_ref()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn add_table(
    mut cmd: Command,
    table: &[OptionSpec],
    default: impl Fn(&str) -> Option<Value>,
) -> Command {
    for o in table {
        let range = match o.kind {
            Kind::Bool | Kind::Choice(_) => String::new(),
            _ if o.range.min.is_infinite() && o.range.max.is_infinite() => String::new(),
            _ => format!(" Range {}.", o.range),
        };
        let def = match default(o.name) {
            Some(v) => format!(" [model default: {v}]"),
            None => " [default: the model's]".to_string(),
        };
        let mut a = Arg::new(o.name)
            .long(o.flag)
            .help(leak(format!("{}{range}{def}", o.help.trim())))
            .action(ArgAction::Set);
        a = match o.kind {
            Kind::Bool => a
                .value_name("BOOL")
                .num_args(0..=1)
                .default_missing_value("true")
                .value_parser(["true", "false"]),
            Kind::Choice(names) => a.value_name("NAME").value_parser(names.to_vec()),
            _ => a.value_name("VALUE"),
        };
        cmd = cmd.arg(a);
    }
    cmd
}

/// The options given on the command line, parsed and named.
fn given(m: &ArgMatches, table: &[OptionSpec]) -> clap::error::Result<Vec<(&'static str, Value)>> {
    let mut out = Vec::new();
    for o in table {
        if let Some(s) = m.get_one::<String>(o.name) {
            let v = parse_value(o.kind, s).map_err(|e| {
                clap::Error::raw(
                    clap::error::ErrorKind::InvalidValue,
                    format!("--{}: {e}\n", o.flag),
                )
            })?;
            out.push((o.name, v));
        }
    }
    Ok(out)
}

/// Every training option as a flag (`unigrpo train`, `unigrpo rollout`); unset ones keep the
/// model's defaults (or, with --resume, the checkpoint's).
#[derive(Clone, Debug, Default)]
pub struct TrainFlags(pub Vec<(&'static str, Value)>);

impl TrainFlags {
    pub fn apply(&self, c: &mut TrainConfig) -> unigrpo::Result<()> {
        for (n, v) in &self.0 {
            c.set(n, *v)?;
        }
        Ok(())
    }
}

impl Args for TrainFlags {
    fn augment_args(cmd: Command) -> Command {
        let d = model_manifest().map(TrainConfig::defaults);
        add_table(cmd, TRAIN_OPTIONS, |n| d.as_ref().and_then(|d| d.get(n)))
            .arg(
                Arg::new("no_train_text")
                    .long("no-train-text")
                    .action(ArgAction::SetTrue)
                    .help("Same as --train-text false"),
            )
            .arg(
                Arg::new("no_train_image")
                    .long("no-train-image")
                    .action(ArgAction::SetTrue)
                    .help("Same as --train-image false"),
            )
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for TrainFlags {
    fn from_arg_matches(m: &ArgMatches) -> clap::error::Result<Self> {
        let mut v = given(m, TRAIN_OPTIONS)?;
        for (flag, name) in [
            ("no_train_text", "train_text"),
            ("no_train_image", "train_image"),
        ] {
            if m.get_flag(flag) {
                v.push((name, Value::Bool(false)));
            }
        }
        Ok(TrainFlags(v))
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> clap::error::Result<()> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// Every generation setting as a flag (`unigrpo generate`, `unigrpo eval`).
#[derive(Clone, Debug, Default)]
pub struct SamplingArgs(pub Vec<(&'static str, Value)>);

impl SamplingArgs {
    pub fn params(&self, model: &unigrpo::Model) -> unigrpo::Result<GenerateParams> {
        let mut p = GenerateParams::defaults(model);
        for (n, v) in &self.0 {
            p.set(n, *v)?;
        }
        Ok(p)
    }
}

impl Args for SamplingArgs {
    fn augment_args(cmd: Command) -> Command {
        let d = model_manifest().map(GenerateParams::defaults);
        add_table(cmd, GENERATE_OPTIONS, |n| match n {
            "seed" => Some(Value::U64(0)),
            "reasoning" => Some(Value::Bool(true)),
            _ => d.as_ref().and_then(|d| d.get(n)),
        })
        .arg(
            Arg::new("no_reasoning")
                .long("no-reasoning")
                .action(ArgAction::SetTrue)
                .help("Same as --reasoning false"),
        )
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for SamplingArgs {
    fn from_arg_matches(m: &ArgMatches) -> clap::error::Result<Self> {
        let mut v = given(m, GENERATE_OPTIONS)?;
        if m.get_flag("no_reasoning") {
            v.push(("reasoning", Value::Bool(false)));
        }
        Ok(SamplingArgs(v))
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> clap::error::Result<()> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_has_a_flag_and_parses() {
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            t: TrainFlags,
        }
        let mut args = vec!["t".to_string()];
        for o in TRAIN_OPTIONS {
            args.push(format!("--{}", o.flag));
            args.push(match o.kind {
                Kind::Bool => "false".into(),
                Kind::Choice(n) => n[1].into(),
                Kind::F32 | Kind::F64 => "0.5".into(),
                _ => "3".into(),
            });
        }
        let t = <T as clap::Parser>::try_parse_from(&args).unwrap();
        assert_eq!(t.t.0.len(), TRAIN_OPTIONS.len());
    }
}
