//! The corpus the `http_query` fuzzer found (`fuzz/run.sh`), kept as
//! regression tests: every input of `tests/fuzz/http_query/` goes through
//! the query, time and credential parsers again, must not panic, and must
//! be accepted or refused as `tests/fuzz/http_query/expected.txt` records.
//!
//! `fuzz/run.sh` rewrites the inputs and, through
//! `MESHTABLE_BLESS=1 cargo test -p meshtable --test fuzz_corpus`, the
//! expectations; without it an input missing from `expected.txt`, or an
//! entry without its input, fails the test.

use std::collections::BTreeMap;
use std::path::Path;

use axum::http::{HeaderValue, Request, header};
use meshtable::api::{ApiError, parse_query, parse_series_query, parse_time};
use meshtable::auth::SESSION_COOKIE;
use meshtable::auth::caller::cookie;

/// `ok`, or the status code of the refusal (always 400 for a parser).
fn status<T>(r: Result<T, ApiError>) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(e) => {
            let code = axum::response::IntoResponse::into_response(e).status();
            code.as_u16().to_string()
        }
    }
}

/// How the parsers take `data` (as the fuzz target feeds it).
fn classify(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let query = status(parse_query(Some(&text), &["network", "from", "to"]));
    let series = status(parse_series_query(Some(&text), 1_764_000_000_000));
    let time = status(parse_time("from", &text));
    let session = match HeaderValue::from_bytes(data) {
        Err(_) => "bad_header".to_owned(),
        Ok(value) => {
            let (parts, ()) = Request::builder()
                .header(header::COOKIE, value)
                .body(())
                .unwrap()
                .into_parts();
            match cookie(&parts, SESSION_COOKIE) {
                Some(_) => "session".to_owned(),
                None => "none".to_owned(),
            }
        }
    };
    format!("query={query} series={series} time={time} cookie={session}")
}

#[test]
fn http_query_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/http_query");
    let expected_path = dir.join("expected.txt");
    let mut got = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name != "expected.txt" {
            got.insert(name, classify(&std::fs::read(&path).unwrap()));
        }
    }
    assert!(
        got.len() >= 10,
        "only {} inputs in {}",
        got.len(),
        dir.display()
    );
    let text: String = got.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    if std::env::var_os("MESHTABLE_BLESS").is_some() {
        std::fs::write(&expected_path, &text).unwrap();
        return;
    }
    let stored = std::fs::read_to_string(&expected_path)
        .unwrap_or_else(|e| panic!("{}: {e} (run fuzz/run.sh)", expected_path.display()));
    let want: BTreeMap<&str, &str> = stored.lines().filter_map(|l| l.split_once(' ')).collect();
    for (name, class) in &got {
        assert_eq!(
            Some(&class.as_str()),
            want.get(name.as_str()),
            "http_query/{name}: classified differently (or not recorded)"
        );
    }
    for name in want.keys() {
        assert!(
            got.contains_key(*name),
            "http_query/{name}: recorded, input missing"
        );
    }
}

#[test]
fn classifier_tells_good_from_bad() {
    assert_eq!(
        classify(b"from=2026-11-28T15:40:00Z&to=1764344400000"),
        "query=ok series=400 time=400 cookie=none"
    );
    let good = format!("{SESSION_COOKIE}={}", "a".repeat(64));
    assert!(classify(good.as_bytes()).ends_with("cookie=session"));
}
