//! The server's policies: the framer's limit and policy, the timeouts, the limits, the
//! handler-failure and restart policies.

use std::time::Duration;

use mllp::RestartPolicy;

use super::file::ConfigFile;
use crate::config::{self, Framing, HandlerFailure, SettingError};
use crate::exit;
use crate::serve::args::{self, IdleTimeout, MaybeBytes, MaybeCount, ServeArgs};

/// The server's policies; `None` keeps the library's default.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServerSettings {
    /// The framer's limit, not part of a `ServerConfig`.
    pub(crate) max_message_size: Option<usize>,
    /// The framer's policy, not part of a `ServerConfig`.
    pub(crate) framing: Option<Framing>,
    pub(crate) timeouts: Timeouts,
    pub(crate) handler_failure: Option<HandlerFailure>,
    pub(crate) limits: Limits,
    pub(crate) restart: Option<RestartPolicy>,
}

/// The connection and shutdown deadlines.
#[derive(Debug, Clone, Default)]
pub(crate) struct Timeouts {
    pub(crate) idle_timeout: Option<IdleTimeout>,
    pub(crate) frame_timeout: Option<Duration>,
    pub(crate) handler_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) handshake_timeout: Option<Duration>,
    pub(crate) shutdown_grace: Option<Duration>,
}

/// How much is served at once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Limits {
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_in_flight: Option<usize>,
    pub(crate) max_concurrent_handlers: Option<usize>,
    pub(crate) max_buffered_bytes: Option<MaybeBytes>,
    pub(crate) max_connections_per_peer: Option<MaybeCount>,
    pub(crate) accept_rate_per_peer: Option<MaybeCount>,
    pub(crate) connection_log_rate: Option<MaybeCount>,
}

impl ServeArgs {
    /// The server's policies. The restart policy is checked first, as one.
    pub(super) fn server(&self, file: &ConfigFile) -> Result<ServerSettings, SettingError> {
        let restart = self.restart(file)?;
        Ok(ServerSettings {
            max_message_size: file.pick(
                self.max_message_size,
                "max-message-size",
                config::number_text(file.values.max_message_size.clone()),
                config::byte_size,
            )?,
            framing: self.framing.or(file.values.framing),
            timeouts: self.timeouts(file)?,
            handler_failure: file.pick(
                self.handler_failure,
                "handler-failure",
                file.values.handler_failure.clone(),
                config::handler_failure,
            )?,
            limits: self.limits(file)?,
            restart,
        })
    }

    fn timeouts(&self, file: &ConfigFile) -> Result<Timeouts, SettingError> {
        let f = &file.values;
        Ok(Timeouts {
            idle_timeout: file.pick(
                self.idle_timeout,
                "idle-timeout",
                f.idle_timeout.clone(),
                args::idle_timeout,
            )?,
            frame_timeout: file.pick(
                self.frame_timeout,
                "frame-timeout",
                f.frame_timeout.clone(),
                config::positive_duration,
            )?,
            handler_timeout: file.pick(
                self.handler_timeout,
                "handler-timeout",
                f.handler_timeout.clone(),
                config::positive_duration,
            )?,
            write_timeout: file.pick(
                self.write_timeout,
                "write-timeout",
                f.write_timeout.clone(),
                config::positive_duration,
            )?,
            handshake_timeout: file.pick(
                self.handshake_timeout,
                "handshake-timeout",
                f.handshake_timeout.clone(),
                config::positive_duration,
            )?,
            shutdown_grace: file.pick(
                self.shutdown_grace,
                "shutdown-grace",
                f.shutdown_grace.clone(),
                config::any_duration,
            )?,
        })
    }

    fn limits(&self, file: &ConfigFile) -> Result<Limits, SettingError> {
        let number = |value: &Option<config::NumberOrText>| config::number_text(value.clone());
        Ok(Limits {
            max_connections: file.pick(
                self.max_connections,
                "max-connections",
                number(&file.values.max_connections),
                config::positive_count,
            )?,
            max_in_flight: file.pick(
                self.max_in_flight,
                "max-in-flight",
                number(&file.values.max_in_flight),
                config::positive_count,
            )?,
            max_concurrent_handlers: file.pick(
                self.max_concurrent_handlers,
                "max-concurrent-handlers",
                number(&file.values.max_concurrent_handlers),
                config::positive_count,
            )?,
            max_buffered_bytes: file.pick(
                self.max_buffered_bytes,
                "max-buffered-bytes",
                number(&file.values.max_buffered_bytes),
                args::maybe_bytes,
            )?,
            max_connections_per_peer: file.pick(
                self.max_connections_per_peer,
                "max-connections-per-peer",
                number(&file.values.max_connections_per_peer),
                args::maybe_count,
            )?,
            accept_rate_per_peer: file.pick(
                self.accept_rate_per_peer,
                "accept-rate-per-peer",
                number(&file.values.accept_rate_per_peer),
                args::maybe_count,
            )?,
            connection_log_rate: file.pick(
                self.connection_log_rate,
                "connection-log-rate",
                number(&file.values.connection_log_rate),
                args::maybe_count,
            )?,
        })
    }
}

/// Rewrites the library's setting names (`max_connections`) as the flags (`--max-connections`).
pub(crate) fn flag_names(error: &mllp::ConfigError) -> String {
    let mut text = exit::chain(error);
    // The restart policy's settings first: their names contain the generic ones' words.
    for (setting, flag) in [
        (
            "restart max_backoff must not be less than backoff",
            "--restart-max-backoff must not be less than --restart-backoff",
        ),
        ("restart.window", "--restart-window"),
    ] {
        text = text.replace(setting, flag);
    }
    for setting in [
        "max_message_size",
        "idle_timeout",
        "frame_timeout",
        "handler_timeout",
        "write_timeout",
        "max_connections",
        "max_in_flight",
        "max_concurrent_handlers",
        "max_buffered_bytes",
        "max_connections_per_peer",
        "accept_rate_per_peer",
        "connection_log_rate",
        "shutdown_grace",
        "message_trace_ratio",
    ] {
        text = text.replace(setting, &format!("--{}", setting.replace('_', "-")));
    }
    text
}
