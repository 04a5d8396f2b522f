//! The `node` columns added for liveness and sites (the same table as
//! `node`, which mirrors the first schema's columns).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "node")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub network: String,
    pub node: String,
    /// The site the node belongs to, in its network.
    pub site_id: Option<String>,
    /// Since when the node is flapping; `None` when it is stable.
    pub flapping_since_ms: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
