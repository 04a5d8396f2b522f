//! The API of people: login and logout, who am I, API tokens, accounts,
//! roles per network, and the audit log.
//!
//! | endpoint | who |
//! |---|---|
//! | `POST /api/v1/login` `{"user","password"}` | anyone (rate limited); sets the session cookie, answers the CSRF token |
//! | `POST /api/v1/logout` | a session (with `X-CSRF-Token`) |
//! | `GET /api/v1/me` | anyone logged in |
//! | `GET /api/v1/tokens`, `DELETE /api/v1/tokens/{id}` | the token's owner (a superadmin: any) |
//! | `POST /api/v1/tokens` `{"label","network","role","expires_in"}` | a session (tokens do not mint tokens) |
//! | `POST /api/v1/users` `{"name","password","superadmin"}` | a superadmin |
//! | `GET /api/v1/networks/{network}/roles` | `ManageUsers` in the network |
//! | `PUT`/`DELETE /api/v1/networks/{network}/roles/{user}` `{"role"}` | `ManageUsers` in the network; `PUT` names a member of a network the caller manages (a superadmin: any account) |
//! | `GET /api/v1/audit?network=&before=&limit=` | `ReadAudit` in the network; the whole log: a superadmin |

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use meshtable_proto::validate_id;
use meshtable_store::accounts::{Account, TokenInfo};
use meshtable_store::audit::AuditEntry;
use meshtable_store::time::format_rfc3339_ms;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::secret::{self, Secret};
use super::{
    Action, AuditTarget, AuthError, AuthState, Caller, DEFAULT_TOKEN_TTL, Role, SESSION_COOKIE,
    SESSION_TTL, TokenScope, Via, audit, record,
};
use crate::api::{ApiError, AppState, parse_network, parse_query};
use crate::ingest::now_ms;

/// Most audit entries one request returns.
pub const MAX_AUDIT_LIMIT: u64 = 1000;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/me", get(me))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/users", post(create_user))
        .route("/api/v1/networks/{network}/roles", get(list_roles))
        .route(
            "/api/v1/networks/{network}/roles/{user}",
            put(grant_role).delete(revoke_role),
        )
        .route("/api/v1/audit", get(audit_log))
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Store(e) => ApiError::Store(e),
            AuthError::Hash(e) => ApiError::BadRequest(e.to_string()),
            AuthError::Invalid(m) => ApiError::BadRequest(m),
            AuthError::NotFound(m) => ApiError::NotFound(m),
            AuthError::Exists(u) => ApiError::Conflict(format!("user {u} exists")),
        }
    }
}

/// Parses a JSON body into `T`, answering 400 with serde's message.
pub fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// The `Set-Cookie` value of a new session.
pub fn session_cookie(session_id: &str, auth: &AuthState) -> String {
    format!(
        "{SESSION_COOKIE}={session_id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if auth.secure_cookies { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_session_cookie(auth: &AuthState) -> String {
    format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if auth.secure_cookies { "; Secure" } else { "" }
    )
}

/// A session just opened.
#[derive(Debug)]
pub struct NewSession {
    /// Who logged in.
    pub account: Account,
    /// The cookie value (secret).
    pub id: Secret,
    /// The session's CSRF token.
    pub csrf: String,
    /// When it ends, Unix ms.
    pub expires_ms: i64,
}

fn limiter_user_key(user: &str) -> String {
    user.chars().take(64).collect::<String>().to_lowercase()
}

/// Checks a login (rate limited per source address and login name, failed
/// attempts only), opens a session, and audits the attempt.
pub async fn login_session(
    state: &AppState,
    source: Option<IpAddr>,
    user: &str,
    password: &Secret,
) -> Result<NewSession, ApiError> {
    let ip_key = source.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let user_key = limiter_user_key(user);
    let src = source.map(|ip| ip.to_string());
    let target = AuditTarget::global(user_key.clone());
    if let Err(wait) = state
        .auth
        .login_by_ip
        .check(&ip_key)
        .and(state.auth.login_by_user.check(&user_key))
    {
        record(
            &state.store,
            &user_key,
            "login",
            &target,
            "rate_limited",
            src.as_deref(),
        )
        .await?;
        return Err(ApiError::TooManyRequests(wait.as_secs().max(1)));
    }
    let Some(account) = super::check_password(&state.store, user, password).await? else {
        state.auth.login_by_ip.hit(&ip_key);
        state.auth.login_by_user.hit(&user_key);
        record(
            &state.store,
            &user_key,
            "login",
            &target,
            "failed",
            src.as_deref(),
        )
        .await?;
        return Err(ApiError::Unauthorized(
            "wrong user name or password".to_owned(),
        ));
    };
    let id = secret::random_hex256();
    let now = now_ms();
    let expires_ms = now + i64::try_from(SESSION_TTL.as_millis()).unwrap_or(i64::MAX);
    state
        .store
        .create_session(&secret::sha256_hex(&id), account.id, now, expires_ms)
        .await?;
    record(
        &state.store,
        &account.name,
        "login",
        &AuditTarget::global(account.name.clone()),
        "ok",
        src.as_deref(),
    )
    .await?;
    Ok(NewSession {
        account,
        csrf: secret::csrf_token(&id),
        id: Secret::new(id),
        expires_ms,
    })
}

