//! The served certificates' validity: logged when serving starts, after each SIGHUP reload and
//! once a day while serving, and exported as the gauge `mllp.tls.certificate.not_after`, so
//! that an operator hears of an expiring certificate weeks before partners' handshakes start
//! failing on it. A reload that failed (the listener goes on with its previous certificate) is
//! the gauge `mllp.tls.reload.failed` until one succeeds, and both show in the admin
//! endpoint's `/status`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mllp::admin::Health;
use mllp::tls::{CertificateValidity, TlsReloader};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, ObservableGauge};

/// Within this of its expiry, a served certificate is warned about at every check.
const WARN_WITHIN: Duration = Duration::from_secs(30 * 86_400);

/// How often the served certificates are checked again while serving.
const RECHECK: Duration = Duration::from_secs(86_400);

/// One listener's certificate, as its transport last read it.
#[derive(Clone, Debug)]
pub(super) struct Served {
    /// The listener's label (`[[listener]]`); `None` for the one listener of the flags.
    pub(super) label: Option<String>,
    pub(super) reloader: TlsReloader,
}

/// What a check found, most urgent first, with the date it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finding {
    /// Its dates could not be read: its expiry is not watched.
    Unreadable,
    /// Past its `notAfter`.
    Expired { not_after: SystemTime },
    /// Before its `notBefore`.
    NotYetValid { not_before: SystemTime },
    /// Valid, but for less than [`WARN_WITHIN`]: whole days left.
    ExpiresSoon { not_after: SystemTime, days: u64 },
    /// Valid for longer.
    Fine { not_after: SystemTime },
}

fn finding(validity: Option<CertificateValidity>, now: SystemTime) -> Finding {
    let Some(v) = validity else {
        return Finding::Unreadable;
    };
    let not_after = v.not_after();
    if now < v.not_before() {
        return Finding::NotYetValid {
            not_before: v.not_before(),
        };
    }
    match v.remaining(now) {
        None => Finding::Expired { not_after },
        Some(left) if left < WARN_WITHIN => Finding::ExpiresSoon {
            not_after,
            days: left.as_secs() / 86_400,
        },
        Some(_) => Finding::Fine { not_after },
    }
}

