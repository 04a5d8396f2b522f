//! Who may do what, over real HTTP against the whole controller in-process,
//! on SQLite and (when `MESHTABLE_TEST_DATABASE_URL` is set) PostgreSQL.
//!
//! The matrix: every route and page the controller serves × every caller
//! (anonymous; the superadmin and each role, by API token and by session
//! cookie; an admin session that never sends its CSRF token) × (own
//! network, another existing network, a network that does not exist), with
//! the exact status written down as data. Each write acts on an object made
//! for that request alone (an account, a token, a window, an alert...), so
//! the requests run at once in any order; afterwards the store must show
//! the effect of every accepted write and of no refused one. Every 2xx a
//! funder gets is searched for node ids, names, MACs and addresses.
//!
//! Then: funders see no node names or addresses, tokens expire and can be
//! revoked, enrollment tokens can be revoked and only name sites of their
//! network, forms and cookie-authenticated API calls need the CSRF token,
//! session cookies carry their flags, logins are rate limited, and all of
//! it lands in the audit log.

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
use meshtable_store::alerts::{AlertState, Condition};
use meshtable_store::liveness::{MaintenanceCreated, MaintenanceTarget, NewMaintenance};
use meshtable_store::registry::{NewEnrollToken, NewNodeKey};
use reqwest::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[path = "../../crates/store/tests/common/pg_url.rs"]
mod pg_url;
#[path = "common/start.rs"]
mod start;

use start::start_controller;

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

/// How a matrix caller proves who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `Authorization: Bearer mt_...`.
    Token,
    /// The session cookie, with the session's CSRF token on every request
    /// (header, and the `csrf` field of forms).
    Session,
}

/// A caller of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asker {
    Anonymous,
    Superadmin(Via),
    Role(Role, Via),
    /// `admin-1`'s session that never sends the CSRF token.
    NoCsrf,
}

impl Asker {
    fn all() -> Vec<Asker> {
        let mut v = vec![
            Asker::Anonymous,
            Asker::Superadmin(Via::Token),
            Asker::Superadmin(Via::Session),
        ];
        for via in [Via::Token, Via::Session] {
            v.extend(Role::ALL.into_iter().map(|r| Asker::Role(r, via)));
        }
        v.push(Asker::NoCsrf);
        v
    }

    /// The account behind the caller.
    fn account(self) -> Option<String> {
        match self {
            Asker::Anonymous => None,
            Asker::Superadmin(_) => Some(auth::BOOTSTRAP_USER.to_owned()),
            Asker::Role(r, _) => Some(format!("{r}-1")),
            Asker::NoCsrf => Some("admin-1".to_owned()),
        }
    }

    fn by_session(self) -> bool {
        matches!(
            self,
            Asker::Superadmin(Via::Session) | Asker::Role(_, Via::Session) | Asker::NoCsrf
        )
    }

    fn by_token(self) -> bool {
        matches!(
            self,
            Asker::Superadmin(Via::Token) | Asker::Role(_, Via::Token)
        )
    }
}

/// What a request needs made just for it, so that every request acts on
/// an object of its own and the order of requests does not matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    /// A fresh account with the funder role in the network (a member
    /// its admin may name in a grant): `{user}`.
    User,
    /// A fresh account with the viewer role in the network: `{user}`.
    UserWithRole,
    /// A fresh unused enrollment token of the network: `{id}`.
    EnrollToken,
    /// A fresh enrolled node of the network: `{id}`.
    EnrolledNode,
    /// A fresh maintenance window on the network's node: `{id}`.
    Window,
    /// A fresh firing alert of the network: `{id}`.
    Alert,
    /// A fresh node (a hello) in the network: `{id}`.
    FreshNode,
    /// A fresh API token of the caller's own account (`spare`'s for
    /// anonymous): `{id}`.
    OwnToken,
    /// A fresh API token of another account (`spare`): `{id}`.
    OthersToken,
    /// A session caller uses a fresh session of its account instead of
    /// its own (the request ends it).
    FreshSession,
    /// A fresh enrollment token of `OWN` and a fresh router key:
    /// `{token}`, `{key}`.
    Router,
    /// The login form's double-submit cookie and field: `{login_csrf}`.
    LoginForm,
    /// A fresh node reporting links: `{id}` to `{to}`.
    FreshLink,
    /// The same with an operator's reference set on the link.
    FreshLinkWithReference,
}

/// What a successful request must have done (and a refused one must not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eff {
    None,
    RoleGranted,
    RoleRevoked,
    EnrollTokenMade,
    EnrollTokenRevoked,
    NodeRevoked,
    WindowMade,
    WindowDeleted,
    AlertAcked,
    SettingsSaved,
    SiteMade,
    NodeInSite,
    ApiTokenMade,
    ApiTokenRevoked,
    NetworkMade,
    UserMade,
    SessionEnded,
    SessionCookie,
    RouterEnrolled,
    ReferenceSet,
    ReferenceCleared,
}

