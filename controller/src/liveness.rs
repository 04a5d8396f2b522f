//! Liveness: a periodic sweep that marks silent nodes offline, flapping
//! with hysteresis, links not reported any more, and the liveness API.
//!
//! Each sweep is an idempotent reconcile step over the store
//! ([`Store::sweep_offline`], [`Store::reconcile_flapping`],
//! [`Store::sweep_links`]): running it twice, or on several controllers
//! at once, changes nothing more than running it once.
//!
//! | endpoint | role action | what |
//! |---|---|---|
//! | `GET /api/v1/networks/{network}/liveness` | `ReadNodes` | every node: status, state (online, offline, flapping), site, `in_maintenance` |
//! | `GET /api/v1/networks/{network}/nodes/new[?days=14]` | `ReadNodes` | nodes first seen within `days` days, newest first |
//! | `GET /api/v1/networks/{network}/nodes/lost[?min=10m&max=14d]` | `ReadNodes` | nodes offline for more than `min` and less than `max`, most recent first |
//! | `GET /api/v1/networks/{network}/nodes/{node}/states[?from=&to=]` | `ReadNodes` | a node's state history (default the last 7 days) |
//! | `GET /api/v1/networks/{network}/nodes/{node}/mesh` | `ReadNodes` | radios, stations, neighbours, gateway, clients, site, state |
//! | `GET /api/v1/networks/{network}/maintenance[?all=true]` | `ReadNodes` | windows not ended yet (all: past ones too) |
//! | `POST /api/v1/networks/{network}/maintenance` | `ManageMaintenance` | `{"node"\|"site", "start"?, "end"\|"duration", "reason"?}`: 201 with the window |
//! | `DELETE /api/v1/networks/{network}/maintenance/{id}` | `ManageMaintenance` | 204 |
//! | `GET /api/v1/networks/{network}/sites` | `ReadNodes` | sites with their node counts |
//! | `POST /api/v1/networks/{network}/sites` | `ManageSites` | `{"id","name","location"?: {"latitude","longitude"}}`: 201 |
//! | `GET /api/v1/networks/{network}/sites/{site}` | `ReadNodes` | one site |
//! | `PUT /api/v1/networks/{network}/nodes/{node}/site` | `ManageSites` | `{"site": "id"\|null}`: 204 |
//!
//! Times in bodies and queries are RFC 3339 or Unix milliseconds; durations
//! are humantime (`90m`, `2h`, `14days`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use meshtable_proto::validate_id;
use meshtable_store::liveness::{
    FlapPolicy, Maintenance, MaintenanceCreated, MaintenanceTarget, NewMaintenance, NodeLiveness,
    StateChange,
};
use meshtable_store::sites::{Site, SiteAssigned, SiteCreated, SiteLocation};
use meshtable_store::topology::NodeMesh;
use meshtable_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{error, info};

use crate::api::{ApiError, AppState, parse_query, parse_time};
use crate::auth::api::json_body;
use crate::auth::{Action, AuditTarget, Caller, audit};
use crate::ingest::{Progress, now_ms};
use crate::periodic::Every;

/// The report interval assumed for nodes whose hello did not arrive.
pub const DEFAULT_INTERVAL_MS: i64 = 60_000;

/// Runs one sweep at `now_ms` and logs every node it marked offline; then
/// marks down the links not reported for `offline_after` intervals, and
/// applies the default [`FlapPolicy`]. Returns the `(network, node)` pairs
/// it marked offline.
pub async fn sweep(
    store: &Store,
    now_ms: i64,
    offline_after: u32,
) -> Result<Vec<(String, String)>, StoreError> {
    sweep_with(store, now_ms, offline_after, FlapPolicy::default()).await
}

/// [`sweep`] with a [`FlapPolicy`].
pub async fn sweep_with(
    store: &Store,
    now_ms: i64,
    offline_after: u32,
    flap: FlapPolicy,
) -> Result<Vec<(String, String)>, StoreError> {
    let changed = store
        .sweep_offline(now_ms, offline_after, DEFAULT_INTERVAL_MS)
        .await?;
    for (network, node) in &changed {
        info!(network = %network, node = %node, "node offline: missed its reports");
    }
    let down = store
        .sweep_links(now_ms, offline_after, DEFAULT_INTERVAL_MS)
        .await?;
    if down > 0 {
        info!(links = down, "links down: not reported any more");
    }
    for c in store.reconcile_flapping(now_ms, flap).await? {
        if c.flapping {
            info!(network = %c.network, node = %c.node, "node flapping");
        } else {
            info!(network = %c.network, node = %c.node, "node stable again");
        }
    }
    Ok(changed)
}

