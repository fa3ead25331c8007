//! Shutdown signals for embedders.
//!
//! Listen before the server starts serving, so that a signal that arrives while it starts (an
//! orchestrator stopping a service that has just come up) drains it instead of ending the
//! process by the signal's default action:
//!
//! ```no_run
//! # async fn run(
//! #     start: impl std::future::Future<Output = mllp_actors::ServerHandle>,
//! # ) -> std::io::Result<()> {
//! // SIGTERM and SIGINT (Ctrl-C) are caught from here on.
//! let signal = mllp_actors::signal::listen()?;
//! let handle = start.await;
//! // Serve until one of them arrives, then drain and stop.
//! let report = handle.shutdown_on(signal).await;
//! # let _ = report;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Completes on SIGTERM or SIGINT (on other platforms than Unix: Ctrl-C). Made by [`listen`],
/// it catches a signal that arrives before it is first polled.
#[must_use = "a signal is only caught while its listener lives"]
pub struct Terminate {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(not(unix))]
    ctrl_c: Pin<Box<dyn Future<Output = io::Result<()>> + Send>>,
}

impl std::fmt::Debug for Terminate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminate").finish_non_exhaustive()
    }
}

/// Starts listening for SIGTERM and SIGINT: from the moment this returns, either signal is kept
/// for the returned future instead of ending the process. Call it inside a Tokio runtime (the
/// handlers register with its signal driver). On platforms other than Unix the future waits for
/// Ctrl-C, registered when it is first polled.
///
/// # Errors
///
/// When the signal handlers cannot be installed.
///
/// # Panics
///
/// Outside a Tokio runtime, as `tokio::signal` does.
pub fn listen() -> io::Result<Terminate> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Terminate {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
    #[cfg(not(unix))]
    {
        Ok(Terminate {
            ctrl_c: Box::pin(tokio::signal::ctrl_c()),
        })
    }
}

impl Future for Terminate {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        #[cfg(unix)]
        {
            // Both polled, so that both wake this task. `Ready(None)` (the runtime's signal
            // driver is gone) also ends the wait: the process is stopping anyway.
            if self.term.poll_recv(cx).is_ready() || self.int.poll_recv(cx).is_ready() {
                return Poll::Ready(());
            }
            Poll::Pending
        }
        #[cfg(not(unix))]
        {
            self.ctrl_c.as_mut().poll(cx).map(|_| ())
        }
    }
}

/// Resolves when the process receives SIGTERM or SIGINT (on non-Unix platforms: Ctrl-C).
///
/// The handlers are installed when the future is first polled; a signal that arrives before
/// that gets the default action (the process ends). [`listen`] installs them at once.
///
/// # Errors
///
/// When the signal handlers cannot be installed.
pub async fn terminate() -> io::Result<()> {
    listen()?.await;
    Ok(())
}
