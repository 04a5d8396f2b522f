//! Liveness (state history, flapping, maintenance, new and lost lists),
//! sites, and the mesh topology, through the store's public API on every
//! backend (see `common::each_backend`).

mod common;

use anyhow::ensure;
use common::each_backend;
use meshtable_proto::{
    Clients, Gateway, Hello, InterfaceInfo, InterfaceKind, MeshProtocol, Neighbour, Radio,
    RadioMode, Station, Status, Telemetry, examples,
};
use meshtable_store::liveness::{
    FlapPolicy, MaintenanceCreated, MaintenanceTarget, NewMaintenance, NodeState,
};
use meshtable_store::sites::{SiteAssigned, SiteCreated, SiteLocation};
use meshtable_store::{NodeStatus, Store, StoreError};

/// 2025-11-24T16:00:00Z.
const T0: i64 = 1_764_000_000_000;
const MIN: i64 = 60_000;

async fn state(store: &Store, node: &str, online: bool, t: i64) -> anyhow::Result<()> {
    let s = if online {
        Status::Online
    } else {
        Status::Offline
    };
    store.record_state("net", node, s, t).await?;
    Ok(())
}

fn states(h: &[meshtable_store::liveness::StateChange]) -> Vec<(i64, &str)> {
    h.iter().map(|c| (c.t_ms - T0, c.state.as_str())).collect()
}

