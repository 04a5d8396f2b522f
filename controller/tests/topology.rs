//! Topology and liveness over HTTP, on the whole controller in-process
//! (embedded broker, SQLite in a temp dir): the simulator replays the real
//! Leipzig mesh over MQTT, and the controller's NetJSON and meshviewer
//! output must show exactly the links the simulated routers reported; the
//! liveness, maintenance and site endpoints answer with the right statuses.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use meshtable::config::{Config, Layer};
use meshtable::serve::{Controller, Listeners};
use meshtable_proto::{Hello, InterfaceInfo, InterfaceKind, Status};
use meshtable_sim::{SimConfig, Snapshot};
use serde_json::{Value, json};

struct Harness {
    controller: Controller,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(networks: &[&str]) -> Result<Harness> {
        let dir = tempfile::tempdir()?;
        let layer = Layer {
            listen: Some("127.0.0.1:0".parse()?),
            mqtt_listen: Some("127.0.0.1:0".parse()?),
            data_dir: Some(dir.path().to_owned()),
            sweep_interval: Some(Duration::from_millis(200)),
            // The simulated routers have no login.
            mqtt_allow_anonymous: Some(true),
            ..Layer::default()
        };
        let config = Config::resolve(&layer, None)?;
        let listeners = Listeners::bind(&config)?;
        let controller = tokio::time::timeout(
            Duration::from_secs(30),
            Controller::start(&config, listeners),
        )
        .await
        .context("controller did not get ready")??;
        for n in networks {
            match meshtable::enroll::add_network(controller.store(), n, true).await {
                Ok(()) | Err(meshtable::api::ApiError::Conflict(_)) => {}
                Err(e) => bail!("cannot create network {n}: {e}"),
            }
        }
        let token = meshtable::auth::superadmin_token(controller.store(), "tests").await?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", token.expose()).parse()?,
        );
        Ok(Harness {
            controller,
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()?,
            _dir: dir,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.controller.http_url());
        let mut r = self.http.request(method, &url);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("{path}: {text}"))?
        };
        Ok((status, v))
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let (status, v) = self.send(reqwest::Method::GET, path, None).await?;
        ensure!(status == 200, "GET {path}: {status} {v}");
        Ok(v)
    }
}

/// The NetworkGraph rules of the NetJSON specification (network-graph
/// schema, draft-04, and the prose: links join nodes of the graph), checked
/// in our own words. Returns the first broken rule.
fn check_netjson(g: &Value) -> Result<()> {
    let o = g.as_object().context("not an object")?;
    ensure!(o.get("type") == Some(&json!("NetworkGraph")), "type");
    for key in ["protocol", "version", "metric"] {
        ensure!(
            o.get(key).is_some_and(Value::is_string),
            "{key} must be a string"
        );
    }
    for key in ["revision", "router_id", "topology_id", "label"] {
        ensure!(
            o.get(key).is_none_or(Value::is_string),
            "{key} must be a string when present"
        );
    }
    let nodes = o.get("nodes").and_then(Value::as_array).context("nodes")?;
    let links = o.get("links").and_then(Value::as_array).context("links")?;
    let unique = |items: &[Value]| {
        let set: HashSet<String> = items.iter().map(Value::to_string).collect();
        set.len() == items.len()
    };
    ensure!(unique(nodes), "nodes must be unique items");
    ensure!(unique(links), "links must be unique items");
    let mut ids = HashSet::new();
    for n in nodes {
        let n = n.as_object().context("node is not an object")?;
        let id = n.get("id").and_then(Value::as_str).context("node id")?;
        ensure!(ids.insert(id.to_owned()), "node id {id} twice");
        ensure!(n.get("label").is_none_or(Value::is_string), "label");
        if let Some(a) = n.get("local_addresses") {
            let a = a.as_array().context("local_addresses is not an array")?;
            ensure!(a.iter().all(Value::is_string), "local_addresses items");
            ensure!(unique(a), "local_addresses must be unique");
        }
        ensure!(
            n.get("properties").is_none_or(Value::is_object),
            "properties"
        );
    }
    for l in links {
        let l = l.as_object().context("link is not an object")?;
        for end in ["source", "target"] {
            let id = l.get(end).and_then(Value::as_str).context(end)?;
            ensure!(ids.contains(id), "link {end} {id} is no node of the graph");
        }
        ensure!(l.get("cost").is_some_and(Value::is_number), "cost");
        ensure!(l.get("cost_text").is_none_or(Value::is_string), "cost_text");
        ensure!(
            l.get("properties").is_none_or(Value::is_object),
            "properties"
        );
    }
    Ok(())
}

