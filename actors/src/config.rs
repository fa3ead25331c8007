//! Every tunable of the supervision tree, with its default, in one [`ServerConfig`].
//!
//! Change settings with [`ServerConfig::default`] and the consuming setters (or by assigning the
//! public fields); [`ServerConfig::validate`] runs when the server starts, so a bad value is a
//! [`ConfigError`], never a panic.

use std::time::Duration;

use tokio::sync::Semaphore;

/// Tunables of a server: limits, deadlines, and the two supervision policies.
///
/// ```
/// use std::time::Duration;
/// use mllp_actors::{HandlerFailurePolicy, ServerConfig};
///
/// let config = ServerConfig::default()
///     .max_connections(64)
///     .handler_timeout(Duration::from_secs(10))
///     .handler_failure(HandlerFailurePolicy::Close);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Close a connection when no byte arrived for this long while no request was in flight.
    /// `None` keeps quiet connections open for ever (some partners keep links idle for hours).
    /// Default is 60 s.
    pub idle_timeout: Option<Duration>,
    /// Close a connection when a started frame is not finished within this long (slow-sender
    /// protection). The clock runs while the connection waits for the rest of a frame: from the
    /// arrival of its first byte, or, when those bytes arrived while a handler was busy, from the
    /// moment the connection turns back to reading. Default is 30 s.
    pub frame_timeout: Duration,
    /// Abort a handler task that has not finished within this long, and answer per
    /// [`ServerConfig::handler_failure`]. Default is 60 s.
    pub handler_timeout: Duration,
    /// Close a connection when a response cannot be written within this long (a peer that stops
    /// reading). Default is 30 s.
    pub write_timeout: Duration,
    /// Close a connection whose transport handshake (TLS) does not finish within this long.
    /// Default is 5 s.
    pub handshake_timeout: Duration,
    /// Connections served at once. At the limit the acceptor stops calling `accept()` and the
    /// kernel backlog holds new peers; it never accepts and drops. Default is 1024.
    pub max_connections: usize,
    /// Requests of one connection whose handlers may run at once. The connection reads from its
    /// socket only while it is below this limit, so a busy handler pushes back on the sender
    /// through TCP flow control. Responses always go out in arrival order. Default is 1 (MLLP
    /// is request/response).
    pub max_in_flight: usize,
    /// Handler tasks that may run at once across the whole server. A connection that decoded a
    /// request waits for a permit before starting its handler (and reads nothing meanwhile).
    /// A request holds its permit until it is answered and the work its handler handed off (see
    /// [`Lease`](crate::Lease)) has ended. `None` means no server-wide limit. Default is `None`.
    pub max_concurrent_handlers: Option<usize>,
    /// Bytes the server may hold for messages at once, across every connection: read buffers,
    /// requests in flight, and what handling them allocates beside them
    /// ([`Protocol::request_overhead`](crate::Protocol::request_overhead), a parse index). At the
    /// limit, connections stop reading (TCP pushes back on the senders) until memory is given
    /// back; the server never allocates a read buffer past it. `None` means no limit. Default is
    /// a quarter of the memory the process may use (its cgroup's `memory.max`, else the
    /// machine's), at least 64 MiB; 1 GiB where that cannot be read.
    pub max_buffered_bytes: Option<usize>,
    /// Connections from one peer at once: counted by IP address when accepted, and by client
    /// identity once a TLS handshake has verified one. A peer past it is refused: a new socket
    /// is closed as soon as it is accepted (the peer sees the connection close before any
    /// byte); a TLS client is closed after its handshake ([`CloseReason::PeerLimit`](crate::CloseReason::PeerLimit)).
    /// `None` means no limit. Default is `None`: behind a load balancer or NAT, every partner
    /// has the same address.
    pub max_connections_per_peer: Option<usize>,
    /// New connections one IP address may open per second (a token bucket of that many,
    /// refilled continuously); past it new sockets are closed as soon as they are accepted.
    /// `None` means no limit. Default is `None`.
    pub accept_rate_per_peer: Option<u32>,
    /// Connection lines (opened, closed) logged per second; past it they are counted and
    /// summed up in one line per second. Refusals by the per-peer limits are logged at most
    /// once a second with it (every one when `None`). `None` logs every connection. Default is
    /// 20.
    pub connection_log_rate: Option<u32>,
    /// What happens when a handler panics or passes `handler_timeout`. Default is
    /// [`HandlerFailurePolicy::RespondWithFailure`].
    pub handler_failure: HandlerFailurePolicy,
    /// How the acceptor is restarted when it fails. Default is 3 restarts within 5 s, backoff
    /// 100 ms doubling to 5 s.
    pub restart: RestartPolicy,
    /// How long a graceful shutdown waits for busy connections to finish before it aborts them.
    /// Zero aborts busy connections at once (idle ones still close cleanly). Default is 10 s.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Some(Duration::from_secs(60)),
            frame_timeout: Duration::from_secs(30),
            handler_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(5),
            max_connections: 1024,
            max_in_flight: 1,
            max_concurrent_handlers: None,
            max_buffered_bytes: Some(crate::budget::default_max_buffered_bytes()),
            max_connections_per_peer: None,
            accept_rate_per_peer: None,
            connection_log_rate: Some(20),
            handler_failure: HandlerFailurePolicy::default(),
            restart: RestartPolicy::default(),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl ServerConfig {
    /// Sets [`ServerConfig::idle_timeout`]. Default is 60 s.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`ServerConfig::frame_timeout`]. Default is 30 s.
    #[must_use]
    pub fn frame_timeout(mut self, timeout: Duration) -> Self {
        self.frame_timeout = timeout;
        self
    }

    /// Sets [`ServerConfig::handler_timeout`]. Default is 60 s.
    #[must_use]
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.handler_timeout = timeout;
        self
    }

    /// Sets [`ServerConfig::write_timeout`]. Default is 30 s.
    #[must_use]
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Sets [`ServerConfig::handshake_timeout`]. Default is 5 s.
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`ServerConfig::max_connections`]. Default is 1024.
    #[must_use]
    pub fn max_connections(mut self, limit: usize) -> Self {
        self.max_connections = limit;
        self
    }

    /// Sets [`ServerConfig::max_in_flight`]. Default is 1.
    #[must_use]
    pub fn max_in_flight(mut self, limit: usize) -> Self {
        self.max_in_flight = limit;
        self
    }

    /// Sets [`ServerConfig::max_concurrent_handlers`]. Default is `None` (no limit).
    #[must_use]
    pub fn max_concurrent_handlers(mut self, limit: Option<usize>) -> Self {
        self.max_concurrent_handlers = limit;
        self
    }

    /// Sets [`ServerConfig::max_buffered_bytes`]. Default is a quarter of the memory the
    /// process may use, at least 64 MiB.
    #[must_use]
    pub fn max_buffered_bytes(mut self, limit: Option<usize>) -> Self {
        self.max_buffered_bytes = limit;
        self
    }

    /// Sets [`ServerConfig::max_connections_per_peer`]. Default is `None` (no limit).
    #[must_use]
    pub fn max_connections_per_peer(mut self, limit: Option<usize>) -> Self {
        self.max_connections_per_peer = limit;
        self
    }

    /// Sets [`ServerConfig::accept_rate_per_peer`]. Default is `None` (no limit).
    #[must_use]
    pub fn accept_rate_per_peer(mut self, per_second: Option<u32>) -> Self {
        self.accept_rate_per_peer = per_second;
        self
    }

    /// Sets [`ServerConfig::connection_log_rate`]. Default is 20 lines per second.
    #[must_use]
    pub fn connection_log_rate(mut self, per_second: Option<u32>) -> Self {
        self.connection_log_rate = per_second;
        self
    }

    /// Sets [`ServerConfig::handler_failure`]. Default is
    /// [`HandlerFailurePolicy::RespondWithFailure`].
    #[must_use]
    pub fn handler_failure(mut self, policy: HandlerFailurePolicy) -> Self {
        self.handler_failure = policy;
        self
    }

    /// Sets [`ServerConfig::restart`]. Default is 3 restarts within 5 s, backoff 100 ms doubling
    /// to 5 s.
    #[must_use]
    pub fn restart(mut self, policy: impl Into<RestartPolicy>) -> Self {
        self.restart = policy.into();
        self
    }

    /// Sets [`ServerConfig::shutdown_grace`]. Default is 10 s.
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Checks every setting. The server calls this when it starts.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] names the first setting that is out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn positive(setting: &'static str, value: Duration) -> Result<(), ConfigError> {
            if value.is_zero() {
                Err(ConfigError::Zero { setting })
            } else {
                Ok(())
            }
        }
        fn count(setting: &'static str, value: usize) -> Result<(), ConfigError> {
            if value == 0 {
                Err(ConfigError::Zero { setting })
            } else if value > Semaphore::MAX_PERMITS {
                Err(ConfigError::TooLarge {
                    setting,
                    max: Semaphore::MAX_PERMITS,
                })
            } else {
                Ok(())
            }
        }

        if let Some(idle) = self.idle_timeout {
            positive("idle_timeout", idle)?;
        }
        positive("frame_timeout", self.frame_timeout)?;
        positive("handler_timeout", self.handler_timeout)?;
        positive("write_timeout", self.write_timeout)?;
        positive("handshake_timeout", self.handshake_timeout)?;
        count("max_connections", self.max_connections)?;
        count("max_in_flight", self.max_in_flight)?;
        if let Some(limit) = self.max_concurrent_handlers {
            count("max_concurrent_handlers", limit)?;
        }
        if let Some(limit) = self.max_buffered_bytes {
            count("max_buffered_bytes", limit)?;
        }
        if let Some(limit) = self.max_connections_per_peer {
            count("max_connections_per_peer", limit)?;
        }
        if self.accept_rate_per_peer == Some(0) {
            return Err(ConfigError::Zero {
                setting: "accept_rate_per_peer",
            });
        }
        if let RestartPolicy::Backoff {
            backoff,
            max_backoff,
            window,
            ..
        } = self.restart
        {
            positive("restart.window", window)?;
            if max_backoff < backoff {
                return Err(ConfigError::BackoffRange);
            }
        }
        Ok(())
    }
}

