//! Generic netlink, just enough for nl80211 and batman-adv: resolving a
//! family by name (`CTRL_CMD_GETFAMILY`), sending one dump request, and
//! reading the netlink attributes (TLVs) of the replies.
//!
//! The byte layout is the kernel's (`include/uapi/linux/netlink.h`,
//! `genetlink.h`): a 16-byte `nlmsghdr` (length, type, flags, sequence,
//! port id; native byte order), for generic netlink a 4-byte `genlmsghdr`
//! (command, version, reserved), then attributes, each a 4-byte `nlattr`
//! (length including the header, type) followed by its value, padded to
//! four bytes.
//!
//! Parsing ([`parse_datagram`], [`attrs`]) is pure and tested on bytes; the
//! socket code ([`Genl`]) only moves them.

use netlink_sys::protocols::NETLINK_GENERIC;
use netlink_sys::{Socket, SocketAddr};

/// Why a generic netlink request failed.
#[derive(Debug, thiserror::Error)]
pub enum GenlError {
    /// Opening, sending on or receiving from the socket failed.
    #[error("generic netlink socket: {0}")]
    Socket(std::io::Error),
    /// The kernel answered with an error.
    #[error("kernel refused the generic netlink request: {0}")]
    Kernel(std::io::Error),
    /// The reply is not well-formed.
    #[error("malformed generic netlink reply: {0}")]
    Malformed(&'static str),
    /// The dump was interrupted by changes every time it was tried.
    #[error("generic netlink dump kept being interrupted")]
    Interrupted,
}

impl GenlError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            GenlError::Kernel(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// `NLMSG_NOOP`, `NLMSG_ERROR`, `NLMSG_DONE`, `NLMSG_OVERRUN`.
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
/// Request flags (`netlink.h`).
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_DUMP: u16 = 0x300;
/// The controller family (`genetlink.h`): `GENL_ID_CTRL`,
/// `CTRL_CMD_GETFAMILY`, `CTRL_ATTR_FAMILY_ID`, `CTRL_ATTR_FAMILY_NAME`.
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// `NLA_TYPE_MASK`: the type without the nested and byte-order flags.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// `ENOENT`: the kernel's answer for an unknown family.
pub const ENOENT: i32 = 2;

/// Rounds up to the netlink alignment of four bytes.
fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// One attribute: its type (flags masked off) and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    /// The attribute type.
    pub kind: u16,
    /// The value, without the header and padding.
    pub value: &'a [u8],
}

impl<'a> Attr<'a> {
    /// The value as a `u8`.
    pub fn u8(&self) -> Option<u8> {
        self.value
            .first()
            .copied()
            .filter(|_| self.value.len() == 1)
    }
    /// The value as a native-endian `u16`.
    pub fn u16(&self) -> Option<u16> {
        Some(u16::from_ne_bytes(self.value.try_into().ok()?))
    }
    /// The value as a native-endian `u32`.
    pub fn u32(&self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.value.try_into().ok()?))
    }
    /// The value as a native-endian `u64` (a 4-byte value is widened: some
    /// kernels send 64-bit counters as 32 bits when they fit).
    pub fn u64(&self) -> Option<u64> {
        match self.value.len() {
            8 => Some(u64::from_ne_bytes(self.value.try_into().ok()?)),
            4 => self.u32().map(u64::from),
            _ => None,
        }
    }
    /// The value as a signed byte (dBm values are `s8` sent as `u8`).
    pub fn i8(&self) -> Option<i8> {
        self.u8().map(|b| b as i8)
    }
    /// The value as a MAC address.
    pub fn mac(&self) -> Option<[u8; 6]> {
        self.value.try_into().ok()
    }
    /// The value as text: a NUL-terminated string, lossily decoded.
    pub fn text(&self) -> String {
        let end = self
            .value
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(self.value.len());
        String::from_utf8_lossy(&self.value[..end]).into_owned()
    }
    /// The attributes nested in this one.
    pub fn nested(&self) -> Result<Vec<Attr<'a>>, GenlError> {
        attrs(self.value)
    }
}

