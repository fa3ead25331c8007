//! Reading, ordering, back-pressure and the connection limit.

mod support;

use std::io;

use mllp_actors::{CloseReason, ServerConfig};
use support::{Rec, TestServer, eventually, within};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// A line split across writes is one request; several lines in one write are several requests.
#[tokio::test]
async fn split_and_coalesced_lines_are_separate_requests() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut client = server.connect().await;
    client.send_raw(b"hel").await.unwrap();
    client.send_raw(b"lo\nwor").await.unwrap();
    client.send_raw(b"ld\nthird\n").await.unwrap();
    assert_eq!(client.recv().await.as_deref(), Some("hello"));
    assert_eq!(client.recv().await.as_deref(), Some("world"));
    assert_eq!(client.recv().await.as_deref(), Some("third"));
    drop(client);
    server.finish().await;
}

/// With several requests in flight, responses still go out in arrival order even when a later
/// handler finishes first.
#[tokio::test]
async fn pipelined_responses_keep_arrival_order() {
    let server = TestServer::start(ServerConfig::default().max_in_flight(4)).await;
    let (mut client, id) = server.connect_registered().await;
    client.send_raw(b"block\nb\nc\nd").await.unwrap();
    client.send_raw(b"\n").await.unwrap();
    // All four handlers started: the first is blocked, the other three have finished.
    server.recorder.message_starts(4).await;
    let snapshot = server.handle.connections().await;
    assert_eq!(snapshot.len(), 1);
    assert_eq!(snapshot[0].id, id);
    assert_eq!(snapshot[0].in_flight, 4);
    assert_eq!(snapshot[0].messages, 0);

    server.release(1);
    for expected in ["unblocked", "b", "c", "d"] {
        assert_eq!(client.recv().await.as_deref(), Some(expected));
    }
    let commands: Vec<_> = server
        .recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Rec::MsgStop { command, .. } => Some(command),
            _ => None,
        })
        .collect();
    assert_eq!(commands, ["block", "b", "c", "d"]);
    drop(client);
    assert_eq!(
        server.recorder.stop_of(id).await,
        (CloseReason::PeerClosed, 4)
    );
    server.finish().await;
}

/// With `max_in_flight = 1` and a blocked handler, the server reads nothing more: the peer's
/// writes stall once the socket buffers are full, and everything is answered once the handler
/// finishes.
#[tokio::test]
async fn busy_handler_pushes_back_on_the_sender() {
    const LINE: usize = 1000;
    const CAP: usize = 64 << 20;

    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let protocol = support::Lines::new();
    let server = TestServer::start_on(
        listener,
        protocol,
        mllp_actors::PlainTcp,
        ServerConfig::default(),
    )
    .await;

    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    let stream = within(socket.connect(server.addr())).await.unwrap();
    let id = server.recorder.nth_start(1).await;
    stream.try_write(b"block\n").unwrap();
    server
        .recorder
        .wait_for(|events| events.iter().any(|e| matches!(e, Rec::MsgStart { .. })))
        .await;
    // A second connection's round trip is the barrier: on this single-threaded runtime, once it
    // completes, the first connection's task has run since its bytes arrived.
    let (mut probe, _) = server.connect_registered().await;

    let mut line = vec![b'y'; LINE];
    line[LINE - 1] = b'\n';
    let mut written = 0;
    loop {
        let stalled = loop {
            if written >= CAP {
                break false;
            }
            match stream.try_write(&line[written % LINE..]) {
                Ok(n) => written += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break true,
                Err(error) => panic!("write failed: {error}"),
            }
        };
        assert!(
            stalled,
            "the server kept reading {written} bytes while its handler was busy"
        );
        assert_eq!(probe.request("probe").await, "probe");
        // Still stalled after the server had its turn: it is not reading.
        match stream.try_write(&line[written % LINE..]) {
            Ok(n) => written += n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) => panic!("write failed: {error}"),
        }
    }
    let snapshot = server.handle.connections().await;
    let first = snapshot.iter().find(|c| c.id == id).expect("registered");
    assert_eq!((first.in_flight, first.messages), (1, 0));

    // Let the handler finish, complete the partial line, and read every answer.
    server.release(1);
    let lines = written.div_ceil(LINE);
    let rest = line[written % LINE..].to_vec();
    let (read_half, mut write_half) = stream.into_split();
    let writer = tokio::spawn(async move {
        if written % LINE != 0 {
            write_half.write_all(&rest).await.unwrap();
        }
        write_half
    });
    let mut reader = tokio::io::BufReader::new(read_half);
    let mut answer = String::new();
    reader.read_line(&mut answer).await.unwrap();
    assert_eq!(answer, "unblocked\n");
    let expected = format!("{}\n", "y".repeat(LINE - 1));
    for n in 0..lines {
        answer.clear();
        within(reader.read_line(&mut answer)).await.unwrap();
        assert_eq!(answer, expected, "answer {n}");
    }
    let write_half = within(writer).await.unwrap();
    let snapshot = server.handle.connections().await;
    let first = snapshot.iter().find(|c| c.id == id).expect("registered");
    assert_eq!(first.messages, lines as u64 + 1);
    drop((reader, write_half, probe));
    server.finish().await;
}

