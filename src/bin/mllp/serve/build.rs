//! Building the server from the settings: peer admission, TLS, the bind address and
//! the server builder. Each step fails with the exit status of its error, the reason already
//! printed: usage errors (2) for what the flags or the file got wrong, 1 for the rest.

use std::process::ExitCode;

use mllp::app::Router;
use mllp::server::Transport;
use mllp::tls::{Admission, TlsConfig, TlsTransport};
use mllp::{Server, ServerBuilder, ServerConfig};

use super::args::TraceLimit;
use super::settings::{self, ServerSettings, Settings, TlsSettings};
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

/// The server builder for these settings, routing every message to `router`: the runtime
/// settings as one [`ServerConfig`], then the framer's and the tracing settings, which are not
/// part of one (each set only when given, so the library's default stays otherwise).
pub(super) fn builder(settings: &Settings, router: Router) -> ServerBuilder {
    let mut builder = Server::builder()
        .router(router)
        .config(server_config(&settings.server));
    if let Some(v) = settings.server.max_message_size {
        builder = builder.max_message_size(v);
    }
    if let Some(v) = settings.server.framing {
        builder = builder.framing(v.into());
    }
    if let Some(v) = settings.telemetry.message_trace_ratio {
        builder = builder.message_trace_ratio(v);
    }
    if let Some(TraceLimit(v)) = settings.telemetry.message_trace_limit {
        builder = builder.message_trace_limit(v);
    }
    // The per-message line straight into the log buffer, in the text format's bytes, without
    // `tracing`'s dispatch (over a third of the line's cost). Not for JSON, nor for a terminal
    // (colours).
    if settings.telemetry.log_messages
        && matches!(
            settings.telemetry.log_format,
            crate::config::LogFormat::Text
        )
        && !std::io::IsTerminal::is_terminal(&std::io::stderr())
    {
        builder = builder.message_lines_to(std::sync::Arc::new(crate::logging::append));
    }
    settings
        .partner
        .apply(builder)
        .log_messages(settings.telemetry.log_messages)
        .log_rejects(settings.telemetry.log_rejects)
}

/// The runtime settings: each one given, over the library's default for the others.
fn server_config(settings: &ServerSettings) -> ServerConfig {
    let (timeouts, limits) = (&settings.timeouts, &settings.limits);
    let default = ServerConfig::default();
    ServerConfig::default()
        .idle_timeout(timeouts.idle_timeout.map_or(default.idle_timeout, |t| t.0))
        .frame_timeout(timeouts.frame_timeout.unwrap_or(default.frame_timeout))
        .handler_timeout(timeouts.handler_timeout.unwrap_or(default.handler_timeout))
        .write_timeout(timeouts.write_timeout.unwrap_or(default.write_timeout))
        .handshake_timeout(
            timeouts
                .handshake_timeout
                .unwrap_or(default.handshake_timeout),
        )
        .shutdown_grace(timeouts.shutdown_grace.unwrap_or(default.shutdown_grace))
        .max_connections(limits.max_connections.unwrap_or(default.max_connections))
        .max_in_flight(limits.max_in_flight.unwrap_or(default.max_in_flight))
        .max_concurrent_handlers(
            limits
                .max_concurrent_handlers
                .or(default.max_concurrent_handlers),
        )
        .max_buffered_bytes(
            limits
                .max_buffered_bytes
                .map_or(default.max_buffered_bytes, |bytes| bytes.0),
        )
        .max_connections_per_peer(
            limits
                .max_connections_per_peer
                .map_or(default.max_connections_per_peer, |n| n.0),
        )
        .accept_rate_per_peer(
            limits
                .accept_rate_per_peer
                .map_or(default.accept_rate_per_peer, |n| {
                    n.0.map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                }),
        )
        .connection_log_rate(
            limits
                .connection_log_rate
                .map_or(default.connection_log_rate, |n| {
                    n.0.map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                }),
        )
        .handler_failure(
            settings
                .handler_failure
                .map_or(default.handler_failure, Into::into),
        )
        .restart(settings.restart.unwrap_or(default.restart))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mllp::{HandlerFailurePolicy, RestartPolicy};

    use super::*;
    use crate::config::HandlerFailure;
    use crate::serve::args::IdleTimeout;

    /// No setting given leaves every runtime setting at the library's default.
    #[test]
    fn no_settings_keep_the_library_defaults() {
        assert_eq!(
            server_config(&ServerSettings::default()),
            ServerConfig::default()
        );
    }

    /// Each setting given lands in its own field of the config, and only there.
    #[test]
    fn each_setting_lands_in_its_field() {
        let s = Duration::from_secs;
        let restart = RestartPolicy::backoff(0, s(9), s(1), s(2));
        let mut settings = ServerSettings::default();
        let timeouts = &mut settings.timeouts;
        timeouts.idle_timeout = Some(IdleTimeout(None));
        timeouts.frame_timeout = Some(s(1));
        timeouts.handler_timeout = Some(s(2));
        timeouts.write_timeout = Some(s(3));
        timeouts.handshake_timeout = Some(s(4));
        timeouts.shutdown_grace = Some(s(5));
        let limits = &mut settings.limits;
        limits.max_connections = Some(6);
        limits.max_in_flight = Some(7);
        limits.max_concurrent_handlers = Some(8);
        limits.max_buffered_bytes = Some(crate::serve::args::MaybeBytes(Some(9 << 20)));
        limits.max_connections_per_peer = Some(crate::serve::args::MaybeCount(Some(10)));
        limits.accept_rate_per_peer = Some(crate::serve::args::MaybeCount(Some(11)));
        limits.connection_log_rate = Some(crate::serve::args::MaybeCount(None));
        settings.handler_failure = Some(HandlerFailure::Close);
        settings.restart = Some(restart);
        let expected = ServerConfig::default()
            .idle_timeout(None)
            .frame_timeout(s(1))
            .handler_timeout(s(2))
            .write_timeout(s(3))
            .handshake_timeout(s(4))
            .shutdown_grace(s(5))
            .max_connections(6)
            .max_in_flight(7)
            .max_concurrent_handlers(Some(8))
            .max_buffered_bytes(Some(9 << 20))
            .max_connections_per_peer(Some(10))
            .accept_rate_per_peer(Some(11))
            .connection_log_rate(None)
            .handler_failure(HandlerFailurePolicy::Close)
            .restart(restart);
        assert_eq!(server_config(&settings), expected);
    }
}
