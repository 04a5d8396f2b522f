//! `link`: one mesh neighbour as one node reports it (one direction of a link).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "link")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The reporting node.
    pub node_id: i64,
    /// `babel` or `batman_adv`.
    pub protocol: String,
    /// The reporter's interface.
    pub ifname: String,
    /// The neighbour's address (babel: link-local IPv6; batman-adv: MAC), lowercase.
    pub address: String,
    pub originator: Option<String>,
    pub rxcost: Option<i64>,
    pub txcost: Option<i64>,
    pub cost: Option<i64>,
    pub tq: Option<i32>,
    pub best: bool,
    pub signal_dbm: Option<i32>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub up: bool,
    pub up_since_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
