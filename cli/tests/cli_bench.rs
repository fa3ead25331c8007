//! `mllp bench --rate`: the open-loop load against `mllp serve` and against in-process
//! receivers that stall or hang up, and its usage errors.
//!
//! Timing assertions here hold by construction (a receiver that holds an ACK back for a
//! stall makes that ACK at least that late), never by how fast the machine happens to be.

#[path = "support/cli.rs"]
mod cli_support;

use cli_support::*;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mllp::frame::MllpCodec;
use mllp::hl7::Message;
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

/// `mllp bench ARGS --json`: its exit code and the JSON object it printed.
async fn bench_json(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = mllp(&all).await;
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON line expected: {stdout}{}",
        text(&out.stderr)
    );
    let v = serde_json::from_str(&stdout).expect("bench prints JSON");
    (out.status.code(), v)
}

/// An AA for `frame`, MSA-2 = its MSH-10.
fn accept(frame: Bytes) -> Bytes {
    let id = Message::parse(frame)
        .ok()
        .and_then(|m| m.control_id().map(str::to_owned))
        .unwrap_or_default();
    Bytes::from(format!(
        "MSH|^~\\&|R|R|S|S|20261122||ACK^A01^ACK|R1|P|2.5\rMSA|AA|{id}\r"
    ))
}

/// What a test receiver does on each connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Holds its first frame for this long (reading nothing meanwhile), then answers it and
    /// every later frame AA at once.
    StallFirst(Duration),
    /// Answers AA, except every n-th frame of a connection, on which it closes the connection.
    HangUpEvery(usize),
}

/// A receiver on a loopback port.
async fn receiver(behaviour: Behaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut framed = Framed::new(stream, MllpCodec::new());
                let mut seen = 0;
                while let Some(Ok(frame)) = framed.next().await {
                    seen += 1;
                    match behaviour {
                        // The stall is the behaviour under test, not a synchronisation.
                        Behaviour::StallFirst(stall) if seen == 1 => {
                            tokio::time::sleep(stall).await;
                        }
                        Behaviour::HangUpEvery(n) if seen % n == 0 => return,
                        _ => {}
                    }
                    if framed.send(accept(frame)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// `--rate 200 --duration 1s` over 4 connections sends exactly 200 messages, all answered by
/// `mllp serve`, and the JSON report carries the open-loop fields; `--messages` sets the
/// length instead of `--duration`; the text report names the open loop and p99.9.
#[tokio::test]
async fn bench_rate_json_reports_open_loop_fields() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &["--no-store"]).await;
    let to = serve.to();
    let args = [
        "--to",
        &to,
        "--rate",
        "200",
        "--duration",
        "1s",
        "--connections",
        "4",
    ];
    let (code, v) = bench_json(&args).await;
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["ok"], 200, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["messages"], 200, "{v}");
    assert_eq!(v["connections"], 4, "{v}");
    assert_eq!(v["rate"], 200, "{v}");
    assert_eq!(v["duration_s"], 1.0, "{v}");
    assert_eq!(v["max_outstanding"], 1024, "{v}");
    assert_eq!(v["reconnects"], 0, "{v}");
    assert!(v["pipeline"].is_null(), "{v}");
    assert!(v["connect_s"].as_f64().unwrap() >= 0.0, "{v}");
    assert!(v["max_outstanding_hits"].as_u64().is_some(), "{v}");
    // The last message is due 0.995 s after the start and elapsed runs to its ACK; the
    // achieved rate counts over the schedule's second at least.
    let elapsed = v["elapsed_s"].as_f64().unwrap();
    assert!(elapsed >= 0.995, "{v}");
    let achieved = v["achieved_rate_per_s"].as_f64().unwrap();
    assert_eq!(achieved, 200.0 / elapsed.max(1.0), "{v}");
    assert_eq!(v["throughput_per_s"], v["achieved_rate_per_s"], "{v}");
    let lat = &v["latency_us"];
    for q in ["p50", "p90", "p99", "p999", "max"] {
        assert!(lat[q].as_u64().unwrap() > 0, "{q}: {v}");
    }
    assert!(lat["p99"].as_u64() <= lat["p999"].as_u64(), "{v}");
    assert!(lat["p999"].as_u64() <= lat["max"].as_u64(), "{v}");
    let lag = &v["send_lag_us"];
    assert!(lag["p50"].as_u64() <= lag["p99"].as_u64(), "{v}");
    assert!(lag["p99"].as_u64() <= lag["max"].as_u64(), "{v}");

    // --messages instead of --duration: 100 messages at 200/s is half a second.
    let (code, v) = bench_json(&[
        "--to",
        &to,
        "--rate",
        "200",
        "--messages",
        "100",
        "--max-outstanding",
        "8",
    ])
    .await;
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["ok"], 100, "{v}");
    assert_eq!(v["duration_s"], 0.5, "{v}");
    assert_eq!(v["connections"], 1, "{v}");
    assert_eq!(v["max_outstanding"], 8, "{v}");

    let out = mllp(&[
        "bench",
        "--to",
        &to,
        "--rate",
        "100",
        "--messages",
        "10",
        "-c",
        "2",
    ])
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("open loop: 100 msg/s"), "{stdout}");
    assert!(
        stdout.contains("acknowledged  10 AA/CA, 0 errors"),
        "{stdout}"
    );
    assert!(stdout.contains("p99.9"), "{stdout}");
    assert!(stdout.contains("send lag"), "{stdout}");
    serve.stop_cleanly().await;
}

