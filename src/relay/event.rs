//! [`RelayEvent`]: what a relay tells its observer, one event per step.

use std::time::Duration;

use crate::ack::AckCode;

/// What a relay did. Carries MSH metadata (store id, MSH-9, MSH-10) and reasons built from
/// ACK codes, never payload or patient data.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayEvent {
    /// The relay started at this position (the id after which it reads).
    Started {
        /// The last id it was done with (0: from the start).
        position: u64,
        /// Messages waiting, when the source can tell.
        backlog: Option<u64>,
    },
    /// The downstream acknowledged the message (AA/CA) and the position moved past it.
    Delivered {
        /// Store id or stream sequence.
        id: u64,
        /// MSH-9.
        message_type: String,
        /// MSH-10.
        control_id: String,
        /// MSA-1 (AA or CA; `None` when the message asked for no ACK, MSH-15 = NE/ER).
        ack: Option<AckCode>,
        /// Tries it took (1: the first).
        attempts: u32,
        /// From the first try to the ACK.
        elapsed: Duration,
    },
    /// The relay gave up on the message; it is in the dead letters and the position moved past
    /// it.
    DeadLettered {
        /// Store id or stream sequence.
        id: u64,
        /// MSH-9.
        message_type: String,
        /// MSH-10.
        control_id: String,
        /// Why (`rejected: AR, ERR-3 201 Unsupported event code`).
        reason: String,
        /// Tries made.
        attempts: u32,
    },
    /// A try failed; the message is sent again after `delay`.
    Retrying {
        /// Store id or stream sequence.
        id: u64,
        /// MSH-10.
        control_id: String,
        /// The try that failed (1: the first).
        attempt: u32,
        /// Why, without patient data.
        error: String,
        /// Whether this try counts toward the dead-letter limit (a refused connection does
        /// not: the downstream is down, not the message).
        counted: bool,
    },
    /// Everything stored so far is delivered; the relay waits for more (or stops, when not
    /// following).
    CaughtUp {
        /// The last id done.
        position: u64,
    },
    /// Reading the source, or moving the position, failed; retried after a pause. A delivered
    /// message whose position could not be saved may be sent again after a restart.
    SourceFailed {
        /// What failed, without patient data.
        error: String,
    },
}
