//! The node-registry commands of the `meshtable` binary. They work on the
//! database directly (the same `--database-url`/`--data-dir`/`--config` as
//! `serve`), so they run beside a serving controller, which notices within
//! its registry refresh interval ([`crate::registry::REFRESH_INTERVAL`]).
//!
//! ```text
//! meshtable network add <id> [--accept-unsigned]
//! meshtable network set <id> --accept-unsigned=<bool>
//! meshtable enroll-token create --network N [--site S] [--ttl 24h]
//! meshtable node revoke --network N <node>
//! meshtable mosquitto export --passwd FILE --acl FILE
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use meshtable_store::Store;

use crate::api::ApiError;
use crate::auth::{AuditTarget, record};
use crate::config::{Broker, Config, ConfigError, ServeArgs, redact_url};
use crate::enroll;
use crate::mosquitto::{self, MosquittoError};

/// `meshtable network ...`.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network (tenant). Reports for networks that do not exist are refused.
    Add {
        /// Network id, 1-64 of [a-z0-9_-].
        id: String,
        /// Accept reports that are not signed (agents not enrolled yet) [default: false].
        #[arg(long)]
        accept_unsigned: bool,
        /// Where the database is.
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Change whether a network accepts unsigned reports.
    Set {
        /// Network id.
        id: String,
        /// true or false.
        #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
        accept_unsigned: bool,
        /// Where the database is.
        #[command(flatten)]
        serve: ServeArgs,
    },
}

/// `meshtable enroll-token ...`.
#[derive(Debug, Subcommand)]
pub enum EnrollTokenCommand {
    /// Create a single-use enrollment token; it is printed once, on standard output.
    Create(TokenArgs),
}

/// Flags of `meshtable enroll-token create`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The network the node will join.
    #[arg(long, value_name = "ID")]
    pub network: String,
    /// The site the node will belong to.
    #[arg(long, value_name = "ID")]
    pub site: Option<String>,
    /// How long the token works, e.g. 1h, 7d [default: 24h].
    #[arg(long, value_name = "DURATION", value_parser = crate::auth::api::parse_ttl)]
    pub ttl: Option<Duration>,
    /// Where the database is.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `meshtable node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Revoke an enrolled node (a stolen router): its reports and its broker login stop.
    Revoke {
        /// The node id.
        node: String,
        /// Its network.
        #[arg(long, value_name = "ID")]
        network: String,
        /// Where the database is.
        #[command(flatten)]
        serve: ServeArgs,
    },
}

/// `meshtable mosquitto ...`.
#[derive(Debug, Subcommand)]
pub enum MosquittoCommand {
    /// Write Mosquitto's password and ACL files from the registry (see deploy/mosquitto/).
    Export(ExportArgs),
}

/// Flags of `meshtable mosquitto export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The password file to write (mosquitto.conf: password_file).
    #[arg(long, value_name = "FILE")]
    pub passwd: PathBuf,
    /// The ACL file to write (mosquitto.conf: acl_file).
    #[arg(long, value_name = "FILE")]
    pub acl: PathBuf,
    /// Where the database is, and the controller's own broker login:
    /// --mqtt-url mqtt://USER:PASSWORD@host:port.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Why a registry command failed.
#[derive(Debug, thiserror::Error)]
pub enum TrustCliError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened.
    #[error("cannot open the database {url}: {source}")]
    Store {
        /// The URL, password hidden.
        url: String,
        /// The error.
        source: meshtable_store::StoreError,
    },
    /// The operation was refused.
    #[error("{0}")]
    Refused(String),
    /// Writing the Mosquitto files failed.
    #[error(transparent)]
    Mosquitto(#[from] MosquittoError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl From<ApiError> for TrustCliError {
    fn from(e: ApiError) -> Self {
        TrustCliError::Refused(e.to_string())
    }
}

async fn open(args: &ServeArgs) -> Result<(Config, Store), TrustCliError> {
    let config = Config::load(args)?;
    let store = Store::connect(&config.database_url)
        .await
        .map_err(|source| TrustCliError::Store {
            url: redact_url(&config.database_url),
            source,
        })?;
    Ok((config, store))
}

async fn audit_cli(store: &Store, action: &str, target: AuditTarget) {
    let _ = record(store, "cli", action, &target, "ok", None).await;
}

