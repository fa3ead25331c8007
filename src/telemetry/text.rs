//! [`TextFormat`]: tracing-subscriber's default text line, written faster for the per-message
//! lines.
//!
//! tracing-subscriber's `Full` format spent about 13,000 instructions on each per-message line
//! (callgrind, `mllp serve --no-store` at 16 connections): every field goes through `write!`
//! with `Debug`, through a style that paints nothing, and the timestamp through six `{:02}`.
//! That was a third of the server's work per message. [`TextFormat`] writes the same bytes for
//! the events of [`FAST_TARGETS`] by hand: the timestamp from digits, integers with `itoa`,
//! plain strings quoted without `Debug`'s per-char escaping. Everything else (other targets,
//! events inside a span, a terminal's colours, a field that would need escaping) goes to the
//! default format, so the output is the default format's, byte for byte (tested below).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use mllp_actors::ConnectionInfo;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{self, Format, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, time::FormatTime};
use tracing_subscriber::registry::LookupSpan;

use super::{MESSAGES_TARGET, REJECTS_TARGET};
use crate::protocol::Inbound;

/// The targets whose lines are written by the fast path: the per-message and per-reject lines
/// (one per message, so their cost is the server's).
const FAST_TARGETS: [&str; 2] = [MESSAGES_TARGET, REJECTS_TARGET];

/// The text log line of `tracing-subscriber`'s `fmt` layer (its default `Full` format, with
/// timestamps from the system clock), byte for byte, written in a fraction of the time for the
/// per-message lines ([`MESSAGES_TARGET`], [`REJECTS_TARGET`]).
///
/// [`mllp::otel::init`](crate::otel) uses it for [`LogFormat::Text`](crate::otel::LogFormat).
/// With a subscriber of your own:
///
/// ```
/// let subscriber = tracing_subscriber::fmt()
///     .fmt_fields(mllp::telemetry::TextFields)
///     .event_format(mllp::telemetry::TextFormat::new())
///     .finish();
/// # drop(subscriber);
/// ```
///
/// The per-message lines are written by hand when they can be written exactly as the default
/// would (no terminal colours, no enclosing span, fields of plain printable ASCII); every other
/// line is the default format's own.
#[derive(Debug, Clone)]
pub struct TextFormat<T = tracing_subscriber::fmt::time::SystemTime> {
    default: Format<format::Full, T>,
    /// The fast path's clock: the default's, as a time rather than a text.
    now: fn() -> SystemTime,
}

impl TextFormat {
    /// The format, with timestamps from the system clock (as the default format's).
    #[must_use]
    pub fn new() -> Self {
        TextFormat {
            default: Format::default(),
            now: SystemTime::now,
        }
    }
}

impl Default for TextFormat {
    fn default() -> Self {
        TextFormat::new()
    }
}

impl<S, N, T> FormatEvent<S, N> for TextFormat<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if writer.has_ansi_escapes()
            || !FAST_TARGETS.contains(&meta.target())
            || ctx.event_scope().is_some()
            || !plain_fields(event)
        {
            return self.default.format_event(ctx, writer, event);
        }
        let Some(stamp) = timestamp((self.now)()) else {
            return self.default.format_event(ctx, writer, event);
        };
        writer.write_str(stamp.as_str())?;
        writer.write_str(level(meta.level()))?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        write_fields(&mut writer, event)?;
        writer.write_char('\n')
    }
}

/// The per-message line (`ServerBuilder::message_lines_to`) as [`TextFormat`] writes the
/// `message` event of [`MessageLog`](super::MessageLog) at `now`, outside any span: the same
/// timestamp, level, target and fields, in the event's order (`latency_ms` the value the event
/// records). `None` when a value is one the
/// fast path would not write by hand (it needs escaping) or the time one it does not write:
/// that line goes through `tracing`. `out` is cleared first.
pub(super) fn message_line(
    out: &mut String,
    now: SystemTime,
    conn: &ConnectionInfo,
    meta: &Inbound,
    latency_ms: f64,
    ack_code: &str,
) -> Option<()> {
    let texts = [
        meta.message_code(),
        meta.trigger_event(),
        meta.control_id(),
        meta.store_id(),
    ];
    if !texts.iter().flatten().all(|t| plain(t)) || !plain(conn.peer_ip()) {
        return None;
    }
    let latency = thousandths(latency_ms)?;
    let stamp = timestamp(now)?;
    out.clear();
    out.push_str(stamp.as_str());
    out.push_str(level(&Level::INFO));
    out.push_str(MESSAGES_TARGET);
    out.push_str(": message connection.id=");
    out.push_str(itoa::Buffer::new().format(conn.id() as i64));
    quoted(out, "network.peer.address", Some(conn.peer_ip()));
    quoted(out, "hl7.message_type", meta.message_code());
    quoted(out, "hl7.trigger_event", meta.trigger_event());
    quoted(
        out,
        "hl7.control_id",
        meta.control_id()
            .map(crate::hl7::logged_control_id)
            .as_deref(),
    );
    quoted(out, "hl7.ack_code", Some(ack_code));
    out.push_str(" latency_ms=");
    write_thousandths(out, latency).ok()?;
    quoted(out, "store.id", meta.store_id());
    out.push('\n');
    Some(())
}

