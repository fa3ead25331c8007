//! Ranch-level runtime control through `mllp::ServerHandle`, over real loopback sockets.

mod support;

use mllp::Server;
use mllp::app::{Request, Router};
use support::{Peer, Recorder, Seen, hl7, next_matching, within};

fn router() -> Router {
    Router::new().route("*", |_req: Request| async {})
}

/// Suspend keeps live connections served and holds new peers; resume serves them; closing one
/// connection by id drains it with `server_closed`; the limit can be changed.
#[tokio::test]
async fn suspend_resume_close_and_limit() {
    let (recorder, mut events) = Recorder::new();
    let server = support::start(Server::builder().router(router()).observer(recorder)).await;
    let mut live = Peer::connect(server.local_addr()).await;
    live.call(hl7("ADT^A01", "1", "2.5")).await;

    within(server.suspend()).await;
    assert!(server.is_suspended());
    let mut waiting = Peer::connect(server.local_addr()).await;
    waiting.send(hl7("ADT^A01", "2", "2.5")).await;
    live.call(hl7("ADT^A01", "3", "2.5")).await;
    assert_eq!(server.connections().await.len(), 1);
    within(server.resume()).await;
    within(waiting.recv()).await.expect("served after resume");

    let ids: Vec<u64> = server.connections().await.iter().map(|c| c.id).collect();
    assert_eq!(ids.len(), 2);
    assert!(server.close_connection(ids[0]));
    let stop = next_matching(&mut events, |s| matches!(s, Seen::ConnectionStop { .. })).await;
    assert!(
        matches!(&stop, Seen::ConnectionStop { reason, messages: 2, .. } if reason == "server_closed"),
        "{stop:?}"
    );
    assert!(within(live.recv()).await.is_none(), "EOF after close");
    waiting.call(hl7("ADT^A01", "4", "2.5")).await;

    server.set_max_connections(8).expect("valid limit");
    assert_eq!(server.max_connections(), 8);
    assert!(matches!(
        server.set_max_connections(0),
        Err(mllp::ConfigError::Runtime(_))
    ));
    drop(waiting);
    within(server.shutdown()).await;
}
