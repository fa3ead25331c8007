//! The relay's loop: take the next message, send it until it is answered, mark it done or
//! dead, and only then take the next.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::source::{Item, Next, Source};
use super::{RelayConfig, RelayEvent, RelayStats};
use crate::ack::AckCode;
use crate::client::{Backoff, Client, ClientError};
use crate::hl7::Message;

/// Receives every [`RelayEvent`].
pub(crate) type Observer = Arc<dyn Fn(&RelayEvent) + Send + Sync>;

/// What became of one message.
enum Outcome {
    Delivered {
        ack: Option<AckCode>,
        attempts: u32,
        elapsed: Duration,
    },
    Dead {
        reason: String,
        attempts: u32,
    },
    /// Stopped while waiting to try again: not done, sent again by the next run.
    Stopped,
}

pub(crate) struct Worker {
    pub(crate) source: Source,
    pub(crate) client: Client,
    pub(crate) config: RelayConfig,
    pub(crate) observer: Option<Observer>,
    pub(crate) cancel: CancellationToken,
}

impl Worker {
    fn emit(&self, event: RelayEvent) {
        match &event {
            RelayEvent::Delivered {
                id,
                message_type,
                control_id,
                ..
            } => tracing::debug!(
                relay = %self.config.name,
                store.id = id,
                hl7.message_type = %message_type,
                hl7.control_id = %crate::hl7::logged_control_id(control_id),
                "relayed"
            ),
            RelayEvent::DeadLettered {
                id,
                message_type,
                control_id,
                reason,
                ..
            } => tracing::warn!(
                relay = %self.config.name,
                store.id = id,
                hl7.message_type = %message_type,
                hl7.control_id = %crate::hl7::logged_control_id(control_id),
                %reason,
                "dead letter"
            ),
            RelayEvent::Retrying {
                id,
                control_id,
                attempt,
                error,
                ..
            } => tracing::info!(
                relay = %self.config.name,
                store.id = id,
                hl7.control_id = %crate::hl7::logged_control_id(control_id),
                attempt,
                %error,
                "retrying"
            ),
            RelayEvent::SourceFailed { error } => {
                tracing::warn!(relay = %self.config.name, %error, "relay source failed; retrying");
            }
            RelayEvent::Started { position, .. } => {
                tracing::info!(relay = %self.config.name, position, "relay started");
            }
            RelayEvent::CaughtUp { position } => {
                tracing::debug!(relay = %self.config.name, position, "caught up");
            }
        }
        if let Some(observer) = &self.observer {
            observer(&event);
        }
    }

