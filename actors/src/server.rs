//! The public API: [`Server::start`] and the [`ServerHandle`] that embedders keep. The tree
//! itself starts at the root supervisor (`root.rs`), which the handle talks to.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use ractor::ActorRef;
use ractor::rpc::CallResult;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::task::TaskTracker;

use crate::budget::Budget;
use crate::config::ServerConfig;
use crate::control::{Control, Outcome};
use crate::error::{ServerError, StartError};
use crate::event::Observer;
use crate::log_limit::LogLimit;
use crate::observers::Observers;
use crate::peers::Peers;
use crate::protocol::Protocol;
use crate::report::{
    ConnectionSnapshot, ListenerSnapshot, ServerSnapshot, ServerState, ShutdownReport,
};
use crate::root::{self, RootMessage};
use crate::shared::Shared;
use crate::slots::Slots;
use crate::supervisor::SupervisorMessage;
use crate::transport::Transport;

/// Starts servers. See the [crate docs](crate) for the tree it builds.
#[derive(Debug)]
#[non_exhaustive]
pub struct Server;

impl Server {
    /// Starts serving `protocol` over `transport` on an already bound `listener`.
    ///
    /// Taking a bound listener means the address is known before serving (bind
    /// `127.0.0.1:0` in tests and read [`ServerHandle::local_addr`]). `observers` receive
    /// every [`Event`](crate::Event) of the server. Must be called within a tokio runtime; the
    /// tree lives on that runtime until [`ServerHandle::shutdown`] returns (or the server stops
    /// on its own).
    ///
    /// # Errors
    ///
    /// [`StartError::Config`] when `config` is invalid, [`StartError::Listener`] when the
    /// listener's address cannot be read, [`StartError::Spawn`] when an actor fails to start.
    pub async fn start<P: Protocol, T: Transport>(
        listener: TcpListener,
        protocol: P,
        transport: T,
        config: ServerConfig,
        observers: Vec<Arc<dyn Observer<P>>>,
    ) -> Result<ServerHandle, StartError> {
        config.validate()?;
        let local_addr = listener.local_addr().map_err(StartError::Listener)?;
        let budget = config.max_buffered_bytes.map(Budget::new);
        let started = SystemTime::now();
        let max_connections = config.max_connections;
        let tls = transport.tls();
        let control = Arc::new(Control::new());
        let slots = Slots::new(config.max_connections);
        let shared = Arc::new(Shared {
            protocol,
            transport,
            handler_permits: config
                .max_concurrent_handlers
                .map(|limit| Arc::new(Semaphore::new(limit))),
            budget: budget.clone(),
            peers: Peers::new(
                config.max_connections_per_peer,
                config.accept_rate_per_peer,
                config.connection_log_rate.is_some(),
            ),
            connection_logs: LogLimit::new(config.connection_log_rate, |left_out| {
                let [opened, closed] = *left_out;
                tracing::info!(
                    opened,
                    closed,
                    "{opened} connection(s) opened and {closed} closed in the last second were \
                     not logged one by one (connection_log_rate)"
                );
            }),
            config,
            observers: Observers::new(observers),
            local_addr,
            slots: slots.clone(),
            control: Arc::clone(&control),
            tasks: TaskTracker::new(),
        });
        let outcome = control.outcome.subscribe();
        let (root, supervisor) = root::start(shared, listener).await?;
        Ok(ServerHandle {
            inner: Arc::new(HandleInner {
                local_addr,
                started,
                max_connections,
                tls,
                control,
                root,
                supervisor,
                slots,
                outcome,
                budget,
            }),
        })
    }
}

