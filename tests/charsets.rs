//! Character sets over real loopback sockets: text decoded by MSH-18 for the handler, bytes
//! invalid in the declared set detected (accepted or refused), allow-lists, stored bytes
//! untouched.

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mllp::Server;
use mllp::app::{Charsets, InvalidText, Request, Router};
use mllp::store::{DirStore, StoreLayer};
use support::{Peer, field, start, within};

fn fixture(name: &str) -> Bytes {
    let path = format!(
        "{}/tests/fixtures/partner/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    Bytes::from(std::fs::read(path).unwrap())
}

/// A router whose handler records PID-5 as text (decoded by MSH-18), or the error's text.
fn reading(names: Arc<Mutex<Vec<String>>>) -> Router {
    Router::new().route("*", move |req: Request| {
        let names = names.clone();
        async move {
            let text = match req.message().text("PID-5") {
                Ok(text) => text.unwrap_or_default(),
                Err(e) => format!("error: {e}"),
            };
            names.lock().unwrap().push(text);
        }
    })
}

/// The handler reads Latin-1 and UTF-8 names as the same UTF-8 text, each by its MSH-18, and
/// the store keeps the bytes as they came.
#[tokio::test]
async fn text_is_decoded_by_msh18_and_stored_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let names = Arc::new(Mutex::new(Vec::new()));
    let router = reading(names.clone()).layer(StoreLayer::new(DirStore::open(dir.path()).unwrap()));
    let server = start(Server::builder().router(router).plugin(Charsets::new())).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    for name in ["latin1.hl7", "utf8.hl7"] {
        let ack = peer.call(fixture(name)).await;
        assert_eq!(field(&ack, "MSA-1"), "AA", "{name}");
    }
    assert_eq!(*names.lock().unwrap(), ["Müller^Jürgen", "Müller^Jürgen"]);
    let mut stored: Vec<Vec<u8>> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    stored.sort();
    let mut sent = vec![fixture("latin1.hl7").to_vec(), fixture("utf8.hl7").to_vec()];
    sent.sort();
    assert_eq!(stored, sent, "stored byte for byte");
    within(server.shutdown()).await;
}

/// Mislabelled text (UTF-8 declared `8859/1`, Latin-1 declared `UNICODE UTF-8`) is refused
/// with AR 102 naming the segment under `Reject`, and taken under `Accept` (the default).
#[tokio::test]
async fn mislabelled_text_is_refused_or_accepted_by_policy() {
    let names = Arc::new(Mutex::new(Vec::new()));
    let strict = start(
        Server::builder()
            .router(reading(names.clone()))
            .plugin(Charsets::new().invalid_text(InvalidText::Reject)),
    )
    .await;
    let mut peer = Peer::connect(strict.local_addr()).await;
    for (name, charset) in [
        ("utf8_labelled_latin1.hl7", "8859/1"),
        ("latin1_labelled_utf8.hl7", "UNICODE UTF-8"),
    ] {
        let ack = peer.call(fixture(name)).await;
        assert_eq!(field(&ack, "MSA-1"), "AR", "{name}");
        assert_eq!(field(&ack, "ERR-3.1"), "102");
        assert_eq!(field(&ack, "ERR-2.1"), "PID");
        assert!(
            field(&ack, "ERR-8").contains(charset),
            "{}",
            field(&ack, "ERR-8")
        );
    }
    assert!(
        names.lock().unwrap().is_empty(),
        "never reached the handler"
    );
    within(strict.shutdown()).await;

    let lenient = start(
        Server::builder()
            .router(reading(names.clone()))
            .plugin(Charsets::new()),
    )
    .await;
    let mut peer = Peer::connect(lenient.local_addr()).await;
    let ack = peer.call(fixture("latin1_labelled_utf8.hl7")).await;
    assert_eq!(field(&ack, "MSA-1"), "AA");
    let seen = names.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].starts_with("error: bytes invalid"), "{seen:?}");
    within(lenient.shutdown()).await;
}

/// With an allow-list, another MSH-18 is refused with AR 103 (table value not found).
#[tokio::test]
async fn charsets_outside_the_allow_list_are_refused() {
    let names = Arc::new(Mutex::new(Vec::new()));
    let server = start(
        Server::builder()
            .router(reading(names))
            .plugin(Charsets::new().allow(["UNICODE UTF-8"])),
    )
    .await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let ack = peer.call(fixture("latin1.hl7")).await;
    assert_eq!(field(&ack, "MSA-1"), "AR");
    assert_eq!(field(&ack, "ERR-3.1"), "103");
    let ack = peer.call(fixture("utf8.hl7")).await;
    assert_eq!(field(&ack, "MSA-1"), "AA");
    within(server.shutdown()).await;
}
