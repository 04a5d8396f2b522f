//! Node enrollment and the node registry's admin side: networks, enrollment
//! tokens, enrollment itself and revocation, for the API and the command
//! line alike.
//!
//! | endpoint | who |
//! |---|---|
//! | `POST /api/v1/networks` `{"id","accept_unsigned"}` | a superadmin |
//! | `POST /api/v1/networks/{network}/enroll-tokens` `{"site","ttl"}` | `ManageEnrollment` in the network (the site must exist in it); answers the token, once |
//! | `GET /api/v1/networks/{network}/enroll-tokens` | `ManageEnrollment` (never the tokens themselves) |
//! | `DELETE /api/v1/networks/{network}/enroll-tokens/{id}` | `ManageEnrollment`; an unused token stops working at once |
//! | `GET /api/v1/networks/{network}/enrolled` | `ReadNodes` |
//! | `POST /api/v1/networks/{network}/nodes/{node}/revoke` | `ManageNodes` |
//! | `POST /api/v1/enroll` `{"token","public_key","hostname"}` | a router with a token (rate limited per source address) |
//!
//! A token is `mte_` and 64 hex digits (256 random bits); only its SHA-256
//! is stored. It is single-use (a conditional update in the store makes two
//! racing uses impossible) and expires ([`DEFAULT_TOKEN_TTL`]). Enrolling
//! registers the router's ed25519 public key; the controller chooses the
//! node id (12 hex digits of the key's SHA-256) and an MQTT password, which
//! it answers once and keeps only as a Mosquitto `$7$` hash.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use meshtable_proto::{sign, validate_id};
use meshtable_store::Store;
use meshtable_store::registry::{
    EnrollTokenInfo, NewEnrollToken, NewNodeKey, NodeKey, RegistryError,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::api::{ApiError, AppState};
use crate::auth::secret::{generate_password, random_hex256, sha256_hex};
use crate::auth::{Action, AuditTarget, Caller, RateLimiter, audit, record};
use crate::ingest::now_ms;
use crate::registry::Registry;

/// The visible start of every enrollment token.
pub const TOKEN_PREFIX: &str = "mte_";

/// How long a token works unless told otherwise.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Longest lifetime a token may be given.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Enrollment attempts a source address may make at once ...
pub const ENROLL_BURST: u32 = 10;

/// ... and then one per this period.
pub const ENROLL_PERIOD: Duration = Duration::from_secs(6);

/// Longest hostname kept.
pub const MAX_HOSTNAME: usize = 253;

/// The per-address limiter of `POST /api/v1/enroll`.
pub fn limiter() -> RateLimiter {
    RateLimiter::new(ENROLL_BURST, ENROLL_PERIOD)
}

/// A new enrollment token: `mte_` and 64 hex digits.
pub fn generate_token() -> String {
    format!("{TOKEN_PREFIX}{}", random_hex256())
}

/// Whether `s` has the shape of an enrollment token.
pub fn looks_like_token(s: &str) -> bool {
    s.strip_prefix(TOKEN_PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The node id of a public key: the first 12 hex digits of its SHA-256.
pub fn node_id_for(public_key: &[u8; 32]) -> String {
    sign::to_hex(&Sha256::digest(public_key)[..6])
}

/// Creates a network with a fresh client salt.
pub async fn add_network(store: &Store, id: &str, accept_unsigned: bool) -> Result<(), ApiError> {
    validate_id(id).map_err(|e| ApiError::BadRequest(format!("network: {e}")))?;
    store
        .add_network(id, accept_unsigned, &random_hex256(), now_ms())
        .await
        .map_err(registry_error)
}

/// A token made for a network; `token` is shown once.
#[derive(Serialize)]
pub struct CreatedToken {
    /// The token itself.
    pub token: String,
    /// Its network.
    pub network: String,
    /// Its site, if any.
    pub site: Option<String>,
    /// When it stops working (Unix ms).
    pub expires_ms: i64,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("network", &self.network)
            .field("site", &self.site)
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

/// Creates an enrollment token for `network` (optionally tied to `site`)
/// valid for `ttl`.
pub async fn create_token(
    store: &Store,
    network: &str,
    site: Option<&str>,
    ttl: Duration,
) -> Result<CreatedToken, ApiError> {
    validate_id(network).map_err(|e| ApiError::BadRequest(format!("network: {e}")))?;
    if let Some(site) = site {
        validate_id(site).map_err(|e| ApiError::BadRequest(format!("site: {e}")))?;
    }
    if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
        return Err(ApiError::BadRequest(
            "ttl: use more than 0 s and at most 30 days".to_owned(),
        ));
    }
    let token = generate_token();
    let now = now_ms();
    let expires_ms = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    store
        .create_enroll_token(&NewEnrollToken {
            token_hash: &sha256_hex(&token),
            network,
            site,
            created_ms: now,
            expires_ms,
        })
        .await
        .map_err(registry_error)?;
    Ok(CreatedToken {
        token,
        network: network.to_owned(),
        site: site.map(str::to_owned),
        expires_ms,
    })
}

/// Revokes a node and drops it from `registry` at once.
pub async fn revoke(
    store: &Store,
    registry: Option<&Registry>,
    network: &str,
    node: &str,
) -> Result<(), ApiError> {
    store
        .revoke_node(network, node, now_ms())
        .await
        .map_err(registry_error)?;
    if let Some(r) = registry {
        r.mark_revoked(node);
        // With Mosquitto's files kept by this controller: answer once they
        // no longer let the node in.
        r.broker_synced(crate::mosquitto::SYNC_WAIT).await;
    }
    Ok(())
}

/// Maps a registry error to an answer.
pub fn registry_error(e: RegistryError) -> ApiError {
    match e {
        RegistryError::Store(e) => ApiError::Store(e),
        RegistryError::NetworkExists(n) => ApiError::Conflict(format!("network {n} exists")),
        RegistryError::UnknownNetwork(n) => ApiError::unknown_network(&n),
        RegistryError::UnknownNode { node, .. } => {
            ApiError::NotFound(format!("no enrolled node {node}"))
        }
        RegistryError::AlreadyEnrolled => {
            ApiError::Conflict("this key is already enrolled".to_owned())
        }
        RegistryError::TokenUnknown | RegistryError::TokenUsed | RegistryError::TokenExpired => {
            ApiError::Forbidden(TOKEN_REFUSED.to_owned())
        }
    }
}

/// The one answer to a token that does not work, whatever the reason (the
/// reason is logged): a caller learns nothing about other tokens.
pub const TOKEN_REFUSED: &str = "enrollment token unknown, used or expired";

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/enroll", post(enroll))
        .route("/api/v1/networks", post(create_network))
        .route(
            "/api/v1/networks/{network}/enroll-tokens",
            get(list_tokens).post(new_token),
        )
        .route(
            "/api/v1/networks/{network}/enroll-tokens/{id}",
            axum::routing::delete(revoke_token),
        )
        .route("/api/v1/networks/{network}/enrolled", get(enrolled))
        .route(
            "/api/v1/networks/{network}/nodes/{node}/revoke",
            post(revoke_node),
        )
}

fn json<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    crate::auth::api::json_body(body)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkBody {
    id: String,
    #[serde(default)]
    accept_unsigned: bool,
}

#[derive(Serialize)]
struct NetworkView {
    id: String,
    accept_unsigned: bool,
}

async fn create_network(
    State(s): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<NetworkView>), ApiError> {
    caller.require_superadmin()?;
    let b: NetworkBody = json(&body)?;
    add_network(&s.store, &b.id, b.accept_unsigned).await?;
    reload(&s.registry).await;
    audit(
        &s.store,
        &caller,
        "network.add",
        AuditTarget::in_network(&b.id, b.id.clone()),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(NetworkView {
            id: b.id,
            accept_unsigned: b.accept_unsigned,
        }),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    site: Option<String>,
    /// A duration: `24h`, `30m`...
    ttl: Option<String>,
}

async fn new_token(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    caller
        .authorize_existing(&s.store, &network, Action::ManageEnrollment)
        .await?;
    let b: TokenBody = if body.is_empty() {
        TokenBody::default()
    } else {
        json(&body)?
    };
    let ttl = match &b.ttl {
        Some(t) => {
            humantime::parse_duration(t).map_err(|e| ApiError::BadRequest(format!("ttl: {e}")))?
        }
        None => DEFAULT_TOKEN_TTL,
    };
    // A token may only place its node into a site of the same network.
    if let Some(site) = &b.site {
        validate_id(site).map_err(|e| ApiError::BadRequest(format!("site: {e}")))?;
        if s.store.site(&network, site).await?.is_none() {
            return Err(ApiError::NotFound(format!(
                "unknown site {site} in network {network}"
            )));
        }
    }
    let created = create_token(&s.store, &network, b.site.as_deref(), ttl).await?;
    audit(
        &s.store,
        &caller,
        "enroll_token.create",
        AuditTarget::in_network(&network, b.site.unwrap_or_default()),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn list_tokens(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
) -> Result<Json<Vec<EnrollTokenInfo>>, ApiError> {
    caller
        .authorize_existing(&s.store, &network, Action::ManageEnrollment)
        .await?;
    Ok(Json(
        s.store
            .enroll_tokens(&network)
            .await
            .map_err(registry_error)?,
    ))
}

async fn revoke_token(
    State(s): State<AppState>,
    caller: Caller,
    Path((network, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller
        .authorize_existing(&s.store, &network, Action::ManageEnrollment)
        .await?;
    let unknown = || ApiError::NotFound(format!("no enrollment token {id} in network {network}"));
    let id_n: i64 = id.parse().map_err(|_| unknown())?;
    match s
        .store
        .revoke_enroll_token(&network, id_n, now_ms())
        .await
        .map_err(registry_error)?
    {
        None => Err(unknown()),
        Some(false) => Err(ApiError::Conflict(format!(
            "enrollment token {id_n} was used or has expired"
        ))),
        Some(true) => {
            audit(
                &s.store,
                &caller,
                "enroll_token.revoke",
                AuditTarget::in_network(&network, format!("enroll token {id_n}")),
            )
            .await?;
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

async fn enrolled(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
) -> Result<Json<Vec<NodeKey>>, ApiError> {
    caller
        .authorize_existing(&s.store, &network, Action::ReadNodes)
        .await?;
    let keys = s.store.node_keys().await.map_err(registry_error)?;
    Ok(Json(
        keys.into_iter().filter(|k| k.network == network).collect(),
    ))
}

async fn revoke_node(
    State(s): State<AppState>,
    caller: Caller,
    Path((network, node)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller
        .authorize_existing(&s.store, &network, Action::ManageNodes)
        .await?;
    revoke(&s.store, Some(&s.registry), &network, &node).await?;
    audit(
        &s.store,
        &caller,
        "node.revoke",
        AuditTarget::in_network(&network, node.clone()),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a router sends to enroll.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The enrollment token.
    pub token: String,
    /// Its ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// Its hostname.
    #[serde(default)]
    pub hostname: Option<String>,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("public_key", &self.public_key)
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

/// What an enrolled router receives (once).
#[derive(Serialize, Deserialize)]
pub struct EnrollResponse {
    /// Its network.
    pub network: String,
    /// Its node id (and MQTT user name).
    pub node: String,
    /// Its site, if the token named one.
    pub site: Option<String>,
    /// The network's salt for client MAC hashes.
    pub client_salt: Option<String>,
    /// The MQTT user name (the node id).
    pub mqtt_username: String,
    /// The MQTT password.
    pub mqtt_password: String,
}

impl std::fmt::Debug for EnrollResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollResponse")
            .field("network", &self.network)
            .field("node", &self.node)
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

fn source_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

async fn enroll(
    State(s): State<AppState>,
    parts: Parts,
    body: Bytes,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiError> {
    let source = source_ip(&parts);
    let key = source.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
    if let Err(wait) = s.enroll_limiter.acquire(&key) {
        warn!(source = %key, "enrollment rate limited");
        return Err(ApiError::TooManyRequests(wait.as_secs().max(1)));
    }
    let req: EnrollRequest = json(&body)?;
    let public = sign::key_bytes_from_hex(&req.public_key)
        .ok()
        .filter(|k| sign::VerifyingKey::from_bytes(k).is_ok())
        .ok_or_else(|| {
            ApiError::BadRequest("public_key: expected 64 hex digits of an ed25519 key".to_owned())
        })?;
    let hostname = req.hostname.as_deref().map(|h| {
        h.chars()
            .filter(|c| !c.is_control())
            .take(MAX_HOSTNAME)
            .collect::<String>()
    });
    if !looks_like_token(&req.token) {
        record_refusal(&s.store, "malformed token", source).await;
        return Err(ApiError::Forbidden(TOKEN_REFUSED.to_owned()));
    }
    let node = node_id_for(&public);
    let password = generate_password();
    let hash = crate::mosquitto::hash_password(password.expose());
    let public_hex = sign::to_hex(&public);
    let result = s
        .store
        .enroll(
            &sha256_hex(&req.token),
            &NewNodeKey {
                node: &node,
                public_key: &public_hex,
                mqtt_password_hash: &hash,
                hostname: hostname.as_deref(),
            },
            now_ms(),
        )
        .await;
    let enrolled = match result {
        Ok(e) => e,
        Err(
            e @ (RegistryError::TokenUnknown
            | RegistryError::TokenUsed
            | RegistryError::TokenExpired),
        ) => {
            record_refusal(&s.store, &e.to_string(), source).await;
            return Err(registry_error(e));
        }
        Err(e) => return Err(registry_error(e)),
    };
    reload(&s.registry).await;
    // With Mosquitto's files kept by this controller: answer once they let
    // the router in, so that it can connect at once.
    s.registry.broker_synced(crate::mosquitto::SYNC_WAIT).await;
    let source_text = source.map(|ip| ip.to_string());
    let _ = record(
        &s.store,
        &format!("node:{node}"),
        "node.enroll",
        &AuditTarget::in_network(&enrolled.network, node.clone()),
        "ok",
        source_text.as_deref(),
    )
    .await;
    info!(network = %enrolled.network, node = %node, hostname = ?hostname, "node enrolled");
    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse {
            network: enrolled.network,
            mqtt_username: node.clone(),
            node,
            site: enrolled.site,
            client_salt: enrolled.client_salt,
            mqtt_password: password.expose().to_owned(),
        }),
    ))
}

async fn record_refusal(store: &Store, why: &str, source: Option<IpAddr>) {
    let source = source.map(|ip| ip.to_string());
    warn!(
        reason = why,
        source = source.as_deref().unwrap_or("-"),
        "enrollment refused"
    );
    let _ = record(
        store,
        "enroll",
        "node.enroll",
        &AuditTarget::global("-"),
        "denied",
        source.as_deref(),
    )
    .await;
}

async fn reload(registry: &Arc<Registry>) {
    if let Err(e) = registry.reload().await {
        warn!(error = %e, "cannot reload the node registry");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_node_ids() {
        let t = generate_token();
        assert!(looks_like_token(&t), "{t}");
        assert_ne!(t, generate_token());
        assert!(!looks_like_token("mte_xyz"));
        assert!(!looks_like_token(&t.replace("mte_", "mt_")));
        let id = node_id_for(&[7; 32]);
        assert_eq!(id.len(), 12);
        assert!(validate_id(&id).is_ok());
    }
}
