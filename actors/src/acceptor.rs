//! The acceptor: an actor whose accept loop runs in its own task, so the actor's mailbox is
//! always free for `Stop` (ractor_cluster awaits `accept()` inside `handle`, so a graceful stop
//! waits for the next connection; this does not).
//!
//! The loop takes a connection slot *before* `accept()`: at `max_connections` it waits and the
//! kernel backlog holds new peers; it never accepts a socket only to drop it. Right after
//! `accept()` it asks [`Transport::admit`]; a refused peer is closed at once and reported as
//! [`Event::ConnectionRefused`], and its slot goes back. Admitted sockets go to the connection
//! supervisor with their slot.
//!
//! Transient accept errors (out of file descriptors, a peer that reset before `accept()`
//! returned, ...) are not failures: the loop backs off (10 ms doubling to 1 s) and retries. Only
//! an error that says the listening socket itself is unusable ends the loop, and so does a panic
//! in it (in `Transport::admit` or an observer); the actor then fails and the server restarts it
//! under its `RestartPolicy`. The listener belongs to the
//! server, not to the acceptor, so a restarted acceptor accepts on the same socket.

use std::io;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::net::TcpListener;

use crate::event::Event;
use crate::owned::OwnedTask;
use crate::peers::Refusal;
use crate::protocol::Protocol;
use crate::shared::Shared;
use crate::supervisor::SupervisorMessage;
use crate::transport::Transport;
use crate::util::panic_message;

const BACKOFF_START: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

pub(crate) struct Acceptor<P, T>(PhantomData<fn() -> (P, T)>);

impl<P, T> Acceptor<P, T> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

pub(crate) struct AcceptorArgs<P: Protocol, T: Transport> {
    pub(crate) shared: Arc<Shared<P, T>>,
    pub(crate) listener: Arc<TcpListener>,
    pub(crate) supervisor: ActorRef<SupervisorMessage>,
}

pub(crate) enum AcceptorMessage {
    /// The accept loop hit an error that is not transient.
    Failed(io::Error),
    /// Test hook (`test-util`): fail as if the listener had died.
    #[cfg(feature = "test-util")]
    InjectFailure,
}

/// The accept loop's task: it (and its hold on the listener) ends with the actor.
pub(crate) type AcceptorState<P, T> = OwnedTask<AcceptorArgs<P, T>>;

impl<P: Protocol, T: Transport> Actor for Acceptor<P, T> {
    type Msg = AcceptorMessage;
    type State = AcceptorState<P, T>;
    type Arguments = AcceptorArgs<P, T>;

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
                // A panic in the loop (in `Transport::admit`, or in an observer of
                // `ConnectionRefused`) is an acceptor failure like a dead listener: without
                // this, the task would end unnoticed and the server would stop accepting.
                let error = match AssertUnwindSafe(accept_loop(args)).catch_unwind().await {
                    Ok(Ok(())) => return,
                    Ok(Err(error)) => error,
                    Err(payload) => io::Error::other(format!(
                        "accept loop panicked: {}",
                        panic_message(payload)
                    )),
                };
                let _ = myself.cast(AcceptorMessage::Failed(error));
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
            AcceptorMessage::Failed(error) => Err(Box::new(error)),
            #[cfg(feature = "test-util")]
            AcceptorMessage::InjectFailure => {
                Err(Box::new(io::Error::other("injected acceptor failure")))
            }
        }
    }
}

/// Accepts until shutdown (`Ok`) or until the listener fails (`Err`).
async fn accept_loop<P: Protocol, T: Transport>(args: AcceptorArgs<P, T>) -> io::Result<()> {
    let AcceptorArgs {
        shared,
        listener,
        supervisor,
    } = args;
    let shutdown = &shared.control.shutdown;
    let mut backoff = BACKOFF_START;
    loop {
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            permit = shared.slots.reserve() => permit,
        };
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => {
                backoff = BACKOFF_START;
                accepted
            }
            Err(error) if is_transient(&error) => {
                tracing::warn!(%error, backoff_ms = backoff.as_millis() as u64, "accept failed; retrying");
                drop(permit);
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            Err(error) => {
                tracing::error!(%error, "listener failed");
                return Err(error);
            }
        };
        if !shared.transport.admit(peer) {
            drop(socket);
            drop(permit);
            // At warn, like the per-peer limits (and limited with them): an operator whose
            // partner cannot connect sees why.
            shared
                .peers
                .log_refusal(peer, None, Refusal::NotAdmitted, &shared.tasks);
            shared.observers.emit(Event::ConnectionRefused { peer });
            continue;
        }
        let peer_guard = match shared.peers.admit_address(peer.ip()) {
            Ok(guard) => guard,
            Err(refusal) => {
                // Closed before any byte: the peer sees the connection close.
                drop(socket);
                drop(permit);
                shared.peers.log_refusal(peer, None, refusal, &shared.tasks);
                shared.observers.emit(Event::ConnectionRefused { peer });
                continue;
            }
        };
        // Request/response over small frames: without TCP_NODELAY, Nagle holds a response
        // back until the peer acknowledges the previous one (up to its 40 ms delayed ACK).
        if let Err(error) = socket.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let slot = shared.slots.occupy(permit, peer_guard);
        if supervisor
            .cast(SupervisorMessage::Accepted { socket, peer, slot })
            .is_err()
        {
            // The supervisor is gone: the server is stopping. The socket and its slot were
            // dropped with the unsent message.
            return Ok(());
        }
    }
}

/// Errors of `accept()` that concern one connection or a momentary shortage (EMFILE, ENFILE,
/// ENOBUFS, ENOMEM, ECONNABORTED, ECONNRESET, EPERM from a firewall, ...), as opposed to the
/// listening socket being unusable (EBADF, EINVAL: not listening, ENOTSOCK, EOPNOTSUPP).
fn is_transient(error: &io::Error) -> bool {
    const EBADF: i32 = 9;
    if error.raw_os_error() == Some(EBADF) {
        return false;
    }
    !matches!(
        error.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported | io::ErrorKind::NotConnected
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resource shortages and per-connection errors are retried; a dead listener is not.
    #[test]
    fn classifies_accept_errors() {
        assert!(is_transient(&io::Error::from_raw_os_error(24))); // EMFILE
        assert!(is_transient(&io::Error::from_raw_os_error(23))); // ENFILE
        assert!(is_transient(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        assert!(is_transient(&io::Error::from(
            io::ErrorKind::ConnectionReset
        )));
        assert!(!is_transient(&io::Error::from_raw_os_error(9))); // EBADF
        assert!(!is_transient(&io::Error::from(io::ErrorKind::InvalidInput)));
    }
}
