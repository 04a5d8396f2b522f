//! MQTT topics: `meshtable/v1/{network}/{node}/{kind}`.

use std::fmt;
use std::str::FromStr;

/// The first topic level of every meshtable topic.
pub const TOPIC_ROOT: &str = "meshtable";

/// The topic version level this crate speaks. A new incompatible topic layout
/// gets a new level (`v2`) and both are subscribed to side by side.
pub const TOPIC_VERSION: &str = "v1";

/// Longest network or node identifier accepted on the wire.
pub const MAX_ID_LEN: usize = 64;

/// What a message on a topic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Retained description of the router ([`crate::Hello`]).
    Hello,
    /// Retained online/offline state ([`crate::State`]); the offline one is the last will.
    State,
    /// Periodic counters and gauges ([`crate::Telemetry`]).
    Telemetry,
}

impl Kind {
    /// Every kind, in topic order.
    pub const ALL: [Kind; 3] = [Kind::Hello, Kind::State, Kind::Telemetry];

    /// The topic level naming this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::State => "state",
            Kind::Telemetry => "telemetry",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hello" => Ok(Kind::Hello),
            "state" => Ok(Kind::State),
            "telemetry" => Ok(Kind::Telemetry),
            other => Err(TopicError::UnknownKind(other.to_owned())),
        }
    }
}

/// Why a topic or identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic does not have the five levels `meshtable/v1/{network}/{node}/{kind}`.
    #[error("topic does not match meshtable/v1/{{network}}/{{node}}/{{kind}}: {0}")]
    Shape(String),
    /// The version level is not one this crate speaks.
    #[error("unsupported topic version {0}")]
    UnsupportedVersion(String),
    /// The last level is not a known kind.
    #[error("unknown message kind {0}")]
    UnknownKind(String),
    /// A network or node identifier is empty, too long or has characters outside `[a-z0-9_-]`.
    #[error("invalid identifier {0:?}: use 1-64 characters of a-z, 0-9, '-' and '_'")]
    InvalidId(String),
}

/// Checks a network or node identifier: 1-64 characters of `[a-z0-9_-]`.
///
/// Keeping identifiers to this alphabet means they can never contain MQTT
/// wildcards or level separators, and are safe in URLs, file names and HTML.
pub fn validate_id(id: &str) -> Result<(), TopicError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(TopicError::InvalidId(id.chars().take(80).collect()))
    }
}

/// A parsed meshtable topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic {
    /// The network (tenant) the node belongs to.
    pub network: String,
    /// The node's identifier inside its network.
    pub node: String,
    /// What the message is.
    pub kind: Kind,
}

impl Topic {
    /// Builds a topic, validating both identifiers.
    pub fn new(network: &str, node: &str, kind: Kind) -> Result<Topic, TopicError> {
        validate_id(network)?;
        validate_id(node)?;
        Ok(Topic {
            network: network.to_owned(),
            node: node.to_owned(),
            kind,
        })
    }

    /// Parses `meshtable/v1/{network}/{node}/{kind}`.
    pub fn parse(topic: &str) -> Result<Topic, TopicError> {
        let shape = || TopicError::Shape(topic.chars().take(200).collect());
        let mut levels = topic.split('/');
        let (Some(root), Some(version), Some(network), Some(node), Some(kind), None) = (
            levels.next(),
            levels.next(),
            levels.next(),
            levels.next(),
            levels.next(),
            levels.next(),
        ) else {
            return Err(shape());
        };
        if root != TOPIC_ROOT {
            return Err(shape());
        }
        if version != TOPIC_VERSION {
            return Err(TopicError::UnsupportedVersion(
                version.chars().take(16).collect(),
            ));
        }
        let kind = kind.parse()?;
        Topic::new(network, node, kind)
    }

    /// The subscription filter matching every node of every network (`network`
    /// `None`) or of one network.
    pub fn filter(network: Option<&str>) -> String {
        format!(
            "{TOPIC_ROOT}/{TOPIC_VERSION}/{}/+/+",
            network.unwrap_or("+")
        )
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOPIC_ROOT}/{TOPIC_VERSION}/{}/{}/{}",
            self.network, self.node, self.kind
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = Topic::new("leipzig", "1a3671205872", Kind::Telemetry).unwrap();
        let s = t.to_string();
        assert_eq!(s, "meshtable/v1/leipzig/1a3671205872/telemetry");
        assert_eq!(Topic::parse(&s).unwrap(), t);
    }

    #[test]
    fn rejects() {
        let cases = [
            ("meshtable/v1/net/node", "shape"),
            ("meshtable/v1/net/node/telemetry/x", "shape"),
            ("other/v1/net/node/state", "shape"),
            ("meshtable/v9/net/node/state", "version"),
            ("meshtable/v1/net/node/bogus", "kind"),
            ("meshtable/v1/Net/node/state", "id"),
            ("meshtable/v1/net//state", "id"),
            ("meshtable/v1/net/+/state", "id"),
        ];
        for (topic, want) in cases {
            let got = match Topic::parse(topic) {
                Err(TopicError::Shape(_)) => "shape",
                Err(TopicError::UnsupportedVersion(_)) => "version",
                Err(TopicError::UnknownKind(_)) => "kind",
                Err(TopicError::InvalidId(_)) => "id",
                Ok(_) => "ok",
            };
            assert_eq!(got, want, "{topic}");
        }
    }

    #[test]
    fn filters() {
        assert_eq!(Topic::filter(None), "meshtable/v1/+/+/+");
        assert_eq!(Topic::filter(Some("bremen")), "meshtable/v1/bremen/+/+");
    }

    #[test]
    fn id_limits() {
        assert!(validate_id(&"a".repeat(64)).is_ok());
        assert!(validate_id(&"a".repeat(65)).is_err());
        assert!(validate_id("a_b-c9").is_ok());
        assert!(validate_id("a b").is_err());
    }
}
