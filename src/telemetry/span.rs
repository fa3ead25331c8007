//! The span recorder: completes each `mllp.message` span from the runtime's events, and emits
//! the documented `tracing` events (`mllp.connection.stop`, `mllp.message.start`,
//! `mllp.message.stop`, `mllp.message.exception`; `mllp.connection.start` is emitted where the
//! connection span is opened, in the protocol glue).
//!
//! The spans themselves are opened by the protocol glue ([`Hl7`]'s `connection_span` and
//! `message_span`); what only the end of a message knows (the ACK code and size, the failure,
//! the error status) is recorded here, from `MessageStop` and `MessageException`.
//!
//! The events are `DEBUG` with target [`EVENTS_TARGET`], inside their span (so a
//! tracing-opentelemetry layer exports them as span events). Each `tracing` macro first checks
//! its callsite's cached interest: when no subscriber wants the event it costs a load and a
//! compare, and none of its fields is computed.

use std::sync::OnceLock;

use mllp_actors::{Event, Observer};
use tracing::{Span, field};

use super::EVENTS_TARGET;

use crate::ack::Ack;
use crate::protocol::Hl7;

/// Completes a message span from the runtime's `MessageStop` and `MessageException` events:
/// the ACK code and size, and an error status for AE/AR answers and for failed handlers (panic,
/// timeout, aborted; the runtime reports those only in `MessageException`, whatever the
/// handler-failure policy). Registered first by
/// [`ServerBuilder::listen`](crate::ServerBuilder::listen).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SpanRecorder;

impl Observer<Hl7> for SpanRecorder {
    fn on_event(&self, event: &Event<'_, Hl7>) {
        match event {
            Event::MessageStart {
                connection,
                meta,
                span,
            } => {
                tracing::event!(
                    name: "mllp.message.start",
                    target: EVENTS_TARGET,
                    parent: *span,
                    tracing::Level::DEBUG,
                    mllp.connection.id = connection.id() as i64,
                    network.peer.address = connection.peer_ip(),
                    network.peer.port = i64::from(connection.peer().port()),
                    mllp.message.size = meta.size() as i64,
                    hl7.message_type = meta.message_code(),
                    hl7.trigger_event = meta.trigger_event(),
                    hl7.control_id = meta.control_id().map(crate::hl7::logged_control_id).as_deref(),
                    "mllp.message.start"
                );
            }
            Event::MessageStop {
                connection,
                response,
                duration,
                span,
                ..
            } => {
                let status = response
                    .filter(|ack| !ack.code().is_success())
                    .map(|ack| ack.code().as_str());
                tracing::event!(
                    name: "mllp.message.stop",
                    target: EVENTS_TARGET,
                    parent: *span,
                    tracing::Level::DEBUG,
                    mllp.connection.id = connection.id() as i64,
                    network.peer.address = connection.peer_ip(),
                    network.peer.port = i64::from(connection.peer().port()),
                    duration = duration.as_secs_f64(),
                    mllp.response.size = response.map(|ack| ack.as_bytes().len() as i64),
                    hl7.ack_code = response.map_or("none", |ack| ack.code().as_str()),
                    "mllp.message.stop"
                );
                record_outcome(span, *response, None, status);
            }
            Event::MessageException {
                connection,
                failure,
                response,
                duration,
                span,
                ..
            } => {
                let kind = failure.kind();
                // The failure's kind only: a panic message may quote patient data.
                tracing::event!(
                    name: "mllp.message.exception",
                    target: EVENTS_TARGET,
                    parent: *span,
                    tracing::Level::DEBUG,
                    mllp.connection.id = connection.id() as i64,
                    network.peer.address = connection.peer_ip(),
                    network.peer.port = i64::from(connection.peer().port()),
                    duration = duration.as_secs_f64(),
                    error.type = kind,
                    hl7.ack_code = response.map_or("none", |ack| ack.code().as_str()),
                    "mllp.message.exception"
                );
                record_outcome(span, *response, Some(kind), Some(kind));
            }
            Event::ConnectionStop {
                connection,
                duration,
                reason,
                messages,
                span,
            } => {
                tracing::event!(
                    name: "mllp.connection.stop",
                    target: EVENTS_TARGET,
                    parent: span.and_then(Span::id),
                    tracing::Level::DEBUG,
                    mllp.connection.id = connection.id() as i64,
                    network.peer.address = connection.peer_ip(),
                    network.peer.port = i64::from(connection.peer().port()),
                    duration = duration.as_secs_f64(),
                    close_reason = reason.as_str(),
                    messages = i64::try_from(*messages).unwrap_or(i64::MAX),
                    "mllp.connection.stop"
                );
            }
            _ => {}
        }
    }
}

/// The message span's fields that are recorded at its end, looked up once (every message span
/// comes from the one callsite in [`Hl7::message_span`]).
struct OutcomeFields {
    ack_code: field::Field,
    response_size: field::Field,
    error_type: field::Field,
    status_code: field::Field,
    status_description: field::Field,
}

/// Records a message's outcome on its span in one call (each `record` is a round trip through
/// every subscriber layer): the ACK code (`none` when nothing was sent) and size, the failure
/// kind, and an error status with `description`.
fn record_outcome(
    span: &Span,
    ack: Option<&Ack>,
    error_type: Option<&'static str>,
    description: Option<&'static str>,
) {
    static FIELDS: OnceLock<Option<OutcomeFields>> = OnceLock::new();
    let Some(metadata) = span.metadata() else {
        return; // disabled: nothing to record
    };
    let fields = FIELDS.get_or_init(|| {
        let set = metadata.fields();
        Some(OutcomeFields {
            ack_code: set.field("hl7.ack_code")?,
            response_size: set.field("mllp.response.size")?,
            error_type: set.field("error.type")?,
            status_code: set.field("otel.status_code")?,
            status_description: set.field("otel.status_description")?,
        })
    });
    let Some(f) = fields else { return };
    let ack_code = ack.map_or("none", |ack| ack.code().as_str());
    let size = ack.map(|ack| ack.as_bytes().len() as i64);
    // Code first: tracing-opentelemetry turns a description into an error status with that
    // text, and a later bare code would clear the text.
    let status = description.map(|_| "ERROR");
    let pairs = [
        (&f.ack_code, Some(&ack_code as &dyn field::Value)),
        (
            &f.response_size,
            size.as_ref().map(|v| v as &dyn field::Value),
        ),
        (
            &f.error_type,
            error_type.as_ref().map(|v| v as &dyn field::Value),
        ),
        (
            &f.status_code,
            status.as_ref().map(|v| v as &dyn field::Value),
        ),
        (
            &f.status_description,
            description.as_ref().map(|v| v as &dyn field::Value),
        ),
    ];
    span.record_all(&metadata.fields().value_set(&pairs));
}
