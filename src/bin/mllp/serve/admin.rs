//! The admin HTTP endpoint of `mllp serve` (`--admin`): bound before the `listening on` line,
//! served until the MLLP server has stopped, so that `/readyz` answers 503 for the whole drain.

use std::sync::Arc;

use mllp::store::{Store, StoreHealth};
use std::process::ExitCode;

use mllp::ServerHandle;
use mllp::admin::{AdminState, Health, PrometheusMetrics};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

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

/// Serves the endpoint for `server` until it has stopped; prints `admin on ADDR` on stdout.
pub(super) fn spawn(
    listener: TcpListener,
    settings: &AdminSettings,
    server: &ServerHandle,
    metrics: Option<PrometheusMetrics>,
    store: Option<Arc<dyn Store>>,
) -> JoinHandle<()> {
    let mut state = AdminState::new(server.clone());
    if let Some(metrics) = metrics {
        state = state.metrics(metrics);
    }
    if let Some(token) = &settings.token {
        state = state.token(token.as_str());
    }
    // `/readyz` is 503 while the store cannot commit.
    if let Some(store) = store {
        state = state.check("store", move || {
            Health::new(store.health() == StoreHealth::Ok, store.describe())
        });
    }
    let addr = listener.local_addr().unwrap_or(settings.addr);
    tracing::info!(address = %addr, token = settings.token.is_some(), "admin endpoint listening");
    say!("admin on {addr}");
    let stopped = server.clone();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait().await;
        };
        if let Err(error) = mllp::admin::serve(listener, state, shutdown).await {
            tracing::error!(%error, "admin endpoint failed");
        }
    })
}