/// Sweeps every `interval` until `stop` turns true.
///
/// The sweep's "now" is the time up to which ingest has handled every
/// message ([`Progress::handled_until`]): when reports queue up behind a slow
/// database, their nodes are not declared offline for it.
pub async fn run(
    store: Store,
    interval: Duration,
    offline_after: u32,
    flap: FlapPolicy,
    progress: Arc<Progress>,
    stop: watch::Receiver<bool>,
) {
    let mut every = Every::new(interval, stop);
    while every.tick().await {
        let now = progress.handled_until(now_ms());
        if let Err(e) = sweep_with(&store, now, offline_after, flap).await {
            error!(error = %e, "liveness sweep failed");
        }
    }
}

/// Default of `days` for the new nodes list.
pub const DEFAULT_NEW_DAYS: u32 = 14;

/// Default of `min` for the lost nodes list.
pub const DEFAULT_LOST_MIN: Duration = Duration::from_secs(10 * 60);

/// Default of `max` for the lost nodes list.
pub const DEFAULT_LOST_MAX: Duration = Duration::from_secs(14 * 24 * 3600);

/// Default span of a state history request.
pub const DEFAULT_HISTORY_SPAN_MS: i64 = 7 * 24 * 3_600_000;

/// The routes of the liveness API (see the module documentation).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/networks/{network}/liveness", get(liveness))
        .route("/api/v1/networks/{network}/nodes/new", get(new_nodes))
        .route("/api/v1/networks/{network}/nodes/lost", get(lost_nodes))
        .route(
            "/api/v1/networks/{network}/nodes/{node}/states",
            get(state_history),
        )
        .route(
            "/api/v1/networks/{network}/nodes/{node}/mesh",
            get(node_mesh),
        )
        .route(
            "/api/v1/networks/{network}/nodes/{node}/site",
            put(assign_site),
        )
        .route(
            "/api/v1/networks/{network}/maintenance",
            get(list_maintenance).post(create_maintenance),
        )
        .route(
            "/api/v1/networks/{network}/maintenance/{id}",
            axum::routing::delete(delete_maintenance),
        )
        .route(
            "/api/v1/networks/{network}/sites",
            get(list_sites).post(create_site),
        )
        .route("/api/v1/networks/{network}/sites/{site}", get(one_site))
}

/// A humantime duration from a query or body.
pub fn parse_span(name: &str, value: &str) -> Result<Duration, ApiError> {
    humantime::parse_duration(value).map_err(|e| {
        ApiError::BadRequest(format!(
            "{name}: {:?} is not a duration (90m, 2h, 14days): {e}",
            value.chars().take(32).collect::<String>()
        ))
    })
}

/// `d` in milliseconds, saturated.
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn check_node_id(node: &str) -> Result<(), ApiError> {
    validate_id(node).map_err(|e| ApiError::BadRequest(format!("node: {e}")))
}

#[derive(Serialize)]
struct NodesBody {
    network: String,
    nodes: Vec<NodeLiveness>,
}

async fn liveness(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<NodesBody>, ApiError> {
    parse_query(raw.as_deref(), &[])?;
    caller
        .authorize_existing(&s.store, &network, Action::ReadNodes)
        .await?;
    let nodes = s.store.liveness(&network, now_ms()).await?;
    Ok(Json(NodesBody { network, nodes }))
}

async fn new_nodes(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<NodesBody>, ApiError> {
    let mut q = parse_query(raw.as_deref(), &["days"])?;
    caller
        .authorize_existing(&s.store, &network, Action::ReadNodes)
        .await?;
    let days = match q.remove("days") {
        Some(d) => d
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=3650).contains(d))
            .ok_or_else(|| ApiError::BadRequest("days: expected 1 to 3650".to_owned()))?,
        None => DEFAULT_NEW_DAYS,
    };
    let now = now_ms();
    let since = now.saturating_sub(i64::from(days) * 24 * 3_600_000);
    let nodes = s.store.new_nodes(&network, since, now).await?;
    Ok(Json(NodesBody { network, nodes }))
}

