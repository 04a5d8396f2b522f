//! Who may do what: accounts, roles per network, sessions, API tokens, CSRF,
//! login rate limits and the audit log.
//!
//! ```text
//! request --> Caller (session cookie, or Authorization: Bearer mt_...)
//!         --> caller.authorize(network, Action)
//!               401 nobody logged in (or a bad/expired/revoked token)
//!               404 no role in that network (its existence is not leaked)
//!               403 a role that does not allow the action, or a missing CSRF token
//! ```
//!
//! Roles (per network, table `user_role`) and what they allow:
//!
//! | action | admin | operator | trainer | funder | viewer |
//! |---|---|---|---|---|---|
//! | `ReadNodes` (per-node data: names, addresses, series) | ✓ | ✓ | ✓ | | ✓ |
//! | `ReadAggregates` (counts, availability, traffic totals) | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | `ManageNodes`, `ManageAlerts`, `ManageMaintenance` | ✓ | ✓ | | | |
//! | `ManageSites` | ✓ | | ✓ | | |
//! | `ManageEnrollment` | ✓ | | ✓ | | |
//! | `ManageUsers`, `ReadAudit` | ✓ | | | | |
//!
//! A superadmin (the bootstrap admin, or anyone given the flag) is admin in
//! every network and may create networks and accounts. An API token carries
//! its owner's rights, narrowed to one network and/or a role when it was
//! created so; it never has more than its owner.
//!
//! What is absent: no secret is stored (argon2 for passwords, SHA-256 for
//! session ids and tokens), logged, or shown in `Debug`.

pub mod api;
pub mod caller;
pub mod cli;
pub mod limiter;
pub mod secret;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use meshtable_store::Store;
use meshtable_store::accounts::{Account, NewToken};
use meshtable_store::audit::NewAuditEntry;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

pub use caller::{Caller, Via};
pub use limiter::RateLimiter;
pub use secret::Secret;

use crate::api::ApiError;
use crate::ingest::now_ms;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "meshtable_session";

/// Name of the cookie that carries the login form's CSRF token.
pub const LOGIN_COOKIE: &str = "meshtable_login";

/// Header carrying the CSRF token on API requests authenticated by a session
/// cookie with a method other than GET/HEAD.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How long a web session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Default lifetime of an API token.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(90 * 86_400);

/// Longest lifetime of an API token.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(400 * 86_400);

/// Login attempts allowed at once from one source address, then one per
/// [`LOGIN_IP_PERIOD`]. Only failed attempts are counted.
pub const LOGIN_IP_BURST: u32 = 20;
/// See [`LOGIN_IP_BURST`].
pub const LOGIN_IP_PERIOD: Duration = Duration::from_secs(6);
/// Failed logins allowed at once for one login name, then one per
/// [`LOGIN_USER_PERIOD`].
pub const LOGIN_USER_BURST: u32 = 5;
/// See [`LOGIN_USER_BURST`].
pub const LOGIN_USER_PERIOD: Duration = Duration::from_secs(30);

/// Name of the bootstrap superadmin.
pub const BOOTSTRAP_USER: &str = "admin";

/// A role in a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything in the network, including who has which role.
    Admin,
    /// Nodes, alerts, maintenance.
    Operator,
    /// Sites, enrollment tokens, onboarding.
    Trainer,
    /// Reports and aggregated statistics only.
    Funder,
    /// Read-only.
    Viewer,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Operator,
        Role::Trainer,
        Role::Funder,
        Role::Viewer,
    ];

    /// The stored and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Trainer => "trainer",
            Role::Funder => "funder",
            Role::Viewer => "viewer",
        }
    }

    /// What this role may do.
    pub fn perms(self) -> Perms {
        use Action::*;
        let list: &[Action] = match self {
            Role::Admin => return Perms::ALL,
            // Enrollment tokens are the trainers' (onboarding), not the
            // operators': issue 5's role table.
            Role::Operator => &[
                ReadNodes,
                ReadAggregates,
                ManageNodes,
                ManageAlerts,
                ManageMaintenance,
            ],
            Role::Trainer => &[ReadNodes, ReadAggregates, ManageSites, ManageEnrollment],
            Role::Funder => &[ReadAggregates],
            Role::Viewer => &[ReadNodes, ReadAggregates],
        };
        list.iter().fold(Perms::NONE, |p, a| p.with(*a))
    }

    /// Whether this role may do `action`.
    pub fn allows(self, action: Action) -> bool {
        self.perms().has(action)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role {:?}: one of admin, operator, trainer, funder, viewer",
                    s.chars().take(32).collect::<String>()
                )
            })
    }
}

