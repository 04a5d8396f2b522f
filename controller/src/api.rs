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
use meshtable_store::{Metric, NetworkSummary, NodeDetail, NodeSummary, Point, Store, StoreError};
use serde::Serialize;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::{error, warn};

use crate::ingest::now_ms;
use crate::metrics::{self, Metrics};
use crate::web;

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
    /// The thing asked for does not exist: 404.
    #[error("{0}")]
    NotFound(String),
    /// The store failed: 500 (its message is logged, not sent), or 400 for
    /// a query it refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Store(StoreError::BadQuery(_)) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
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
        (status, Json(ErrorBody { error: message })).into_response()
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
}

/// The whole HTTP service: API, web pages, metrics and health.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(web::index))
        .route("/networks/{network}", get(web::network))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_handler))
        .route("/api/v1/networks", get(networks))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/nodes/{node}", get(node))
        .route("/api/v1/nodes/{node}/series", get(series))
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

async fn metrics_handler(State(s): State<AppState>) -> Response {
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
    RawQuery(raw): RawQuery,
) -> Result<Json<NetworksBody>, ApiError> {
    parse_query(raw.as_deref(), &[])?;
    Ok(Json(NetworksBody {
        networks: s.store.networks().await?,
    }))
}

#[derive(Serialize)]
struct NodesBody {
    nodes: Vec<NodeSummary>,
}

async fn nodes(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<NodesBody>, ApiError> {
    let mut q = parse_query(raw.as_deref(), &["network"])?;
    let network = parse_network(q.remove("network"))?;
    Ok(Json(NodesBody {
        nodes: s.store.nodes(network.as_deref()).await?,
    }))
}

/// Finds the network of `node`: the given one if the node is in it, the
/// only one it is in, or an error asking for `network`.
async fn resolve_network(
    store: &Store,
    node: &str,
    network: Option<&str>,
) -> Result<String, ApiError> {
    validate_id(node).map_err(|e| ApiError::BadRequest(format!("node: {e}")))?;
    let found = store.find_node(node, network).await?;
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
    Path(node): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<NodeDetail>, ApiError> {
    let mut q = parse_query(raw.as_deref(), &["network"])?;
    let network = parse_network(q.remove("network"))?;
    let network = resolve_network(&s.store, &node, network.as_deref()).await?;
    s.store
        .node_detail(&network, &node)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("unknown node {node} in network {network}")))
}

#[derive(Serialize)]
struct SeriesBody {
    network: String,
    node: String,
    metric: &'static str,
    interface: Option<String>,
    from: String,
    to: String,
    points: Vec<Point>,
}

async fn series(
    State(s): State<AppState>,
    Path(node): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<SeriesBody>, ApiError> {
    let q = parse_series_query(raw.as_deref(), now_ms())?;
    let network = resolve_network(&s.store, &node, q.network.as_deref()).await?;
    let points = s
        .store
        .series(&network, &node, &q.metric, q.from_ms, q.to_ms)
        .await?;
    Ok(Json(SeriesBody {
        network,
        node,
        metric: q.metric.name(),
        interface: q.metric.interface().map(str::to_owned),
        from: format_rfc3339_ms(q.from_ms),
        to: format_rfc3339_ms(q.to_ms),
        points,
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
