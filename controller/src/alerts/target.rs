//! Where alert webhooks may go: not to the controller's own neighbourhood.
//!
//! An operator with `ManageAlerts` sets a network's webhook URL, and the
//! controller POSTs to it. Without a guard that is a request forgery
//! (SSRF) tool: a URL naming `127.0.0.1`, a private address or the cloud
//! metadata address (`169.254.169.254`) makes the controller talk to
//! services that trust it because of where it stands. So, unless the
//! configuration allows it (`alert_webhook_allow_private`, off by default),
//! a webhook whose host is or resolves to an [internal](is_internal)
//! address is refused:
//!
//! - when the settings are saved ([`check_url`]: a clear 400);
//! - when a digest is delivered, since DNS can change after the save: the
//!   URL is checked again, and the client itself resolves names through
//!   [`GuardedResolver`], so the addresses checked are the ones connected
//!   to, and a redirect to an internal IP literal is refused
//!   ([`redirect_policy`]). The guarded client uses no proxy (a proxy would
//!   resolve the host itself). A refused delivery is logged and counted
//!   (`meshtable_alerts_webhook_refused_total`) and retried at the next
//!   evaluation like any failed one.

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a webhook URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not an `http` or `https` URL with a host.
    #[error("expected an http or https URL")]
    BadUrl,
    /// The host is, or resolves to, an internal address.
    #[error(
        "{host} is an internal address ({addr}): loopback, private, link-local, unique-local, \
         unspecified or multicast addresses are refused unless alert_webhook_allow_private is set"
    )]
    Internal {
        /// The URL's host.
        host: String,
        /// The internal address.
        addr: IpAddr,
    },
    /// The host name does not resolve.
    #[error("{host} does not resolve: {reason}")]
    Unresolved {
        /// The URL's host.
        host: String,
        /// The resolver's message.
        reason: String,
    },
}

/// Whether a webhook must not go to `ip`: loopback, private (RFC 1918 and
/// the shared address space 100.64.0.0/10 of RFC 6598), link-local,
/// "this network" (0.0.0.0/8), broadcast, IPv6 unique-local (fc00::/7),
/// unspecified or multicast. An IPv4-mapped IPv6 address
/// (`::ffff:127.0.0.1`) is judged as its IPv4 address.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal_v4(v4),
            None => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local()
            }
        },
    }
}

fn is_internal_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_multicast()
        || v4.is_broadcast()
        // 0.0.0.0/8, "this network" (0.0.0.0 reaches the host itself).
        || a == 0
        // 100.64.0.0/10, shared address space (carrier-grade NAT).
        || (a == 100 && (64..128).contains(&b))
}

/// How long resolving a webhook's host may take (at save time, and within
/// a delivery).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first internal address of `addrs`, if any.
fn first_internal(addrs: &[SocketAddr]) -> Option<IpAddr> {
    addrs.iter().map(SocketAddr::ip).find(|ip| is_internal(*ip))
}

/// Resolves `host` (a name, or an IP literal without brackets) and refuses
/// it when any of its addresses is internal (a name with one public and
/// one internal address could be steered to the internal one).
async fn resolve_checked(host: &str, port: u16) -> Result<Vec<SocketAddr>, TargetError> {
    let unresolved = |reason: String| TargetError::Unresolved {
        host: host.to_owned(),
        reason,
    };
    let addrs: Vec<SocketAddr> =
        tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| unresolved("timed out".to_owned()))?
            .map_err(|e| unresolved(e.to_string()))?
            .collect();
    if addrs.is_empty() {
        return Err(unresolved("no addresses".to_owned()));
    }
    if let Some(addr) = first_internal(&addrs) {
        return Err(TargetError::Internal {
            host: host.to_owned(),
            addr,
        });
    }
    Ok(addrs)
}

/// Checks a webhook URL: `http` or `https` with a host and, unless
/// `allow_private`, a host that is no internal address and resolves to
/// none (all of its addresses are checked).
pub async fn check_url(url: &str, allow_private: bool) -> Result<(), TargetError> {
    let url = url::Url::parse(url).map_err(|_| TargetError::BadUrl)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::BadUrl);
    }
    let Some(host) = url.host() else {
        return Err(TargetError::BadUrl);
    };
    if allow_private {
        return Ok(());
    }
    let port = url.port_or_known_default().unwrap_or(0);
    let internal = |addr: IpAddr| TargetError::Internal {
        host: host.to_string(),
        addr,
    };
    match host {
        url::Host::Ipv4(v4) if is_internal(v4.into()) => Err(internal(v4.into())),
        url::Host::Ipv6(v6) if is_internal(v6.into()) => Err(internal(v6.into())),
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => Ok(()),
        url::Host::Domain(name) => resolve_checked(name, port).await.map(|_| ()),
    }
}