/// Something a caller may want to do in a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read per-node data: names, addresses, details, series, topology.
    ReadNodes,
    /// Read aggregates: counts, availability, traffic totals, reports.
    ReadAggregates,
    /// Change nodes: rename, revoke, delete.
    ManageNodes,
    /// Acknowledge alerts, change alert rules and notifications.
    ManageAlerts,
    /// Create and end maintenance windows.
    ManageMaintenance,
    /// Create and change sites.
    ManageSites,
    /// Create, list and revoke enrollment tokens.
    ManageEnrollment,
    /// Grant and take away roles in the network.
    ManageUsers,
    /// Read the network's audit log.
    ReadAudit,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 9] = [
        Action::ReadNodes,
        Action::ReadAggregates,
        Action::ManageNodes,
        Action::ManageAlerts,
        Action::ManageMaintenance,
        Action::ManageSites,
        Action::ManageEnrollment,
        Action::ManageUsers,
        Action::ReadAudit,
    ];

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    /// A name for messages: `read nodes`, `manage users`...
    pub fn describe(self) -> &'static str {
        match self {
            Action::ReadNodes => "read nodes",
            Action::ReadAggregates => "read aggregates",
            Action::ManageNodes => "manage nodes",
            Action::ManageAlerts => "manage alerts",
            Action::ManageMaintenance => "manage maintenance",
            Action::ManageSites => "manage sites",
            Action::ManageEnrollment => "manage enrollment",
            Action::ManageUsers => "manage users",
            Action::ReadAudit => "read the audit log",
        }
    }
}

/// A set of [`Action`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Perms(u16);

impl Perms {
    /// Nothing.
    pub const NONE: Perms = Perms(0);
    /// Everything.
    pub const ALL: Perms = Perms((1 << Action::ALL.len()) - 1);

    /// This set plus `a`.
    pub fn with(self, a: Action) -> Perms {
        Perms(self.0 | a.bit())
    }

    /// Whether `a` is in the set.
    pub fn has(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    /// What both sets allow.
    pub fn and(self, other: Perms) -> Perms {
        Perms(self.0 & other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Controller-wide auth state shared by the handlers.
#[derive(Debug)]
pub struct AuthState {
    /// Failed logins per source address.
    pub login_by_ip: RateLimiter,
    /// Failed logins per login name.
    pub login_by_user: RateLimiter,
    /// Set the `Secure` flag on cookies (the controller serves HTTPS).
    pub secure_cookies: bool,
    /// The bearer token `/metrics` requires, if any.
    pub metrics_token: Option<Secret>,
}

impl AuthState {
    /// The defaults: the login limits above; `secure_cookies` as given.
    pub fn new(secure_cookies: bool) -> AuthState {
        AuthState {
            login_by_ip: RateLimiter::new(LOGIN_IP_BURST, LOGIN_IP_PERIOD),
            login_by_user: RateLimiter::new(LOGIN_USER_BURST, LOGIN_USER_PERIOD),
            secure_cookies,
            metrics_token: None,
        }
    }

    /// Requires `token` (when `Some`) on `/metrics`.
    pub fn with_metrics_token(mut self, token: Option<Secret>) -> AuthState {
        self.metrics_token = token;
        self
    }

    /// Whether a request from `peer` with these headers may read
    /// `/metrics`. With a configured token: with `Authorization: Bearer
    /// <token>` only. Without one: from a loopback address only (a
    /// Prometheus on the same host), since its series name every network
    /// the controller hosts.
    pub fn metrics_allowed(
        &self,
        headers: &axum::http::HeaderMap,
        peer: Option<std::net::SocketAddr>,
    ) -> bool {
        let Some(want) = &self.metrics_token else {
            return peer.is_some_and(|p| p.ip().to_canonical().is_loopback());
        };
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|got| secret::constant_time_eq(got.trim(), want.expose()))
    }
}

/// Reads the `/metrics` bearer token from `path` (`--metrics-token-file`):
/// the first line, at least 16 characters.
pub fn read_metrics_token(path: &std::path::Path) -> Result<Secret, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        AuthError::Invalid(format!(
            "cannot read --metrics-token-file {}: {e}",
            path.display()
        ))
    })?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.chars().count() < 16 {
        return Err(AuthError::Invalid(format!(
            "--metrics-token-file {}: the token must have at least 16 characters",
            path.display()
        )));
    }
    Ok(Secret::new(token))
}

