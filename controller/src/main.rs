//! The `meshtable` binary: a thin shell over the `meshtable` library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = meshtable::config::Cli::parse();
    match meshtable::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
