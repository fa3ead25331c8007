//! Signals: SIGTERM or SIGINT starts the drain (and its report sets the exit status), a second
//! one exits at once; SIGHUP reloads the TLS certificates.

use std::io::Write;
use std::process::ExitCode;

use mllp::ShutdownReport;

use super::certificates::{self, Served};
use crate::exit;

/// SIGTERM or SIGINT, registered at once so that none is missed between start-up and serving;
/// and SIGHUP, so that one never kills the server (its default action): it reloads the TLS
/// certificates, or is logged and ignored without TLS.
pub(super) struct ShutdownSignal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    pub(super) fn register() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
                hup: Some(signal(SignalKind::hangup())?),
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Starts answering SIGHUP: a task that reloads the certificates of every TLS listener,
    /// or, without TLS, logs that there is nothing to reload. Abort it once serving ends.
    pub(super) fn spawn_reloaders(
        &mut self,
        reloaders: Vec<Served>,
    ) -> Option<tokio::task::JoinHandle<()>> {
        #[cfg(unix)]
        {
            self.hup
                .take()
                .map(|hangups| tokio::spawn(on_sighup(hangups, reloaders)))
        }
        #[cfg(not(unix))]
        {
            let _ = reloaders; // no SIGHUP here: certificates reload through the API only
            None
        }
    }

    /// Completes on the first signal. A second one exits at once, without waiting for the
    /// drain: nothing acknowledged is lost by that (every AA'd message is already on disk), but
    /// messages in flight go unanswered and their senders will resend them.
    pub(super) async fn wait(self) {
        #[cfg(unix)]
        {
            let Self {
                mut term, mut int, ..
            } = self;
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutting down: draining connections");
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                complain!("error: second signal received; exiting without waiting for the drain");
                crate::logging::flush();
                std::process::exit(i32::from(exit::FAILURE));
            });
        }
        #[cfg(not(unix))]
        {
            let _ = self;
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!(signal = "ctrl-c", "shutting down: draining connections");
        }
    }
}

/// On every SIGHUP: re-reads the certificate files (new connections get the new certificate,
/// live ones keep theirs, and a failed reload keeps the old one and says why), or, without TLS,
/// logs that there is nothing to reload. A reloaded certificate is checked as at start (its
/// expiry logged, an error if it is expired).
#[cfg(unix)]
async fn on_sighup(mut hangups: tokio::signal::unix::Signal, reloaders: Vec<Served>) {
    while hangups.recv().await.is_some() {
        if reloaders.is_empty() {
            tracing::info!("SIGHUP ignored: no TLS certificates to reload");
            continue;
        }
        for served in &reloaders {
            let listener = served.label.as_deref();
            let reloader = served.reloader.clone();
            match tokio::task::spawn_blocking(move || reloader.reload()).await {
                Ok(Ok(())) => {
                    tracing::info!(listener, "tls certificates reloaded");
                    certificates::check(served, std::time::SystemTime::now(), false);
                }
                Ok(Err(error)) => {
                    tracing::error!(listener, error = %exit::chain(&error), "tls reload failed; keeping the previous certificate, key and client CAs");
                }
                Err(error) => tracing::error!(listener, %error, "tls reload task failed"),
            }
        }
    }
}

/// Prints the drain report; a drain that had to abort connections, or a store that did not
/// close in time (`closed` false, already logged), is not clean.
pub(super) fn drain_report(report: &ShutdownReport, closed: bool) -> ExitCode {
    say!(
        "shutdown complete: {} connection(s) drained, {} aborted",
        report.drained,
        report.aborted
    );
    let _ = std::io::stdout().flush();
    tracing::info!(
        drained = report.drained,
        aborted = report.aborted,
        "shutdown complete"
    );
    if report.aborted > 0 {
        complain!(
            "error: {} connection(s) were still busy at the end of the shutdown grace and were \
             aborted (their messages were not acknowledged)",
            report.aborted
        );
    }
    if !closed {
        complain!(
            "error: the store did not close in time (a commit was stuck); the process exits \
             without it, and nothing it held was acknowledged"
        );
    }
    if report.aborted == 0 && closed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::FAILURE)
    }
}
