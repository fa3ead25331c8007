//! `mllp bench --rate R`: open-loop load on a fixed schedule, without coordinated omission.
//!
//! A closed-loop sender waits for each ACK before the next message, so when the receiver
//! stalls it simply sends less: the stall is measured once, by the one message that waited,
//! and every message that *would* have been sent meanwhile is silently left out
//! ("coordinated omission", as wrk2 calls it). Here every message has an intended send time
//! fixed before the run: message `k` (0-based, over all connections) is due at
//! `t0 + k / R`, and goes on connection `k mod C`, so each connection sends at R / C per
//! second, offset from its neighbours so that the total is evenly paced. Latency runs from
//! the intended send time to the read of the ACK: a message that could only be sent late
//! because the receiver (or the sender) fell behind carries that lateness in its latency.
//!
//! One pacer thread keeps the schedule: it sleeps until each message is due and then releases
//! it to its connection. A thread's sleep ends within tens of microseconds of its deadline;
//! tokio's timer counts whole milliseconds, which would make every message 1 to 2 ms late and
//! put that floor under every latency. Each connection is one task that joins two halves: a
//! writer that sends each message as soon as it is released (several released at once share
//! TCP segments) and a reader that matches ACKs in order (MSA-2 must be the MSH-10 sent, as in
//! closed loop). The writer never waits for an ACK unless `--max-outstanding` messages of its
//! connection await theirs; then it waits for one (counted in `max_outstanding_hits`) and sends
//! the message, late, against its unchanged intended time. How late each send was against its
//! intended time is `send_lag`: the bench's own lateness, which latency includes.
//!
//! All connections are opened first (at most [`CONNECTS_AT_ONCE`] at a time), and the
//! schedule starts [`SCHEDULE_LEAD`] after the last one is up, so the connect phase
//! (`connect_s`) is measured apart from the load. Latencies and send lags go into two shared
//! histograms (one per connection would cost 190 KB each, 2 GB for 10,000 connections).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use mllp::Acknowledgment;
use mllp::frame::MllpCodec;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::{
    BenchArgs, Broken, Percentiles, exit_status, frame_error, latency_histogram, record_latency,
};
use crate::exit;
use crate::messages::Template;

/// `--duration` when neither it nor `--messages` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// `--max-outstanding` when not given: messages awaiting their ACK per connection.
const DEFAULT_MAX_OUTSTANDING: usize = 1024;

/// Connects in progress at once while the connections are opened: enough to open thousands
/// quickly, few enough not to overflow the receiver's accept backlog all at once.
const CONNECTS_AT_ONCE: usize = 256;

/// Time between the last connection being up and the first intended send: the pacer thread
/// starts in it.
const SCHEDULE_LEAD: Duration = Duration::from_millis(20);

/// The run the flags ask for.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Intended messages per second, over all connections.
    rate: u64,
    /// Messages in the schedule, over all connections.
    messages: u64,
    /// Connections used: `--connections`, but never more than there are messages.
    connections: u64,
    /// Messages awaiting their ACK per connection before its writer waits for one.
    max_outstanding: usize,
}

impl Plan {
    /// The plan for `--rate rate` and the other flags; an error text for a usage error.
    fn new(args: &BenchArgs, rate: usize) -> Result<Self, String> {
        let rate = rate as u64;
        let messages = match args.messages {
            Some(n) => n as u64,
            None => {
                let duration = args.duration.unwrap_or(DEFAULT_DURATION);
                let n = u128::from(rate) * duration.as_nanos() / 1_000_000_000;
                let n = u64::try_from(n).map_err(|_| "--rate × --duration is too large")?;
                if n == 0 {
                    return Err(format!(
                        "--rate {rate} for --duration {} sends no message; make the duration \
                         at least 1/{rate} s",
                        humantime::format_duration(duration)
                    ));
                }
                n
            }
        };
        Ok(Self {
            rate,
            messages,
            connections: (args.connections as u64).min(messages),
            max_outstanding: args.max_outstanding.unwrap_or(DEFAULT_MAX_OUTSTANDING),
        })
    }