    pub(crate) async fn run(mut self) -> RelayStats {
        let mut stats = RelayStats::default();
        let backlog = self.source.backlog().await;
        self.emit(RelayEvent::Started {
            position: self.source.position(),
            backlog,
        });
        let mut caught_up = false;
        let mut read_failures = 0;
        loop {
            let next = tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                next = self.source.next(self.config.follow) => next,
            };
            let item = match next {
                Err(error) => {
                    self.emit(RelayEvent::SourceFailed { error });
                    read_failures += 1;
                    if !pause(
                        &self.cancel,
                        delay(&self.config.retry_backoff, read_failures),
                    )
                    .await
                    {
                        break;
                    }
                    continue;
                }
                Ok(Next::Idle) => {
                    read_failures = 0;
                    if !caught_up {
                        caught_up = true;
                        self.emit(RelayEvent::CaughtUp {
                            position: self.source.position(),
                        });
                    }
                    if !self.config.follow {
                        break;
                    }
                    tokio::select! {
                        biased;
                        () = self.cancel.cancelled() => break,
                        () = self.source.idle_pause() => continue,
                    }
                }
                Ok(Next::Item(item)) => item,
            };
            read_failures = 0;
            caught_up = false;
            match self.deliver(&item, &mut stats).await {
                Outcome::Stopped => break,
                Outcome::Delivered {
                    ack,
                    attempts,
                    elapsed,
                } => {
                    if !self.commit(&item, None).await {
                        break;
                    }
                    stats.delivered += 1;
                    self.emit(RelayEvent::Delivered {
                        id: item.id,
                        message_type: item.message_type.clone(),
                        control_id: item.control_id.clone(),
                        ack,
                        attempts,
                        elapsed,
                    });
                }
                Outcome::Dead { reason, attempts } => {
                    if !self.commit(&item, Some(&reason)).await {
                        break;
                    }
                    stats.dead_lettered += 1;
                    self.emit(RelayEvent::DeadLettered {
                        id: item.id,
                        message_type: item.message_type.clone(),
                        control_id: item.control_id.clone(),
                        reason,
                        attempts,
                    });
                }
            }
        }
        self.client.close().await;
        stats
    }

    /// Moves the position past `item` (as a dead letter with `reason`), retrying until it
    /// works; `false` when stopped first (the message is then sent again by the next run).
    async fn commit(&mut self, item: &Item, reason: Option<&str>) -> bool {
        let mut failures = 0;
        loop {
            let result = match reason {
                None => self.source.done(item).await,
                Some(reason) => self.source.dead_letter(item, reason).await,
            };
            match result {
                Ok(()) => return true,
                Err(error) => {
                    self.emit(RelayEvent::SourceFailed { error });
                    failures += 1;
                    if !pause(&self.cancel, delay(&self.config.retry_backoff, failures)).await {
                        return false;
                    }
                }
            }
        }
    }

    /// Sends `item` until the downstream answers it for good, or the relay gives up on it.
    ///
    /// An exchange on an open connection is finished even when the relay is asked to stop
    /// (bounded by the reply timeout), so a stop does not leave a delivered message unmarked;
    /// connecting, and waiting between tries, are cut short.
    async fn deliver(&mut self, item: &Item, stats: &mut super::RelayStats) -> Outcome {
        let started = Instant::now();
        let mut attempts = 0;
        let mut counted = 0;
        loop {
            attempts += 1;
            self.source.still_working(item).await;
            // Waiting for a downstream that is down is cut short by a stop; a message that
            // went out is not: its answer is awaited and marked first, whether it was sent on
            // an open connection or on one made for it just now.
            let connected = if self.client.is_connected() {
                Ok(())
            } else {
                tokio::select! {
                    biased;
                    () = self.cancel.cancelled() => return Outcome::Stopped,
                    connected = self.client.connect() => connected,
                }
            };
            let result = match connected {
                Ok(()) => self.client.send(item.payload.clone()).await,
                Err(e) => Err(e),
            };
            let (counts, error) = match result {
                Ok(ack) => {
                    return Outcome::Delivered {
                        ack: ack.map(|a| a.code()),
                        attempts,
                        elapsed: started.elapsed(),
                    };
                }
                Err(ClientError::Negative { code, ack, .. }) => {
                    let answer = describe_answer(code, ack.message());
                    if matches!(code, AckCode::AR | AckCode::CR) {
                        return Outcome::Dead {
                            reason: format!("rejected: {answer}"),
                            attempts,
                        };
                    }
                    (true, format!("error: {answer}"))
                }
                Err(
                    e @ (ClientError::InvalidMessage(_)
                    | ClientError::MissingControlId
                    | ClientError::Unframeable(_)),
                ) => {
                    return Outcome::Dead {
                        reason: format!("cannot be sent: {}", crate::store::error_chain(&e)),
                        attempts,
                    };
                }
                // The downstream is down: wait for it, however long (the client backs off).
                Err(e @ ClientError::Connect { .. }) => (false, crate::store::error_chain(&e)),
                Err(e) => (true, crate::store::error_chain(&e)),
            };
            if counts {
                counted += 1;
                if counted >= self.config.max_attempts {
                    return Outcome::Dead {
                        reason: format!("{counted} tries failed; last: {error}"),
                        attempts,
                    };
                }
            }
            // Counted only when it is tried again: the last try before a dead letter is not.
            stats.retries += 1;
            self.emit(RelayEvent::Retrying {
                id: item.id,
                control_id: item.control_id.clone(),
                attempt: attempts,
                error,
                counted: counts,
            });
            if self.cancel.is_cancelled() {
                return Outcome::Stopped;
            }
            if counts && !pause(&self.cancel, delay(&self.config.retry_backoff, counted)).await {
                return Outcome::Stopped;
            }
        }
    }
}

/// Sleeps `delay` unless stopped first; `false` when stopped.
async fn pause(cancel: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        biased;
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// The wait before try `n + 1` after `n` failures: `initial`, doubling up to `max`.
fn delay(backoff: &Backoff, failures: u32) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1).min(31))
        .unwrap_or(u32::MAX);
    backoff.initial.saturating_mul(factor).min(backoff.max)
}

/// `AR, ERR-3 201 Unsupported event code`: the ACK code and the error code with its table
/// text (ERR-3 from v2.5, ERR-1.4 before), never ERR-8 or MSA-3, which may quote the message.
fn describe_answer(code: AckCode, ack: &Message) -> String {
    let field = |path: &str| {
        ack.get(path)
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v.decoded()).into_owned())
            .filter(|s| !s.is_empty())
    };
    let (number, text) = match field("ERR-3.1") {
        Some(number) => (Some(number), field("ERR-3.2")),
        None => (field("ERR-1.4.1"), field("ERR-1.4.2")),
    };
    let mut out = code.to_string();
    if let Some(number) = number {
        out.push_str(", ERR-3 ");
        out.push_str(&number);
        if let Some(text) = text {
            out.push(' ');
            out.extend(text.chars().take(80));
        }
    }
    out
}
