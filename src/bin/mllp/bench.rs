//! `mllp bench`: load a receiver from C connections and report throughput and latency.
//!
//! Closed loop (the default, here): each connection is one task that keeps up to `--pipeline`
//! messages awaiting their ACKs, writing through the MLLP framer and reading replies in order.
//! Latency is measured from the moment a message was written to the moment its ACK was read.
//! Open loop (`--rate`, in [`open_loop`]): messages go out on a fixed schedule whatever the
//! receiver does, and latency is measured from each message's intended send time.
//!
//! Every ACK is parsed and checked: MSA-1 must be AA or CA and MSA-2 must be the MSH-10 sent,
//! which is unique per message.

mod open_loop;

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use mllp::Acknowledgment;
use mllp::frame::{FrameError, MllpCodec};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::config::{self, LogFormat};
use crate::messages::{self, Template};
use crate::{exit, logging};

/// Load an MLLP receiver and report throughput and latency.
///
/// Sends `--messages` messages in total, spread over `--connections` connections. With
/// `--pipeline 1` (closed loop) each connection waits for every ACK before the next message;
/// with `--pipeline D` it keeps up to D messages awaiting their ACKs (the receiver must read
/// ahead for that to help: `mllp serve --max-in-flight D`). Every message gets a unique MSH-10,
/// and every ACK is checked (MSA-1 AA or CA, MSA-2 equal to the MSH-10 sent).
///
/// With `--rate R` the load is open loop instead: R messages per second in total, for
/// `--duration` (or `--messages` / R seconds), each message on a fixed schedule spread evenly
/// over the connections, whether or not earlier ACKs have come back (at most
/// `--max-outstanding` awaiting their ACK per connection). Latency is measured from each
/// message's intended send time, so a receiver that stalls shows up as latency, not as fewer
/// messages sent (no coordinated omission).
///
/// A connection that breaks (timeout, closed, mismatched ACK) counts its messages in flight as
/// errors and reconnects; a connection that cannot be made counts all its remaining messages.
/// `--timeout` bounds the connect, each write and each wait for an ACK.
#[derive(Debug, clap::Args)]
#[command(after_long_help = BENCH_HELP)]
pub(crate) struct BenchArgs {
    /// The receiver, HOST:PORT
    #[arg(long, value_name = "HOST:PORT")]
    to: String,

    /// Connections opened at once
    #[arg(long, short = 'c', value_name = "C", default_value = "1", value_parser = config::positive_count)]
    connections: usize,

    /// Messages sent in total, over all connections; with --rate, instead of --duration (the
    /// run lasts N / R seconds) [default: 1000, or R × --duration with --rate]
    #[arg(long, short = 'n', value_name = "N", value_parser = config::positive_count)]
    messages: Option<usize>,

    /// Messages awaiting their ACK per connection (1: closed loop; not with --rate, which
    /// pipelines on its own up to --max-outstanding)
    #[arg(long, short = 'p', value_name = "D", default_value = "1", value_parser = config::positive_count, conflicts_with = "rate")]
    pipeline: usize,

    /// Open loop: send R messages per second in total, spread evenly over the connections, on
    /// a fixed schedule that does not wait for ACKs; latency counts from each message's
    /// intended send time
    #[arg(long, value_name = "R", value_parser = config::positive_count)]
    rate: Option<usize>,

    /// With --rate: how long the schedule runs (R × DUR messages) [default: 10s]
    #[arg(long, value_name = "DUR", value_parser = config::positive_duration, requires = "rate", conflicts_with = "messages")]
    duration: Option<Duration>,

    /// With --rate: messages awaiting their ACK per connection; at the bound the connection
    /// waits for an ACK before it sends (counted as max_outstanding_hits), and the schedule
    /// keeps its times, so the wait shows in latency [default: 1024]
    #[arg(long, value_name = "K", value_parser = config::positive_count, requires = "rate")]
    max_outstanding: Option<usize>,

    /// The message to send (its first message, MSH-10 rewritten per message) [default: a
    /// built-in synthetic ADT^A01 of about 1.2 KB]
    #[arg(long, value_name = "FILE")]
    message: Option<PathBuf>,

    /// How long to wait for each acknowledgment (and for each connect and write)
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = config::positive_duration)]
    timeout: Duration,

    /// Print one JSON object on stdout instead of the text report
    #[arg(long)]
    json: bool,
}

const BENCH_HELP: &str = "\
Exit status: 0 when every message was answered AA or CA, 1 when some were answered AE, AR, CE
or CR, 2 for invalid flags or message file, 3 for transport failures (no connection, timeout,
mismatched or unreadable ACK).

