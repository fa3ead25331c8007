//! Telemetry: the fields of the observer events (`tracing.rs` checks the `tracing` side).

mod support;

use std::time::Duration;

use mllp_actors::{CloseReason, ServerConfig};
use support::{Rec, TestServer};

/// Connection and message events carry the documented fields and durations.
#[tokio::test(start_paused = true)]
async fn events_carry_documented_fields() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (mut client, id) = server.connect_registered().await;
    assert_eq!(client.request("sleep 3").await, "slept");
    assert_eq!(client.request("silent\nnext").await, "next");
    drop(client);
    let (reason, messages) = server.recorder.stop_of(id).await;
    assert_eq!((reason, messages), (CloseReason::PeerClosed, 3));
    server.shutdown().await;

    let events = server.recorder.events();
    match &events[0] {
        Rec::Start {
            id: start_id,
            peer,
            local,
            tls,
        } => {
            assert_eq!(*start_id, id);
            assert!(peer.ip().is_loopback());
            assert_eq!(*local, server.addr());
            assert!(!tls);
        }
        other => panic!("first event is {other:?}"),
    }
    let stops: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Rec::MsgStop {
                command,
                response,
                size,
                duration,
                ..
            } => Some((command.as_str(), response.clone(), *size, *duration)),
            _ => None,
        })
        .collect();
    assert_eq!(stops.len(), 3);
    let (command, response, size, duration) = &stops[0];
    assert_eq!(
        (*command, response.as_deref(), *size),
        ("sleep", Some("slept"), "slept\n".len())
    );
    assert!(*duration >= Duration::from_secs(3) && *duration < Duration::from_secs(4));
    // A handler that answers nothing is a stop without a response.
    assert_eq!(
        (stops[1].0, stops[1].1.as_deref(), stops[1].2),
        ("silent", None, 0)
    );
    assert_eq!(stops[2].1.as_deref(), Some("next"));
    match events.last() {
        Some(Rec::Stop { duration, .. }) => assert!(*duration >= Duration::from_secs(3)),
        other => panic!("last event is {other:?}"),
    }
    server.recorder.assert_consistent();
}