/// At `max_connections` the next peer waits in the backlog (it is not accepted and dropped),
/// and is served as soon as a slot frees.
#[tokio::test]
async fn connection_past_the_limit_waits_for_a_free_slot() {
    let server = TestServer::start(ServerConfig::default().max_connections(2)).await;
    let (mut first, first_id) = server.connect_registered().await;
    let (mut second, _) = server.connect_registered().await;
    assert_eq!(first.request("one").await, "one");
    assert_eq!(second.request("two").await, "two");

    let mut third = server.connect().await;
    third.send("three").await;
    // Give the server every chance to (wrongly) take the third peer.
    assert_eq!(second.request("again").await, "again");
    assert_eq!(server.recorder.started().len(), 2);
    assert_eq!(server.handle.connections().await.len(), 2);
    assert_eq!(server.handle.slots_in_use(), 2);

    drop(first);
    assert_eq!(third.recv().await.as_deref(), Some("three"));
    let events = server.recorder.events();
    let stop_first = events
        .iter()
        .position(|e| matches!(e, Rec::Stop { id, .. } if *id == first_id))
        .expect("first stopped");
    let start_third = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Rec::Start { .. }))
        .nth(2)
        .map(|(at, _)| at)
        .expect("third started");
    assert!(
        stop_first < start_third,
        "third started before a slot freed"
    );
    drop((second, third));
    server.finish().await;
}

/// A peer that half-closes after sending still gets its answers; then the connection closes
/// as `PeerClosed`.
#[tokio::test]
async fn half_closed_peer_is_answered_before_close() {
    let server = TestServer::start(ServerConfig::default().max_in_flight(2)).await;
    let (mut client, id) = server.connect_registered().await;
    client.send_raw(b"block\nlast").await.unwrap();
    client.finish().await;
    server.recorder.message_starts(2).await;
    server.release(1);
    assert_eq!(client.recv().await.as_deref(), Some("unblocked"));
    // The unterminated last line is decoded at EOF.
    assert_eq!(client.recv().await.as_deref(), Some("last"));
    client.expect_eof().await;
    assert_eq!(
        server.recorder.stop_of(id).await,
        (CloseReason::PeerClosed, 2)
    );
    server.finish().await;
}

/// Bytes the codec rejects close the connection with the protocol's error kind, after the
/// responses already due.
#[tokio::test]
async fn codec_error_closes_with_protocol_reason() {
    let server = TestServer::start(ServerConfig::default()).await;
    let (mut client, id) = server.connect_registered().await;
    assert_eq!(client.request("fine").await, "fine");
    let long = vec![b'z'; support::MAX_LINE + 10];
    let _ = client.send_raw(&long).await;
    client.expect_eof().await;
    let (reason, messages) = server.recorder.stop_of(id).await;
    assert!(
        matches!(
            reason,
            CloseReason::Protocol {
                kind: "oversize",
                ..
            }
        ),
        "{reason:?}"
    );
    assert_eq!(messages, 1);
    server.finish().await;
}

/// A server-wide handler limit holds a decoded request back until another connection's
/// handler finishes; the waiting connection reads nothing meanwhile.
#[tokio::test]
async fn server_wide_handler_limit_is_shared_by_connections() {
    let server = TestServer::start(ServerConfig::default().max_concurrent_handlers(Some(1))).await;
    let (mut first, _) = server.connect_registered().await;
    let (mut second, second_id) = server.connect_registered().await;
    first.send("block").await;
    server
        .recorder
        .wait_for(|events| events.iter().any(|e| matches!(e, Rec::MsgStart { .. })))
        .await;
    second.send("queued").await;
    eventually(|| async {
        let connections = server.handle.connections().await;
        connections
            .iter()
            .any(|c| c.id == second_id && c.in_flight == 1)
    })
    .await;
    let starts = server
        .recorder
        .events()
        .into_iter()
        .filter(|e| matches!(e, Rec::MsgStart { .. }))
        .count();
    assert_eq!(starts, 1, "the second handler started past the limit");
    server.release(1);
    assert_eq!(first.recv().await.as_deref(), Some("unblocked"));
    assert_eq!(second.recv().await.as_deref(), Some("queued"));
    drop((first, second));
    server.finish().await;
}
