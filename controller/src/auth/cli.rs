//! `meshtable user ...` and `meshtable token ...`: accounts, roles and API
//! tokens from the command line, straight on the database (the controller
//! need not run). Secrets go to standard output once, never to the log.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use meshtable_store::Store;

use super::{
    AuditTarget, AuthError, DEFAULT_TOKEN_TTL, Role, Secret, TokenScope, add_user, issue_token,
    record,
};
use crate::config::{Config, ConfigError, ServeArgs, redact_url};
use crate::ingest::now_ms;

/// Where the database is: the same flags (and environment and file) as
/// `meshtable serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct DbArgs {
    /// TOML configuration file (env MESHTABLE_CONFIG).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Database: sqlite://PATH or postgres://... [default: sqlite://DATA_DIR/meshtable.db].
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Directory for the SQLite database [default: ./meshtable-data].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `meshtable user`.
#[derive(Debug, Args)]
pub struct UserArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: UserCommand,
    /// The database.
    #[command(flatten)]
    pub db: DbArgs,
}

/// The subcommands of `meshtable user`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account; prints its generated password once (or reads one
    /// from standard input with --password-stdin).
    Add {
        /// Login name: a-z, 0-9, '.', '_', '-', '@'.
        name: String,
        /// May do everything, in every network (create networks, accounts...).
        #[arg(long)]
        superadmin: bool,
        /// Read the password from the first line of standard input instead
        /// of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Give USER the ROLE (admin, operator, trainer, funder, viewer) in NETWORK,
    /// replacing the role they had there.
    Grant {
        /// Login name.
        user: String,
        /// Network id.
        network: String,
        /// admin, operator, trainer, funder or viewer.
        role: Role,
    },
    /// Take USER's role in NETWORK away.
    Revoke {
        /// Login name.
        user: String,
        /// Network id.
        network: String,
    },
    /// Set a new password: generated and printed once, or read from standard
    /// input with --password-stdin.
    Passwd {
        /// Login name.
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// `meshtable token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TokenCommand,
    /// The database.
    #[command(flatten)]
    pub db: DbArgs,
}

/// The subcommands of `meshtable token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token for USER and print it once (`mt_...`). Use it as
    /// `Authorization: Bearer mt_...`.
    Create {
        /// Whose token: it never has more rights than this account.
        #[arg(long)]
        user: String,
        /// Only this network.
        #[arg(long)]
        network: Option<String>,
        /// At most this role (admin, operator, trainer, funder, viewer).
        #[arg(long)]
        role: Option<Role>,
        /// Lifetime, e.g. 30d or 12h [default: 90d].
        #[arg(long, value_name = "DURATION", value_parser = super::api::parse_ttl)]
        expires_in: Option<Duration>,
        /// A name to recognise it by.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke a token by its id or its visible prefix (`mt_1a2b3c4d`).
    Revoke {
        /// Id or prefix.
        token: String,
    },
    /// List the tokens of USER (never their secrets).
    List {
        /// Login name.
        #[arg(long)]
        user: String,
    },
}

/// Why a `user` or `token` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database cannot be opened.
    #[error("cannot open the database {url}: {source}")]
    Store {
        /// The URL, password hidden.
        url: String,
        /// The error.
        source: meshtable_store::StoreError,
    },
    /// The operation failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Standard input could not be read.
    #[error("cannot read the password from standard input: {0}")]
    Stdin(std::io::Error),
}

impl From<meshtable_store::StoreError> for CliError {
    fn from(e: meshtable_store::StoreError) -> CliError {
        CliError::Auth(AuthError::Store(e))
    }
}

async fn open(db: &DbArgs) -> Result<Store, CliError> {
    let config = Config::load(&ServeArgs {
        config: db.config.clone(),
        database_url: db.database_url.clone(),
        data_dir: db.data_dir.clone(),
        ..ServeArgs::default()
    })?;
    Store::connect(&config.database_url)
        .await
        .map_err(|source| CliError::Store {
            url: redact_url(&config.database_url),
            source,
        })
}

fn read_password() -> Result<Secret, CliError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(CliError::Stdin)?;
    Ok(Secret::new(line.trim_end_matches(['\r', '\n'])))
}

async fn account(
    store: &Store,
    name: &str,
) -> Result<meshtable_store::accounts::Account, CliError> {
    Ok(store
        .credentials(name)
        .await?
        .ok_or_else(|| AuthError::NotFound(format!("unknown user {name}")))?
        .account)
}

async fn cli_audit(store: &Store, action: &str, target: AuditTarget) -> Result<(), CliError> {
    record(store, "cli", action, &target, "ok", None)
        .await
        .map_err(|e| match e {
            crate::api::ApiError::Store(e) => CliError::from(e),
            other => CliError::Auth(AuthError::Invalid(other.to_string())),
        })
}

