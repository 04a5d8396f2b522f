//! Node identity: `meshtable-agent enroll` and the files it leaves in the
//! identity directory (default `/etc/meshtable`), which every later run
//! reads to sign its reports and log in to the broker.
//!
//! | file | mode | what |
//! |---|---|---|
//! | `node.key` | 0600 | the ed25519 private key: 64 hex digits of its seed; never leaves the router, never logged |
//! | `node.pub` | 0644 | the public key, 64 hex digits |
//! | `identity.toml` | 0600 | `network`, `node`, `site`, `controller`, `mqtt_username`, `mqtt_password` |
//! | `salt` | 0600 | the network's salt for client MAC hashes (the collector's `--salt-file`) |
//!
//! Enrolling: the key pair is made here (32 bytes from `/dev/urandom`),
//! then `POST {controller}/api/v1/enroll` with the one-time token, the
//! public key and the hostname; the controller answers the node's network,
//! id, salt and broker login. The HTTP client is a small HTTP/1.1 POST over
//! a `TcpStream`: plain `http://`, or `https://` in the build with the `tls`
//! feature, over rustls with the controller's certificate checked against
//! `--ca-file` (PEM; the certificate must name the URL's host). The default
//! build links no TLS stack (see `tests/deps.rs`) and refuses `https://`.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshtable_proto::sign::{self, SigningKey};
use meshtable_proto::validate_id;
use serde::Deserialize;

/// The default identity directory.
pub const DEFAULT_IDENTITY_DIR: &str = "/etc/meshtable";

/// File of the private key.
pub const KEY_FILE: &str = "node.key";
/// File of the public key.
pub const PUB_FILE: &str = "node.pub";
/// File of the enrolled identity.
pub const IDENTITY_FILE: &str = "identity.toml";
/// File of the client salt.
pub const SALT_FILE: &str = "salt";

/// Timeout of the enrollment request (connect, write, read each).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest answer read from the controller.
const MAX_RESPONSE: u64 = 64 * 1024;

/// Why enrolling or reading the identity failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// A file of the identity directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The private key file does not hold a key.
    #[error("{0}: not an ed25519 key (64 hex digits)")]
    BadKey(PathBuf),
    /// The identity file does not parse.
    #[error("{path}: {message}")]
    BadIdentity {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// This router is enrolled already.
    #[error("already enrolled as node {node} of network {network} (remove {path} to enroll again)")]
    AlreadyEnrolled {
        /// Its network.
        network: String,
        /// Its node id.
        node: String,
        /// The identity file.
        path: PathBuf,
    },
    /// The controller URL is not `http://host[:port][/path]` (or
    /// `https://`).
    #[error("invalid --controller {0:?}: use http://host[:port] or https://host[:port]")]
    ControllerUrl(String),
    /// `https://` in a build without the `tls` feature.
    #[error(
        "an https:// --controller needs TLS, and this agent was built without TLS; \
         rebuild with --features tls"
    )]
    TlsNotBuilt,
    /// `https://` without a CA file.
    #[error(
        "an https:// --controller needs --ca-file: the PEM file of the CA that signed \
         the controller's certificate"
    )]
    NoCaFile,
    /// The CA file could not be used.
    #[cfg(feature = "tls")]
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The controller could not be reached or answered badly.
    #[error("enrollment request to {url} failed: {message}")]
    Http {
        /// The URL.
        url: String,
        /// What happened.
        message: String,
    },
    /// The controller refused.
    #[error("the controller refused the enrollment ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
}

/// What `enroll` left in the identity directory: who this router is.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The network.
    pub network: String,
    /// The node id.
    pub node: String,
    /// The site, if the token named one.
    #[serde(default)]
    pub site: Option<String>,
    /// The controller it enrolled with.
    #[serde(default)]
    pub controller: Option<String>,
    /// The broker user name.
    pub mqtt_username: String,
    /// The broker password (secret).
    pub mqtt_password: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("network", &self.network)
            .field("node", &self.node)
            .field("site", &self.site)
            .field("mqtt_username", &self.mqtt_username)
            .finish_non_exhaustive()
    }
}