#[test]
fn the_netjson_check_rejects_what_the_schema_rejects() {
    let good = json!({"type":"NetworkGraph","protocol":"olsr","version":"0.6","metric":"etx",
        "nodes":[{"id":"a"},{"id":"b","local_addresses":["10.0.0.1"]}],
        "links":[{"source":"a","target":"b","cost":1.0}]});
    check_netjson(&good).unwrap();
    let bad = [
        json!({"type":"NetworkGraph","protocol":"olsr","version":"0.6","nodes":[],"links":[]}),
        json!({"type":"Other","protocol":"olsr","version":"0.6","metric":"etx","nodes":[],"links":[]}),
        json!({"type":"NetworkGraph","protocol":"olsr","version":"0.6","metric":"etx",
            "nodes":[{"id":"a"}],"links":[{"source":"a","target":"b","cost":1}]}),
        json!({"type":"NetworkGraph","protocol":"olsr","version":"0.6","metric":"etx",
            "nodes":[{"id":"a"},{"id":"b"}],"links":[{"source":"a","target":"b"}]}),
        json!({"type":"NetworkGraph","protocol":"olsr","version":"0.6","metric":"etx",
            "nodes":[{"id":"a","local_addresses":["x","x"]}],"links":[]}),
        json!({"type":"NetworkGraph","protocol":"olsr","version":"0.6","metric":"etx",
            "nodes":[{"id":"a"},{"id":"a"}],"links":[]}),
    ];
    for b in bad {
        assert!(check_netjson(&b).is_err(), "{b}");
    }
}