/// Ends the caller's session (if by session), audited.
pub async fn logout_session(
    state: &AppState,
    caller: &Caller,
    session_id: Option<&str>,
) -> Result<(), ApiError> {
    if let (Some(Via::Session { .. }), Some(id)) = (caller.via(), session_id) {
        state.store.delete_session(&secret::sha256_hex(id)).await?;
        audit(
            &state.store,
            caller,
            "logout",
            AuditTarget::global(caller.user_name().unwrap_or_default()),
        )
        .await?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    user: String,
    password: String,
}

#[derive(Serialize)]
struct LoginAnswer {
    user: String,
    csrf: String,
    expires: String,
}

async fn login(
    State(s): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // A cross-site form can post text/plain but not application/json
    // without the browser asking first: no login CSRF through the API.
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json_type {
        return Err(ApiError::BadRequest(
            "send the login as Content-Type: application/json".to_owned(),
        ));
    }
    let b: LoginBody = json_body(&body)?;
    let password = Secret::new(b.password);
    let session = login_session(&s, caller.source(), &b.user, &password).await?;
    let mut resp = Json(LoginAnswer {
        user: session.account.name.clone(),
        csrf: session.csrf.clone(),
        expires: format_rfc3339_ms(session.expires_ms),
    })
    .into_response();
    let cookie = session_cookie(session.id.expose(), &s.auth);
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ApiError::BadRequest(e.to_string()))?,
    );
    Ok(resp)
}

async fn logout(
    State(s): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    caller.require_user()?;
    let id = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim().to_owned());
    logout_session(&s, &caller, id.as_deref()).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&clear_session_cookie(&s.auth))
            .map_err(|e| ApiError::BadRequest(e.to_string()))?,
    );
    Ok(resp)
}

#[derive(Serialize)]
struct MeNetwork {
    network: String,
    role: Option<String>,
}

#[derive(Serialize)]
struct MeAnswer {
    user: String,
    superadmin: bool,
    via: &'static str,
    roles: Vec<MeNetwork>,
}

async fn me(State(s): State<AppState>, caller: Caller) -> Result<Json<MeAnswer>, ApiError> {
    let account = caller.require_user()?;
    let roles = s
        .store
        .roles_of(account.id)
        .await?
        .into_iter()
        .filter(|(n, _)| caller.sees(n))
        .map(|(network, role)| MeNetwork {
            network,
            role: Some(role),
        })
        .collect();
    Ok(Json(MeAnswer {
        user: account.name.clone(),
        superadmin: caller.is_superadmin(),
        via: match caller.via() {
            Some(Via::Token { .. }) => "token",
            _ => "session",
        },
        roles,
    }))
}

/// A token as listed (never its secret).
#[derive(Debug, Serialize)]
pub struct TokenView {
    /// Row id, to revoke it.
    pub id: i64,
    /// Visible start.
    pub prefix: String,
    /// Label.
    pub label: String,
    /// Only this network.
    pub network: Option<String>,
    /// At most this role.
    pub role: Option<String>,
    /// Created, RFC 3339.
    pub created: String,
    /// Expires, RFC 3339.
    pub expires: String,
    /// Revoked, RFC 3339.
    pub revoked: Option<String>,
}

impl From<TokenInfo> for TokenView {
    fn from(t: TokenInfo) -> TokenView {
        TokenView {
            id: t.id,
            prefix: t.prefix,
            label: t.label,
            network: t.network,
            role: t.role,
            created: format_rfc3339_ms(t.created_ms),
            expires: format_rfc3339_ms(t.expires_ms),
            revoked: t.revoked_ms.map(format_rfc3339_ms),
        }
    }
}

#[derive(Serialize)]
struct TokensAnswer {
    tokens: Vec<TokenView>,
}

/// The id of the caller's API token when it is narrowed to a network or a
/// role: such a token lists and revokes only itself, never its owner's
/// other tokens (whose labels and scopes name the owner's other networks).
async fn narrowed_token(s: &AppState, caller: &Caller) -> Result<Option<i64>, ApiError> {
    let Some(Via::Token { id, .. }) = caller.via() else {
        return Ok(None);
    };
    Ok(s.store
        .token(*id)
        .await?
        .filter(|t| t.network.is_some() || t.role.is_some())
        .map(|t| t.id))
}