    /// When message `k` (0-based, over all connections) is due, after the schedule's start.
    fn due(&self, k: u64) -> Duration {
        let nanos = u128::from(k) * 1_000_000_000 / u128::from(self.rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// How long the schedule runs: messages / rate.
    fn duration(&self) -> Duration {
        self.due(self.messages)
    }

    /// The messages of connection `c`: `c`, `c + C`, `c + 2C`, … below the total.
    fn share(&self, c: u64) -> u64 {
        (self.messages - c).div_ceil(self.connections)
    }
}

/// What all connections record as they go, in one place.
#[derive(Debug)]
struct Recorder {
    /// From each acknowledged message's intended send time to the read of its ACK.
    latencies: Histogram<u64>,
    /// From each message's intended send time to the moment its writer began to send it.
    send_lag: Histogram<u64>,
}

/// [`Recorder`], shared by the connection tasks.
type SharedRecorder = Arc<Mutex<Recorder>>;

/// Locks the recorder; a panic elsewhere while it was held leaves nothing half-written.
fn lock(recorder: &SharedRecorder) -> std::sync::MutexGuard<'_, Recorder> {
    recorder.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one connection counted.
#[derive(Debug, Default)]
struct Tally {
    /// Messages answered AA or CA.
    ok: u64,
    /// Messages not answered AA or CA, by kind (ACK code or transport failure).
    errors: BTreeMap<String, u64>,
    /// Sends that had to wait for an ACK because `--max-outstanding` were outstanding.
    outstanding_full: u64,
    /// Connections opened again after one broke.
    reconnects: u64,
}

impl Tally {
    fn error(&mut self, kind: &str, count: u64) {
        if count > 0 {
            *self.errors.entry(kind.to_owned()).or_default() += count;
        }
    }

    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.outstanding_full += other.outstanding_full;
        self.reconnects += other.reconnects;
        for (kind, n) in other.errors {
            self.error(&kind, n);
        }
    }
}

/// Runs the open-loop bench and prints its report.
pub(super) async fn run(
    args: &BenchArgs,
    rate: usize,
    template: Template,
    run_id: u128,
) -> ExitCode {
    let plan = match Plan::new(args, rate) {
        Ok(plan) => plan,
        Err(text) => return exit::fail_text(exit::USAGE, &text),
    };
    let recorder: SharedRecorder = Arc::new(Mutex::new(Recorder {
        latencies: latency_histogram(),
        send_lag: latency_histogram(),
    }));
    let addr: Arc<str> = Arc::from(args.to.as_str());
    let connect_permits = Arc::new(Semaphore::new(CONNECTS_AT_ONCE));
    let (connected_tx, mut connected_rx) = mpsc::unbounded_channel::<()>();

    let opening = Instant::now();
    let mut tasks = Vec::with_capacity(plan.connections as usize);
    let mut releases = Vec::with_capacity(plan.connections as usize);
    for c in 0..plan.connections {
        let (release_tx, release_rx) = mpsc::unbounded_channel();
        releases.push(release_tx);
        let connection = Connection {
            addr: addr.clone(),
            template: template.clone(),
            id_prefix: format!("B{run_id}-{c}-"),
            count: plan.share(c),
            plan,
            timeout: args.timeout,
            recorder: recorder.clone(),
        };
        tasks.push(tokio::spawn(connection.run(
            connect_permits.clone(),
            connected_tx.clone(),
            release_rx,
        )));
    }
    drop(connected_tx);
    // Every task reports once, connected or not; a task that ended early dropped its sender.
    let mut reported = 0;
    while reported < plan.connections && connected_rx.recv().await.is_some() {
        reported += 1;
    }
    let connect_time = opening.elapsed();
    let t0 = Instant::now() + SCHEDULE_LEAD;
    let pacer = std::thread::Builder::new()
        .name("bench-pacer".to_owned())
        .spawn(move || pace(plan, t0, &releases));
    if let Err(e) = pacer {
        return exit::fail_text(
            exit::FAILURE,
            &format!("cannot start the pacer thread: {e}"),
        );
    }

    let mut total = Tally::default();
    for task in tasks {
        match task.await {
            Ok(tally) => total.add(tally),
            Err(e) => {
                tracing::error!(error = %e, "bench connection task failed");
                total.error("task_failed", 1);
            }
        }
    }
    let elapsed = Instant::now().saturating_duration_since(t0);
    let recorder = lock(&recorder);
    let report = Report {
        args,
        plan: &plan,
        message_bytes: template.len_with_id(format!("B{run_id}-0-0").len()),
        total: &total,
        latency: Percentiles::of(&recorder.latencies),
        send_lag: Percentiles::of(&recorder.send_lag),
        connect_time,
        elapsed,
    };
    report.print();
    exit_status(&total.errors)
}

/// The schedule: releases message `k` to connection `k mod C` at `t0 + k / R` (its intended
/// send time, which goes with it), sleeping in between; at once for messages already due.
fn pace(plan: Plan, t0: Instant, releases: &[mpsc::UnboundedSender<Instant>]) {
    let t0_std = t0.into_std();
    for k in 0..plan.messages {
        let offset = plan.due(k);
        let due = t0_std + offset;
        let now = std::time::Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        // A connection that gave up (it could not connect) needs no more.
        let _ = releases[(k % plan.connections) as usize].send(t0 + offset);
    }
}

/// One connection's share of the schedule.
struct Connection {
    addr: Arc<str>,
    template: Template,
    /// MSH-10 of its `j`-th message: this prefix and `j`.
    id_prefix: String,
    /// How many messages it sends.
    count: u64,
    plan: Plan,
    timeout: Duration,
    recorder: SharedRecorder,
}

/// A message sent (or being sent) whose ACK the reader expects next.
struct Pending {
    /// Its MSH-10, which MSA-2 must echo.
    id: String,
    /// Its intended send time, from which its latency counts.
    due: Instant,
}

impl Connection {
    /// Connects, reports that on `connected`, then sends each message of its share as the
    /// pacer releases it on `releases`, reconnecting after a break.
    async fn run(
        self,
        connect_permits: Arc<Semaphore>,
        connected: mpsc::UnboundedSender<()>,
        mut releases: mpsc::UnboundedReceiver<Instant>,
    ) -> Tally {
        let mut tally = Tally::default();
        let mut stream = {
            // The semaphore is never closed; without a permit, connect anyway.
            let _permit = connect_permits.acquire().await;
            self.connect().await
        };
        let _ = connected.send(());
        drop(connected);
        let mut next = 0;
        loop {
            let Some(conn) = stream.take() else {
                tally.error("connect", self.count - next);
                break;
            };
            let outstanding = Semaphore::new(self.plan.max_outstanding);
            let (read_half, write_half) = conn.into_split();
            let (queue_tx, queue_rx) = mpsc::unbounded_channel();
            let mut outstanding_full = 0;
            let result = tokio::try_join!(
                self.write(
                    FramedWrite::new(write_half, MllpCodec::new()),
                    &mut releases,
                    &mut next,
                    &outstanding,
                    &mut outstanding_full,
                    queue_tx,
                ),
                self.read(
                    FramedRead::new(read_half, MllpCodec::new()),
                    queue_rx,
                    &outstanding,
                    &mut tally,
                ),
            );
            tally.outstanding_full += outstanding_full;
            let why = match result {
                // The write half is dropped (closed) only now, after the last ACK was read.
                Ok((_sink, ())) => {
                    tally.error("unsent", self.count - next);
                    break;
                }
                Err(why) => why,
            };
            // The reply stream can no longer be trusted: every message sent on this connection
            // and not yet answered is lost. Messages before `next` were all sent; the ones not
            // sent yet go out on a new connection, late against their intended times.
            let lost = self.plan.max_outstanding - outstanding.available_permits();
            tally.error(why.kind(), lost as u64);
            if next == self.count {
                break;
            }
            tally.reconnects += 1;
            stream = self.connect().await;
        }
        tally
    }