JSON fields: to, connections, pipeline, messages, message_bytes, ok, errors, error_kinds
(object: kind -> count), elapsed_s, throughput_per_s (acknowledged AA/CA per second),
latency_us (p50, p90, p99, p999, max, mean; of the acknowledged messages).
With --rate (open loop) also: rate (intended msg/s), duration_s (the schedule's length),
achieved_rate_per_s (acknowledged per second from the schedule's start to the last ACK, which
elapsed_s measures, but over duration_s at least; also in throughput_per_s), max_outstanding,
max_outstanding_hits (sends that waited for an ACK), connect_s (opening all connections, before
the schedule starts), reconnects, send_lag_us (p50, p99, max: how late the writers were against
the schedule); latency_us then counts from the intended send time, and pipeline is null.
Examples:
  mllp bench --to 127.0.0.1:2575 --connections 64 --messages 10000 --json
  mllp bench --to 127.0.0.1:2575 --connections 1000 --rate 5000 --duration 30s --json";

/// Longest latency the histogram records exactly (longer ones are clamped): one hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// `--messages` when neither it nor `--rate` is given.
const DEFAULT_MESSAGES: usize = 1000;

/// A latency histogram: 1 µs to [`MAX_LATENCY_US`], three significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// Records `latency` in `histogram` in microseconds, clamped to its bounds.
fn record_latency(histogram: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(us.clamp(1, MAX_LATENCY_US));
}

/// Percentiles of a latency histogram, in microseconds (all zero when it is empty).
#[derive(Debug, Clone, Copy, Default)]
struct Percentiles {
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "p50": self.p50, "p90": self.p90, "p99": self.p99, "p999": self.p999,
            "max": self.max, "mean": self.mean,
        })
    }

    /// `p50 … ms, p90 … ms, p99 … ms, p99.9 … ms, max … ms, mean … ms`.
    fn text(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms, mean {:.3} ms",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
            self.mean / 1000.0
        )
    }
}

/// The ACK codes counted as negative acknowledgments (exit status 1); every other error kind
/// is a transport failure (exit status 3).
const NEGATIVE_ACKS: [&str; 4] = ["AE", "AR", "CE", "CR"];

/// The exit status for these errors: 3 on any transport failure, else 1 on any negative ACK,
/// else 0.
fn exit_status(errors: &BTreeMap<String, u64>) -> ExitCode {
    let transport: u64 = errors
        .iter()
        .filter(|(k, _)| !NEGATIVE_ACKS.contains(&k.as_str()))
        .map(|(_, n)| n)
        .sum();
    let all: u64 = errors.values().sum();
    if transport > 0 {
        ExitCode::from(exit::TRANSPORT)
    } else if all > 0 {
        ExitCode::from(exit::FAILURE)
    } else {
        ExitCode::SUCCESS
    }
}

/// What one connection task counted (its latencies go to the shared [`Latencies`]).
struct Outcome {
    ok: u64,
    errors: BTreeMap<String, u64>,
}

/// One latency histogram shared by the connection tasks: one each would cost 190 KB per
/// connection, 2 GB for 10,000 connections.
type Latencies = Arc<Mutex<Histogram<u64>>>;

impl Outcome {
    fn new() -> Self {
        Self {
            ok: 0,
            errors: BTreeMap::new(),
        }
    }

    fn error(&mut self, kind: &str, count: u64) {
        if count > 0 {
            *self.errors.entry(kind.to_owned()).or_default() += count;
        }
    }
}

pub(crate) async fn run(args: BenchArgs) -> ExitCode {
    if let Err(text) = logging::init(LogFormat::Text, logging::CLIENT_FILTER) {
        return exit::fail_text(exit::USAGE, &text);
    }
    let template = match load_template(args.message.as_ref()) {
        Ok(t) => t,
        Err(text) => return exit::fail_text(exit::USAGE, &text),
    };
    // Unique across runs too, so a receiver's inbox never confuses two benches.
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() % 1_000_000_000)
        .unwrap_or_default();
    raise_open_files_limit(args.connections);
    if let Some(rate) = args.rate {
        return open_loop::run(&args, rate, template, run_id).await;
    }
    let messages = args.messages.unwrap_or(DEFAULT_MESSAGES);
    let connections = args.connections.min(messages);

    let latencies: Latencies = Arc::new(Mutex::new(latency_histogram()));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for c in 0..connections {
        let share = messages / connections + usize::from(c < messages % connections);
        let worker = Worker {
            addr: args.to.clone(),
            template: template.clone(),
            id_prefix: format!("B{run_id}-{c}-"),
            count: share,
            depth: args.pipeline,
            timeout: args.timeout,
            latencies: latencies.clone(),
        };
        tasks.push(tokio::spawn(worker.run()));
    }
    let mut total = Outcome::new();
    for task in tasks {
        match task.await {
            Ok(outcome) => {
                total.ok += outcome.ok;
                for (kind, n) in outcome.errors {
                    total.error(&kind, n);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "bench connection task failed");
                total.error("task_failed", 1);
            }
        }
    }
    let elapsed = started.elapsed();
    let latencies = latencies.lock().unwrap_or_else(PoisonError::into_inner);
    report(
        &args, messages, &template, run_id, &total, &latencies, elapsed,
    )
}