#[tokio::test]
async fn flapping_has_hysteresis() -> anyhow::Result<()> {
    each_backend("flapping_has_hysteresis", |store| async move {
        let policy = FlapPolicy {
            transitions: 4,
            window_ms: 10 * MIN,
            quiet_ms: 15 * MIN,
        };
        state(&store, "a", true, T0).await?;
        // Three changes within ten minutes: not yet flapping.
        state(&store, "a", false, T0 + MIN).await?;
        state(&store, "a", true, T0 + 2 * MIN).await?;
        state(&store, "a", false, T0 + 3 * MIN).await?;
        // A repeated state is not a change.
        state(&store, "a", false, T0 + 3 * MIN + 1).await?;
        ensure!(
            store
                .reconcile_flapping(T0 + 4 * MIN, policy)
                .await?
                .is_empty()
        );
        // The fourth change makes it flapping, once.
        state(&store, "a", true, T0 + 5 * MIN).await?;
        let c = store.reconcile_flapping(T0 + 5 * MIN, policy).await?;
        ensure!(c.len() == 1 && c[0].node == "a" && c[0].flapping, "{c:?}");
        ensure!(
            store
                .reconcile_flapping(T0 + 6 * MIN, policy)
                .await?
                .is_empty()
        );
        let l = store.liveness("net", T0 + 6 * MIN).await?;
        ensure!(l[0].state == NodeState::Flapping, "{l:?}");
        ensure!(l[0].status == NodeStatus::Online);
        ensure!(l[0].flapping_since_ms == Some(T0 + 5 * MIN));
        // Fewer changes in the window do not end it before the quiet period:
        // at +16 min the window holds no change, but the last was 11 min ago.
        ensure!(
            store
                .reconcile_flapping(T0 + 16 * MIN, policy)
                .await?
                .is_empty()
        );
        // Quiet for 15 minutes: stable again.
        let c = store.reconcile_flapping(T0 + 21 * MIN, policy).await?;
        ensure!(c.len() == 1 && !c[0].flapping, "{c:?}");
        let l = store.liveness("net", T0 + 21 * MIN).await?;
        ensure!(l[0].state == NodeState::Online && l[0].flapping_since_ms.is_none());

        let h = store.state_history("net", "a", T0, T0 + 30 * MIN).await?;
        ensure!(
            states(&h)
                == [
                    (MIN, "offline"),
                    (2 * MIN, "online"),
                    (3 * MIN, "offline"),
                    (5 * MIN, "online"),
                    (5 * MIN, "flapping"),
                    (21 * MIN, "stable"),
                ],
            "{:?}",
            states(&h)
        );
        ensure!(
            store
                .state_history("net", "nobody", 0, i64::MAX)
                .await?
                .is_empty()
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn sweep_and_batches_keep_history() -> anyhow::Result<()> {
    each_backend("sweep_and_batches_keep_history", |store| async move {
        let mut t = examples::telemetry_v1();
        t.node = "b".to_owned();
        store.record_telemetry("net", "b", &t, T0).await?;
        let swept = store.sweep_offline(T0 + 10 * MIN, 3, MIN).await?;
        ensure!(swept == [("net".to_owned(), "b".to_owned())]);
        // A batch with several changes keeps each.
        let items = [
            meshtable_store::Incoming {
                network: "net",
                node: "b",
                content: meshtable_store::Content::State(Status::Online),
                received_ms: T0 + 11 * MIN,
            },
            meshtable_store::Incoming {
                network: "net",
                node: "b",
                content: meshtable_store::Content::State(Status::Offline),
                received_ms: T0 + 12 * MIN,
            },
        ];
        store.record_batch(&items).await?;
        let h = store.state_history("net", "b", T0, T0 + 60 * MIN).await?;
        ensure!(
            states(&h)
                == [
                    (10 * MIN, "offline"),
                    (11 * MIN, "online"),
                    (12 * MIN, "offline")
                ],
            "{:?}",
            states(&h)
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn sites_and_maintenance() -> anyhow::Result<()> {
    each_backend("sites_and_maintenance", |store| async move {
        for n in ["a", "b", "c"] {
            state(&store, n, true, T0).await?;
        }
        let loc = SiteLocation {
            latitude: 51.3,
            longitude: 12.4,
        };
        let SiteCreated::Created(s) = store
            .create_site("net", "village", "The Village", Some(loc), T0)
            .await?
        else {
            anyhow::bail!("not created");
        };
        ensure!(s.id == "village" && s.name == "The Village" && s.location == Some(loc));
        ensure!(
            store
                .create_site("net", "village", "Again", None, T0)
                .await?
                == SiteCreated::Exists
        );
        ensure!(
            store.create_site("nowhere", "x", "X", None, T0).await? == SiteCreated::UnknownNetwork
        );
        ensure!(matches!(
            store.create_site("net", "Bad Id", "X", None, T0).await,
            Err(StoreError::BadQuery(_))
        ));
        ensure!(matches!(
            store.create_site("net", "x", "  ", None, T0).await,
            Err(StoreError::BadQuery(_))
        ));
        ensure!(store.assign_site("net", "a", Some("village")).await? == SiteAssigned::Done);
        ensure!(store.assign_site("net", "b", Some("village")).await? == SiteAssigned::Done);
        ensure!(store.assign_site("net", "b", None).await? == SiteAssigned::Done);
        ensure!(
            store.assign_site("net", "zz", Some("village")).await? == SiteAssigned::UnknownNode
        );
        ensure!(store.assign_site("net", "c", Some("nope")).await? == SiteAssigned::UnknownSite);
        let sites = store.sites("net").await?;
        ensure!(sites.len() == 1 && sites[0].nodes == 1, "{sites:?}");
        ensure!(store.node_site("net", "a").await?.as_deref() == Some("village"));

        // A site window silences its nodes; a node window its node.
        let site_window = NewMaintenance {
            target: MaintenanceTarget::Site("village".to_owned()),
            start_ms: T0 + 10 * MIN,
            end_ms: T0 + 20 * MIN,
            reason: Some("mast repair".to_owned()),
        };
        let MaintenanceCreated::Created(w1) =
            store.create_maintenance("net", &site_window, T0).await?
        else {
            anyhow::bail!("not created");
        };
        let node_window = NewMaintenance {
            target: MaintenanceTarget::Node("c".to_owned()),
            start_ms: T0 + 15 * MIN,
            end_ms: T0 + 30 * MIN,
            reason: None,
        };
        let MaintenanceCreated::Created(w2) =
            store.create_maintenance("net", &node_window, T0).await?
        else {
            anyhow::bail!("not created");
        };
        let silenced = |t: i64| {
            let store = store.clone();
            async move {
                let mut v: Vec<String> = store
                    .maintenance_nodes("net", t)
                    .await?
                    .into_iter()
                    .collect();
                v.sort();
                Ok::<_, anyhow::Error>(v)
            }
        };
        ensure!(silenced(T0 + 9 * MIN).await?.is_empty());
        ensure!(silenced(T0 + 10 * MIN).await? == ["a"]);
        ensure!(silenced(T0 + 15 * MIN).await? == ["a", "c"]);
        ensure!(silenced(T0 + 20 * MIN).await? == ["c"], "end is exclusive");
        ensure!(store.in_maintenance("net", "c", T0 + 25 * MIN).await?);
        ensure!(!store.in_maintenance("net", "b", T0 + 15 * MIN).await?);
        let l = store.liveness("net", T0 + 15 * MIN).await?;
        let flags: Vec<(&str, bool, Option<&str>)> = l
            .iter()
            .map(|n| (n.node.as_str(), n.in_maintenance, n.site.as_deref()))
            .collect();
        ensure!(
            flags
                == [
                    ("a", true, Some("village")),
                    ("b", false, None),
                    ("c", true, None)
                ],
            "{flags:?}"
        );

        ensure!(store.maintenance_windows("net", i64::MIN).await?.len() == 2);
        ensure!(
            store.maintenance_windows("net", T0 + 25 * MIN).await? == std::slice::from_ref(&w2)
        );
        ensure!(store.delete_maintenance("net", w1.id).await?);
        ensure!(!store.delete_maintenance("net", w1.id).await?);
        ensure!(!store.delete_maintenance("other", w2.id).await?);
        ensure!(silenced(T0 + 15 * MIN).await? == ["c"]);

        let unknown = NewMaintenance {
            target: MaintenanceTarget::Node("zz".to_owned()),
            ..node_window.clone()
        };
        ensure!(matches!(
            store.create_maintenance("net", &unknown, T0).await?,
            MaintenanceCreated::Unknown(_)
        ));
        let backwards = NewMaintenance {
            end_ms: node_window.start_ms,
            ..node_window
        };
        ensure!(matches!(
            store.create_maintenance("net", &backwards, T0).await,
            Err(StoreError::BadQuery(_))
        ));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn new_and_lost_nodes() -> anyhow::Result<()> {
    each_backend("new_and_lost_nodes", |store| async move {
        const DAY: i64 = 24 * 60 * MIN;
        state(&store, "old", true, T0).await?;
        state(&store, "young", true, T0 + 9 * DAY).await?;
        state(&store, "gone-long", true, T0).await?;
        state(&store, "gone-long", false, T0 + DAY).await?;
        state(&store, "gone-recent", true, T0).await?;
        state(&store, "gone-recent", false, T0 + 9 * DAY).await?;
        state(&store, "gone-just-now", true, T0).await?;
        state(&store, "gone-just-now", false, T0 + 10 * DAY - MIN).await?;
        let now = T0 + 10 * DAY;
        let new = store.new_nodes("net", now - 7 * DAY, now).await?;
        let names: Vec<&str> = new.iter().map(|n| n.node.as_str()).collect();
        ensure!(names == ["young"], "{names:?}");
        let lost = store.lost_nodes("net", now, 10 * MIN, 7 * DAY).await?;
        let names: Vec<&str> = lost.iter().map(|n| n.node.as_str()).collect();
        ensure!(names == ["gone-recent"], "{names:?}");
        Ok(())
    })
    .await
}

fn hello(ifaces: &[(&str, &str, &[&str])]) -> Hello {
    Hello {
        agent_version: "test".to_owned(),
        hostname: "h".to_owned(),
        interval_ms: 60_000,
        board: Some("tplink,cpe510-v1".to_owned()),
        interfaces: ifaces
            .iter()
            .map(|&(name, mac, addrs)| InterfaceInfo {
                name: name.to_owned(),
                mac: Some(mac.to_owned()),
                mtu: 1500,
                addresses: addrs.iter().map(|a| (*a).to_owned()).collect(),
                kind: InterfaceKind::Ethernet,
            })
            .collect(),
        ..Hello::default()
    }
}

fn babel(ifname: &str, address: &str, rx: u32, tx: u32) -> Neighbour {
    Neighbour {
        protocol: MeshProtocol::Babel,
        ifname: ifname.to_owned(),
        address: address.to_owned(),
        rxcost: Some(rx),
        txcost: Some(tx),
        cost: Some(rx.max(tx)),
        ..Neighbour::default()
    }
}

fn report(node: &str, seq: u64, neighbours: Vec<Neighbour>) -> Telemetry {
    let mut t = examples::telemetry_v1();
    t.node = node.to_owned();
    t.boot_id = format!("boot-{node}");
    t.seq = seq;
    t.uptime_ms = 1000 + seq * 60_000;
    t.time_ms = (T0 + seq as i64 * MIN) as u64;
    t.neighbours = neighbours;
    t
}

#[tokio::test]
async fn topology_joins_both_ends() -> anyhow::Result<()> {
    each_backend("topology_joins_both_ends", |store| async move {
        // a (uplink on eth1) -- wlan0 -- b -- eth0 -- c; b also hears an unknown node.
        store
            .record_hello(
                "net",
                "a",
                &hello(&[
                    ("wlan0", "02:00:00:00:0a:01", &["fe80::a1/64"]),
                    ("eth1", "02:00:00:00:0a:02", &["192.0.2.10/24"]),
                ]),
                T0,
            )
            .await?;
        store
            .record_hello(
                "net",
                "b",
                &hello(&[
                    (
                        "wlan0",
                        "02:00:00:00:0b:01",
                        &["fe80::b1/64", "10.0.0.2/16"],
                    ),
                    ("eth0", "02:00:00:00:0b:02", &["fe80::b2/64"]),
                ]),
                T0,
            )
            .await?;
        store
            .record_hello(
                "net",
                "c",
                &hello(&[("eth0", "02:00:00:00:0c:01", &["fe80::c1/64"])]),
                T0,
            )
            .await?;

        let mut ta = report("a", 0, vec![babel("wlan0", "fe80::b1", 256, 300)]);
        ta.gateway = Some(Gateway {
            via: Some("192.0.2.1".to_owned()),
            ifname: "eth1".to_owned(),
        });
        ta.radios = vec![Radio {
            ifname: "wlan0".to_owned(),
            mode: RadioMode::MeshPoint,
            frequency_mhz: 5180,
            channel: Some(36),
            ..Radio::default()
        }];
        // A mesh peer with b's wlan0 MAC (EUI-64 is not used here: b's
        // link-local is not EUI-64, so the signal joins by... nothing) and a client.
        ta.stations = vec![
            Station {
                ifname: "wlan0".to_owned(),
                mac: Some("02:00:00:00:0b:01".to_owned()),
                mesh: true,
                signal_dbm: Some(-61),
                ..Station::default()
            },
            Station {
                ifname: "wlan0".to_owned(),
                client_id: Some("hash-of-a-client".to_owned()),
                signal_dbm: Some(-70),
                ..Station::default()
            },
        ];
        ta.clients = Some(Clients {
            total: 3,
            wifi_24: 1,
            wifi_5: 1,
            other: 1,
            ids: vec!["x".to_owned()],
        });
        store.record_telemetry("net", "a", &ta, T0 + 1000).await?;
        let mut tb = report(
            "b",
            0,
            vec![
                babel("wlan0", "FE80::A1", 280, 256),
                babel("eth0", "fe80::c1%eth0", 96, 96),
                babel("eth0", "fe80::dead", 96, 96),
            ],
        );
        tb.gateway = Some(Gateway {
            via: Some("fe80::a1".to_owned()),
            ifname: "wlan0".to_owned(),
        });
        store.record_telemetry("net", "b", &tb, T0 + 1000).await?;
        let mut tc = report("c", 0, vec![babel("eth0", "fe80::b2", 96, 96)]);
        tc.gateway = Some(Gateway {
            via: Some("fe80::b2".to_owned()),
            ifname: "eth0".to_owned(),
        });
        store.record_telemetry("net", "c", &tc, T0 + 1000).await?;

        let g = store.topology("net", false).await?.expect("network exists");
        type Row = (String, String, Option<String>, Option<String>, Option<u32>);
        let links: Vec<Row> = g
            .links
            .iter()
            .map(|l| {
                (
                    l.source.clone(),
                    l.source_ifname.clone(),
                    l.target.node.clone(),
                    l.target.ifname.clone(),
                    l.rxcost,
                )
            })
            .collect();
        let s = |v: &str| Some(v.to_owned());
        ensure!(
            links
                == [
                    ("a".into(), "wlan0".into(), s("b"), s("wlan0"), Some(256)),
                    ("b".into(), "eth0".into(), s("c"), s("eth0"), Some(96)),
                    ("b".into(), "eth0".into(), None, None, Some(96)),
                    ("b".into(), "wlan0".into(), s("a"), s("wlan0"), Some(280)),
                    ("c".into(), "eth0".into(), s("b"), s("eth0"), Some(96)),
                ],
            "{links:#?}"
        );
        ensure!(g.links[2].target.address == "fe80::dead");
        let node = |id: &str| g.nodes.iter().find(|n| n.node == id).unwrap();
        ensure!(node("a").uplink && !node("b").uplink && !node("c").uplink);
        ensure!(node("b").gateway_nexthop.as_deref() == Some("a"));
        ensure!(node("c").gateway_nexthop.as_deref() == Some("b"));
        ensure!(node("c").gateway_node.as_deref() == Some("a"));
        ensure!(node("a").board.as_deref() == Some("tplink,cpe510-v1"));
        ensure!(node("a").clients.as_ref().map(|c| c.total) == Some(3));
        ensure!(node("a").clients.as_ref().is_some_and(|c| c.ids.is_empty()));
        ensure!(node("a").gauges.is_some());

        // The node's detail: radios, stations without client ids, neighbours.
        let m = store.node_mesh("net", "a", T0).await?.expect("known node");
        ensure!(m.radios.len() == 1 && m.radios[0].channel == Some(36));
        ensure!(m.stations.len() == 2 && m.stations.iter().all(|s| s.client_id.is_none()));
        ensure!(m.neighbours.len() == 1 && m.uplink);
        ensure!(store.node_mesh("net", "zz", T0).await?.is_none());
        ensure!(store.topology("nowhere", false).await?.is_none());
        Ok(())
    })
    .await
}

/// A node's client counts are its latest report's (by report time, not
/// arrival), all four of them; a latest report without counts has none.
#[tokio::test]
async fn client_counts_come_from_the_latest_report() -> anyhow::Result<()> {
    each_backend(
        "client_counts_come_from_the_latest_report",
        |store| async move {
            store
                .record_hello(
                    "net",
                    "a",
                    &hello(&[("wlan0", "02:00:00:00:0a:01", &[])]),
                    T0,
                )
                .await?;
            let with = |seq, counts: Option<(u32, u32, u32, u32)>| {
                let mut t = report("a", seq, vec![]);
                t.clients = counts.map(|(total, wifi_24, wifi_5, other)| Clients {
                    total,
                    wifi_24,
                    wifi_5,
                    other,
                    ids: vec!["x".to_owned()],
                });
                t
            };
            let seen = |c: Option<&Clients>| c.map(|c| (c.total, c.wifi_24, c.wifi_5, c.other));
            // The later report arrives first.
            store
                .record_telemetry("net", "a", &with(2, Some((7, 4, 2, 1))), T0 + 2 * MIN)
                .await?;
            store
                .record_telemetry("net", "a", &with(1, Some((3, 1, 1, 1))), T0 + 3 * MIN)
                .await?;
            let g = store.topology("net", false).await?.expect("network exists");
            ensure!(seen(g.nodes[0].clients.as_ref()) == Some((7, 4, 2, 1)));
            let m = store.node_mesh("net", "a", T0).await?.expect("known node");
            ensure!(seen(m.clients.as_ref()) == Some((7, 4, 2, 1)));
            ensure!(m.clients.as_ref().is_some_and(|c| c.ids.is_empty()));
            let fleet = store.fleet_nodes().await?;
            ensure!(fleet[0].clients == Some(7), "{:?}", fleet[0].clients);

            store
                .record_telemetry("net", "a", &with(3, None), T0 + 4 * MIN)
                .await?;
            let g = store.topology("net", false).await?.expect("network exists");
            ensure!(g.nodes[0].clients.is_none());
            let m = store.node_mesh("net", "a", T0).await?.expect("known node");
            ensure!(m.clients.is_none());
            ensure!(store.fleet_nodes().await?[0].clients.is_none());
            Ok(())
        },
    )
    .await
}

#[tokio::test]
async fn links_go_down_and_up() -> anyhow::Result<()> {
    each_backend("links_go_down_and_up", |store| async move {
        store
            .record_hello(
                "net",
                "a",
                &hello(&[("bat0", "02:00:00:00:0a:01", &[])]),
                T0,
            )
            .await?;
        store
            .record_hello(
                "net",
                "b",
                &hello(&[("mesh0", "02:00:00:00:0b:01", &[])]),
                T0,
            )
            .await?;
        let batman = |tq: u8| Neighbour {
            protocol: MeshProtocol::BatmanAdv,
            ifname: "mesh0".to_owned(),
            address: "02:00:00:00:0b:01".to_owned(),
            tq: Some(tq),
            best: true,
            originator: Some("02:00:00:00:0b:01".to_owned()),
            ..Neighbour::default()
        };
        let mut t = report("a", 0, vec![batman(200)]);
        t.stations = vec![Station {
            ifname: "mesh0".to_owned(),
            mac: Some("02:00:00:00:0b:01".to_owned()),
            mesh: true,
            signal_dbm: Some(-60),
            signal_avg_dbm: Some(-58),
            ..Station::default()
        }];
        store.record_telemetry("net", "a", &t, T0).await?;
        store
            .record_telemetry("net", "a", &report("a", 1, vec![batman(180)]), T0 + MIN)
            .await?;
        let g = store.topology("net", false).await?.unwrap();
        ensure!(g.links.len() == 1, "{:?}", g.links);
        let l = &g.links[0];
        ensure!(l.tq == Some(180) && l.best && l.target.node.as_deref() == Some("b"));
        // The second report had no station: no signal.
        ensure!(l.signal_dbm.is_none());
        let id = l.id;

        // Not reported for 3 intervals: down.
        ensure!(store.sweep_links(T0 + 3 * MIN, 3, MIN).await? == 0);
        ensure!(store.sweep_links(T0 + 5 * MIN, 3, MIN).await? == 1);
        ensure!(store.sweep_links(T0 + 6 * MIN, 3, MIN).await? == 0);
        ensure!(
            store
                .topology("net", false)
                .await?
                .unwrap()
                .links
                .is_empty()
        );
        let all = store.topology("net", true).await?.unwrap();
        ensure!(all.links.len() == 1 && !all.links[0].up);
        // A backfilled report does not bring it back.
        let mut old = report("a", 2, vec![batman(150)]);
        old.backfill = true;
        store
            .record_telemetry("net", "a", &old, T0 + 7 * MIN)
            .await?;
        ensure!(
            store
                .topology("net", false)
                .await?
                .unwrap()
                .links
                .is_empty()
        );
        // A live one does, with the signal of its mesh peer.
        let mut t = report("a", 3, vec![batman(210)]);
        t.stations = vec![Station {
            ifname: "mesh0".to_owned(),
            mac: Some("02:00:00:00:0B:01".to_owned()),
            mesh: true,
            signal_dbm: Some(-60),
            signal_avg_dbm: Some(-58),
            ..Station::default()
        }];
        store.record_telemetry("net", "a", &t, T0 + 8 * MIN).await?;
        let g = store.topology("net", false).await?.unwrap();
        ensure!(g.links.len() == 1 && g.links[0].up && g.links[0].signal_dbm == Some(-58));
        ensure!(g.links[0].up_since_ms == T0 + 8 * MIN && g.links[0].first_seen_ms == T0);

        let events = store.link_events("net", id).await?.expect("link exists");
        let ev: Vec<(i64, bool)> = events.iter().map(|e| (e.t_ms - T0, e.up)).collect();
        ensure!(
            ev == [(0, true), (5 * MIN, false), (8 * MIN, true)],
            "{ev:?}"
        );
        ensure!(store.link_events("other", id).await?.is_none());
        Ok(())
    })
    .await
}
