//! `mllp serve`: receive HL7 over MLLP and store every accepted message durably before its AA.
//!
//! [`run`] is the command, step by step; each step lives in its own file: `args` (the flags),
//! `settings` (flags over the config file over the defaults), `telemetry` (logs and export),
//! `build` (admission, TLS, the server builder), `partner` (the lenient-partner switches),
//! `forward` (`--forward`: the downstream receiver), `listeners` (`[[listener]]` tables: several
//! servers in one process),
//! `store` (opening `--store`), `handler` (the route that stores, then accepts) and `signals` (the drain on SIGTERM/SIGINT, the TLS reload on SIGHUP).

mod args;
mod build;
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
use mllp::server::{PlainTcp, Transport};
use mllp::store::Store;
use mllp::tls::{Admitted, TlsReloader};

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
    // Before the server is built: it takes its metric instruments from the global meter
    // provider that `telemetry::init` installs.
    let telemetry = match telemetry::init(&settings.telemetry) {
        Ok(t) => t,
        Err(text) => return exit::fail_text(exit::USAGE, &text),
    };
    let code = serve(settings).await.unwrap_or_else(|failed| failed);
    telemetry.shutdown().await;
    code
}

/// Checks and opens what the server needs, then serves. `Err` is the exit status of a step
/// that failed, its reason already printed.
async fn serve(settings: Settings) -> Result<ExitCode, ExitCode> {
    // Registered before anything is printed: a signal that arrives right after `listening on`
    // must start a drain, not kill the process with the default disposition.
    let signal = ShutdownSignal::register().map_err(|e| exit::fail(exit::FAILURE, &e))?;
    if !settings.listeners.is_empty() {
        return listeners::serve_many(settings, signal).await;
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
            serve_on(builder, &settings, signal, store, None).await
        }
        Some(transport) => {
            let reloader = transport.reloader();
            let builder = builder.transport(Admitted::new(transport, admission));
            serve_on(builder, &settings, signal, store, Some(reloader)).await
        }
    }
}

/// Binds and serves on one transport (plain TCP or TLS) until the signal.
async fn serve_on<T: Transport>(
    builder: ServerBuilder<T>,
    settings: &Settings,
    mut signal: ShutdownSignal,
    store: Option<Arc<dyn Store>>,
    reloader: Option<TlsReloader>,
) -> Result<ExitCode, ExitCode> {
    let server = build::bind(builder, &settings.bind).await?;
    match &store {
        Some(store) => tracing::info!(store = %store.describe(), "storing messages"),
        None => tracing::warn!("--no-store: messages are acknowledged but not stored"),
    }
    if let Some(forward) = &settings.forward {
        tracing::info!(downstream = %forward.addr, "forwarding messages");
    }
    let hangup_task = signal.spawn_reloader(reloader);
    tracing::info!(address = %server.local_addr(), tls = settings.tls.is_some(), "listening");
    say!("listening on {}", server.local_addr());
    let _ = std::io::stdout().flush();

    let result = server.serve_with_shutdown(signal.wait()).await;
    if let Some(task) = hangup_task {
        task.abort();
    }
    match result {
        Ok(report) => Ok(signals::drain_report(&report)),
        Err(e) => Err(exit::fail(exit::FAILURE, &e)),
    }
}
