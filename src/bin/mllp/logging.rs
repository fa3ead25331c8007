//! Log output: tracing-subscriber on stderr, text or JSON, filtered by `RUST_LOG`.
//!
//! Stdout is kept for results (`listening on`, per-message lines, reports), so scripts can read
//! it while logs go elsewhere.
//!
//! Lines are not written one `write` each: `serve` logs a line per message, and a system call
//! per line cost more than the formatting. They are appended to one buffer, which a thread of
//! its own writes out [`LINGER`] after the first line arrived in it (or as soon as it passes
//! [`HIGH_WATER`]); so a burst of lines is one write, and a quiet server's line still appears
//! within [`LINGER`]. That thread writes without holding the buffer, so a stderr that blocks
//! (a pipe nobody reads) never blocks a thread that logs: past [`LIMIT`] lines are dropped,
//! counted, and reported once stderr takes writes again. [`flush`] writes what is left: on
//! exit, before a panic's message and before `complain!`. A process killed with SIGKILL loses
//! at most the last [`LINGER`] of lines.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once};
use std::time::Duration;

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
        .with_writer(Batched::install());
    // Ignore the error: a subscriber is already set only when this is called twice, and the
    // first one stays in force.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .fmt_fields(mllp::telemetry::TextFields)
            .event_format(mllp::telemetry::TextFormat::new())
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

/// How long a line may wait in the buffer for others to join it.
const LINGER: Duration = Duration::from_millis(10);

/// A buffer this full wakes the writer thread at once.
const HIGH_WATER: usize = 64 * 1024;

/// A buffer this full takes no more lines: they are dropped and counted until the writer
/// thread has written it out. Only a stderr that does not keep up (a pipe nobody reads, a
/// stuck terminal) gets here; the server goes on answering messages meanwhile.
const LIMIT: usize = 4 * 1024 * 1024;

/// The shared log buffer: lines waiting, and the writer thread's wake-up.
struct Buffer {
    lines: Mutex<Vec<u8>>,
    /// Signalled when a line lands in an empty buffer, and when the buffer passes
    /// [`HIGH_WATER`].
    arrived: Condvar,
    /// No writer thread runs (not started yet, or none could be): every line is written at once.
    direct: AtomicBool,
    /// Lines dropped since the writer thread last reported it.
    dropped: AtomicU64,
    /// Held from taking lines out of the buffer until they are written, so that the writer
    /// thread and [`flush`] write them in the order they were logged.
    writing: Mutex<()>,
}

static BUFFER: Buffer = Buffer {
    lines: Mutex::new(Vec::new()),
    arrived: Condvar::new(),
    direct: AtomicBool::new(true),
    dropped: AtomicU64::new(0),
    writing: Mutex::new(()),
};

impl Buffer {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A thread that panicked while holding it left whole lines or nothing: go on.
        self.lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn writing(&self) -> MutexGuard<'_, ()> {
        self.writing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes lines to stderr, in one write. Nothing to do about a closed stderr: a log line
    /// must never stop the server.
    fn write_out(lines: &[u8]) {
        if !lines.is_empty() {
            let _ = std::io::stderr().lock().write_all(lines);
        }
    }

    /// The writer thread: waits for a first line, lets others join it for [`LINGER`] (or until
    /// [`HIGH_WATER`]), takes the buffer and writes it without holding the lock, so a slow
    /// stderr never blocks the threads that log.
    fn run(&self) {
        let mut taken = Vec::new();
        loop {
            {
                let mut lines = self.lock();
                while lines.is_empty() {
                    lines = self
                        .arrived
                        .wait(lines)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                if lines.len() < HIGH_WATER {
                    drop(
                        self.arrived
                            .wait_timeout_while(lines, LINGER, |l| l.len() < HIGH_WATER)
                            .unwrap_or_else(|poisoned| poisoned.into_inner()),
                    );
                }
            }
            let writing = self.writing();
            std::mem::swap(&mut *self.lock(), &mut taken);
            Self::write_out(&taken);
            drop(writing);
            taken.clear();
            // Keep a buffer the size of a usual batch, not of the largest backlog.
            taken.shrink_to(2 * HIGH_WATER);
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "log lines dropped: stderr did not keep up with them"
                );
            }
        }
    }
}

/// Writes the log lines still buffered. Cheap when there are none.
pub(crate) fn flush() {
    let _writing = BUFFER.writing();
    let taken = std::mem::take(&mut *BUFFER.lock());
    Buffer::write_out(&taken);
}

/// The subscriber's writer: each event's line goes to the shared buffer.
struct Batched;

impl Batched {
    /// Starts the writer thread (once), with a panic hook that writes the buffer before the
    /// panic's message. Without a thread (none can be spawned), every line is written at once.
    fn install() -> Batched {
        static START: Once = Once::new();
        START.call_once(|| {
            let spawned = std::thread::Builder::new()
                .name("mllp-log".into())
                .spawn(|| BUFFER.run());
            if spawned.is_ok() {
                BUFFER.direct.store(false, Ordering::Relaxed);
                let previous = std::panic::take_hook();
                std::panic::set_hook(Box::new(move |info| {
                    flush();
                    previous(info);
                }));
            }
        });
        Batched
    }
}

/// Appends one line to the buffer (or writes it, with no writer thread); drops it when the
/// buffer is at [`LIMIT`].
pub(crate) fn append(line: &[u8]) {
    if BUFFER.direct.load(Ordering::Relaxed) {
        Buffer::write_out(line);
        return;
    }
    let mut lines = BUFFER.lock();
    let before = lines.len();
    if before + line.len() > LIMIT {
        drop(lines);
        BUFFER.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    lines.extend_from_slice(line);
    let wake = before == 0 || (before < HIGH_WATER && lines.len() >= HIGH_WATER);
    // Woken with the lock still held, the writer thread (on a busy server, the same core) would
    // run only to block on it again: two context switches for each wake-up.
    drop(lines);
    if wake {
        BUFFER.arrived.notify_one();
    }
}

/// The same batched writer, for the subscriber `mllp::otel::init` installs (`serve`).
#[cfg(feature = "otlp")]
pub(crate) fn batched() -> mllp::otel::LogWriter {
    Batched::install();
    mllp::otel::LogWriter::new(append)
}

impl Write for Batched {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl tracing_subscriber::fmt::MakeWriter<'_> for Batched {
    type Writer = Batched;

    fn make_writer(&self) -> Self::Writer {
        Batched
    }
}
