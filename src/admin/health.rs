//! `/healthz` and `/readyz`: the probes a load balancer or an orchestrator polls.
//!
//! Both answer `text/plain`: `/healthz` always `200 ok` (the process is alive and serving
//! HTTP); `/readyz` `200 ready`, or `503` with one line per reason (`draining`, `stopped`,
//! `store: <detail>`). A Kubernetes `httpGet` probe and haproxy's `option httpchk` treat 2xx
//! as up and anything else as down, so no body parsing is needed.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AdminState;
use crate::server::ServerState;

/// The result of one readiness check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Whether the dependency can serve.
    pub healthy: bool,
    /// What it is and how it is (`sqlite:mllp.db`, `last commit failed`); shown in `/readyz`
    /// and `/status`. Never patient data.
    pub detail: String,
    /// Healthy, but needing attention (a certificate about to expire, a reload that failed
    /// while the previous configuration still serves): `/readyz` stays ready, `/status` says
    /// `"degraded": true`, and `mllp top` shows it. Default `false`.
    pub degraded: bool,
}

impl Health {
    /// A check result.
    pub fn new(healthy: bool, detail: impl Into<String>) -> Self {
        Self {
            healthy,
            detail: detail.into(),
            degraded: false,
        }
    }

    /// A store's readiness: healthy while it commits, detail its description
    /// (`sqlite:mllp.db`); unhealthy while its commits fail, saying so, so that `/readyz`
    /// tells why it is not ready. The cause is in the error log (the store layer logs it when
    /// the store starts failing).
    pub fn of_store(store: &dyn crate::store::Store) -> Self {
        match store.health() {
            crate::store::StoreHealth::Ok => Self::healthy(store.describe()),
            _ => Self::unhealthy(format!(
                "{}: commits are failing, messages are answered AE/CE until one succeeds (the \
                 error log has the cause)",
                store.describe()
            )),
        }
    }

    /// A healthy result that needs attention: ready, but flagged in `/status`.
    pub fn degraded(detail: impl Into<String>) -> Self {
        Self {
            degraded: true,
            ..Self::new(true, detail)
        }
    }

    /// A healthy result.
    pub fn healthy(detail: impl Into<String>) -> Self {
        Self::new(true, detail)
    }

    /// An unhealthy result.
    pub fn unhealthy(detail: impl Into<String>) -> Self {
        Self::new(false, detail)
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

pub(super) async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n".to_owned())
}

/// Why the server is not ready, if it is not: its state, then each failing check.
pub(super) fn not_ready(state: &AdminState) -> Vec<String> {
    let mut reasons = Vec::new();
    for (label, server) in &state.servers {
        match (server.state(), label) {
            (ServerState::Running, _) => {}
            (other, None) => reasons.push(other.as_str().to_owned()),
            (other, Some(label)) => reasons.push(format!("{label}: {}", other.as_str())),
        }
    }
    for (name, health) in state.run_checks() {
        if !health.healthy {
            reasons.push(format!("{name}: {}", health.detail));
        }
    }
    reasons
}

pub(super) async fn readyz(State(state): State<AdminState>) -> Response {
    let reasons = not_ready(&state);
    if reasons.is_empty() {
        text(StatusCode::OK, "ready\n".to_owned())
    } else {
        let mut body = String::from("not ready\n");
        for reason in reasons {
            body.push_str(&reason);
            body.push('\n');
        }
        text(StatusCode::SERVICE_UNAVAILABLE, body)
    }
}