impl Default for AuthState {
    fn default() -> AuthState {
        AuthState::new(false)
    }
}

/// What an audit entry is about: a network (or the whole controller) and an
/// object in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditTarget {
    /// The network concerned; `None` for controller-wide things.
    pub network: Option<String>,
    /// The object: a user name, a token prefix, a node id...
    pub object: String,
}

impl AuditTarget {
    /// `object` in `network`.
    pub fn in_network(network: &str, object: impl Into<String>) -> AuditTarget {
        AuditTarget {
            network: Some(network.to_owned()),
            object: object.into(),
        }
    }

    /// A controller-wide `object`.
    pub fn global(object: impl Into<String>) -> AuditTarget {
        AuditTarget {
            network: None,
            object: object.into(),
        }
    }
}

impl From<&str> for AuditTarget {
    fn from(object: &str) -> AuditTarget {
        AuditTarget::global(object)
    }
}

/// Records a successful security-relevant `action` (`user.add`,
/// `node.enroll`, `node.revoke`...) by `caller` on `target` in the audit
/// log, and logs it (names only, never secrets).
pub async fn audit(
    store: &Store,
    caller: &Caller,
    action: &str,
    target: impl Into<AuditTarget>,
) -> Result<(), ApiError> {
    let source = caller.source().map(|ip| ip.to_string());
    record(
        store,
        &caller.actor(),
        action,
        &target.into(),
        "ok",
        source.as_deref(),
    )
    .await
}

/// Records `action` on `target` by `actor` (who is no [`Caller`]: `cli`,
/// `system`, a node enrolling with a token...) with `outcome` (`ok`,
/// `failed`, `denied`) from `source` (an address), and logs it.
pub async fn record(
    store: &Store,
    actor: &str,
    action: &str,
    target: &AuditTarget,
    outcome: &str,
    source: Option<&str>,
) -> Result<(), ApiError> {
    info!(
        audit = action,
        actor,
        network = target.network.as_deref().unwrap_or("-"),
        target = %target.object,
        outcome,
        source = source.unwrap_or("-"),
        "audit"
    );
    store
        .append_audit(&NewAuditEntry {
            t_ms: now_ms(),
            actor,
            network: target.network.as_deref(),
            action,
            target: &target.object,
            outcome,
            source,
        })
        .await
        .map_err(|e| {
            warn!(error = %e, audit = action, "cannot write the audit log");
            ApiError::Store(e)
        })
}

/// Whether `name` is acceptable as a login name: 1 to 64 of `a-z`, `0-9`,
/// `.`, `_`, `-`, `@`, starting with a letter or digit.
pub fn validate_user_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-@".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid user name {:?}: 1 to 64 of a-z, 0-9, '.', '_', '-', '@', starting with a letter or digit",
            name.chars().take(64).collect::<String>()
        ))
    }
}

/// Shortest password accepted when someone chooses one.
pub const MIN_PASSWORD_LEN: usize = 10;

/// Why an account or token operation failed (outside a request).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] meshtable_store::StoreError),
    /// Hashing a password failed.
    #[error(transparent)]
    Hash(#[from] secret::HashError),
    /// The input is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// No such user, token or network.
    #[error("{0}")]
    NotFound(String),
    /// A user with that name exists.
    #[error("user {0} exists")]
    Exists(String),
}

