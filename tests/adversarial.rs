//! Trying to knock the server over, end to end over loopback: floods, slow peers, resets,
//! limits, failing handlers. Each test asserts what must hold for everyone else (and for the
//! hostile peer's own memory and slots) while the attack runs.

mod support;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use mllp::app::{Request, Router};
use mllp::frame::MllpCodec;
use mllp::hl7::Message;
use mllp::{Server, ServerBuilder, ServerHandle};
use support::{Peer, Recorder, Seen, field, hl7, next_matching, within};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;

/// A test-controlled gate for handlers: each call counts itself as started, then waits for a
/// permit. Messages of type `ORM` skip the gate (probes on other connections).
#[derive(Clone)]
struct Gate {
    permits: Arc<Semaphore>,
    started: Arc<AtomicUsize>,
}

impl Gate {
    fn new() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(0)),
            started: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    fn open(&self) {
        self.permits.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    fn router(&self) -> Router {
        let gate = self.clone();
        Router::new()
            .route("ORM^*", |_req: Request| async {})
            .route("*", move |_req: Request| {
                let gate = gate.clone();
                async move {
                    gate.started.fetch_add(1, Ordering::SeqCst);
                    gate.permits.acquire().await.expect("gate open").forget();
                }
            })
    }
}

/// `0x0B payload 0x1C 0x0D`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(payload.len() + 3);
    wire.push(0x0b);
    wire.extend_from_slice(payload);
    wire.extend_from_slice(&[0x1c, 0x0d]);
    wire
}

/// A listener on a free loopback port with small socket buffers (the accepted sockets inherit
/// them), so that back-pressure shows after a few KiB rather than a few MiB.
fn small_listener() -> TcpListener {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    socket.set_send_buffer_size(4096).expect("sndbuf");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    socket.listen(1024).expect("listen")
}

async fn serve_on(listener: TcpListener, builder: ServerBuilder) -> ServerHandle {
    builder
        .listen(listener)
        .expect("listen")
        .spawn()
        .await
        .expect("start")
}

/// A client socket with small buffers.
async fn small_client(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_send_buffer_size(4096).expect("sndbuf");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    within(socket.connect(addr)).await.expect("connect")
}

/// A round trip on a probe connection: on a single-threaded runtime, once it completes, every
/// other connection's task has had its turn since the bytes written before it arrived.
async fn probe(peer: &mut Peer, n: usize) {
    let control_id = format!("PROBE-{n}");
    let reply = peer.call(hl7("ORM^O01", &control_id, "2.5")).await;
    assert_eq!(field(&reply, "MSA-1"), "AA");
    assert_eq!(field(&reply, "MSA-2"), control_id);
}

/// Writes `wire[*written..]` with `try_write` until the socket would block (`true`) or `cap`
/// bytes are written in all (`false`).
fn write_until_blocked(stream: &TcpStream, wire: &[u8], written: &mut usize) -> bool {
    loop {
        if *written >= wire.len() {
            return false;
        }
        match stream.try_write(&wire[*written..]) {
            Ok(n) => *written += n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return true,
            Err(error) => panic!("write failed: {error}"),
        }
    }
}

/// Writes until the peer's socket stays blocked across a probe round trip: the server has had
/// its turn and still reads nothing. Fails if `wire` is written whole (the server kept reading).
async fn flood_until_pushed_back(stream: &TcpStream, wire: &[u8], probe_peer: &mut Peer) -> usize {
    let mut written = 0;
    let mut round = 0;
    loop {
        assert!(
            write_until_blocked(stream, wire, &mut written),
            "the server kept reading: {written} bytes taken without back-pressure"
        );
        probe(probe_peer, round).await;
        round += 1;
        let before = written;
        if write_until_blocked(stream, wire, &mut written) && written == before {
            return written;
        }
    }
}

/// `count` pipelined ADT frames, control ids `{prefix}-0..`, one buffer.
fn pipelined(prefix: &str, count: usize) -> (Vec<u8>, Vec<usize>) {
    let mut wire = Vec::new();
    let mut ends = Vec::with_capacity(count);
    for i in 0..count {
        wire.extend(frame(&hl7("ADT^A01", &format!("{prefix}-{i}"), "2.5")));
        ends.push(wire.len());
    }
    (wire, ends)
}

/// Reads reply frames from a raw stream half until EOF.
async fn read_replies(read: tokio::net::tcp::OwnedReadHalf) -> Vec<Message> {
    use futures_util::StreamExt;
    let mut framed = tokio_util::codec::FramedRead::new(read, MllpCodec::new());
    let mut replies = Vec::new();
    while let Some(payload) = within(framed.next()).await {
        let payload = payload.expect("reply framing");
        replies.push(Message::parse(payload).expect("reply is HL7"));
    }
    replies
}

