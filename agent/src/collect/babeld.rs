//! babeld's neighbours and routes, read through its local interface: connect
//! to its socket (a unix `local-path`, or the TCP port of `-G`), read the
//! greeting up to `ok`, send `dump`, read up to `ok`, and parse the
//! `add neighbour ...` and `add route ...` lines:
//!
//! ```text
//! add neighbour 55d236893da0 address fe80::48d:4bff:fe8c:61d1 if cbv1 reach fc00 ureach 0000 rxcost 96 txcost 96 cost 96
//! add route 55d2368942c0 prefix 10.99.0.2/32 from 0.0.0.0/0 installed yes id cc:6d:19:1b:be:0c:9f:15 metric 96 refmetric 0 via fe80::48d:4bff:fe8c:61d1 if cbv1
//! ```
//!
//! After the object's id, a line is `key value` pairs; unknown keys (`rtt`,
//! `rttcost` with timestamps, those of newer versions) are ignored. Parsing
//! ([`parse_dump`]) is pure; [`dump`] does the I/O.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use meshtable_proto::{MeshProtocol, Neighbour, Route};
use tracing::warn;

/// How long one read or write on babeld's socket may block.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// The most lines read from one dump (a router with a huge routing table
/// gets the first ones).
const MAX_LINES: usize = 100_000;

/// Why babeld could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum BabelError {
    /// No babeld listens there (absent socket, refused connection).
    #[error("babeld is not listening on {socket}: {error}")]
    NotRunning {
        /// The socket.
        socket: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// Talking to it failed midway (timeout, reset).
    #[error("talking to babeld on {socket}: {error}")]
    Io {
        /// The socket.
        socket: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// It answered something other than its protocol.
    #[error("babeld on {socket} answered {line:?}")]
    Protocol {
        /// The socket.
        socket: String,
        /// The offending line.
        line: String,
    },
}

/// Where babeld listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BabelSocket {
    /// A unix socket (`local-path` / `local-path-readwrite`).
    Unix(std::path::PathBuf),
    /// A TCP address (`-G port`, `local-port`): babeld binds `::1`.
    Tcp(String),
}

impl BabelSocket {
    /// A path starting with `/` is a unix socket; anything else is a TCP
    /// `host:port` (`[::1]:33123`), or a bare port on `::1`.
    pub fn parse(text: &str) -> BabelSocket {
        if text.starts_with('/') {
            BabelSocket::Unix(text.into())
        } else if text.parse::<u16>().is_ok() {
            BabelSocket::Tcp(format!("[::1]:{text}"))
        } else {
            BabelSocket::Tcp(text.to_owned())
        }
    }
}

impl std::fmt::Display for BabelSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BabelSocket::Unix(p) => write!(f, "{}", p.display()),
            BabelSocket::Tcp(a) => f.write_str(a),
        }
    }
}

/// What one dump held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    /// Neighbours, in babeld's order.
    pub neighbours: Vec<Neighbour>,
    /// Routes, installed or not, in babeld's order.
    pub routes: Vec<Route>,
    /// Lines that should have been a neighbour or a route but did not
    /// parse.
    pub malformed: usize,
}

fn pairs(rest: &[&str]) -> Vec<(String, String)> {
    rest.chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].to_owned(), c[1].to_owned()))
        .collect()
}

fn get<'a>(kv: &'a [(String, String)], key: &str) -> Option<&'a str> {
    kv.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Parses an `add neighbour` line's fields (after the id). The address and
/// interface are required; costs that do not parse are left out.
fn neighbour(kv: &[(String, String)]) -> Option<Neighbour> {
    let cost = |k| get(kv, k).and_then(|v| v.parse::<u32>().ok());
    Some(Neighbour {
        protocol: MeshProtocol::Babel,
        ifname: get(kv, "if")?.to_owned(),
        address: get(kv, "address")?.to_owned(),
        rxcost: cost("rxcost"),
        txcost: cost("txcost"),
        cost: cost("cost"),
        tq: None,
        best: false,
        originator: None,
    })
}

/// Parses an `add route` line's fields (after the id). The prefix, metric
/// and `installed` are required.
fn route(kv: &[(String, String)]) -> Option<Route> {
    let installed = match get(kv, "installed")? {
        "yes" => true,
        "no" => false,
        _ => return None,
    };
    let prefix = get(kv, "prefix")?;
    let prefix = match get(kv, "from") {
        // A source-specific route: prefix from source.
        Some(from) if from != "::/0" && from != "0.0.0.0/0" => format!("{prefix} from {from}"),
        _ => prefix.to_owned(),
    };
    Some(Route {
        protocol: MeshProtocol::Babel,
        prefix,
        via: get(kv, "via").map(str::to_owned),
        ifname: get(kv, "if").map(str::to_owned),
        metric: get(kv, "metric")?.parse().ok()?,
        installed,
    })
}

/// Parses the text of a dump (the greeting and the final `ok` may be
/// included). A neighbour or route line that does not parse is counted in
/// [`Dump::malformed`] and logged; other lines are ignored.
pub fn parse_dump(text: &str) -> Dump {
    let mut d = Dump::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        let (kind, rest) = match words.as_slice() {
            ["add", kind, _id, rest @ ..] => (*kind, rest),
            _ => continue,
        };
        let kv = pairs(rest);
        let ok = match kind {
            "neighbour" => neighbour(&kv).map(|n| d.neighbours.push(n)).is_some(),
            "route" => route(&kv).map(|r| d.routes.push(r)).is_some(),
            _ => true,
        };
        if !ok {
            d.malformed += 1;
            warn!(line = %line, "skipped a malformed babeld line");
        }
    }
    d
}