/// Creates an account with `password` (or a generated one, returned).
pub async fn add_user(
    store: &Store,
    name: &str,
    password: Option<&Secret>,
    superadmin: bool,
) -> Result<(Account, Option<Secret>), AuthError> {
    validate_user_name(name).map_err(AuthError::Invalid)?;
    let generated = match password {
        Some(p) if p.expose().chars().count() < MIN_PASSWORD_LEN => {
            return Err(AuthError::Invalid(format!(
                "the password must have at least {MIN_PASSWORD_LEN} characters"
            )));
        }
        Some(_) => None,
        None => Some(secret::generate_password()),
    };
    let pw = password
        .or(generated.as_ref())
        .map(Secret::expose)
        .unwrap_or_default()
        .to_owned();
    let hash = tokio::task::spawn_blocking(move || secret::hash_password(&pw))
        .await
        .map_err(|e| AuthError::Invalid(format!("password hashing task failed: {e}")))??;
    match store
        .create_account(name, &hash, superadmin, now_ms())
        .await?
    {
        Some(a) => Ok((a, generated)),
        None => Err(AuthError::Exists(name.to_owned())),
    }
}

/// Checks `password` against `name`'s hash (in a blocking task, with a dummy
/// hash when there is no such user so that both take as long).
pub async fn check_password(
    store: &Store,
    name: &str,
    password: &Secret,
) -> Result<Option<Account>, AuthError> {
    let creds = store.credentials(name).await?;
    let hash = creds.as_ref().map_or_else(
        || secret::dummy_hash().to_owned(),
        |c| c.password_hash.clone(),
    );
    let pw = password.clone();
    let ok = tokio::task::spawn_blocking(move || secret::verify_password(pw.expose(), &hash))
        .await
        .map_err(|e| AuthError::Invalid(format!("password check task failed: {e}")))?;
    Ok(creds.filter(|_| ok).map(|c| c.account))
}

/// The scope of a new API token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenScope {
    /// Only this network.
    pub network: Option<String>,
    /// At most this role.
    pub role: Option<Role>,
}

/// A token just created: the secret (shown once) and its visible prefix.
#[derive(Debug)]
pub struct IssuedToken {
    /// Row id, to revoke it.
    pub id: i64,
    /// The whole token, to show once.
    pub token: Secret,
    /// Its visible start.
    pub prefix: String,
    /// When it expires, Unix ms.
    pub expires_ms: i64,
}

/// Creates an API token for `user` with `scope`, valid for `ttl` (at most
/// [`MAX_TOKEN_TTL`]).
pub async fn issue_token(
    store: &Store,
    user: &Account,
    scope: &TokenScope,
    ttl: Duration,
    label: &str,
) -> Result<IssuedToken, AuthError> {
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(AuthError::Invalid(format!(
            "a token lives between 1 s and {}",
            humantime::format_duration(MAX_TOKEN_TTL)
        )));
    }
    if let Some(n) = &scope.network {
        meshtable_proto::validate_id(n).map_err(|e| AuthError::Invalid(format!("network: {e}")))?;
    }
    if label.chars().count() > 64 || label.chars().any(char::is_control) {
        return Err(AuthError::Invalid(
            "a label has at most 64 printable characters".to_owned(),
        ));
    }
    let token = secret::generate_token();
    let prefix = secret::token_prefix(token.expose());
    let now = now_ms();
    let expires_ms = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    let id = store
        .create_token(&NewToken {
            user_id: user.id,
            prefix: &prefix,
            hash: &secret::sha256_hex(token.expose()),
            label,
            network: scope.network.as_deref(),
            role: scope.role.map(Role::as_str),
            created_ms: now,
            expires_ms,
        })
        .await?;
    Ok(IssuedToken {
        id,
        token,
        prefix,
        expires_ms,
    })
}

