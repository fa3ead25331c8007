//! Errors of starting and running a server.

use std::io;
use std::sync::Arc;

use crate::config::ConfigError;

/// The server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A setting is out of range; nothing was started.
    #[error("invalid server configuration")]
    Config(#[from] ConfigError),
    /// The listener's local address could not be read (the socket is not usable).
    #[error("listener is not usable")]
    Listener(#[source] io::Error),
    /// An actor of the supervision tree failed to start; whatever had started was stopped.
    #[error("supervision tree failed to start: {0}")]
    Spawn(String),
}

/// Why a server stopped on its own, as reported by
/// [`ServerHandle::wait`](crate::ServerHandle::wait): escalation, as in OTP.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The acceptor failed more often than the [`RestartPolicy`](crate::RestartPolicy) allows
    /// (or failed once under `RestartPolicy::Never`). `source` is its last error.
    #[error("acceptor failed {failures} times within the restart window")]
    AcceptorFailed {
        /// Failures counted in the window, the last one included.
        failures: u32,
        /// The last failure.
        #[source]
        source: Arc<io::Error>,
    },
    /// A supervisor of the tree failed (a bug in this crate); the server stopped everything.
    #[error("server supervisor failed: {0}")]
    SupervisorFailed(String),
}