/// The signing side of an identity: the node id and its private key.
#[derive(Clone)]
pub struct Signer {
    /// The node id the envelopes name.
    pub node: String,
    /// The private key.
    pub key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Wraps `payload` for `topic` in a signed envelope.
    pub fn seal(&self, topic: &str, payload: &[u8]) -> Vec<u8> {
        sign::seal(&self.key, &self.node, topic, payload)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EnrollError + '_ {
    move |source| EnrollError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `text` to `path` with `mode`, through a temporary file and a rename.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), EnrollError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    // The mode of an existing file is not changed by open.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_err(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Reads the private key, if there is one.
pub fn read_key(dir: &Path) -> Result<Option<SigningKey>, EnrollError> {
    let path = dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => sign::signing_key_from_hex(&text)
            .map(Some)
            .map_err(|_| EnrollError::BadKey(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(EnrollError::Io { path, source }),
    }
}

/// Reads the identity, if the router is enrolled.
pub fn read_identity(dir: &Path) -> Result<Option<Identity>, EnrollError> {
    let path = dir.join(IDENTITY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(EnrollError::Io { path, source }),
    };
    let id: Identity = toml::from_str(&text).map_err(|e| EnrollError::BadIdentity {
        path: path.clone(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    for v in [&id.network, &id.node] {
        validate_id(v).map_err(|e| EnrollError::BadIdentity {
            path: path.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(Some(id))
}

/// The identity and its signer, when the router is enrolled (both files present).
pub fn load(dir: &Path) -> Result<Option<(Identity, Signer)>, EnrollError> {
    let Some(identity) = read_identity(dir)? else {
        return Ok(None);
    };
    let key = read_key(dir)?.ok_or_else(|| EnrollError::BadKey(dir.join(KEY_FILE)))?;
    let signer = Signer {
        node: identity.node.clone(),
        key,
    };
    Ok(Some((identity, signer)))
}

/// A new private key from the kernel's random source.
pub fn generate_key() -> Result<SigningKey, EnrollError> {
    let path = Path::new("/dev/urandom");
    let mut seed = [0u8; 32];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut seed))
        .map_err(io_err(path))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// What `enroll` needs.
#[derive(Clone)]
pub struct EnrollRequest {
    /// The identity directory.
    pub dir: PathBuf,
    /// The controller's base URL, `http://host[:port]` or
    /// `https://host[:port]`.
    pub controller: String,
    /// The one-time token (secret).
    pub token: String,
    /// The hostname to register.
    pub hostname: Option<String>,
    /// For an `https://` controller: the PEM file of the CA its certificate
    /// must chain to.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("dir", &self.dir)
            .field("controller", &self.controller)
            .field("hostname", &self.hostname)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct EnrollResponse {
    network: String,
    node: String,
    site: Option<String>,
    client_salt: Option<String>,
    mqtt_username: String,
    mqtt_password: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Enrolls this router: makes (or reuses, after a failed attempt) its key
/// pair, registers the public key with the controller, and writes what the
/// controller answered. Returns the identity.
pub fn enroll(req: &EnrollRequest) -> Result<Identity, EnrollError> {
    if let Some(id) = read_identity(&req.dir)? {
        return Err(EnrollError::AlreadyEnrolled {
            network: id.network,
            node: id.node,
            path: req.dir.join(IDENTITY_FILE),
        });
    }
    std::fs::create_dir_all(&req.dir).map_err(io_err(&req.dir))?;
    let key = match read_key(&req.dir)? {
        Some(k) => k,
        None => {
            let k = generate_key()?;
            write_file(
                &req.dir.join(KEY_FILE),
                &format!("{}\n", sign::to_hex(&k.to_bytes())),
                0o600,
            )?;
            k
        }
    };
    let public = sign::to_hex(key.verifying_key().as_bytes());
    write_file(&req.dir.join(PUB_FILE), &format!("{public}\n"), 0o644)?;

    let body = serde_json::json!({
        "token": req.token,
        "public_key": public,
        "hostname": req.hostname,
    })
    .to_string();
    let url = format!("{}/api/v1/enroll", req.controller.trim_end_matches('/'));
    let (status, answer) = http_post_json(&url, &body, req.ca_file.as_deref())?;
    if !(200..300).contains(&status) {
        let message = serde_json::from_slice::<ErrorBody>(&answer)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&answer).chars().take(200).collect());
        return Err(EnrollError::Refused { status, message });
    }
    let r: EnrollResponse = serde_json::from_slice(&answer).map_err(|e| EnrollError::Http {
        url: url.clone(),
        message: format!("unexpected answer: {e}"),
    })?;
    for v in [&r.network, &r.node] {
        validate_id(v).map_err(|e| EnrollError::Http {
            url: url.clone(),
            message: format!("unexpected answer: {e}"),
        })?;
    }
    if let Some(salt) = &r.client_salt {
        write_file(&req.dir.join(SALT_FILE), &format!("{salt}\n"), 0o600)?;
    }
    let mut text = format!(
        "# Written by meshtable-agent enroll: this router's identity. Keep it secret.\n\
         network = {}\nnode = {}\ncontroller = {}\nmqtt_username = {}\nmqtt_password = {}\n",
        quote(&r.network),
        quote(&r.node),
        quote(&req.controller),
        quote(&r.mqtt_username),
        quote(&r.mqtt_password),
    );
    if let Some(site) = &r.site {
        text.push_str(&format!("site = {}\n", quote(site)));
    }
    write_file(&req.dir.join(IDENTITY_FILE), &text, 0o600)?;
    Ok(Identity {
        network: r.network,
        node: r.node,
        site: r.site,
        controller: Some(req.controller.clone()),
        mqtt_username: r.mqtt_username,
        mqtt_password: r.mqtt_password,
    })
}

/// `http://host[:port][/prefix]` split into (host, port, prefix).
pub fn parse_http_url(url: &str) -> Option<(String, u16, String)> {
    split_authority(url.strip_prefix("http://")?, 80)
}

/// A controller URL, `http://` or `https://` (default port 443), split into
/// (https, host, port, prefix).
pub fn parse_controller_url(url: &str) -> Option<(bool, String, u16, String)> {
    let (https, parts) = match url.strip_prefix("https://") {
        Some(rest) => (true, split_authority(rest, 443)?),
        None => (false, parse_http_url(url)?),
    };
    let (host, port, path) = parts;
    Some((https, host, port, path))
}

/// `host[:port][/prefix]` split into (host, port, prefix).
fn split_authority(rest: &str, default_port: u16) -> Option<(String, u16, String)> {
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        (h.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), p.parse().ok()?),
            None => (authority.to_owned(), default_port),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some((host, port, path.to_owned()))
}

/// POSTs a JSON body over HTTP/1.1 (over TLS for `https://`, trusting the
/// CA certificates of `ca_file`) and returns the status and the body.
pub fn http_post_json(
    url: &str,
    body: &str,
    ca_file: Option<&Path>,
) -> Result<(u16, Vec<u8>), EnrollError> {
    let (https, host, port, path) =
        parse_controller_url(url).ok_or_else(|| EnrollError::ControllerUrl(url.to_owned()))?;
    if https && !crate::config::TLS_BUILT {
        return Err(EnrollError::TlsNotBuilt);
    }
    let ca_file = match (https, ca_file) {
        (true, None) => return Err(EnrollError::NoCaFile),
        (true, Some(ca)) => Some(ca),
        (false, _) => None,
    };
    let fail = |message: String| EnrollError::Http {
        url: url.to_owned(),
        message,
    };
    let addrs: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| fail(format!("cannot resolve {host}: {e}")))?
        .collect();
    let mut last = None;
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, HTTP_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let stream = stream.ok_or_else(|| {
        fail(match last {
            Some(e) => format!("cannot connect: {e}"),
            None => "no address".to_owned(),
        })
    })?;
    let io = |e: std::io::Error| fail(e.to_string());
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT)).map_err(io)?;
    let host_header = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: meshtable-agent/{}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        env!("CARGO_PKG_VERSION"),
        body.len(),
    );
    let raw = match ca_file {
        None => exchange(stream, request.as_bytes()).map_err(io)?,
        #[cfg(feature = "tls")]
        Some(ca) => {
            let config = crate::tls::client_config(&crate::config::TlsFiles {
                ca_file: ca.to_owned(),
                client: None,
            })?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| fail(format!("invalid host name {host:?}: {e}")))?;
            let conn =
                rustls::ClientConnection::new(config, name).map_err(|e| fail(e.to_string()))?;
            let tls = rustls::StreamOwned::new(conn, stream);
            exchange(tls, request.as_bytes()).map_err(|e| match tls_reason(&e) {
                Some(reason) => fail(format!("tls: {reason}")),
                None => fail(e.to_string()),
            })?
        }
        #[cfg(not(feature = "tls"))]
        Some(_) => return Err(EnrollError::TlsNotBuilt),
    };
    parse_response(&raw).ok_or_else(|| fail("malformed http response".to_owned()))
}

/// Writes `request` and reads the answer up to [`MAX_RESPONSE`] bytes, until
/// the server closes the connection. Over TLS, a close without
/// `close_notify` after some data ends the answer too (the body is checked
/// against its length by [`parse_response`]).
fn exchange(mut stream: impl Read + Write, request: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(request)?;
    stream.flush()?;
    let mut raw = Vec::new();
    match stream.take(MAX_RESPONSE).read_to_end(&mut raw) {
        Ok(_) => Ok(raw),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        Err(e) => Err(e),
    }
}

/// The rustls error inside an I/O error, e.g. the certificate refused.
#[cfg(feature = "tls")]
fn tls_reason(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
}

/// Splits an HTTP/1.1 response into its status and body (by
/// `Content-Length`, chunked, or up to the end).
pub fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let (k, v) = line.split_once(':')?;
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(v.parse::<usize>().ok()?);
        } else if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    if chunked {
        let mut out = Vec::new();
        let mut rest = body;
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n")?;
            let size_text = std::str::from_utf8(&rest[..nl]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[nl + 2..];
            if size == 0 {
                return Some((status, out));
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
    }
    match length {
        Some(n) => Some((status, body.get(..n)?.to_vec())),
        None => Some((status, body.to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let cases = [
            ("http://ctl:8080", Some(("ctl", 8080, ""))),
            ("http://ctl", Some(("ctl", 80, ""))),
            ("http://10.0.0.1:80/mt", Some(("10.0.0.1", 80, "/mt"))),
            ("http://[::1]:8080", Some(("::1", 8080, ""))),
            ("https://ctl", None),
            ("ftp://ctl", None),
            ("http://", None),
            ("http://u:p@ctl", None),
            ("http://ctl:port", None),
        ];
        for (url, want) in cases {
            let got = parse_http_url(url);
            let want = want.map(|(h, p, path)| (h.to_owned(), p, path.to_owned()));
            assert_eq!(got, want, "{url}");
        }
        let https = [
            ("https://ctl", Some((true, "ctl", 443, ""))),
            ("https://ctl:8443/mt", Some((true, "ctl", 8443, "/mt"))),
            ("http://ctl", Some((false, "ctl", 80, ""))),
            ("https://u:p@ctl", None),
            ("ftp://ctl", None),
        ];
        for (url, want) in https {
            let got = parse_controller_url(url);
            let want = want.map(|(t, h, p, path)| (t, h.to_owned(), p, path.to_owned()));
            assert_eq!(got, want, "{url}");
        }
    }

    /// An https:// controller needs the tls build, and a CA file; the
    /// checks come before any connection (the address is never dialled).
    #[test]
    fn https_needs_tls_and_a_ca_file() {
        let e = http_post_json("https://192.0.2.1:1/api", "{}", None).unwrap_err();
        if crate::config::TLS_BUILT {
            assert!(matches!(e, EnrollError::NoCaFile), "{e}");
            assert!(e.to_string().contains("needs --ca-file"), "{e}");
        } else {
            assert!(matches!(e, EnrollError::TlsNotBuilt), "{e}");
            assert!(
                e.to_string()
                    .contains("this agent was built without TLS; rebuild with --features tls"),
                "{e}"
            );
        }
    }

    /// (raw response, expected status and body)
    type ResponseCase = (&'static [u8], Option<(u16, &'static [u8])>);

    #[test]
    fn responses() {
        let cases: [ResponseCase; 4] = [
            (
                b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}extra",
                Some((201, b"{}")),
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n1\r\n \r\n0\r\n\r\n",
                Some((200, b"{} ")),
            ),
            (b"HTTP/1.1 403 Forbidden\r\n\r\nno", Some((403, b"no"))),
            (b"garbage", None),
        ];
        for (raw, want) in cases {
            let got = parse_response(raw);
            assert_eq!(
                got.as_ref().map(|(s, b)| (*s, b.as_slice())),
                want,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn key_files_round_trip_with_private_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(read_key(dir.path()).unwrap().is_none());
        let k = generate_key().unwrap();
        write_file(
            &dir.path().join(KEY_FILE),
            &format!("{}\n", sign::to_hex(&k.to_bytes())),
            0o600,
        )
        .unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            read_key(dir.path()).unwrap().unwrap().to_bytes(),
            k.to_bytes()
        );
        assert!(read_identity(dir.path()).unwrap().is_none());
        let text =
            "network = \"n\"\nnode = \"abc\"\nmqtt_username = \"abc\"\nmqtt_password = \"pw\"\n";
        std::fs::write(dir.path().join(IDENTITY_FILE), text).unwrap();
        let (id, signer) = load(dir.path()).unwrap().unwrap();
        assert_eq!((id.network.as_str(), signer.node.as_str()), ("n", "abc"));
        assert!(!format!("{id:?}{signer:?}").contains("pw"));
    }
}
