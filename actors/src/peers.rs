//! Per-peer limits, so one partner cannot starve the others: at most `max_connections_per_peer`
//! connections from one IP address (and, once a TLS handshake has verified it, from one client
//! identity), and at most `accept_rate_per_peer` new connections per second from one address.
//!
//! The acceptor asks [`Peers::admit_address`] right after `accept()`; a refused socket is closed
//! at once (the peer sees the connection close before any byte) and reported as
//! [`Event::ConnectionRefused`](crate::Event::ConnectionRefused). A connection whose TLS
//! handshake names an identity asks [`Peers::admit_identity`]; refused, it closes with
//! [`CloseReason::PeerLimit`](crate::CloseReason::PeerLimit). Each admission is a
//! [`PeerGuard`] that gives its place back when dropped (with the connection's slot, or with the
//! connection's task). Refusals, and the addresses the transport does not admit
//! ([`Transport::admit`](crate::Transport::admit)), are logged at `warn`, at most one line per
//! second, and one summary line for each second in which more were refused.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::log_limit::LogLimit;

/// Whom a connection counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PeerKey {
    Address(IpAddr),
    Identity(Arc<str>),
}

/// Why a peer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// It already has `max_connections_per_peer` connections.
    TooMany(usize),
    /// It opened more than `accept_rate_per_peer` connections in the last second.
    TooFast(u32),
    /// The transport's admission check refused its address (an allow-list it is not on).
    NotAdmitted,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooMany(limit) => write!(f, "more than {limit} connections from this peer"),
            Refusal::TooFast(rate) => {
                write!(
                    f,
                    "more than {rate} new connections per second from this peer"
                )
            }
            Refusal::NotAdmitted => f.write_str("its address is not among the admitted ones"),
        }
    }
}

/// The per-peer counts and rates of one server.
pub(crate) struct Peers {
    limit: Option<usize>,
    rate: Option<u32>,
    counts: Mutex<HashMap<PeerKey, usize>>,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    refusals: Arc<LogLimit>,
}

/// A token bucket: `rate` tokens per second, holding at most `rate`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets kept before the full ones (peers quiet for a second) are forgotten.
const BUCKETS_KEPT: usize = 4096;

/// A connection's place in its peer's count; given back when dropped.
pub(crate) struct PeerGuard {
    peers: Arc<Peers>,
    key: PeerKey,
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        let mut counts = self.peers.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

impl fmt::Debug for PeerGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerGuard")
    }
}

impl Peers {
    /// Limits per peer; refusals logged at most once a second (every one when `quiet` is
    /// false: connection logs are not limited either).
    pub(crate) fn new(limit: Option<usize>, rate: Option<u32>, quiet: bool) -> Arc<Self> {
        Arc::new(Peers {
            limit,
            rate,
            counts: Mutex::default(),
            buckets: Mutex::default(),
            refusals: LogLimit::new(quiet.then_some(1), |left_out| {
                tracing::warn!(
                    refused = left_out.iter().sum::<u64>(),
                    "{} more connection(s) refused by the per-peer limits or address admission in the last second",
                    left_out.iter().sum::<u64>()
                );
            }),
        })
    }

    /// Admits a new connection from `ip`, or says why not. `None` when no per-peer limit is
    /// set (nothing to count).
    pub(crate) fn admit_address(
        self: &Arc<Self>,
        ip: IpAddr,
    ) -> Result<Option<PeerGuard>, Refusal> {
        if let Some(rate) = self.rate {
            self.take_token(ip, rate)?;
        }
        self.count(PeerKey::Address(ip))
    }

    /// Admits a connection whose TLS handshake verified `identity`, or says why not.
    pub(crate) fn admit_identity(
        self: &Arc<Self>,
        identity: &str,
    ) -> Result<Option<PeerGuard>, Refusal> {
        self.count(PeerKey::Identity(identity.into()))
    }

    fn count(self: &Arc<Self>, key: PeerKey) -> Result<Option<PeerGuard>, Refusal> {
        let Some(limit) = self.limit else {
            return Ok(None);
        };
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= limit {
            return Err(Refusal::TooMany(limit));
        }
        *count += 1;
        Ok(Some(PeerGuard {
            peers: Arc::clone(self),
            key,
        }))
    }

    /// Takes one of `ip`'s tokens, refilled at `rate` per second up to `rate`.
    fn take_token(&self, ip: IpAddr, rate: u32) -> Result<(), Refusal> {
        let now = Instant::now();
        let rate_f = f64::from(rate.max(1));
        let refill = |bucket: &Bucket| {
            let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
            (bucket.tokens + elapsed * rate_f).min(rate_f)
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= BUCKETS_KEPT && !buckets.contains_key(&ip) {
            buckets.retain(|_, bucket| refill(bucket) < rate_f);
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: rate_f,
            at: now,
        });
        let tokens = refill(bucket);
        if tokens < 1.0 {
            return Err(Refusal::TooFast(rate));
        }
        *bucket = Bucket {
            tokens: tokens - 1.0,
            at: now,
        };
        Ok(())
    }

    /// Logs a refusal: the first of each second at `warn`, with the peer and the reason; the
    /// others of that second in one summary line.
    pub(crate) fn log_refusal(
        self: &Arc<Self>,
        peer: SocketAddr,
        identity: Option<&str>,
        refusal: Refusal,
        tasks: &TaskTracker,
    ) {
        if self.refusals.admit(0, tasks) {
            tracing::warn!(
                network.peer.address = %peer.ip(),
                tls.client.subject = identity,
                "connection refused: {refusal} (later refusals are summed up once a second)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    /// Each address has its own count; a connection that ends gives its place back.
    #[test]
    fn count_per_address_and_identity() {
        let peers = Peers::new(Some(2), None, true);
        let a1 = peers.admit_address(ip(1)).unwrap();
        let _a2 = peers.admit_address(ip(1)).unwrap();
        assert_eq!(peers.admit_address(ip(1)).unwrap_err(), Refusal::TooMany(2));
        assert!(peers.admit_address(ip(2)).is_ok());
        drop(a1);
        assert!(peers.admit_address(ip(1)).is_ok());
        let _x = peers.admit_identity("lab").unwrap();
        let _y = peers.admit_identity("lab").unwrap();
        assert!(peers.admit_identity("lab").is_err());
        assert!(
            Peers::new(None, None, true)
                .admit_address(ip(1))
                .unwrap()
                .is_none()
        );
    }

    /// Up to `rate` new connections at once, then one more per `1/rate` seconds.
    #[tokio::test(start_paused = true)]
    async fn rate_per_address_refills_over_time() {
        let peers = Peers::new(None, Some(4), true);
        for _ in 0..4 {
            peers.admit_address(ip(1)).unwrap();
        }
        assert_eq!(peers.admit_address(ip(1)).unwrap_err(), Refusal::TooFast(4));
        assert!(peers.admit_address(ip(2)).is_ok());
        tokio::time::advance(Duration::from_millis(250)).await;
        assert!(peers.admit_address(ip(1)).is_ok());
        assert!(peers.admit_address(ip(1)).is_err());
    }
}
