//! The HTTP API (axum): JSON under `/api/v1`, plus `/metrics` and `/healthz`.
//!
//! Errors are `{"error": "..."}` with a 4xx or 5xx status. Query strings are
//! parsed strictly: an unknown or repeated parameter, or a value that does
//! not parse, is a 400.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use meshtable_proto::validate_id;
use meshtable_store::time::{format_rfc3339_ms, parse_rfc3339_ms};
use meshtable_store::{
    Metric, NetworkSummary, NodeSummary, Resolution, SeriesPoint, Store, StoreError,
};
use serde::Serialize;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::{error, warn};

use crate::auth::{Action, Caller};
use crate::ingest::now_ms;
use crate::metrics::{self, Metrics};
use crate::{web, web_status, web_topology};

/// Largest request body accepted (the API only reads; bodies are refused
/// beyond this with 413).
pub const BODY_LIMIT: usize = 16 * 1024;

/// Longest time a request may take before it is answered with 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Default length of a series when `from` is not given.
pub const DEFAULT_SERIES_SPAN_MS: i64 = 3_600_000;

/// Longest series that can be asked for in one request.
pub const MAX_SERIES_SPAN_MS: i64 = 31 * 24 * 3_600_000;

/// An API error, answered as `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong: 400.
    #[error("{0}")]
    BadRequest(String),
    /// The thing asked for does not exist, or the caller has no role in its
    /// network: 404.
    #[error("{0}")]
    NotFound(String),
    /// Nobody is logged in, or the token is wrong, expired or revoked: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller's role does not allow this, or the CSRF token is missing: 403.
    #[error("{0}")]
    Forbidden(String),
    /// The thing to create exists: 409.
    #[error("{0}")]
    Conflict(String),
    /// Too many attempts: 429, with a `Retry-After` of this many seconds.
    #[error("too many attempts, try again in {0} s")]
    TooManyRequests(u64),
    /// The store failed: 500 (its message is logged, not sent), or 400 for
    /// a query it refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Store(StoreError::BadQuery(_)) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The 404 for a network that does not exist or that the caller has no
    /// role in: the same words for both, so existence never leaks.
    pub fn unknown_network(network: &str) -> ApiError {
        ApiError::NotFound(format!("unknown network {network}"))
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if status.is_server_error() {
            error!(error = %self, "request failed");
            "internal error, see the controller's log".to_owned()
        } else {
            self.to_string()
        };
        let mut resp = (status, Json(ErrorBody { error: message })).into_response();
        match self {
            ApiError::Unauthorized(_) => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"meshtable\""),
                );
            }
            ApiError::TooManyRequests(secs) => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(secs.max(1)));
            }
            _ => {}
        }
        resp
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Login limits and cookie settings.
    pub auth: crate::auth::SharedAuth,
    /// The node registry (networks, enrolled nodes), as ingest sees it.
    pub registry: Arc<crate::registry::Registry>,
    /// Enrollment attempts per source address.
    pub enroll_limiter: Arc<crate::auth::RateLimiter>,
    /// Alert webhooks may go to internal addresses
    /// (`alert_webhook_allow_private`, see [`crate::alerts::target`]).
    pub webhook_allow_private: bool,
}

/// The whole HTTP service: API, web pages, metrics and health.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(web::index))
        .route("/networks/{network}", get(web::network))
        .route("/networks/{network}/topology", get(web_topology::page))
        .route("/networks/{network}/status", get(web_status::page))
        .route("/login", get(web::login_form).post(web::login_submit))
        .route("/logout", axum::routing::post(web::logout))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_handler))
        .route("/api/v1/networks", get(networks))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/nodes/{node}", get(node))
        .route("/api/v1/nodes/{node}/series", get(series))
        .route("/api/v1/networks/{network}/summary", get(summary))
        .merge(crate::auth::api::router())
        .merge(crate::enroll::router())
        .merge(crate::liveness::router())
        .merge(crate::topology::router())
        .merge(crate::alerts::router())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".to_owned())
}

