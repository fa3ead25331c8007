//! Test protocols, an event recorder and a line client for the supervision-tree tests.
//!
//! `Lines` is a `\n`-terminated line protocol whose handler obeys the line's first word, so one
//! protocol is the echo, the slow and the crashing protocol at once:
//! - `block`: waits for a permit from the test's gate, then answers `unblocked`;
//! - `hang`: never finishes (its drop guard counts when the task is dropped);
//! - `panic`: panics with `boom`;
//! - `silent`: answers nothing;
//! - `sleep N`: sleeps N seconds (paused time), then answers `slept`;
//! - `big N`: answers N bytes of `x`;
//! - anything else: echoed back.
//!
//! Its codec panics on a chosen line (a bug in "runtime" code, not in a handler).
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use mllp_actors::{
    CloseReason, ConnectionInfo, Event, Failure, Observer, PlainTcp, Protocol, Server,
    ServerConfig, ServerHandle, Transport,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::codec::{Decoder, Encoder, LinesCodec, LinesCodecError};

/// A hang guard, never a synchronisation point. Under paused time it is virtual, so keep the
/// timers under test below it.
pub async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .expect("test step hung")
}

/// Polls `condition` (yielding between polls) until it holds: a wait on state that has no event
/// of its own, such as the registry's counters.
pub async fn eventually<F, Fut>(condition: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    within(async {
        while !condition().await {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

// ===== the protocol =====

#[derive(Clone)]
pub struct Lines {
    pub gate: Arc<Semaphore>,
    pub dropped: Arc<AtomicUsize>,
    pub codec_panics_on: Option<String>,
    /// When set, each request costs as many bytes as it has beside itself (its exact
    /// overhead, counted in `exact_overheads` each time it is asked for) and offers a ceiling
    /// of this many times that.
    pub overhead_ceiling_factor: Option<usize>,
    pub exact_overheads: Arc<AtomicUsize>,
}

impl Lines {
    pub fn new() -> Self {
        Self {
            gate: Arc::new(Semaphore::new(0)),
            dropped: Arc::new(AtomicUsize::new(0)),
            codec_panics_on: None,
            overhead_ceiling_factor: None,
            exact_overheads: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// What the tests see of a request: its command word (these are test lines, not patient data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineMeta {
    pub command: String,
    pub len: usize,
}

struct CountDrop(Arc<AtomicUsize>);

impl Drop for CountDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

pub struct LineCodec {
    inner: LinesCodec,
    panics_on: Option<String>,
}

impl Decoder for LineCodec {
    type Item = String;
    type Error = LinesCodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<String>, LinesCodecError> {
        let line = self.inner.decode(src)?;
        if let (Some(line), Some(bad)) = (&line, &self.panics_on) {
            assert!(line != bad, "codec bug triggered");
        }
        Ok(line)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<String>, LinesCodecError> {
        self.inner.decode_eof(src)
    }
}

impl Encoder<String> for LineCodec {
    type Error = LinesCodecError;

    fn encode(&mut self, line: String, dst: &mut BytesMut) -> Result<(), LinesCodecError> {
        self.inner.encode(line, dst)
    }
}

pub const MAX_LINE: usize = 64 * 1024;

impl Protocol for Lines {
    type Request = String;
    type Response = String;
    type Meta = LineMeta;
    type Error = LinesCodecError;
    type Codec = LineCodec;

    fn codec(&self) -> LineCodec {
        LineCodec {
            inner: LinesCodec::new_with_max_length(MAX_LINE),
            panics_on: self.codec_panics_on.clone(),
        }
    }

    fn meta(&self, line: &String) -> LineMeta {
        LineMeta {
            command: line.split(' ').next().unwrap_or_default().to_owned(),
            len: line.len(),
        }
    }

    fn request_overhead(&self, line: &String) -> usize {
        match self.overhead_ceiling_factor {
            Some(_) => {
                self.exact_overheads.fetch_add(1, Ordering::SeqCst);
                line.len()
            }
            None => 0,
        }
    }

    fn request_overhead_ceiling(&self, line: &String) -> Option<usize> {
        self.overhead_ceiling_factor
            .map(|factor| factor * line.len())
    }

    fn meta_overhead(&self, meta: &LineMeta) -> usize {
        match self.overhead_ceiling_factor {
            Some(_) => meta.len,
            None => 0,
        }
    }

    fn handle(
        &self,
        line: String,
        meta: &LineMeta,
        _connection: &ConnectionInfo,
    ) -> impl Future<Output = Option<String>> + Unpin + Send + 'static {
        let gate = Arc::clone(&self.gate);
        let dropped = Arc::clone(&self.dropped);
        let command = meta.command.clone();
        // A handler that does its work before returning its future, as
        // `std::future::ready(f())` does, and panics there.
        if command == "eager" {
            panic!("eager boom");
        }
        Box::pin(async move {
            let arg = line
                .split(' ')
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            match command.as_str() {
                "block" => {
                    let _guard = CountDrop(dropped);
                    gate.acquire().await.expect("gate open").forget();
                    Some("unblocked".to_owned())
                }
                "hang" => {
                    let _guard = CountDrop(dropped);
                    std::future::pending::<Option<String>>().await
                }
                "panic" => panic!("boom"),
                "silent" => None,
                "sleep" => {
                    tokio::time::sleep(Duration::from_secs(arg)).await;
                    Some("slept".to_owned())
                }
                "big" => Some("x".repeat(arg as usize)),
                _ => Some(line),
            }
        })
    }

    fn on_failure(&self, _meta: &LineMeta, failure: &Failure) -> Option<String> {
        Some(format!("failed: {}", failure.kind()))
    }

    fn error_kind(&self, error: &LinesCodecError) -> &'static str {
        match error {
            LinesCodecError::MaxLineLengthExceeded => "oversize",
            LinesCodecError::Io(_) => "io",
        }
    }

    fn connection_span(&self, connection: &ConnectionInfo) -> tracing::Span {
        tracing::info_span!(
            "test.connection",
            id = connection.id() as i64,
            close_reason = tracing::field::Empty,
            messages = tracing::field::Empty,
        )
    }
}

// ===== the recorder =====

/// An owned copy of an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rec {
    Start {
        id: u64,
        peer: SocketAddr,
        local: SocketAddr,
        tls: bool,
    },
    Stop {
        id: u64,
        reason: CloseReason,
        messages: u64,
        duration: Duration,
    },
    MsgStart {
        id: u64,
        command: String,
    },
    MsgStop {
        id: u64,
        command: String,
        response: Option<String>,
        size: usize,
        duration: Duration,
    },
    MsgException {
        id: u64,
        command: String,
        failure: Failure,
        response: Option<String>,
        duration: Duration,
    },
    Refused {
        peer: SocketAddr,
    },
    AcceptorRestart {
        error: String,
        restarts: u32,
    },
    Escalation {
        error: String,
    },
}

pub struct Recorder {
    events: Mutex<Vec<Rec>>,
    changed: watch::Sender<usize>,
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            events: Mutex::new(Vec::new()),
            changed: watch::Sender::new(0),
        })
    }

    pub fn events(&self) -> Vec<Rec> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the events recorded so far.
    pub async fn wait_for(&self, done: impl Fn(&[Rec]) -> bool) -> Vec<Rec> {
        let mut changed = self.changed.subscribe();
        within(changed.wait_for(|_| done(&self.events.lock().unwrap())))
            .await
            .expect("recorder alive");
        self.events()
    }

    /// Waits until at least `n` messages have started (their handlers run or are done).
    pub async fn message_starts(&self, n: usize) {
        self.wait_for(|events| {
            events
                .iter()
                .filter(|e| matches!(e, Rec::MsgStart { .. }))
                .count()
                >= n
        })
        .await;
    }

    /// Waits for the `ConnectionStop` of connection `id` and returns its reason.
    pub async fn stop_of(&self, id: u64) -> (CloseReason, u64) {
        let events = self
            .wait_for(|events| {
                events
                    .iter()
                    .any(|e| matches!(e, Rec::Stop { id: i, .. } if *i == id))
            })
            .await;
        events
            .into_iter()
            .find_map(|e| match e {
                Rec::Stop {
                    id: i,
                    reason,
                    messages,
                    ..
                } if i == id => Some((reason, messages)),
                _ => None,
            })
            .expect("stop present")
    }

    /// Ids of the connections started so far, in order.
    pub fn started(&self) -> Vec<u64> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Rec::Start { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }

    /// Waits for the `n`th connection start (1-based) and returns its id.
    pub async fn nth_start(&self, n: usize) -> u64 {
        self.wait_for(|events| {
            events
                .iter()
                .filter(|e| matches!(e, Rec::Start { .. }))
                .count()
                >= n
        })
        .await;
        self.started()[n - 1]
    }

    /// Checks the telemetry contract on everything recorded: one stop per start, stops after
    /// starts, each message started once and ended once, between its connection's start and
    /// stop, and `messages` on the stop equal to the connection's message starts.
    pub fn assert_consistent(&self) {
        use std::collections::HashMap;
        let events = self.events();
        let mut open: HashMap<u64, (u64, u64)> = HashMap::new(); // id -> (starts, ends)
        let mut closed: HashMap<u64, u64> = HashMap::new();
        for event in &events {
            match event {
                Rec::Start { id, .. } => {
                    assert!(
                        open.insert(*id, (0, 0)).is_none() && !closed.contains_key(id),
                        "connection {id} started twice: {events:?}"
                    );
                }
                Rec::Stop { id, messages, .. } => {
                    let (starts, ends) = open
                        .remove(id)
                        .unwrap_or_else(|| panic!("stop without start for {id}: {events:?}"));
                    assert_eq!(starts, ends, "connection {id} closed with open messages");
                    assert_eq!(*messages, starts, "messages count of {id}");
                    closed.insert(*id, *messages);
                }
                Rec::MsgStart { id, .. } => {
                    let entry = open
                        .get_mut(id)
                        .unwrap_or_else(|| panic!("message outside connection {id}"));
                    entry.0 += 1;
                }
                Rec::MsgStop { id, .. } | Rec::MsgException { id, .. } => {
                    let entry = open
                        .get_mut(id)
                        .unwrap_or_else(|| panic!("message end outside connection {id}"));
                    entry.1 += 1;
                    assert!(entry.1 <= entry.0, "message ended twice on {id}");
                }
                Rec::Refused { .. } | Rec::AcceptorRestart { .. } | Rec::Escalation { .. } => {}
            }
        }
        assert!(open.is_empty(), "connections never stopped: {open:?}");
    }
}

impl Observer<Lines> for Recorder {
    fn on_event(&self, event: &Event<'_, Lines>) {
        let rec = match event {
            Event::ConnectionStart { connection, .. } => Rec::Start {
                id: connection.id(),
                peer: connection.peer(),
                local: connection.local(),
                tls: connection.tls(),
            },
            Event::ConnectionStop {
                connection,
                reason,
                messages,
                duration,
                ..
            } => Rec::Stop {
                id: connection.id(),
                reason: (*reason).clone(),
                messages: *messages,
                duration: *duration,
            },
            Event::MessageStart {
                connection, meta, ..
            } => Rec::MsgStart {
                id: connection.id(),
                command: meta.command.clone(),
            },
            Event::MessageStop {
                connection,
                meta,
                response,
                response_size,
                duration,
                ..
            } => Rec::MsgStop {
                id: connection.id(),
                command: meta.command.clone(),
                response: response.cloned(),
                size: *response_size,
                duration: *duration,
            },
            Event::MessageException {
                connection,
                meta,
                failure,
                response,
                duration,
                ..
            } => Rec::MsgException {
                id: connection.id(),
                command: meta.command.clone(),
                failure: (*failure).clone(),
                response: response.cloned(),
                duration: *duration,
            },
            Event::ConnectionRefused { peer } => Rec::Refused { peer: *peer },
            Event::AcceptorRestart { error, restarts } => Rec::AcceptorRestart {
                error: (*error).to_owned(),
                restarts: *restarts,
            },
            Event::Escalation { error } => Rec::Escalation {
                error: error.to_string(),
            },
            _ => return,
        };
        self.events.lock().unwrap().push(rec);
        self.changed.send_modify(|n| *n += 1);
    }
}

// ===== servers and clients =====

pub struct TestServer {
    pub handle: ServerHandle,
    pub recorder: Arc<Recorder>,
    pub protocol: Lines,
}

impl TestServer {
    pub async fn start(config: ServerConfig) -> Self {
        Self::start_with(Lines::new(), PlainTcp, config).await
    }

    pub async fn start_with<T: Transport>(
        protocol: Lines,
        transport: T,
        config: ServerConfig,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_on(listener, protocol, transport, config).await
    }

    pub async fn start_on<T: Transport>(
        listener: TcpListener,
        protocol: Lines,
        transport: T,
        config: ServerConfig,
    ) -> Self {
        let recorder = Recorder::new();
        let handle = Server::start(
            listener,
            protocol.clone(),
            transport,
            config,
            vec![Arc::clone(&recorder) as Arc<dyn Observer<Lines>>],
        )
        .await
        .expect("server starts");
        Self {
            handle,
            recorder,
            protocol,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    pub async fn connect(&self) -> LineClient {
        LineClient::connect(self.addr()).await
    }

    /// Connects and waits until the server has registered the connection; returns its id.
    pub async fn connect_registered(&self) -> (LineClient, u64) {
        let before = self.recorder.started().len();
        let client = self.connect().await;
        let id = self.recorder.nth_start(before + 1).await;
        (client, id)
    }

    /// Lets `n` blocked handlers go on.
    pub fn release(&self, n: usize) {
        self.protocol.gate.add_permits(n);
    }

    /// How many `block`/`hang` handler futures have been dropped.
    pub fn dropped(&self) -> usize {
        self.protocol.dropped.load(Ordering::SeqCst)
    }

    pub async fn shutdown(&self) -> mllp_actors::ShutdownReport {
        within(self.handle.shutdown()).await
    }

    /// The end of a test: shuts down and checks the recorder's invariants (one stop per start,
    /// every message ended once).
    pub async fn finish(&self) {
        self.shutdown().await;
        self.recorder.assert_consistent();
    }
}

pub struct LineClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl LineClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::from_stream(within(TcpStream::connect(addr)).await.expect("connect"))
    }

    pub fn from_stream(stream: TcpStream) -> Self {
        let (reader, writer) = stream.into_split();
        Self {
            reader: BufReader::new(reader),
            writer,
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes).await
    }

    pub async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes())
            .await
            .expect("send");
    }

    /// The next line, or `None` at EOF.
    pub async fn recv(&mut self) -> Option<String> {
        let mut line = String::new();
        match within(self.reader.read_line(&mut line)).await {
            Ok(0) => None,
            Ok(_) => Some(line.trim_end_matches('\n').to_owned()),
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => None,
            Err(error) => panic!("read failed: {error}"),
        }
    }

    pub async fn request(&mut self, line: &str) -> String {
        self.send(line).await;
        self.recv().await.expect("a response, not EOF")
    }

    /// Half-closes: the server sees EOF, the client can still read.
    pub async fn finish(&mut self) {
        self.writer.shutdown().await.expect("shutdown write half");
    }

    /// Asserts the server closed the connection (EOF, after any responses still due).
    pub async fn expect_eof(&mut self) {
        assert_eq!(self.recv().await, None, "expected the server to close");
    }
}
