//! `node_mesh`: the latest radios, stations and gateway a node reported.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "node_mesh")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub node_id: i64,
    /// The series time of the report they come from.
    pub t_ms: i64,
    /// Proto JSON list of radios.
    pub radios: String,
    /// Proto JSON list of stations (no client identifiers).
    pub stations: String,
    /// Proto JSON gateway, if any.
    pub gateway: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