/// ` name="value"` for a plain value, nothing for `None` (an absent field is not written).
fn quoted(out: &mut String, name: &str, value: Option<&str>) {
    if let Some(value) = value {
        out.push(' ');
        out.push_str(name);
        out.push_str("=\"");
        out.push_str(value);
        out.push('"');
    }
}

/// The level as the default format writes it, with the space after it.
fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE ",
        Level::DEBUG => "DEBUG ",
        Level::INFO => " INFO ",
        Level::WARN => " WARN ",
        _ => "ERROR ",
    }
}

/// Whether the fast visitor writes these fields exactly as the default does: no `log.` field
/// (which the default skips when built with `tracing-log`), no `r#` name, no error (which the
/// default writes with its sources).
fn plain_fields(fields: &impl RecordFields) -> bool {
    struct Check(bool);
    impl Visit for Check {
        fn record_error(&mut self, _: &Field, _: &(dyn std::error::Error + 'static)) {
            self.0 = false;
        }
        // Every other `record_*` comes here by default.
        fn record_debug(&mut self, field: &Field, _: &dyn fmt::Debug) {
            self.0 &= !field.name().starts_with("log.") && !field.name().starts_with("r#");
        }
    }
    let mut check = Check(true);
    fields.record(&mut check);
    check.0
}

/// Printable ASCII with nothing `Debug` would escape.
fn plain(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// The fields of an event or span, as tracing-subscriber's `DefaultFields` writes them, for the
/// `fmt` layer's [`fmt_fields`](tracing_subscriber::fmt::SubscriberBuilder::fmt_fields). The
/// fields of every span are formatted when it is created (the message span, once per
/// message), whether or not a line ever shows them: this does it in a fraction of the time.
/// Byte for byte the default's output; fields it does not write by hand (errors, `r#` names,
/// `log.` fields, a terminal's colours) go to `DefaultFields`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextFields;

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        if writer.has_ansi_escapes() || !plain_fields(&fields) {
            return format::DefaultFields::new().format_fields(writer, fields);
        }
        write_fields(&mut writer, &fields)
    }
}

fn write_fields(writer: &mut Writer<'_>, fields: &impl RecordFields) -> fmt::Result {
    let sanitize = writer.sanitizes_ansi_escapes();
    let mut visitor = Fields {
        writer,
        first: true,
        sanitize,
        result: Ok(()),
    };
    fields.record(&mut visitor);
    visitor.result
}

