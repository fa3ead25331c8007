//! Building the server from the settings: peer admission, TLS, the bind address, the inbox and
//! the server builder. Each step fails with the exit status of its error, the reason already
//! printed: usage errors (2) for what the flags or the file got wrong, 1 for the rest.

use std::path::Path;
use std::process::ExitCode;

use mllp::app::Router;
use mllp::inbox::Inbox;
use mllp::server::Transport;
use mllp::tls::{Admission, TlsConfig, TlsTransport};
use mllp::{Server, ServerBuilder};

use super::args::{IdleTimeout, TraceLimit};
use super::settings::{self, Settings, TlsSettings};
use crate::exit;

/// The peer allow-list. No `--allow-peer` means everyone; an empty allow-list would admit no one.
pub(super) fn admission(allow_peer: &[String]) -> Result<Admission, ExitCode> {
    let admission = if allow_peer.is_empty() {
        Ok(Admission::any())
    } else {
        Admission::allow_list(allow_peer)
    };
    admission.map_err(|e| {
        exit::fail_text(
            exit::USAGE,
            &format!("invalid --allow-peer: {}", exit::chain(&e)),
        )
    })
}

/// The TLS transport, its certificate files read and checked; `None` for plain TCP.
pub(super) fn tls(settings: Option<&TlsSettings>) -> Result<Option<TlsTransport>, ExitCode> {
    let Some(tls) = settings else {
        return Ok(None);
    };
    let config = TlsConfig::new(&tls.cert, &tls.key);
    let config = match &tls.client_ca {
        Some(ca) => config.client_ca(ca),
        None => config,
    };
    config
        .allow_client_subjects(tls.allow_client_subject.iter().cloned())
        .build()
        .map(Some)
        .map_err(|e| exit::fail(exit::USAGE, &e))
}

/// An address that does not parse or whose host does not resolve is a usage error (exit 2);
/// the resolver's error kind does not tell that apart from a failure to bind, so resolve
/// here. Binding can still fail later (address in use): that is exit 1.
pub(super) async fn check_bind(bind: &str) -> Result<(), ExitCode> {
    match tokio::net::lookup_host(bind).await {
        Ok(_) => Ok(()),
        Err(e) => Err(exit::fail_text(
            exit::USAGE,
            &format!("invalid --bind {bind}: {e}"),
        )),
    }
}

/// Opens (creating it if missing) the inbox directory; `None` with `--no-inbox`.
pub(super) fn inbox(dir: Option<&Path>) -> Result<Option<Inbox>, ExitCode> {
    dir.map(Inbox::open)
        .transpose()
        .map_err(|e| exit::fail(exit::FAILURE, &e))
}

/// The server builder for these settings, routing every message to `router`.
pub(super) fn builder(settings: &Settings, router: Router) -> ServerBuilder {
    let server = &settings.server;
    let (timeouts, limits) = (&server.timeouts, &server.limits);
    let mut builder = Server::builder().router(router);
    if let Some(v) = server.max_message_size {
        builder = builder.max_message_size(v);
    }
    if let Some(IdleTimeout(v)) = timeouts.idle_timeout {
        builder = builder.idle_timeout(v);
    }
    if let Some(v) = timeouts.frame_timeout {
        builder = builder.frame_timeout(v);
    }
    if let Some(v) = timeouts.handler_timeout {
        builder = builder.handler_timeout(v);
    }
    if let Some(v) = timeouts.write_timeout {
        builder = builder.write_timeout(v);
    }
    if let Some(v) = server.handler_failure {
        builder = builder.handler_failure(v.into());
    }
    if let Some(v) = limits.max_connections {
        builder = builder.max_connections(v);
    }
    if let Some(v) = limits.max_in_flight {
        builder = builder.max_in_flight(v);
    }
    if let Some(v) = limits.max_concurrent_handlers {
        builder = builder.max_concurrent_handlers(Some(v));
    }
    if let Some(v) = server.framing {
        builder = builder.framing(v.into());
    }
    if let Some(v) = timeouts.shutdown_grace {
        builder = builder.shutdown_grace(v);
    }
    if let Some(v) = server.restart {
        builder = builder.restart(v);
    }
    if let Some(v) = timeouts.handshake_timeout {
        builder = builder.handshake_timeout(v);
    }
    if let Some(v) = settings.telemetry.message_trace_ratio {
        builder = builder.message_trace_ratio(v);
    }
    if let Some(TraceLimit(v)) = settings.telemetry.message_trace_limit {
        builder = builder.message_trace_limit(v);
    }
    builder
}

/// Checks the settings and binds. A setting the library refuses, or an address that does not
/// parse or resolve, is a usage error; an address in use is not.
pub(super) async fn bind<T: Transport>(
    builder: ServerBuilder<T>,
    addr: &str,
) -> Result<Server<T>, ExitCode> {
    match builder.bind(addr).await {
        Ok(server) => Ok(server),
        Err(mllp::Error::Config(e)) => Err(exit::fail_text(
            exit::USAGE,
            &format!("invalid setting: {}", settings::flag_names(&e)),
        )),
        Err(e @ mllp::Error::Bind { .. })
            if std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidInput) =>
        {
            Err(exit::fail(exit::USAGE, &e))
        }
        Err(e) => Err(exit::fail(exit::FAILURE, &e)),
    }
}
