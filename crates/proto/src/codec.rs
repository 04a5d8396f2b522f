//! Encoding and decoding, with the checks every reader must make.

use minicbor::{Decode, Encode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::mesh::{
    MAX_CLIENT_IDS, MAX_NEIGHBOURS, MAX_RADIOS, MAX_ROUTES, MAX_STATIONS, Neighbour, Route, Station,
};
use crate::message::{
    Hello, MAX_INTERFACES, MAX_PAYLOAD, MAX_TEXT, SUPPORTED_VERSIONS, State, Telemetry,
};
use crate::topic::{Kind, validate_id};

/// The two encodings of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Compact CBOR with integer keys: what agents send.
    Cbor,
    /// JSON with field names: for debugging and third-party publishers.
    Json,
}

/// Why a payload was refused. [`DecodeError::reason`] gives the counter label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Zero bytes.
    #[error("empty payload")]
    Empty,
    /// More than [`MAX_PAYLOAD`] bytes.
    #[error("payload of {size} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// Size of the payload.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Ends before the message does.
    #[error("truncated payload: {0}")]
    Truncated(String),
    /// Neither valid CBOR nor valid JSON of the expected shape.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// A version this crate does not read.
    #[error("unsupported message version {0}")]
    UnsupportedVersion(u16),
    /// Well-formed, but a value breaks a limit or rule.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// A compact (v2) telemetry report whose previous report (`seq - 1`)
    /// the [`crate::Reassembler`] does not hold.
    #[error("compact report {0} without the report before it")]
    MissingBase(u64),
}

impl DecodeError {
    /// A short, stable label for metrics (`reason="..."`).
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::Truncated(_) => "truncated",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::UnsupportedVersion(_) => "unknown_version",
            DecodeError::Invalid(_) => "invalid",
            DecodeError::MissingBase(_) => "missing_base",
        }
    }
}

/// A message type of the wire format.
pub trait Message:
    Sized + Serialize + DeserializeOwned + Encode<()> + for<'b> Decode<'b, ()>
{
    /// The topic kind this message travels under.
    const KIND: Kind;

    /// The message versions this type decodes.
    const VERSIONS: &'static [u16] = &[crate::message::VERSION];

    /// The message's version field.
    fn version(&self) -> u16;

    /// Checks limits and rules beyond the shape. Called by [`decode`].
    fn validate(&self) -> Result<(), DecodeError>;
}

/// Encodes a message as CBOR.
pub fn encode_cbor<M: Message>(msg: &M) -> Vec<u8> {
    // Encoding into a Vec cannot fail: the only error source is the writer.
    minicbor::to_vec(msg).unwrap_or_default()
}

/// Encodes a message as JSON.
pub fn encode_json<M: Message>(msg: &M) -> Vec<u8> {
    // All message types serialize infallibly (string keys, finite structure).
    serde_json::to_vec(msg).unwrap_or_default()
}

/// Encodes a message in the given encoding.
pub fn encode<M: Message>(msg: &M, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Cbor => encode_cbor(msg),
        Encoding::Json => encode_json(msg),
    }
}

/// Tells the encoding from the first byte: a CBOR map starts with major type 5
/// (0xa0-0xbf); JSON with `{` after optional white space.
pub fn sniff(payload: &[u8]) -> Option<Encoding> {
    match payload.first()? {
        0xa0..=0xbf => Some(Encoding::Cbor),
        _ => match payload.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Some(Encoding::Json),
            _ => None,
        },
    }
}

#[derive(serde::Deserialize, Decode)]
#[cbor(map)]
struct Header {
    #[n(0)]
    v: Option<u16>,
}

fn cbor_error(e: minicbor::decode::Error) -> DecodeError {
    if e.is_end_of_input() {
        DecodeError::Truncated(e.to_string())
    } else {
        DecodeError::Malformed(e.to_string())
    }
}

fn json_error(e: serde_json::Error) -> DecodeError {
    if e.is_eof() {
        DecodeError::Truncated(e.to_string())
    } else {
        DecodeError::Malformed(e.to_string())
    }
}