/// The directed links the simulated routers report that join both ends:
/// (reporter, far node) pairs by node id, with the TQs of its interface pairs.
fn reported_links(snapshot: &Snapshot) -> BTreeMap<(String, String), Vec<u8>> {
    let fleet = meshtable_sim::profile::fleet(snapshot, 1);
    let mut by_mac: HashMap<String, String> = HashMap::new();
    for p in &fleet {
        for i in &p.interfaces {
            if let Some(m) = &i.info.mac {
                by_mac
                    .entry(m.to_ascii_lowercase())
                    .or_insert(p.node_id.clone());
            }
        }
    }
    let online: HashSet<&str> = fleet
        .iter()
        .filter(|p| p.online)
        .map(|p| p.node_id.as_str())
        .collect();
    let mut out = BTreeMap::new();
    for p in fleet.iter().filter(|p| online.contains(p.node_id.as_str())) {
        for n in &p.neighbours {
            let far = by_mac
                .get(&n.address)
                .or_else(|| n.originator.as_ref().and_then(|o| by_mac.get(o)));
            if let Some(far) = far {
                out.entry((p.node_id.clone(), far.clone()))
                    .or_insert_with(Vec::new)
                    .push(n.tq.unwrap_or(0));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_mesh_is_served_as_netjson_and_meshviewer() -> Result<()> {
    let h = Harness::start(&["leipzig"]).await?;
    let snapshot = Snapshot::leipzig();
    let expected = reported_links(&snapshot);
    // Most of the real mesh's links between online nodes are there.
    let online: HashSet<&str> = snapshot
        .nodes
        .iter()
        .filter(|n| n.is_online)
        .map(|n| n.node_id.as_str())
        .collect();
    let real: BTreeSet<(String, String)> = snapshot
        .links
        .iter()
        .filter(|l| online.contains(l.source.as_str()) && online.contains(l.target.as_str()))
        .flat_map(|l| {
            [
                (l.source.clone(), l.target.clone()),
                (l.target.clone(), l.source.clone()),
            ]
        })
        .collect();
    let covered = real.iter().filter(|k| expected.contains_key(*k)).count();
    println!(
        "leipzig: {} directed links between online nodes, {} reported and joinable",
        real.len(),
        covered
    );
    ensure!(
        covered * 10 >= real.len() * 9,
        "{covered} of {}",
        real.len()
    );

    let mqtt = h
        .controller
        .mqtt_url()
        .trim_start_matches("mqtt://")
        .to_owned();
    let (host, port) = mqtt.rsplit_once(':').context("mqtt url")?;
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let sim = tokio::spawn(meshtable_sim::run(
        SimConfig {
            mqtt_host: host.to_owned(),
            mqtt_port: port.parse()?,
            network: "leipzig".to_owned(),
            snapshot: snapshot.clone(),
            interval: Duration::from_secs(1),
            churn: 0.0,
            seed: 1,
        },
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));

    // Until every reported link is in the graph.
    let deadline = Instant::now() + Duration::from_secs(90);
    let graph = loop {
        let g = h.get("/api/v1/networks/leipzig/topology").await?;
        let unknown: HashSet<&str> = g["nodes"]
            .as_array()
            .context("nodes")?
            .iter()
            .filter(|n| n["properties"]["unknown"] == json!(true))
            .filter_map(|n| n["id"].as_str())
            .collect();
        let got: BTreeSet<(String, String)> = g["links"]
            .as_array()
            .context("links")?
            .iter()
            .filter(|l| !unknown.contains(l["target"].as_str().unwrap_or_default()))
            .map(|l| {
                (
                    l["source"].as_str().unwrap_or_default().to_owned(),
                    l["target"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let want: BTreeSet<(String, String)> = expected.keys().cloned().collect();
        if got == want {
            break g;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = want.difference(&got).take(5).collect();
            let extra: Vec<_> = got.difference(&want).take(5).collect();
            bail!(
                "graph has {} links, want {}; missing {missing:?}, extra {extra:?}",
                got.len(),
                want.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    check_netjson(&graph)?;
    ensure!(graph["protocol"] == "batman-adv" && graph["metric"] == "tq");
    // Costs are 255 / TQ, and the TQ is the snapshot's.
    for l in graph["links"].as_array().context("links")? {
        let key = (
            l["source"].as_str().unwrap_or_default().to_owned(),
            l["target"].as_str().unwrap_or_default().to_owned(),
        );
        let tqs = expected.get(&key).context("an expected link")?;
        let tq = l["properties"]["tq"].as_u64().context("tq")?;
        ensure!(
            tqs.iter().any(|&t| u64::from(t) == tq),
            "{l}: tq not in {tqs:?}"
        );
        let cost = l["cost"].as_f64().context("cost")?;
        ensure!((cost - 255.0 / tq.max(1) as f64).abs() < 1e-9, "{l}");
    }

    // The meshviewer document parses with the simulator's snapshot reader
    // and shows the same nodes and node pairs as the real snapshot.
    let (status, mv) = h
        .send(
            reqwest::Method::GET,
            "/api/v1/networks/leipzig/meshviewer.json",
            None,
        )
        .await?;
    ensure!(status == 200, "{status} {mv}");
    let parsed = Snapshot::parse(&mv.to_string()).context("meshviewer output parses")?;
    ensure!(parsed.nodes.len() == snapshot.nodes.len());
    ensure!(parsed.timestamp_ms().is_some());
    let ours: BTreeSet<(String, String)> = parsed
        .links
        .iter()
        .map(|l| {
            let (a, b) = (l.source.clone(), l.target.clone());
            if a < b { (a, b) } else { (b, a) }
        })
        .collect();
    let want: BTreeSet<(String, String)> = expected
        .keys()
        .map(|(a, b)| {
            if a < b {
                (a.clone(), b.clone())
            } else {
                (b.clone(), a.clone())
            }
        })
        .collect();
    ensure!(
        ours == want,
        "{} node pairs, want {}",
        ours.len(),
        want.len()
    );
    for l in &parsed.links {
        for (from, to, tq) in [
            (&l.source, &l.target, l.source_tq),
            (&l.target, &l.source, l.target_tq),
        ] {
            // A direction not reported (or not joined to this interface
            // pair) shows 0, as yanic writes it.
            let tqs = expected.get(&(from.clone(), to.clone()));
            let ok = tq == 0.0
                || tqs.is_some_and(|tqs| {
                    tqs.iter()
                        .any(|&t| (f64::from(t) / 255.0 - tq).abs() < 1e-9)
                });
            ensure!(ok, "{from} -> {to}: tq {tq}, reported {tqs:?}");
        }
        ensure!(l.source_addr.is_some() && l.target_addr.is_some(), "{l:?}");
    }
    // Node fields: a subset of a real snapshot's, with the essentials.
    let real_keys: HashSet<String> = {
        let doc: Value = serde_json::from_str(include_str!(
            "../../crates/sim/data/leipzig-meshviewer.json"
        ))?;
        doc["nodes"]
            .as_array()
            .context("nodes")?
            .iter()
            .flat_map(|n| n.as_object().into_iter().flat_map(|o| o.keys().cloned()))
            .collect()
    };
    let online_ours = parsed.nodes.iter().filter(|n| n.is_online).count();
    ensure!(online_ours == snapshot.online(), "{online_ours} online");
    for n in mv["nodes"].as_array().context("nodes")? {
        let o = n.as_object().context("node")?;
        for k in o.keys() {
            ensure!(real_keys.contains(k), "key {k} is not in real snapshots");
        }
        for k in [
            "node_id",
            "hostname",
            "addresses",
            "firmware",
            "is_online",
            "is_gateway",
            "clients",
            "firstseen",
            "lastseen",
        ] {
            ensure!(o.contains_key(k), "node lacks {k}: {n}");
        }
    }
    // Snapshot clients come back as reported.
    let clients: HashMap<&str, u32> = snapshot
        .nodes
        .iter()
        .filter(|n| n.is_online)
        .map(|n| (n.node_id.as_str(), n.clients))
        .collect();
    for n in parsed.nodes.iter().filter(|n| n.is_online) {
        if let Some(&c) = clients.get(n.node_id.as_str()) {
            ensure!(
                n.clients == c,
                "{} clients {} want {c}",
                n.node_id,
                n.clients
            );
        }
    }

    // A node's detail carries its neighbours and gateway.
    let (first, _) = expected.keys().next().context("a link")?;
    let d = h
        .get(&format!("/api/v1/nodes/{first}?network=leipzig"))
        .await?;
    ensure!(
        d["neighbours"].as_array().is_some_and(|a| !a.is_empty()),
        "{d}"
    );
    ensure!(d.get("radios").is_some() && d.get("state").is_some(), "{d}");

    let _ = stop.send(true);
    sim.await??;
    h.controller.shutdown().await;
    Ok(())
}

fn hello() -> Hello {
    Hello {
        agent_version: "test".to_owned(),
        hostname: "h".to_owned(),
        interval_ms: 60_000,
        interfaces: vec![InterfaceInfo {
            name: "eth0".to_owned(),
            mac: Some("02:00:00:00:00:01".to_owned()),
            mtu: 1500,
            addresses: vec![],
            kind: InterfaceKind::Ethernet,
        }],
        ..Hello::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_maintenance_and_sites_over_http() -> Result<()> {
    use reqwest::Method;
    let h = Harness::start(&["village"]).await?;
    let store = h.controller.store().clone();
    let now = meshtable::ingest::now_ms();
    store.record_hello("village", "a", &hello(), now).await?;
    store.record_hello("village", "b", &hello(), now).await?;
    store
        .record_state("village", "b", Status::Offline, now - 3_600_000)
        .await?;

    let post = |path: &'static str, body: Value| {
        let h = &h;
        async move { h.send(Method::POST, path, Some(body)).await }
    };
    // Sites.
    let (s, v) = post(
        "/api/v1/networks/village/sites",
        json!({"id":"school","name":"The School","location":{"latitude":51.3,"longitude":12.4}}),
    )
    .await?;
    ensure!(
        s == 201 && v["id"] == "school" && v["nodes"] == 0,
        "{s} {v}"
    );
    let (s, _) = post(
        "/api/v1/networks/village/sites",
        json!({"id":"school","name":"x"}),
    )
    .await?;
    ensure!(s == 409, "{s}");
    let (s, _) = post(
        "/api/v1/networks/village/sites",
        json!({"id":"Bad Id","name":"x"}),
    )
    .await?;
    ensure!(s == 400, "{s}");
    let (s, _) = post("/api/v1/networks/village/sites", json!({"nope":1})).await?;
    ensure!(s == 400, "{s}");
    let (s, _) = h
        .send(
            Method::PUT,
            "/api/v1/networks/village/nodes/a/site",
            Some(json!({"site":"school"})),
        )
        .await?;
    ensure!(s == 204, "{s}");
    let (s, _) = h
        .send(
            Method::PUT,
            "/api/v1/networks/village/nodes/zz/site",
            Some(json!({"site":"school"})),
        )
        .await?;
    ensure!(s == 404, "{s}");
    let v = h.get("/api/v1/networks/village/sites").await?;
    ensure!(v["sites"][0]["nodes"] == 1, "{v}");
    let v = h.get("/api/v1/networks/village/sites/school").await?;
    ensure!(v["name"] == "The School", "{v}");

    // Maintenance of the site silences node a.
    let (s, w) = post(
        "/api/v1/networks/village/maintenance",
        json!({"site":"school","duration":"2h","reason":"new mast"}),
    )
    .await?;
    ensure!(s == 201, "{s} {w}");
    let v = h.get("/api/v1/networks/village/liveness").await?;
    let flags: Vec<(String, bool, String)> = v["nodes"]
        .as_array()
        .context("nodes")?
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap_or_default().to_owned(),
                n["in_maintenance"].as_bool().unwrap_or_default(),
                n["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    ensure!(
        flags
            == [
                ("a".to_owned(), true, "online".to_owned()),
                ("b".to_owned(), false, "offline".to_owned())
            ],
        "{flags:?}"
    );
    let v = h.get("/api/v1/networks/village/maintenance").await?;
    ensure!(v["windows"].as_array().is_some_and(|a| a.len() == 1), "{v}");
    let (s, _) = post(
        "/api/v1/networks/village/maintenance",
        json!({"node":"zz","duration":"1h"}),
    )
    .await?;
    ensure!(s == 404, "{s}");
    let (s, _) = post("/api/v1/networks/village/maintenance", json!({"node":"a"})).await?;
    ensure!(s == 400, "{s}");
    let path = format!("/api/v1/networks/village/maintenance/{}", w["id"]);
    let (s, _) = h.send(Method::DELETE, &path, None).await?;
    ensure!(s == 204, "{s}");
    let (s, _) = h.send(Method::DELETE, &path, None).await?;
    ensure!(s == 404, "{s}");

    // New and lost lists, and the state history.
    let v = h.get("/api/v1/networks/village/nodes/new?days=1").await?;
    ensure!(v["nodes"].as_array().is_some_and(|a| a.len() == 2), "{v}");
    let v = h
        .get("/api/v1/networks/village/nodes/lost?min=10m&max=1d")
        .await?;
    let lost: Vec<&str> = v["nodes"]
        .as_array()
        .context("nodes")?
        .iter()
        .filter_map(|n| n["node"].as_str())
        .collect();
    ensure!(lost == ["b"], "{v}");
    let (s, _) = h
        .send(
            Method::GET,
            "/api/v1/networks/village/nodes/lost?min=2d&max=1d",
            None,
        )
        .await?;
    ensure!(s == 400, "{s}");
    let v = h.get("/api/v1/networks/village/nodes/b/states").await?;
    ensure!(v["states"][0]["state"] == "offline", "{v}");

    // Empty topology of a network without links; unknown networks are 404.
    let g = h.get("/api/v1/networks/village/topology").await?;
    check_netjson(&g)?;
    ensure!(g["links"].as_array().is_some_and(Vec::is_empty));
    let (s, _) = h
        .send(Method::GET, "/api/v1/networks/nowhere/topology", None)
        .await?;
    ensure!(s == 404, "{s}");
    let (s, _) = h
        .send(
            Method::GET,
            "/api/v1/networks/village/topology?all=maybe",
            None,
        )
        .await?;
    ensure!(s == 400, "{s}");
    h.controller.shutdown().await;
    Ok(())
}

#[test]
fn flapping_is_configurable() -> Result<()> {
    let layer = Layer::from_toml(
        "flap_transitions = 6\nflap_window = \"10m\"\nflap_quiet = \"1h\"\n",
        std::path::Path::new("m.toml"),
    )?;
    let c = Config::resolve(&layer, None)?;
    ensure!(c.flap.transitions == 6);
    ensure!(c.flap.window_ms == 600_000 && c.flap.quiet_ms == 3_600_000);
    let bad = Layer {
        flap_transitions: Some(1),
        ..Layer::default()
    };
    let e = Config::resolve(&bad, None).unwrap_err().to_string();
    ensure!(e.contains("--flap-transitions"), "{e}");
    Ok(())
}
