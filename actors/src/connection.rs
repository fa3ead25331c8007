//! One connection: a temporary actor that owns a spawned I/O task.
//!
//! The actor is the connection's place in the supervision tree: it is linked to the
//! [`ConnectionSupervisor`](crate::supervisor), so its end (clean, failed or killed) always
//! reaches the supervisor as a ractor `SupervisionEvent`, and it is never restarted (its socket
//! is gone). The socket work runs in a task the actor spawns in `post_start` and aborts when its
//! state is dropped, so the actor's mailbox is never blocked by I/O: a `Stop` or `Kill` is
//! served at once.
//!
//! The I/O task, in order: the transport handshake (under `handshake_timeout`), then a loop that
//! reads a request only while the connection is below `max_in_flight`, runs each request's
//! handler under its deadline ([`crate::handler_task`]), and writes the responses in arrival
//! order under `write_timeout`. It ends with a [`CloseReason`], which it leaves in the shared
//! [`ConnStats`] before stopping the actor; a panic in the task is caught and turned into an
//! actor failure.
//!
//! Ending, by cause:
//! - peer EOF: stop reading, answer what is in flight (the peer may have only half-closed),
//!   close as `PeerClosed`; a codec error, a read error or a frame timeout end the same way,
//!   with their own reason (responses already due are still written);
//! - a write error or timeout, or the `Close` handler-failure policy: close at once, aborting
//!   the handlers still in flight (each reported as `Failure::Aborted`);
//! - shutdown: stop reading, answer what is in flight, close as `Shutdown`; at the grace
//!   deadline, abort what is left and close as `Aborted` (or `Shutdown` if nothing was left).
//!
//! The parts: [`serve`] is the request loop (and states its cancel safety), [`io`] the socket,
//! codec and buffers, [`in_flight`] the requests being handled, [`stats`] what the supervisor
//! reads of a connection.

mod in_flight;
mod io;
mod serve;
mod stats;

use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::net::TcpStream;

use crate::event::CloseReason;
use crate::owned::OwnedTask;
use crate::protocol::{ConnectionInfo, Protocol};
use crate::shared::Shared;
use crate::transport::Transport;
use crate::util::panic_message;
use serve::Conn;

pub(crate) use stats::ConnStats;

/// The connection actor. Temporary: never restarted.
pub(crate) struct Connection<P, T>(PhantomData<fn() -> (P, T)>);

impl<P, T> Connection<P, T> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

pub(crate) struct ConnectionArgs<P: Protocol, T: Transport> {
    pub(crate) shared: Arc<Shared<P, T>>,
    pub(crate) socket: TcpStream,
    pub(crate) info: ConnectionInfo,
    pub(crate) stats: Arc<ConnStats>,
}

pub(crate) enum ConnectionMessage {
    /// The I/O task panicked (a bug in the runtime or the codec): fail the actor with it.
    Panicked(String),
}

/// The connection's I/O task: an actor that ends takes it (its socket, its handlers) along.
pub(crate) type ConnectionState<P, T> = OwnedTask<ConnectionArgs<P, T>>;

impl<P: Protocol, T: Transport> Actor for Connection<P, T> {
    type Msg = ConnectionMessage;
    type State = ConnectionState<P, T>;
    type Arguments = ConnectionArgs<P, T>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(OwnedTask::new(args))
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.start(|args| {
            let tasks = args.shared.tasks.clone();
            tasks.spawn(async move {
                let stats = Arc::clone(&args.stats);
                match AssertUnwindSafe(run(args)).catch_unwind().await {
                    Ok(reason) => {
                        // The socket is closed (dropped with `run`'s future) before the supervisor
                        // hears of the end, so a peer that sees the stop event also sees EOF.
                        let text = reason.as_str().to_owned();
                        stats.set_close(reason);
                        myself.stop(Some(text));
                    }
                    Err(payload) => {
                        let message = panic_message(payload);
                        stats.set_close(CloseReason::Panicked(message.clone()));
                        if let Err(unsent) = myself.cast(ConnectionMessage::Panicked(message)) {
                            drop(unsent);
                            myself.stop(None);
                        }
                    }
                }
            })
        });
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConnectionMessage::Panicked(text) => Err(text.into()),
        }
    }
}

/// The connection's I/O, from handshake to close.
async fn run<P: Protocol, T: Transport>(args: ConnectionArgs<P, T>) -> CloseReason {
    let ConnectionArgs {
        shared,
        socket,
        info,
        stats,
    } = args;
    let control = Arc::clone(&shared.control);

    // Boxed: a TLS handshake future is large, and it should not stay in this task's state for
    // the connection's whole life.
    let handshake = Box::pin(tokio::time::timeout(
        shared.config.handshake_timeout,
        shared.transport.handshake(socket),
    ));
    let established = tokio::select! {
        biased;
        () = control.abort.cancelled() => Err(CloseReason::Shutdown),
        () = control.shutdown.cancelled() => Err(CloseReason::Shutdown),
        outcome = handshake => match outcome {
            Err(_elapsed) => Err(CloseReason::HandshakeTimeout),
            Ok(Err(error)) => Err(CloseReason::HandshakeFailed(error.to_string())),
            Ok(Ok(established)) => Ok(established),
        },
    };
    let established = match established {
        Ok(established) => established,
        Err(reason) => {
            let span = shared.protocol.connection_span(&info);
            let _ = stats.span.set(span);
            return reason;
        }
    };

    let info = if established.tls != info.tls() || established.peer_identity.is_some() {
        ConnectionInfo::new(
            info.id(),
            info.peer(),
            info.local(),
            established.tls,
            established.peer_identity,
        )
    } else {
        info
    };
    let _ = stats.established.set(info.clone());
    let span = shared.protocol.connection_span(&info);
    let _ = stats.span.set(span.clone());

    // A verified client identity counts against `max_connections_per_peer` as its address
    // does; the place is held for as long as this task runs.
    let _identity = match info.peer_identity() {
        Some(identity) => match shared.peers.admit_identity(identity) {
            Ok(guard) => guard,
            Err(refusal) => {
                span.in_scope(|| {
                    shared
                        .peers
                        .log_refusal(info.peer(), Some(identity), refusal, &shared.tasks);
                });
                let mut stream = established.stream;
                let _ = tokio::time::timeout(
                    shared.config.write_timeout,
                    tokio::io::AsyncWriteExt::shutdown(&mut stream),
                )
                .await;
                return CloseReason::PeerLimit;
            }
        },
        None => None,
    };

    let mut conn = Conn::new(shared, established.stream, info, stats, span);
    // The connection span is not entered around the loop: every poll would enter and exit it
    // (a clock read and a subscriber round trip each). Its events are emitted inside it
    // explicitly, and message spans are roots linked to it.
    let reason = conn.serve().await;
    conn.goodbye(&reason).await;
    reason
}
