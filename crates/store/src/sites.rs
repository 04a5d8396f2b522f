//! Sites: the places of a network (a village, a school, a water tower) that
//! nodes belong to. Trainers create them when they bring a village in;
//! maintenance windows and alerts can address a whole site.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, TryInsertResult,
};
use serde::{Deserialize, Serialize};

use crate::entity::{network, node_extra, site};
use crate::time::rfc3339_ms;
use crate::write::clean;
use crate::{Store, StoreError};

/// Longest site name kept, in bytes.
pub const MAX_SITE_NAME: usize = 256;

/// A site's position (WGS 84).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SiteLocation {
    /// Degrees north, -90..=90.
    pub latitude: f64,
    /// Degrees east, -180..=180.
    pub longitude: f64,
}

/// A site.
///
/// JSON: `{"network","id","name","location","nodes","created"}`; `location`
/// is `{"latitude","longitude"}` or `null`; `nodes` counts its nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Site {
    /// The network id.
    pub network: String,
    /// The site id (`[a-z0-9_-]`, 1-64 characters, like node ids).
    pub id: String,
    /// Its name, as people say it.
    pub name: String,
    /// Where it is.
    pub location: Option<SiteLocation>,
    /// How many nodes belong to it.
    pub nodes: u64,
    /// When it was created, Unix ms.
    #[serde(rename = "created", with = "rfc3339_ms")]
    pub created_ms: i64,
}

/// What [`Store::create_site`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum SiteCreated {
    /// Created.
    Created(Site),
    /// A site with this id exists in the network; nothing changed.
    Exists,
    /// The network is unknown.
    UnknownNetwork,
}

/// What [`Store::assign_site`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteAssigned {
    /// The node's site is set (or cleared).
    Done,
    /// The node is unknown in the network.
    UnknownNode,
    /// The site is unknown in the network.
    UnknownSite,
}

fn to_site(s: site::Model, nodes: u64) -> Site {
    let location = match (s.latitude, s.longitude) {
        (Some(latitude), Some(longitude)) => Some(SiteLocation {
            latitude,
            longitude,
        }),
        _ => None,
    };
    Site {
        network: s.network,
        id: s.site,
        name: s.name,
        location,
        nodes,
        created_ms: s.created_ms,
    }
}

/// Checks a site location: finite, latitude within ±90, longitude within ±180.
pub fn check_location(l: &SiteLocation) -> Result<(), StoreError> {
    if !(l.latitude.is_finite() && (-90.0..=90.0).contains(&l.latitude)) {
        return Err(StoreError::BadQuery(
            "latitude must be within -90..90".to_owned(),
        ));
    }
    if !(l.longitude.is_finite() && (-180.0..=180.0).contains(&l.longitude)) {
        return Err(StoreError::BadQuery(
            "longitude must be within -180..180".to_owned(),
        ));
    }
    Ok(())
}

impl Store {
    /// Creates a site in a network at `now_ms`. The id must be a valid
    /// identifier and the name non-empty (at most [`MAX_SITE_NAME`] bytes),
    /// the location sane ([`StoreError::BadQuery`] otherwise).
    pub async fn create_site(
        &self,
        network: &str,
        id: &str,
        name: &str,
        location: Option<SiteLocation>,
        now_ms: i64,
    ) -> Result<SiteCreated, StoreError> {
        meshtable_proto::validate_id(id)
            .map_err(|e| StoreError::BadQuery(format!("site id: {e}")))?;
        let name = name.trim();
        if name.is_empty() || name.len() > MAX_SITE_NAME || name.chars().any(char::is_control) {
            return Err(StoreError::BadQuery(format!(
                "site name must be 1-{MAX_SITE_NAME} bytes without control characters"
            )));
        }
        if let Some(l) = &location {
            check_location(l)?;
        }
        let network = clean(network);
        let txn = self.begin_write().await?;
        if network::Entity::find_by_id(network.clone())
            .one(&txn)
            .await?
            .is_none()
        {
            return Ok(SiteCreated::UnknownNetwork);
        }
        let res = site::Entity::insert(site::ActiveModel {
            network: Set(network.clone()),
            site: Set(id.to_owned()),
            name: Set(name.to_owned()),
            latitude: Set(location.map(|l| l.latitude)),
            longitude: Set(location.map(|l| l.longitude)),
            created_ms: Set(now_ms),
        })
        .on_conflict_do_nothing()
        .exec_without_returning(&txn)
        .await?;
        if !matches!(res, TryInsertResult::Inserted(n) if n > 0) {
            return Ok(SiteCreated::Exists);
        }
        let row = site::Entity::find_by_id((network, id.to_owned()))
            .one(&txn)
            .await?
            .ok_or_else(|| {
                StoreError::Database(sea_orm::DbErr::RecordNotFound("site vanished".to_owned()))
            })?;
        txn.commit().await?;
        Ok(SiteCreated::Created(to_site(row, 0)))
    }

