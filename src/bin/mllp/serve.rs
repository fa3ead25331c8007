//! `mllp serve`: receive HL7 over MLLP and store every accepted message durably before its AA.
//!
//! [`run`] is the command, step by step; each step lives in its own file: `args` (the flags),
//! `settings` (flags over the config file over the defaults), `telemetry` (logs and export),
//! `build` (admission, TLS, the server builder), `partner` (the lenient-partner switches),
//! `forward` (`--forward`: the downstream receiver), `listeners` (`[[listener]]` tables: several
//! servers in one process), `store` (opening `--store`), `handler` (the route that stores, then
//! accepts), `admin` (the admin HTTP endpoint) and `signals` (the drain on SIGTERM/SIGINT, the
//! TLS reload on SIGHUP).

mod admin;
mod args;
mod build;
mod certificates;
mod forward;
mod handler;
mod listeners;
mod partner;
mod settings;
mod signals;
mod store;
mod telemetry;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use mllp::ServerBuilder;
use mllp::admin::PrometheusMetrics;
use mllp::server::{PlainTcp, Transport};
use mllp::store::Store;
use mllp::tls::Admitted;

pub(crate) use args::ServeArgs;
use settings::Settings;
use signals::ShutdownSignal;

use crate::exit;

/// Runs the server until SIGTERM/SIGINT.
pub(crate) async fn run(args: ServeArgs) -> ExitCode {
    let settings = match args.resolve() {
        Ok(s) => s,
        Err(e) => return exit::fail(exit::USAGE, &e),
    };
    // The admin endpoint's Prometheus exporter reads the same instruments as OTLP export: its
    // reader joins the meter provider that `telemetry::init` installs.
    let (metrics, reader) = match settings.admin.is_some().then(PrometheusMetrics::new) {
        Some(Ok((metrics, reader))) => (Some(metrics), Some(reader)),
        Some(Err(e)) => return exit::fail(exit::FAILURE, &e),
        None => (None, None),
    };
    // Before the server is built: it takes its metric instruments from the global meter
    // provider that `telemetry::init` installs.
    let telemetry = match telemetry::init(&settings.telemetry, reader) {
        Ok(t) => t,
        Err(text) => return exit::fail_text(exit::USAGE, &text),
    };
    // Exported with the server's metrics (admin endpoint, OTLP), if any.
    let _allocator_gauges = crate::allocator::register(&mllp::telemetry::meter());
    let code = serve(settings, metrics)
        .await
        .unwrap_or_else(|failed| failed);
    telemetry.shutdown().await;
    code
}

/// Checks and opens what the server needs, then serves. `Err` is the exit status of a step
/// that failed, its reason already printed.
async fn serve(
    settings: Settings,
    metrics: Option<PrometheusMetrics>,
) -> Result<ExitCode, ExitCode> {
    // Registered before anything is printed: a signal that arrives right after `listening on`
    // must start a drain, not kill the process with the default disposition.
    let signal = ShutdownSignal::register().map_err(|e| exit::fail(exit::FAILURE, &e))?;
    if !settings.listeners.is_empty() {
        return listeners::serve_many(settings, signal, metrics).await;
    }

    // Everything that can be refused as a usage error is checked before anything is created on
    // disk: a bad flag must not leave a store behind.
    let admission = build::admission(&settings.allow_peer)?;
    let tls = build::tls(settings.tls.as_ref())?;
    build::check_bind(&settings.bind).await?;

    let store = store::open(&settings.store, settings.server.max_message_size).await?;
    let forwarder = settings
        .forward
        .as_ref()
        .map(|f| f.forwarder(settings.partner.ack_options()));
    let builder = build::builder(&settings, handler::router(store.clone(), forwarder));
    match tls {
        None => {
            let builder = builder.transport(Admitted::new(PlainTcp, admission));
            serve_on(builder, &settings, signal, store, Vec::new(), metrics).await
        }
        Some(transport) => {
            let served = certificates::Served {
                label: None,
                reloader: transport.reloader(),
            };
            let builder = builder.transport(Admitted::new(transport, admission));
            serve_on(builder, &settings, signal, store, vec![served], metrics).await
        }
    }
}

/// Binds and serves on one transport (plain TCP or TLS) until the signal.
async fn serve_on<T: Transport>(
    builder: ServerBuilder<T>,
    settings: &Settings,
    mut signal: ShutdownSignal,
    store: Option<Arc<dyn Store>>,
    served: Vec<certificates::Served>,
    metrics: Option<PrometheusMetrics>,
) -> Result<ExitCode, ExitCode> {
    let server = build::bind(builder, &settings.bind).await?;
    let admin_listener = match &settings.admin {
        Some(admin) => Some(admin::bind(admin).await?),
        None => None,
    };
    match &store {
        Some(store) => tracing::info!(store = %store.describe(), "storing messages"),
        None => tracing::warn!("--no-store: messages are acknowledged but not stored"),
    }
    if let Some(forward) = &settings.forward {
        tracing::info!(downstream = %forward.addr, "forwarding messages");
    }
    let hangup_task = signal.spawn_reloaders(served.clone());
    tracing::info!(address = %server.local_addr(), tls = settings.tls.is_some(), "listening");
    let _certificates = certificates::Watch::start(served.clone());
    let handle = server
        .spawn()
        .await
        .map_err(|e| exit::fail(exit::FAILURE, &e))?;
    say!("listening on {}", handle.local_addr());
    // Serves until the MLLP server has stopped: `/readyz` says 503 for the whole drain.
    let admin_task = match (admin_listener, &settings.admin) {
        (Some(listener), Some(admin)) => Some(admin::spawn(
            listener,
            admin,
            &[(None, handle.clone())],
            metrics,
            store.iter().cloned().collect(),
            served,
        )),
        _ => None,
    };
    let _ = std::io::stdout().flush();

    let result = tokio::select! {
        () = signal.wait() => Ok(handle.shutdown().await),
        stopped = handle.wait() => match stopped {
            Ok(()) => Ok(handle.shutdown().await),
            Err(e) => Err(mllp::Error::Stopped(e)),
        },
    };
    if let Some(task) = hangup_task {
        task.abort();
    }
    if let Some(task) = admin_task {
        // The server has stopped, so the endpoint is finishing its last requests.
        let _ = task.await;
    }
    // Drained: nothing more is appended. The SQLite file alone then holds every message.
    let closed = match &store {
        Some(store) => store::close(store).await,
        None => true,
    };
    match result {
        Ok(report) => Ok(signals::drain_report(&report, closed)),
        Err(e) => Err(exit::fail(exit::FAILURE, &e)),
    }
}
