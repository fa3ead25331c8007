//! The admin HTTP endpoint of `mllp serve` (`--admin`): bound before the `listening on` line,
//! served until the MLLP server has stopped, so that `/readyz` answers 503 for the whole drain.

use std::sync::Arc;

use mllp::store::Store;
use std::process::ExitCode;
use std::time::SystemTime;

use mllp::ServerHandle;
use mllp::admin::{AdminState, Health, PrometheusMetrics};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::certificates::{self, Served};
use super::settings::AdminSettings;
use crate::exit;

/// Binds the admin address; a failure (address in use) is exit status 1.
pub(super) async fn bind(settings: &AdminSettings) -> Result<TcpListener, ExitCode> {
    TcpListener::bind(settings.addr).await.map_err(|e| {
        exit::fail_text(
            exit::FAILURE,
            &format!("could not bind --admin {}: {e}", settings.addr),
        )
    })
}

/// Serves the endpoint for `servers` (one per listener, labelled when there are several)
/// until every one has stopped; prints `admin on ADDR` on stdout. Each store is a readiness
/// check; each TLS listener's certificate is a check that is always ready (a failed reload
/// keeps serving the previous certificate), degraded when it needs attention, and says in
/// `/status` until when it is valid and what its last reload did.
pub(super) fn spawn(
    listener: TcpListener,
    settings: &AdminSettings,
    servers: &[(Option<String>, ServerHandle)],
    metrics: Option<PrometheusMetrics>,
    stores: Vec<Arc<dyn Store>>,
    tls: Vec<Served>,
) -> JoinHandle<()> {
    let (first_label, first) = servers.first().expect("at least one server");
    let mut state = AdminState::new(first.clone());
    if let Some(label) = first_label {
        state = state.label(label.as_str());
    }
    for (label, server) in &servers[1..] {
        state = state.server(label.as_deref().unwrap_or("listener"), server.clone());
    }
    if let Some(metrics) = metrics {
        state = state.metrics(metrics);
    }
    if let Some(token) = &settings.token {
        state = state.token(token.as_str());
    }
    // `/readyz` is 503 while a store cannot commit.
    for store in stores {
        state = state.check("store", move || Health::of_store(&*store));
    }
    for served in tls {
        let name = match &served.label {
            Some(label) => format!("tls {label}"),
            None => "tls".to_owned(),
        };
        state = state.check(name, move || {
            certificates::health(&served, SystemTime::now())
        });
    }
    let addr = listener.local_addr().unwrap_or(settings.addr);
    tracing::info!(address = %addr, token = settings.token.is_some(), "admin endpoint listening");
    say!("admin on {addr}");
    let stopped: Vec<ServerHandle> = servers.iter().map(|(_, s)| s.clone()).collect();
    tokio::spawn(async move {
        let shutdown = async move {
            futures_util::future::join_all(stopped.iter().map(ServerHandle::wait)).await;
        };
        if let Err(error) = mllp::admin::serve(listener, state, shutdown).await {
            tracing::error!(%error, "admin endpoint failed");
        }
    })
}