    /// The sites of a network with their node counts, by id.
    pub async fn sites(&self, network: &str) -> Result<Vec<Site>, StoreError> {
        let network = clean(network);
        let rows = site::Entity::find()
            .filter(site::Column::Network.eq(network.clone()))
            .order_by_asc(site::Column::Site)
            .all(&self.db)
            .await?;
        let counts: Vec<(Option<String>, i64)> = node_extra::Entity::find()
            .select_only()
            .column(node_extra::Column::SiteId)
            .column_as(node_extra::Column::Id.count(), "n")
            .filter(node_extra::Column::Network.eq(network))
            .filter(node_extra::Column::SiteId.is_not_null())
            .group_by(node_extra::Column::SiteId)
            .into_tuple()
            .all(&self.db)
            .await?;
        let count = |id: &str| {
            counts
                .iter()
                .find(|(s, _)| s.as_deref() == Some(id))
                .map_or(0, |(_, n)| u64::try_from(*n).unwrap_or(0))
        };
        Ok(rows
            .into_iter()
            .map(|s| {
                let n = count(&s.site);
                to_site(s, n)
            })
            .collect())
    }

    /// One site of a network.
    pub async fn site(&self, network: &str, id: &str) -> Result<Option<Site>, StoreError> {
        let network = clean(network);
        let Some(row) = site::Entity::find_by_id((network.clone(), clean(id)))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let n = node_extra::Entity::find()
            .filter(node_extra::Column::Network.eq(network))
            .filter(node_extra::Column::SiteId.eq(row.site.clone()))
            .count(&self.db)
            .await?;
        Ok(Some(to_site(row, n)))
    }

    /// Puts a node into a site of its network, or takes it out (`None`).
    pub async fn assign_site(
        &self,
        network: &str,
        node: &str,
        site: Option<&str>,
    ) -> Result<SiteAssigned, StoreError> {
        let network = clean(network);
        let txn = self.begin_write().await?;
        if let Some(s) = site
            && site::Entity::find_by_id((network.clone(), clean(s)))
                .one(&txn)
                .await?
                .is_none()
        {
            return Ok(SiteAssigned::UnknownSite);
        }
        let res = node_extra::Entity::update_many()
            .col_expr(node_extra::Column::SiteId, Expr::val(site.map(clean)))
            .filter(node_extra::Column::Network.eq(network))
            .filter(node_extra::Column::Node.eq(clean(node)))
            .exec(&txn)
            .await?;
        if res.rows_affected == 0 {
            return Ok(SiteAssigned::UnknownNode);
        }
        txn.commit().await?;
        Ok(SiteAssigned::Done)
    }

    /// The site of a node, if it has one (and exists).
    pub async fn node_site(&self, network: &str, node: &str) -> Result<Option<String>, StoreError> {
        Ok(node_extra::Entity::find()
            .filter(node_extra::Column::Network.eq(clean(network)))
            .filter(node_extra::Column::Node.eq(clean(node)))
            .one(&self.db)
            .await?
            .and_then(|n| n.site_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let ok = |latitude, longitude| {
            check_location(&SiteLocation {
                latitude,
                longitude,
            })
            .is_ok()
        };
        assert!(ok(51.3, 12.3));
        assert!(ok(-90.0, 180.0));
        assert!(!ok(90.5, 0.0));
        assert!(!ok(0.0, -181.0));
        assert!(!ok(f64::NAN, 0.0));
    }
}