/// A date as logs and `/status` show it: RFC 3339, UTC, whole seconds.
fn date(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Logs what `served`'s certificate looks like at `now`: an error when clients that verify it
/// refuse it (expired, not valid yet), a warning within [`WARN_WITHIN`] of its expiry, and, when
/// not `routine` (at start and after a reload), its expiry date when all is well.
pub(super) fn check(served: &Served, now: SystemTime, routine: bool) {
    // Named only when the listener has a label (`[[listener]]` tables), as the other
    // per-listener lines.
    let listener = served.label.as_deref();
    match finding(served.reloader.certificate_validity(), now) {
        Finding::Unreadable if !routine => tracing::warn!(
            listener,
            "tls certificate: its validity dates cannot be read, so its expiry is not watched"
        ),
        Finding::Expired { not_after } => tracing::error!(
            listener,
            not_after = %date(not_after),
            "tls certificate has expired: clients that verify it refuse every handshake; \
             install a renewed certificate and send SIGHUP"
        ),
        Finding::NotYetValid { not_before } => tracing::error!(
            listener,
            not_before = %date(not_before),
            "tls certificate is not valid yet: clients that verify it refuse every handshake \
             until then; check the clock, or install a certificate valid now and send SIGHUP"
        ),
        Finding::ExpiresSoon { not_after, days } => tracing::warn!(
            listener,
            not_after = %date(not_after),
            days_left = days as i64,
            "tls certificate expires in {days} day(s): install a renewed certificate and send \
             SIGHUP before then"
        ),
        Finding::Fine { not_after } if !routine => {
            tracing::info!(listener, not_after = %date(not_after), "tls certificate valid");
        }
        Finding::Unreadable | Finding::Fine { .. } => {}
    }
}

/// `served`'s check for `/status` at `now`: until when its certificate is valid (or what is
/// wrong with it) and what its last reload did, if there was one. Always ready (the listener
/// serves whatever happened); degraded when it needs attention: the certificate is expired,
/// not valid yet or within [`WARN_WITHIN`] of its expiry, or the last reload failed.
pub(super) fn health(served: &Served, now: SystemTime) -> Health {
    let finding = finding(served.reloader.certificate_validity(), now);
    let mut degraded = matches!(
        finding,
        Finding::Expired { .. } | Finding::NotYetValid { .. } | Finding::ExpiresSoon { .. }
    );
    let mut text = match finding {
        Finding::Unreadable => "certificate dates unreadable".to_owned(),
        Finding::Expired { not_after } => format!("certificate expired at {}", date(not_after)),
        Finding::NotYetValid { not_before } => {
            format!("certificate not valid before {}", date(not_before))
        }
        Finding::ExpiresSoon { not_after, days } => format!(
            "certificate expires in {days} day(s), at {}",
            date(not_after)
        ),
        Finding::Fine { not_after } => format!("certificate valid until {}", date(not_after)),
    };
    if let Some(last) = served.reloader.last_reload() {
        match last.error {
            None => text.push_str(&format!("; reloaded at {}", date(last.at))),
            Some(error) => {
                degraded = true;
                text.push_str(&format!(
                    "; the reload at {} failed, the previous certificate, key and client CAs \
                     are still in use: {error}",
                    date(last.at)
                ));
            }
        }
    }
    if degraded {
        Health::degraded(text)
    } else {
        Health::healthy(text)
    }
}

/// Watches the served certificates while it lives: checks every one now, then once a day
/// (logging then only what needs attention), and reports the gauges.
pub(super) struct Watch {
    task: Option<tokio::task::JoinHandle<()>>,
    _gauges: Option<[ObservableGauge<i64>; 3]>,
}

impl Watch {
    pub(super) fn start(served: Vec<Served>) -> Watch {
        if served.is_empty() {
            return Watch {
                task: None,
                _gauges: None,
            };
        }
        for s in &served {
            check(s, SystemTime::now(), false);
        }
        let gauges = register(&mllp::telemetry::meter(), &served);
        let task = tokio::spawn(async move {
            let mut daily = tokio::time::interval(RECHECK);
            daily.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            daily.tick().await; // the first tick is at once: checked above
            loop {
                daily.tick().await;
                for s in &served {
                    check(s, SystemTime::now(), true);
                }
            }
        });
        Watch {
            task: Some(task),
            _gauges: Some(gauges),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The attributes of `served`'s series: `listener` when it has a label.
fn labels(served: &Served) -> Vec<KeyValue> {
    served
        .label
        .iter()
        .map(|l| KeyValue::new("listener", l.clone()))
        .collect()
}

/// Seconds since the Unix epoch (0 before it), for a gauge.
fn epoch_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A gauge of one date of each listener's certificate, in seconds since the Unix epoch.
fn date_gauge(
    meter: &Meter,
    name: &'static str,
    description: &'static str,
    served: &[Served],
    date: fn(&CertificateValidity) -> SystemTime,
) -> ObservableGauge<i64> {
    let listeners = served.to_vec();
    meter
        .i64_observable_gauge(name)
        .with_unit("s")
        .with_description(description)
        .with_callback(move |observer| {
            for s in &listeners {
                if let Some(validity) = s.reloader.certificate_validity() {
                    observer.observe(epoch_seconds(date(&validity)), &labels(s));
                }
            }
        })
        .build()
}

/// Registers `mllp.tls.certificate.not_after` and `.not_before` (seconds since the Unix epoch)
/// and `mllp.tls.reload.failed` (1 while the last reload failed, else 0), one series each per
/// TLS listener, labelled `listener` when it has a label; keep what it returns for as long as
/// they should be reported.
fn register(meter: &Meter, served: &[Served]) -> [ObservableGauge<i64>; 3] {
    let not_after = date_gauge(
        meter,
        "mllp.tls.certificate.not_after",
        "When the certificate a TLS listener presents expires, in seconds since the Unix epoch \
         (alert on it minus the current time)",
        served,
        CertificateValidity::not_after,
    );
    let not_before = date_gauge(
        meter,
        "mllp.tls.certificate.not_before",
        "From when the certificate a TLS listener presents is valid, in seconds since the Unix \
         epoch (alert when it is after the current time: clients refuse it until then)",
        served,
        CertificateValidity::not_before,
    );
    let listeners = served.to_vec();
    let reload_failed = meter
        .i64_observable_gauge("mllp.tls.reload.failed")
        .with_description(
            "1 while the last certificate reload of a TLS listener failed (it still serves its \
             previous certificate), 0 otherwise",
        )
        .with_callback(move |observer| {
            for s in &listeners {
                let failed = s.reloader.last_reload().is_some_and(|r| r.error.is_some());
                observer.observe(i64::from(failed), &labels(s));
            }
        })
        .build();
    [not_after, not_before, reload_failed]
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    /// Each check's verdict at the edges of the validity window and of the warning period.
    #[test]
    fn findings_follow_the_window_and_the_warning_period() {
        let now = UNIX_EPOCH + DAY * 20_000;
        let window = |from: SystemTime, to: SystemTime| Some(CertificateValidity::new(from, to));
        assert_eq!(finding(None, now), Finding::Unreadable);
        assert_eq!(
            finding(window(now - DAY * 90, now - DAY), now),
            Finding::Expired {
                not_after: now - DAY
            }
        );
        assert_eq!(
            finding(window(now + DAY, now + DAY * 90), now),
            Finding::NotYetValid {
                not_before: now + DAY
            }
        );
        assert_eq!(
            finding(window(now - DAY, now + DAY * 29), now),
            Finding::ExpiresSoon {
                not_after: now + DAY * 29,
                days: 29
            }
        );
        assert_eq!(
            finding(window(now - DAY, now + WARN_WITHIN), now),
            Finding::Fine {
                not_after: now + WARN_WITHIN
            }
        );
        assert_eq!(
            finding(window(now - DAY, now + DAY * 365), now),
            Finding::Fine {
                not_after: now + DAY * 365
            }
        );
    }
}
