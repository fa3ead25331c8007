//! The root supervisor actor (`ranch_listener_sup`) and the driver of its teardown.
//!
//! The root supervisor starts the connection supervisor, then the acceptor (rest_for_one, as
//! `ranch_listener_sup`): an acceptor restart touches nothing started before it, so live
//! connections are untouched. It owns the listening socket (in an `Arc` handed to each acceptor
//! as an argument), so a restarted acceptor accepts on the same socket. It applies the
//! [`RestartPolicy`] to acceptor failures and escalates past it. The connection supervisor is
//! never restarted: it only fails through a bug in this crate, and restarting it would not bring
//! its connections back; its failure stops the server.
//!
//! The teardown (on [`ServerHandle::shutdown`](crate::ServerHandle::shutdown) or escalation)
//! runs in a driver task, outside every actor's `handle`, in this order:
//! 1. the shutdown token is cancelled: the accept loop ends; each connection stops reading,
//!    answers what is in flight and closes (idle ones at once);
//! 2. the root stops the acceptor and lets go of the listener: once the accept task has ended
//!    the socket is closed, and new connects are refused by the kernel;
//! 3. the driver waits, up to `shutdown_grace`, for the connection registry to empty; then the
//!    abort token is cancelled and busy connections abort their handlers and close;
//! 4. the root stops the connection supervisor, each actor awaiting its children's tasks;
//! 5. the driver waits for every task the tree spawned (a `TaskTracker`), then publishes the
//!    outcome that `shutdown()` and `wait()` return.
//!
//! The tree never relies on ractor killing linked children when a parent exits (ractor 0.16
//! does, see `tests/ractor_semantics.rs`): connections are drained and stopped explicitly first.

use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::acceptor::{Acceptor, AcceptorArgs, AcceptorMessage};
use crate::config::RestartPolicy;
use crate::control::{Control, Outcome};
use crate::error::{ServerError, StartError};
use crate::event::Event;
use crate::protocol::Protocol;
use crate::report::ShutdownReport;
use crate::shared::Shared;
use crate::supervisor::{ConnectionSupervisor, SupervisorMessage};
use crate::transport::Transport;

/// Spawns the root supervisor (which starts the connection supervisor, then the acceptor) and
/// the driver task that tears the tree down once a stop is requested; returns the root and the
/// connection supervisor.
pub(crate) async fn start<P: Protocol, T: Transport>(
    shared: Arc<Shared<P, T>>,
    listener: TcpListener,
) -> Result<(ActorRef<RootMessage>, ActorRef<SupervisorMessage>), StartError> {
    let control = Arc::clone(&shared.control);
    let (root, root_task) = Actor::spawn(
        None,
        Root::<P, T>(PhantomData),
        RootArgs {
            shared: Arc::clone(&shared),
            listener: Arc::new(listener),
        },
    )
    .await
    .map_err(|error| StartError::Spawn(error.to_string()))?;
    let supervisor = match root.call(RootMessage::Supervisor, None).await {
        Ok(CallResult::Success(supervisor)) => supervisor,
        _ => {
            root.kill();
            let _ = root_task.await;
            return Err(StartError::Spawn("server supervisor did not answer".into()));
        }
    };
    tokio::spawn(drive(
        control,
        root.clone(),
        root_task,
        supervisor.clone(),
        shared.tasks.clone(),
        shared.config.shutdown_grace,
    ));
    Ok((root, supervisor))
}

struct Root<P, T>(PhantomData<fn() -> (P, T)>);

struct RootArgs<P: Protocol, T: Transport> {
    shared: Arc<Shared<P, T>>,
    listener: Arc<TcpListener>,
}

pub(crate) enum RootMessage {
    Supervisor(RpcReplyPort<ActorRef<SupervisorMessage>>),
    RestartAcceptor,
    /// Stop accepting: stop the acceptor, drop the listener. Replies when the acceptor is gone.
    StopAcceptor(RpcReplyPort<()>),
    /// Suspend accepting: stop the acceptor, keep the listener (the port stays bound and the
    /// kernel backlog holds new peers). Replies when the acceptor is gone.
    Suspend(RpcReplyPort<()>),
    /// Resume accepting after `Suspend`: start an acceptor again. Replies once it is started.
    Resume(RpcReplyPort<()>),
    /// Test hook (`test-util`): fail the current acceptor.
    #[cfg(feature = "test-util")]
    InjectAcceptorFailure,
}