async fn lost_nodes(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<NodesBody>, ApiError> {
    let mut q = parse_query(raw.as_deref(), &["min", "max"])?;
    caller
        .authorize_existing(&s.store, &network, Action::ReadNodes)
        .await?;
    let min = match q.remove("min") {
        Some(v) => parse_span("min", &v)?,
        None => DEFAULT_LOST_MIN,
    };
    let max = match q.remove("max") {
        Some(v) => parse_span("max", &v)?,
        None => DEFAULT_LOST_MAX,
    };
    if min >= max {
        return Err(ApiError::BadRequest("min must be below max".to_owned()));
    }
    let nodes = s
        .store
        .lost_nodes(&network, now_ms(), ms(min), ms(max))
        .await?;
    Ok(Json(NodesBody { network, nodes }))
}

#[derive(Serialize)]
struct HistoryBody {
    network: String,
    node: String,
    states: Vec<StateChange>,
}

async fn state_history(
    State(s): State<AppState>,
    caller: Caller,
    Path((network, node)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<HistoryBody>, ApiError> {
    let mut q = parse_query(raw.as_deref(), &["from", "to"])?;
    caller
        .authorize_existing(&s.store, &network, Action::ReadNodes)
        .await?;
    check_node_id(&node)?;
    let to = match q.remove("to") {
        Some(v) => parse_time("to", &v)?,
        None => now_ms(),
    };
    let from = match q.remove("from") {
        Some(v) => parse_time("from", &v)?,
        None => to.saturating_sub(DEFAULT_HISTORY_SPAN_MS),
    };
    if from > to {
        return Err(ApiError::BadRequest("from is after to".to_owned()));
    }
    if s.store.find_node(&node, Some(&network)).await?.is_empty() {
        return Err(ApiError::NotFound(format!(
            "unknown node {node} in network {network}"
        )));
    }
    let states = s.store.state_history(&network, &node, from, to).await?;
    Ok(Json(HistoryBody {
        network,
        node,
        states,
    }))
}

async fn node_mesh(
    State(s): State<AppState>,
    caller: Caller,
    Path((network, node)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<NodeMesh>, ApiError> {
    parse_query(raw.as_deref(), &[])?;
    caller
        .authorize_existing(&s.store, &network, Action::ReadNodes)
        .await?;
    check_node_id(&node)?;
    s.store
        .node_mesh(&network, &node, now_ms())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("unknown node {node} in network {network}")))
}

#[derive(Serialize)]
struct MaintenanceBody {
    network: String,
    windows: Vec<Maintenance>,
}

async fn list_maintenance(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<MaintenanceBody>, ApiError> {
    let all = crate::topology::parse_all(raw.as_deref())?;
    caller
        .authorize_existing(&s.store, &network, Action::ReadNodes)
        .await?;
    let after = if all { i64::MIN } else { now_ms() };
    let windows = s.store.maintenance_windows(&network, after).await?;
    Ok(Json(MaintenanceBody { network, windows }))
}

/// A time in a JSON body: RFC 3339 or Unix milliseconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum BodyTime {
    Ms(i64),
    Text(String),
}

impl BodyTime {
    fn ms(&self, name: &str) -> Result<i64, ApiError> {
        match self {
            BodyTime::Ms(ms) => Ok(*ms),
            BodyTime::Text(t) => parse_time(name, t),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceRequest {
    node: Option<String>,
    site: Option<String>,
    start: Option<BodyTime>,
    end: Option<BodyTime>,
    duration: Option<String>,
    reason: Option<String>,
}

/// Checks a maintenance request at `now_ms` (start defaults to now).
fn maintenance_window(r: MaintenanceRequest, now_ms: i64) -> Result<NewMaintenance, ApiError> {
    let target = match (r.node, r.site) {
        (Some(n), None) => {
            check_node_id(&n)?;
            MaintenanceTarget::Node(n)
        }
        (None, Some(site)) => {
            validate_id(&site).map_err(|e| ApiError::BadRequest(format!("site: {e}")))?;
            MaintenanceTarget::Site(site)
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of node and site".to_owned(),
            ));
        }
    };
    let start_ms = match &r.start {
        Some(t) => t.ms("start")?,
        None => now_ms,
    };
    let end_ms = match (&r.end, &r.duration) {
        (Some(t), None) => t.ms("end")?,
        (None, Some(d)) => start_ms.saturating_add(ms(parse_span("duration", d)?)),
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of end and duration".to_owned(),
            ));
        }
    };
    if end_ms <= start_ms {
        return Err(ApiError::BadRequest("end must be after start".to_owned()));
    }
    Ok(NewMaintenance {
        target,
        start_ms,
        end_ms,
        reason: r.reason.filter(|r| !r.trim().is_empty()),
    })
}

async fn create_maintenance(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Maintenance>), ApiError> {
    caller
        .authorize_existing(&s.store, &network, Action::ManageMaintenance)
        .await?;
    let now = now_ms();
    let window = maintenance_window(json_body(&body)?, now)?;
    match s.store.create_maintenance(&network, &window, now).await? {
        MaintenanceCreated::Created(m) => {
            audit(
                &s.store,
                &caller,
                "maintenance.create",
                AuditTarget::in_network(&network, format!("maintenance {}", m.id)),
            )
            .await?;
            Ok((StatusCode::CREATED, Json(m)))
        }
        MaintenanceCreated::Unknown(msg) => Err(ApiError::NotFound(msg)),
    }
}

async fn delete_maintenance(
    State(s): State<AppState>,
    caller: Caller,
    Path((network, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller
        .authorize_existing(&s.store, &network, Action::ManageMaintenance)
        .await?;
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest("maintenance id: not a number".to_owned()))?;
    if !s.store.delete_maintenance(&network, id).await? {
        return Err(ApiError::NotFound(format!(
            "unknown maintenance window {id} in network {network}"
        )));
    }
    audit(
        &s.store,
        &caller,
        "maintenance.delete",
        AuditTarget::in_network(&network, format!("maintenance {id}")),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct SitesBody {
    network: String,
    sites: Vec<Site>,
}

async fn list_sites(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<SitesBody>, ApiError> {
    parse_query(raw.as_deref(), &[])?;
    caller
        .authorize_existing(&s.store, &network, Action::ReadNodes)
        .await?;
    let sites = s.store.sites(&network).await?;
    Ok(Json(SitesBody { network, sites }))
}

async fn one_site(
    State(s): State<AppState>,
    caller: Caller,
    Path((network, site)): Path<(String, String)>,
) -> Result<Json<Site>, ApiError> {
    caller
        .authorize_existing(&s.store, &network, Action::ReadNodes)
        .await?;
    validate_id(&site).map_err(|e| ApiError::BadRequest(format!("site: {e}")))?;
    s.store
        .site(&network, &site)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("unknown site {site} in network {network}")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteRequest {
    id: String,
    name: String,
    location: Option<SiteLocation>,
}

async fn create_site(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Site>), ApiError> {
    caller
        .authorize_existing(&s.store, &network, Action::ManageSites)
        .await?;
    let r: SiteRequest = json_body(&body)?;
    match s
        .store
        .create_site(&network, &r.id, &r.name, r.location, now_ms())
        .await?
    {
        SiteCreated::Created(site) => {
            audit(
                &s.store,
                &caller,
                "site.create",
                AuditTarget::in_network(&network, format!("site {}", site.id)),
            )
            .await?;
            Ok((StatusCode::CREATED, Json(site)))
        }
        SiteCreated::Exists => Err(ApiError::Conflict(format!(
            "site {} exists in network {network}",
            r.id
        ))),
        SiteCreated::UnknownNetwork => Err(ApiError::unknown_network(&network)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignRequest {
    site: Option<String>,
}

async fn assign_site(
    State(s): State<AppState>,
    caller: Caller,
    Path((network, node)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    caller
        .authorize_existing(&s.store, &network, Action::ManageSites)
        .await?;
    check_node_id(&node)?;
    let r: AssignRequest = json_body(&body)?;
    match s
        .store
        .assign_site(&network, &node, r.site.as_deref())
        .await?
    {
        SiteAssigned::Done => {
            audit(
                &s.store,
                &caller,
                "site.assign",
                AuditTarget::in_network(
                    &network,
                    format!("node {node} site {}", r.site.as_deref().unwrap_or("-")),
                ),
            )
            .await?;
            Ok(StatusCode::NO_CONTENT)
        }
        SiteAssigned::UnknownNode => Err(ApiError::NotFound(format!(
            "unknown node {node} in network {network}"
        ))),
        SiteAssigned::UnknownSite => Err(ApiError::NotFound(format!(
            "unknown site {} in network {network}",
            r.site.as_deref().unwrap_or("-")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> Result<NewMaintenance, String> {
        let r: MaintenanceRequest = serde_json::from_str(json).map_err(|e| e.to_string())?;
        maintenance_window(r, 1_000_000).map_err(|e| e.to_string())
    }

    #[test]
    fn maintenance_requests() {
        let w = request(r#"{"node":"a","duration":"1h"}"#).unwrap();
        assert_eq!(w.target, MaintenanceTarget::Node("a".to_owned()));
        assert_eq!((w.start_ms, w.end_ms), (1_000_000, 1_000_000 + 3_600_000));
        let w =
            request(r#"{"site":"v","start":0,"end":"1970-01-01T00:00:01Z","reason":" "}"#).unwrap();
        assert_eq!((w.start_ms, w.end_ms, w.reason), (0, 1000, None));
        for (bad, part) in [
            (r#"{"duration":"1h"}"#, "exactly one of node and site"),
            (
                r#"{"node":"a","site":"b","duration":"1h"}"#,
                "exactly one of node",
            ),
            (r#"{"node":"a"}"#, "exactly one of end and duration"),
            (
                r#"{"node":"a","end":5,"duration":"1h"}"#,
                "exactly one of end",
            ),
            (r#"{"node":"a","start":10,"end":5}"#, "after start"),
            (r#"{"node":"a","duration":"soon"}"#, "not a duration"),
            (r#"{"node":"Bad!","duration":"1h"}"#, "node:"),
            (r#"{"node":"a","duration":"1h","x":1}"#, "unknown field"),
        ] {
            let e = request(bad).unwrap_err();
            assert!(e.contains(part), "{bad}: {e}");
        }
    }
}
