//! The `meshtable` binary: a thin shell over the `meshtable` library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: ingest allocates and frees
/// many small buffers per report (decoded reports, SQL values), and glibc's
/// malloc spent a fifth of the controller's CPU on them under a flood.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
