//! `interface_sample`: the counters of one interface in one sample, with the
//! rates derived from the previous sample of the same boot.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "interface_sample")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub sample_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    pub rx_bytes: i64,
    pub tx_bytes: i64,
    pub rx_packets: i64,
    pub tx_packets: i64,
    pub rx_errors: i64,
    pub tx_errors: i64,
    pub rx_dropped: i64,
    pub tx_dropped: i64,
    /// Bits per second received since the previous sample of the boot.
    pub rx_bps: Option<f64>,
    /// Bits per second sent since the previous sample of the boot.
    pub tx_bps: Option<f64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::sample::Entity",
        from = "Column::SampleId",
        to = "super::sample::Column::Id"
    )]
    Sample,
}

impl Related<super::sample::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Sample.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