struct RootState<P: Protocol, T: Transport> {
    shared: Arc<Shared<P, T>>,
    listener: Option<Arc<TcpListener>>,
    supervisor: (ActorRef<SupervisorMessage>, Option<JoinHandle<()>>),
    acceptor: Option<(ActorRef<AcceptorMessage>, JoinHandle<()>)>,
    /// Acceptor tasks that ended, awaited in `post_stop`.
    exited: Vec<JoinHandle<()>>,
    /// Failure times within the restart window.
    failures: VecDeque<Instant>,
    stopping: bool,
    /// Accepting is suspended: no acceptor runs, and a pending restart does not start one.
    suspended: bool,
}

impl<P: Protocol, T: Transport> RootState<P, T> {
    async fn spawn_acceptor(&mut self, myself: &ActorRef<RootMessage>) -> Result<(), String> {
        let Some(listener) = &self.listener else {
            return Ok(());
        };
        let args = AcceptorArgs {
            shared: Arc::clone(&self.shared),
            listener: Arc::clone(listener),
            supervisor: self.supervisor.0.clone(),
        };
        let (acceptor, task) = Actor::spawn_linked(None, Acceptor::new(), args, myself.get_cell())
            .await
            .map_err(|error| error.to_string())?;
        self.acceptor = Some((acceptor, task));
        Ok(())
    }

    /// Stops the server by itself: reports the escalation, then begins the teardown (whose end
    /// `wait()` returns the error).
    fn escalate(&mut self, error: ServerError) {
        tracing::error!(%error, "server stopping: escalation");
        self.shared
            .observers
            .emit(Event::Escalation { error: &error });
        self.shared.control.fail(error);
    }

    /// Applies the restart policy to an acceptor failure.
    fn acceptor_failed(&mut self, myself: &ActorRef<RootMessage>, error: io::Error) {
        if let Some((_, task)) = self.acceptor.take() {
            self.exited.push(task);
        }
        let now = Instant::now();
        let (max_restarts, window, backoff, max_backoff) = match self.shared.config.restart {
            RestartPolicy::Backoff {
                max_restarts,
                window,
                backoff,
                max_backoff,
            } => (max_restarts, window, backoff, max_backoff),
            RestartPolicy::Never => (0, Duration::ZERO, Duration::ZERO, Duration::ZERO),
        };
        while self
            .failures
            .front()
            .is_some_and(|at| now.duration_since(*at) >= window)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        let failures = u32::try_from(self.failures.len()).unwrap_or(u32::MAX);
        let text = error.to_string();
        tracing::error!(error = %text, failures, "acceptor failed");
        if failures > max_restarts {
            self.escalate(ServerError::AcceptorFailed {
                failures,
                source: Arc::new(error),
            });
            return;
        }
        self.shared.observers.emit(Event::AcceptorRestart {
            error: &text,
            restarts: failures,
        });
        let delay = backoff
            .checked_mul(1 << (failures - 1).min(30))
            .unwrap_or(max_backoff)
            .min(max_backoff);
        let myself = myself.clone();
        let shutdown = self.shared.control.shutdown.clone();
        self.shared.tasks.spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(delay) => {
                    let _ = myself.cast(RootMessage::RestartAcceptor);
                }
            }
        });
    }
}