fn block_on<F: std::future::Future<Output = Result<(), TrustCliError>>>(
    f: F,
) -> Result<(), TrustCliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(TrustCliError::Runtime)?
        .block_on(f)
}

/// `meshtable network ...`.
pub fn network(cmd: NetworkCommand) -> Result<(), TrustCliError> {
    block_on(async move {
        match cmd {
            NetworkCommand::Add {
                id,
                accept_unsigned,
                serve,
            } => {
                let (_, store) = open(&serve).await?;
                enroll::add_network(&store, &id, accept_unsigned).await?;
                audit_cli(
                    &store,
                    "network.add",
                    AuditTarget::in_network(&id, id.clone()),
                )
                .await;
                eprintln!("network {id} created (accept unsigned: {accept_unsigned})");
            }
            NetworkCommand::Set {
                id,
                accept_unsigned,
                serve,
            } => {
                let (_, store) = open(&serve).await?;
                store
                    .set_accept_unsigned(&id, accept_unsigned)
                    .await
                    .map_err(enroll::registry_error)?;
                audit_cli(
                    &store,
                    "network.set",
                    AuditTarget::in_network(&id, id.clone()),
                )
                .await;
                eprintln!("network {id}: accept unsigned {accept_unsigned}");
            }
        }
        Ok(())
    })
}

/// `meshtable enroll-token create`: prints the token alone on standard output.
pub fn enroll_token(cmd: EnrollTokenCommand) -> Result<(), TrustCliError> {
    let EnrollTokenCommand::Create(args) = cmd;
    block_on(async move {
        let (_, store) = open(&args.serve).await?;
        let ttl = args.ttl.unwrap_or(enroll::DEFAULT_TOKEN_TTL);
        let created =
            enroll::create_token(&store, &args.network, args.site.as_deref(), ttl).await?;
        audit_cli(
            &store,
            "enroll_token.create",
            AuditTarget::in_network(&args.network, args.site.clone().unwrap_or_default()),
        )
        .await;
        println!("{}", created.token);
        eprintln!(
            "enrollment token for network {} created; it works once, until {} (shown only now)",
            created.network,
            meshtable_store::time::format_rfc3339_ms(created.expires_ms)
        );
        Ok(())
    })
}

/// `meshtable node revoke`.
pub fn node(cmd: NodeCommand) -> Result<(), TrustCliError> {
    let NodeCommand::Revoke {
        node,
        network,
        serve,
    } = cmd;
    block_on(async move {
        let (_, store) = open(&serve).await?;
        enroll::revoke(&store, None, &network, &node).await?;
        audit_cli(
            &store,
            "node.revoke",
            AuditTarget::in_network(&network, node.clone()),
        )
        .await;
        eprintln!(
            "node {node} of network {network} revoked; running controllers stop its reports within {} s",
            crate::registry::REFRESH_INTERVAL.as_secs()
        );
        Ok(())
    })
}

/// `meshtable mosquitto export`.
pub fn mosquitto(cmd: MosquittoCommand) -> Result<(), TrustCliError> {
    let MosquittoCommand::Export(args) = cmd;
    block_on(async move {
        let (config, store) = open(&args.serve).await?;
        let Broker::External {
            credentials: Some((user, password)),
            ..
        } = &config.broker
        else {
            return Err(TrustCliError::Refused(
                "give the controller's own broker login: --mqtt-url mqtt://USER:PASSWORD@host:port"
                    .to_owned(),
            ));
        };
        mosquitto::check_user(user)?;
        let nodes = store.node_keys().await.map_err(enroll::registry_error)?;
        let controller_hash = mosquitto::hash_password(password);
        mosquitto::write_private(
            &args.passwd,
            &mosquitto::password_file((user, &controller_hash), &nodes),
        )?;
        mosquitto::write_private(&args.acl, &mosquitto::acl_file(user, &nodes))?;
        let active = nodes.iter().filter(|n| n.revoked_ms.is_none()).count();
        audit_cli(&store, "mosquitto.export", AuditTarget::global("mosquitto")).await;
        eprintln!(
            "wrote {} and {}: {active} node(s) and the controller user {user}; \
             reload mosquitto (SIGHUP) to apply",
            args.passwd.display(),
            args.acl.display()
        );
        Ok(())
    })
}
