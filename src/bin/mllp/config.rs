//! Value parsers shared by the flags and the `--config` file, and the file's schema.
//!
//! Every value goes through the same parser whether it came from a flag or from the file, so
//! both reject the same things with the same words; only the name in the message differs
//! (`--idle-timeout` for a flag, `idle-timeout` in FILE for the file).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A duration in humantime form (`500ms`, `2s`, `1m`, `1h 30m`), greater than zero.
pub(crate) fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = any_duration(s)?;
    if d.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(d)
}

/// A duration in humantime form; zero is allowed.
pub(crate) fn any_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (expected a duration such as 500ms, 2s, 1m)"))
}

/// A positive duration, or `none` (no limit).
pub(crate) fn optional_duration(s: &str) -> Result<Option<Duration>, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    positive_duration(s)
        .map(Some)
        .map_err(|e| format!("{e}, or none"))
}

/// A positive count.
pub(crate) fn positive_count(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| "expected a whole number".to_owned())?;
    check_positive(n as u64)
}

/// A fraction from 0 to 1, as `0.1` or `10%`.
pub(crate) fn ratio(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (number, scale) = match s.strip_suffix('%') {
        Some(percent) => (percent.trim(), 100.0),
        None => (s, 1.0),
    };
    let value = number
        .parse::<f64>()
        .map_err(|_| "expected a number from 0 to 1 (or 0% to 100%)".to_owned())?
        / scale;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err("must be from 0 to 1 (or 0% to 100%)".to_owned())
    }
}

/// A number of acceptor restarts; zero is allowed (never restart).
pub(crate) fn restart_count(s: &str) -> Result<u32, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().map_err(|_| "is too large".to_owned())
    } else {
        Err("expected a whole number (0: never restart)".to_owned())
    }
}

fn check_positive(n: u64) -> Result<usize, String> {
    if n == 0 {
        return Err("must be greater than zero".to_owned());
    }
    usize::try_from(n).map_err(|_| "is too large".to_owned())
}

/// A size in bytes: a whole number with an optional unit (`1048576`, `512KiB`, `10MiB`, `1MB`).
pub(crate) fn byte_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| "expected a number of bytes such as 1048576, 512KiB or 10MiB".to_owned())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    let bytes = n.checked_mul(factor).ok_or("is too large")?;
    check_positive(bytes)
}

/// How the server treats bytes outside a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Framing {
    /// Close the connection on any byte outside a frame (the default).
    Strict,
    /// Discard bytes up to the next start block (for senders that pad frames with CR/LF).
    Skip,
}

impl From<Framing> for mllp::frame::FramingPolicy {
    fn from(f: Framing) -> Self {
        match f {
            Framing::Strict => mllp::frame::FramingPolicy::Strict,
            Framing::Skip => mllp::frame::FramingPolicy::SkipToNextStart,
        }
    }
}

/// What a connection does when storing a message panics or passes `--handler-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum HandlerFailure {
    /// Answer AE with ERR-3 = 207, so the sender resends (the default).
    Respond,
    /// Send nothing for that message; the connection goes on.
    NoResponse,
    /// Send nothing and close the connection.
    Close,
}

/// A [`HandlerFailure`] by its flag name (`respond`, `no-response`, `close`).
pub(crate) fn handler_failure(s: &str) -> Result<HandlerFailure, String> {
    <HandlerFailure as clap::ValueEnum>::from_str(s.trim(), false)
        .map_err(|_| "expected respond, no-response or close".to_owned())
}

impl From<HandlerFailure> for mllp::HandlerFailurePolicy {
    fn from(f: HandlerFailure) -> Self {
        match f {
            HandlerFailure::Respond => mllp::HandlerFailurePolicy::RespondWithFailure,
            HandlerFailure::NoResponse => mllp::HandlerFailurePolicy::NoResponse,
            HandlerFailure::Close => mllp::HandlerFailurePolicy::Close,
        }
    }
}

/// The log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum LogFormat {
    /// Human-readable text (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A number that may be written as a TOML integer or float, or as a string with a unit
