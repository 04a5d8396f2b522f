//! `link_event`: a link going up or down.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "link_event")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub link_id: i64,
    pub t_ms: i64,
    pub up: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