fn decode_cbor<'b, T: Decode<'b, ()>>(payload: &'b [u8]) -> Result<T, DecodeError> {
    let mut d = minicbor::Decoder::new(payload);
    let value = d.decode().map_err(cbor_error)?;
    if d.position() != payload.len() {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes after the message",
            payload.len() - d.position()
        )));
    }
    Ok(value)
}

/// Decodes and validates a message in either encoding.
///
/// The version is read first, so a message of an unknown version is reported
/// as such rather than as malformed.
pub fn decode<M: Message>(payload: &[u8]) -> Result<(M, Encoding), DecodeError> {
    if payload.is_empty() {
        return Err(DecodeError::Empty);
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(DecodeError::Oversized {
            size: payload.len(),
            max: MAX_PAYLOAD,
        });
    }
    let encoding = sniff(payload)
        .ok_or_else(|| DecodeError::Malformed("neither a CBOR map nor a JSON object".to_owned()))?;
    let header: Header = match encoding {
        Encoding::Cbor => decode_cbor(payload)?,
        Encoding::Json => serde_json::from_slice(payload).map_err(json_error)?,
    };
    let v = header
        .v
        .ok_or_else(|| DecodeError::Malformed("missing version field v".to_owned()))?;
    if !SUPPORTED_VERSIONS.contains(&v) || !M::VERSIONS.contains(&v) {
        return Err(DecodeError::UnsupportedVersion(v));
    }
    let msg: M = match encoding {
        Encoding::Cbor => decode_cbor(payload)?,
        Encoding::Json => serde_json::from_slice(payload).map_err(json_error)?,
    };
    msg.validate()?;
    Ok((msg, encoding))
}

fn text(field: &str, value: &str) -> Result<(), DecodeError> {
    if value.len() > MAX_TEXT {
        return Err(DecodeError::Invalid(format!(
            "{field} is {} bytes, the limit is {MAX_TEXT}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(DecodeError::Invalid(format!(
            "{field} contains control characters"
        )));
    }
    Ok(())
}

fn opt_text(field: &str, value: &Option<String>) -> Result<(), DecodeError> {
    value.as_deref().map_or(Ok(()), |v| text(field, v))
}

fn count(what: &str, n: usize, max: usize) -> Result<(), DecodeError> {
    if n > max {
        return Err(DecodeError::Invalid(format!(
            "{n} {what}, the limit is {max}"
        )));
    }
    Ok(())
}

fn nonempty(field: &str, value: &str) -> Result<(), DecodeError> {
    text(field, value)?;
    if value.is_empty() {
        return Err(DecodeError::Invalid(format!("empty {field}")));
    }
    Ok(())
}

fn station(s: &Station) -> Result<(), DecodeError> {
    nonempty("station ifname", &s.ifname)?;
    opt_text("station mac", &s.mac)?;
    opt_text("station client_id", &s.client_id)?;
    if s.mac.is_some() && s.client_id.is_some() {
        return Err(DecodeError::Invalid(
            "a station has a mac or a client_id, not both".to_owned(),
        ));
    }
    Ok(())
}

fn neighbour(n: &Neighbour) -> Result<(), DecodeError> {
    nonempty("neighbour ifname", &n.ifname)?;
    nonempty("neighbour address", &n.address)?;
    opt_text("neighbour originator", &n.originator)
}

fn route(r: &Route) -> Result<(), DecodeError> {
    nonempty("route prefix", &r.prefix)?;
    opt_text("route via", &r.via)?;
    opt_text("route ifname", &r.ifname)
}

/// Checks the issue-3 additions of a telemetry report (keys 15-20).
fn mesh_parts(t: &Telemetry) -> Result<(), DecodeError> {
    count("radios", t.radios.len(), MAX_RADIOS)?;
    for r in &t.radios {
        nonempty("radio ifname", &r.ifname)?;
        opt_text("radio ssid", &r.ssid)?;
    }
    count("stations", t.stations.len(), MAX_STATIONS)?;
    t.stations.iter().try_for_each(station)?;
    count("neighbours", t.neighbours.len(), MAX_NEIGHBOURS)?;
    t.neighbours.iter().try_for_each(neighbour)?;
    count("routes", t.routes.len(), MAX_ROUTES)?;
    t.routes.iter().try_for_each(route)?;
    if let Some(c) = &t.clients {
        count("client ids", c.ids.len(), MAX_CLIENT_IDS)?;
        for id in &c.ids {
            nonempty("client id", id)?;
        }
    }
    if let Some(g) = &t.gateway {
        nonempty("gateway ifname", &g.ifname)?;
        opt_text("gateway via", &g.via)?;
    }
    Ok(())
}