    /// A connection to the receiver within the timeout, or `None` (logged).
    async fn connect(&self) -> Option<TcpStream> {
        match tokio::time::timeout(self.timeout, TcpStream::connect(&*self.addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Some(stream)
            }
            Ok(Err(e)) => {
                tracing::warn!(addr = %self.addr, error = %e, "bench could not connect");
                None
            }
            Err(_) => {
                tracing::warn!(addr = %self.addr, "bench could not connect within the timeout");
                None
            }
        }
    }

    /// The writer half: sends messages `next..count` as `releases` releases them (with their
    /// intended send times), each announced on `queue` before it is written, waiting for an
    /// ACK only when `outstanding` has no permit left. Returns when all are sent (dropping
    /// `queue`, which ends the reader once it has read the last ACK; the sink is returned, so
    /// that the connection is not half-closed before then) or the connection broke.
    async fn write(
        &self,
        mut sink: FramedWrite<OwnedWriteHalf, MllpCodec>,
        releases: &mut mpsc::UnboundedReceiver<Instant>,
        next: &mut u64,
        outstanding: &Semaphore,
        outstanding_full: &mut u64,
        queue: mpsc::UnboundedSender<Pending>,
    ) -> Result<FramedWrite<OwnedWriteHalf, MllpCodec>, Broken> {
        while *next < self.count {
            let due = match releases.try_recv() {
                Ok(due) => due,
                Err(_) => {
                    // Messages fed but not flushed must go out before the writer waits.
                    self.flush(&mut sink).await?;
                    match releases.recv().await {
                        Some(due) => due,
                        // The pacer releases every message before it ends: only its panic
                        // gets here, and the messages left are counted as unsent.
                        None => break,
                    }
                }
            };
            let permit = match outstanding.try_acquire() {
                Ok(permit) => permit,
                Err(_) => {
                    *outstanding_full += 1;
                    // The ACKs awaited can only come for messages that were flushed.
                    self.flush(&mut sink).await?;
                    // The semaphore is never closed.
                    outstanding.acquire().await.map_err(|_| Broken::Closed)?
                }
            };
            // The reader hands the permit back when the ACK is read.
            permit.forget();
            let id = format!("{}{}", self.id_prefix, *next);
            let message = self.template.with_control_id(&id);
            record_latency(
                &mut lock(&self.recorder).send_lag,
                Instant::now().saturating_duration_since(due),
            );
            // Announced before the write: its ACK may be read before the write returns.
            if queue.send(Pending { id, due }).is_err() {
                // The reader is gone: it returned an error, which try_join reports.
                return Err(Broken::Closed);
            }
            *next += 1;
            // Fed, not flushed: messages due at the same moment share TCP segments.
            match tokio::time::timeout(self.timeout, sink.feed(message)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(frame_error(&e)),
                Err(_elapsed) => return Err(Broken::Timeout),
            }
        }
        self.flush(&mut sink).await?;
        Ok(sink)
    }