/// Raises the soft limit on open files to the hard limit: every connection is a descriptor,
/// and the usual soft limit (1024) is below what `--connections` may ask for. Warns when even
/// the hard limit leaves too few for `connections`.
fn raise_open_files_limit(connections: usize) {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            let raised = rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::debug!(error = %e, "could not raise the open files limit");
            }
        }
        // Beyond the sockets: stdio, the runtime's own descriptors, a reconnect's new socket.
        let needed = connections as u64 + 32;
        if let Some(current) = getrlimit(Resource::Nofile).current
            && current < needed
        {
            tracing::warn!(
                connections,
                open_files_limit = current,
                "the open files limit is below what the connections need; raise the hard \
                 limit (ulimit -Hn) or some connections will fail"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = connections;
}

fn load_template(path: Option<&PathBuf>) -> Result<Template, String> {
    let bytes = match path {
        None => Bytes::from_static(messages::BUILTIN_ADT_A01.as_bytes()),
        Some(path) => {
            let mut all = messages::read_file(path).map_err(|e| exit::chain(&e))?;
            if all.len() > 1 {
                tracing::warn!(
                    file = %path.display(),
                    messages = all.len(),
                    "the message file holds several messages; using the first"
                );
            }
            all.swap_remove(0).payload
        }
    };
    // Every message is timed to its ACK: one whose MSH-15 asks for no ACK (NE) or for one only
    // on error (ER) would only ever measure the reply timeout.
    let accept_ack = mllp::hl7::Message::parse_with(
        bytes.clone(),
        &mllp::hl7::ParseOptions::default().lenient_line_endings(true),
    )
    .ok()
    .and_then(|m| m.accept_ack_type());
    if let Some(
        requirement @ (mllp::hl7::AckRequirement::Never | mllp::hl7::AckRequirement::ErrorOnly),
    ) = accept_ack
    {
        return Err(format!(
            "--message: MSH-15 is {requirement}, so the receiver does not acknowledge every \
             message; bench needs one that is always acknowledged (MSH-15 AL, SU or empty)"
        ));
    }
    Template::new(&bytes).map_err(|e| match path {
        Some(p) => format!("{}: {e}", p.display()),
        None => e.to_owned(),
    })
}

fn report(
    args: &BenchArgs,
    messages: usize,
    template: &Template,
    run_id: u128,
    total: &Outcome,
    latencies: &Histogram<u64>,
    elapsed: Duration,
) -> ExitCode {
    let errors: u64 = total.errors.values().sum();
    let secs = elapsed.as_secs_f64();
    let throughput = if secs > 0.0 {
        total.ok as f64 / secs
    } else {
        0.0
    };
    let latency = Percentiles::of(latencies);
    let message_bytes = template.len_with_id(format!("B{run_id}-0-0").len());
    let connections = args.connections.min(messages);
    if args.json {
        let line = serde_json::json!({
            "to": args.to,
            "connections": connections,
            "pipeline": args.pipeline,
            "messages": messages,
            "message_bytes": message_bytes,
            "ok": total.ok,
            "errors": errors,
            "error_kinds": total.errors,
            "elapsed_s": secs,
            "throughput_per_s": throughput,
            "latency_us": latency.json(),
        });
        say!("{line}");
    } else {
        say!(
            "bench {}: {} messages of ~{} bytes over {} connection(s), pipeline {}",
            args.to,
            messages,
            message_bytes,
            connections,
            args.pipeline
        );
        say!("  acknowledged  {} AA/CA, {} errors", total.ok, errors);
        say!("  elapsed       {secs:.3} s");
        say!("  throughput    {throughput:.1} msg/s");
        say!("  latency       {}", latency.text());
        for (kind, n) in &total.errors {
            say!("  error {kind:<12} {n}");
        }
    }
    let _ = std::io::stdout().flush();
    exit_status(&total.errors)
}

/// One connection's share of the load.
struct Worker {
    addr: String,
    template: Template,
    id_prefix: String,
    count: usize,
    depth: usize,
    timeout: Duration,
    latencies: Latencies,
}

/// Why a connection had to be dropped.
enum Broken {
    Timeout,
    Closed,
    Io,
    Framing,
    Mismatch,
    NotAnAck,
}

impl Broken {
    fn kind(&self) -> &'static str {
        match self {
            Broken::Timeout => "timeout",
            Broken::Closed => "closed",
            Broken::Io => "io",
            Broken::Framing => "framing",
            Broken::Mismatch => "mismatch",
            Broken::NotAnAck => "not_an_ack",
        }
    }
}

