//! Several listeners in one process (`[[listener]]` tables): each its own server, with its
//! own bind, TLS, admission, limits, timeouts, partner switches, store and forward target;
//! one signal drains them all.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use futures_util::future::{join_all, select_all};
use mllp::admin::PrometheusMetrics;
use mllp::server::{PlainTcp, Transport};
use mllp::store::Store;
use mllp::tls::Admitted;
use mllp::{ServerBuilder, ServerHandle, ShutdownReport};

use super::settings::Settings;
use super::signals::{self, ShutdownSignal};
use super::{admin, build, certificates, handler, store};
use crate::exit;

/// Says which listener a failure (already printed) belongs to.
fn context(label: &str) -> impl Fn(ExitCode) -> ExitCode + '_ {
    move |code| {
        complain!("error: (in {label})");
        code
    }
}

/// Serves every listener of `settings.listeners` until the signal, then drains them all.
pub(super) async fn serve_many(
    settings: Settings,
    mut signal: ShutdownSignal,
    metrics: Option<PrometheusMetrics>,
) -> Result<ExitCode, ExitCode> {
    // Everything that can be refused is checked for every listener before anything is
    // created on disk or bound.
    let mut checked = Vec::with_capacity(settings.listeners.len());
    for listener in &settings.listeners {
        let label = listener.label.as_deref().unwrap_or("listener");
        let admission = build::admission(&listener.allow_peer).map_err(context(label))?;
        let tls = build::tls(listener.tls.as_ref()).map_err(context(label))?;
        build::check_bind(&listener.bind)
            .await
            .map_err(context(label))?;
        checked.push((listener, admission, tls));
    }
    // One endpoint for the whole process (`admin` is a top-level key), bound before any
    // listener starts: a busy admin port fails the start like a busy listener port.
    let admin_listener = match &settings.admin {
        Some(admin) => Some(admin::bind(admin).await?),
        None => None,
    };

    let mut handles: Vec<ServerHandle> = Vec::with_capacity(checked.len());
    let mut reloaders = Vec::new();
    // A store named by several listeners is opened once and shared: one writer per file.
    let mut stores: HashMap<String, Option<Arc<dyn Store>>> = HashMap::new();
    for (listener, admission, tls) in checked {
        let label = listener.label.as_deref().unwrap_or("listener");
        let started = async {
            let key = listener.store.spec.to_string();
            let store = match stores.get(&key) {
                Some(store) => store.clone(),
                None => {
                    let opened =
                        store::open(&listener.store, listener.server.max_message_size).await?;
                    stores.insert(key, opened.clone());
                    opened
                }
            };
            let forwarder = listener
                .forward
                .as_ref()
                .map(|f| f.forwarder(listener.partner.ack_options()));
            let builder = build::builder(listener, handler::router(store.clone(), forwarder));
            let handle = match tls {
                None => {
                    start(
                        builder.transport(Admitted::new(PlainTcp, admission)),
                        listener,
                    )
                    .await?
                }
                Some(transport) => {
                    reloaders.push(certificates::Served {
                        label: listener.label.clone(),
                        reloader: transport.reloader(),
                    });
                    start(
                        builder.transport(Admitted::new(transport, admission)),
                        listener,
                    )
                    .await?
                }
            };
            match &store {
                Some(store) => {
                    tracing::info!(listener = label, store = %store.describe(), "storing messages")
                }
                None => tracing::warn!(
                    listener = label,
                    "no store: messages are acknowledged but not stored"
                ),
            }
            Ok::<_, ExitCode>(handle)
        }
        .await
        .map_err(context(label));
        match started {
            Ok(handle) => {
                tracing::info!(listener = label, address = %handle.local_addr(), tls = listener.tls.is_some(), "listening");
                say!("listening on {} ({label})", handle.local_addr());
                handles.push(handle);
            }
            Err(code) => {
                // The ones already serving are drained before the failure is reported.
                join_all(handles.iter().map(ServerHandle::shutdown)).await;
                return Err(code);
            }
        }
    }
    let admin_task = match (admin_listener, &settings.admin) {
        (Some(listener), Some(admin)) => {
            let servers: Vec<(Option<String>, ServerHandle)> = settings
                .listeners
                .iter()
                .zip(&handles)
                .map(|(l, h)| (l.label.clone(), h.clone()))
                .collect();
            let mut stores: Vec<_> = stores.values().flatten().cloned().collect();
            stores.sort_by_key(|s| s.describe());
            Some(admin::spawn(
                listener,
                admin,
                &servers,
                metrics,
                stores,
                reloaders.clone(),
            ))
        }
        _ => None,
    };
    let _ = std::io::Write::flush(&mut std::io::stdout());

    let hangup_task = signal.spawn_reloaders(reloaders.clone());
    let _certificates = certificates::Watch::start(reloaders);
    let failed = {
        let stopped = select_all(handles.iter().map(|h| Box::pin(h.wait())));
        tokio::select! {
            () = signal.wait() => None,
            (result, index, _) = stopped => result.err().map(|e| (index, e)),
        }
    };
    let reports = join_all(handles.iter().map(ServerHandle::shutdown)).await;
    if let Some(task) = hangup_task {
        task.abort();
    }
    if let Some(task) = admin_task {
        // Every server has stopped, so the endpoint is finishing its last requests.
        let _ = task.await;
    }
    let mut closed = true;
    for store in stores.values().flatten() {
        closed &= store::close(store).await;
    }
    let mut total = ShutdownReport::default();
    for report in reports {
        total.drained += report.drained;
        total.aborted += report.aborted;
    }
    if let Some((index, error)) = failed {
        let label = settings.listeners[index]
            .label
            .as_deref()
            .unwrap_or("listener");
        return Err(context(label)(exit::fail(exit::FAILURE, &error)));
    }
    Ok(signals::drain_report(&total, closed))
}

/// Binds and starts one listener's server.
async fn start<T: Transport>(
    builder: ServerBuilder<T>,
    listener: &Settings,
) -> Result<ServerHandle, ExitCode> {
    let server = build::bind(builder, &listener.bind).await?;
    server
        .spawn()
        .await
        .map_err(|e| exit::fail(exit::FAILURE, &e))
}