/// (`"10MiB"`, `"10%"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum NumberOrText {
    Number(i64),
    Fraction(f64),
    Text(String),
}

/// The `--config` file: the same keys as the flags (kebab-case; snake_case is accepted too).
/// Unknown keys are rejected, so a misspelt setting is never silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct ServeFile {
    pub(crate) bind: Option<String>,
    /// A `[[listener]]` table's name: its label in logs, `/status` and metrics (refused at the
    /// top level).
    pub(crate) name: Option<String>,
    pub(crate) store: Option<String>,
    pub(crate) inbox: Option<PathBuf>,
    #[serde(alias = "no_store")]
    pub(crate) no_store: Option<bool>,
    #[serde(alias = "no_inbox")]
    pub(crate) no_inbox: Option<bool>,
    #[serde(alias = "dedup_window")]
    pub(crate) dedup_window: Option<String>,
    pub(crate) retention: Option<String>,
    #[serde(alias = "store_max_size")]
    pub(crate) store_max_size: Option<NumberOrText>,
    #[serde(alias = "store_busy_timeout")]
    pub(crate) store_busy_timeout: Option<String>,
    #[serde(alias = "store_max_batch")]
    pub(crate) store_max_batch: Option<NumberOrText>,
    #[cfg(feature = "nats")]
    #[serde(alias = "nats_subject_prefix")]
    pub(crate) nats_subject_prefix: Option<String>,
    #[cfg(feature = "nats")]
    #[serde(alias = "nats_ack_timeout")]
    pub(crate) nats_ack_timeout: Option<String>,
    #[cfg(feature = "nats")]
    #[serde(alias = "nats_duplicate_window")]
    pub(crate) nats_duplicate_window: Option<String>,
    #[cfg(feature = "nats")]
    #[serde(alias = "create_stream")]
    pub(crate) create_stream: Option<bool>,
    #[cfg(feature = "nats")]
    #[serde(alias = "stream_replicas")]
    pub(crate) stream_replicas: Option<NumberOrText>,
    #[cfg(feature = "nats")]
    #[serde(alias = "stream_storage")]
    pub(crate) stream_storage: Option<String>,
    #[cfg(feature = "nats")]
    #[serde(alias = "nats_creds")]
    pub(crate) nats_creds: Option<PathBuf>,
    #[cfg(feature = "nats")]
    #[serde(alias = "nats_tls_ca")]
    pub(crate) nats_tls_ca: Option<PathBuf>,
    #[cfg(feature = "nats")]
    #[serde(alias = "nats_tls_cert")]
    pub(crate) nats_tls_cert: Option<PathBuf>,
    #[cfg(feature = "nats")]
    #[serde(alias = "nats_tls_key")]
    pub(crate) nats_tls_key: Option<PathBuf>,
    #[serde(alias = "max_message_size")]
    pub(crate) max_message_size: Option<NumberOrText>,
    #[serde(alias = "idle_timeout")]
    pub(crate) idle_timeout: Option<String>,
    #[serde(alias = "frame_timeout")]
    pub(crate) frame_timeout: Option<String>,
    #[serde(alias = "handler_timeout")]
    pub(crate) handler_timeout: Option<String>,
    #[serde(alias = "write_timeout")]
    pub(crate) write_timeout: Option<String>,
    #[serde(alias = "max_connections")]
    pub(crate) max_connections: Option<NumberOrText>,
    #[serde(alias = "max_in_flight")]
    pub(crate) max_in_flight: Option<NumberOrText>,
    #[serde(alias = "max_concurrent_handlers")]
    pub(crate) max_concurrent_handlers: Option<NumberOrText>,
    #[serde(alias = "message_trace_ratio")]
    pub(crate) message_trace_ratio: Option<NumberOrText>,
    #[serde(alias = "message_trace_limit")]
    pub(crate) message_trace_limit: Option<NumberOrText>,
    pub(crate) framing: Option<Framing>,
    #[serde(alias = "shutdown_grace")]
    pub(crate) shutdown_grace: Option<String>,
    #[serde(alias = "handler_failure")]
    pub(crate) handler_failure: Option<String>,
    #[serde(alias = "max_restarts")]
    pub(crate) max_restarts: Option<NumberOrText>,
    #[serde(alias = "restart_window")]
    pub(crate) restart_window: Option<String>,
    #[serde(alias = "restart_backoff")]
    pub(crate) restart_backoff: Option<String>,
    #[serde(alias = "restart_max_backoff")]
    pub(crate) restart_max_backoff: Option<String>,
    #[serde(alias = "log_format")]
    pub(crate) log_format: Option<LogFormat>,
    #[serde(alias = "handshake_timeout")]
    pub(crate) handshake_timeout: Option<String>,
    #[serde(alias = "tls_cert")]
    pub(crate) tls_cert: Option<PathBuf>,
    #[serde(alias = "tls_key")]
    pub(crate) tls_key: Option<PathBuf>,
    #[serde(alias = "tls_client_ca")]
    pub(crate) tls_client_ca: Option<PathBuf>,
    #[serde(alias = "allow_client_subject")]
    pub(crate) allow_client_subject: Option<Vec<String>>,
    #[serde(alias = "allow_peer")]
    pub(crate) allow_peer: Option<Vec<String>>,
    #[serde(alias = "max_buffered_bytes")]
    pub(crate) max_buffered_bytes: Option<NumberOrText>,
    #[serde(alias = "lenient_line_endings")]
    pub(crate) lenient_line_endings: Option<bool>,
    #[serde(alias = "original_mode")]
    pub(crate) original_mode: Option<bool>,
    #[serde(alias = "ack_sending_application")]
    pub(crate) ack_sending_application: Option<String>,
    #[serde(alias = "ack_sending_facility")]
    pub(crate) ack_sending_facility: Option<String>,
    #[serde(alias = "allow_version")]
    pub(crate) allow_version: Option<Vec<String>>,
    #[serde(alias = "allow_processing_id")]
    pub(crate) allow_processing_id: Option<Vec<String>>,
    pub(crate) charsets: Option<Vec<String>>,
    pub(crate) forward: Option<String>,
    /// `[[listener]]` tables: each a listener of its own, its keys over the top level's.
    pub(crate) listener: Option<Vec<toml::Table>>,
    #[serde(alias = "forward_timeout")]
    pub(crate) forward_timeout: Option<String>,
    #[serde(alias = "charset_errors")]
    pub(crate) charset_errors: Option<String>,
    #[serde(alias = "max_connections_per_peer")]
    pub(crate) max_connections_per_peer: Option<NumberOrText>,
    #[serde(alias = "accept_rate_per_peer")]
    pub(crate) accept_rate_per_peer: Option<NumberOrText>,
    #[serde(alias = "connection_log_rate")]
    pub(crate) connection_log_rate: Option<NumberOrText>,
    #[cfg(feature = "otlp")]
    #[serde(alias = "otlp_endpoint")]
    pub(crate) otlp_endpoint: Option<String>,
    pub(crate) admin: Option<String>,
    #[serde(alias = "admin_token")]
    pub(crate) admin_token: Option<String>,
    #[serde(alias = "admin_token_file")]
    pub(crate) admin_token_file: Option<PathBuf>,
    #[serde(alias = "admin_public")]
    pub(crate) admin_public: Option<bool>,
    #[serde(alias = "log_messages")]
    pub(crate) log_messages: Option<bool>,
    #[serde(alias = "log_rejects")]
    pub(crate) log_rejects: Option<bool>,
}

