//! Dialling NATS with [`NatsOptions`].

use async_nats::{Client, ConnectOptions, Event, ServerAddr};

use super::NatsOptions;
use crate::store::{NatsSpec, StoreError};

/// Connects to the servers of `spec`. Reconnects later go on without end, backing off from
/// 2 ms to 4 s (async-nats's default); losing and regaining the connection is logged once
/// each, at `warn` (saying what `while_down` is stopped: "messages are answered AE" for the
/// store, "relaying pauses" for a relay) and `info`.
///
/// # Errors
///
/// [`StoreError::Open`] when a file of `options` cannot be read or no server answers within
/// [`NatsOptions::connect_timeout`].
pub(crate) async fn connect(
    spec: &NatsSpec,
    options: &NatsOptions,
    while_down: &'static str,
) -> Result<Client, StoreError> {
    let target = spec.to_string();
    let open = |source: crate::store::BoxError| StoreError::Open {
        target: target.clone(),
        source,
    };
    let addrs = spec
        .servers()
        .iter()
        .map(|s| s.parse::<ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| open(Box::new(e)))?;
    let tls_url = spec.servers().iter().any(|s| s.starts_with("tls://"));
    let mut connect = ConnectOptions::new();
    if let Some(creds) = &options.credentials {
        connect = connect.credentials_file(creds).await.map_err(|e| {
            open(format!("cannot read the credentials file {}: {e}", creds.display()).into())
        })?;
    }
    if let Some(ca) = &options.tls_ca {
        connect = connect.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &options.tls_client_cert {
        connect = connect.add_client_certificate(cert.clone(), key.clone());
    }
    let log_target = target.clone();
    connect = connect
        .require_tls(options.require_tls || options.tls_ca.is_some() || tls_url)
        .connection_timeout(options.connect_timeout)
        .name(&options.name)
        .max_reconnects(None)
        .event_callback(move |event| {
            let target = log_target.clone();
            async move {
                match event {
                    Event::Disconnected => tracing::warn!(
                        store = %target,
                        "lost the connection to NATS; {while_down} until it is back"
                    ),
                    Event::Connected => tracing::info!(store = %target, "connected to NATS"),
                    Event::LameDuckMode => tracing::info!(
                        store = %target,
                        "NATS server entering lame duck mode; moving to another server"
                    ),
                    other => tracing::debug!(store = %target, event = %other, "NATS event"),
                }
            }
        });
    connect.connect(addrs).await.map_err(|e| open(Box::new(e)))
}
