//! The `unigrpo` command: generate, inspect, eval.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