trait Stream: std::io::Read + Write {}
impl<T: std::io::Read + Write> Stream for T {}

fn connect(socket: &BabelSocket) -> std::io::Result<Box<dyn Stream>> {
    match socket {
        BabelSocket::Unix(path) => {
            let s = UnixStream::connect(path)?;
            s.set_read_timeout(Some(TIMEOUT))?;
            s.set_write_timeout(Some(TIMEOUT))?;
            Ok(Box::new(s))
        }
        BabelSocket::Tcp(addr) => {
            let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
            let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
            for a in addrs {
                match TcpStream::connect_timeout(&a, TIMEOUT) {
                    Ok(s) => {
                        s.set_read_timeout(Some(TIMEOUT))?;
                        s.set_write_timeout(Some(TIMEOUT))?;
                        return Ok(Box::new(s));
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

/// Reads lines up to babeld's end of answer (`ok`, `no`, `bad`), returning
/// them and the final word.
fn read_answer(
    reader: &mut impl BufRead,
    socket: &BabelSocket,
) -> Result<(String, String), BabelError> {
    let mut text = String::new();
    let mut line = String::new();
    for _ in 0..MAX_LINES {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|error| BabelError::Io {
                socket: socket.to_string(),
                error,
            })?;
        if n == 0 {
            return Err(BabelError::Io {
                socket: socket.to_string(),
                error: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        let word = line.trim_end();
        if matches!(word, "ok" | "no" | "bad") {
            return Ok((text, word.to_owned()));
        }
        text.push_str(&line);
    }
    Err(BabelError::Protocol {
        socket: socket.to_string(),
        line: "(too many lines)".to_owned(),
    })
}

/// Asks babeld on `socket` for a dump and returns its text (greeting
/// excluded).
pub fn dump_text(socket: &BabelSocket) -> Result<String, BabelError> {
    let stream = connect(socket).map_err(|error| BabelError::NotRunning {
        socket: socket.to_string(),
        error,
    })?;
    let mut reader = BufReader::new(stream);
    let (greeting, word) = read_answer(&mut reader, socket)?;
    if word != "ok" || !greeting.starts_with("BABEL") {
        return Err(BabelError::Protocol {
            socket: socket.to_string(),
            line: greeting.lines().next().unwrap_or(&word).to_owned(),
        });
    }
    reader
        .get_mut()
        .write_all(b"dump\n")
        .map_err(|error| BabelError::Io {
            socket: socket.to_string(),
            error,
        })?;
    let (text, word) = read_answer(&mut reader, socket)?;
    if word != "ok" {
        return Err(BabelError::Protocol {
            socket: socket.to_string(),
            line: word,
        });
    }
    // Say goodbye; babeld closes on its side too.
    let _ = reader.get_mut().write_all(b"quit\n");
    Ok(text)
}

/// Asks babeld on `socket` for its neighbours and routes.
pub fn dump(socket: &BabelSocket) -> Result<Dump, BabelError> {
    dump_text(socket).map(|t| parse_dump(&t))
}

/// Whether babeld's unix socket exists at all (a router without babeld).
pub fn socket_exists(socket: &BabelSocket) -> bool {
    match socket {
        BabelSocket::Unix(p) => Path::new(p).exists(),
        BabelSocket::Tcp(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_parse() {
        assert_eq!(
            BabelSocket::parse("/var/run/babeld.sock"),
            BabelSocket::Unix("/var/run/babeld.sock".into())
        );
        assert_eq!(
            BabelSocket::parse("33123"),
            BabelSocket::Tcp("[::1]:33123".into())
        );
        assert_eq!(
            BabelSocket::parse("127.0.0.1:33123"),
            BabelSocket::Tcp("127.0.0.1:33123".into())
        );
    }

    #[test]
    fn lines() {
        let d = parse_dump(
            "add neighbour 1 address fe80::1 if wlan0 reach ffff ureach 0000 rxcost 256 txcost 300 rtt 1.2 rttcost 10 cost 310\n\
             add route 2 prefix 2001:db8::/48 from 2001:db8:1::/48 installed no id a metric 400 refmetric 90 via fe80::1 if wlan0\n\
             add neighbour 3 address fe80::2 reach ffff\n\
             add route 4 prefix 10.0.0.0/8 installed maybe metric 1\n\
             add xroute 10.1.0.0/16-0.0.0.0/0 prefix 10.1.0.0/16 from 0.0.0.0/0 metric 0\n\
             change neighbour 5 address fe80::3 if eth0\n",
        );
        assert_eq!(d.malformed, 2);
        assert_eq!(d.neighbours.len(), 1);
        let n = &d.neighbours[0];
        assert_eq!(
            (
                n.ifname.as_str(),
                n.address.as_str(),
                n.rxcost,
                n.txcost,
                n.cost
            ),
            ("wlan0", "fe80::1", Some(256), Some(300), Some(310))
        );
        assert_eq!(d.routes.len(), 1);
        let r = &d.routes[0];
        assert_eq!(r.prefix, "2001:db8::/48 from 2001:db8:1::/48");
        assert_eq!((r.metric, r.installed), (400, false));
        assert_eq!(r.via.as_deref(), Some("fe80::1"));
    }

    #[test]
    fn absent_socket_is_not_running() {
        let s = BabelSocket::parse("/nonexistent/babeld.sock");
        assert!(!socket_exists(&s));
        assert!(matches!(dump(&s), Err(BabelError::NotRunning { .. })));
    }
}