/// Runs `meshtable user ...`; what it prints goes to standard output.
pub async fn user(args: UserArgs) -> Result<(), CliError> {
    let store = open(&args.db).await?;
    match args.command {
        UserCommand::Add {
            name,
            superadmin,
            password_stdin,
        } => {
            let given = if password_stdin {
                Some(read_password()?)
            } else {
                None
            };
            let (account, generated) = add_user(&store, &name, given.as_ref(), superadmin).await?;
            cli_audit(
                &store,
                if superadmin {
                    "user.add_superadmin"
                } else {
                    "user.add"
                },
                AuditTarget::global(account.name.clone()),
            )
            .await?;
            match generated {
                Some(pw) => println!(
                    "created user {} with password {} (shown once)",
                    account.name,
                    pw.expose()
                ),
                None => println!("created user {}", account.name),
            }
        }
        UserCommand::Grant {
            user,
            network,
            role,
        } => {
            meshtable_proto::validate_id(&network)
                .map_err(|e| AuthError::Invalid(format!("network: {e}")))?;
            if !store.network_known(&network).await? {
                return Err(AuthError::NotFound(format!(
                    "unknown network {network}: create it first with meshtable network add"
                ))
                .into());
            }
            let a = account(&store, &user).await?;
            store
                .grant_role(a.id, &network, role.as_str(), now_ms())
                .await?;
            cli_audit(
                &store,
                "role.grant",
                AuditTarget::in_network(&network, format!("{user} as {role}")),
            )
            .await?;
            println!("{user} is {role} in network {network}");
        }
        UserCommand::Revoke { user, network } => {
            let a = account(&store, &user).await?;
            if !store.revoke_role(a.id, &network).await? {
                return Err(AuthError::NotFound(format!(
                    "{user} has no role in network {network}"
                ))
                .into());
            }
            cli_audit(
                &store,
                "role.revoke",
                AuditTarget::in_network(&network, user.clone()),
            )
            .await?;
            println!("{user} has no role in network {network} any more");
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let a = account(&store, &name).await?;
            let (pw, show) = if password_stdin {
                let pw = read_password()?;
                if pw.expose().chars().count() < super::MIN_PASSWORD_LEN {
                    return Err(AuthError::Invalid(format!(
                        "the password must have at least {} characters",
                        super::MIN_PASSWORD_LEN
                    ))
                    .into());
                }
                (pw, false)
            } else {
                (super::secret::generate_password(), true)
            };
            let to_hash = pw.clone();
            let hash =
                tokio::task::spawn_blocking(move || super::secret::hash_password(to_hash.expose()))
                    .await
                    .map_err(|e| AuthError::Invalid(e.to_string()))?
                    .map_err(AuthError::from)?;
            store.set_password_hash(a.id, &hash).await?;
            cli_audit(&store, "user.passwd", AuditTarget::global(name.clone())).await?;
            if show {
                println!("new password of {name}: {} (shown once)", pw.expose());
            } else {
                println!("password of {name} changed");
            }
        }
    }
    store.close().await?;
    Ok(())
}

/// Runs `meshtable token ...`; `create` prints the token alone on a line.
pub async fn token(args: TokenArgs) -> Result<(), CliError> {
    let store = open(&args.db).await?;
    match args.command {
        TokenCommand::Create {
            user,
            network,
            role,
            expires_in,
            label,
        } => {
            let a = account(&store, &user).await?;
            let scope = TokenScope { network, role };
            let issued = issue_token(
                &store,
                &a,
                &scope,
                expires_in.unwrap_or(DEFAULT_TOKEN_TTL),
                &label,
            )
            .await?;
            let target = match &scope.network {
                Some(n) => AuditTarget::in_network(n, format!("{} of {user}", issued.prefix)),
                None => AuditTarget::global(format!("{} of {user}", issued.prefix)),
            };
            cli_audit(&store, "token.create", target).await?;
            println!("{}", issued.token.expose());
        }
        TokenCommand::Revoke { token } => {
            let all = store.tokens(None).await?;
            let found = match token.parse::<i64>() {
                Ok(id) => all.into_iter().find(|t| t.id == id),
                Err(_) => {
                    let prefix = super::secret::token_prefix(&token);
                    let mut m: Vec<_> = all.into_iter().filter(|t| t.prefix == prefix).collect();
                    if m.len() > 1 {
                        return Err(AuthError::Invalid(format!(
                            "several tokens start with {prefix}: revoke by id"
                        ))
                        .into());
                    }
                    m.pop()
                }
            };
            let t = found.ok_or_else(|| AuthError::NotFound(format!("unknown token {token}")))?;
            if !store.revoke_token(t.id, now_ms()).await? {
                return Err(
                    AuthError::Invalid(format!("token {} was revoked before", t.prefix)).into(),
                );
            }
            let target = match &t.network {
                Some(n) => AuditTarget::in_network(n, t.prefix.clone()),
                None => AuditTarget::global(t.prefix.clone()),
            };
            cli_audit(&store, "token.revoke", target).await?;
            println!("revoked token {} ({})", t.id, t.prefix);
        }
        TokenCommand::List { user } => {
            let a = account(&store, &user).await?;
            for t in store.tokens(Some(a.id)).await? {
                let v = super::api::TokenView::from(t);
                println!(
                    "{}\t{}\t{}\t{}\t{}\texpires {}{}",
                    v.id,
                    v.prefix,
                    v.network.as_deref().unwrap_or("*"),
                    v.role.as_deref().unwrap_or("*"),
                    v.label,
                    v.expires,
                    v.revoked
                        .map(|r| format!(", revoked {r}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    store.close().await?;
    Ok(())
}
