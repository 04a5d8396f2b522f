//! [`Caller`]: who sent a request, and what they may do.
//!
//! Taken by every handler that serves anything but `/healthz`:
//!
//! ```text
//! async fn handler(caller: Caller, State(s): State<AppState>, Path(network): Path<String>) -> ... {
//!     caller.authorize(&network, Action::ReadNodes)?;
//!     ...
//! }
//! ```
//!
//! Credentials, first match wins: `Authorization: Bearer mt_...` (an API
//! token), then the session cookie. Anything missing, malformed, expired or
//! revoked gives an anonymous caller, whom [`Caller::authorize`] answers
//! with 401. A request authenticated by the session cookie with a method
//! other than GET, HEAD or OPTIONS must carry the session's CSRF token (the
//! `X-CSRF-Token` header, or for HTML forms the `csrf` field checked with
//! [`Caller::with_form_csrf`]); until it does, every check answers 403.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Method, header};
use meshtable_store::accounts::Account;

use super::secret::{constant_time_eq, csrf_token, looks_like_token, sha256_hex, token_prefix};
use super::{Action, CSRF_HEADER, Perms, Role, SESSION_COOKIE};
use crate::api::{ApiError, AppState};
use crate::ingest::now_ms;

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A web session; carries the session's CSRF token.
    Session {
        /// The CSRF token forms and unsafe API calls must echo.
        csrf: String,
    },
    /// An API token.
    Token {
        /// Row id of the token.
        id: i64,
        /// Its visible prefix.
        prefix: String,
    },
}

#[derive(Debug, Clone)]
struct Ident {
    account: Account,
    via: Via,
    superadmin: bool,
    /// Rights in every network (a superadmin's, narrowed by a token's role).
    everywhere: Option<Perms>,
    /// Rights per network.
    networks: HashMap<String, Perms>,
}