/// What a connection does when a handler task fails (panics, or passes `handler_timeout` and is
/// aborted). The connection itself goes on unless the policy is [`HandlerFailurePolicy::Close`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandlerFailurePolicy {
    /// Answer with [`Protocol::on_failure`](crate::Protocol::on_failure) (for HL7, an AE with
    /// ERR-3 = 207) and go on. The default.
    #[default]
    RespondWithFailure,
    /// Send nothing for the failed request and go on.
    NoResponse,
    /// Send nothing and close the connection ([`CloseReason::HandlerFailure`](crate::CloseReason::HandlerFailure)),
    /// after the responses due before the failed request have been written.
    Close,
}

/// How the server restarts its acceptor when it fails (the listening socket died, or an
/// unexpected accept error). Connections are never restarted: their socket is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestartPolicy {
    /// Never restart: the first acceptor failure stops the server, and
    /// [`ServerHandle::wait`](crate::ServerHandle::wait) returns the error.
    Never,
    /// Restart after `backoff`, doubling after each restart up to `max_backoff`; when more than
    /// `max_restarts` failures happen within `window`, stop the server instead (OTP's
    /// intensity and period). Built with [`RestartPolicy::backoff`] (the variant may gain
    /// fields).
    #[non_exhaustive]
    Backoff {
        /// Restarts allowed within `window`. Zero behaves as [`RestartPolicy::Never`].
        max_restarts: u32,
        /// The sliding window over which restarts are counted. Must not be zero.
        window: Duration,
        /// Delay before the first restart in a window.
        backoff: Duration,
        /// Upper bound for the doubling delay. Must not be less than `backoff`.
        max_backoff: Duration,
    },
}

