//! Ingest and liveness rules that need a real store (SQLite in memory).

use anyhow::Result;
use meshtable::ingest::{Decoded, decode, retained_is_news};
use meshtable::liveness;
use meshtable_proto::{Hello, Report, Topic, encode_cbor, examples};
use meshtable_store::{Incoming, Outcome, Store};

const T0: i64 = 1_800_000_000_000;

fn decoded(topic: &str, payload: &[u8]) -> (Topic, Report) {
    match decode(topic, payload) {
        Decoded::Report(t, r) => (t, *r),
        Decoded::Rejected { reason, detail } => panic!("{topic}: {reason}: {detail}"),
    }
}

#[tokio::test]
async fn retained_copies_are_recorded_only_when_they_say_something_new() -> Result<()> {
    let store = Store::connect("sqlite::memory:").await?;
    let hello = examples::hello_v1();
    let (ht, hr) = decoded("meshtable/v1/net/n1/hello", &encode_cbor(&hello));
    let online = examples::state_online_v1();
    let (st, on) = decoded("meshtable/v1/net/n1/state", &encode_cbor(&online));
    let (_, off) = decoded(
        "meshtable/v1/net/n1/state",
        &encode_cbor(&examples::state_offline_v1()),
    );

    // Unknown node: everything is news.
    assert!(retained_is_news(&store, &ht, &hr).await?);
    assert!(retained_is_news(&store, &st, &on).await?);

    assert_eq!(
        store
            .record_batch(&[Incoming::new(&ht.network, &ht.node, &hr, T0)])
            .await?,
        [Outcome::Inserted]
    );
    // The same hello and status again: old news.
    assert!(!retained_is_news(&store, &ht, &hr).await?);
    assert!(!retained_is_news(&store, &st, &on).await?);
    // A changed hello or status: news.
    let other = Hello {
        hostname: "renamed".to_owned(),
        ..hello
    };
    let (_, other) = decoded("meshtable/v1/net/n1/hello", &encode_cbor(&other));
    assert!(retained_is_news(&store, &ht, &other).await?);
    assert!(retained_is_news(&store, &st, &off).await?);
    Ok(())
}

#[tokio::test]
async fn sweep_marks_silent_nodes_offline_once() -> Result<()> {
    let store = Store::connect("sqlite::memory:").await?;
    let hello = examples::hello_v1(); // interval 60 s
    store.record_hello("net", "quiet", &hello, T0).await?;
    store
        .record_hello("net", "chatty", &hello, T0 + 150_000)
        .await?;

    // 3 intervals = 180 s: "quiet" was last seen 181 s before, "chatty" 31 s.
    let now = T0 + 181_000;
    let changed = liveness::sweep(&store, now, 3).await?;
    assert_eq!(changed, vec![("net".to_owned(), "quiet".to_owned())]);
    // Idempotent.
    assert!(liveness::sweep(&store, now, 3).await?.is_empty());
    let nodes = store.nodes(Some("net")).await?;
    let status: Vec<(&str, &str)> = nodes
        .iter()
        .map(|n| (n.node.as_str(), n.status.as_str()))
        .collect();
    assert_eq!(status, [("chatty", "online"), ("quiet", "offline")]);
    Ok(())
}
