//! The JetStream source: a durable pull consumer named after the relay, one message in flight
//! (`max_ack_pending: 1`, so the order is the stream's), acked after the downstream ACK.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::pull::Config as ConsumerConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::{GetStreamByNameErrorKind, GetStreamErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::{self, AckKind, ErrorCode};
use futures_util::StreamExt;

use super::{Item, Next, chain};
use crate::hl7::Message;
use crate::relay::{RelayConfig, RelayError};
use crate::store::nats::{check_prefix, connect, header};
use crate::store::{NatsSpec, StoreError};

/// How long one pull request waits on the server for a new message before it is renewed.
const PULL_WAIT: Duration = Duration::from_secs(5);

/// Headers a dead letter adds to the original's.
const DEAD_REASON: &str = "Mllp-Dead-Reason";
const DEAD_RELAY: &str = "Mllp-Dead-Relay";
const DEAD_STREAM: &str = "Mllp-Dead-Stream";
const DEAD_SEQUENCE: &str = "Mllp-Dead-Sequence";

pub(crate) struct JetStreamSource {
    context: jetstream::Context,
    consumer: PullConsumer,
    describe: String,
    stream: String,
    relay: String,
    dead_subject: String,
    /// The stream sequence of the last message done: a redelivery of it (its ack was lost) is
    /// acked again and skipped.
    last_done: u64,
    /// The last look found nothing: the next one waits on the server.
    idle: bool,
}