/// Pipelining flood behind blocked handlers: the peer writes thousands of frames and reads
/// nothing while every handler waits on a gate. The server starts exactly `max_in_flight`
/// handlers, keeps at most that many requests decoded, and stops reading (the peer's writes
/// block and stay blocked while other connections are served); once the gate opens, every frame
/// the peer managed to write is answered AA, in order, and a half-close then ends the
/// connection after the last answer.
#[tokio::test]
async fn pipelining_flood_is_pushed_back_with_bounded_handlers() {
    const MAX_IN_FLIGHT: usize = 4;
    let gate = Gate::new();
    let server = serve_on(
        small_listener(),
        Server::builder()
            .router(gate.router())
            .max_in_flight(MAX_IN_FLIGHT),
    )
    .await;
    let addr = server.local_addr();
    let mut probe_peer = Peer::connect(addr).await;
    let flood = small_client(addr).await;
    let (wire, ends) = pipelined("FLOOD", 40_000);

    let written = flood_until_pushed_back(&flood, &wire, &mut probe_peer).await;
    assert_eq!(gate.started(), MAX_IN_FLIGHT, "handlers started");
    let busy = server
        .connections()
        .await
        .into_iter()
        .map(|c| c.in_flight)
        .max()
        .unwrap_or(0);
    assert_eq!(busy, MAX_IN_FLIGHT, "requests decoded and not answered");

    // Open the gate, finish the frame cut by the last write, half-close: every whole frame
    // written is answered, in order, then the server closes.
    gate.open();
    let whole = ends.partition_point(|&end| end <= written);
    let cut_from = if whole == 0 { 0 } else { ends[whole - 1] };
    let (read, mut write) = flood.into_split();
    let tail = if written > cut_from {
        wire[written..ends[whole]].to_vec()
    } else {
        Vec::new()
    };
    let answered = whole + usize::from(!tail.is_empty());
    let writer = tokio::spawn(async move {
        write.write_all(&tail).await.expect("finish the cut frame");
        write.shutdown().await.expect("half-close");
        write
    });
    let replies = read_replies(read).await;
    let _write = within(writer).await.expect("writer");
    assert_eq!(replies.len(), answered, "one answer per whole frame");
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(field(reply, "MSA-1"), "AA");
        assert_eq!(field(reply, "MSA-2"), format!("FLOOD-{i}"));
    }
    within(server.shutdown()).await;
}