async fn list_tokens(
    State(s): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<TokensAnswer>, ApiError> {
    parse_query(raw.as_deref(), &[])?;
    let account = caller.require_user()?;
    let only = narrowed_token(&s, &caller).await?;
    Ok(Json(TokensAnswer {
        tokens: s
            .store
            .tokens(Some(account.id))
            .await?
            .into_iter()
            .filter(|t| only.is_none_or(|id| t.id == id))
            .map(TokenView::from)
            .collect(),
    }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateTokenBody {
    #[serde(default)]
    label: String,
    network: Option<String>,
    role: Option<String>,
    /// `30d`, `12h`...
    expires_in: Option<String>,
}

#[derive(Serialize)]
struct CreatedToken {
    /// Shown once.
    token: String,
    #[serde(flatten)]
    info: TokenView,
}

async fn create_token(
    State(s): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let account = caller.require_user()?.clone();
    if !matches!(caller.via(), Some(Via::Session { .. })) {
        return Err(ApiError::Forbidden(
            "API tokens are created from a login session or the command line, not with a token"
                .to_owned(),
        ));
    }
    let b: CreateTokenBody = if body.is_empty() {
        CreateTokenBody::default()
    } else {
        json_body(&body)?
    };
    let network = parse_network(b.network)?;
    // A token for a network the caller has no role in, or that does not
    // exist (a superadmin sees every name): the same 404.
    if let Some(n) = &network
        && (!caller.sees(n) || !s.store.network_known(n).await?)
    {
        return Err(ApiError::unknown_network(n));
    }
    let role = b
        .role
        .map(|r| r.parse::<Role>().map_err(ApiError::BadRequest))
        .transpose()?;
    let ttl = match b.expires_in {
        None => DEFAULT_TOKEN_TTL,
        Some(d) => humantime::parse_duration(&d)
            .map_err(|e| ApiError::BadRequest(format!("expires_in: {e}")))?,
    };
    let scope = TokenScope { network, role };
    let issued = super::issue_token(&s.store, &account, &scope, ttl, &b.label).await?;
    let target = match &scope.network {
        Some(n) => AuditTarget::in_network(n, issued.prefix.clone()),
        None => AuditTarget::global(issued.prefix.clone()),
    };
    audit(&s.store, &caller, "token.create", target).await?;
    let info = s
        .store
        .token(issued.id)
        .await?
        .ok_or_else(|| ApiError::NotFound("token vanished".to_owned()))?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: issued.token.expose().to_owned(),
            info: info.into(),
        }),
    ))
}

async fn revoke_token(
    State(s): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let account = caller.require_user()?;
    let unknown = || ApiError::NotFound(format!("unknown token {id}"));
    let id_n: i64 = id.parse().map_err(|_| unknown())?;
    let token = s.store.token(id_n).await?.ok_or_else(unknown)?;
    if token.user_id != account.id && !caller.is_superadmin() {
        return Err(unknown());
    }
    if narrowed_token(&s, &caller)
        .await?
        .is_some_and(|own| own != id_n)
    {
        return Err(unknown());
    }
    s.store.revoke_token(id_n, now_ms()).await?;
    let target = match &token.network {
        Some(n) => AuditTarget::in_network(n, token.prefix.clone()),
        None => AuditTarget::global(token.prefix.clone()),
    };
    audit(&s.store, &caller, "token.revoke", target).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUserBody {
    name: String,
    password: Option<String>,
    #[serde(default)]
    superadmin: bool,
}

#[derive(Serialize)]
struct CreatedUser {
    name: String,
    superadmin: bool,
    /// Only when generated: shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

async fn create_user(
    State(s): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<CreatedUser>), ApiError> {
    caller.require_superadmin()?;
    let b: CreateUserBody = json_body(&body)?;
    let password = b.password.map(Secret::new);
    let (account, generated) =
        super::add_user(&s.store, &b.name, password.as_ref(), b.superadmin).await?;
    audit(
        &s.store,
        &caller,
        if b.superadmin {
            "user.add_superadmin"
        } else {
            "user.add"
        },
        AuditTarget::global(account.name.clone()),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            name: account.name,
            superadmin: account.superadmin,
            password: generated.map(|p| p.expose().to_owned()),
        }),
    ))
}

fn checked_network(network: &str) -> Result<(), ApiError> {
    validate_id(network).map_err(|e| ApiError::BadRequest(format!("network: {e}")))
}

#[derive(Serialize)]
struct RoleView {
    user: String,
    role: String,
}

