//! Who may do what, over real HTTP against the whole controller in-process,
//! on SQLite and (when `MESHTABLE_TEST_DATABASE_URL` is set) PostgreSQL.
//!
//! The matrix: every role × every endpoint × (own network, another existing
//! network, a network that does not exist), with the exact status written
//! down as data. Then: funders see no node names or addresses, tokens
//! expire and can be revoked, forms and cookie-authenticated API calls need
//! the CSRF token, session cookies carry their flags, logins are rate
//! limited, and all of it lands in the audit log.

use std::io::Write as _;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use meshtable::auth::{self, Role, TokenScope};
use meshtable::config::{Config, Layer};
use meshtable::ingest::now_ms;
use meshtable::serve::{Controller, Listeners};
use meshtable_proto::examples;
use meshtable_store::Store;
use meshtable_store::accounts::NewToken;
use reqwest::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[path = "../../crates/store/tests/common/pg_url.rs"]
mod pg_url;

/// The caller's own network, another one that exists, one that does not.
const OWN: &str = "north";
const OTHER: &str = "south";
const MISSING: &str = "nowhere";

/// The node of each network (`MISSING` has none; its id is used anyway).
fn node_of(network: &str) -> String {
    format!("{network}-node")
}

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    Superadmin,
    Role(Role),
}

/// One endpoint: method, path template (`{net}`, `{node}`), JSON body.
struct Endpoint {
    method: Method,
    path: &'static str,
    body: Option<Value>,
    /// Expected status without credentials: 401 (API), 303 to the login page (web).
    anonymous: u16,
    /// Expected status in the caller's own network, by role:
    /// admin, operator, trainer, funder, viewer.
    own: [u16; 5],
}

/// The table. For another existing network and for a missing one every
/// role gets 404 (existence is never leaked); a superadmin gets what an
/// admin gets in both existing networks and 404 in the missing one;
/// anonymous gets 401 from the API and is sent to the login page by pages.
#[rustfmt::skip]
fn endpoints() -> Vec<Endpoint> {
    let e = |method: Method, path: &'static str, body: Option<Value>, own: [u16; 5]| Endpoint {
        anonymous: if path.starts_with("/api/") { 401 } else { 303 },
        method,
        path,
        body,
        own,
    };
    let get = Method::GET;
    vec![
        //                                                                           admin operator trainer funder viewer
        e(get.clone(), "/api/v1/networks/{net}/summary", None,                       [200, 200, 200, 200, 200]),
        e(get.clone(), "/api/v1/nodes?network={net}", None,                          [200, 200, 200, 403, 200]),
        e(get.clone(), "/api/v1/nodes/{node}?network={net}", None,                   [200, 200, 200, 403, 200]),
        e(get.clone(), "/api/v1/nodes/{node}/series?network={net}&metric=load1", None, [200, 200, 200, 403, 200]),
        e(get.clone(), "/api/v1/networks/{net}/roles", None,                         [200, 403, 403, 403, 403]),
        e(Method::PUT, "/api/v1/networks/{net}/roles/spare", Some(json!({"role": "viewer"})),
                                                                                     [204, 403, 403, 403, 403]),
        e(get.clone(), "/api/v1/audit?network={net}", None,                          [200, 403, 403, 403, 403]),
        e(get.clone(), "/networks/{net}", None,                                      [200, 200, 200, 200, 200]),
        // Node identity (enroll.rs).
        e(get.clone(), "/api/v1/networks/{net}/enrolled", None,                      [200, 200, 200, 403, 200]),
        e(get.clone(), "/api/v1/networks/{net}/enroll-tokens", None,                 [200, 200, 200, 403, 403]),
        e(Method::POST, "/api/v1/networks/{net}/enroll-tokens", Some(json!({"ttl": "1h"})),
                                                                                     [201, 201, 201, 403, 403]),
        // Liveness, sites and maintenance (liveness.rs).
        e(get.clone(), "/api/v1/networks/{net}/liveness", None,                      [200, 200, 200, 403, 200]),
        e(get.clone(), "/api/v1/networks/{net}/nodes/new", None,                     [200, 200, 200, 403, 200]),
        e(get.clone(), "/api/v1/networks/{net}/nodes/lost", None,                    [200, 200, 200, 403, 200]),
        e(get.clone(), "/api/v1/networks/{net}/nodes/{node}/states", None,           [200, 200, 200, 403, 200]),
        e(get.clone(), "/api/v1/networks/{net}/nodes/{node}/mesh", None,             [200, 200, 200, 403, 200]),
        e(get.clone(), "/api/v1/networks/{net}/maintenance", None,                   [200, 200, 200, 403, 200]),
        e(get.clone(), "/api/v1/networks/{net}/sites", None,                         [200, 200, 200, 403, 200]),
        // Topology (topology.rs).
        e(get.clone(), "/api/v1/networks/{net}/topology", None,                      [200, 200, 200, 403, 200]),
        e(get.clone(), "/api/v1/networks/{net}/meshviewer.json", None,               [200, 200, 200, 403, 200]),
        e(get,         "/api/v1/networks/{net}/links", None,                         [200, 200, 200, 403, 200]),
    ]
}