async fn healthz(State(s): State<AppState>) -> Response {
    match s.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            warn!(error = %e, "health check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
    }
}

/// `GET /metrics`: from loopback only, or with `--metrics-token-file` only
/// with that bearer token (see [`crate::auth::AuthState::metrics_allowed`]).
/// Its series are per-network aggregates: no node names, addresses or
/// clients, unless `--metrics-per-node`.
async fn metrics_handler(State(s): State<AppState>, parts: axum::http::request::Parts) -> Response {
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    if !s.auth.metrics_allowed(&parts.headers, peer) {
        return ApiError::Unauthorized(
            "/metrics: from this host only, or with --metrics-token-file and its bearer token"
                .to_owned(),
        )
        .into_response();
    }
    let fleet = match metrics::fleet_snapshot(&s.store).await {
        Ok(f) => f,
        Err(e) => {
            // Leave the fleet series out rather than show stale ones.
            warn!(error = %e, "metrics: cannot read the fleet from the store");
            metrics::FleetSnapshot::default()
        }
    };
    match s.metrics.render(Some(&fleet)) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            error!(error = %e, "metrics: cannot render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The parameters of a query string, each at most once and each one of
/// `allowed`. Empty values count as absent.
pub fn parse_query(
    raw: Option<&str>,
    allowed: &[&str],
) -> Result<HashMap<String, String>, ApiError> {
    let mut params = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if !allowed.contains(&k.as_ref()) {
            let expected = if allowed.is_empty() {
                "this endpoint takes none".to_owned()
            } else {
                format!("expected {}", allowed.join(", "))
            };
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter {:?}: {expected}",
                k.chars().take(64).collect::<String>()
            )));
        }
        if params.contains_key(k.as_ref()) {
            return Err(ApiError::BadRequest(format!(
                "query parameter {k} given more than once"
            )));
        }
        params.insert(k.into_owned(), v.into_owned());
    }
    params.retain(|_, v| !v.is_empty());
    Ok(params)
}

/// A network id from a query, checked.
pub fn parse_network(value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        None => Ok(None),
        Some(n) => validate_id(&n)
            .map(|()| Some(n))
            .map_err(|e| ApiError::BadRequest(format!("network: {e}"))),
    }
}

/// A time in a query: Unix milliseconds or RFC 3339.
pub fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return value
            .parse::<i64>()
            .map_err(|_| ApiError::BadRequest(format!("{name}: {value:?} is out of range")));
    }
    parse_rfc3339_ms(value).map_err(|_| {
        ApiError::BadRequest(format!(
            "{name}: {:?} is neither RFC 3339 (2026-11-28T15:40:00Z) nor Unix milliseconds",
            value.chars().take(64).collect::<String>()
        ))
    })
}

/// The parameters of a series request.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesQuery {
    /// What to read.
    pub metric: Metric,
    /// The node's network, if given.
    pub network: Option<String>,
    /// Start, Unix ms, inclusive.
    pub from_ms: i64,
    /// End, Unix ms, inclusive.
    pub to_ms: i64,
}