/// Flags that contradict the open loop, or a schedule with no message, are usage errors
/// (exit 2) naming the flags, before anything is sent.
#[tokio::test]
async fn bench_rate_rejects_contradicting_flags() {
    let cases: [(&[&str], &[&str]); 6] = [
        (
            &["--rate", "10", "--pipeline", "4"],
            &["--pipeline", "--rate"],
        ),
        (&["--duration", "1s"], &["--duration", "--rate"]),
        (
            &["--max-outstanding", "4"],
            &["--max-outstanding", "--rate"],
        ),
        (
            &["--rate", "10", "--duration", "1s", "--messages", "10"],
            &["--duration", "--messages"],
        ),
        (
            &["--rate", "2", "--duration", "100ms"],
            &["sends no message"],
        ),
        (&["--rate", "0"], &["--rate"]),
    ];
    for (flags, words) in cases {
        let mut args = vec!["bench", "--to", "127.0.0.1:1"];
        args.extend_from_slice(flags);
        let out = mllp(&args).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        for word in words {
            assert!(stderr.contains(word), "{flags:?}: {word} not in {stderr}");
        }
        assert!(out.stdout.is_empty(), "{flags:?}: {}", text(&out.stdout));
    }
}

/// Latency counts from each message's intended send time, not from when it was written: a
/// receiver that holds its first message for 500 ms while 100 msg/s are due makes the 26
/// messages due in the first 250 ms at least 250 ms late each (their ACKs all come after the
/// stall), so p90 of the 100 is at least 250 ms. The writer keeps its schedule meanwhile
/// (the messages wait in the socket buffers), so that holds with pipelining, and it holds
/// too when `--max-outstanding 1` makes the writer wait for each ACK and send late.
#[tokio::test]
async fn bench_rate_latency_counts_from_the_intended_send_time() {
    const STALL_US: u64 = 500_000;
    let addr = receiver(Behaviour::StallFirst(Duration::from_micros(STALL_US))).await;
    let to = addr.to_string();
    for bound in ["1024", "1"] {
        let (code, v) = bench_json(&[
            "--to",
            &to,
            "--rate",
            "100",
            "--duration",
            "1s",
            "--max-outstanding",
            bound,
        ])
        .await;
        assert_eq!(code, Some(0), "--max-outstanding {bound}: {v}");
        assert_eq!(v["ok"], 100, "{v}");
        let lat = &v["latency_us"];
        // The first message was due before the receiver read it and answered after the stall.
        assert!(lat["max"].as_u64().unwrap() >= STALL_US, "{v}");
        assert!(lat["p90"].as_u64().unwrap() >= STALL_US / 2, "{v}");
        if bound == "1024" {
            assert_eq!(v["max_outstanding_hits"], 0, "{v}");
        }
    }
}

/// A receiver that closes the connection on every third message: every message is counted
/// once, as acknowledged or as lost with its connection, the connection is opened again and
/// the schedule goes on, and the exit status is 3 (transport failures).
#[tokio::test]
async fn bench_rate_accounts_for_every_message_when_connections_break() {
    let addr = receiver(Behaviour::HangUpEvery(3)).await;
    let (code, v) = bench_json(&[
        "--to",
        &addr.to_string(),
        "--rate",
        "100",
        "--messages",
        "30",
        "--connections",
        "2",
    ])
    .await;
    assert_eq!(code, Some(3), "{v}");
    let ok = v["ok"].as_u64().unwrap();
    let errors = v["errors"].as_u64().unwrap();
    assert_eq!(ok + errors, 30, "{v}");
    assert!(
        errors >= 2,
        "each connection lost at least its third message: {v}"
    );
    assert!(
        ok >= 4,
        "each connection's first two messages were answered: {v}"
    );
    assert!(v["reconnects"].as_u64().unwrap() >= 2, "{v}");
    let kinds: u64 = v["error_kinds"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(kind, n)| {
            assert!(["closed", "io"].contains(&kind.as_str()), "{v}");
            n.as_u64().unwrap()
        })
        .sum();
    assert_eq!(kinds, errors, "{v}");
}

/// 500 connections sharing 500 msg/s for one second: every connection is opened before the
/// schedule starts, sends its one message, and every message is answered by `mllp serve`.
#[tokio::test]
async fn bench_rate_many_connections_are_all_answered() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &["--no-store"]).await;
    let (code, v) = bench_json(&[
        "--to",
        &serve.to(),
        "--rate",
        "500",
        "--duration",
        "1s",
        "--connections",
        "500",
    ])
    .await;
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["connections"], 500, "{v}");
    assert_eq!(v["ok"], 500, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["reconnects"], 0, "{v}");
    serve.stop_cleanly().await;
}