    /// Flushes what was fed, within the timeout (a receiver that stops reading fills the
    /// socket's buffers).
    async fn flush(&self, sink: &mut FramedWrite<OwnedWriteHalf, MllpCodec>) -> Result<(), Broken> {
        match tokio::time::timeout(self.timeout, sink.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(frame_error(&e)),
            Err(_elapsed) => Err(Broken::Timeout),
        }
    }

    /// The reader half: reads one ACK per message announced on `queue`, in order, each within
    /// the timeout, checks it and records its latency from the intended send time.
    async fn read(
        &self,
        mut replies: FramedRead<OwnedReadHalf, MllpCodec>,
        mut queue: mpsc::UnboundedReceiver<Pending>,
        outstanding: &Semaphore,
        tally: &mut Tally,
    ) -> Result<(), Broken> {
        while let Some(pending) = queue.recv().await {
            let reply = match tokio::time::timeout(self.timeout, replies.next()).await {
                Err(_) => return Err(Broken::Timeout),
                Ok(None) => return Err(Broken::Closed),
                Ok(Some(Err(e))) => return Err(frame_error(&e)),
                Ok(Some(Ok(payload))) => payload,
            };
            let latency = Instant::now().saturating_duration_since(pending.due);
            let Ok(ack) = Acknowledgment::parse(reply) else {
                return Err(Broken::NotAnAck);
            };
            if ack.acknowledged_control_id().as_deref() != Some(pending.id.as_str()) {
                return Err(Broken::Mismatch);
            }
            outstanding.add_permits(1);
            if ack.code().is_success() {
                tally.ok += 1;
                record_latency(&mut lock(&self.recorder).latencies, latency);
            } else {
                tally.error(&ack.code().to_string(), 1);
            }
        }
        Ok(())
    }
}

/// The figures of one open-loop run, printed as text or JSON.
struct Report<'a> {
    args: &'a BenchArgs,
    plan: &'a Plan,
    message_bytes: usize,
    total: &'a Tally,
    latency: Percentiles,
    send_lag: Percentiles,
    /// From the first connect to the last connection up (or failed).
    connect_time: Duration,
    /// From the schedule's start to the last ACK (or the last connection's end).
    elapsed: Duration,
}

