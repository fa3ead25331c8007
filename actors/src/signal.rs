//! Shutdown signals for embedders.
//!
//! ```no_run
//! # async fn run(handle: mllp_actors::ServerHandle) {
//! // Serve until SIGTERM or SIGINT (Ctrl-C), then drain and stop.
//! let report = handle
//!     .shutdown_on(async {
//!         if let Err(error) = mllp_actors::signal::terminate().await {
//!             eprintln!("cannot listen for signals: {error}");
//!             std::future::pending::<()>().await;
//!         }
//!     })
//!     .await;
//! # let _ = report;
//! # }
//! ```

use std::io;

/// Resolves when the process receives SIGTERM or SIGINT (on non-Unix platforms: Ctrl-C).
///
/// The handlers are installed when the future is first polled; a signal that arrives before
/// that gets the default action (the process ends).
///
/// # Errors
///
/// When the signal handlers cannot be installed.
pub async fn terminate() -> io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
