//! [`MessageLog`]: one log line per message and one per reject, for operators. Off unless
//! [`ServerBuilder::log_messages`](crate::ServerBuilder::log_messages) or
//! [`ServerBuilder::log_rejects`](crate::ServerBuilder::log_rejects) turn it on (`mllp serve`
//! does): the library is silent by default.
//!
//! Lines carry MSH fields only (MSH-9, MSH-10), ACK codes, ERR-3 codes, sizes, offsets and
//! the connection; never a payload byte outside MSH, never a diagnostic's or a handler's text.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mllp_actors::{CloseReason, ConnectionInfo, Event, Observer};

use crate::ack::Ack;
use crate::hl7::Message;
use crate::protocol::{BatchOutcome, Hl7, Inbound};
use crate::telemetry::activity::Reject;

use super::{MESSAGES_TARGET, REJECTS_TARGET};

/// Where [`ServerBuilder::message_lines_to`](crate::ServerBuilder::message_lines_to) sends
/// the per-message lines: called with one whole line (its newline included) at a time, from
/// the connection's task, so it must not block.
pub type LineSink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Logs messages (INFO, target [`MESSAGES_TARGET`]) and rejects (WARN, target
/// [`REJECTS_TARGET`]).
#[derive(Clone)]
pub(crate) struct MessageLog {
    pub(crate) messages: bool,
    pub(crate) rejects: bool,
    /// The per-message lines written as text straight to this sink instead of as `tracing`
    /// events, when the event would be enabled.
    pub(crate) lines: Option<LineSink>,
}

impl fmt::Debug for MessageLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageLog")
            .field("messages", &self.messages)
            .field("rejects", &self.rejects)
            .field("lines", &self.lines.is_some())
            .finish()
    }
}

thread_local! {
    /// The line being written, kept for the next one (a line is about 230 bytes).
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The table 0357 code of the first ERR of a refusal (ERR-3 from v2.5, ERR-1.4 before).
fn error_code(ack: &Ack) -> Option<String> {
    let message = ack.message();
    ["ERR-3.1", "ERR-1.4.1"].iter().find_map(|path| {
        let value = message.get(path).ok().flatten()?;
        let text = value.to_str()?;
        // Table 0357 codes are digits; anything else is not echoed into a log line.
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.to_owned())
    })
}