/// Splits a run of attributes. A length that runs past the buffer or is
/// shorter than the header makes the whole run malformed.
pub fn attrs(mut buf: &[u8]) -> Result<Vec<Attr<'_>>, GenlError> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return Err(GenlError::Malformed("attribute length out of bounds"));
        }
        out.push(Attr {
            kind,
            value: &buf[4..len],
        });
        buf = &buf[align(len).min(buf.len())..];
    }
    Ok(out)
}

/// Appends one attribute (header, value, padding) to `out`.
pub fn put_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(align(out.len()), 0);
}

/// Builds one generic netlink message: header, `genlmsghdr`, attributes,
/// padded to four bytes.
pub fn message(family: u16, flags: u16, seq: u32, cmd: u8, version: u8, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    out.extend_from_slice(&family.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[cmd, version, 0, 0]);
    out.extend_from_slice(attrs);
    // Messages in a datagram start at four-byte boundaries.
    out.resize(align(len), 0);
    out
}

/// One generic netlink message of a reply: its command and the bytes of
/// its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `genlmsghdr.cmd`.
    pub cmd: u8,
    /// The attribute bytes (parse with [`attrs`]).
    pub payload: Vec<u8>,
}

/// What the datagrams of one reply held so far.
#[derive(Debug, Default)]
pub struct Reply {
    /// The messages of the requested family, in order.
    pub messages: Vec<Message>,
    /// `NLMSG_DONE` (or, for a non-dump request, the answer) was seen.
    pub done: bool,
    /// The kernel flagged the dump as inconsistent (`NLM_F_DUMP_INTR`).
    pub interrupted: bool,
}

/// Parses one datagram of a reply from `family` into `reply`. An error
/// message from the kernel becomes [`GenlError::Kernel`].
pub fn parse_datagram(family: u16, datagram: &[u8], reply: &mut Reply) -> Result<(), GenlError> {
    let mut buf = datagram;
    while buf.len() >= 16 && !reply.done {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let flags = u16::from_ne_bytes([buf[6], buf[7]]);
        if len < 16 || len > buf.len() {
            return Err(GenlError::Malformed("message length out of bounds"));
        }
        if flags & NLM_F_DUMP_INTR != 0 {
            reply.interrupted = true;
        }
        let body = &buf[16..len];
        match kind {
            NLMSG_NOOP | NLMSG_OVERRUN => {}
            NLMSG_ERROR | NLMSG_DONE => {
                // Both carry an int: 0, or a negative errno.
                let code = body
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0);
                if code < 0 {
                    return Err(GenlError::Kernel(std::io::Error::from_raw_os_error(-code)));
                }
                reply.done = true;
            }
            k if k == family => {
                if body.len() < 4 {
                    return Err(GenlError::Malformed("generic netlink header missing"));
                }
                reply.messages.push(Message {
                    cmd: body[0],
                    payload: body[4..].to_vec(),
                });
            }
            _ => {}
        }
        buf = &buf[align(len).min(buf.len())..];
    }
    Ok(())
}

/// A generic netlink socket.
#[derive(Debug)]
pub struct Genl {
    socket: Socket,
    seq: u32,
}

