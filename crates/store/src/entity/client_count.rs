//! `client_count`: the client counts of one telemetry report.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "client_count")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub node_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub boot_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub t_ms: i64,
    pub total: i32,
    pub wifi24: i32,
    pub wifi5: i32,
    pub other: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
