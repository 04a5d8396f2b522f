//! `node`: one row per (network, node id), with its latest hello and liveness.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "node")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub network: String,
    pub node: String,
    pub hostname: Option<String>,
    pub model: Option<String>,
    /// The latest hello, as proto JSON.
    pub hello: Option<String>,
    pub interval_ms: Option<i64>,
    /// `online` or `offline`.
    pub status: String,
    pub status_since_ms: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::network::Entity",
        from = "Column::Network",
        to = "super::network::Column::Id"
    )]
    Network,
    #[sea_orm(has_many = "super::sample::Entity")]
    Sample,
}

impl Related<super::network::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Network.def()
    }
}

impl Related<super::sample::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Sample.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
