//! `rollup`: the statistics of one metric of one node over one bucket.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "rollup")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub node_id: i64,
    /// The bucket length, seconds: 300 or 3600.
    #[sea_orm(primary_key, auto_increment = false)]
    pub res_s: i32,
    #[sea_orm(primary_key, auto_increment = false)]
    pub metric: String,
    /// `''` for node metrics.
    #[sea_orm(primary_key, auto_increment = false)]
    pub interface: String,
    /// The bucket's start, Unix ms.
    #[sea_orm(primary_key, auto_increment = false)]
    pub bucket_ms: i64,
    pub n: i64,
    pub v_min: f64,
    pub v_avg: f64,
    pub v_max: f64,
    pub v_p95: Option<f64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