/// A setting that cannot be used, naming where it came from.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SettingError {
    /// The config file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("invalid config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A value in the config file is out of range.
    #[error("invalid value for {key} in config file {}: {message}", path.display())]
    Value {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
    /// Settings that do not fit together (flags and file merged).
    #[error("{0}")]
    Invalid(String),
}

impl ServeFile {
    /// Reads and parses a config file.
    pub(crate) fn load(path: &Path) -> Result<Self, SettingError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| SettingError::Parse {
            path: path.to_path_buf(),
            message: readable(e.message())
                + &location(&text, duplicate_span(&text, e.message()).or(e.span())),
        })
    }
}

/// serde's message for an unknown key lists every key it knows (some 200 with their `_`
/// spellings); this names the closest one instead, when one is close.
pub(crate) fn readable(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_owned();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_owned();
    };
    let known: Vec<&str> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|k| !k.contains('_'))
        .collect();
    let hint = "every key is a `mllp serve` flag without its `--`, see `mllp serve --help`";
    match closest(&unknown.replace('_', "-"), &known) {
        Some(key) => format!("unknown key `{unknown}` (did you mean `{key}`? {hint})"),
        None => format!("unknown key `{unknown}` ({hint})"),
    }
}

/// The candidate closest to `given` (by edit distance, case aside), when one is close enough
/// to be a slip of the keyboard.
pub(crate) fn closest<'a>(given: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let given = given.trim().to_ascii_uppercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&given, &c.to_ascii_uppercase()), *c))
        .min()
        .filter(|(d, _)| *d <= 2.max(given.len() / 4))
        .map(|(_, c)| c)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// serde's "duplicate field `idle-timeout`" (a key given in both its spellings, kebab-case