/// A request body template.
#[derive(Debug, Clone, Copy)]
enum Body {
    None,
    Json(&'static str),
    Form(&'static str),
}

/// One endpoint of the matrix: method, path and body templates
/// (`{net}`, `{node}`, `{link}`, `{id}`, `{user}`, `{n}`, `{csrf}`...),
/// what it needs, what it does, and the status of each caller.
#[derive(Debug, Clone)]
struct Endpoint {
    method: Method,
    path: &'static str,
    body: Body,
    need: Need,
    effect: Eff,
    /// Status without credentials: 401 (API), 303 to the login page (web).
    anonymous: u16,
    /// Status in the caller's own network (or at a controller-wide
    /// endpoint), by role: admin, operator, trainer, funder, viewer.
    own: [u16; 5],
    /// A superadmin's status in both existing networks (404 in the missing one).
    superadmin: u16,
    /// Any API token caller's status, whatever the network (endpoints
    /// that need a login session).
    by_token: Option<u16>,
    /// Whether a session caller must send the CSRF token.
    csrf: bool,
}

impl Endpoint {
    fn new(method: Method, path: &'static str, body: Body, own: [u16; 5]) -> Endpoint {
        let api = path.starts_with("/api/");
        Endpoint {
            csrf: method != Method::GET && api,
            method,
            path,
            body,
            need: Need::Nothing,
            effect: Eff::None,
            anonymous: if api { 401 } else { 303 },
            own,
            superadmin: own[0],
            by_token: None,
        }
    }
    fn need(mut self, n: Need) -> Endpoint {
        self.need = n;
        self
    }
    fn effect(mut self, e: Eff) -> Endpoint {
        self.effect = e;
        self
    }
    fn anonymous(mut self, s: u16) -> Endpoint {
        self.anonymous = s;
        self
    }
    fn superadmin(mut self, s: u16) -> Endpoint {
        self.superadmin = s;
        self
    }
    fn by_token(mut self, s: u16) -> Endpoint {
        self.by_token = Some(s);
        self
    }
    fn csrf(mut self, c: bool) -> Endpoint {
        self.csrf = c;
        self
    }

    fn template(&self) -> String {
        let body = match self.body {
            Body::None => "",
            Body::Json(b) | Body::Form(b) => b,
        };
        format!("{} {}", self.path, body)
    }

    /// Whether the endpoint is about one network (it is asked in three).
    fn per_network(&self) -> bool {
        self.template().contains("{net}")
    }
}

/// Every route and page the controller serves. For another existing
/// network and a missing one every role gets 404 (existence is never
/// leaked); a superadmin gets `superadmin` in both existing networks and
/// 404 in the missing one; an admin session without its CSRF token gets
/// 403 from every unsafe request.
#[rustfmt::skip]
fn endpoints() -> Vec<Endpoint> {
    use Method as M;
    let e = Endpoint::new;
    const READ: [u16; 5] = [200, 200, 200, 403, 200];
    const ALL: [u16; 5] = [200, 200, 200, 200, 200];
    const ADMIN: [u16; 5] = [200, 403, 403, 403, 403];
    vec![
        // Web pages (web.rs).                                                      admin operator trainer funder viewer
        e(M::GET,  "/", Body::None,                                                 ALL),
        e(M::GET,  "/networks/{net}", Body::None,                                   ALL),
        e(M::GET,  "/networks/{net}/topology", Body::None,                          READ),
        e(M::GET,  "/networks/{net}/status", Body::None,                            READ),
        e(M::GET,  "/login", Body::None,                                            [303; 5]).anonymous(200),
        e(M::POST, "/login", Body::Form("csrf={login_csrf}&user=login-user&password={pw}"), [303; 5])
            .anonymous(303).need(Need::LoginForm).effect(Eff::SessionCookie),
        e(M::POST, "/logout", Body::Form("csrf={csrf}"),                            [303; 5])
            .csrf(true).need(Need::FreshSession).effect(Eff::SessionEnded),
        e(M::GET,  "/healthz", Body::None,                                          ALL).anonymous(200),
        e(M::GET,  "/metrics", Body::None,                                          ALL).anonymous(200),
        // Accounts, tokens, roles and the audit log (auth/api.rs).
        e(M::POST, "/api/v1/login", Body::Json(r#"{"user":"login-user","password":"{pw}"}"#), ALL)
            .anonymous(200).csrf(false).effect(Eff::SessionCookie),
        e(M::POST, "/api/v1/logout", Body::None,                                    [204; 5])
            .need(Need::FreshSession).effect(Eff::SessionEnded),
        e(M::GET,  "/api/v1/me", Body::None,                                        ALL),
        e(M::GET,  "/api/v1/tokens", Body::None,                                    ALL),
        e(M::POST, "/api/v1/tokens", Body::Json(r#"{"label":"cell-{n}","network":"{net}","expires_in":"1h"}"#), [201; 5])
            .by_token(403).effect(Eff::ApiTokenMade),
        e(M::DELETE, "/api/v1/tokens/{id}", Body::None,                             [204; 5])
            .need(Need::OwnToken).effect(Eff::ApiTokenRevoked),
        e(M::DELETE, "/api/v1/tokens/{id}", Body::None,                             [404; 5])
            .superadmin(204).need(Need::OthersToken).effect(Eff::ApiTokenRevoked),
        e(M::POST, "/api/v1/users", Body::Json(r#"{"name":"new{n}"}"#),            [403; 5])
            .superadmin(201).effect(Eff::UserMade),
        e(M::GET,  "/api/v1/networks/{net}/roles", Body::None,                      ADMIN),
        e(M::PUT,  "/api/v1/networks/{net}/roles/{user}", Body::Json(r#"{"role":"viewer"}"#), [204, 403, 403, 403, 403])
            .need(Need::User).effect(Eff::RoleGranted),
        e(M::DELETE, "/api/v1/networks/{net}/roles/{user}", Body::None,             [204, 403, 403, 403, 403])
            .need(Need::UserWithRole).effect(Eff::RoleRevoked),
        e(M::GET,  "/api/v1/audit?network={net}", Body::None,                       ADMIN),
        e(M::GET,  "/api/v1/audit", Body::None,                                     [403; 5]).superadmin(200),
        // Networks, nodes, series and summaries (api.rs).
        e(M::GET,  "/api/v1/networks", Body::None,                                  ALL),
        e(M::GET,  "/api/v1/nodes", Body::None,                                     ALL),
        e(M::GET,  "/api/v1/nodes?network={net}", Body::None,                       READ),
        e(M::GET,  "/api/v1/nodes/{node}?network={net}", Body::None,                READ),
        e(M::GET,  "/api/v1/nodes/{node}/series?network={net}&metric=load1", Body::None, READ),
        e(M::GET,  "/api/v1/networks/{net}/summary", Body::None,                    ALL),
        // Node identity (enroll.rs).
        e(M::POST, "/api/v1/networks", Body::Json(r#"{"id":"fresh{n}"}"#),          [403; 5])
            .superadmin(201).effect(Eff::NetworkMade),
        e(M::POST, "/api/v1/enroll", Body::Json(r#"{"token":"{token}","public_key":"{key}"}"#), [201; 5])
            .anonymous(201).csrf(false).need(Need::Router).effect(Eff::RouterEnrolled),
        e(M::GET,  "/api/v1/networks/{net}/enrolled", Body::None,                   READ),
        e(M::GET,  "/api/v1/networks/{net}/enroll-tokens", Body::None,              [200, 403, 200, 403, 403]),
        e(M::POST, "/api/v1/networks/{net}/enroll-tokens", Body::Json(r#"{"ttl":"1h","site":"village"}"#), [201, 403, 201, 403, 403])
            .effect(Eff::EnrollTokenMade),
        e(M::DELETE, "/api/v1/networks/{net}/enroll-tokens/{id}", Body::None,       [204, 403, 204, 403, 403])
            .need(Need::EnrollToken).effect(Eff::EnrollTokenRevoked),
        e(M::POST, "/api/v1/networks/{net}/nodes/{id}/revoke", Body::None,          [204, 204, 403, 403, 403])
            .need(Need::EnrolledNode).effect(Eff::NodeRevoked),
        // Liveness, sites and maintenance (liveness.rs).
        e(M::GET,  "/api/v1/networks/{net}/liveness", Body::None,                   READ),
        e(M::GET,  "/api/v1/networks/{net}/nodes/new", Body::None,                  READ),
        e(M::GET,  "/api/v1/networks/{net}/nodes/lost", Body::None,                 READ),
        e(M::GET,  "/api/v1/networks/{net}/nodes/{node}/states", Body::None,        READ),
        e(M::GET,  "/api/v1/networks/{net}/nodes/{node}/mesh", Body::None,          READ),
        e(M::PUT,  "/api/v1/networks/{net}/nodes/{id}/site", Body::Json(r#"{"site":"village"}"#), [204, 403, 204, 403, 403])
            .need(Need::FreshNode).effect(Eff::NodeInSite),
        e(M::GET,  "/api/v1/networks/{net}/maintenance", Body::None,                READ),
        e(M::POST, "/api/v1/networks/{net}/maintenance", Body::Json(r#"{"node":"{node}","duration":"1h","reason":"cell-{n}"}"#), [201, 201, 403, 403, 403])
            .effect(Eff::WindowMade),
        e(M::DELETE, "/api/v1/networks/{net}/maintenance/{id}", Body::None,         [204, 204, 403, 403, 403])
            .need(Need::Window).effect(Eff::WindowDeleted),
        e(M::GET,  "/api/v1/networks/{net}/sites", Body::None,                      READ),
        e(M::POST, "/api/v1/networks/{net}/sites", Body::Json(r#"{"id":"s{n}","name":"Village {n}"}"#), [201, 403, 201, 403, 403])
            .effect(Eff::SiteMade),
        e(M::GET,  "/api/v1/networks/{net}/sites/village", Body::None,              READ),
        // Topology (topology.rs).
        e(M::GET,  "/api/v1/networks/{net}/topology", Body::None,                   READ),
        e(M::GET,  "/api/v1/networks/{net}/meshviewer.json", Body::None,            READ),
        e(M::GET,  "/api/v1/networks/{net}/links", Body::None,                      READ),
        e(M::GET,  "/api/v1/networks/{net}/links/{link}/events", Body::None,        READ),
        // Link references (alerts/links.rs).
        e(M::GET,  "/api/v1/networks/{net}/links/{from}/{seed_to}/reference", Body::None, READ),
        e(M::PUT,  "/api/v1/networks/{net}/links/{id}/{to}/reference", Body::Json(r#"{"tq":180}"#), [200, 200, 403, 403, 403])
            .need(Need::FreshLink).effect(Eff::ReferenceSet),
        e(M::DELETE, "/api/v1/networks/{net}/links/{id}/{to}/reference", Body::None, [200, 200, 403, 403, 403])
            .need(Need::FreshLinkWithReference).effect(Eff::ReferenceCleared),
        // Alerts (alerts/mod.rs).
        e(M::GET,  "/api/v1/networks/{net}/alerts", Body::None,                     READ),
        e(M::POST, "/api/v1/networks/{net}/alerts/{id}/ack", Body::None,            [200, 200, 403, 403, 403])
            .need(Need::Alert).effect(Eff::AlertAcked),
        e(M::GET,  "/api/v1/networks/{net}/alert-settings", Body::None,             [200, 200, 403, 403, 403]),
        e(M::PUT,  "/api/v1/networks/{net}/alert-settings", Body::Json(r#"{"digest_seconds":{digest}}"#), [200, 200, 403, 403, 403])
            .effect(Eff::SettingsSaved),
    ]
}

/// Every `(method, path)` the controller's sources register with
/// `.route(...)`, read from `controller/src`.
fn routes_in_source() -> Result<Vec<(Method, String)>> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    )?;
    let mut routes = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            // The call's text, up to its closing parenthesis.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(i, _)| i)
                .with_context(|| format!("unclosed .route( in {}", f.display()))?;
            let call = &rest[..end];
            let path = call
                .split('"')
                .nth(1)
                .with_context(|| format!("a .route( without a path in {}", f.display()))?;
            for (name, method) in [
                ("get(", Method::GET),
                ("post(", Method::POST),
                ("put(", Method::PUT),
                ("delete(", Method::DELETE),
                ("patch(", Method::PATCH),
            ] {
                let found = call.match_indices(name).any(|(i, _)| {
                    !call[..i]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_')
                });
                if found {
                    routes.push((method, path.to_owned()));
                }
            }
        }
    }
    Ok(routes)
}

/// Whether a matrix path (`/api/v1/networks/{net}/sites/village?x=y`)
/// is an instance of a route (`/api/v1/networks/{network}/sites/{site}`).
fn instance_of(path: &str, route: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let (p, r): (Vec<&str>, Vec<&str>) = (path.split('/').collect(), route.split('/').collect());
    p.len() == r.len() && p.iter().zip(&r).all(|(p, r)| r.starts_with('{') || p == r)
}

/// The matrix leaves no route out: a route added to the controller fails
/// this test until its row is written.
#[test]
fn every_route_is_in_the_matrix() -> Result<()> {
    let routes = routes_in_source()?;
    ensure!(routes.len() >= 40, "only {} routes found", routes.len());
    let eps = endpoints();
    let missing: Vec<String> = routes
        .iter()
        .filter(|(m, r)| !eps.iter().any(|e| e.method == *m && instance_of(e.path, r)))
        .map(|(m, r)| format!("{m} {r}"))
        .collect();
    ensure!(
        missing.is_empty(),
        "routes missing from the authz matrix:\n{}",
        missing.join("\n")
    );
    println!("{} routes, all in the matrix", routes.len());
    Ok(())
}

fn role_index(r: Role) -> usize {
    Role::ALL.iter().position(|x| *x == r).unwrap()
}

/// The status `asker` must get from `ep` in `network` (`-` for a
/// controller-wide endpoint).
fn expected(asker: Asker, ep: &Endpoint, network: &str) -> u16 {
    let own = network == OWN || network == "-";
    match asker {
        Asker::Anonymous => ep.anonymous,
        Asker::NoCsrf if ep.csrf => 403,
        Asker::NoCsrf => expected(Asker::Role(Role::Admin, Via::Session), ep, network),
        a if a.by_token() && ep.by_token.is_some() => ep.by_token.unwrap_or_default(),
        Asker::Superadmin(_) if network == MISSING => 404,
        Asker::Superadmin(_) => ep.superadmin,
        Asker::Role(r, _) if own => ep.own[role_index(r)],
        Asker::Role(..) => 404,
    }
}

/// What was made for one request.
#[derive(Debug, Clone, Default)]
struct Fixture {
    /// Whether the object exists (nothing is made in the missing network).
    made: bool,
    id: String,
    user: String,
    user_id: i64,
    /// A fresh session replacing the caller's own (cookie, CSRF, id hash).
    session: Option<(Session, String)>,
    token: String,
    key: String,
    router_node: String,
    login_csrf: String,
    /// The enrollment token's expiry before the request.
    expires_ms: i64,
    /// The far end of a fresh link (`{to}`).
    to: String,
}

/// One request of the matrix.
struct Cell {
    ep: usize,
    asker: Asker,
    network: &'static str,
    n: u64,
    fx: Fixture,
    method: Method,
    path: String,
    body: Option<String>,
    want: u16,
}

/// What came back.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    body: String,
    session_cookie: bool,
}

/// The credentials of a caller: its client (bound to its own loopback
/// address, so per-address limits never mix callers), token or session.
#[derive(Clone)]
struct Cred {
    client: reqwest::Client,
    bearer: Option<String>,
    session: Option<Session>,
    send_csrf: bool,
}

/// A session made in the store for `account` (as a login would).
async fn store_session(store: &Store, account: &str) -> Result<(Session, String)> {
    let a = store
        .credentials(account)
        .await?
        .with_context(|| format!("no account {account}"))?
        .account;
    let id = auth::secret::random_hex256();
    let hash = auth::secret::sha256_hex(&id);
    let now = now_ms();
    store
        .create_session(&hash, a.id, now, now + 3_600_000)
        .await?;
    Ok((
        Session {
            csrf: auth::secret::csrf_token(&id),
            cookie: id,
        },
        hash,
    ))
}

async fn account_of(store: &Store, name: &str) -> Result<meshtable_store::accounts::Account> {
    Ok(store
        .credentials(name)
        .await?
        .with_context(|| format!("no account {name}"))?
        .account)
}

/// A fresh enrollment token of `network`: (row id, token, expiry).
async fn enroll_token(store: &Store, network: &str) -> Result<(i64, String, i64)> {
    let token = meshtable::enroll::generate_token();
    let now = now_ms();
    let expires = now + 3_600_000;
    let id = store
        .create_enroll_token(&NewEnrollToken {
            token_hash: &auth::secret::sha256_hex(&token),
            network,
            site: None,
            created_ms: now,
            expires_ms: expires,
        })
        .await?;
    Ok((id, token, expires))
}

fn router_key() -> (String, String) {
    let key = meshtable_proto::sign::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let public = key.verifying_key().to_bytes();
    (
        meshtable_proto::sign::to_hex(&public),
        meshtable::enroll::node_id_for(&public),
    )
}

impl Setup {
    /// Makes what `need` asks for in `network` for `asker`'s request `n`.
    async fn prepare(&self, need: Need, asker: Asker, network: &str, n: u64) -> Result<Fixture> {
        let store = self.controller.store();
        let exists = network != MISSING;
        let now = now_ms();
        let mut fx = Fixture {
            made: exists,
            id: "999999".to_owned(),
            ..Fixture::default()
        };
        match need {
            Need::Nothing | Need::Alert => {}
            Need::User | Need::UserWithRole => {
                fx.user = format!("user{n}");
                let a = store
                    .create_account(&fx.user, auth::secret::dummy_hash(), false, now)
                    .await?
                    .context("fresh account")?;
                fx.user_id = a.id;
                if exists {
                    // `User`: funder, so that a grant of viewer shows.
                    let role = if need == Need::UserWithRole {
                        "viewer"
                    } else {
                        "funder"
                    };
                    store.grant_role(a.id, network, role, now).await?;
                }
                fx.made = true;
            }
            Need::EnrollToken if exists => {
                let (id, _, expires) = enroll_token(store, network).await?;
                fx.id = id.to_string();
                fx.expires_ms = expires;
            }
            Need::EnrolledNode if exists => {
                let (_, token, _) = enroll_token(store, network).await?;
                let (key, _) = router_key();
                fx.id = format!("fxnode{n}");
                store
                    .enroll(
                        &auth::secret::sha256_hex(&token),
                        &NewNodeKey {
                            node: &fx.id,
                            public_key: &key,
                            mqtt_password_hash: "fixture",
                            hostname: None,
                        },
                        now,
                    )
                    .await?;
            }
            Need::Window if exists => {
                let window = NewMaintenance {
                    target: MaintenanceTarget::Node(node_of(network)),
                    start_ms: now,
                    end_ms: now + 3_600_000,
                    reason: Some("fixture".to_owned()),
                };
                match store.create_maintenance(network, &window, now).await? {
                    MaintenanceCreated::Created(m) => fx.id = m.id.to_string(),
                    MaintenanceCreated::Unknown(m) => anyhow::bail!("fixture window: {m}"),
                }
            }
            Need::FreshNode => {
                fx.id = format!("{network}-fx-{n}");
                if exists {
                    store
                        .record_hello(network, &fx.id, &examples::hello_v1(), now)
                        .await?;
                }
            }
            Need::OwnToken | Need::OthersToken => {
                let owner = match (need, asker.account()) {
                    (Need::OwnToken, Some(a)) => a,
                    _ => "spare".to_owned(),
                };
                let t = auth::issue_token(
                    store,
                    &account_of(store, &owner).await?,
                    &TokenScope::default(),
                    Duration::from_secs(3600),
                    "fixture",
                )
                .await?;
                fx.id = t.id.to_string();
                fx.made = true;
            }
            Need::FreshSession => {
                if let (true, Some(a)) = (asker.by_session(), asker.account()) {
                    fx.session = Some(store_session(store, &a).await?);
                }
                fx.made = true;
            }
            Need::Router => {
                let (_, token, _) = enroll_token(store, OWN).await?;
                let (key, node) = router_key();
                fx.token = token;
                fx.key = key;
                fx.router_node = node;
                fx.made = true;
            }
            Need::LoginForm => {
                fx.login_csrf = auth::secret::random_hex256();
                fx.made = true;
            }
            Need::FreshLink | Need::FreshLinkWithReference if exists => {
                fx.id = format!("{network}-fx-{n}");
                let net = if network == OWN { OWN } else { OTHER };
                store
                    .record_hello(network, &fx.id, &examples::hello_v1(), now)
                    .await?;
                report_links(store, network, &fx.id, 2).await?;
                fx.to = first_link(store, net, &fx.id).await?.to;
                if need == Need::FreshLinkWithReference {
                    let q = meshtable_store::alerts::LinkQuality {
                        signal_dbm: None,
                        tq: Some(200.0),
                        cost: None,
                    };
                    store
                        .set_link_reference(network, &fx.id, &fx.to, &q, "fixture", now)
                        .await?
                        .context("fixture reference")?;
                }
            }
            Need::FreshLink | Need::FreshLinkWithReference => {
                fx.id = format!("{network}-fx-{n}");
                fx.to = "nowhere-node".to_owned();
            }
            Need::EnrollToken | Need::EnrolledNode | Need::Window => {}
        }
        Ok(fx)
    }

    /// Whether the effect of `cell` is there (`None`: nothing to check).
    async fn observed(&self, eff: Eff, cell: &Cell, answer: &Answer) -> Result<Option<bool>> {
        let store = self.controller.store();
        let net = cell.network;
        let fx = &cell.fx;
        let n = cell.n;
        if !fx.made && !matches!(eff, Eff::None) {
            // Nothing was made in the missing network: nothing to change.
            return Ok(None);
        }
        Ok(Some(match eff {
            Eff::None | Eff::EnrollTokenMade | Eff::SettingsSaved => return Ok(None),
            Eff::RoleGranted => store
                .roles_of(fx.user_id)
                .await?
                .iter()
                .any(|(g, r)| g == net && r == "viewer"),
            Eff::RoleRevoked => {
                if net == MISSING {
                    return Ok(None);
                }
                !store
                    .roles_of(fx.user_id)
                    .await?
                    .iter()
                    .any(|(g, _)| g == net)
            }
            Eff::EnrollTokenRevoked => {
                store
                    .enroll_tokens(net)
                    .await?
                    .iter()
                    .find(|t| t.id.to_string() == fx.id)
                    .context("the fixture token")?
                    .expires_ms
                    != fx.expires_ms
            }
            Eff::NodeRevoked => store
                .node_key(&fx.id)
                .await?
                .context("the fixture node")?
                .revoked_ms
                .is_some(),
            Eff::WindowMade => store
                .maintenance_windows(net, i64::MIN)
                .await?
                .iter()
                .any(|w| w.reason.as_deref() == Some(format!("cell-{n}").as_str())),
            Eff::WindowDeleted => !store
                .maintenance_windows(net, i64::MIN)
                .await?
                .iter()
                .any(|w| w.id.to_string() == fx.id),
            Eff::AlertAcked => {
                store
                    .alert(net, fx.id.parse()?)
                    .await?
                    .context("the fixture alert")?
                    .state
                    == AlertState::Acknowledged
            }
            Eff::SiteMade => store.site(net, &format!("s{n}")).await?.is_some(),
            Eff::NodeInSite => store.node_site(net, &fx.id).await?.as_deref() == Some("village"),
            Eff::ApiTokenMade => store
                .tokens(None)
                .await?
                .iter()
                .any(|t| t.label == format!("cell-{n}")),
            Eff::ApiTokenRevoked => store
                .token(fx.id.parse()?)
                .await?
                .context("the fixture token")?
                .revoked_ms
                .is_some(),
            Eff::NetworkMade => store.network_known(&format!("fresh{n}")).await?,
            Eff::UserMade => store.credentials(&format!("new{n}")).await?.is_some(),
            Eff::SessionEnded => match &fx.session {
                Some((_, hash)) => store.session_account(hash, now_ms()).await?.is_none(),
                None => return Ok(None),
            },
            Eff::SessionCookie => answer.session_cookie,
            Eff::RouterEnrolled => store.node_key(&fx.router_node).await?.is_some(),
            Eff::ReferenceSet | Eff::ReferenceCleared => {
                let views = store
                    .link_references(net, &fx.id, &fx.to)
                    .await?
                    .context("the fixture link")?;
                let set = views.iter().any(|v| v.operator.is_some());
                if eff == Eff::ReferenceSet { set } else { !set }
            }
        }))
    }

    /// The credentials of every matrix caller.
    async fn creds(&self) -> Result<Vec<(Asker, Cred)>> {
        let store = self.controller.store();
        let mut out = Vec::new();
        for (i, asker) in Asker::all().into_iter().enumerate() {
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .local_address(Some(std::net::IpAddr::from([
                    127,
                    0,
                    0,
                    10 + u8::try_from(i)?,
                ])))
                .build()?;
            let session = match (asker.by_session(), asker.account()) {
                (true, Some(a)) => Some(store_session(store, &a).await?.0),
                _ => None,
            };
            let bearer = match asker {
                Asker::Superadmin(Via::Token) => Some(self.superadmin.clone()),
                Asker::Role(r, Via::Token) => self.token(Who::Role(r)).map(str::to_owned),
                _ => None,
            };
            out.push((
                asker,
                Cred {
                    client,
                    bearer,
                    session,
                    send_csrf: asker != Asker::NoCsrf,
                },
            ));
        }
        Ok(out)
    }
}

/// Sends one matrix request.
async fn send(
    base: String,
    cred: Cred,
    cell: (Method, String, Option<String>, Body, Fixture),
) -> Result<Answer> {
    let (method, path, body, kind, fx) = cell;
    let mut req = cred.client.request(method, format!("{base}{path}"));
    if let Some(t) = &cred.bearer {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    let session = fx
        .session
        .as_ref()
        .map(|(s, _)| s)
        .or(cred.session.as_ref());
    let mut cookies = Vec::new();
    if let Some(s) = session {
        cookies.push(format!("meshtable_session={}", s.cookie));
        if cred.send_csrf {
            req = req.header("x-csrf-token", &s.csrf);
        }
    }
    if !fx.login_csrf.is_empty() {
        cookies.push(format!("meshtable_login={}", fx.login_csrf));
    }
    if !cookies.is_empty() {
        req = req.header(COOKIE, cookies.join("; "));
    }
    match (kind, body) {
        (Body::Json(_), Some(b)) => {
            req = req.header("content-type", "application/json").body(b);
        }
        (Body::Form(_), Some(b)) => {
            req = req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(b);
        }
        _ => {}
    }
    let resp = req.send().await?;
    let session_cookie =
        cookie_of(&resp, "meshtable_session").is_some_and(|c| !c.contains("Max-Age=0"));
    Ok(Answer {
        status: resp.status().as_u16(),
        session_cookie,
        body: resp.text().await?,
    })
}

/// What a funder must never see: node ids and names, MAC and IP addresses.
fn funder_secrets() -> Vec<String> {
    let hello = examples::hello_v1();
    let mut secrets: Vec<String> = vec!["-fx-".to_owned(), "fxnode".to_owned()];
    for net in [OWN, OTHER] {
        secrets.push(node_of(net));
        secrets.push(format!("{net}-roof-router"));
    }
    secrets.push(hello.hostname.clone());
    for i in &hello.interfaces {
        secrets.extend(i.mac.clone());
        secrets.extend(
            i.addresses
                .iter()
                .map(|a| a.split('/').next().unwrap_or(a).to_owned()),
        );
    }
    secrets
}

/// Runs the whole matrix against `s`: every endpoint, every caller, each
/// network; returns the number of requests.
async fn run_matrix(s: &Setup) -> Result<usize> {
    let store = s.controller.store().clone();
    let creds = s.creds().await?;
    let eps = endpoints();
    // Make every fixture first, then send everything at once.
    let started = std::time::Instant::now();
    let mut cells = Vec::new();
    let mut n = 0u64;
    let mut alerts: Vec<(usize, String)> = Vec::new();
    for (i, ep) in eps.iter().enumerate() {
        let networks: &[&'static str] = if ep.per_network() {
            &[OWN, OTHER, MISSING]
        } else {
            &["-"]
        };
        for (asker, _) in &creds {
            for &network in networks {
                n += 1;
                let fx = s.prepare(ep.need, *asker, network, n).await?;
                if ep.need == Need::Alert && network != MISSING {
                    alerts.push((cells.len(), format!("cell-{n}")));
                }
                cells.push(Cell {
                    ep: i,
                    asker: *asker,
                    network,
                    n,
                    fx,
                    method: ep.method.clone(),
                    path: String::new(),
                    body: None,
                    want: expected(*asker, ep, network),
                });
            }
        }
    }
    // Alerts: one reconcile per network with every fixture's condition.
    for net in [OWN, OTHER] {
        let conditions: Vec<Condition> = alerts
            .iter()
            .filter(|(c, _)| cells[*c].network == net)
            .map(|(_, subject)| Condition {
                rule: "node_down".to_owned(),
                subject: subject.clone(),
                site: None,
                message: format!("{subject} is down"),
                value: None,
                hold_ms: 0,
            })
            .collect();
        store.reconcile_alerts(net, &conditions, now_ms()).await?;
        let open = store.alerts(net, false, false).await?;
        for (c, subject) in &alerts {
            if cells[*c].network == net {
                let a = open
                    .iter()
                    .find(|a| &a.subject == subject)
                    .context("fixture alert")?;
                cells[*c].fx.id = a.id.to_string();
            }
        }
    }
    let links = s.links.clone();
    for cell in &mut cells {
        let ep = &eps[cell.ep];
        let cred = &creds.iter().find(|(a, _)| *a == cell.asker).unwrap().1;
        let csrf = match (&cell.fx.session, &cred.session) {
            _ if !cred.send_csrf => String::new(),
            (Some((s, _)), _) | (None, Some(s)) => s.csrf.clone(),
            (None, None) => String::new(),
        };
        let seed = links.iter().find(|l| l.network == cell.network);
        let fill = |t: &str| {
            t.replace("{net}", cell.network)
                .replace("{node}", &node_of(cell.network))
                .replace("{link}", &seed.map_or("1".to_owned(), |l| l.id.to_string()))
                .replace(
                    "{from}",
                    &seed.map_or(node_of(cell.network), |l| l.from.clone()),
                )
                .replace("{to}", &cell.fx.to)
                .replace(
                    "{seed_to}",
                    &seed.map_or("nowhere-node".to_owned(), |l| l.to.clone()),
                )
                .replace("{id}", &cell.fx.id)
                .replace("{user}", &cell.fx.user)
                .replace("{n}", &cell.n.to_string())
                .replace("{digest}", &(600 + cell.n).to_string())
                .replace("{csrf}", &csrf)
                .replace("{token}", &cell.fx.token)
                .replace("{key}", &cell.fx.key)
                .replace("{login_csrf}", &cell.fx.login_csrf)
                .replace("{pw}", &s.login_password)
        };
        cell.path = fill(ep.path);
        cell.body = match ep.body {
            Body::None => None,
            Body::Json(b) | Body::Form(b) => Some(fill(b)),
        };
    }
    // What is counted, not named: enrollment tokens and alert settings.
    let mut tokens_before = Vec::new();
    for net in [OWN, OTHER] {
        tokens_before.push(store.enroll_tokens(net).await?.len());
    }

    let prepared = started.elapsed();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    let mut set = tokio::task::JoinSet::new();
    let base = s.controller.http_url().to_string();
    for (i, cell) in cells.iter().enumerate() {
        let cred = creds
            .iter()
            .find(|(a, _)| *a == cell.asker)
            .unwrap()
            .1
            .clone();
        let job = (
            cell.method.clone(),
            cell.path.clone(),
            cell.body.clone(),
            eps[cell.ep].body,
            cell.fx.clone(),
        );
        let base = base.clone();
        let limit = limit.clone();
        set.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            Ok::<_, anyhow::Error>((i, send(base, cred, job).await?))
        });
    }
    let mut answers: Vec<Option<Answer>> = vec![None; cells.len()];
    while let Some(r) = set.join_next().await {
        let (i, a) = r??;
        answers[i] = Some(a);
    }

    let sent = started.elapsed();
    let secrets = funder_secrets();
    let mut failures = Vec::new();
    for (cell, answer) in cells.iter().zip(&answers) {
        let answer = answer.as_ref().context("every request answered")?;
        let ep = &eps[cell.ep];
        let what = format!(
            "{:?} {} {} [{}]",
            cell.asker, cell.method, cell.path, cell.network
        );
        if answer.status != cell.want {
            failures.push(format!(
                "{what}: got {}, want {}: {}",
                answer.status,
                cell.want,
                answer.body.chars().take(200).collect::<String>()
            ));
        }
        // A 404 never names another tenant's network.
        if answer.status == 404 && cell.network == MISSING && answer.body.contains(OTHER) {
            failures.push(format!("{what}: 404 names {OTHER}: {}", answer.body));
        }
        if matches!(cell.asker, Asker::Role(Role::Funder, _)) && (200..300).contains(&answer.status)
        {
            for secret in &secrets {
                if answer.body.contains(secret.as_str()) {
                    failures.push(format!("{what}: a funder sees {secret}"));
                }
            }
        }
        let success = (200..400).contains(&answer.status);
        if let Some(seen) = s.observed(ep.effect, cell, answer).await?
            && seen != success
        {
            failures.push(format!(
                "{what}: status {} but the effect {:?} is {}",
                answer.status,
                ep.effect,
                if seen { "there" } else { "missing" }
            ));
        }
    }
    for (k, net) in [OWN, OTHER].into_iter().enumerate() {
        let ok = |eff: Eff| {
            cells
                .iter()
                .zip(&answers)
                .filter(|(c, a)| {
                    eps[c.ep].effect == eff
                        && c.network == net
                        && a.as_ref().is_some_and(|a| (200..300).contains(&a.status))
                })
                .map(|(c, _)| c.n)
                .collect::<Vec<_>>()
        };
        let made = store.enroll_tokens(net).await?.len() - tokens_before[k];
        if made != ok(Eff::EnrollTokenMade).len() {
            failures.push(format!(
                "{net}: {made} enrollment tokens made, {} requests succeeded",
                ok(Eff::EnrollTokenMade).len()
            ));
        }
        let digest = store.alert_settings(net).await?.digest_ms / 1000;
        let saved = ok(Eff::SettingsSaved);
        if saved.is_empty()
            || !saved
                .iter()
                .any(|n| i64::try_from(600 + n).ok() == Some(digest))
        {
            failures.push(format!(
                "{net}: digest {digest} s is none of the accepted settings {saved:?}"
            ));
        }
    }
    println!(
        "authz matrix: fixtures {} ms, requests {} ms, checks {} ms",
        prepared.as_millis(),
        (sent - prepared).as_millis(),
        (started.elapsed() - sent).as_millis()
    );
    ensure!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(cells.len())
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
    /// The password of `login-user`, who has no role.
    login_password: String,
    /// A link id of each existing network.
    links: Vec<SeedLink>,
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
            // No sweep during a test: the alerts and nodes made for the
            // matrix stay as they were made.
            sweep_interval: Some(Duration::from_secs(3600)),
            alert_interval: Some(Duration::from_secs(3600)),
            ..Layer::default()
        };
        let controller = start_controller(&layer).await?;
        ensure!(
            controller.bootstrap_password().is_some(),
            "a fresh database bootstraps a superadmin"
        );
        let store = controller.store().clone();
        let links = seed(&store).await?;
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
        // A member of the own network (funder), whose role its admin may change.
        let (spare, _) = auth::add_user(&store, "spare", None, false).await?;
        store.grant_role(spare.id, OWN, "funder", now_ms()).await?;
        let login_password = format!("pw-{:016x}", rand::random::<u64>());
        auth::add_user(
            &store,
            "login-user",
            Some(&auth::Secret::new(login_password.clone())),
            false,
        )
        .await?;
        Ok(Setup {
            controller,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            superadmin,
            by_role,
            login_password,
            links,
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

/// Both existing networks get a node with a hello and two reports with
/// mesh neighbours (so links), and a site `village`; answers a link id of each.
/// A link direction of the seed: its network, id, reporter and far end
/// (node id, or address when not joined).
#[derive(Debug, Clone)]
struct SeedLink {
    network: &'static str,
    id: i64,
    from: String,
    to: String,
}

/// The first link direction `node` reports in `network`.
async fn first_link(store: &Store, network: &'static str, node: &str) -> Result<SeedLink> {
    let graph = store.topology(network, true).await?.context("a graph")?;
    let link = graph
        .links
        .iter()
        .find(|l| l.source == node)
        .with_context(|| format!("{node} reports no link"))?;
    Ok(SeedLink {
        network,
        id: link.id,
        from: node.to_owned(),
        to: link
            .target
            .node
            .clone()
            .unwrap_or_else(|| link.target.address.clone()),
    })
}

/// Records a report with mesh neighbours (so links) of `node`.
async fn report_links(store: &Store, network: &str, node: &str, seq: u64) -> Result<()> {
    let now = now_ms();
    let mut t = examples::telemetry_mesh_v1();
    t.node = node.to_owned();
    t.seq = seq;
    t.time_ms = u64::try_from(now).unwrap() - (3 - seq) * 10_000;
    t.uptime_ms = 1_000_000 + seq * 10_000;
    for i in &mut t.interfaces {
        i.rx_bytes += seq * 1_000_000;
        i.tx_bytes += seq * 500_000;
    }
    store.record_telemetry(network, node, &t, now).await?;
    Ok(())
}

async fn seed(store: &Store) -> Result<Vec<SeedLink>> {
    let now = now_ms();
    let mut links = Vec::new();
    for net in [OWN, OTHER] {
        let node = node_of(net);
        let mut hello = examples::hello_v1();
        hello.hostname = format!("{net}-roof-router");
        store.record_hello(net, &node, &hello, now).await?;
        for seq in 1..=2u64 {
            report_links(store, net, &node, seq).await?;
        }
        store
            .create_site(net, "village", "Village", None, now)
            .await?;
        links.push(first_link(store, net, &node).await?);
    }
    Ok(links)
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

        // Last, as it adds nodes and networks: the matrix.
        let started = std::time::Instant::now();
        let checked = run_matrix(&s).await?;
        println!(
            "authz matrix: {} endpoints, {} callers, {checked} requests checked in {} ms",
            endpoints().len(),
            Asker::all().len(),
            started.elapsed().as_millis()
        );

        // A network without nodes yet has its page and summary, with zeros,
        // for those with a role in it (and is 404 to the others).
        let (status, body) = s
            .call(
                Method::POST,
                "/api/v1/networks",
                Some(&s.superadmin),
                Some(&json!({"id": "empty"})),
            )
            .await?;
        assert_eq!(status, 201, "{body}");
        let store = s.controller.store();
        let trainer = store.credentials("trainer-1").await?.context("trainer")?;
        store
            .grant_role(trainer.account.id, "empty", "trainer", now_ms())
            .await?;
        for path in ["/networks/empty", "/api/v1/networks/empty/summary"] {
            let (status, body) = s
                .call(Method::GET, path, s.token(Who::Role(Role::Trainer)), None)
                .await?;
            assert_eq!(status, 200, "{path}: {body}");
            assert!(body.contains("empty"), "{path}: {body}");
            let (status, _) = s
                .call(Method::GET, path, s.token(Who::Role(Role::Viewer)), None)
                .await?;
            assert_eq!(status, 404, "{path}");
        }
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
        // A narrowed token sees and revokes only itself, not its owner's
        // other tokens (their scopes name the owner's other networks).
        let r = session_call(
            &s,
            &session,
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"label": "laptop", "expires_in": "1h"})),
            true,
        )
        .await?;
        assert_eq!(r.0, 201, "{}", r.1);
        let laptop: Value = serde_json::from_str(&r.1)?;
        let (status, body) = s
            .call(Method::GET, "/api/v1/tokens", Some(&scoped), None)
            .await?;
        assert_eq!(status, 200, "{body}");
        let listed: Value = serde_json::from_str(&body)?;
        let labels: Vec<&str> = listed["tokens"]
            .as_array()
            .context("tokens")?
            .iter()
            .filter_map(|t| t["label"].as_str())
            .collect();
        assert_eq!(labels, ["script"], "{body}");
        let (status, _) = s
            .call(
                Method::DELETE,
                &format!("/api/v1/tokens/{}", laptop["id"]),
                Some(&scoped),
                None,
            )
            .await?;
        assert_eq!(
            status, 404,
            "a narrowed token revoking its owner's other token"
        );
        let laptop_token = laptop["token"].as_str().context("token")?;
        assert_eq!(
            s.call(Method::GET, &path, Some(laptop_token), None)
                .await?
                .0,
            200
        );
        let (status, _) = s
            .call(
                Method::DELETE,
                &format!("/api/v1/tokens/{}", v["id"]),
                Some(&scoped),
                None,
            )
            .await?;
        assert_eq!(status, 204, "a narrowed token revokes itself");
        assert_eq!(
            s.call(Method::GET, &path, Some(&scoped), None).await?.0,
            401
        );
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
#[derive(Debug, Clone)]
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

/// The host's address on its default route, if it has one.
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks the route.
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// Without `--metrics-token-file`, `/metrics` (which names every network)
/// answers clients on this host only: a request reaching the controller
/// through the host's network address gets 401, one over loopback 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_without_token_answer_loopback_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let layer = Layer {
        listen: Some("0.0.0.0:0".parse()?),
        mqtt_listen: Some("127.0.0.1:0".parse()?),
        data_dir: Some(dir.path().to_owned()),
        ..Layer::default()
    };
    let config = Config::resolve(&layer, None)?;
    let controller = Controller::start(&config, Listeners::bind(&config)?).await?;
    let port = reqwest::Url::parse(&controller.http_url())?
        .port()
        .context("http port")?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let local = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await?;
    assert_eq!(local.status(), StatusCode::OK);
    assert!(local.text().await?.contains("meshtable_"));
    match non_loopback_address() {
        Some(ip) => {
            let url = format!("http://{}/metrics", std::net::SocketAddr::new(ip, port));
            let remote = http.get(&url).send().await?;
            assert_eq!(remote.status(), StatusCode::UNAUTHORIZED, "{url}");
            let healthz = http.get(url.replace("/metrics", "/healthz")).send().await?;
            assert_eq!(healthz.status(), StatusCode::OK);
        }
        None => eprintln!("no non-loopback address on this host: the remote half is not run"),
    }
    controller.shutdown().await;
    Ok(())
}

/// With `--metrics-token-file`, `/metrics` needs that bearer token, from
/// loopback too; `/healthz` stays open either way.
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

/// Enrollment tokens (trainers' work): a token names only a site of its own
/// network, is revoked while unused, and a revoked one enrolls nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_tokens_are_revoked_and_name_own_sites() -> Result<()> {
    each_database(|url| async move {
        let s = Setup::start(&url).await?;
        let store = s.controller.store().clone();
        store
            .create_site(OTHER, "south-only", "South only", None, now_ms())
            .await?;
        let trainer = s.token(Who::Role(Role::Trainer));
        let tokens = format!("/api/v1/networks/{OWN}/enroll-tokens");
        for (site, want) in [("village", 201), ("nosuch", 404), ("south-only", 404)] {
            let (status, body) = s
                .call(
                    Method::POST,
                    &tokens,
                    trainer,
                    Some(&json!({"site": site, "ttl": "1h"})),
                )
                .await?;
            assert_eq!(status, want, "site {site}: {body}");
        }
        let (status, body) = s
            .call(Method::POST, &tokens, trainer, Some(&json!({"ttl": "1h"})))
            .await?;
        assert_eq!(status, 201, "{body}");
        let token = serde_json::from_str::<Value>(&body)?["token"]
            .as_str()
            .context("token")?
            .to_owned();
        let id = store
            .enroll_tokens(OWN)
            .await?
            .into_iter()
            .map(|t| t.id)
            .max()
            .context("a token")?;
        let revoke = format!("{tokens}/{id}");
        // Not through another network's path, not twice, not unknown ones.
        let (status, _) = s
            .call(
                Method::DELETE,
                &format!("/api/v1/networks/{OTHER}/enroll-tokens/{id}"),
                Some(&s.superadmin),
                None,
            )
            .await?;
        assert_eq!(status, 404, "another network's token");
        let (status, body) = s.call(Method::DELETE, &revoke, trainer, None).await?;
        assert_eq!(status, 204, "{body}");
        let (status, _) = s.call(Method::DELETE, &revoke, trainer, None).await?;
        assert_eq!(status, 409, "revoked twice");
        let (status, _) = s
            .call(Method::DELETE, &format!("{tokens}/abc"), trainer, None)
            .await?;
        assert_eq!(status, 404);
        // The revoked token enrolls nothing, with the answer of any bad token.
        let (key, node) = router_key();
        let (status, body) = s
            .call(
                Method::POST,
                "/api/v1/enroll",
                None,
                Some(&json!({"token": token, "public_key": key})),
            )
            .await?;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains(meshtable::enroll::TOKEN_REFUSED), "{body}");
        assert!(store.node_key(&node).await?.is_none());
        // A used token cannot be revoked any more.
        let (used, token, _) = enroll_token(&store, OWN).await?;
        let (key, node) = router_key();
        let (status, body) = s
            .call(
                Method::POST,
                "/api/v1/enroll",
                None,
                Some(&json!({"token": token, "public_key": key})),
            )
            .await?;
        assert_eq!(status, 201, "{body}");
        assert!(store.node_key(&node).await?.is_some());
        let (status, _) = s
            .call(Method::DELETE, &format!("{tokens}/{used}"), trainer, None)
            .await?;
        assert_eq!(status, 409, "a used token");
        // All of it is in the network's audit log.
        let (_, body) = s
            .call(
                Method::GET,
                &format!("/api/v1/audit?network={OWN}"),
                s.token(Who::Role(Role::Admin)),
                None,
            )
            .await?;
        let v: Value = serde_json::from_str(&body)?;
        let revokes = v["entries"]
            .as_array()
            .context("entries")?
            .iter()
            .filter(|e| e["action"] == "enroll_token.revoke")
            .count();
        assert_eq!(revokes, 1, "{body}");
        s.controller.shutdown().await;
        Ok(())
    })
    .await
}

/// A role grant does not tell a network admin which accounts exist: a name
/// nobody has, an account without a role and an account of another
/// network get the same 404 (up to the name) and change nothing; a
/// superadmin learns that a name is unknown and may name any account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_grants_do_not_tell_which_accounts_exist() -> Result<()> {
    each_database(|url| async move {
        let s = Setup::start(&url).await?;
        let store = s.controller.store().clone();
        let admin = s.token(Who::Role(Role::Admin));
        let (southerner, _) = auth::add_user(&store, "southerner", None, false).await?;
        store
            .grant_role(southerner.id, OTHER, "operator", now_ms())
            .await?;
        let lone = account_of(&store, "login-user").await?;
        let grant = |user: &str| format!("/api/v1/networks/{OWN}/roles/{user}");
        let viewer = json!({"role": "viewer"});

        // Each name, as the network admin: the same answer.
        let mut answers = Vec::new();
        for user in ["ghost", "login-user", "southerner"] {
            let (status, body) = s
                .call(Method::PUT, &grant(user), admin, Some(&viewer))
                .await?;
            assert_eq!(status, 404, "{user}: {body}");
            answers.push(body.replace(user, "NAME"));
        }
        assert_eq!(
            answers[0],
            r#"{"error":"no member NAME in the networks you manage"}"#
        );
        assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
        assert_eq!(store.roles_of(lone.id).await?, []);
        assert_eq!(
            store.roles_of(southerner.id).await?,
            [(OTHER.to_owned(), "operator".to_owned())]
        );
        assert!(store.credentials("ghost").await?.is_none());

        // A member of the admin's network: granted.
        let spare = account_of(&store, "spare").await?;
        let (status, body) = s
            .call(Method::PUT, &grant("spare"), admin, Some(&viewer))
            .await?;
        assert_eq!(status, 204, "{body}");
        assert_eq!(
            store.roles_of(spare.id).await?,
            [(OWN.to_owned(), "viewer".to_owned())]
        );

        // The superadmin: unknown names are named, any account is granted.
        let root = Some(s.superadmin.as_str());
        let (status, body) = s
            .call(Method::PUT, &grant("ghost"), root, Some(&viewer))
            .await?;
        assert_eq!(
            (status, body.as_str()),
            (404, r#"{"error":"unknown user ghost"}"#)
        );
        let (status, body) = s
            .call(Method::PUT, &grant("login-user"), root, Some(&viewer))
            .await?;
        assert_eq!(status, 204, "{body}");
        assert_eq!(
            store.roles_of(lone.id).await?,
            [(OWN.to_owned(), "viewer".to_owned())]
        );
        // Now a member of the own network: its admin may change the role.
        let (status, body) = s
            .call(
                Method::PUT,
                &grant("login-user"),
                admin,
                Some(&json!({"role": "operator"})),
            )
            .await?;
        assert_eq!(status, 204, "{body}");
        assert_eq!(
            store.roles_of(lone.id).await?,
            [(OWN.to_owned(), "operator".to_owned())]
        );
        s.controller.shutdown().await;
        Ok(())
    })
    .await
}
