//! What `mllp relay` prints: one line (or JSON object) per event on stdout, a progress line
//! now and then, and a summary at the end. MSH-9, MSH-10, ids and ACK codes only.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mllp::relay::{RelayEvent, RelayStats};

use crate::send::printable;

/// Shared by the relay's observer and the progress task.
#[derive(Debug, Clone)]
pub(super) struct Output {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    json: bool,
    quiet: bool,
    follow: bool,
    counts: Mutex<Counts>,
}

#[derive(Debug)]
struct Counts {
    delivered: u64,
    dead: u64,
    position: u64,
    /// Delivered when the last progress line was printed, and when.
    reported: u64,
    reported_at: Instant,
    caught_up: bool,
}

impl Output {
    pub(super) fn new(json: bool, quiet: bool, follow: bool, from: &str, to: &str) -> Self {
        let out = Self {
            inner: Arc::new(Inner {
                json,
                quiet,
                follow,
                counts: Mutex::new(Counts {
                    delivered: 0,
                    dead: 0,
                    position: 0,
                    reported: 0,
                    reported_at: Instant::now(),
                    caught_up: false,
                }),
            }),
        };
        if json {
            out.line(&serde_json::json!({"event": "relaying", "from": from, "to": to}).to_string());
        } else {
            out.line(&format!("relaying {from} to {to}"));
        }
        out
    }

