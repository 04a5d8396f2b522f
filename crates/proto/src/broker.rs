//! Broker addresses: `mqtt://[user:password@]host[:port]` (or `mqtts://`
//! for MQTT over TLS), shared by the agent, the simulator and the
//! controller's tools so they all accept the same spelling.

/// The default MQTT port.
pub const DEFAULT_MQTT_PORT: u16 = 1883;

/// The default MQTT over TLS port.
pub const DEFAULT_MQTTS_PORT: u16 = 8883;

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User name and password, when the URL has them.
    pub credentials: Option<(String, String)>,
    /// MQTT over TLS (`mqtts://`): the client must verify the broker's
    /// certificate, against a CA it is given.
    pub tls: bool,
}

/// Why a broker URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mqtt url {url:?}: {reason}")]
pub struct BrokerUrlError {
    /// The URL given.
    pub url: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl BrokerUrl {
    /// Parses `mqtt://[user:password@]host[:port]` (also `tcp://`), or
    /// `mqtts://` (also `ssl://`, `tls://`) for MQTT over TLS; the port
    /// defaults to 1883, 8883 with TLS, and IPv6 hosts go in brackets.
    /// Whether a client can speak TLS is the client's business: one that
    /// cannot must refuse a URL with [`BrokerUrl::tls`] set.
    pub fn parse(url: &str) -> Result<BrokerUrl, BrokerUrlError> {
        let err = |reason| BrokerUrlError {
            url: url.to_owned(),
            reason,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| err("expected mqtt://host[:port]"))?;
        let tls = match scheme {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" | "tls" => true,
            _ => return Err(err("the scheme must be mqtt:// or mqtts://")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(err("a path or query is not allowed"));
        }
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                if user.is_empty() {
                    return Err(err("empty user name"));
                }
                (Some((user.to_owned(), password.to_owned())), hostport)
            }
            None => (None, rest),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| err("unclosed [ in IPv6 address"))?;
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| err("expected :port after ]"))?,
                    ),
                ),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(err("empty host"));
        }
        let port = match port {
            None if tls => DEFAULT_MQTTS_PORT,
            None => DEFAULT_MQTT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| err("the port must be a number from 1 to 65535"))?,
        };
        Ok(BrokerUrl {
            host: host.to_owned(),
            port,
            credentials,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(host: &str, port: u16) -> BrokerUrl {
        BrokerUrl {
            host: host.to_owned(),
            port,
            credentials: None,
            tls: false,
        }
    }

    #[test]
    fn parses() {
        let good = [
            ("mqtt://127.0.0.1:1883", broker("127.0.0.1", 1883)),
            ("mqtt://broker.example", broker("broker.example", 1883)),
            ("tcp://host:1884/", broker("host", 1884)),
            ("mqtt://[::1]:1885", broker("::1", 1885)),
            ("mqtt://[fd00::1]", broker("fd00::1", 1883)),
            (
                "mqtt://agent:s3cr:t@host:1883",
                BrokerUrl {
                    credentials: Some(("agent".to_owned(), "s3cr:t".to_owned())),
                    ..broker("host", 1883)
                },
            ),
        ];
        for (url, want) in good {
            assert_eq!(BrokerUrl::parse(url).unwrap(), want, "{url}");
        }
    }

    #[test]
    fn refuses() {
        let bad = [
            ("127.0.0.1:1883", "expected mqtt://host[:port]"),
            ("http://host", "the scheme must be mqtt:// or mqtts://"),
            ("mqtt://", "empty host"),
            ("mqtt://:1883", "empty host"),
            ("mqtt://host:0", "the port must be a number from 1 to 65535"),
            (
                "mqtt://host:99999",
                "the port must be a number from 1 to 65535",
            ),
            ("mqtt://host:x", "the port must be a number from 1 to 65535"),
            ("mqtt://host/topic", "a path or query is not allowed"),
            ("mqtt://[::1", "unclosed [ in IPv6 address"),
            ("mqtt://[::1]x", "expected :port after ]"),
            ("mqtt://:pw@host", "empty user name"),
        ];
        for (url, reason) in bad {
            assert_eq!(BrokerUrl::parse(url).unwrap_err().reason, reason, "{url}");
        }
    }

    #[test]
    fn tls_schemes() {
        let tls = |host: &str, port| BrokerUrl {
            tls: true,
            ..broker(host, port)
        };
        assert_eq!(BrokerUrl::parse("mqtts://host").unwrap(), tls("host", 8883));
        assert_eq!(
            BrokerUrl::parse("ssl://host:9883").unwrap(),
            tls("host", 9883)
        );
        assert_eq!(BrokerUrl::parse("tls://[::1]").unwrap(), tls("::1", 8883));
        assert_eq!(
            BrokerUrl::parse("mqtts://a:b@host:8884").unwrap(),
            BrokerUrl {
                credentials: Some(("a".to_owned(), "b".to_owned())),
                ..tls("host", 8884)
            }
        );
    }
}