/// Parses `metric`, `interface`, `from`, `to` and `network`; `to` defaults
/// to `now_ms`, `from` to an hour before `to`.
pub fn parse_series_query(raw: Option<&str>, now_ms: i64) -> Result<SeriesQuery, ApiError> {
    let mut q = parse_query(raw, &["metric", "interface", "from", "to", "network"])?;
    let name = q.remove("metric").ok_or_else(|| {
        ApiError::BadRequest(format!(
            "missing query parameter metric: one of {}",
            Metric::NAMES.join(", ")
        ))
    })?;
    let interface = q.remove("interface");
    if let Some(i) = &interface
        && (i.len() > meshtable_proto::MAX_TEXT || i.chars().any(char::is_control))
    {
        return Err(ApiError::BadRequest(
            "interface: not an interface name".to_owned(),
        ));
    }
    let metric = Metric::parse(&name, interface.as_deref())?;
    if interface.is_some() && metric.interface().is_none() {
        return Err(ApiError::BadRequest(format!(
            "metric {name} takes no interface"
        )));
    }
    let to_ms = match q.remove("to") {
        Some(v) => parse_time("to", &v)?,
        None => now_ms,
    };
    let from_ms = match q.remove("from") {
        Some(v) => parse_time("from", &v)?,
        None => to_ms.saturating_sub(DEFAULT_SERIES_SPAN_MS),
    };
    if from_ms > to_ms {
        return Err(ApiError::BadRequest("from is after to".to_owned()));
    }
    if to_ms.saturating_sub(from_ms) > MAX_SERIES_SPAN_MS {
        return Err(ApiError::BadRequest(
            "from and to are more than 31 days apart".to_owned(),
        ));
    }
    Ok(SeriesQuery {
        metric,
        network: parse_network(q.remove("network"))?,
        from_ms,
        to_ms,
    })
}

#[derive(Serialize)]
struct NetworksBody {
    networks: Vec<NetworkSummary>,
}