/// The sender of a request: anonymous, or an account through a session or
/// an API token, with its rights per network. An axum extractor.
#[derive(Debug, Clone)]
pub struct Caller {
    ident: Option<Ident>,
    source: Option<IpAddr>,
    /// An unsafe method over a session without the CSRF token.
    csrf_missing: bool,
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl Caller {
    /// Nobody.
    pub fn anonymous(source: Option<IpAddr>) -> Caller {
        Caller {
            ident: None,
            source,
            csrf_missing: false,
        }
    }

    /// `account` with its `roles`, reached through `via`, narrowed by a
    /// token's `scope` (network and role), as the extractor builds it.
    pub fn new(
        account: Account,
        roles: &[(String, String)],
        via: Via,
        scope: (Option<&str>, Option<Role>),
        source: Option<IpAddr>,
    ) -> Caller {
        let (scope_network, scope_role) = scope;
        let cap = scope_role.map_or(Perms::ALL, Role::perms);
        let mut networks = HashMap::new();
        let mut everywhere = None;
        let superadmin = account.superadmin && scope_network.is_none() && scope_role.is_none();
        if account.superadmin {
            match scope_network {
                None => everywhere = Some(cap),
                Some(n) => {
                    networks.insert(n.to_owned(), cap);
                }
            }
        } else {
            for (network, role) in roles {
                let Ok(role) = role.parse::<Role>() else {
                    continue;
                };
                if scope_network.is_some_and(|n| n != network) {
                    continue;
                }
                let p = role.perms().and(cap);
                if !p.is_empty() {
                    networks.insert(network.clone(), p);
                }
            }
        }
        Caller {
            ident: Some(Ident {
                account,
                via,
                superadmin,
                everywhere,
                networks,
            }),
            source,
            csrf_missing: false,
        }
    }

    /// Whether someone is logged in.
    pub fn is_authenticated(&self) -> bool {
        self.ident.is_some()
    }

    /// Whether the caller may do anything anywhere, including creating
    /// networks and accounts (a superadmin's session or unscoped token).
    pub fn is_superadmin(&self) -> bool {
        self.ident.as_ref().is_some_and(|i| i.superadmin)
    }

    /// The account, if logged in.
    pub fn account(&self) -> Option<&Account> {
        self.ident.as_ref().map(|i| &i.account)
    }

    /// The login name, if logged in.
    pub fn user_name(&self) -> Option<&str> {
        self.account().map(|a| a.name.as_str())
    }

    /// How the caller authenticated.
    pub fn via(&self) -> Option<&Via> {
        self.ident.as_ref().map(|i| &i.via)
    }

    /// The session's CSRF token, for forms (`None` without a session).
    pub fn csrf_token(&self) -> Option<&str> {
        match self.via() {
            Some(Via::Session { csrf }) => Some(csrf),
            _ => None,
        }
    }

    /// The address the request came from.
    pub fn source(&self) -> Option<IpAddr> {
        self.source
    }

    /// Who, for the audit log: `alice`, `alice (token mt_1a2b3c4d)`, or
    /// `anonymous`.
    pub fn actor(&self) -> String {
        match &self.ident {
            None => "anonymous".to_owned(),
            Some(Ident {
                account,
                via: Via::Token { prefix, .. },
                ..
            }) => format!("{} (token {prefix})", account.name),
            Some(i) => i.account.name.clone(),
        }
    }

    /// What the caller may do in `network`; `None` without any role there.
    pub fn perms(&self, network: &str) -> Option<Perms> {
        let i = self.ident.as_ref()?;
        i.networks.get(network).copied().or(i.everywhere)
    }

    /// Whether the caller may do `action` in `network` (ignoring CSRF).
    pub fn can(&self, network: &str, action: Action) -> bool {
        self.perms(network).is_some_and(|p| p.has(action))
    }

    /// Whether the caller has any role in `network`, or sees every network.
    pub fn sees(&self, network: &str) -> bool {
        self.perms(network).is_some()
    }

    fn check_session(&self) -> Result<&Ident, ApiError> {
        let Some(i) = &self.ident else {
            return Err(ApiError::Unauthorized(
                "log in, or send Authorization: Bearer <api token>".to_owned(),
            ));
        };
        if self.csrf_missing {
            return Err(ApiError::Forbidden(format!(
                "missing or wrong CSRF token (send the session's token in {CSRF_HEADER})"
            )));
        }
        Ok(i)
    }

    /// 401 when nobody is logged in, 403 for a missing CSRF token, 404 when
    /// the caller has no role in `network` (whether or not it exists), 403
    /// when the role does not allow `action`.
    pub fn authorize(&self, network: &str, action: Action) -> Result<(), ApiError> {
        self.check_session()?;
        match self.perms(network) {
            None => Err(ApiError::unknown_network(network)),
            Some(p) if p.has(action) => Ok(()),
            Some(_) => Err(ApiError::Forbidden(format!(
                "your role in network {network} does not allow you to {}",
                action.describe()
            ))),
        }
    }

    /// [`Caller::authorize`], and then 404 if `network` does not exist (a
    /// superadmin, or a role granted for a network not yet created, passes
    /// the first check for any name).
    pub async fn authorize_existing(
        &self,
        store: &meshtable_store::Store,
        network: &str,
        action: Action,
    ) -> Result<(), ApiError> {
        self.authorize(network, action)?;
        if store.network_known(network).await? {
            Ok(())
        } else {
            Err(ApiError::unknown_network(network))
        }
    }

    /// 401 when nobody is logged in (or 403 without the CSRF token): the
    /// account otherwise.
    pub fn require_user(&self) -> Result<&Account, ApiError> {
        Ok(&self.check_session()?.account)
    }

    /// 401 when nobody is logged in, 403 unless a superadmin.
    pub fn require_superadmin(&self) -> Result<&Account, ApiError> {
        let i = self.check_session()?;
        if i.superadmin {
            Ok(&i.account)
        } else {
            Err(ApiError::Forbidden(
                "only a controller superadmin may do this".to_owned(),
            ))
        }
    }

    /// The caller with the CSRF requirement met, if `token` (a form's `csrf`
    /// field) is the session's; 403 otherwise. Token callers need none.
    pub fn with_form_csrf(mut self, token: &str) -> Result<Caller, ApiError> {
        match self.csrf_token() {
            Some(expected) if constant_time_eq(expected, token) => {
                self.csrf_missing = false;
                Ok(self)
            }
            Some(_) => Err(ApiError::Forbidden(
                "missing or wrong CSRF token: reload the page and try again".to_owned(),
            )),
            None => Ok(self),
        }
    }

    /// Reads the caller of a request from its headers and the store.
    pub async fn from_parts(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
        let source = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let now = now_ms();
        if let Some(h) = parts.headers.get(header::AUTHORIZATION) {
            let token = h
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .filter(|t| looks_like_token(t));
            let Some(token) = token else {
                return Ok(Caller::anonymous(source));
            };
            let Some((info, account)) = state.store.valid_token(&sha256_hex(token), now).await?
            else {
                return Ok(Caller::anonymous(source));
            };
            let roles = state.store.roles_of(account.id).await?;
            let role = info.role.as_deref().and_then(|r| r.parse::<Role>().ok());
            if info.role.is_some() && role.is_none() {
                return Ok(Caller::anonymous(source));
            }
            return Ok(Caller::new(
                account,
                &roles,
                Via::Token {
                    id: info.id,
                    prefix: token_prefix(token),
                },
                (info.network.as_deref(), role),
                source,
            ));
        }
        let Some(session) = cookie(parts, SESSION_COOKIE)
            .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            return Ok(Caller::anonymous(source));
        };
        let Some(account) = state
            .store
            .session_account(&sha256_hex(session), now)
            .await?
        else {
            return Ok(Caller::anonymous(source));
        };
        let roles = state.store.roles_of(account.id).await?;
        let csrf = csrf_token(session);
        let csrf_missing = !is_safe(&parts.method)
            && !parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| constant_time_eq(v, &csrf));
        let mut caller = Caller::new(account, &roles, Via::Session { csrf }, (None, None), source);
        caller.csrf_missing = csrf_missing;
        Ok(caller)
    }
}

