//! `meshtable-agent`: see the library for what it does.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use meshtable_agent::config::AgentCommand;
use meshtable_agent::{Cli, Config};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    let command = cli.command.take();
    let config = Config::load(cli)?;
    let filter = match &config.log {
        Some(f) => EnvFilter::try_new(f).with_context(|| format!("invalid --log {f:?}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    if let Some(AgentCommand::Enroll {
        token,
        controller,
        hostname,
        ca_file,
    }) = command
    {
        let ca_file = ca_file.or_else(|| config.tls.as_ref().map(|t| t.ca_file.clone()));
        return enroll(&config, token, controller, hostname, ca_file);
    }
    let config = meshtable_agent::apply_identity(config)?;
    let node = meshtable_agent::node_id(&config)?;
    if config.once {
        let json = meshtable_agent::once(&config, &node)?;
        writeln!(std::io::stdout().lock(), "{json}").context("cannot write to stdout")?;
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        meshtable_agent::run(&config, &node, shutdown).await?;
        anyhow::Ok(())
    })
}

/// Completes at the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
    })
}

/// `meshtable-agent enroll`: registers this router and keeps its identity.
fn enroll(
    config: &Config,
    token: String,
    controller: String,
    hostname: Option<String>,
    ca_file: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    use meshtable_agent::enroll::{self, EnrollRequest};
    let hostname = hostname.or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
    });
    let id = enroll::enroll(&EnrollRequest {
        dir: config.identity_dir.clone(),
        controller,
        token,
        hostname,
        ca_file,
    })?;
    tracing::info!(
        network = %id.network,
        node = %id.node,
        identity_dir = %config.identity_dir.display(),
        "enrolled"
    );
    writeln!(
        std::io::stdout().lock(),
        "enrolled as node {} of network {}; identity in {}",
        id.node,
        id.network,
        config.identity_dir.display()
    )
    .context("cannot write to stdout")?;
    Ok(())
}