impl Report<'_> {
    fn print(&self) {
        let total = self.total;
        let errors: u64 = total.errors.values().sum();
        let secs = self.elapsed.as_secs_f64();
        let duration = self.plan.duration().as_secs_f64();
        // Over the measured time, but never less than the schedule's length: its last message
        // is due one interval before the schedule ends, and N messages take N / R seconds.
        let measured = secs.max(duration);
        let achieved = if measured > 0.0 {
            total.ok as f64 / measured
        } else {
            0.0
        };
        let connect_s = self.connect_time.as_secs_f64();
        if self.args.json {
            let line = serde_json::json!({
                "to": self.args.to,
                "connections": self.plan.connections,
                "pipeline": null,
                "messages": self.plan.messages,
                "message_bytes": self.message_bytes,
                "ok": total.ok,
                "errors": errors,
                "error_kinds": total.errors,
                "elapsed_s": secs,
                "throughput_per_s": achieved,
                "latency_us": self.latency.json(),
                "rate": self.plan.rate,
                "achieved_rate_per_s": achieved,
                "duration_s": duration,
                "max_outstanding": self.plan.max_outstanding,
                "max_outstanding_hits": total.outstanding_full,
                "connect_s": connect_s,
                "reconnects": total.reconnects,
                "send_lag_us": {
                    "p50": self.send_lag.p50,
                    "p99": self.send_lag.p99,
                    "max": self.send_lag.max,
                },
            });
            say!("{line}");
        } else {
            let ms = |us: u64| us as f64 / 1000.0;
            say!(
                "bench {} open loop: {} msg/s for {duration:.3} s, {} messages of ~{} bytes over \
                 {} connection(s), at most {} outstanding each",
                self.args.to,
                self.plan.rate,
                self.plan.messages,
                self.message_bytes,
                self.plan.connections,
                self.plan.max_outstanding
            );
            say!(
                "  connected     {} connection(s) in {connect_s:.3} s",
                self.plan.connections
            );
            say!("  acknowledged  {} AA/CA, {} errors", total.ok, errors);
            say!("  elapsed       {secs:.3} s (schedule start to last ACK)");
            say!(
                "  rate          {achieved:.1} msg/s achieved, {} intended",
                self.plan.rate
            );
            say!(
                "  latency       {} (from the intended send time)",
                self.latency.text()
            );
            say!(
                "  send lag      p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (behind the schedule)",
                ms(self.send_lag.p50),
                ms(self.send_lag.p99),
                ms(self.send_lag.max)
            );
            say!(
                "  outstanding   the bound held back {} send(s); {} reconnect(s)",
                total.outstanding_full,
                total.reconnects
            );
            for (kind, n) in &total.errors {
                say!("  error {kind:<12} {n}");
            }
        }
        let _ = std::io::stdout().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rate: u64, messages: u64, connections: u64) -> Plan {
        Plan {
            rate,
            messages,
            connections,
            max_outstanding: 1,
        }
    }

    /// Message k is due at k / R; the last one just before the schedule's length.
    #[test]
    fn schedule_is_evenly_paced() {
        let p = plan(200, 200, 4);
        assert_eq!(p.due(0), Duration::ZERO);
        assert_eq!(p.due(1), Duration::from_millis(5));
        assert_eq!(p.due(199), Duration::from_millis(995));
        assert_eq!(p.duration(), Duration::from_secs(1));
        // 3 per second: not a whole number of nanoseconds, rounded down.
        assert_eq!(plan(3, 3, 1).due(1), Duration::from_nanos(333_333_333));
    }

    /// The shares of the connections add up to the total, the first ones taking the rest.
    #[test]
    fn shares_cover_every_message_once() {
        let p = plan(10, 10, 4);
        let shares: Vec<u64> = (0..4).map(|c| p.share(c)).collect();
        assert_eq!(shares, [3, 3, 2, 2]);
        let p = plan(10, 10_000, 10_000);
        assert!((0..10_000).all(|c| p.share(c) == 1));
    }
}