impl JetStreamSource {
    pub(crate) async fn open(spec: &NatsSpec, config: &RelayConfig) -> Result<Self, RelayError> {
        let describe = spec.to_string();
        let open = |source: crate::store::BoxError| {
            RelayError::Source(StoreError::Open {
                target: describe.clone(),
                source,
            })
        };
        check_prefix(&config.subject_prefix).map_err(|e| open(e.into()))?;
        let dead_subject = config.dead_letter_subject_or_default();
        check_prefix(&dead_subject)
            .map_err(|_| open(format!("invalid dead-letter subject {dead_subject:?}").into()))?;
        if dead_subject.starts_with(&format!("{}.", config.subject_prefix)) {
            return Err(RelayError::DeadLetterLoop {
                subject: dead_subject,
            });
        }
        let client = connect(spec, &config.nats, "relaying pauses")
            .await
            .map_err(RelayError::Source)?;
        let context = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(10))
            .build(client);
        let mut stream = match context.get_stream(spec.stream()).await {
            Ok(stream) => stream,
            Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                return Err(open(format!("stream {} not found", spec.stream()).into()));
            }
            Err(e) => return Err(open(Box::new(e))),
        };
        let stream_config = stream
            .info()
            .await
            .map_err(|e| open(Box::new(e)))?
            .config
            .clone();
        let replicas = stream_config.num_replicas;
        let filter = format!("{}.>", config.subject_prefix);
        // A filter that no subject of the stream can match would relay nothing, for ever.
        if !stream_config
            .subjects
            .iter()
            .any(|subject| subjects_intersect(subject, &filter))
        {
            return Err(open(
                format!(
                    "stream {} captures {} but no subject under {filter}: check \
                     --subject-prefix (the store's --nats-subject-prefix)",
                    spec.stream(),
                    stream_config.subjects.join(", ")
                )
                .into(),
            ));
        }
        match context.stream_by_subject(dead_subject.clone()).await {
            Ok(_) => {}
            Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => {
                if !config.create_dead_letter_stream {
                    return Err(RelayError::NoDeadLetterStream {
                        subject: dead_subject,
                    });
                }
                let name = format!("{}_DEAD_{}", spec.stream(), config.name);
                context
                    .get_or_create_stream(StreamConfig {
                        name: name.clone(),
                        subjects: vec![dead_subject.clone()],
                        storage: StorageType::File,
                        num_replicas: replicas.max(1),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| open(Box::new(e)))?;
                tracing::info!(store = %describe, "created stream {name} for the dead letters ({dead_subject})");
            }
            Err(e) => return Err(open(Box::new(e))),
        }
        // Created, or updated to these settings when it exists: a changed --ack-wait or
        // --subject-prefix takes effect on the next start instead of being ignored.
        let mut consumer: PullConsumer = stream
            .create_consumer(ConsumerConfig {
                durable_name: Some(config.name.clone()),
                description: Some("mllp relay".to_owned()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                // One at a time: the next message is handed out only after this one is
                // acked, so the downstream sees the stream's order.
                max_ack_pending: 1,
                max_deliver: -1,
                filter_subject: filter,
                ..Default::default()
            })
            .await
            .map_err(|e| open(Box::new(e)))?;
        let info = consumer.info().await.map_err(|e| open(Box::new(e)))?;
        if info.num_ack_pending > 0 {
            tracing::info!(
                store = %describe,
                "a message handed to this relay's previous run was not acked; it comes back \
                 within the ack wait ({:?})",
                info.config.ack_wait
            );
        }
        let last_done = info.ack_floor.stream_sequence;
        Ok(Self {
            context,
            consumer,
            describe,
            stream: spec.stream().to_owned(),
            relay: config.name.clone(),
            dead_subject,
            last_done,
            idle: false,
        })
    }

    pub(crate) fn describe(&self) -> String {
        self.describe.clone()
    }

    pub(crate) fn position(&self) -> u64 {
        self.last_done
    }

    pub(crate) async fn backlog(&mut self) -> Option<u64> {
        self.consumer.info().await.ok().map(|i| i.num_pending)
    }

    /// After activity, a no-wait fetch answers at once whether anything is left (so the relay
    /// knows it caught up); once idle, a pull request waits on the server for the next message
    /// ([`PULL_WAIT`] at a time), which arrives as soon as it is stored.
    pub(crate) async fn next(&mut self, wait: bool) -> Result<Next, String> {
        loop {
            let blocking = wait && self.idle;
            let mut batch = if blocking {
                self.consumer
                    .batch()
                    .max_messages(1)
                    .expires(PULL_WAIT)
                    .messages()
                    .await
            } else {
                self.consumer.fetch().max_messages(1).messages().await
            }
            .map_err(|e| chain(&e))?;
            let message = match batch.next().await {
                None => {
                    self.idle = true;
                    return Ok(Next::Idle);
                }
                // 409 Exceeded MaxAckPending: the one message allowed out is still with a
                // previous run of this relay; it comes back after the ack wait.
                Some(Err(e)) if !blocking && e.to_string().contains("409") => {
                    self.idle = true;
                    return Ok(Next::Idle);
                }
                Some(Err(e)) => return Err(chain(&*e)),
                Some(Ok(message)) => message,
            };
            self.idle = false;
            let sequence = message.info().map_err(|e| chain(&*e))?.stream_sequence;
            if sequence <= self.last_done {
                // Handed out again because its ack was lost: it is done.
                let _ = message.ack().await;
                continue;
            }
            let (message_type, control_id) = msh_fields(&message.payload);
            return Ok(Next::Item(Box::new(Item {
                id: sequence,
                payload: message.payload.clone(),
                message_type,
                control_id,
                message: Some(message),
            })));
        }
    }

    pub(crate) async fn still_working(&self, item: &Item) {
        if let Some(message) = &item.message {
            let _ = message.ack_with(AckKind::Progress).await;
        }
    }

    pub(crate) async fn done(&mut self, item: &Item) -> Result<(), String> {
        if let Some(message) = &item.message {
            message.double_ack().await.map_err(|e| chain(&*e))?;
        }
        self.last_done = item.id;
        Ok(())
    }

    pub(crate) async fn dead_letter(&mut self, item: &Item, reason: &str) -> Result<(), String> {
        let Some(message) = &item.message else {
            return Ok(());
        };
        let mut headers = HeaderMap::new();
        for (name, values) in message.headers.iter().flat_map(|h| h.iter()) {
            // The original's `Nats-*` headers (its message id, its expected stream) are
            // directives to the stream it was published to, not to the dead-letter stream.
            let name_text: &str = name.as_ref();
            if name_text.starts_with("Nats-") {
                continue;
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
        // Its own id: a dead letter published again (the ack after it failed) is stored once.
        headers.insert(
            header::MSG_ID,
            format!("{}-{}-{}", self.stream, item.id, self.relay).as_str(),
        );
        headers.insert(DEAD_REASON, reason);
        headers.insert(DEAD_RELAY, self.relay.as_str());
        headers.insert(DEAD_STREAM, self.stream.as_str());
        headers.insert(DEAD_SEQUENCE, item.id.to_string().as_str());
        let publish = PublishMessage::build()
            .payload(item.payload.clone())
            .headers(headers);
        self.context
            .send_publish(self.dead_subject.clone(), publish)
            .await
            .map_err(|e| chain(&e))?
            .await
            .map_err(|e| chain(&e))?;
        message.double_ack().await.map_err(|e| chain(&*e))?;
        self.last_done = item.id;
        Ok(())
    }
}

/// MSH-9 and MSH-10 of a payload, for the relay's lines (empty when it does not parse).
fn msh_fields(payload: &bytes::Bytes) -> (String, String) {
    match Message::parse(payload.clone()) {
        Ok(message) => {
            let field = |n: usize| {
                message
                    .msh()
                    .field(n)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default()
            };
            (field(9), field(10))
        }
        Err(_) => (String::new(), String::new()),
    }
}

/// Whether some subject matches both NATS subject patterns `a` and `b` (`*` one token, `>` the
/// rest).
fn subjects_intersect(a: &str, b: &str) -> bool {
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == "*" || y == "*" || x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::subjects_intersect;

    #[test]
    fn subject_patterns_intersect_when_one_subject_matches_both() {
        for (a, b) in [
            ("hl7.>", "hl7.>"),
            (">", "hl7.>"),
            ("hl7.*", "hl7.>"),
            ("hl7.adt.*", "hl7.>"),
            ("*.adt", "hl7.>"),
        ] {
            assert!(subjects_intersect(a, b), "{a} {b}");
            assert!(subjects_intersect(b, a), "{b} {a}");
        }
        for (a, b) in [
            ("hl7.>", "xyz.>"),
            ("hl7", "hl7.>"),
            ("mllp.dead.x", "hl7.>"),
        ] {
            assert!(!subjects_intersect(a, b), "{a} {b}");
        }
    }
}