/// Writes the fields as the default format's visitor does: the message bare, the others
/// `name=value` with `Debug` values, one space between.
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    /// The message's control characters are escaped, as the default does.
    sanitize: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn name(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.writer.write_char(' ')?;
        }
        if field.name() != "message" {
            self.writer.write_str(field.name())?;
            self.writer.write_char('=')?;
        }
        Ok(())
    }

    fn put(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| value(self.writer));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // A whole number of thousandths (the log line's `latency_ms`) is written from integers;
        // anything else as `Debug` writes it. Both give the same text.
        match thousandths(value) {
            Some(n) => self.put(field, |w| write_thousandths(w, n)),
            None => self.put(field, |w| write!(w, "{value:?}")),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else if plain(value) {
            // `Debug` would add the quotes and nothing else.
            self.put(field, |w| {
                w.write_char('"')?;
                w.write_str(value)?;
                w.write_char('"')
            });
        } else {
            self.put(field, |w| write!(w, "{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" && self.sanitize {
            self.put(field, |w| {
                fmt::Write::write_fmt(&mut Escaping(w), format_args!("{value:?}"))
            });
        } else {
            self.put(field, |w| write!(w, "{value:?}"));
        }
    }
}

/// `value` as a count of thousandths, when it is one exactly as `Debug` would print it (not
/// negative, below 10^12, and the nearest `f64` to that many thousandths), else `None`.
fn thousandths(value: f64) -> Option<u64> {
    if !value.is_sign_positive() || !(0.0..1e12).contains(&value) {
        return None;
    }
    let n = (value * 1000.0).round();
    // The same division `millis` does: the `f64` nearest to n/1000, whose shortest decimal is n
    // thousandths.
    (n / 1000.0 == value).then_some(n as u64)
}

/// `n` thousandths as `Debug` prints the `f64` nearest to them: `2.0`, `0.25`, `10.125`.
fn write_thousandths(w: &mut impl fmt::Write, n: u64) -> fmt::Result {
    w.write_str(itoa::Buffer::new().format(n / 1000))?;
    let frac = n % 1000;
    if frac == 0 {
        return w.write_str(".0");
    }
    let digits = [
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ];
    let kept = if frac.is_multiple_of(100) {
        2
    } else if frac.is_multiple_of(10) {
        3
    } else {
        4
    };
    w.write_str(std::str::from_utf8(&digits[..kept]).map_err(|_| fmt::Error)?)
}

/// Escapes the control characters a terminal could act on, as tracing-subscriber does in a
/// message (ESC, BEL, BS, FF, DEL and the C1 controls).
struct Escaping<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let clean = |c: char| {
            !matches!(
                c,
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
            )
        };
        if s.chars().all(clean) {
            return self.0.write_str(s);
        }
        for c in s.chars() {
            match c {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", c as u32)?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// `2026-12-05T09:01:57.881225Z ` (the default timer's format and the space after it), or
/// `None` for a time the fast path does not write (before 1970 or after 9999).
fn timestamp(now: SystemTime) -> Option<Stamp> {
    let since = now.duration_since(UNIX_EPOCH).ok()?;
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).ok()?;
    let (year, month, day) = crate::ack::civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let of_day = secs % 86_400;
    let mut stamp = Stamp(*b"0000-00-00T00:00:00.000000Z ");
    let b = &mut stamp.0;
    digits(&mut b[0..4], year as u64);
    digits(&mut b[5..7], u64::from(month));
    digits(&mut b[8..10], u64::from(day));
    digits(&mut b[11..13], of_day / 3600);
    digits(&mut b[14..16], of_day / 60 % 60);
    digits(&mut b[17..19], of_day % 60);
    digits(&mut b[20..26], u64::from(since.subsec_micros()));
    Some(stamp)
}

/// An ASCII timestamp of fixed width.
struct Stamp([u8; 28]);

impl Stamp {
    fn as_str(&self) -> &str {
        // Only ASCII digits were written over an ASCII template.
        std::str::from_utf8(&self.0).unwrap_or("<unknown time> ")
    }
}

/// Writes `value`'s last `out.len()` decimal digits, zero-padded.
fn digits(out: &mut [u8], mut value: u64) {
    for byte in out.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod f64_tests {
    use proptest::prelude::*;

    use super::{thousandths, write_thousandths};

    /// The fast path prints exactly what `Debug` prints, for every value it takes.
    fn fast(value: f64) -> Option<String> {
        thousandths(value).map(|n| {
            let mut text = String::new();
            write_thousandths(&mut text, n).unwrap();
            text
        })
    }

    #[test]
    fn whole_thousandths_print_as_debug_does() {
        for (value, text) in [
            (0.0, "0.0"),
            (2.0, "2.0"),
            (0.123, "0.123"),
            (1.5, "1.5"),
            (10.05, "10.05"),
            (0.001, "0.001"),
        ] {
            assert_eq!(fast(value).as_deref(), Some(text), "{value:?}");
            assert_eq!(format!("{value:?}"), text);
        }
        for value in [-1.0, -0.0, 0.0001, 1e12, f64::NAN, f64::INFINITY, 0.1 + 0.2] {
            assert_eq!(thousandths(value), None, "{value:?}");
        }
    }

    proptest! {
        #[test]
        fn latencies_print_as_debug_does(micros in 0u64..10_000_000_000) {
            let value = (micros as f64 * 1e-6 * 1e6).round() / 1e3;
            let debug = format!("{value:?}");
            prop_assert_eq!(fast(value).unwrap_or_else(|| debug.clone()), debug);
        }

        #[test]
        fn any_value_prints_as_debug_does(value in proptest::num::f64::ANY) {
            let debug = format!("{value:?}");
            prop_assert_eq!(fast(value).unwrap_or_else(|| debug.clone()), debug);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// The time both formats stamp their lines with in the test.
    fn fixed() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_796_461_317, 881_225_999)
    }

    /// [`fixed`] for the default format.
    struct Fixed;

    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            // RFC 3339 with microseconds, as tracing-subscriber's timer writes it, by another
            // implementation than the fast path's.
            write!(w, "{}", humantime::format_rfc3339_micros(fixed()))
        }
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl MakeWriter<'_> for Captured {
        type Writer = Captured;
        fn make_writer(&self) -> Captured {
            self.clone()
        }
    }

    /// The events of the fast path and its fall-backs, logged through `install`.
    fn emit() {
        tracing::event!(
            target: MESSAGES_TARGET,
            Level::INFO,
            connection.id = 7_i64,
            network.peer.address = "10.0.0.9",
            hl7.message_type = "ADT",
            hl7.trigger_event = Some("A01"),
            hl7.control_id = "MSG-00042",
            hl7.ack_code = "CA",
            latency_ms = 0.514_f64,
            whole_ms = 2.0_f64,
            store.id = Some(12_u64),
            absent = None::<&str>,
            tls = false,
            "message"
        );
        tracing::event!(
            target: REJECTS_TARGET,
            Level::WARN,
            reject.reason = "missing_msh_field",
            reject.detail = tracing::field::display("segment 2 is delimited by a line feed"),
            hl7.control_id = "quote\" and \\ and é",
            "message rejected"
        );
        tracing::event!(
            target: MESSAGES_TARGET,
            Level::INFO,
            hl7.control_id = "tab\there",
            "message"
        );
        // An error value with a source (the default writes the chain) and an `r#` name (the
        // default leaves out the `r#`): the default's own lines.
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("cannot commit")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let error = Outer(std::io::Error::other("disk full"));
        tracing::event!(
            target: MESSAGES_TARGET,
            Level::INFO,
            hl7.control_id = "MSG-1",
            error = &error as &(dyn std::error::Error + 'static),
            "message"
        );
        // tracing's macros strip `r#` from an identifier (`r#type` is named `type`); a literal
        // name keeps it, as a hand-built field set would.
        tracing::event!(target: REJECTS_TARGET, Level::WARN, "r#type" = "raw", "message rejected");
        tracing::event!(
            target: MESSAGES_TARGET,
            Level::INFO,
            hl7.control_id = "x",
            "bell \x07 and esc \x1b[31m"
        );
        let span = tracing::info_span!(
            "mllp.message",
            otel.status_code = tracing::field::Empty,
            mllp.connection.id = 3_i64,
            network.peer.address = "10.0.0.9",
            hl7.control_id = "with \"quotes\"",
            mllp.message.size = 1175_i64,
            tls = true,
        );
        span.record("otel.status_code", "OK");
        span.in_scope(|| {
            tracing::event!(target: MESSAGES_TARGET, Level::INFO, n = 1_i64, "message");
        });
        tracing::info!(address = "127.0.0.1:2575", "listening");
        tracing::error!(target: REJECTS_TARGET, code = -3_i64, "message rejected");
    }

    fn log_with<E, N>(format: E, fields: N) -> String
    where
        E: FormatEvent<tracing_subscriber::Registry, N> + Send + Sync + 'static,
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(out.clone())
            .fmt_fields(fields)
            .event_format(format)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn fast_lines_are_the_default_format_byte_for_byte() {
        let fast = log_with(
            TextFormat {
                default: Format::default().with_timer(Fixed),
                now: fixed,
            },
            TextFields,
        );
        let default = log_with(
            Format::default().with_timer(Fixed),
            format::DefaultFields::new(),
        );
        assert_eq!(fast, default);
        assert_eq!(fast.lines().count(), 9, "{fast}");
        // The fall-backs: the error with its chain, the name without its `r#`.
        assert!(
            fast.contains("error=cannot commit error.sources=[disk full]"),
            "{fast}"
        );
        assert!(fast.contains("message rejected type=\"raw\""), "{fast}");
        // The span's fields (formatted when it was created, and when recorded) are shown.
        assert!(
            fast.contains("mllp.message{mllp.connection.id=3 network.peer.address=\"10.0.0.9\""),
            "{fast}"
        );
        assert!(
            fast.starts_with(
                "2026-12-05T09:01:57.881225Z  INFO mllp::messages: message connection.id=7 \
                 network.peer.address=\"10.0.0.9\""
            ),
            "{fast}"
        );
    }

    #[test]
    fn timestamps_match_the_calendar() {
        let at = |secs: u64, micros: u32| {
            timestamp(UNIX_EPOCH + Duration::new(secs, micros * 1000))
                .unwrap()
                .as_str()
                .to_owned()
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z ");
        // 2000-02-29 (a leap day of a century year divisible by 400), last microsecond.
        assert_eq!(at(951_868_799, 999_999), "2000-02-29T23:59:59.999999Z ");
        assert_eq!(at(4_107_542_400, 1), "2100-03-01T00:00:00.000001Z ");
        assert_eq!(at(253_402_300_799, 0), "9999-12-31T23:59:59.000000Z ");
        assert!(timestamp(UNIX_EPOCH + Duration::from_secs(253_402_300_800)).is_none());
    }
}