impl<S> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Caller, ApiError> {
        let state = AppState::from_ref(state);
        Caller::from_parts(parts, &state).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(superadmin: bool) -> Account {
        Account {
            id: 1,
            name: "maria".to_owned(),
            superadmin,
            created_ms: 0,
        }
    }

    fn token() -> Via {
        Via::Token {
            id: 1,
            prefix: "mt_00000000".to_owned(),
        }
    }

    fn roles() -> Vec<(String, String)> {
        vec![
            ("north".to_owned(), "operator".to_owned()),
            ("south".to_owned(), "funder".to_owned()),
        ]
    }

    fn status(r: Result<(), ApiError>) -> u16 {
        match r {
            Ok(()) => 200,
            Err(e) => e.status().as_u16(),
        }
    }

    #[test]
    fn rights_by_role_and_scope() {
        let anon = Caller::anonymous(None);
        assert_eq!(status(anon.authorize("north", Action::ReadNodes)), 401);

        let c = Caller::new(account(false), &roles(), token(), (None, None), None);
        assert_eq!(status(c.authorize("north", Action::ManageNodes)), 200);
        assert_eq!(status(c.authorize("north", Action::ManageUsers)), 403);
        assert_eq!(status(c.authorize("south", Action::ReadAggregates)), 200);
        assert_eq!(status(c.authorize("south", Action::ReadNodes)), 403);
        assert_eq!(status(c.authorize("west", Action::ReadAggregates)), 404);
        assert!(!c.is_superadmin());
        assert_eq!(c.actor(), "maria (token mt_00000000)");

        // A token narrowed to one network and a role: never more than the owner.
        let c = Caller::new(
            account(false),
            &roles(),
            token(),
            (Some("north"), Some(Role::Admin)),
            None,
        );
        assert_eq!(status(c.authorize("north", Action::ManageNodes)), 200);
        assert_eq!(status(c.authorize("north", Action::ManageUsers)), 403);
        assert_eq!(status(c.authorize("south", Action::ReadAggregates)), 404);
        let c = Caller::new(
            account(false),
            &roles(),
            token(),
            (None, Some(Role::Viewer)),
            None,
        );
        assert_eq!(status(c.authorize("north", Action::ReadNodes)), 200);
        assert_eq!(status(c.authorize("north", Action::ManageNodes)), 403);
        // Funder ∩ viewer leaves aggregates only.
        assert_eq!(status(c.authorize("south", Action::ReadNodes)), 403);

        // Superadmins see every network; a scoped token of theirs does not.
        let c = Caller::new(account(true), &[], token(), (None, None), None);
        assert!(c.is_superadmin());
        assert_eq!(status(c.authorize("anything", Action::ManageUsers)), 200);
        let c = Caller::new(account(true), &[], token(), (Some("north"), None), None);
        assert!(!c.is_superadmin());
        assert_eq!(status(c.authorize("north", Action::ManageUsers)), 200);
        assert_eq!(status(c.authorize("south", Action::ReadNodes)), 404);
    }

    #[test]
    fn csrf_blocks_until_given() {
        let mut c = Caller::new(
            account(false),
            &roles(),
            Via::Session {
                csrf: "abc".to_owned(),
            },
            (None, None),
            None,
        );
        c.csrf_missing = true;
        assert_eq!(status(c.authorize("north", Action::ReadNodes)), 403);
        assert!(c.clone().with_form_csrf("abd").is_err());
        let c = c.with_form_csrf("abc").unwrap();
        assert_eq!(status(c.authorize("north", Action::ReadNodes)), 200);
    }
}
