//! Alerts that people keep turned on: rules with sensible defaults
//! ([`rules`]), a periodic idempotent evaluation ([`engine`]), delivery by
//! webhook and e-mail with digest batching ([`notify`]), and the HTTP API:
//!
//! | method | path | action | what |
//! |---|---|---|---|
//! | GET | `/api/v1/networks/{network}/alerts[?state=open\|all]` | ReadNodes | firing and acknowledged alerts (`all`: pending and resolved too) |
//! | POST | `/api/v1/networks/{network}/alerts/{id}/ack` | ManageAlerts | firing -> acknowledged (409 when not firing) |
//! | GET, PUT | `/api/v1/networks/{network}/alert-settings` | ManageAlerts | delivery and rule settings |
//! | GET, PUT, DELETE | `/api/v1/networks/{network}/links/{from}/{to}/reference` | ReadNodes (GET), ManageAlerts | link references for `link_degraded` ([`links`]) |

pub mod engine;
pub mod links;
pub mod notify;
pub mod rules;
pub mod target;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use meshtable_store::alerts::{Alert, AlertSettings};
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, AppState, parse_query};
use crate::auth::api::json_body;
use crate::auth::{Action, AuditTarget, Caller};
use crate::ingest::now_ms;

/// Default digest interval: 5 minutes.
pub const DEFAULT_DIGEST_SECONDS: u64 = 300;

/// The alert routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/networks/{network}/alerts", get(list))
        .route("/api/v1/networks/{network}/alerts/{id}/ack", post(ack))
        .route(
            "/api/v1/networks/{network}/alert-settings",
            get(get_settings).put(put_settings),
        )
        .merge(links::router())
}

#[derive(Serialize)]
struct AlertsBody {
    network: String,
    alerts: Vec<Alert>,
}

async fn list(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<AlertsBody>, ApiError> {
    let mut q = parse_query(raw.as_deref(), &["state"])?;
    caller
        .authorize_existing(&s.store, &network, Action::ReadNodes)
        .await?;
    let all = match q.remove("state").as_deref() {
        None | Some("open") => false,
        Some("all") => true,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "state: expected open or all".to_owned(),
            ));
        }
    };
    let alerts = s.store.alerts(&network, all, all).await?;
    Ok(Json(AlertsBody { network, alerts }))
}

async fn ack(
    State(s): State<AppState>,
    caller: Caller,
    Path((network, id)): Path<(String, String)>,
) -> Result<Json<Alert>, ApiError> {
    caller
        .authorize_existing(&s.store, &network, Action::ManageAlerts)
        .await?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("no alert {id} in network {network}")))?;
    match s
        .store
        .ack_alert(&network, id, &caller.actor(), now_ms())
        .await?
    {
        None => Err(ApiError::NotFound(format!(
            "no alert {id} in network {network}"
        ))),
        Some(false) => Err(ApiError::Conflict(format!("alert {id} is not firing"))),
        Some(true) => {
            crate::auth::audit(
                &s.store,
                &caller,
                "alert.ack",
                AuditTarget::in_network(&network, format!("alert {id}")),
            )
            .await?;
            s.store
                .alert(&network, id)
                .await?
                .map(Json)
                .ok_or_else(|| ApiError::NotFound(format!("no alert {id} in network {network}")))
        }
    }
}

/// The alert settings of a network, as JSON.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    #[serde(default)]
    webhook_url: Option<String>,
    #[serde(default)]
    email_to: Vec<String>,
    #[serde(default)]
    email_from: Option<String>,
    #[serde(default)]
    smtp_server: Option<String>,
    #[serde(default = "default_digest")]
    digest_seconds: u64,
    #[serde(default)]
    rules: rules::Rules,
}

fn default_digest() -> u64 {
    DEFAULT_DIGEST_SECONDS
}

async fn get_settings(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
) -> Result<Json<SettingsBody>, ApiError> {
    caller
        .authorize_existing(&s.store, &network, Action::ManageAlerts)
        .await?;
    let st = s.store.alert_settings(&network).await?;
    let known = st.last_digest_ms != 0 || st.digest_ms != 0 || st.rules_json.is_some();
    Ok(Json(SettingsBody {
        rules: engine::network_rules(&network, st.rules_json.as_deref()),
        webhook_url: st.webhook_url,
        email_to: st.email_to,
        email_from: st.email_from,
        smtp_server: st.smtp_server,
        digest_seconds: if known {
            u64::try_from(st.digest_ms / 1000).unwrap_or(0)
        } else {
            DEFAULT_DIGEST_SECONDS
        },
    }))
}

async fn put_settings(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
    body: Bytes,
) -> Result<Json<SettingsBody>, ApiError> {
    caller
        .authorize_existing(&s.store, &network, Action::ManageAlerts)
        .await?;
    let b: SettingsBody = json_body(&body)?;
    b.rules
        .check()
        .map_err(|e| ApiError::BadRequest(format!("rules: {e}")))?;
    if let Some(u) = &b.webhook_url {
        // An http(s) URL, and (unless the configuration allows it) not to
        // an internal address: checked again at every delivery.
        target::check_url(u, s.webhook_allow_private)
            .await
            .map_err(|e| ApiError::BadRequest(format!("webhook_url: {e}")))?;
    }
    for t in b.email_to.iter().chain(b.email_from.iter()) {
        t.parse::<lettre::message::Mailbox>()
            .map_err(|e| ApiError::BadRequest(format!("e-mail address {t:?}: {e}")))?;
    }
    if let Some(srv) = &b.smtp_server
        && srv
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
    {
        return Err(ApiError::BadRequest(
            "smtp_server: expected host:port".to_owned(),
        ));
    }
    if b.digest_seconds > 7 * 24 * 3600 {
        return Err(ApiError::BadRequest(
            "digest_seconds: at most one week".to_owned(),
        ));
    }
    let rules_json =
        serde_json::to_string(&b.rules).map_err(|e| ApiError::BadRequest(format!("rules: {e}")))?;
    s.store
        .set_alert_settings(
            &network,
            &AlertSettings {
                webhook_url: b.webhook_url.clone(),
                email_to: b.email_to.clone(),
                email_from: b.email_from.clone(),
                smtp_server: b.smtp_server.clone(),
                digest_ms: i64::try_from(b.digest_seconds * 1000).unwrap_or(i64::MAX),
                rules_json: Some(rules_json),
                last_digest_ms: 0,
            },
        )
        .await?;
    crate::auth::audit(
        &s.store,
        &caller,
        "alert.settings",
        AuditTarget::in_network(&network, "alert settings"),
    )
    .await?;
    Ok(Json(b))
}