/// A running server: its address, its connections, and its shutdown. Cheap to clone; every
/// clone controls the same server. Dropping the handles does not stop the server.
#[derive(Clone)]
pub struct ServerHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    local_addr: SocketAddr,
    started: SystemTime,
    max_connections: usize,
    /// Whether the listener's transport is TLS.
    tls: bool,
    control: Arc<Control>,
    root: ActorRef<RootMessage>,
    supervisor: ActorRef<SupervisorMessage>,
    slots: Slots,
    outcome: watch::Receiver<Option<Outcome>>,
    budget: Option<Budget>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.inner.local_addr)
            .field("slots_in_use", &self.inner.slots.in_use())
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The live connections, by id (as `ranch:procs` and `ranch:info`). Empty once the server
    /// has stopped.
    pub async fn connections(&self) -> Vec<ConnectionSnapshot> {
        match self
            .inner
            .supervisor
            .call(SupervisorMessage::Snapshot, None)
            .await
        {
            Ok(CallResult::Success(connections)) => connections,
            _ => Vec::new(),
        }
    }

    /// Whether the server is running, draining or stopped: two atomic loads, no call into the
    /// tree, so a readiness probe can ask as often as it likes.
    pub fn state(&self) -> ServerState {
        let inner = &self.inner;
        if inner.outcome.borrow().is_some() {
            ServerState::Stopped
        } else if inner.control.stop_requested.is_cancelled() || inner.control.is_shutting_down() {
            ServerState::Draining
        } else {
            ServerState::Running
        }
    }

    /// The server at a glance: its state, listeners and slots, every live connection (with its
    /// counters) and the connections that closed last, with their close reasons (as
    /// `ranch:info` and `ranch:procs`).
    ///
    /// One round trip to the connection supervisor, which copies its registry (about 100
    /// bytes per connection; docs/operations.md has the measured cost at 10,000 connections),
    /// so it is cheap enough to poll every second. Counters are read with relaxed loads: each is
    /// exact, the set is not one instant. Once the server has stopped, the connection lists are
    /// empty.
    pub async fn snapshot(&self) -> ServerSnapshot {
        self.status(true).await
    }

    /// [`snapshot`](Self::snapshot) without the connection lists (`connections` and
    /// `recently_closed` are empty; `active_connections` counts the live ones): a round trip to
    /// the connection supervisor that copies nothing, whatever the number of connections.
    pub async fn summary(&self) -> ServerSnapshot {
        self.status(false).await
    }

    async fn status(&self, full: bool) -> ServerSnapshot {
        let state = self.state();
        let status = match self
            .inner
            .supervisor
            .call(|reply| SupervisorMessage::Status(full, reply), None)
            .await
        {
            Ok(CallResult::Success(status)) => Some(status),
            _ => None,
        };
        let (active, connections, recently_closed, opened) = match status {
            Some(s) => (s.active, s.connections, s.recently_closed, s.opened),
            None => (0, Vec::new(), Vec::new(), 0),
        };
        ServerSnapshot {
            taken: SystemTime::now(),
            started: self.inner.started,
            state,
            listeners: vec![ListenerSnapshot {
                local_addr: self.inner.local_addr,
                tls: self.inner.tls,
                accepting: state == ServerState::Running,
            }],
            max_connections: self.inner.max_connections,
            slots_in_use: self.inner.slots.in_use(),
            active_connections: active,
            connections,
            recently_closed,
            connections_opened: opened,
        }
    }

    /// Connection slots in use: accepted sockets not yet closed (handed to the connection
    /// supervisor or served by a connection). Never more than `max_connections`.
    pub fn slots_in_use(&self) -> usize {
        self.inner.slots.in_use()
    }

    /// The current connection limit: [`ServerConfig::max_connections`] as started, or as last
    /// set by [`set_max_connections`](Self::set_max_connections).
    pub fn max_connections(&self) -> usize {
        self.inner.slots.max()
    }

    /// Changes the connection limit while the server runs (`ranch:set_max_connections`).
    ///
    /// Raising it lets the acceptor take new peers at once. Lowering it never closes a live
    /// connection: the acceptor takes no new peer until the number of connections is below
    /// the new limit (the kernel backlog holds them meanwhile).
    ///
    /// # Errors
    ///
    /// [`ConfigError`](crate::ConfigError) when `limit` is zero or larger than the runtime
    /// can count; the limit is then unchanged.
    pub fn set_max_connections(&self, limit: usize) -> Result<(), crate::ConfigError> {
        self.inner.slots.set_max(limit)
    }

    /// Stops accepting new connections, and returns once the acceptor has stopped
    /// (`ranch:suspend_listener`). Live connections go on as before. Unlike Ranch, the
    /// listening socket stays open, so the port stays yours: peers that connect meanwhile
    /// wait in the kernel backlog (up to its size) and are served after
    /// [`resume`](Self::resume), unless they give up first. Does nothing if already
    /// suspended or stopped.
    pub async fn suspend(&self) {
        let _ = self.inner.root.call(RootMessage::Suspend, None).await;
    }

    /// Starts accepting again after [`suspend`](Self::suspend) (`ranch:resume_listener`), and
    /// returns once the acceptor is running. Does nothing if accepting or stopped.
    pub async fn resume(&self) {
        let _ = self.inner.root.call(RootMessage::Resume, None).await;
    }

    /// Whether accepting is suspended by [`suspend`](Self::suspend).
    pub fn is_suspended(&self) -> bool {
        self.inner
            .control
            .suspended
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Asks the connection with this id (as in [`connections`](Self::connections) and its
    /// events) to close: it stops reading, answers the requests it has in flight, and closes
    /// with [`CloseReason::ServerClosed`](crate::CloseReason::ServerClosed). Returns whether
    /// such a connection was being served; one still in its TLS handshake is not (yet), and
    /// `false` is returned. Returns at once; the connection's `ConnectionStop` event says
    /// when it has closed.
    pub fn close_connection(&self, id: u64) -> bool {
        self.inner.control.close_connection(id)
    }

    /// Bytes drawn from `max_buffered_bytes` now: read buffers and requests in flight (see
    /// [`ServerConfig::max_buffered_bytes`]). Never more than the limit. `None` without a
    /// limit.
    pub fn buffered_bytes(&self) -> Option<usize> {
        self.inner.budget.as_ref().map(Budget::in_use)
    }

    /// Stops the server gracefully and returns once every actor and task of it has ended.
    ///
    /// The acceptor stops and the listening socket is closed (new connects are refused; peers
    /// still in the backlog are reset). Each connection answers the requests it has in flight
    /// and closes ([`CloseReason::Shutdown`](crate::CloseReason::Shutdown)); idle ones close at
    /// once. Connections still busy after `shutdown_grace` have their handlers aborted and close
    /// ([`CloseReason::Aborted`](crate::CloseReason::Aborted)).
    ///
    /// Safe to call more than once, concurrently, and after the server stopped on its own:
    /// every call returns the same report.
    pub async fn shutdown(&self) -> ShutdownReport {
        self.inner.control.stop_requested.cancel();
        self.outcome().await.report
    }

    /// Waits until the server has stopped, by [`ServerHandle::shutdown`] or on its own.
    ///
    /// # Errors
    ///
    /// The [`ServerError`] that stopped the server when it stopped on its own (escalation: the
    /// acceptor failed past its [`RestartPolicy`](crate::RestartPolicy)).
    pub async fn wait(&self) -> Result<(), ServerError> {
        match self.outcome().await.error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Serves until `signal` resolves, then shuts down gracefully; or until the server stops on
    /// its own. Pass [`signal::listen`](crate::signal::listen)'s future, made before the server
    /// started, to stop on SIGTERM/SIGINT.
    ///
    /// # Errors
    ///
    /// As [`ServerHandle::wait`], when the server stopped on its own before `signal` resolved.
    pub async fn shutdown_on<F: Future>(&self, signal: F) -> Result<ShutdownReport, ServerError> {
        tokio::select! {
            _ = signal => Ok(self.shutdown().await),
            outcome = self.outcome() => match outcome.error {
                Some(error) => Err(error),
                None => Ok(outcome.report),
            },
        }
    }

    /// Test hook: makes the current acceptor fail as if its listener had died, so that tests
    /// can exercise the restart policy. Only with the `test-util` feature; not part of the
    /// stable API.
    #[cfg(feature = "test-util")]
    #[doc(hidden)]
    pub fn inject_acceptor_failure(&self) {
        let _ = self.inner.root.cast(RootMessage::InjectAcceptorFailure);
    }

    async fn outcome(&self) -> Outcome {
        let mut outcome = self.inner.outcome.clone();
        let result = outcome.wait_for(Option::is_some).await.map(|o| o.clone());
        match result {
            Ok(Some(outcome)) => outcome,
            // The driver went away without a word: only a runtime shutting down does that.
            _ => Outcome {
                report: ShutdownReport::default(),
                error: Some(ServerError::SupervisorFailed(
                    "server driver ended without an outcome".into(),
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    /// The public handle and results can be shared across tasks and threads.
    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<ServerHandle>();
        assert_send_sync::<ShutdownReport>();
        assert_send_sync::<ConnectionSnapshot>();
        assert_send_sync::<ServerSnapshot>();
        assert_send_sync::<ServerError>();
        assert_send_sync::<StartError>();
        assert_send_sync::<crate::ConfigError>();
        assert_send_sync::<ServerConfig>();
    }
}