async fn networks(
    State(s): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<NetworksBody>, ApiError> {
    caller.require_user()?;
    parse_query(raw.as_deref(), &[])?;
    let mut networks = s.store.networks().await?;
    // Only the networks the caller has a role in.
    networks.retain(|n| caller.sees(&n.id));
    Ok(Json(NetworksBody { networks }))
}

#[derive(Serialize)]
struct NodesBody {
    nodes: Vec<NodeSummary>,
}

async fn nodes(
    State(s): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<NodesBody>, ApiError> {
    caller.require_user()?;
    let mut q = parse_query(raw.as_deref(), &["network"])?;
    let network = parse_network(q.remove("network"))?;
    if let Some(n) = &network {
        caller
            .authorize_existing(&s.store, n, Action::ReadNodes)
            .await?;
    }
    let mut nodes = s.store.nodes(network.as_deref()).await?;
    // Without ?network=: the nodes of every network the caller may read.
    nodes.retain(|n| caller.can(&n.network, Action::ReadNodes));
    Ok(Json(NodesBody { nodes }))
}

/// Finds the network of `node` among those `caller` may read nodes of: the
/// given one if the node is in it, the only one it is in, or an error asking
/// for `network`. Networks the caller has no role in are never named.
async fn resolve_network(
    store: &Store,
    caller: &Caller,
    node: &str,
    network: Option<&str>,
) -> Result<String, ApiError> {
    caller.require_user()?;
    validate_id(node).map_err(|e| ApiError::BadRequest(format!("node: {e}")))?;
    if let Some(n) = network {
        caller.authorize(n, Action::ReadNodes)?;
    }
    let mut found = store.find_node(node, network).await?;
    found.retain(|n| caller.sees(&n.network));
    if let [one] = found.as_slice() {
        caller.authorize(&one.network, Action::ReadNodes)?;
    }
    found.retain(|n| caller.can(&n.network, Action::ReadNodes));
    match found.as_slice() {
        [] => Err(ApiError::NotFound(match network {
            Some(n) => format!("unknown node {node} in network {n}"),
            None => format!("unknown node {node}"),
        })),
        [one] => Ok(one.network.clone()),
        several => Err(ApiError::BadRequest(format!(
            "node {node} exists in several networks ({}): add ?network=",
            several
                .iter()
                .map(|n| n.network.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

async fn node(
    State(s): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<crate::topology::NodeDetailBody>, ApiError> {
    let mut q = parse_query(raw.as_deref(), &["network"])?;
    let network = parse_network(q.remove("network"))?;
    let network = resolve_network(&s.store, &caller, &node, network.as_deref()).await?;
    let detail =
        s.store.node_detail(&network, &node).await?.ok_or_else(|| {
            ApiError::NotFound(format!("unknown node {node} in network {network}"))
        })?;
    // Radios, stations, neighbours, gateway, clients, site and state.
    let mesh = s.store.node_mesh(&network, &node, now_ms()).await?;
    Ok(Json(crate::topology::NodeDetailBody {
        detail,
        mesh: mesh.unwrap_or_default(),
    }))
}

/// How far back `GET /api/v1/networks/{network}/summary` counts traffic.
pub const SUMMARY_SPAN_MS: i64 = 24 * 3_600_000;

/// A network in aggregate: nothing names a node, an address or a client.
#[derive(Serialize)]
struct SummaryBody {
    network: String,
    nodes: u64,
    online: u64,
    offline: u64,
    /// Share of nodes online now, 0 to 1 (`null` without nodes).
    availability: Option<f64>,
    from: String,
    to: String,
    /// Bytes received and sent by all nodes from `from` to `to`.
    traffic: meshtable_store::aggregate::Traffic,
}

/// `GET /api/v1/networks/{network}/summary`: for every role, funders included.
async fn summary(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<SummaryBody>, ApiError> {
    parse_query(raw.as_deref(), &[])?;
    validate_id(&network).map_err(|e| ApiError::BadRequest(format!("network: {e}")))?;
    caller
        .authorize_existing(&s.store, &network, Action::ReadAggregates)
        .await?;
    let counts = s
        .store
        .networks()
        .await?
        .into_iter()
        .find(|n| n.id == network);
    let counts = match counts {
        Some(c) => c,
        None if s.store.network_known(&network).await? => NetworkSummary {
            id: network.clone(),
            nodes: 0,
            online: 0,
            offline: 0,
        },
        None => return Err(ApiError::unknown_network(&network)),
    };
    let to_ms = now_ms();
    let from_ms = to_ms - SUMMARY_SPAN_MS;
    let traffic = s.store.network_traffic(&network, from_ms, to_ms).await?;
    #[allow(clippy::cast_precision_loss)]
    let availability = (counts.nodes > 0).then(|| counts.online as f64 / counts.nodes as f64);
    Ok(Json(SummaryBody {
        network,
        nodes: counts.nodes,
        online: counts.online,
        offline: counts.offline,
        availability,
        from: format_rfc3339_ms(from_ms),
        to: format_rfc3339_ms(to_ms),
        traffic,
    }))
}

#[derive(Serialize)]
struct SeriesBody {
    network: String,
    node: String,
    metric: &'static str,
    interface: Option<String>,
    from: String,
    to: String,
    /// `raw`, `5m` or `1h`: picked from the span (see `meshtable_store::rollup`).
    resolution: Resolution,
    points: Vec<SeriesPoint>,
}

async fn series(
    State(s): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<SeriesBody>, ApiError> {
    caller.require_user()?;
    let q = parse_series_query(raw.as_deref(), now_ms())?;
    let network = resolve_network(&s.store, &caller, &node, q.network.as_deref()).await?;
    let series = s
        .store
        .history(&network, &node, &q.metric, q.from_ms, q.to_ms)
        .await?;
    Ok(Json(SeriesBody {
        network,
        node,
        metric: q.metric.name(),
        interface: q.metric.interface().map(str::to_owned),
        from: format_rfc3339_ms(q.from_ms),
        to: format_rfc3339_ms(q.to_ms),
        resolution: series.resolution,
        points: series.points,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_344_400_000;

    /// (query, expected: Ok((metric, interface, network, from, to)) or Err(part of the message))
    #[test]
    fn series_queries() {
        type Want = Result<
            (
                &'static str,
                Option<&'static str>,
                Option<&'static str>,
                i64,
                i64,
            ),
            &'static str,
        >;
        let cases: &[(&str, Want)] = &[
            (
                "metric=load1",
                Ok(("load1", None, None, NOW - 3_600_000, NOW)),
            ),
            (
                "metric=rx_bps&interface=eth0&network=leipzig",
                Ok((
                    "rx_bps",
                    Some("eth0"),
                    Some("leipzig"),
                    NOW - 3_600_000,
                    NOW,
                )),
            ),
            (
                "metric=load5&from=1000&to=2000",
                Ok(("load5", None, None, 1000, 2000)),
            ),
            (
                "metric=load5&from=2025-11-28T15:40:00Z&to=2025-11-28T16:40:00.5%2B01:00",
                Ok(("load5", None, None, 1_764_344_400_000, 1_764_344_400_500)),
            ),
            (
                "metric=load15&to=5000",
                Ok(("load15", None, None, 5000 - 3_600_000, 5000)),
            ),
            (
                "metric=load1&network=",
                Ok(("load1", None, None, NOW - 3_600_000, NOW)),
            ),
            ("", Err("missing query parameter metric")),
            ("metric=load2", Err("unknown metric")),
            ("metric=rx_bps", Err("needs an interface")),
            ("metric=load1&interface=eth0", Err("takes no interface")),
            (
                "metric=load1&from=yesterday",
                Err("from: \"yesterday\" is neither"),
            ),
            ("metric=load1&to=99999999999999999999", Err("to: ")),
            ("metric=load1&from=3000&to=2000", Err("from is after to")),
            ("metric=load1&from=0&to=9999999999999", Err("31 days")),
            ("metric=load1&metric=load5", Err("given more than once")),
            (
                "metric=load1&limit=5",
                Err("unknown query parameter \"limit\""),
            ),
            (
                "metric=load1&network=Bad!",
                Err("network: invalid identifier"),
            ),
        ];
        for (raw, want) in cases {
            let got = parse_series_query(Some(raw), NOW);
            match (got, want) {
                (Ok(q), Ok((metric, interface, network, from, to))) => {
                    assert_eq!(q.metric.name(), *metric, "{raw}");
                    assert_eq!(q.metric.interface(), *interface, "{raw}");
                    assert_eq!(q.network.as_deref(), *network, "{raw}");
                    assert_eq!((q.from_ms, q.to_ms), (*from, *to), "{raw}");
                }
                (Err(e), Err(part)) => {
                    assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{raw}");
                    assert!(e.to_string().contains(part), "{raw}: {e}");
                }
                (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn plain_queries() {
        let q = parse_query(Some("network=a%2Db"), &["network"]).unwrap();
        assert_eq!(q.get("network").map(String::as_str), Some("a-b"));
        assert!(parse_query(None, &[]).unwrap().is_empty());
        let e = parse_query(Some("x=1"), &[]).unwrap_err().to_string();
        assert!(e.contains("this endpoint takes none"), "{e}");
        assert!(parse_network(Some("UPPER".to_owned())).is_err());
        assert_eq!(
            parse_network(Some("ok-1".to_owned())).unwrap().as_deref(),
            Some("ok-1")
        );
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("t", "0").unwrap(), 0);
        assert_eq!(parse_time("t", "-5").unwrap(), -5);
        assert_eq!(
            parse_time("t", "2025-11-28T15:40:00.123Z").unwrap(),
            1_764_344_400_123
        );
        for bad in ["", "-", "1e3", "12:00", "2025-11-28"] {
            assert!(parse_time("t", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_statuses() {
        let cases = [
            (ApiError::BadRequest("x".into()), StatusCode::BAD_REQUEST),
            (ApiError::NotFound("x".into()), StatusCode::NOT_FOUND),
            (
                ApiError::Store(StoreError::BadQuery("x".into())),
                StatusCode::BAD_REQUEST,
            ),
            (
                ApiError::Store(StoreError::InvalidUrl("x".into())),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(e.into_response().status(), status);
        }
    }
}
