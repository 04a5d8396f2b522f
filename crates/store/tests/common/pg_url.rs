//! PostgreSQL URL handling shared by the store's tests and its benchmark
//! example (which includes this file by path).

/// The same server URL with another database name.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{db}?{q}"),
        None => format!("{server}/{db}"),
    }
}

#[test]
fn database_urls() {
    let check = |url: &str, expect: &str| assert_eq!(with_database(url, "x"), expect);
    check(
        "postgres://postgres@127.0.0.1:5432/test",
        "postgres://postgres@127.0.0.1:5432/x",
    );
    check(
        "postgres://u:p@h/test?sslmode=disable",
        "postgres://u:p@h/x?sslmode=disable",
    );
    check("postgres://h:5432", "postgres://h:5432/x");
    check("postgresql://h/", "postgresql://h/x");
}
