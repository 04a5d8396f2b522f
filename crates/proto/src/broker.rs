//! Broker addresses: `mqtt://[user:password@]host[:port]`, shared by the
//! agent, the simulator and the controller's tools so they all accept the
//! same spelling.

/// The default MQTT port.
pub const DEFAULT_MQTT_PORT: u16 = 1883;

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User name and password, when the URL has them.
    pub credentials: Option<(String, String)>,
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
    /// Parses `mqtt://[user:password@]host[:port]` (also `tcp://`); the port
    /// defaults to 1883 and IPv6 hosts go in brackets. TLS schemes are
    /// refused: no TLS stack is built in yet.
    pub fn parse(url: &str) -> Result<BrokerUrl, BrokerUrlError> {
        let err = |reason| BrokerUrlError {
            url: url.to_owned(),
            reason,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| err("expected mqtt://host[:port]"))?;
        match scheme {
            "mqtt" | "tcp" => {}
            "mqtts" | "ssl" | "tls" => {
                return Err(err(
                    "TLS is not built in; reach the broker through a plain-MQTT listener or a local tunnel",
                ));
            }
            _ => return Err(err("the scheme must be mqtt://")),
        }
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
            ("http://host", "the scheme must be mqtt://"),
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
        assert!(
            BrokerUrl::parse("mqtts://host:8883")
                .unwrap_err()
                .reason
                .starts_with("TLS is not built in")
        );
    }
}