fn role_index(r: Role) -> usize {
    Role::ALL.iter().position(|x| *x == r).unwrap()
}

/// The status `who` must get from `ep` in `network`.
fn expected(who: Who, ep: &Endpoint, network: &str) -> u16 {
    match who {
        Who::Anonymous => ep.anonymous,
        Who::Superadmin if network == MISSING => 404,
        Who::Superadmin => ep.own[0],
        Who::Role(r) if network == OWN => ep.own[role_index(r)],
        Who::Role(_) => 404,
    }
}

/// A database for one run: a SQLite file, or a fresh PostgreSQL database
/// (made and dropped with psql).
struct Db {
    url: String,
    pg: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Db {
    fn sqlite() -> Result<Db> {
        let dir = tempfile::tempdir()?;
        Ok(Db {
            url: format!("sqlite://{}/meshtable.db", dir.path().display()),
            pg: None,
            _dir: dir,
        })
    }

    fn postgres(admin_url: &str) -> Result<Db> {
        let name = format!("meshtable_authz_{:016x}", rand::random::<u64>());
        psql(admin_url, &format!("CREATE DATABASE {name}"))?;
        Ok(Db {
            url: pg_url::with_database(admin_url, &name),
            pg: Some((admin_url.to_owned(), name)),
            _dir: tempfile::tempdir()?,
        })
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.pg {
            let _ = psql(
                admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

fn psql(url: &str, sql: &str) -> Result<()> {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .context("run psql")?;
    ensure!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Runs `body` on SQLite, then on PostgreSQL when configured.
async fn each_database<F, Fut>(body: F) -> Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let db = Db::sqlite()?;
    body(db.url.clone()).await.context("on sqlite")?;
    match std::env::var("MESHTABLE_TEST_DATABASE_URL") {
        Ok(admin) if !admin.is_empty() => {
            let db = Db::postgres(&admin)?;
            body(db.url.clone()).await.context("on postgresql")?;
        }
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "authz: MESHTABLE_TEST_DATABASE_URL not set, PostgreSQL variant skipped"
            );
        }
    }
    Ok(())
}

struct Setup {
    controller: Controller,
    http: reqwest::Client,
    /// API tokens: the superadmin's, then one per role (own network only).
    superadmin: String,
    by_role: Vec<(Role, String)>,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(database_url: &str) -> Result<Setup> {
        // reqwest is built without a default TLS provider: name one, once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir()?;
        let layer = Layer {
            listen: Some("127.0.0.1:0".parse()?),
            mqtt_listen: Some("127.0.0.1:0".parse()?),
            data_dir: Some(dir.path().to_owned()),
            database_url: Some(database_url.to_owned()),
            ..Layer::default()
        };
        let config = Config::resolve(&layer, None)?;
        let controller = tokio::time::timeout(
            Duration::from_secs(30),
            Controller::start(&config, Listeners::bind(&config)?),
        )
        .await
        .context("controller did not get ready")??;
        ensure!(
            controller.bootstrap_password().is_some(),
            "a fresh database bootstraps a superadmin"
        );
        let store = controller.store().clone();
        seed(&store).await?;
        let superadmin = auth::superadmin_token(&store, "authz")
            .await?
            .expose()
            .to_owned();
        let mut by_role = Vec::new();
        for role in Role::ALL {
            let (account, _) = auth::add_user(&store, &format!("{role}-1"), None, false).await?;
            store
                .grant_role(account.id, OWN, role.as_str(), now_ms())
                .await?;
            let t = auth::issue_token(
                &store,
                &account,
                &TokenScope::default(),
                Duration::from_secs(3600),
                "matrix",
            )
            .await?;
            by_role.push((role, t.token.expose().to_owned()));
        }
        auth::add_user(&store, "spare", None, false).await?;
        Ok(Setup {
            controller,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            superadmin,
            by_role,
            _dir: dir,
        })
    }

    fn token(&self, who: Who) -> Option<&str> {
        match who {
            Who::Anonymous => None,
            Who::Superadmin => Some(&self.superadmin),
            Who::Role(r) => self
                .by_role
                .iter()
                .find(|(x, _)| *x == r)
                .map(|(_, t)| t.as_str()),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.controller.http_url())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, String)> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }
}

/// Both existing networks get a node with a hello and two reports.
async fn seed(store: &Store) -> Result<()> {
    let now = now_ms();
    for net in [OWN, OTHER] {
        let node = node_of(net);
        let mut hello = examples::hello_v1();
        hello.hostname = format!("{net}-roof-router");
        store.record_hello(net, &node, &hello, now).await?;
        for seq in 1..=2u64 {
            let mut t = examples::telemetry_v1();
            t.node = node.clone();
            t.seq = seq;
            t.time_ms = u64::try_from(now).unwrap() - (3 - seq) * 10_000;
            t.uptime_ms = 1_000_000 + seq * 10_000;
            for i in &mut t.interfaces {
                i.rx_bytes += seq * 1_000_000;
                i.tx_bytes += seq * 500_000;
            }
            store.record_telemetry(net, &node, &t, now).await?;
        }
    }
    Ok(())
}

fn who_list() -> Vec<Who> {
    let mut v = vec![Who::Anonymous, Who::Superadmin];
    v.extend(Role::ALL.into_iter().map(Who::Role));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_endpoint_network_matrix() -> Result<()> {
    each_database(|url| async move {
        let s = Setup::start(&url).await?;
        let mut failures = Vec::new();
        let mut checked = 0;
        for ep in endpoints() {
            for who in who_list() {
                for network in [OWN, OTHER, MISSING] {
                    let path = ep
                        .path
                        .replace("{net}", network)
                        .replace("{node}", &node_of(network));
                    let want = expected(who, &ep, network);
                    let (got, body) = s
                        .call(ep.method.clone(), &path, s.token(who), ep.body.as_ref())
                        .await?;
                    checked += 1;
                    if got != want {
                        failures.push(format!(
                            "{who:?} {} {path}: got {got}, want {want}: {}",
                            ep.method,
                            body.chars().take(200).collect::<String>()
                        ));
                    }
                    // A 404 never says more than "unknown network".
                    if got == 404 && network != OWN && body.contains(OTHER) && network == MISSING {
                        failures.push(format!("{who:?} {path}: 404 names {OTHER}: {body}"));
                    }
                }
            }
        }
        println!("authz matrix: {checked} requests checked");
        ensure!(failures.is_empty(), "{}", failures.join("\n"));

        // The 404 for another tenant's network is word for word the 404 of
        // a network that does not exist.
        let viewer = s.token(Who::Role(Role::Viewer));
        let (_, other) = s
            .call(
                Method::GET,
                &format!("/api/v1/networks/{OTHER}/summary"),
                viewer,
                None,
            )
            .await?;
        let (_, missing) = s
            .call(
                Method::GET,
                &format!("/api/v1/networks/{MISSING}/summary"),
                viewer,
                None,
            )
            .await?;
        assert_eq!(
            other.replace(OTHER, "X"),
            missing.replace(MISSING, "X"),
            "404 bodies differ"
        );

        // Listings hold only the caller's networks.
        for who in who_list() {
            let (status, body) = s
                .call(Method::GET, "/api/v1/networks", s.token(who), None)
                .await?;
            let want: &[&str] = match who {
                Who::Anonymous => {
                    assert_eq!(status, 401, "{body}");
                    continue;
                }
                Who::Superadmin => &[OWN, OTHER],
                Who::Role(_) => &[OWN],
            };
            assert_eq!(status, 200, "{who:?}: {body}");
            let v: Value = serde_json::from_str(&body)?;
            let ids: Vec<&str> = v["networks"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|n| n["id"].as_str())
                .collect();
            assert_eq!(ids, want, "{who:?}");
            // All nodes, without ?network=: only readable networks' nodes.
            let (status, body) = s
                .call(Method::GET, "/api/v1/nodes", s.token(who), None)
                .await?;
            assert_eq!(status, 200, "{who:?}: {body}");
            let v: Value = serde_json::from_str(&body)?;
            let networks: Vec<&str> = v["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|n| n["network"].as_str())
                .collect();
            let readable: Vec<&str> = match who {
                Who::Role(Role::Funder) => vec![],
                Who::Role(_) => vec![OWN],
                _ => vec![OWN, OTHER],
            };
            assert_eq!(networks, readable, "{who:?}");
            // A node id alone finds only nodes the caller may read.
            let (status, _) = s
                .call(
                    Method::GET,
                    &format!("/api/v1/nodes/{}", node_of(OTHER)),
                    s.token(who),
                    None,
                )
                .await?;
            let want = match who {
                Who::Superadmin => 200,
                _ => 404,
            };
            assert_eq!(status, want, "{who:?} looking up another network's node");
        }
        // Web front page: nobody is sent to the login page.
        let (status, _) = s.call(Method::GET, "/", None, None).await?;
        assert_eq!(status, 303);
        s.controller.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funders_see_no_node_names_or_addresses() -> Result<()> {
    each_database(|url| async move {
        let s = Setup::start(&url).await?;
        let funder = s.token(Who::Role(Role::Funder));
        let hello = examples::hello_v1();
        let mut secrets: Vec<String> = vec![node_of(OWN), format!("{OWN}-roof-router")];
        for i in &hello.interfaces {
            secrets.extend(i.mac.clone());
            secrets.extend(
                i.addresses
                    .iter()
                    .map(|a| a.split('/').next().unwrap_or(a).to_owned()),
            );
        }
        ensure!(secrets.len() > 4, "the hello has addresses to look for");
        for path in [
            format!("/api/v1/networks/{OWN}/summary"),
            format!("/networks/{OWN}"),
            "/".to_owned(),
            "/api/v1/networks".to_owned(),
            "/api/v1/nodes".to_owned(),
            "/api/v1/me".to_owned(),
        ] {
            let (status, body) = s.call(Method::GET, &path, funder, None).await?;
            assert_eq!(status, 200, "{path}: {body}");
            for secret in &secrets {
                assert!(
                    !body.contains(secret.as_str()),
                    "{path} shows {secret}: {body}"
                );
            }
        }
        // What a funder does get: counts and traffic.
        let (_, body) = s
            .call(
                Method::GET,
                &format!("/api/v1/networks/{OWN}/summary"),
                funder,
                None,
            )
            .await?;
        let v: Value = serde_json::from_str(&body)?;
        assert_eq!(v["nodes"], 1, "{v}");
        assert_eq!(v["online"], 1, "{v}");
        assert_eq!(v["availability"], 1.0, "{v}");
        assert!(v["traffic"]["rx_bytes"].as_u64().unwrap() > 0, "{v}");
        s.controller.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_and_are_revoked() -> Result<()> {
    each_database(|url| async move {
        let s = Setup::start(&url).await?;
        let store = s.controller.store().clone();
        let path = format!("/api/v1/networks/{OWN}/summary");

        // Expired: stored with an expiry in the past.
        let viewer = store
            .credentials("viewer-1")
            .await?
            .context("viewer-1")?
            .account;
        let secret = meshtable::auth::secret::generate_token();
        let now = now_ms();
        store
            .create_token(&NewToken {
                user_id: viewer.id,
                prefix: &meshtable::auth::secret::token_prefix(secret.expose()),
                hash: &meshtable::auth::secret::sha256_hex(secret.expose()),
                label: "expired",
                network: None,
                role: None,
                created_ms: now - 7_200_000,
                expires_ms: now - 1,
            })
            .await?;
        let (status, _) = s
            .call(Method::GET, &path, Some(secret.expose()), None)
            .await?;
        assert_eq!(status, 401, "an expired token");

        // Garbage and a well-formed unknown token.
        for bad in ["nonsense", &format!("mt_{}", "0".repeat(64))] {
            let (status, _) = s.call(Method::GET, &path, Some(bad), None).await?;
            assert_eq!(status, 401, "{bad}");
        }

        // Revoked through the API, from a login session.
        let token = s.token(Who::Role(Role::Viewer)).unwrap().to_owned();
        assert_eq!(s.call(Method::GET, &path, Some(&token), None).await?.0, 200);
        let session = login(&s, "viewer-1", &set_password(&store, "viewer-1").await?).await?;
        let list = session_call(&s, &session, Method::GET, "/api/v1/tokens", None, true).await?;
        assert_eq!(list.0, 200, "{}", list.1);
        let v: Value = serde_json::from_str(&list.1)?;
        let prefix = &token[..11];
        let entry = v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["prefix"] == prefix)
            .context("the token is listed")?
            .clone();
        assert!(!list.1.contains(&token), "a listing never shows the secret");
        let id = entry["id"].as_i64().unwrap();
        let r = session_call(
            &s,
            &session,
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            None,
            true,
        )
        .await?;
        assert_eq!(r.0, 204, "{}", r.1);
        assert_eq!(s.call(Method::GET, &path, Some(&token), None).await?.0, 401);

        // Someone else's token cannot be revoked (and is not shown to exist).
        let op = s.token(Who::Role(Role::Operator)).unwrap();
        let op_id = store
            .tokens(None)
            .await?
            .into_iter()
            .find(|t| t.prefix == op[..11])
            .unwrap()
            .id;
        let r = session_call(
            &s,
            &session,
            Method::DELETE,
            &format!("/api/v1/tokens/{op_id}"),
            None,
            true,
        )
        .await?;
        assert_eq!(r.0, 404, "{}", r.1);

        // A token created from the session, scoped to a role, shown once.
        let r = session_call(
            &s,
            &session,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"label": "script", "network": OWN, "role": "funder", "expires_in": "1h"})),
            true,
        )
        .await?;
        assert_eq!(r.0, 201, "{}", r.1);
        let v: Value = serde_json::from_str(&r.1)?;
        let scoped = v["token"].as_str().unwrap().to_owned();
        assert!(scoped.starts_with("mt_"));
        // Narrowed to funder: aggregates yes, nodes no.
        assert_eq!(
            s.call(Method::GET, &path, Some(&scoped), None).await?.0,
            200
        );
        let nodes = format!("/api/v1/nodes?network={OWN}");
        assert_eq!(
            s.call(Method::GET, &nodes, Some(&scoped), None).await?.0,
            403
        );
        // Tokens do not mint tokens.
        let (status, _) = s
            .call(
                Method::POST,
                "/api/v1/tokens",
                Some(&scoped),
                Some(&json!({})),
            )
            .await?;
        assert_eq!(status, 403);
        // A token for a network the user has no role in: 404.
        let r = session_call(
            &s,
            &session,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"network": OTHER})),
            true,
        )
        .await?;
        assert_eq!(r.0, 404, "{}", r.1);
        s.controller.shutdown().await;
        Ok(())
    })
    .await
}

/// A login session: cookie value and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

async fn set_password(store: &Store, user: &str) -> Result<String> {
    let password = format!("pw-{:016x}", rand::random::<u64>());
    let hash = meshtable::auth::secret::hash_password(&password)?;
    let a = store.credentials(user).await?.context("user")?.account;
    store.set_password_hash(a.id, &hash).await?;
    Ok(password)
}

fn cookie_of(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

async fn login(s: &Setup, user: &str, password: &str) -> Result<Session> {
    let resp = s
        .http
        .post(s.url("/api/v1/login"))
        .json(&json!({"user": user, "password": password}))
        .send()
        .await?;
    ensure!(resp.status() == StatusCode::OK, "login: {}", resp.status());
    let set = cookie_of(&resp, "meshtable_session").context("a session cookie")?;
    let v: Value = resp.json().await?;
    let value = set
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_owned())
        .context("cookie value")?;
    Ok(Session {
        cookie: value,
        csrf: v["csrf"].as_str().context("csrf")?.to_owned(),
    })
}

async fn session_call(
    s: &Setup,
    session: &Session,
    method: Method,
    path: &str,
    body: Option<Value>,
    with_csrf: bool,
) -> Result<(u16, String)> {
    let mut req = s
        .http
        .request(method, s.url(path))
        .header(COOKIE, format!("meshtable_session={}", session.cookie));
    if with_csrf {
        req = req.header("x-csrf-token", &session.csrf);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_csrf_and_cookie_flags() -> Result<()> {
    each_database(|url| async move {
        let s = Setup::start(&url).await?;
        let store = s.controller.store().clone();
        let password = set_password(&store, "admin-1").await?;

        // The API login sets a session cookie with its flags.
        let resp = s
            .http
            .post(s.url("/api/v1/login"))
            .json(&json!({"user": "admin-1", "password": password}))
            .send()
            .await?;
        assert_eq!(resp.status(), StatusCode::OK);
        let set = cookie_of(&resp, "meshtable_session").context("session cookie")?;
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
            assert!(set.contains(flag), "{flag} missing: {set}");
        }
        assert!(!set.contains("Secure"), "plain HTTP: {set}");
        drop(resp);
        // What a cross-site form could send is refused: JSON only.
        let r = s
            .http
            .post(s.url("/api/v1/login"))
            .header("content-type", "text/plain")
            .body(format!(r#"{{"user":"admin-1","password":"{password}"}}"#))
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(cookie_of(&r, "meshtable_session").is_none());
        let session = login(&s, "admin-1", &password).await?;

        // GET with the cookie alone works; unsafe methods need the CSRF header.
        let roles = format!("/api/v1/networks/{OWN}/roles");
        assert_eq!(
            session_call(&s, &session, Method::GET, &roles, None, false)
                .await?
                .0,
            200
        );
        let grant = format!("/api/v1/networks/{OWN}/roles/spare");
        let body = json!({"role": "operator"});
        let r = session_call(&s, &session, Method::PUT, &grant, Some(body.clone()), false).await?;
        assert_eq!(r.0, 403, "no CSRF header: {}", r.1);
        assert!(r.1.contains("CSRF"), "{}", r.1);
        let wrong = Session {
            cookie: session.cookie.clone(),
            csrf: "0".repeat(64),
        };
        let r = session_call(&s, &wrong, Method::PUT, &grant, Some(body.clone()), true).await?;
        assert_eq!(r.0, 403, "wrong CSRF header: {}", r.1);
        let r = session_call(&s, &session, Method::PUT, &grant, Some(body), true).await?;
        assert_eq!(r.0, 204, "{}", r.1);

        // Web forms: logout without the form's token is refused.
        let logout = |csrf: Option<&str>| {
            let mut form = String::new();
            if let Some(c) = csrf {
                form = format!("csrf={c}");
            }
            s.http
                .post(s.url("/logout"))
                .header(COOKIE, format!("meshtable_session={}", session.cookie))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
        };
        assert_eq!(logout(None).await?.status(), StatusCode::FORBIDDEN);
        assert_eq!(logout(Some("abc")).await?.status(), StatusCode::FORBIDDEN);
        // The page shows the logout form with the session's token.
        let page = s
            .http
            .get(s.url("/"))
            .header(COOKIE, format!("meshtable_session={}", session.cookie))
            .send()
            .await?
            .text()
            .await?;
        assert!(
            page.contains(&format!(r#"name="csrf" value="{}""#, session.csrf)),
            "{page}"
        );
        let r = logout(Some(&session.csrf)).await?;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let cleared = cookie_of(&r, "meshtable_session").context("cleared cookie")?;
        assert!(cleared.contains("Max-Age=0"), "{cleared}");
        // The session is gone.
        let (status, _) = session_call(&s, &session, Method::GET, &roles, None, false).await?;
        assert_eq!(status, 401);

        // The login form: its CSRF token must match its cookie.
        let form = s.http.get(s.url("/login")).send().await?;
        assert_eq!(form.status(), StatusCode::OK);
        let login_cookie = cookie_of(&form, "meshtable_login").context("login cookie")?;
        assert!(login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"));
        let token = login_cookie
            .split(';')
            .next()
            .and_then(|kv| kv.split_once('='))
            .map(|(_, v)| v.to_owned())
            .unwrap();
        let html = form.text().await?;
        assert!(html.contains(&format!(r#"value="{token}""#)), "{html}");
        let post = |csrf: &str, cookie: &str| {
            s.http
                .post(s.url("/login"))
                .header(COOKIE, format!("meshtable_login={cookie}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("csrf={csrf}&user=admin-1&password={password}"))
                .send()
        };
        assert_eq!(post("", &token).await?.status(), StatusCode::FORBIDDEN);
        assert_eq!(post("abc", &token).await?.status(), StatusCode::FORBIDDEN);
        let ok = post(&token, &token).await?;
        assert_eq!(ok.status(), StatusCode::SEE_OTHER);
        let set = cookie_of(&ok, "meshtable_session").context("session cookie from the form")?;
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        s.controller.shutdown().await;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_rate_limited_and_audited() -> Result<()> {
    each_database(|url| async move {
        let s = Setup::start(&url).await?;
        let store = s.controller.store().clone();
        let password = set_password(&store, "operator-1").await?;
        let attempt = |pw: String| {
            s.http
                .post(s.url("/api/v1/login"))
                .json(&json!({"user": "operator-1", "password": pw}))
                .send()
        };
        assert_eq!(attempt(password.clone()).await?.status(), StatusCode::OK);
        for _ in 0..auth::LOGIN_USER_BURST {
            assert_eq!(
                attempt("wrong-password".to_owned()).await?.status(),
                StatusCode::UNAUTHORIZED
            );
        }
        // Now even the right password waits.
        let r = attempt(password.clone()).await?;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(r.headers().contains_key("retry-after"));
        // Another user from the same address is not locked out.
        let other = set_password(&store, "viewer-1").await?;
        let r = s
            .http
            .post(s.url("/api/v1/login"))
            .json(&json!({"user": "viewer-1", "password": other}))
            .send()
            .await?;
        assert_eq!(r.status(), StatusCode::OK);

        // The audit log: controller-wide for the superadmin only.
        let (status, body) = s
            .call(
                Method::GET,
                "/api/v1/audit?limit=1000",
                Some(&s.superadmin),
                None,
            )
            .await?;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body)?;
        let entries = v["entries"].as_array().unwrap();
        let count = |action: &str, outcome: &str| {
            entries
                .iter()
                .filter(|e| {
                    e["action"] == action && e["outcome"] == outcome && e["target"] == "operator-1"
                })
                .count()
        };
        assert_eq!(count("login", "ok"), 1, "{body}");
        assert_eq!(
            count("login", "failed"),
            auth::LOGIN_USER_BURST as usize,
            "{body}"
        );
        assert_eq!(count("login", "rate_limited"), 1, "{body}");
        assert!(
            entries
                .iter()
                .all(|e| e["source"] == "127.0.0.1" || e["source"].is_null())
        );
        assert!(!body.contains(&password), "the audit log holds no password");
        let admin = s.token(Who::Role(Role::Admin));
        let (status, _) = s.call(Method::GET, "/api/v1/audit", admin, None).await?;
        assert_eq!(
            status, 403,
            "a network admin reads their network's log only"
        );
        // A role change is in the network's log.
        let (status, _) = s
            .call(
                Method::PUT,
                &format!("/api/v1/networks/{OWN}/roles/spare"),
                admin,
                Some(&json!({"role": "trainer"})),
            )
            .await?;
        assert_eq!(status, 204);
        let (_, body) = s
            .call(
                Method::GET,
                &format!("/api/v1/audit?network={OWN}"),
                admin,
                None,
            )
            .await?;
        let v: Value = serde_json::from_str(&body)?;
        let first = &v["entries"][0];
        assert_eq!(first["action"], "role.grant", "{body}");
        assert_eq!(first["target"], "spare as trainer", "{body}");
        assert!(
            first["actor"]
                .as_str()
                .unwrap()
                .starts_with("admin-1 (token mt_"),
            "{body}"
        );
        s.controller.shutdown().await;
        Ok(())
    })
    .await
}

/// `/metrics` is open by default and, with `--metrics-token-file`, needs
/// that bearer token; `/healthz` stays open either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_token_when_configured() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("metrics.token");
    let token = "metrics-scraper-secret-0123456789";
    std::fs::write(&token_file, format!("{token}\n"))?;
    let layer = Layer {
        listen: Some("127.0.0.1:0".parse()?),
        mqtt_listen: Some("127.0.0.1:0".parse()?),
        data_dir: Some(dir.path().to_owned()),
        metrics_token_file: Some(token_file),
        ..Layer::default()
    };
    let config = Config::resolve(&layer, None)?;
    let controller = Controller::start(&config, Listeners::bind(&config)?).await?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", controller.http_url());
    let get = |p: &str, bearer: Option<&str>| {
        let mut r = http.get(url(p));
        if let Some(b) = bearer {
            r = r.header(AUTHORIZATION, format!("Bearer {b}"));
        }
        r.send()
    };
    assert_eq!(
        get("/metrics", None).await?.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get("/metrics", Some("wrong")).await?.status(),
        StatusCode::UNAUTHORIZED
    );
    let ok = get("/metrics", Some(token)).await?;
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(ok.text().await?.contains("meshtable_"));
    assert_eq!(get("/healthz", None).await?.status(), StatusCode::OK);
    controller.shutdown().await;

    // Unreadable or too short: the controller refuses to start.
    let short = dir.path().join("short.token");
    std::fs::write(&short, "abc")?;
    let dir2 = tempfile::tempdir()?;
    let layer = Layer {
        listen: Some("127.0.0.1:0".parse()?),
        mqtt_listen: Some("127.0.0.1:0".parse()?),
        data_dir: Some(dir2.path().to_owned()),
        metrics_token_file: Some(short),
        ..Layer::default()
    };
    let config = Config::resolve(&layer, None)?;
    let err = Controller::start(&config, Listeners::bind(&config)?)
        .await
        .err()
        .context("a short metrics token is refused")?;
    assert!(err.to_string().contains("at least 16"), "{err}");
    Ok(())
}