/// The offset of MSH-`n` in the payload, or of the end of MSH when the field is absent.
fn msh_field_offset(message: &Message, n: usize) -> usize {
    let base = message.as_bytes().as_ptr() as usize;
    let msh = message.msh();
    match msh.field(n) {
        Some(value) => value.as_bytes().as_ptr() as usize - base,
        None => msh.as_bytes().as_ptr() as usize - base + msh.as_bytes().len(),
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl MessageLog {
    fn message(&self, conn: &ConnectionInfo, meta: &Inbound, d: Duration, ack: Option<&Ack>) {
        // A batch: a line for each of its messages, as if each had come alone.
        if let Some(BatchOutcome::Handled { messages, more }) = meta.batch_outcome() {
            for (message, ack) in messages {
                self.message(conn, message, d, ack.as_ref());
            }
            if !more.is_empty() && self.messages {
                tracing::event!(
                    target: MESSAGES_TARGET,
                    tracing::Level::INFO,
                    connection.id = conn.id() as i64,
                    network.peer.address = conn.peer_ip(),
                    hl7.batch.unlogged = more.len() as i64,
                    "batch: its later messages are not logged one by one"
                );
            }
            return;
        }
        let ack_code = ack.map_or("none", |a| a.code().as_str());
        if let Some(reject) = Reject::of_message(meta, ack) {
            if self.rejects {
                self.message_reject(conn, meta, reject, ack);
            }
            return;
        }
        if self.messages {
            // Straight to the sink when a subscriber wants the line (one cached check), in
            // the bytes the text format would write: `tracing`'s dispatch and field visits
            // were over a third of a line's cost.
            if let Some(sink) = &self.lines
                && tracing::enabled!(target: MESSAGES_TARGET, tracing::Level::INFO)
            {
                let written = LINE.with(|line| {
                    let mut line = line.borrow_mut();
                    super::text::message_line(
                        &mut line,
                        SystemTime::now(),
                        conn,
                        meta,
                        millis(d),
                        ack_code,
                    )
                    .map(|()| sink(line.as_bytes()))
                });
                if written.is_some() {
                    return;
                }
            }
            tracing::event!(
                target: MESSAGES_TARGET,
                tracing::Level::INFO,
                connection.id = conn.id() as i64,
                network.peer.address = conn.peer_ip(),
                hl7.message_type = meta.message_code(),
                hl7.trigger_event = meta.trigger_event(),
                hl7.control_id = meta.control_id().map(crate::hl7::logged_control_id).as_deref(),
                hl7.ack_code = ack_code,
                latency_ms = millis(d),
                store.id = meta.store_id(),
                "message"
            );
        }
    }

    fn message_reject(
        &self,
        conn: &ConnectionInfo,
        meta: &Inbound,
        reject: Reject,
        ack: Option<&Ack>,
    ) {
        // A malformed batch's envelope error, or the parser's: positions only.
        let detail: Option<&dyn std::fmt::Display> = match meta.batch_outcome() {
            Some(BatchOutcome::Refused(error)) => Some(error),
            _ => meta.parse_error().map(|e| e as &dyn std::fmt::Display),
        };
        let (offset, field) = match (meta.parse_error(), meta.message()) {
            // The envelope's error names its segment; the offset would be MSH's, at 0.
            _ if reject == Reject::Batch => (None, None),
            (Some(_), _) => (meta.error_offset(), None),
            (None, Some(message)) => {
                let field = if message.message_code().is_none() || message.trigger_event().is_none()
                {
                    9
                } else {
                    10
                };
                match reject {
                    Reject::MissingMshField => {
                        (Some(msh_field_offset(message, field)), Some(field))
                    }
                    _ => (None, None),
                }
            }
            (None, None) => (None, None),
        };
        tracing::event!(
            target: REJECTS_TARGET,
            tracing::Level::WARN,
            connection.id = conn.id() as i64,
            network.peer.address = conn.peer_ip(),
            reject.reason = reject.as_str(),
            reject.code = ack.and_then(error_code),
            reject.offset = offset.map(|o| o as i64),
            reject.field = field.map(|f| format!("MSH-{f}")),
            // Positions only ("segment 2 is delimited by a line feed"), never content.
            reject.detail = detail.map(tracing::field::display),
            hl7.message_type = meta.message_code(),
            hl7.trigger_event = meta.trigger_event(),
            hl7.control_id = meta.control_id().map(crate::hl7::logged_control_id).as_deref(),
            hl7.ack_code = ack.map(|a| a.code().as_str()),
            mllp.message.size = meta.size() as i64,
            "message rejected"
        );
    }

    fn connection_reject(&self, conn: &ConnectionInfo, reason: &CloseReason) {
        let Some(reject) = Reject::of_close(reason) else {
            return;
        };
        let CloseReason::Protocol { detail, offset, .. } = reason else {
            return;
        };
        tracing::event!(
            target: REJECTS_TARGET,
            tracing::Level::WARN,
            connection.id = conn.id() as i64,
            network.peer.address = conn.peer_ip(),
            reject.reason = reject.as_str(),
            reject.offset = offset.map(|o| o as i64),
            // The framer's text: the limit, a byte count, or the one offending framing byte.
            reject.detail = detail.as_str(),
            "connection closed: bytes rejected"
        );
    }
}

impl Observer<Hl7> for MessageLog {
    fn on_event(&self, event: &Event<'_, Hl7>) {
        match event {
            Event::MessageStop {
                connection,
                meta,
                duration,
                response,
                ..
            }
            | Event::MessageException {
                connection,
                meta,
                duration,
                response,
                ..
            } => self.message(connection, meta, *duration, *response),
            Event::ConnectionStop {
                connection, reason, ..
            } if self.rejects => self.connection_reject(connection, reason),
            _ => {}
        }
    }
}