impl<P: Protocol, T: Transport> Actor for Root<P, T> {
    type Msg = RootMessage;
    type State = RootState<P, T>;
    type Arguments = RootArgs<P, T>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Connection supervisor first, acceptor second (rest_for_one order).
        let supervisor = Actor::spawn_linked(
            None,
            ConnectionSupervisor::new(),
            Arc::clone(&args.shared),
            myself.get_cell(),
        )
        .await?;
        let mut state = RootState {
            shared: args.shared,
            listener: Some(args.listener),
            supervisor: (supervisor.0, Some(supervisor.1)),
            acceptor: None,
            exited: Vec::new(),
            failures: VecDeque::new(),
            stopping: false,
            suspended: false,
        };
        state.spawn_acceptor(&myself).await?;
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.stopping = true;
        state.listener = None;
        if let Some((acceptor, task)) = state.acceptor.take() {
            let _ = acceptor.stop_and_wait(None, None).await;
            let _ = task.await;
        }
        let _ = state.supervisor.0.stop_and_wait(None, None).await;
        if let Some(task) = state.supervisor.1.take() {
            let _ = task.await;
        }
        for task in state.exited.drain(..) {
            let _ = task.await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMessage::Supervisor(reply) => {
                let _ = reply.send(state.supervisor.0.clone());
            }
            RootMessage::RestartAcceptor => {
                if !state.stopping
                    && !state.suspended
                    && state.acceptor.is_none()
                    && let Err(error) = state.spawn_acceptor(&myself).await
                {
                    state.acceptor_failed(&myself, io::Error::other(error));
                }
            }
            RootMessage::StopAcceptor(reply) => {
                state.stopping = true;
                state.listener = None;
                if let Some((acceptor, task)) = state.acceptor.take() {
                    let _ = acceptor.stop_and_wait(None, None).await;
                    state.exited.push(task);
                }
                let _ = reply.send(());
            }
            RootMessage::Suspend(reply) => {
                state.suspended = true;
                state
                    .shared
                    .control
                    .suspended
                    .store(true, Ordering::Release);
                // Taken out first, so its end is not seen as a failure.
                if let Some((acceptor, task)) = state.acceptor.take() {
                    let _ = acceptor.stop_and_wait(None, None).await;
                    state.exited.push(task);
                }
                let _ = reply.send(());
            }
            RootMessage::Resume(reply) => {
                state.suspended = false;
                state
                    .shared
                    .control
                    .suspended
                    .store(false, Ordering::Release);
                if !state.stopping
                    && state.acceptor.is_none()
                    && let Err(error) = state.spawn_acceptor(&myself).await
                {
                    state.acceptor_failed(&myself, io::Error::other(error));
                }
                let _ = reply.send(());
            }
            #[cfg(feature = "test-util")]
            RootMessage::InjectAcceptorFailure => {
                if let Some((acceptor, _)) = &state.acceptor {
                    let _ = acceptor.cast(AcceptorMessage::InjectFailure);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (id, error): (ActorId, io::Error) = match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let error = match error.downcast::<io::Error>() {
                    Ok(error) => *error,
                    Err(other) => io::Error::other(other.to_string()),
                };
                (cell.get_id(), error)
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell.get_id(),
                io::Error::other(format!(
                    "exited: {}",
                    reason.as_deref().unwrap_or("no reason")
                )),
            ),
            _ => return Ok(()),
        };
        if state.stopping {
            return Ok(());
        }
        if id == state.supervisor.0.get_id() {
            state.stopping = true;
            state.escalate(ServerError::SupervisorFailed(error.to_string()));
        } else if state
            .acceptor
            .as_ref()
            .is_some_and(|(acceptor, _)| acceptor.get_id() == id)
        {
            state.acceptor_failed(&myself, error);
        }
        Ok(())
    }
}

/// Waits for a stop request (or the root's unexpected end), then tears the tree down in order
/// and publishes the outcome.
async fn drive(
    control: Arc<Control>,
    root: ActorRef<RootMessage>,
    mut root_task: JoinHandle<()>,
    supervisor: ActorRef<SupervisorMessage>,
    tasks: TaskTracker,
    grace: Duration,
) {
    let mut root_ended = false;
    tokio::select! {
        () = control.stop_requested.cancelled() => {}
        _ = &mut root_task => {
            root_ended = true;
            control.fail(ServerError::SupervisorFailed("server supervisor exited".into()));
        }
    }
    control.begin_shutdown();
    if !root_ended {
        let _ = root.call(RootMessage::StopAcceptor, None).await;
    }
    let report = match supervisor.call(SupervisorMessage::Drain, Some(grace)).await {
        Ok(CallResult::Success(report)) => report,
        Ok(CallResult::Timeout) => {
            control.begin_abort();
            match supervisor.call(SupervisorMessage::Drain, None).await {
                Ok(CallResult::Success(report)) => report,
                _ => ShutdownReport::default(),
            }
        }
        _ => ShutdownReport::default(),
    };
    control.begin_abort();
    if !root_ended {
        let _ = root.stop_and_wait(None, None).await;
        let _ = root_task.await;
    }
    tasks.close();
    tasks.wait().await;
    let error = control.take_fatal();
    control
        .outcome
        .send_replace(Some(Outcome { report, error }));
}
