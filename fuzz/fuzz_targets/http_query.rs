//! The controller's HTTP input parsing: query strings, times, and the
//! credentials read from `Cookie` and `Authorization` headers. Any input
//! must give a value or a 400-style error, never a panic.
#![no_main]

use axum::http::{HeaderValue, Request, header};
use libfuzzer_sys::fuzz_target;
use meshtable::api::{parse_network, parse_query, parse_series_query, parse_time};
use meshtable::auth::caller::cookie;
use meshtable::auth::secret::looks_like_token;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_query(Some(&text), &[]);
    if let Ok(q) = parse_query(Some(&text), &["network", "from", "to"]) {
        let _ = parse_network(q.get("network").cloned());
    }
    let _ = parse_series_query(Some(&text), 1_764_000_000_000);
    let _ = parse_series_query(Some(&text), i64::MIN);
    let _ = parse_series_query(Some(&text), i64::MAX);
    let _ = parse_time("from", &text);

    // Raw header bytes, as a client may send them.
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let request = Request::builder()
            .header(header::COOKIE, value.clone())
            .header(header::AUTHORIZATION, value)
            .body(())
            .expect("request");
        let (parts, ()) = request.into_parts();
        let _ = cookie(&parts, meshtable::auth::SESSION_COOKIE);
        let _ = cookie(&parts, "");
        if let Some(t) = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            let _ = looks_like_token(t.trim());
        }
    }
    let _ = meshtable::enroll::looks_like_token(&text);
    let _ = meshtable::auth::api::parse_ttl(&text);
});
