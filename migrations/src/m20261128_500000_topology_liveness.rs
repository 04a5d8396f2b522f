//! Liveness and topology: sites, node state history and flapping,
//! maintenance windows, the latest radios/stations per node, client counts
//! per sample, and the mesh links with their up/down history.
//!
//! Times are Unix milliseconds in `BIGINT` columns; lists reported by a node
//! (radios, stations, gateway) are kept as their proto JSON.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, big_pk_auto, boolean, double_null, integer, integer_null, text,
    text_null,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Network {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Node {
    Table,
    Id,
    SiteId,
    FlappingSinceMs,
}

#[derive(DeriveIden)]
enum Site {
    Table,
    Network,
    /// The site id: the column `site`.
    #[sea_orm(iden = "site")]
    Ident,
    Name,
    Latitude,
    Longitude,
    CreatedMs,
}

#[derive(DeriveIden)]
enum NodeState {
    Table,
    Id,
    NodeId,
    TMs,
    State,
}

#[derive(DeriveIden)]
enum Maintenance {
    Table,
    Id,
    Network,
    Node,
    Site,
    StartMs,
    EndMs,
    Reason,
    CreatedMs,
}

#[derive(DeriveIden)]
enum NodeMesh {
    Table,
    NodeId,
    TMs,
    Radios,
    Stations,
    Gateway,
}

#[derive(DeriveIden)]
enum ClientCount {
    Table,
    NodeId,
    BootId,
    Seq,
    TMs,
    Total,
    Wifi24,
    Wifi5,
    Other,
}

#[derive(DeriveIden)]
enum Link {
    Table,
    Id,
    NodeId,
    Protocol,
    Ifname,
    Address,
    Originator,
    Rxcost,
    Txcost,
    Cost,
    Tq,
    Best,
    SignalDbm,
    FirstSeenMs,
    LastSeenMs,
    Up,
    UpSinceMs,
}

#[derive(DeriveIden)]
enum LinkEvent {
    Table,
    Id,
    LinkId,
    TMs,
    Up,
}

fn node_fk(name: &str, table: impl IntoIden, col: impl IntoIden) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(table, col)
        .to(Node::Table, Node::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

// The trait's signatures elide SchemaManager's lifetime; async_trait needs them to match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// All or nothing, on SQLite too (its DDL is transactional).
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Site::Table)
                    .col(text(Site::Network))
                    .col(text(Site::Ident))
                    .col(text(Site::Name))
                    .col(double_null(Site::Latitude))
                    .col(double_null(Site::Longitude))
                    .col(big_integer(Site::CreatedMs))
                    .primary_key(Index::create().col(Site::Network).col(Site::Ident))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_site_network")
                            .from(Site::Table, Site::Network)
                            .to(Network::Table, Network::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        // SQLite takes one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(Node::Table)
                    .add_column(text_null(Node::SiteId))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Node::Table)
                    .add_column(big_integer_null(Node::FlappingSinceMs))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(NodeState::Table)
                    .col(big_pk_auto(NodeState::Id))
                    .col(big_integer(NodeState::NodeId))
                    .col(big_integer(NodeState::TMs))
                    .col(text(NodeState::State))
                    .foreign_key(&mut node_fk(
                        "fk_node_state_node",
                        NodeState::Table,
                        NodeState::NodeId,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_node_state_node_t")
                    .table(NodeState::Table)
                    .col(NodeState::NodeId)
                    .col(NodeState::TMs)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Maintenance::Table)
                    .col(big_pk_auto(Maintenance::Id))
                    .col(text(Maintenance::Network))
                    .col(text_null(Maintenance::Node))
                    .col(text_null(Maintenance::Site))
                    .col(big_integer(Maintenance::StartMs))
                    .col(big_integer(Maintenance::EndMs))
                    .col(text_null(Maintenance::Reason))
                    .col(big_integer(Maintenance::CreatedMs))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_maintenance_network")
                            .from(Maintenance::Table, Maintenance::Network)
                            .to(Network::Table, Network::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_maintenance_network_end")
                    .table(Maintenance::Table)
                    .col(Maintenance::Network)
                    .col(Maintenance::EndMs)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(NodeMesh::Table)
                    .col(big_integer(NodeMesh::NodeId).primary_key())
                    .col(big_integer(NodeMesh::TMs))
                    .col(text(NodeMesh::Radios))
                    .col(text(NodeMesh::Stations))
                    .col(text_null(NodeMesh::Gateway))
                    .foreign_key(&mut node_fk(
                        "fk_node_mesh_node",
                        NodeMesh::Table,
                        NodeMesh::NodeId,
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ClientCount::Table)
                    .col(big_integer(ClientCount::NodeId))
                    .col(text(ClientCount::BootId))
                    .col(big_integer(ClientCount::Seq))
                    .col(big_integer(ClientCount::TMs))
                    .col(integer(ClientCount::Total))
                    .col(integer(ClientCount::Wifi24))
                    .col(integer(ClientCount::Wifi5))
                    .col(integer(ClientCount::Other))
                    .primary_key(
                        Index::create()
                            .col(ClientCount::NodeId)
                            .col(ClientCount::BootId)
                            .col(ClientCount::Seq),
                    )
                    .foreign_key(&mut node_fk(
                        "fk_client_count_node",
                        ClientCount::Table,
                        ClientCount::NodeId,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_client_count_node_t")
                    .table(ClientCount::Table)
                    .col(ClientCount::NodeId)
                    .col(ClientCount::TMs)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Link::Table)
                    .col(big_pk_auto(Link::Id))
                    .col(big_integer(Link::NodeId))
                    .col(text(Link::Protocol))
                    .col(text(Link::Ifname))
                    .col(text(Link::Address))
                    .col(text_null(Link::Originator))
                    .col(big_integer_null(Link::Rxcost))
                    .col(big_integer_null(Link::Txcost))
                    .col(big_integer_null(Link::Cost))
                    .col(integer_null(Link::Tq))
                    .col(boolean(Link::Best))
                    .col(integer_null(Link::SignalDbm))
                    .col(big_integer(Link::FirstSeenMs))
                    .col(big_integer(Link::LastSeenMs))
                    .col(boolean(Link::Up))
                    .col(big_integer(Link::UpSinceMs))
                    .foreign_key(&mut node_fk("fk_link_node", Link::Table, Link::NodeId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_link_node_protocol_ifname_address")
                    .table(Link::Table)
                    .col(Link::NodeId)
                    .col(Link::Protocol)
                    .col(Link::Ifname)
                    .col(Link::Address)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The link sweep looks for links still up.
        manager
            .create_index(
                Index::create()
                    .name("ix_link_up")
                    .table(Link::Table)
                    .col(Link::Up)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(LinkEvent::Table)
                    .col(big_pk_auto(LinkEvent::Id))
                    .col(big_integer(LinkEvent::LinkId))
                    .col(big_integer(LinkEvent::TMs))
                    .col(boolean(LinkEvent::Up))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_link_event_link")
                            .from(LinkEvent::Table, LinkEvent::LinkId)
                            .to(Link::Table, Link::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_link_event_link_t")
                    .table(LinkEvent::Table)
                    .col(LinkEvent::LinkId)
                    .col(LinkEvent::TMs)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            LinkEvent::Table.into_iden(),
            Link::Table.into_iden(),
            ClientCount::Table.into_iden(),
            NodeMesh::Table.into_iden(),
            Maintenance::Table.into_iden(),
            NodeState::Table.into_iden(),
            Site::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        for col in [Node::FlappingSinceMs.into_iden(), Node::SiteId.into_iden()] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Node::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