impl Genl {
    /// Opens a socket.
    pub fn open() -> Result<Genl, GenlError> {
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(GenlError::Socket)?;
        socket.bind_auto().map_err(GenlError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(GenlError::Socket)?;
        Ok(Genl { socket, seq: 0 })
    }

    /// Sends `request` and reads the reply: up to `NLMSG_DONE` for a dump,
    /// else up to the first answer.
    fn exchange(&mut self, family: u16, request: &[u8], dump: bool) -> Result<Reply, GenlError> {
        self.socket.send(request, 0).map_err(GenlError::Socket)?;
        let mut reply = Reply::default();
        while !reply.done && (dump || reply.messages.is_empty()) {
            let (datagram, _) = self.socket.recv_from_full().map_err(GenlError::Socket)?;
            if datagram.is_empty() {
                return Err(GenlError::Malformed("empty datagram"));
            }
            parse_datagram(family, &datagram, &mut reply)?;
        }
        Ok(reply)
    }

    /// The id of the family called `name`, or `None` when the kernel has no
    /// such family (the module is not loaded).
    pub fn family(&mut self, name: &str) -> Result<Option<u16>, GenlError> {
        let mut attrs = Vec::new();
        let mut value = name.as_bytes().to_vec();
        value.push(0);
        put_attr(&mut attrs, CTRL_ATTR_FAMILY_NAME, &value);
        self.seq = self.seq.wrapping_add(1);
        let request = message(
            GENL_ID_CTRL,
            NLM_F_REQUEST,
            self.seq,
            CTRL_CMD_GETFAMILY,
            1,
            &attrs,
        );
        let reply = match self.exchange(GENL_ID_CTRL, &request, false) {
            Err(e) if e.errno() == Some(ENOENT) => return Ok(None),
            r => r?,
        };
        Ok(family_id(&reply.messages))
    }

    /// Sends a dump request (`cmd` with `attrs`) to `family` and returns the
    /// messages of the reply; an interrupted dump is tried again.
    pub fn dump(
        &mut self,
        family: u16,
        cmd: u8,
        version: u8,
        attrs: &[u8],
    ) -> Result<Vec<Message>, GenlError> {
        for _ in 0..3 {
            self.seq = self.seq.wrapping_add(1);
            let request = message(
                family,
                NLM_F_REQUEST | NLM_F_DUMP,
                self.seq,
                cmd,
                version,
                attrs,
            );
            let reply = self.exchange(family, &request, true)?;
            if !reply.interrupted {
                return Ok(reply.messages);
            }
        }
        Err(GenlError::Interrupted)
    }
}

/// The family id in a `CTRL_CMD_NEWFAMILY` answer.
pub fn family_id(messages: &[Message]) -> Option<u16> {
    messages.iter().find_map(|m| {
        attrs(&m.payload)
            .ok()?
            .iter()
            .find(|a| a.kind == CTRL_ATTR_FAMILY_ID)
            .and_then(Attr::u16)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_and_reject_bad_lengths() {
        let mut buf = Vec::new();
        put_attr(&mut buf, 3, &7u32.to_ne_bytes());
        put_attr(&mut buf, 4, b"wlan0\0");
        put_attr(&mut buf, 0x8000 | 21, &[]);
        let a = attrs(&buf).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!((a[0].kind, a[0].u32()), (3, Some(7)));
        assert_eq!((a[1].kind, a[1].text()), (4, "wlan0".to_owned()));
        assert_eq!(a[2].kind, 21, "nested flag masked off");
        // A length past the end.
        let mut bad = buf.clone();
        bad[0] = 200;
        assert!(attrs(&bad).is_err());
        // A length shorter than the header.
        bad[0] = 2;
        assert!(attrs(&bad).is_err());
    }

    #[test]
    fn datagrams_errors_and_done() {
        let fam = 0x1c;
        let mut attrs_buf = Vec::new();
        put_attr(&mut attrs_buf, 1, &5u32.to_ne_bytes());
        let mut dgram = message(fam, 0x2, 1, 19, 1, &attrs_buf);
        // NLMSG_DONE with 0.
        let mut done = message(NLMSG_DONE, 0x2, 1, 0, 0, &[]);
        done.truncate(20);
        dgram.extend_from_slice(&done);
        let mut reply = Reply::default();
        parse_datagram(fam, &dgram, &mut reply).unwrap();
        assert!(reply.done);
        assert_eq!(reply.messages.len(), 1);
        assert_eq!(reply.messages[0].cmd, 19);
        // An error message carrying -ENODEV (19).
        let mut err = Vec::new();
        err.extend_from_slice(&36u32.to_ne_bytes());
        err.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err.extend_from_slice(&[0; 10]);
        err.extend_from_slice(&(-19i32).to_ne_bytes());
        err.extend_from_slice(&[0; 16]);
        let e = parse_datagram(fam, &err, &mut Reply::default()).unwrap_err();
        assert_eq!(e.errno(), Some(19));
        // Truncated.
        assert!(parse_datagram(fam, &dgram[..dgram.len() - 30], &mut Reply::default()).is_err());
    }

    /// The live kernel: `nlctrl` itself is always there, an invented family
    /// is not, and neither is an error.
    #[test]
    fn live_family_lookup() {
        let mut g = Genl::open().unwrap();
        assert_eq!(g.family("nlctrl").unwrap(), Some(GENL_ID_CTRL));
        assert_eq!(g.family("meshtable_none").unwrap(), None);
    }
}
