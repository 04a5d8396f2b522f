//! The two URL operations the harness needs, without a URL crate.

/// `host` and `port` of `scheme://[user@]host[:port][/...]`; IPv6 hosts in
/// brackets.
pub(crate) fn host_port(url: &str, default_port: u16) -> Result<(String, u16), String> {
    let (_, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not scheme://host:port"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    let port = match port {
        Some(p) => p
            .parse()
            .map_err(|_| format!("{url:?}: {p:?} is not a port"))?,
        None => default_port,
    };
    Ok((host.to_owned(), port))
}

/// `url` (`postgres://user@host:port/db?options`) with the database `db`.
pub(crate) fn with_database(url: &str, db: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not scheme://host/database"))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    Ok(format!("{scheme}://{authority}/{db}{query}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        let cases = [
            ("mqtt://127.0.0.1:1883", Ok(("127.0.0.1", 1883))),
            ("mqtt://broker", Ok(("broker", 1883))),
            ("mqtt://u:p@broker:1884/", Ok(("broker", 1884))),
            ("mqtt://[::1]:1885", Ok(("::1", 1885))),
            ("mqtt://[::1]", Ok(("::1", 1883))),
            ("127.0.0.1:1883", Err(())),
            ("mqtt://:1883", Err(())),
            ("mqtt://h:x", Err(())),
        ];
        for (url, want) in cases {
            let got = host_port(url, 1883);
            match want {
                Ok((h, p)) => assert_eq!(got, Ok((h.to_owned(), p)), "{url}"),
                Err(()) => assert!(got.is_err(), "{url}: {got:?}"),
            }
        }
    }

    #[test]
    fn database_replaced() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/test",
                "postgres://postgres@127.0.0.1:5432/e2e",
            ),
            ("postgres://h", "postgres://h/e2e"),
            (
                "postgresql://u:p@h:5432/test?sslmode=disable",
                "postgresql://u:p@h:5432/e2e?sslmode=disable",
            ),
            ("postgres://h?x=1", "postgres://h/e2e?x=1"),
        ];
        for (url, want) in cases {
            assert_eq!(with_database(url, "e2e").unwrap(), want, "{url}");
        }
    }
}