/// The bootstrap: when no account exists, creates the superadmin
/// [`BOOTSTRAP_USER`] with a generated password and returns it (to be
/// printed once to standard output, never to the log). `None` when accounts
/// exist (or another controller created it at the same moment).
pub async fn bootstrap(store: &Store) -> Result<Option<Secret>, AuthError> {
    if store.account_count().await? > 0 {
        return Ok(None);
    }
    match add_user(store, BOOTSTRAP_USER, None, true).await {
        Ok((_, password)) => {
            info!(
                user = BOOTSTRAP_USER,
                "created the bootstrap superadmin; its password is on standard output"
            );
            let _ = record(
                store,
                "system",
                "user.bootstrap",
                &AuditTarget::global(BOOTSTRAP_USER),
                "ok",
                None,
            )
            .await;
            Ok(password)
        }
        Err(AuthError::Exists(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A new unscoped API token of the first superadmin (for tests and scripts
/// that start a controller and need to act as its administrator).
pub async fn superadmin_token(store: &Store, label: &str) -> Result<Secret, AuthError> {
    let creds = store
        .credentials(BOOTSTRAP_USER)
        .await?
        .filter(|c| c.account.superadmin)
        .ok_or_else(|| AuthError::NotFound(format!("no superadmin {BOOTSTRAP_USER}")))?;
    Ok(issue_token(
        store,
        &creds.account,
        &TokenScope::default(),
        DEFAULT_TOKEN_TTL,
        label,
    )
    .await?
    .token)
}

/// Holds `Arc<AuthState>` for [`crate::api::AppState`].
pub type SharedAuth = Arc<AuthState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_need_loopback_or_the_token() {
        use axum::http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
        let open = AuthState::new(false);
        let token = "0123456789abcdef-metrics";
        let closed = AuthState::new(false).with_metrics_token(Some(Secret::new(token.to_owned())));
        let mut bearer = HeaderMap::new();
        bearer.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        let none = HeaderMap::new();
        let v4 = |a: &str| Some(std::net::SocketAddr::new(a.parse().unwrap(), 4000));
        // (state, headers, peer, allowed)
        let cases = [
            (&open, &none, v4("127.0.0.1"), true),
            (&open, &none, v4("127.0.0.9"), true),
            (&open, &none, v4("::1"), true),
            (&open, &none, v4("::ffff:127.0.0.1"), true),
            (&open, &none, v4("10.0.0.7"), false),
            (&open, &none, v4("::ffff:10.0.0.7"), false),
            (&open, &bearer, v4("192.0.2.1"), false),
            (&open, &none, None, false),
            (&closed, &none, v4("127.0.0.1"), false),
            (&closed, &bearer, v4("127.0.0.1"), true),
            (&closed, &bearer, v4("192.0.2.1"), true),
        ];
        for (i, (state, headers, peer, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                state.metrics_allowed(headers, peer),
                want,
                "case {i}: {peer:?}"
            );
        }
    }

    #[test]
    fn role_table() {
        use Action::*;
        // (role, actions allowed), exactly.
        let table: &[(Role, &[Action])] = &[
            (Role::Admin, &Action::ALL),
            (
                Role::Operator,
                &[
                    ReadNodes,
                    ReadAggregates,
                    ManageNodes,
                    ManageAlerts,
                    ManageMaintenance,
                ],
            ),
            (
                Role::Trainer,
                &[ReadNodes, ReadAggregates, ManageSites, ManageEnrollment],
            ),
            (Role::Funder, &[ReadAggregates]),
            (Role::Viewer, &[ReadNodes, ReadAggregates]),
        ];
        for (role, allowed) in table {
            for a in Action::ALL {
                assert_eq!(role.allows(a), allowed.contains(&a), "{role} {a:?}");
            }
            assert_eq!(role.as_str().parse::<Role>(), Ok(*role));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn user_names() {
        for ok in ["admin", "a", "maria.k", "x_y-z@net", "0day"] {
            assert!(validate_user_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Admin", ".x", "a b", "ä", &"x".repeat(65)] {
            assert!(validate_user_name(bad).is_err(), "{bad}");
        }
    }
}
