//! Shared helpers for the integration tests: message builders, a raw MLLP peer, hang guards.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mllp::frame::MllpCodec;
use mllp::hl7::Message;
use mllp::{ServerBuilder, ServerHandle};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// Sends SIGTERM to process `pid` (this test's own, or a child it started).
pub fn sigterm(pid: u32) {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -TERM {pid}");
}

/// A hang guard, not a synchronisation point: fails the test if `f` takes longer than 10 s
/// (of paused or real time).
pub async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("test step hung")
}

/// Binds `builder` to a free loopback port (port 0) and serves.
pub async fn start<T: mllp::server::Transport>(builder: ServerBuilder<T>) -> ServerHandle {
    builder
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .spawn()
        .await
        .expect("start")
}

/// An error and each of its sources, joined with ": ", as a user reads the chain.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A synthetic HL7 message with the given MSH-9, MSH-10 and MSH-12, plus a PID segment that
/// holds `sentinel` (stands in for patient data).
pub fn hl7(message_type: &str, control_id: &str, version: &str) -> Bytes {
    hl7_with(message_type, control_id, version, "")
}

/// Like [`hl7`], with MSH-15 (accept acknowledgment type) set to `accept_ack`.
pub fn hl7_with(message_type: &str, control_id: &str, version: &str, accept_ack: &str) -> Bytes {
    let msh15 = if accept_ack.is_empty() {
        String::new()
    } else {
        format!("|||{accept_ack}|NE")
    };
    Bytes::from(format!(
        "MSH|^~\\&|SENDAPP|SENDFAC|RECVAPP|RECVFAC|20261122120000||{message_type}|{control_id}|P|{version}{msh15}\r\
         EVN|A01|20261122120000\r\
         PID|1||PATID1234^^^HOSP^MR||{SENTINEL}^JOHN||19700101|M\r"
    ))
}

/// A string planted in every test message's PID: it must never show up in telemetry or logs.
pub const SENTINEL: &str = "ZZSENTINELPHI";

/// A raw MLLP peer: writes frames or raw bytes and reads reply frames.
pub struct Peer {
    pub framed: Framed<TcpStream, MllpCodec>,
}

impl Peer {
    pub async fn connect(addr: SocketAddr) -> Peer {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Peer {
            framed: Framed::new(stream, MllpCodec::new()),
        }
    }

    /// Sends one framed message.
    pub async fn send(&mut self, payload: Bytes) {
        self.framed.send(payload).await.expect("send frame");
    }

    /// Writes raw bytes, unframed.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.framed
            .get_mut()
            .write_all(bytes)
            .await
            .expect("write raw");
    }

    /// The next reply frame, parsed; `None` at EOF (the server closed the connection).
    pub async fn recv(&mut self) -> Option<Message> {
        match self.framed.next().await {
            None => None,
            Some(Ok(payload)) => Some(Message::parse(payload).expect("reply is HL7")),
            Some(Err(e)) if is_reset(&e) => None,
            Some(Err(e)) => panic!("reply framing: {e}"),
        }
    }

    /// Sends and waits for the reply.
    pub async fn call(&mut self, payload: Bytes) -> Message {
        self.send(payload).await;
        within(self.recv()).await.expect("a reply, not EOF")
    }

    /// Waits until the server closes the connection, failing if a reply arrives instead.
    pub async fn expect_closed(&mut self) {
        if let Some(reply) = within(self.recv()).await {
            panic!(
                "expected close, got reply with MSA-1 {:?}",
                field(&reply, "MSA-1")
            );
        }
    }
}

fn is_reset(e: &mllp::frame::FrameError) -> bool {
    matches!(e, mllp::frame::FrameError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionReset)
}

/// A field's decoded value as a String ("" when absent).
pub fn field(message: &Message, path: &str) -> String {
    message
        .get(path)
        .expect("valid path")
        .map(|v| String::from_utf8_lossy(&v.decoded()).into_owned())
        .unwrap_or_default()
}

/// What a test observer saw: one line per telemetry event, with the fields tests assert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    ConnectionStart {
        tls: bool,
    },
    ConnectionStop {
        reason: String,
        tls: bool,
        identity: Option<String>,
        messages: u64,
    },
    MessageStart {
        control_id: Option<String>,
    },
    MessageStop {
        ack: Option<String>,
    },
    MessageException {
        kind: String,
        ack: Option<String>,
    },
    ConnectionRefused,
    AcceptorRestart,
    Other,
}

/// An observer that forwards every event to a channel the test awaits on.
pub struct Recorder(pub tokio::sync::mpsc::UnboundedSender<Seen>);

impl Recorder {
    pub fn new() -> (Recorder, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Recorder(tx), rx)
    }
}

impl mllp::Observer<mllp::server::Hl7> for Recorder {
    fn on_event(&self, event: &mllp::Event<'_>) {
        use mllp::Event as E;
        let seen = match event {
            E::ConnectionStart { connection, .. } => Seen::ConnectionStart {
                tls: connection.tls(),
            },
            E::ConnectionStop {
                connection,
                reason,
                messages,
                ..
            } => Seen::ConnectionStop {
                reason: reason.as_str().to_owned(),
                tls: connection.tls(),
                identity: connection.peer_identity().map(str::to_owned),
                messages: *messages,
            },
            E::MessageStart { meta, .. } => Seen::MessageStart {
                control_id: meta.control_id().map(str::to_owned),
            },
            E::MessageStop { response, .. } => Seen::MessageStop {
                ack: response.map(|a| a.code().as_str().to_owned()),
            },
            E::MessageException {
                failure, response, ..
            } => Seen::MessageException {
                kind: failure.kind().to_owned(),
                ack: response.map(|a| a.code().as_str().to_owned()),
            },
            E::ConnectionRefused { .. } => Seen::ConnectionRefused,
            E::AcceptorRestart { .. } => Seen::AcceptorRestart,
            _ => Seen::Other,
        };
        let _ = self.0.send(seen);
    }
}

/// The next event matching `pred`, skipping others (hang-guarded).
pub async fn next_matching(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>,
    pred: impl Fn(&Seen) -> bool,
) -> Seen {
    within(async {
        loop {
            let seen = rx.recv().await.expect("observer channel open");
            if pred(&seen) {
                return seen;
            }
        }
    })
    .await
}
