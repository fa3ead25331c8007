//! The stream at open: found (or created), and checked to hold what the receiver accepts.

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::{Config, Info, StorageType};
use async_nats::jetstream::{self, ErrorCode};

use super::{JetStreamConfig, Storage, header, subject};
use crate::store::{NatsSpec, StoreError};

/// Finds the stream of `spec` (creating it if `config` says so) and checks it: it captures
/// `<prefix>.>`, and both its `max_msg_size` and the server's `max_payload` admit
/// `max_message_size` plus the headers. A duplicate window shorter than asked for, or memory
/// storage, is used with a warning.
pub(crate) async fn open(
    context: &jetstream::Context,
    spec: &NatsSpec,
    config: &JetStreamConfig,
) -> Result<Info, StoreError> {
    let target = spec.to_string();
    let name = spec.stream();
    let open_err = |source: crate::store::BoxError| StoreError::Open {
        target: target.clone(),
        source,
    };
    // Before the stream is looked for (or created): a server that cannot carry the largest
    // message is refused without leaving a stream behind.
    check_max_payload(context, &target, config)?;
    let info = match context.get_stream(name).await {
        Ok(mut stream) => stream
            .info()
            .await
            .map_err(|e| open_err(Box::new(e)))?
            .clone(),
        Err(e) if is_not_found(&e) => match &config.create_stream {
            None => {
                return Err(StoreError::StreamNotFound {
                    target,
                    stream: name.to_owned(),
                });
            }
            Some(settings) => {
                let created = context
                    .get_or_create_stream(Config {
                        name: name.to_owned(),
                        subjects: vec![format!("{}.>", config.subject_prefix)],
                        storage: match settings.storage {
                            Storage::File => StorageType::File,
                            Storage::Memory => StorageType::Memory,
                        },
                        num_replicas: settings.replicas,
                        duplicate_window: config.duplicate_window,
                        max_age: settings.max_age.unwrap_or_default(),
                        allow_direct: true,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| open_err(Box::new(e)))?
                    .cached_info()
                    .clone();
                tracing::info!(
                    store = %target,
                    replicas = settings.replicas,
                    "created stream {name} capturing {}.>",
                    config.subject_prefix
                );
                created
            }
        },
        Err(e) => return Err(open_err(Box::new(e))),
    };
    check(&info, &target, config)?;
    Ok(info)
}

fn needed(config: &JetStreamConfig) -> u64 {
    config.max_message_size.saturating_add(header::BUDGET) as u64
}

fn too_small(
    target: &str,
    config: &JetStreamConfig,
    limit_name: &'static str,
    limit: u64,
) -> StoreError {
    StoreError::LimitTooSmall {
        target: target.to_owned(),
        limit_name,
        limit,
        needed: needed(config),
        headers: header::BUDGET as u64,
        suggested: limit.saturating_sub(header::BUDGET as u64),
    }
}

/// The server's `max_payload` (headers and payload together) must admit the largest message.
fn check_max_payload(
    context: &jetstream::Context,
    target: &str,
    config: &JetStreamConfig,
) -> Result<(), StoreError> {
    let max_payload = context.client().server_info().max_payload as u64;
    if max_payload < needed(config) {
        return Err(too_small(
            target,
            config,
            "the server's max_payload",
            max_payload,
        ));
    }
    Ok(())
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

fn check(info: &Info, target: &str, config: &JetStreamConfig) -> Result<(), StoreError> {
    let stream = &info.config;
    if !stream
        .subjects
        .iter()
        .any(|pattern| subject::covers(pattern, &config.subject_prefix))
    {
        return Err(StoreError::StreamSubjects {
            target: target.to_owned(),
            stream: stream.name.clone(),
            subjects: format!("{}.>", config.subject_prefix),
        });
    }
    // -1 (and 0, unset) is "no limit of the stream's own".
    if let Ok(limit) = u64::try_from(stream.max_message_size)
        && limit > 0
        && limit < needed(config)
    {
        return Err(too_small(
            target,
            config,
            "the stream's max_msg_size",
            limit,
        ));
    }
    if stream.duplicate_window < config.duplicate_window {
        tracing::warn!(
            store = %target,
            "stream {} recognises resends for {:?} only (duplicate_window), less than the {:?} \
             asked for: a later resend is stored twice",
            stream.name,
            stream.duplicate_window,
            config.duplicate_window
        );
    }
    if stream.storage == StorageType::Memory {
        tracing::warn!(
            store = %target,
            "stream {} keeps messages in memory only: acknowledged messages are lost when the \
             NATS servers stop",
            stream.name
        );
    }
    Ok(())
}
