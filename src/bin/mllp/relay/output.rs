//! What `mllp relay` prints: one line (or JSON object) per event on stdout, a progress line
//! now and then, and a summary at the end. MSH-9, MSH-10, ids and ACK codes only.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mllp::relay::{RelayEvent, RelayStats};

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
        let json = self.inner.json;
        let text = match event {
            RelayEvent::Started { position, backlog } => {
                self.counts().position = *position;
                if json {
                    serde_json::json!({"event": "started", "position": position, "backlog": backlog})
                        .to_string()
                } else {
                    let waiting = backlog.map_or(String::new(), |n| format!(", {n} waiting"));
                    format!("started after id {position}{waiting}")
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
                    return;
                }
                let ack = ack.map_or("sent (no ACK asked)".to_owned(), |a| a.to_string());
                if json {
                    serde_json::json!({
                        "event": "delivered", "id": id, "message_type": message_type,
                        "control_id": control_id, "ack": ack, "attempts": attempts,
                        "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
                    })
                    .to_string()
                } else {
                    format!(
                        "delivered  {id}  {}  {}  {ack}  ({attempts} {}, {})",
                        message_type.escape_debug(),
                        control_id.escape_debug(),
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
                        message_type.escape_debug(),
                        control_id.escape_debug(),
                        reason.escape_debug()
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
                        control_id.escape_debug(),
                        error.escape_debug()
                    )
                }
            }
            RelayEvent::CaughtUp { position } => {
                let mut c = self.counts();
                if c.caught_up {
                    return;
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
                    format!("store failed (retrying): {}", error.escape_debug())
                }
            }
            _ => return,
        };
        self.line(&text);
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