/// and snake_case) comes with the whole table as its span, which would name line 1: the
/// second line that sets the key, in either spelling, is where it is.
fn duplicate_span(text: &str, message: &str) -> Option<std::ops::Range<usize>> {
    let key = message
        .strip_prefix("duplicate field `")?
        .split('`')
        .next()?;
    let spellings = [key.replace('_', "-"), key.replace('-', "_")];
    let mut offset = 0;
    let mut seen = 0;
    for line in text.split_inclusive('\n') {
        let name = line.split('=').next().unwrap_or_default().trim();
        if spellings.iter().any(|s| s == name) {
            seen += 1;
            if seen == 2 {
                return Some(offset..offset + line.len());
            }
        }
        offset += line.len();
    }
    None
}

fn location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

/// Parses one file value with the flag's parser, naming the key on error.
pub(crate) fn file_value<T>(
    path: &Path,
    key: &'static str,
    value: Option<String>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, SettingError> {
    value
        .map(|v| {
            parse(&v).map_err(|message| SettingError::Value {
                path: path.to_path_buf(),
                key,
                message,
            })
        })
        .transpose()
}

/// A [`NumberOrText`] as the text a flag would hold.
pub(crate) fn number_text(value: Option<NumberOrText>) -> Option<String> {
    value.map(|v| match v {
        NumberOrText::Number(n) => n.to_string(),
        NumberOrText::Fraction(n) => n.to_string(),
        NumberOrText::Text(s) => s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ratios accept fractions and percentages from 0 to 1; anything else is refused.
    #[test]
    fn ratios_are_fractions_or_percentages() {
        assert_eq!(ratio("0.1"), Ok(0.1));
        assert_eq!(ratio("25%"), Ok(0.25));
        assert_eq!(ratio("1"), Ok(1.0));
        assert_eq!(ratio("0"), Ok(0.0));
        for bad in ["1.5", "-0.1", "150%", "half", "NaN"] {
            assert!(ratio(bad).is_err(), "{bad}");
        }
    }

    /// Sizes accept plain bytes and binary or decimal units; zero and junk are refused.
    #[test]
    fn byte_size_units() {
        assert_eq!(byte_size("1048576"), Ok(1 << 20));
        assert_eq!(byte_size("10MiB"), Ok(10 << 20));
        assert_eq!(byte_size("512 KiB"), Ok(512 << 10));
        assert_eq!(byte_size("1MB"), Ok(1_000_000));
        assert!(byte_size("0").is_err());
        assert!(byte_size("-5").is_err());
        assert!(byte_size("10 parsecs").is_err());
        assert!(byte_size("99999999999999999999GiB").is_err());
    }

    /// Durations are humantime; `none` only where no limit is allowed; zero is refused.
    #[test]
    fn durations() {
        assert_eq!(positive_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(positive_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(positive_duration("0s").is_err());
        assert_eq!(any_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(optional_duration("none"), Ok(None));
        assert_eq!(optional_duration("2s"), Ok(Some(Duration::from_secs(2))));
        assert!(positive_duration("soon").is_err());
    }

    /// An unknown key in the file is an error that names it.
    #[test]
    fn unknown_file_key_is_rejected() {
        let err = toml::from_str::<ServeFile>("max-conections = 5\n").unwrap_err();
        assert!(
            err.message().contains("max-conections"),
            "{}",
            err.message()
        );
    }

    /// A misspelt key is refused with the key it was probably meant to be, not serde's list
    /// of every key; a key close to none says where the keys are listed.
    #[test]
    fn misspelt_file_key_names_the_closest_key() {
        let message =
            |text: &str| readable(toml::from_str::<ServeFile>(text).unwrap_err().message());
        assert_eq!(
            message("idle-timout = \"5s\"\n"),
            "unknown key `idle-timout` (did you mean `idle-timeout`? every key is a `mllp serve` \
             flag without its `--`, see `mllp serve --help`)"
        );
        assert!(message("max_conections = 5\n").contains("did you mean `max-connections`?"));
        let far = message("colour = \"blue\"\n");
        assert!(
            far.starts_with("unknown key `colour` (every key is"),
            "{far}"
        );
        assert!(!far.contains("expected one of"), "{far}");
        // Anything else is left as serde wrote it.
        assert_eq!(
            readable("invalid type: integer `5`, expected a string"),
            "invalid type: integer `5`, expected a string"
        );
    }

    /// A key given twice in its two spellings is reported at the second one, not at line 1.
    #[test]
    fn a_key_in_both_spellings_names_the_second_line() {
        let text = "max-connections = 5\nidle-timeout = \"5s\"\n\nidle_timeout = \"6s\"\n";
        let error = toml::from_str::<ServeFile>(text).unwrap_err();
        let span = duplicate_span(text, error.message());
        assert_eq!(location(text, span), " (line 4)", "{}", error.message());
    }

    /// Restart counts are whole numbers from zero; anything else is refused.
    #[test]
    fn restart_counts_allow_zero() {
        assert_eq!(restart_count("0"), Ok(0));
        assert_eq!(restart_count(" 3 "), Ok(3));
        for bad in ["-1", "", "three", "1.5", "99999999999"] {
            assert!(restart_count(bad).is_err(), "{bad}");
        }
    }

    /// The handler-failure names map to the library's policies; others are refused.
    #[test]
    fn handler_failure_names() {
        use mllp::HandlerFailurePolicy as P;
        for (name, policy) in [
            ("respond", P::RespondWithFailure),
            ("no-response", P::NoResponse),
            ("close", P::Close),
        ] {
            assert_eq!(handler_failure(name).map(P::from), Ok(policy), "{name}");
        }
        for bad in ["ignore", "no_response", ""] {
            assert!(handler_failure(bad).is_err(), "{bad}");
        }
    }

    /// Both spellings of a key are read.
    #[test]
    fn file_accepts_kebab_and_snake_case() {
        let f: ServeFile = toml::from_str(
            "max-connections = 5\nidle_timeout = \"none\"\nframing = \"skip\"\n\
             handler_failure = \"close\"\nmax_restarts = 0\nrestart-window = \"1s\"\n\
             restart_backoff = \"10ms\"\nrestart_max_backoff = \"1s\"\n",
        )
        .unwrap();
        assert!(matches!(f.max_connections, Some(NumberOrText::Number(5))));
        assert_eq!(f.idle_timeout.as_deref(), Some("none"));
        assert_eq!(f.framing, Some(Framing::Skip));
        assert_eq!(f.handler_failure.as_deref(), Some("close"));
        assert!(matches!(f.max_restarts, Some(NumberOrText::Number(0))));
        assert_eq!(f.restart_window.as_deref(), Some("1s"));
        assert_eq!(f.restart_backoff.as_deref(), Some("10ms"));
        assert_eq!(f.restart_max_backoff.as_deref(), Some("1s"));
    }
}