#[derive(Serialize)]
struct RolesAnswer {
    network: String,
    roles: Vec<RoleView>,
}

async fn list_roles(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
) -> Result<Json<RolesAnswer>, ApiError> {
    checked_network(&network)?;
    caller
        .authorize_existing(&s.store, &network, Action::ManageUsers)
        .await?;
    let roles = s
        .store
        .grants_in(&network)
        .await?
        .into_iter()
        .map(|g| RoleView {
            user: g.user,
            role: g.role,
        })
        .collect();
    Ok(Json(RolesAnswer { network, roles }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    role: String,
}

/// `PUT /api/v1/networks/{network}/roles/{user}`: gives `user` the role
/// in the network (replacing the one they had there).
///
/// Account names are not the business of a network admin: only a
/// superadmin (who creates accounts) may name any account, and learns
/// that a name is unknown (404 `unknown user NAME`). Anyone else with
/// `ManageUsers` may name only the members of networks they manage (an
/// account holding a role in one of them, which `GET .../roles` shows them
/// anyway); every other name, existing or not, gets the same 404
/// `no member NAME in the networks you manage`, so a grant does not tell
/// which accounts exist. A newcomer gets their first role from a
/// superadmin (API or `meshtable user grant`).
async fn grant_role(
    State(s): State<AppState>,
    caller: Caller,
    Path((network, user)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    checked_network(&network)?;
    caller
        .authorize_existing(&s.store, &network, Action::ManageUsers)
        .await?;
    let b: GrantBody = json_body(&body)?;
    let role: Role = b.role.parse().map_err(ApiError::BadRequest)?;
    let creds = s.store.credentials(&user).await?;
    let account = if caller.is_superadmin() {
        creds.ok_or_else(|| ApiError::NotFound(format!("unknown user {user}")))?
    } else {
        // The same answer, after the same reads, for a name that does not
        // exist and for an account outside the caller's networks (no
        // account has id 0: the roles of nobody, read all the same).
        let id = creds.as_ref().map_or(0, |c| c.account.id);
        let roles = s.store.roles_of(id).await?;
        let member = roles
            .iter()
            .any(|(n, _)| caller.can(n, Action::ManageUsers));
        match creds {
            Some(c) if member => c,
            _ => {
                return Err(ApiError::NotFound(format!(
                    "no member {user} in the networks you manage"
                )));
            }
        }
    }
    .account;
    s.store
        .grant_role(account.id, &network, role.as_str(), now_ms())
        .await?;
    audit(
        &s.store,
        &caller,
        "role.grant",
        AuditTarget::in_network(&network, format!("{user} as {role}")),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn revoke_role(
    State(s): State<AppState>,
    caller: Caller,
    Path((network, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    checked_network(&network)?;
    caller
        .authorize_existing(&s.store, &network, Action::ManageUsers)
        .await?;
    let unknown = || ApiError::NotFound(format!("user {user} has no role in network {network}"));
    let creds = s.store.credentials(&user).await?.ok_or_else(unknown)?;
    if !s.store.revoke_role(creds.account.id, &network).await? {
        return Err(unknown());
    }
    audit(
        &s.store,
        &caller,
        "role.revoke",
        AuditTarget::in_network(&network, user.clone()),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct AuditAnswer {
    network: Option<String>,
    entries: Vec<AuditEntry>,
}

async fn audit_log(
    State(s): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<AuditAnswer>, ApiError> {
    let mut q = parse_query(raw.as_deref(), &["network", "before", "limit"])?;
    let network = parse_network(q.remove("network"))?;
    match &network {
        Some(n) => {
            caller
                .authorize_existing(&s.store, n, Action::ReadAudit)
                .await?
        }
        None => {
            caller.require_superadmin()?;
        }
    }
    let before = q
        .remove("before")
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| ApiError::BadRequest("before: not an entry id".to_owned()))
        })
        .transpose()?;
    let limit = match q.remove("limit") {
        None => 100,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|l| (1..=MAX_AUDIT_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("limit: a number from 1 to {MAX_AUDIT_LIMIT}"))
            })?,
    };
    let entries = s.store.audit_log(network.as_deref(), before, limit).await?;
    Ok(Json(AuditAnswer { network, entries }))
}

/// Parses a token lifetime like `30d` for the command line.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_flags() {
        let plain = session_cookie("abc", &AuthState::new(false));
        assert_eq!(
            plain,
            "meshtable_session=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"
        );
        let tls = session_cookie("abc", &AuthState::new(true));
        assert!(tls.ends_with("; Secure"), "{tls}");
        assert!(clear_session_cookie(&AuthState::new(true)).contains("Max-Age=0; Secure"));
    }
}