impl Worker {
    async fn run(self) -> Outcome {
        let mut outcome = Outcome::new();
        let mut next = 0;
        while next < self.count {
            let stream =
                match tokio::time::timeout(self.timeout, TcpStream::connect(&self.addr)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::warn!(addr = %self.addr, error = %e, "bench could not connect");
                        outcome.error("connect", (self.count - next) as u64);
                        break;
                    }
                    Err(_) => {
                        outcome.error("connect", (self.count - next) as u64);
                        break;
                    }
                };
            let _ = stream.set_nodelay(true);
            let mut conn = Framed::new(stream, MllpCodec::new());
            let mut in_flight: VecDeque<(String, Instant)> = VecDeque::with_capacity(self.depth);
            let broken = self
                .pump(&mut conn, &mut next, &mut in_flight, &mut outcome)
                .await;
            match broken {
                None => break,
                Some(why) => {
                    // The reply stream can no longer be trusted: everything in flight on this
                    // connection is lost; carry on with a new connection.
                    outcome.error(why.kind(), in_flight.len().max(1) as u64);
                    if in_flight.is_empty() {
                        // A write failed before the message was in flight: it is counted above.
                        next += 1;
                    }
                }
            }
        }
        outcome
    }

    /// Sends until done or the connection breaks.
    async fn pump(
        &self,
        conn: &mut Framed<TcpStream, MllpCodec>,
        next: &mut usize,
        in_flight: &mut VecDeque<(String, Instant)>,
        outcome: &mut Outcome,
    ) -> Option<Broken> {
        loop {
            while in_flight.len() < self.depth && *next < self.count {
                let id = format!("{}{}", self.id_prefix, *next);
                let message = self.template.with_control_id(&id);
                // Only flush when the pipeline is full or the work is done: pipelined
                // messages then share TCP segments.
                let flush = in_flight.len() + 1 == self.depth || *next + 1 == self.count;
                // A receiver that stops reading must not hold the bench: the write is bounded
                // by the same timeout as the wait for the ACK.
                let sent = if flush {
                    tokio::time::timeout(self.timeout, conn.send(message)).await
                } else {
                    tokio::time::timeout(self.timeout, conn.feed(message)).await
                };
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Some(frame_error(&e)),
                    Err(_elapsed) => return Some(Broken::Timeout),
                }
                in_flight.push_back((id, Instant::now()));
                *next += 1;
            }
            // Nothing in flight and nothing left to send: done.
            let (id, sent_at) = in_flight.front().cloned()?;
            let reply = match tokio::time::timeout(self.timeout, conn.next()).await {
                Err(_) => return Some(Broken::Timeout),
                Ok(None) => return Some(Broken::Closed),
                Ok(Some(Err(e))) => return Some(frame_error(&e)),
                Ok(Some(Ok(payload))) => payload,
            };
            let latency = sent_at.elapsed();
            let Ok(ack) = Acknowledgment::parse(reply) else {
                return Some(Broken::NotAnAck);
            };
            if ack.acknowledged_control_id().as_deref() != Some(id.as_str()) {
                return Some(Broken::Mismatch);
            }
            in_flight.pop_front();
            if ack.code().is_success() {
                outcome.ok += 1;
                record_latency(
                    &mut self
                        .latencies
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner),
                    latency,
                );
            } else {
                outcome.error(&ack.code().to_string(), 1);
            }
        }
    }
}

fn frame_error(e: &FrameError) -> Broken {
    match e {
        FrameError::Io(_) => Broken::Io,
        _ => Broken::Framing,
    }
}
