//! `sample`: one row per telemetry report.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "sample")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub node_id: i64,
    pub boot_id: String,
    pub seq: i64,
    /// The sample's time for series: `time_ms` when plausible, else `received_ms`.
    pub t_ms: i64,
    /// The router's clock.
    pub time_ms: i64,
    /// The controller's clock at reception.
    pub received_ms: i64,
    pub clock_ok: bool,
    pub uptime_ms: i64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub cpu_user: i64,
    pub cpu_nice: i64,
    pub cpu_system: i64,
    pub cpu_idle: i64,
    pub cpu_iowait: i64,
    pub cpu_irq: i64,
    pub cpu_softirq: i64,
    pub cpu_steal: i64,
    pub mem_total: i64,
    pub mem_available: i64,
    pub rootfs_size: i64,
    pub rootfs_free: i64,
    pub dropped: i64,
    /// Share of CPU time not idle or waiting for I/O since the previous
    /// sample of the boot.
    pub cpu_busy_ratio: Option<f64>,
    /// The report's interfaces with their derived rates, as JSON (see
    /// `crate::ifaces`).
    pub interfaces: String,
    /// Clients of the report (NULL with the three below: the report
    /// carried no counts).
    pub clients_total: Option<i32>,
    /// Clients on 2.4 GHz radios.
    pub clients_wifi24: Option<i32>,
    /// Clients on 5 GHz radios.
    pub clients_wifi5: Option<i32>,
    /// Clients on other interfaces.
    pub clients_other: Option<i32>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::node::Entity",
        from = "Column::NodeId",
        to = "super::node::Column::Id"
    )]
    Node,
}

impl Related<super::node::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Node.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
