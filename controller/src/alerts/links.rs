//! The link reference API: the known-good quality that `link_degraded`
//! compares a link with, per direction from one node to another (every
//! interface and protocol the two share).
//!
//! | method | path | action | what |
//! |---|---|---|---|
//! | GET | `/api/v1/networks/{network}/links/{from}/{to}/reference` | ReadNodes | each direction's quality, operator's and learned reference |
//! | PUT | same | ManageAlerts | set the operator's reference: `{"signal_dbm","tq","cost"}`, at least one |
//! | DELETE | same | ManageAlerts | clear the operator's reference (the learned one stays) |
//!
//! `{to}` is the far node's id, or the neighbour's address when it is not
//! joined to a node. An unknown network, one the caller has no role in, and
//! a pair of nodes without a link in that network all answer 404.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use meshtable_store::alerts::LinkQuality;
use meshtable_store::link_reference::LinkReferenceView;
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, AppState, parse_query};
use crate::auth::api::json_body;
use crate::auth::{Action, AuditTarget, Caller};
use crate::ingest::now_ms;

/// The routes of this module. (`{id}` is `{from}`: the router wants one
/// name per position, and `links/{id}/events` came first.)
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/v1/networks/{network}/links/{id}/{to}/reference",
        get(get_reference)
            .put(put_reference)
            .delete(delete_reference),
    )
}

#[derive(Debug, Serialize)]
struct ReferenceBody {
    network: String,
    from: String,
    to: String,
    links: Vec<LinkReferenceView>,
}

/// A reference as PUT.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceInput {
    #[serde(default)]
    signal_dbm: Option<f64>,
    #[serde(default)]
    tq: Option<f64>,
    #[serde(default)]
    cost: Option<f64>,
}

impl ReferenceInput {
    /// Checks the ranges: signal -120..=0 dBm, TQ 1..=255, cost 1..=65535.
    fn check(&self) -> Result<LinkQuality, String> {
        let parts = [
            ("signal_dbm", self.signal_dbm, -120.0, 0.0),
            ("tq", self.tq, 1.0, 255.0),
            ("cost", self.cost, 1.0, 65535.0),
        ];
        for (k, v, lo, hi) in parts {
            if let Some(v) = v
                && !(v.is_finite() && (lo..=hi).contains(&v))
            {
                return Err(format!("{k}: expected {lo} to {hi}"));
            }
        }
        let q = LinkQuality {
            signal_dbm: self.signal_dbm,
            tq: self.tq,
            cost: self.cost,
        };
        if q.is_empty() {
            return Err("expected at least one of signal_dbm, tq and cost".to_owned());
        }
        Ok(q)
    }
}

fn no_link(network: &str, from: &str, to: &str) -> ApiError {
    let short = |s: &str| s.chars().take(64).collect::<String>();
    ApiError::NotFound(format!(
        "no link from {} to {} in network {}",
        short(from),
        short(to),
        short(network)
    ))
}

fn body(
    network: String,
    from: String,
    to: String,
    links: Option<Vec<LinkReferenceView>>,
) -> Result<Json<ReferenceBody>, ApiError> {
    match links {
        None => Err(no_link(&network, &from, &to)),
        Some(links) => Ok(Json(ReferenceBody {
            network,
            from,
            to,
            links,
        })),
    }
}

async fn get_reference(
    State(s): State<AppState>,
    caller: Caller,
    Path((network, from, to)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ReferenceBody>, ApiError> {
    parse_query(raw.as_deref(), &[])?;
    caller
        .authorize_existing(&s.store, &network, Action::ReadNodes)
        .await?;
    let links = s.store.link_references(&network, &from, &to).await?;
    body(network, from, to, links)
}

async fn put_reference(
    State(s): State<AppState>,
    caller: Caller,
    Path((network, from, to)): Path<(String, String, String)>,
    body_bytes: Bytes,
) -> Result<Json<ReferenceBody>, ApiError> {
    caller
        .authorize_existing(&s.store, &network, Action::ManageAlerts)
        .await?;
    let input: ReferenceInput = json_body(&body_bytes)?;
    let quality = input.check().map_err(ApiError::BadRequest)?;
    let links = s
        .store
        .set_link_reference(&network, &from, &to, &quality, &caller.actor(), now_ms())
        .await?;
    if links.is_some() {
        crate::auth::audit(
            &s.store,
            &caller,
            "link.reference.set",
            AuditTarget::in_network(&network, format!("link {from} -> {to}")),
        )
        .await?;
    }
    body(network, from, to, links)
}

async fn delete_reference(
    State(s): State<AppState>,
    caller: Caller,
    Path((network, from, to)): Path<(String, String, String)>,
) -> Result<Json<ReferenceBody>, ApiError> {
    caller
        .authorize_existing(&s.store, &network, Action::ManageAlerts)
        .await?;
    let links = s.store.clear_link_reference(&network, &from, &to).await?;
    if links.is_some() {
        crate::auth::audit(
            &s.store,
            &caller,
            "link.reference.clear",
            AuditTarget::in_network(&network, format!("link {from} -> {to}")),
        )
        .await?;
    }
    body(network, from, to, links)
}

#[cfg(test)]
mod tests {
    use super::ReferenceInput;

    #[test]
    fn reference_ranges() {
        let input = |signal_dbm, tq, cost| ReferenceInput {
            signal_dbm,
            tq,
            cost,
        };
        let cases = [
            (input(Some(-60.0), None, None), Ok(())),
            (input(None, Some(255.0), Some(256.0)), Ok(())),
            (input(None, None, None), Err("at least one")),
            (input(Some(5.0), None, None), Err("signal_dbm")),
            (input(Some(f64::NAN), None, None), Err("signal_dbm")),
            (input(None, Some(0.0), None), Err("tq")),
            (input(None, None, Some(70000.0)), Err("cost")),
        ];
        for (i, want) in cases {
            match (i.check(), want) {
                (Ok(_), Ok(())) => {}
                (Err(e), Err(k)) => assert!(e.contains(k), "{i:?}: {e}"),
                (got, want) => panic!("{i:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
