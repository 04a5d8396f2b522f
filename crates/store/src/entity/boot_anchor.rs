//! `boot_anchor`: the wall-clock time a boot of a node started.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "boot_anchor")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub node_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub boot_id: String,
    /// Trusted time minus uptime, Unix ms.
    pub anchor_ms: i64,
    /// `clock` (a report with a good clock) or `received` (reception time
    /// of a live report).
    pub source: String,
    /// Router clock minus reception time of the latest live report, ms.
    pub skew_ms: Option<i64>,
    /// When a report of the boot last updated the row (controller clock).
    pub updated_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