impl RestartPolicy {
    /// A builder for [`RestartPolicy::Backoff`] with named settings, starting from the
    /// default (3 restarts within 5 s, backoff 100 ms doubling to 5 s); set only what differs.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mllp_actors::{RestartPolicy, ServerConfig};
    ///
    /// let config = ServerConfig::default().restart(
    ///     RestartPolicy::builder()
    ///         .max_restarts(5)
    ///         .window(Duration::from_secs(60))
    ///         .max_backoff(Duration::from_secs(10)),
    /// );
    /// assert_eq!(
    ///     config.restart,
    ///     RestartPolicy::backoff(5, Duration::from_secs(60), Duration::from_millis(100), Duration::from_secs(10))
    /// );
    /// ```
    pub fn builder() -> RestartPolicyBuilder {
        RestartPolicyBuilder::default()
    }

    /// Restarts after `backoff`, doubling after each restart up to `max_backoff`; more than
    /// `max_restarts` failures within `window` stop the server. The default is
    /// `backoff(3, 5 s, 100 ms, 5 s)`. Checked when the server starts: `window` must not be
    /// zero and `max_backoff` not less than `backoff`. [`RestartPolicy::builder`] names each
    /// setting instead of taking three durations by position.
    pub fn backoff(
        max_restarts: u32,
        window: Duration,
        backoff: Duration,
        max_backoff: Duration,
    ) -> Self {
        RestartPolicy::Backoff {
            max_restarts,
            window,
            backoff,
            max_backoff,
        }
    }
}