    fn line(&self, text: &str) {
        say!("{text}");
        let _ = std::io::stdout().flush();
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Prints `event` (delivered lines are left out with `--quiet`).
    pub(super) fn event(&self, event: &RelayEvent) {
        if let Some(text) = self.render(event) {
            self.line(&text);
        }
    }

    /// The line `event` gets, if any; keeps the counts.
    fn render(&self, event: &RelayEvent) -> Option<String> {
        let json = self.inner.json;
        let text = match event {
            RelayEvent::Started { position, backlog } => {
                self.counts().position = *position;
                if json {
                    serde_json::json!({"event": "started", "position": position, "backlog": backlog})
                        .to_string()
                } else {
                    let waiting = backlog.map_or(String::new(), |n| format!(", {n} waiting"));
                    if *position == 0 {
                        // A new name (or a mistyped one) starts from the first message.
                        format!(
                            "started from the first message (no position yet for this name){waiting}"
                        )
                    } else {
                        format!("started after id {position}{waiting}")
                    }
                }
            }
            RelayEvent::Delivered {
                id,
                message_type,
                control_id,
                ack,
                attempts,
                elapsed,
            } => {
                {
                    let mut c = self.counts();
                    c.delivered += 1;
                    c.position = *id;
                    c.caught_up = false;
                }
                if self.inner.quiet {
                    return None;
                }
                let ack = ack.map(|a| a.to_string());
                if json {
                    // `ack` is null for a message whose MSH-15 asked for none.
                    serde_json::json!({
                        "event": "delivered", "id": id, "message_type": message_type,
                        "control_id": control_id, "ack": ack, "attempts": attempts,
                        "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
                    })
                    .to_string()
                } else {
                    let ack = ack.as_deref().unwrap_or("sent (no ACK asked)");
                    format!(
                        "delivered  {id}  {}  {}  {ack}  ({attempts} {}, {})",
                        printable(message_type),
                        printable(control_id),
                        if *attempts == 1 { "try" } else { "tries" },
                        millis(*elapsed)
                    )
                }
            }
            RelayEvent::DeadLettered {
                id,
                message_type,
                control_id,
                reason,
                attempts,
            } => {
                {
                    let mut c = self.counts();
                    c.dead += 1;
                    c.position = *id;
                }
                if json {
                    serde_json::json!({
                        "event": "dead_letter", "id": id, "message_type": message_type,
                        "control_id": control_id, "reason": reason, "attempts": attempts,
                    })
                    .to_string()
                } else {
                    format!(
                        "DEAD       {id}  {}  {}  {}",
                        printable(message_type),
                        printable(control_id),
                        printable(reason)
                    )
                }
            }
            RelayEvent::Retrying {
                id,
                control_id,
                attempt,
                error,
                counted,
            } => {
                if json {
                    serde_json::json!({
                        "event": "retrying", "id": id, "control_id": control_id,
                        "attempt": attempt, "error": error, "counted": counted,
                    })
                    .to_string()
                } else {
                    format!(
                        "retrying   {id}  {}  try {attempt} failed: {}",
                        printable(control_id),
                        printable(error)
                    )
                }
            }
            RelayEvent::CaughtUp { position } => {
                let mut c = self.counts();
                // Quiet and following, a slow feed is caught up after every message: only the
                // final line of `--no-follow` is said.
                if c.caught_up || (self.inner.quiet && self.inner.follow) {
                    c.caught_up = true;
                    return None;
                }
                c.caught_up = true;
                let (delivered, dead) = (c.delivered, c.dead);
                drop(c);
                if json {
                    serde_json::json!({
                        "event": "caught_up", "position": position,
                        "delivered": delivered, "dead_letters": dead,
                    })
                    .to_string()
                } else {
                    let then = if self.inner.follow {
                        "; waiting for new messages"
                    } else {
                        ""
                    };
                    format!(
                        "caught up at id {position}: {delivered} delivered, {dead} dead letters{then}"
                    )
                }
            }
            RelayEvent::SourceFailed { error } => {
                if json {
                    serde_json::json!({"event": "source_failed", "error": error}).to_string()
                } else {
                    format!("store failed (retrying): {}", printable(error))
                }
            }
            _ => return None,
        };
        Some(text)
    }

    /// A task printing a progress line every `interval` while messages are delivered.
    pub(super) fn spawn_progress(&self, interval: Duration) -> Option<tokio::task::JoinHandle<()>> {
        if interval.is_zero() {
            return None;
        }
        let out = self.clone();
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                out.progress();
            }
        }))
    }

    fn progress(&self) {
        let mut c = self.counts();
        if c.delivered == c.reported {
            return;
        }
        let rate = (c.delivered - c.reported) as f64 / c.reported_at.elapsed().as_secs_f64();
        c.reported = c.delivered;
        c.reported_at = Instant::now();
        let (delivered, dead, position) = (c.delivered, c.dead, c.position);
        drop(c);
        let text = if self.inner.json {
            serde_json::json!({
                "event": "progress", "delivered": delivered, "dead_letters": dead,
                "position": position, "rate": rate.round(),
            })
            .to_string()
        } else {
            format!(
                "progress: {delivered} delivered, {dead} dead letters, at id {position}, \
                 {rate:.0} msg/s"
            )
        };
        self.line(&text);
    }

    /// The last line.
    pub(super) fn summary(&self, stats: &RelayStats) {
        let position = self.counts().position;
        let text = if self.inner.json {
            serde_json::json!({
                "event": "stopped", "delivered": stats.delivered,
                "dead_letters": stats.dead_lettered, "retries": stats.retries,
                "position": position,
            })
            .to_string()
        } else {
            format!(
                "stopped at id {position}: {} delivered, {} dead letters, {} retries",
                stats.delivered, stats.dead_lettered, stats.retries
            )
        };
        self.line(&text);
    }
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mllp::ack::AckCode;
    use mllp::relay::RelayEvent;

    use super::Output;

    fn delivered(id: u64, ack: Option<AckCode>) -> RelayEvent {
        RelayEvent::Delivered {
            id,
            message_type: "ORU^R01".into(),
            control_id: format!("C{id}"),
            ack,
            attempts: 1,
            elapsed: Duration::from_millis(3),
        }
    }

    /// `--quiet` while following prints no "caught up" line after each message of a slow feed;
    /// with `--no-follow` the final one is kept; without `--quiet` it comes once per catch-up.
    #[test]
    fn quiet_following_relay_says_nothing_when_caught_up() {
        let caught_up = |n| RelayEvent::CaughtUp { position: n };
        let quiet = Output::new(false, true, true, "sqlite:a.db", "127.0.0.1:1");
        for id in 1..=3 {
            assert_eq!(quiet.render(&delivered(id, Some(AckCode::AA))), None);
            assert_eq!(quiet.render(&caught_up(id)), None);
        }
        let quiet_once = Output::new(false, true, false, "sqlite:a.db", "127.0.0.1:1");
        quiet_once.render(&delivered(1, Some(AckCode::AA)));
        let last = quiet_once.render(&caught_up(1)).unwrap();
        assert!(last.starts_with("caught up at id 1: 1 delivered"), "{last}");
        let loud = Output::new(false, false, true, "sqlite:a.db", "127.0.0.1:1");
        loud.render(&delivered(1, Some(AckCode::AA)));
        assert!(loud.render(&caught_up(1)).is_some());
        assert_eq!(loud.render(&caught_up(1)), None, "once per catch-up");
    }

    /// A relay without a position yet (a new name, or a mistyped one) says it starts from the
    /// first message; one with a position says where it resumes.
    #[test]
    fn a_new_name_says_it_starts_from_the_first_message() {
        let out = Output::new(false, false, true, "sqlite:a.db", "127.0.0.1:1");
        let started = |position| RelayEvent::Started {
            position,
            backlog: Some(900),
        };
        assert_eq!(
            out.render(&started(0)).unwrap(),
            "started from the first message (no position yet for this name), 900 waiting"
        );
        assert_eq!(
            out.render(&started(12)).unwrap(),
            "started after id 12, 900 waiting"
        );
    }

    /// A message sent without an ACK (MSH-15 NE) has `"ack": null` in JSON, and says so in
    /// text; quotes in a reason are printed as they are, control characters escaped.
    #[test]
    fn an_unacknowledged_delivery_and_reasons_read_plainly() {
        let json = Output::new(true, false, true, "sqlite:a.db", "127.0.0.1:1");
        let line = json.render(&delivered(7, None)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(value["ack"].is_null(), "{line}");
        let text = Output::new(false, false, true, "sqlite:a.db", "127.0.0.1:1");
        let line = text.render(&delivered(7, None)).unwrap();
        assert!(line.contains("C7  sent (no ACK asked)"), "{line}");
        let dead = RelayEvent::DeadLettered {
            id: 8,
            message_type: "ADT^A01".into(),
            control_id: "C\u{1b}8".into(),
            reason: "rejected: MSA-2 \"WRONG\"".into(),
            attempts: 1,
        };
        let line = text.render(&dead).unwrap();
        assert!(
            line.ends_with("C\\u{1b}8  rejected: MSA-2 \"WRONG\""),
            "{line}"
        );
    }
}