/// Waits until the server has no live connection (the registry has no event of its own to
/// await; each poll is a round trip to the connection supervisor).
async fn until_no_connections(server: &ServerHandle) {
    within(async {
        while !server.connections().await.is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// The close reasons of the next `n` connection stops.
async fn next_stops(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>, n: usize) -> Vec<String> {
    let mut reasons = Vec::with_capacity(n);
    for _ in 0..n {
        match next_matching(rx, |seen| matches!(seen, Seen::ConnectionStop { .. })).await {
            Seen::ConnectionStop { reason, .. } => reasons.push(reason),
            _ => unreachable!(),
        }
    }
    reasons
}

/// A peer that writes and never reads: the server answers only as long as its answers fit in
/// the socket buffers, then stops reading (the peer's writes block), keeps nothing queued but
/// the request whose answer is being written, and closes the connection at `write_timeout`;
/// other connections are served throughout.
#[tokio::test(start_paused = true)]
async fn peer_that_never_reads_is_pushed_back_then_closed_at_write_timeout() {
    let gate = Gate::new();
    gate.open();
    let (recorder, mut events) = Recorder::new();
    let server = serve_on(
        small_listener(),
        Server::builder()
            .router(gate.router())
            .write_timeout(Duration::from_secs(5))
            .observer(recorder),
    )
    .await;
    let addr = server.local_addr();
    let mut probe_peer = Peer::connect(addr).await;
    let flood = small_client(addr).await;
    let (wire, _) = pipelined("DEAF", 40_000);

    flood_until_pushed_back(&flood, &wire, &mut probe_peer).await;
    // Answers are ~200 bytes; the buffers on both sides hold a few KiB of them.
    let handled = gate.started();
    assert!(
        handled < 1000,
        "{handled} messages handled for a peer that reads nothing"
    );
    for connection in server.connections().await {
        assert!(connection.in_flight <= 1, "{connection:?}");
    }

    // Nothing more happens until `write_timeout` closes the deaf peer.
    let reasons = next_stops(&mut events, 1).await;
    assert_eq!(reasons, ["write_timeout"]);
    assert_eq!(gate.started(), handled, "handled more after the stall");
    probe(&mut probe_peer, 1000).await;
    drop(flood);
    within(server.shutdown()).await;
}

/// More peers than `max_connections` at once: the extra ones wait in the kernel backlog (never
/// accepted and dropped) and each is answered once a slot frees; the server never holds more
/// than the limit.
#[tokio::test]
async fn peers_past_max_connections_wait_and_are_all_served() {
    const LIMIT: usize = 4;
    const PEERS: usize = 12;
    let (recorder, mut events) = Recorder::new();
    let server = support::start(
        Server::builder()
            .router(Router::new().route("*", |_req: Request| async {}))
            .max_connections(LIMIT)
            .observer(recorder),
    )
    .await;
    let mut peers = Vec::new();
    for i in 0..PEERS {
        let mut peer = Peer::connect(server.local_addr()).await;
        peer.send(hl7("ADT^A01", &format!("MANY-{i}"), "2.5")).await;
        peers.push(peer);
    }
    // Served in waves of LIMIT: each wave is answered, then closes and lets the next one in.
    for wave in peers.chunks_mut(LIMIT) {
        for peer in wave.iter_mut() {
            let reply = within(peer.recv()).await.expect("an answer, not a close");
            assert_eq!(field(&reply, "MSA-1"), "AA");
        }
        let live = server.connections().await.len();
        assert!(live <= LIMIT, "{live} connections past the limit");
        for peer in wave.iter_mut() {
            peer.framed.get_mut().shutdown().await.expect("close");
        }
    }
    let mut starts = 0;
    while let Ok(seen) = events.try_recv() {
        starts += usize::from(matches!(seen, Seen::ConnectionStart { .. }));
    }
    assert!(
        starts <= PEERS,
        "{starts} connections started for {PEERS} peers"
    );
    drop(peers);
    until_no_connections(&server).await;
    within(server.shutdown()).await;
}

/// A flood of peers that connect and vanish (close at once, reset with `SO_LINGER 0`, reset
/// in the middle of a frame, or after one answered message and half a frame) leaks no slot and
/// dispatches nothing for a partial frame: the registry empties, every one of the
/// `max_connections` slots serves a good peer at once, and exactly the whole frames were
/// handled.
#[tokio::test]
async fn connect_and_reset_flood_leaks_no_slot_and_dispatches_no_partial_frame() {
    const LIMIT: usize = 8;
    const CYCLES: usize = 400;
    let gate = Gate::new();
    gate.open();
    let server = support::start(
        Server::builder()
            .router(gate.router())
            .max_connections(LIMIT),
    )
    .await;
    let addr = server.local_addr();
    let whole = hl7("ADT^A01", "WHOLE", "2.5");
    let half = &frame(&hl7("ADT^A01", "HALF", "2.5"))[..40];
    let mut answered = 0;
    for cycle in 0..CYCLES {
        let stream = within(TcpStream::connect(addr)).await.expect("connect");
        match cycle % 4 {
            0 => drop(stream),
            1 => {
                stream.set_zero_linger().expect("linger");
                drop(stream);
            }
            2 => {
                let mut stream = stream;
                stream.write_all(half).await.expect("write");
                stream.set_zero_linger().expect("linger");
                drop(stream);
            }
            _ => {
                let mut peer = Peer {
                    framed: tokio_util::codec::Framed::new(stream, MllpCodec::new()),
                };
                let reply = peer.call(whole.clone()).await;
                assert_eq!(field(&reply, "MSA-1"), "AA");
                answered += 1;
                peer.send_raw(half).await;
                peer.framed.get_ref().set_zero_linger().expect("linger");
                drop(peer);
            }
        }
    }
    until_no_connections(&server).await;
    assert_eq!(gate.started(), answered, "handlers run for partial frames");

    // Every slot is free: LIMIT peers are connected and served at the same time.
    let mut peers = Vec::new();
    for i in 0..LIMIT {
        let mut peer = Peer::connect(addr).await;
        peer.send(hl7("ADT^A01", &format!("AFTER-{i}"), "2.5"))
            .await;
        peers.push(peer);
    }
    for (i, peer) in peers.iter_mut().enumerate() {
        let reply = within(peer.recv()).await.expect("served");
        assert_eq!(field(&reply, "MSA-2"), format!("AFTER-{i}"));
    }
    drop(peers);
    within(server.shutdown()).await;
}

/// Slowloris: peers that each hold a frame open with one byte a second are all closed by
/// `frame_timeout` (their bytes keep the idle clock from firing, not the frame clock), while a
/// good peer is answered every second; afterwards their slots serve new peers.
#[tokio::test(start_paused = true)]
async fn slowloris_peers_are_closed_by_frame_timeout_while_others_are_served() {
    const SLOW: usize = 8;
    let (recorder, mut events) = Recorder::new();
    let server = support::start(
        Server::builder()
            .router(Router::new().route("*", |_req: Request| async {}))
            .max_connections(SLOW + 1)
            .frame_timeout(Duration::from_secs(10))
            .idle_timeout(Some(Duration::from_secs(5)))
            .observer(recorder),
    )
    .await;
    let addr = server.local_addr();
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(b"\x0bMSH|^~\\&|").await.expect("write");
        slow.push(stream);
    }
    let mut good = Peer::connect(addr).await;
    for second in 0..15 {
        for stream in &mut slow {
            // Once closed by the server, writes fail: that is the point.
            let _ = stream.write_all(b"X").await;
        }
        let reply = good
            .call(hl7("ADT^A01", &format!("GOOD-{second}"), "2.5"))
            .await;
        assert_eq!(field(&reply, "MSA-1"), "AA");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let reasons = next_stops(&mut events, SLOW).await;
    assert!(reasons.iter().all(|r| r == "frame_timeout"), "{reasons:?}");
    drop(slow);
    let mut fresh = Vec::new();
    for i in 0..SLOW {
        let mut peer = Peer::connect(addr).await;
        let reply = peer.call(hl7("ADT^A01", &format!("NEW-{i}"), "2.5")).await;
        assert_eq!(field(&reply, "MSA-1"), "AA");
        fresh.push(peer);
    }
    drop(fresh);
    within(server.shutdown()).await;
}

/// A valid ADT padded (with an NTE segment) to exactly `size` bytes of payload.
fn padded(control_id: &str, size: usize) -> Bytes {
    let mut payload = hl7("ADT^A01", control_id, "2.5").to_vec();
    payload.extend_from_slice(b"NTE|1||");
    let fill = size - payload.len() - 1;
    payload.extend(std::iter::repeat_n(b'x', fill));
    payload.push(b'\r');
    assert_eq!(payload.len(), size);
    Bytes::from(payload)
}

/// Frames at the limit and just past it on many connections at once, beside peers that send
/// one endless frame: a frame of exactly `max_message_size` is answered AA, one byte more closes
/// as `oversize` with no answer, and an endless frame is cut off before its sender has written
/// much beyond the limit (the server never buffers more than the limit and one read of it).
#[tokio::test]
async fn frames_at_and_past_the_limit_on_many_connections_are_bounded() {
    const LIMIT: usize = 32 * 1024;
    const EACH: usize = 6;
    // The most an endless frame's sender may write: the limit, one read of the server, and the
    // socket buffers of both sides (small here), with room to spare.
    const BOUND: usize = LIMIT + 512 * 1024;
    let (recorder, mut events) = Recorder::new();
    let server = serve_on(
        small_listener(),
        Server::builder()
            .router(Router::new().route("*", |_req: Request| async {}))
            .max_message_size(LIMIT)
            .observer(recorder),
    )
    .await;
    let addr = server.local_addr();

    let mut endless = Vec::new();
    for _ in 0..EACH {
        let mut stream = small_client(addr).await;
        endless.push(tokio::spawn(async move {
            let chunk = vec![b'x'; 4096];
            stream.write_all(b"\x0bMSH|^~\\&|").await.expect("start");
            let mut sent = 0;
            while sent < 64 * BOUND {
                match stream.write_all(&chunk).await {
                    Ok(()) => sent += chunk.len(),
                    Err(_) => return sent,
                }
            }
            sent
        }));
    }
    let mut at = Vec::new();
    let mut past = Vec::new();
    for i in 0..EACH {
        let mut peer = Peer::connect(addr).await;
        peer.send(padded(&format!("AT-{i}"), LIMIT)).await;
        at.push(peer);
        let mut peer = Peer::connect(addr).await;
        peer.send(padded(&format!("PAST-{i}"), LIMIT + 1)).await;
        past.push(peer);
    }
    for (i, peer) in at.iter_mut().enumerate() {
        let reply = within(peer.recv()).await.expect("answered");
        assert_eq!(field(&reply, "MSA-1"), "AA");
        assert_eq!(field(&reply, "MSA-2"), format!("AT-{i}"));
    }
    for peer in &mut past {
        peer.expect_closed().await;
    }
    for task in endless {
        let sent = within(task).await.expect("writer");
        assert!(
            sent < BOUND,
            "{sent} bytes of one frame taken (limit {LIMIT})"
        );
    }
    let reasons = next_stops(&mut events, 2 * EACH).await;
    assert!(reasons.iter().all(|r| r == "oversize"), "{reasons:?}");
    drop((at, past));
    within(server.shutdown()).await;
}

/// A handler that panics (a bug in user code).
async fn boom(_req: Request) {
    panic!("boom")
}

/// Handlers that panic on every message of one connection, and one that never returns on
/// another, disturb no one: each panic is answered AE (never AA), the stuck handler is answered
/// AE at `handler_timeout`, and a third connection is answered AA throughout.
#[tokio::test(start_paused = true)]
async fn failing_handlers_on_one_connection_never_stall_another() {
    let router = Router::new()
        .route("ADT^A01", boom)
        .route("ADT^A02", |_req: Request| std::future::pending::<()>())
        .route("*", |_req: Request| async {});
    let server = support::start(
        Server::builder()
            .router(router)
            .handler_timeout(Duration::from_secs(5))
            .max_in_flight(8),
    )
    .await;
    let addr = server.local_addr();
    let mut stuck = Peer::connect(addr).await;
    for i in 0..8 {
        stuck
            .send(hl7("ADT^A02", &format!("STUCK-{i}"), "2.5"))
            .await;
    }
    let mut panics = Peer::connect(addr).await;
    let mut good = Peer::connect(addr).await;
    for i in 0..50 {
        let reply = panics
            .call(hl7("ADT^A01", &format!("PANIC-{i}"), "2.5"))
            .await;
        assert_eq!(field(&reply, "MSA-1"), "AE");
        assert_eq!(field(&reply, "ERR-3.1"), "207");
        let reply = good.call(hl7("ORU^R01", &format!("GOOD-{i}"), "2.5")).await;
        assert_eq!(field(&reply, "MSA-1"), "AA");
        assert_eq!(field(&reply, "MSA-2"), format!("GOOD-{i}"));
    }
    for i in 0..8 {
        let reply = within(stuck.recv()).await.expect("answered");
        assert_eq!(field(&reply, "MSA-1"), "AE");
        assert_eq!(field(&reply, "MSA-2"), format!("STUCK-{i}"));
    }
    within(server.shutdown()).await;
}

/// A peer that half-closes in the middle of its second frame gets the first one answered, then
/// the connection closes as `truncated`: the partial frame is never dispatched.
#[tokio::test]
async fn half_close_mid_frame_answers_the_whole_frames_only() {
    let gate = Gate::new();
    gate.open();
    let (recorder, mut events) = Recorder::new();
    let server = support::start(Server::builder().router(gate.router()).observer(recorder)).await;
    let stream = TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let mut wire = frame(&hl7("ADT^A01", "WHOLE", "2.5"));
    wire.extend_from_slice(&frame(&hl7("ADT^A01", "PART", "2.5"))[..60]);
    let (read, mut write) = stream.into_split();
    write.write_all(&wire).await.expect("write");
    write.shutdown().await.expect("half-close");
    let replies = read_replies(read).await;
    assert_eq!(replies.len(), 1);
    assert_eq!(field(&replies[0], "MSA-2"), "WHOLE");
    assert_eq!(next_stops(&mut events, 1).await, ["truncated"]);
    assert_eq!(gate.started(), 1, "the partial frame was dispatched");
    within(server.shutdown()).await;
}

/// A peer that resets while its handler is busy costs its slot only until the handler ends:
/// the answer cannot be written, the connection closes, and the only slot serves the next peer.
#[tokio::test]
async fn reset_during_a_busy_handler_frees_the_slot() {
    let gate = Gate::new();
    let server = support::start(Server::builder().router(gate.router()).max_connections(1)).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    peer.send(hl7("ADT^A01", "GONE", "2.5")).await;
    within(async {
        while gate.started() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    peer.framed.get_ref().set_zero_linger().expect("linger");
    drop(peer);
    gate.open();
    let mut next = Peer::connect(server.local_addr()).await;
    let reply = next.call(hl7("ADT^A01", "NEXT", "2.5")).await;
    assert_eq!(field(&reply, "MSA-2"), "NEXT");
    drop(next);
    until_no_connections(&server).await;
    within(server.shutdown()).await;
}