fn interface_count(n: usize) -> Result<(), DecodeError> {
    if n > MAX_INTERFACES {
        return Err(DecodeError::Invalid(format!(
            "{n} interfaces, the limit is {MAX_INTERFACES}"
        )));
    }
    Ok(())
}

impl Message for Hello {
    const KIND: Kind = Kind::Hello;

    fn version(&self) -> u16 {
        self.v
    }

    fn validate(&self) -> Result<(), DecodeError> {
        text("agent_version", &self.agent_version)?;
        text("hostname", &self.hostname)?;
        text("model", &self.model)?;
        text("os_release", &self.os_release)?;
        text("kernel", &self.kernel)?;
        opt_text("board", &self.board)?;
        if let Some(f) = &self.firmware {
            text("firmware distribution", &f.distribution)?;
            text("firmware release", &f.release)?;
            opt_text("firmware revision", &f.revision)?;
            opt_text("firmware target", &f.target)?;
        }
        interface_count(self.interfaces.len())?;
        for i in &self.interfaces {
            text("interface name", &i.name)?;
            if i.addresses.len() > MAX_INTERFACES {
                return Err(DecodeError::Invalid(format!(
                    "interface {} lists {} addresses",
                    i.name,
                    i.addresses.len()
                )));
            }
            for a in &i.addresses {
                text("address", a)?;
            }
        }
        if let Some(loc) = &self.location {
            let ok = loc.latitude.is_finite()
                && loc.longitude.is_finite()
                && (-90.0..=90.0).contains(&loc.latitude)
                && (-180.0..=180.0).contains(&loc.longitude);
            if !ok {
                return Err(DecodeError::Invalid("location out of range".to_owned()));
            }
        }
        Ok(())
    }
}

impl Message for State {
    const KIND: Kind = Kind::State;

    fn version(&self) -> u16 {
        self.v
    }

    fn validate(&self) -> Result<(), DecodeError> {
        Ok(())
    }
}

impl Message for Telemetry {
    const KIND: Kind = Kind::Telemetry;

    fn version(&self) -> u16 {
        self.v
    }

    fn validate(&self) -> Result<(), DecodeError> {
        validate_id(&self.node).map_err(|e| DecodeError::Invalid(e.to_string()))?;
        text("boot_id", &self.boot_id)?;
        if self.boot_id.is_empty() {
            return Err(DecodeError::Invalid("empty boot_id".to_owned()));
        }
        if self.load.iter().any(|l| !l.is_finite() || *l < 0.0) {
            return Err(DecodeError::Invalid(
                "load averages must be finite and not negative".to_owned(),
            ));
        }
        if self.mem_available > self.mem_total {
            return Err(DecodeError::Invalid(
                "mem_available exceeds mem_total".to_owned(),
            ));
        }
        if self.rootfs_free > self.rootfs_size {
            return Err(DecodeError::Invalid(
                "rootfs_free exceeds rootfs_size".to_owned(),
            ));
        }
        interface_count(self.interfaces.len())?;
        for i in &self.interfaces {
            text("interface name", &i.name)?;
        }
        mesh_parts(self)
    }
}

/// A decoded message of any kind, as a consumer of all topics receives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// A [`Hello`].
    Hello(Hello),
    /// A [`State`].
    State(State),
    /// A [`Telemetry`].
    Telemetry(Telemetry),
}

impl Report {
    /// Decodes a payload as the message type the topic kind names.
    pub fn decode(kind: Kind, payload: &[u8]) -> Result<(Report, Encoding), DecodeError> {
        Ok(match kind {
            Kind::Hello => {
                let (m, e) = decode::<Hello>(payload)?;
                (Report::Hello(m), e)
            }
            Kind::State => {
                let (m, e) = decode::<State>(payload)?;
                (Report::State(m), e)
            }
            Kind::Telemetry => {
                let (m, e) = decode::<Telemetry>(payload)?;
                (Report::Telemetry(m), e)
            }
        })
    }
}