/// Builds a [`RestartPolicy::Backoff`] with named settings; see [`RestartPolicy::builder`].
/// Converts into a [`RestartPolicy`] (`.build()`, or `into()` where one is expected, as
/// [`ServerConfig::restart`] does). Nothing is checked until the server starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct RestartPolicyBuilder {
    max_restarts: u32,
    window: Duration,
    backoff: Duration,
    max_backoff: Duration,
}

impl Default for RestartPolicyBuilder {
    fn default() -> Self {
        Self {
            max_restarts: 3,
            window: Duration::from_secs(5),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RestartPolicyBuilder {
    /// Restarts allowed within the window; one more failure stops the server. Zero behaves as
    /// [`RestartPolicy::Never`]. Default is 3.
    pub fn max_restarts(mut self, restarts: u32) -> Self {
        self.max_restarts = restarts;
        self
    }

    /// The sliding window over which failures are counted; must not be zero. Default is 5 s.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The delay before the first restart in a window, doubled after each restart. Default is
    /// 100 ms.
    pub fn backoff(mut self, delay: Duration) -> Self {
        self.backoff = delay;
        self
    }

    /// The cap of the doubling delay; must not be less than `backoff`. Default is 5 s.
    pub fn max_backoff(mut self, delay: Duration) -> Self {
        self.max_backoff = delay;
        self
    }

    /// The policy.
    pub fn build(self) -> RestartPolicy {
        RestartPolicy::backoff(
            self.max_restarts,
            self.window,
            self.backoff,
            self.max_backoff,
        )
    }
}

impl From<RestartPolicyBuilder> for RestartPolicy {
    fn from(builder: RestartPolicyBuilder) -> Self {
        builder.build()
    }
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy::backoff(
            3,
            Duration::from_secs(5),
            Duration::from_millis(100),
            Duration::from_secs(5),
        )
    }
}

/// A setting of [`ServerConfig`] is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A limit or a timeout that must be positive is zero (`max_connections`, `max_in_flight`,
    /// `max_concurrent_handlers`, a timeout other than `shutdown_grace`, the restart window).
    #[error("{setting} must be greater than zero")]
    Zero {
        /// The setting's name.
        setting: &'static str,
    },
    /// A limit is larger than the runtime can count (tokio's `Semaphore::MAX_PERMITS`).
    #[error("{setting} must be at most {max}")]
    TooLarge {
        /// The setting's name.
        setting: &'static str,
        /// The largest accepted value.
        max: usize,
    },
    /// `RestartPolicy::Backoff` has a `max_backoff` below its `backoff`.
    #[error("restart max_backoff must not be less than backoff")]
    BackoffRange,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented defaults are the ones in force, and they validate.
    #[test]
    fn defaults_are_documented_values() {
        let c = ServerConfig::default();
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(c.frame_timeout, Duration::from_secs(30));
        assert_eq!(c.handler_timeout, Duration::from_secs(60));
        assert_eq!(c.write_timeout, Duration::from_secs(30));
        assert_eq!(c.handshake_timeout, Duration::from_secs(5));
        assert_eq!(c.max_connections, 1024);
        assert_eq!(c.max_in_flight, 1);
        assert_eq!(c.max_concurrent_handlers, None);
        assert!(c.max_buffered_bytes.is_some_and(|b| b >= 64 << 20));
        assert_eq!(c.max_connections_per_peer, None);
        assert_eq!(c.accept_rate_per_peer, None);
        assert_eq!(c.connection_log_rate, Some(20));
        assert_eq!(c.handler_failure, HandlerFailurePolicy::RespondWithFailure);
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
        assert_eq!(
            c.restart,
            RestartPolicy::Backoff {
                max_restarts: 3,
                window: Duration::from_secs(5),
                backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
            }
        );
        assert_eq!(c.validate(), Ok(()));
    }

    /// Zero limits and zero timeouts are rejected with the setting's name, not a panic.
    #[test]
    fn zero_values_are_config_errors() {
        let zero = Duration::ZERO;
        let cases = [
            (
                ServerConfig::default().max_connections(0),
                "max_connections",
            ),
            (ServerConfig::default().max_in_flight(0), "max_in_flight"),
            (
                ServerConfig::default().max_concurrent_handlers(Some(0)),
                "max_concurrent_handlers",
            ),
            (
                ServerConfig::default().idle_timeout(Some(zero)),
                "idle_timeout",
            ),
            (ServerConfig::default().frame_timeout(zero), "frame_timeout"),
            (
                ServerConfig::default().handler_timeout(zero),
                "handler_timeout",
            ),
            (ServerConfig::default().write_timeout(zero), "write_timeout"),
            (
                ServerConfig::default().handshake_timeout(zero),
                "handshake_timeout",
            ),
            (
                ServerConfig::default().restart(RestartPolicy::Backoff {
                    max_restarts: 3,
                    window: zero,
                    backoff: zero,
                    max_backoff: zero,
                }),
                "restart.window",
            ),
        ];
        for (config, setting) in cases {
            assert_eq!(config.validate(), Err(ConfigError::Zero { setting }));
        }
    }

    /// Limits beyond what a semaphore can count and an inverted backoff range are rejected.
    #[test]
    fn out_of_range_values_are_config_errors() {
        let huge = ServerConfig::default().max_connections(usize::MAX);
        assert!(matches!(
            huge.validate(),
            Err(ConfigError::TooLarge {
                setting: "max_connections",
                ..
            })
        ));
        let inverted = ServerConfig::default().restart(RestartPolicy::Backoff {
            max_restarts: 1,
            window: Duration::from_secs(1),
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(1),
        });
        assert_eq!(inverted.validate(), Err(ConfigError::BackoffRange));
    }

    /// `None` idle timeout, zero grace and `RestartPolicy::Never` are valid choices.
    #[test]
    fn permissive_values_validate() {
        let c = ServerConfig::default()
            .idle_timeout(None)
            .shutdown_grace(Duration::ZERO)
            .restart(RestartPolicy::Never);
        assert_eq!(c.validate(), Ok(()));
    }
}
