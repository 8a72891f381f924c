//! `build-image`: the CLI used in CI pipelines. Argument parsing and
//! reporting only; the work is in the library.
//!
//! `cli.rs` holds the clap definitions and value parsers, `run.rs` one
//! dispatch over the commands, `exit.rs` every exit code (the store's
//! included), `serve.rs` the arguments of `serve`, `store.rs` the
//! arguments and printing of `store`.

#![forbid(unsafe_code)]

mod cli;
mod exit;
mod run;
mod serve;
mod store;

use clap::Parser;
use cli::Cli;
use sealed_bundle::report::chain_message;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before anything is read: children never read our memory or our
    // starting environment (the store identity may be in it).
    build_image::child_env::protect_self();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { 0 });
        }
    };
    match run::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("build-image: error: {}", chain_message(&e));
            ExitCode::from(exit::exit_code(&e))
        }
    }
}