/// The webhook client's resolver when internal addresses are refused: the
/// system resolver, and an error (a [`TargetError`]) for a name with an
/// internal address. The client connects only to the addresses it
/// returns, so a name that changed to an internal address after
/// [`check_url`] is caught here.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port in.
            let addrs = resolve_checked(&host, 0).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Whether a redirect to `url` is refused: an internal IP literal (the
/// resolver never sees those; names go through [`GuardedResolver`]).
pub fn redirect_refused(url: &url::Url) -> Option<TargetError> {
    let addr = match url.host()? {
        url::Host::Ipv4(v4) => IpAddr::from(v4),
        url::Host::Ipv6(v6) => IpAddr::from(v6),
        url::Host::Domain(_) => return None,
    };
    is_internal(addr).then(|| TargetError::Internal {
        host: url.host_str().unwrap_or_default().to_owned(),
        addr,
    })
}

/// reqwest's default redirect limit, kept by [`redirect_policy`].
const MAX_REDIRECTS: usize = 10;

/// Follows redirects as reqwest does by default (at most 10), but not to
/// an internal IP literal ([`redirect_refused`]).
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error("too many redirects");
        }
        match redirect_refused(attempt.url()) {
            Some(e) => attempt.error(e),
            None => attempt.follow(),
        }
    })
}

/// The [`TargetError`] somewhere in `e`'s chain of sources: a request the
/// guarded client refused.
pub fn refusal_in<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a TargetError> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(t) = e.downcast_ref::<TargetError>() {
            return Some(t);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses() {
        let cases = [
            ("127.0.0.1", true),
            ("127.255.0.9", true),
            ("10.1.2.3", true),
            ("172.16.0.1", true),
            ("172.31.255.255", true),
            ("172.32.0.1", false),
            ("192.168.1.1", true),
            ("169.254.169.254", true),
            ("100.64.0.1", true),
            ("100.127.255.255", true),
            ("100.128.0.1", false),
            ("0.0.0.0", true),
            ("0.1.2.3", true),
            ("224.0.0.1", true),
            ("255.255.255.255", true),
            ("192.0.2.1", false),
            ("8.8.8.8", false),
            ("::1", true),
            ("::", true),
            ("fe80::1", true),
            ("fc00::1", true),
            ("fd12:3456::1", true),
            ("ff02::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:10.0.0.1", true),
            ("::ffff:8.8.8.8", false),
            ("2001:db8::1", false),
            ("2a00:1450::1", false),
        ];
        for (ip, want) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(is_internal(ip), want, "{ip}");
        }
    }

    #[test]
    fn redirects_to_internal_literals_are_refused() {
        let cases = [
            ("http://127.0.0.1:8080/x", true),
            ("http://[::1]/x", true),
            ("https://169.254.169.254/latest", true),
            ("https://192.0.2.1/hook", false),
            // Names are the resolver's business.
            ("http://localhost/x", false),
        ];
        for (url, refused) in cases {
            let u = url::Url::parse(url).unwrap();
            assert_eq!(redirect_refused(&u).is_some(), refused, "{url}");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_by_their_addresses() {
        // "localhost" resolves through /etc/hosts, without a DNS server.
        let refused = [
            "http://127.0.0.1:9/hook",
            "http://localhost:9/hook",
            "http://[::1]/hook",
            "http://[::ffff:7f00:1]/hook",
            "http://10.0.0.5/hook",
            "https://169.254.169.254/latest/meta-data",
            "http://[fd00::1]/hook",
            "http://0.0.0.0/hook",
            "http://224.0.0.1/hook",
        ];
        for url in refused {
            let e = check_url(url, false).await.unwrap_err();
            assert!(matches!(e, TargetError::Internal { .. }), "{url}: {e}");
            assert_eq!(check_url(url, true).await, Ok(()), "{url} allowed");
        }
        for url in ["http://192.0.2.1/hook", "https://[2001:db8::1]:8443/x"] {
            assert_eq!(check_url(url, false).await, Ok(()), "{url}");
        }
        for url in ["ftp://192.0.2.1/x", "not a url", "file:///etc/passwd"] {
            assert_eq!(
                check_url(url, true).await,
                Err(TargetError::BadUrl),
                "{url}"
            );
        }
        // .invalid never resolves (RFC 6761).
        let e = check_url("http://webhook.invalid/x", false)
            .await
            .unwrap_err();
        assert!(matches!(e, TargetError::Unresolved { .. }), "{e}");
    }
}
