//! Log output: tracing-subscriber on stderr, text or JSON, filtered by `RUST_LOG`.
//!
//! Stdout is kept for results (`listening on`, per-message lines, reports), so scripts can read
//! it while logs go elsewhere.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter used when `RUST_LOG` is unset for `serve`: connection open/close at info, and
/// ractor's own per-actor lifecycle chatter (one line per connection actor spawned or stopped)
/// kept to warnings.
pub(crate) const SERVE_FILTER: &str = "info,ractor=warn";

/// The filter used when `RUST_LOG` is unset for `send` and `bench`, whose results go to stdout.
pub(crate) const CLIENT_FILTER: &str = "warn";

/// Installs the global subscriber. `RUST_LOG` overrides `default_filter`.
///
/// # Errors
/// The reason, when `RUST_LOG` is set but is not a valid filter: refused like any other invalid
/// setting (exit 2), as `serve` does, rather than silently logging something else.
pub(crate) fn init(format: LogFormat, default_filter: &str) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => {
            EnvFilter::try_new(&spec).map_err(|e| format!("invalid RUST_LOG: {e}"))?
        }
        _ => EnvFilter::new(default_filter),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Ignore the error: a subscriber is already set only when this is called twice, and the
    // first one stays in force.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    Ok(())
}
