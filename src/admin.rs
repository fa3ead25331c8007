//! The admin HTTP endpoint (`admin` feature): health and readiness probes, Prometheus metrics
//! from the server's own OpenTelemetry instruments, and the server's snapshot as JSON.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | `200 ok` while the process serves HTTP (liveness) |
//! | `GET /readyz` | `200 ready` while the server accepts and every [check](AdminState::check) passes; `503` with the reasons while it drains, after it stopped, or while a check fails (readiness) |
//! | `GET /metrics` | Prometheus text exposition (0.0.4) of the instruments the server records (docs/telemetry.md names them) |
//! | `GET /status` | the snapshot without the connection list, as JSON |
//! | `GET /connections` | the live and recently closed connections, as JSON (`?limit=N`) |
//!
//! Everything it shows comes from [`ServerHandle::snapshot`](crate::ServerHandle::snapshot)
//! and the metric instruments: MSH fields (type, trigger event, ACK codes), counters,
//! addresses; never a payload, never a field outside MSH.
//!
//! With a token ([`AdminState::token`]), `/metrics`, `/status` and `/connections` require
//! `Authorization: Bearer <token>` (401 otherwise); the probes stay open, so a load balancer or
//! an orchestrator needs no secret, and they disclose nothing but "ready or not".
//!
//! The endpoint is off unless you serve it. [`router`] gives an axum `Router` to mount in a
//! service of your own; [`serve`] runs it on a listener until a future resolves. Stop it
//! *after* the MLLP server (`serve(.., handle.wait())`), so that `/readyz` answers 503 for
//! the whole drain. The example uses the OpenTelemetry crates this one is built with, which it
//! re-exports as [`mllp::opentelemetry`](crate::opentelemetry) and
//! [`mllp::opentelemetry_sdk`](crate::opentelemetry_sdk): with them, an upgrade of `mllp`
//! cannot leave your own OpenTelemetry dependencies at a version whose types no longer fit.
//!
//! ```no_run
//! use mllp::admin::{AdminState, Health, PrometheusMetrics};
//! use mllp::opentelemetry::metrics::MeterProvider as _;
//! use mllp::opentelemetry_sdk::metrics::SdkMeterProvider;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let (metrics, reader) = PrometheusMetrics::new()?;
//! let provider = SdkMeterProvider::builder().with_reader(reader).build();
//! let server = mllp::Server::builder()
//!     .meter(&provider.meter("mllp"))
//!     .bind("127.0.0.1:2575")
//!     .await?
//!     .spawn()
//!     .await?;
//! let state = AdminState::new(server.clone())
//!     .metrics(metrics)
//!     .check("store", || Health::healthy("sqlite:mllp.db"));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9575").await?;
//! let stopped = server.clone();
//! let admin = tokio::spawn(mllp::admin::serve(listener, state, async move {
//!     let _ = stopped.wait().await;
//! }));
//! server.shutdown().await;
//! admin.await??;
//! # Ok(()) }
//! ```

mod auth;
mod health;
mod metrics;
mod status;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::server::ServerHandle;

pub use health::Health;
pub use metrics::{PrometheusMetrics, PrometheusReader};

/// The default address of the admin endpoint in `mllp serve --admin`.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9575";

type CheckFn = dyn Fn() -> Health + Send + Sync;

/// What the admin endpoint serves: the servers (one per listener of the process), their
/// metrics, the readiness checks, the token. Cheap to clone.
#[derive(Clone)]
pub struct AdminState {
    servers: Vec<(Option<Arc<str>>, ServerHandle)>,
    metrics: Option<PrometheusMetrics>,
    checks: Vec<(Arc<str>, Arc<CheckFn>)>,
    token: Option<Arc<str>>,
}

impl fmt::Debug for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminState")
            .field("servers", &self.servers)
            .field("metrics", &self.metrics.is_some())
            .field(
                "checks",
                &self.checks.iter().map(|(n, _)| &**n).collect::<Vec<_>>(),
            )
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl AdminState {
    /// Serves `server`'s state. Default: no metrics (`/metrics` answers 404), no checks
    /// besides the server's own state, no token.
    pub fn new(server: ServerHandle) -> Self {
        Self {
            servers: vec![(None, server)],
            metrics: None,
            checks: Vec::new(),
            token: None,
        }
    }

    /// Adds another server of the same process (another listener), named `label` in
    /// `/status` and `/connections` (the first one, given to [`new`](Self::new), is unnamed
    /// unless [`label`](Self::label) names it). The endpoint then reports all of them: ready
    /// only while every one is, counts summed, connections listed together.
    #[must_use]
    pub fn server(mut self, label: impl Into<Arc<str>>, server: ServerHandle) -> Self {
        self.servers.push((Some(label.into()), server));
        self
    }

    /// Names the server given to [`new`](Self::new). Default: unnamed.
    #[must_use]
    pub fn label(mut self, label: impl Into<Arc<str>>) -> Self {
        if let Some(first) = self.servers.first_mut() {
            first.0 = Some(label.into());
        }
        self
    }

    /// Serves `/metrics` from this exporter. Default is none (404).
    #[must_use]
    pub fn metrics(mut self, metrics: PrometheusMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Adds a readiness check, called on every `/readyz` and `/status` (keep it cheap: read a
    /// flag, never do I/O). `/readyz` answers 503 while any check is unhealthy. A store plugs
    /// in with one line: `.check("store", move || Health::of_store(&*store))` (with `store` an
    /// `Arc` of the store; see [`Health::of_store`]).
    #[must_use]
    pub fn check(
        mut self,
        name: impl Into<Arc<str>>,
        check: impl Fn() -> Health + Send + Sync + 'static,
    ) -> Self {
        self.checks.push((name.into(), Arc::new(check)));
        self
    }

    /// Requires `Authorization: Bearer <token>` on `/metrics`, `/status` and `/connections`.
    /// Default is no token.
    #[must_use]
    pub fn token(mut self, token: impl Into<Arc<str>>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The checks' results, in the order added.
    fn run_checks(&self) -> Vec<(Arc<str>, Health)> {
        self.checks
            .iter()
            .map(|(name, check)| (Arc::clone(name), check()))
            .collect()
    }
}

/// The admin routes over `state`, to serve with [`serve`] or mount in your own axum app.
pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics::metrics))
        .route("/status", get(status::status))
        .route("/connections", get(status::connections))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(protected)
        .with_state(state)
}

/// Serves the admin routes on `listener` until `shutdown` resolves, then finishes the requests
/// in progress and returns.
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Why an admin address may not be served as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExposureError {
    /// A non-loopback address without a token, and public exposure was not asked for.
    #[error(
        "admin address {0} is not a loopback address: set a token (clients then send \
         `Authorization: Bearer <token>`) or allow public exposure explicitly"
    )]
    NotLoopback(SocketAddr),
}

/// The rule `mllp serve --admin` applies: a loopback address is always allowed; any other needs
/// a token, or an explicit `public` (for a network where the endpoint is protected otherwise).
///
/// # Errors
/// [`ExposureError::NotLoopback`] when neither holds.
pub fn check_exposure(addr: SocketAddr, token: bool, public: bool) -> Result<(), ExposureError> {
    if addr.ip().is_loopback() || token || public {
        Ok(())
    } else {
        Err(ExposureError::NotLoopback(addr))
    }
}
