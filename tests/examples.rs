//! The examples run, and do what their doc comments say.
//!
//! Each receiver example is started as a process of its own on a free loopback port
//! (`MLLP_ADDR=127.0.0.1:0`, in a temporary directory), sent the messages its doc comment
//! suggests, checked for the answers it promises, then stopped with SIGTERM, which must drain it
//! to a clean exit (status 0). `observer` runs its own script to the end. Not here:
//! `lab_service` (`test = true`: `cargo test` runs its self-test) and `scale_out_check` (it needs
//! NATS and a balancer: `deploy/scale-out/run.sh check`).
//!
//! The binaries are those `cargo test` builds beside this test (`target/<profile>/examples/`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use bytes::Bytes;
use mllp::ack::AckCode;
use mllp::{Client, ClientError};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use support::{sigterm, within};

/// The example's binary, next to this test's.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/examples-<hash> -> target/<profile>/examples/<name>
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let path = profile.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples before it runs the tests \
         (`cargo test --test examples` alone does not; add `--examples`, or build them first \
         with `cargo build --examples`)",
        path.display()
    );
    path
}

/// Where an example says where it listens.
#[derive(Clone, Copy, PartialEq)]
enum Says {
    /// `listening on ADDR` on stdout.
    Stdout,
    /// A `tracing` line `... listening addr=ADDR` on stderr (the `otel` example, whose stdout
    /// carries its telemetry).
    Stderr,
}

/// A running example: its process, the output it says its address on (read up to that line),
/// and the address.
struct Running {
    child: Child,
    output: BufReader<Box<dyn AsyncRead + Unpin + Send>>,
    seen: String,
    addr: String,
}

impl Running {
    /// Starts `name` in `dir` and reads the output it `says` its address on until it does.
    async fn start(name: &str, dir: &Path, says: Says) -> Running {
        let (stdout, stderr) = match says {
            Says::Stdout => (Stdio::piped(), Stdio::null()),
            Says::Stderr => (Stdio::null(), Stdio::piped()),
        };
        let mut child = Command::new(binary(name))
            .env("MLLP_ADDR", "127.0.0.1:0")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("RUST_LOG")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("start the example");
        let output: Box<dyn AsyncRead + Unpin + Send> = match says {
            Says::Stdout => Box::new(child.stdout.take().expect("piped stdout")),
            Says::Stderr => Box::new(child.stderr.take().expect("piped stderr")),
        };
        let mut stdout = BufReader::new(output);
        let mut seen = String::new();
        let addr = within(async {
            loop {
                let mut line = String::new();
                let n = stdout.read_line(&mut line).await.expect("read stdout");
                assert!(n > 0, "{name} exited before listening; its output:\n{seen}");
                seen.push_str(&line);
                if let Some(addr) = listening_address(&line) {
                    return addr;
                }
            }
        })
        .await;
        Running {
            child,
            output: stdout,
            seen,
            addr,
        }
    }

    fn client(&self) -> Client {
        Client::new(self.addr.clone())
    }

    /// SIGTERM, then the exit status and everything it wrote on the output it said its address
    /// on.
    async fn stop(self) -> (ExitStatus, String) {
        sigterm(self.child.id().expect("still running"));
        self.finish().await
    }

    /// Waits for the exit; the exit status and everything it wrote on that output.
    async fn finish(mut self) -> (ExitStatus, String) {
        let mut rest = String::new();
        within(self.output.read_to_string(&mut rest))
            .await
            .expect("read stdout");
        let status = within(self.child.wait()).await.expect("wait");
        (status, self.seen + &rest)
    }
}

/// The address in `listening on 127.0.0.1:PORT` or in `... listening addr=127.0.0.1:PORT`.
fn listening_address(line: &str) -> Option<String> {
    let rest = line
        .split_once("listening on ")
        .or_else(|| {
            line.contains("listening")
                .then(|| line.split_once("addr="))?
        })?
        .1;
    Some(rest.split_whitespace().next()?.to_owned())
}

fn fixture(path: &str) -> Bytes {
    let text = std::fs::read(Path::new("tests/fixtures").join(path)).expect("fixture");
    // Files end segments with CR LF or LF; the wire wants CR.
    let text = String::from_utf8_lossy(&text)
        .replace("\r\n", "\r")
        .replace('\n', "\r");
    Bytes::from(text)
}

/// An original-mode message (no MSH-15: always acknowledged) of `kind`, with a PID.
fn message(kind: &str, control_id: &str) -> Bytes {
    Bytes::from(format!(
        "MSH|^~\\&|SENDER|FACILITY|RECEIVER|HOSP|20260101120000||{kind}|{control_id}|P|2.5\r\
         PID|1||123\r"
    ))
}

async fn accepted(client: &mut Client, message: Bytes) -> AckCode {
    match within(client.send(message)).await {
        Ok(Some(ack)) => ack.code(),
        other => panic!("expected an acknowledgment, got {other:?}"),
    }
}

async fn refused(client: &mut Client, message: Bytes) -> AckCode {
    match within(client.send(message)).await {
        Err(ClientError::Negative { code, .. }) => code,
        other => panic!("expected a negative acknowledgment, got {other:?}"),
    }
}

/// `echo` accepts everything: CA for `adt_a01.hl7` (MSH-15 `AL`), AA for any other message.
#[tokio::test]
async fn echo_example_accepts_every_message_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let example = Running::start("echo", dir.path(), Says::Stdout).await;
    let mut client = example.client();
    assert_eq!(
        accepted(&mut client, fixture("adt_a01.hl7")).await,
        AckCode::CA
    );
    assert_eq!(
        accepted(&mut client, message("ORU^R01", "E-2")).await,
        AckCode::AA
    );
    client.close().await;
    let (status, out) = example.stop().await;
    assert!(status.success(), "{status}: {out}");
    assert!(
        out.contains("received Some(\"ADT20240315083012001\")") && out.contains("\"E-2\""),
        "{out}"
    );
}

/// `adt_router`: ADT is accepted, a type without a route is refused (AR), and a message without
/// MSH-4 is refused by the validation middleware before any handler.
#[tokio::test]
async fn adt_router_example_accepts_adt_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let example = Running::start("adt_router", dir.path(), Says::Stdout).await;
    assert!(example.seen.contains("route ADT^A01"), "{}", example.seen);
    let mut client = example.client();
    assert_eq!(
        accepted(&mut client, fixture("adt_a01.hl7")).await,
        AckCode::CA
    );
    assert_eq!(
        accepted(&mut client, message("ADT^A03", "R-1")).await,
        AckCode::AA
    );
    assert_eq!(
        refused(&mut client, message("ORU^R01", "R-2")).await,
        AckCode::AR
    );
    let no_facility = Bytes::from(
        "MSH|^~\\&|SENDER||RECEIVER|HOSP|20260101120000||ADT^A01|R-3|P|2.5\rPID|1||123\r",
    );
    assert_eq!(refused(&mut client, no_facility).await, AckCode::AR);
    client.close().await;
    let (status, out) = example.stop().await;
    assert!(status.success(), "{status}: {out}");
    // Drained 0 or 1: the client's close may reach the server before or after the signal.
    assert!(
        out.contains("drained ") && out.contains(", aborted 0"),
        "{out}"
    );
}

/// `durable`: the first copy is stored (the handler prints its store id), the resend is
/// acknowledged without reaching the handler, and the store file is where the doc says.
#[tokio::test]
async fn durable_example_stores_once_and_acknowledges_the_resend() {
    let dir = tempfile::tempdir().unwrap();
    let example = Running::start("durable", dir.path(), Says::Stdout).await;
    let mut client = example.client();
    for _ in 0..2 {
        assert_eq!(
            accepted(&mut client, fixture("adt_a01.hl7")).await,
            AckCode::CA
        );
    }
    client.close().await;
    let (status, out) = example.stop().await;
    assert!(status.success(), "{status}: {out}");
    assert_eq!(out.matches("stored as ").count(), 1, "{out}");
    assert!(out.contains("stored as 1"), "{out}");
    let stored = mllp::store::sqlite::SqliteReader::open(dir.path().join("durable-example.db"))
        .unwrap()
        .list(&mllp::store::sqlite::Filter::default())
        .unwrap();
    assert_eq!(stored.len(), 1);
}

/// `embed`: the receiver hands each control id to the service's own task, and on SIGTERM both
/// stop together, the receiver drained first.
#[tokio::test]
async fn embed_example_hands_messages_to_its_task_and_stops_together() {
    let dir = tempfile::tempdir().unwrap();
    let example = Running::start("embed", dir.path(), Says::Stdout).await;
    let mut client = example.client();
    assert_eq!(
        accepted(&mut client, message("ADT^A01", "EMB-1")).await,
        AckCode::AA
    );
    client.close().await;
    let (status, out) = example.stop().await;
    assert!(status.success(), "{status}: {out}");
    let (signal, stored) = (
        out.find("signal received, draining").expect(&out),
        out.find("stored EMB-1").expect(&out),
    );
    assert!(out.contains("receiver drained"), "{out}");
    // The id may be printed before or after the signal; the drain report comes after both.
    assert!(
        out.find("receiver drained").unwrap() > signal.max(stored),
        "{out}"
    );
}

/// `query_response`: a QBP^Q22 is answered with the handler's RSP^K22 (MSA-1 AA), and other
/// messages with the automatic ACK.
#[tokio::test]
async fn query_response_example_answers_a_query_with_its_response() {
    let dir = tempfile::tempdir().unwrap();
    let example = Running::start("query_response", dir.path(), Says::Stdout).await;
    let mut client = example.client();
    let answer = match within(client.send(fixture("partner/qbp_q22.hl7"))).await {
        Ok(Some(ack)) => ack,
        other => panic!("expected the RSP, got {other:?}"),
    };
    assert_eq!(answer.code(), AckCode::AA);
    assert_eq!(answer.message().message_code(), Some("RSP"));
    assert_eq!(answer.message().trigger_event(), Some("K22"));
    assert!(answer.message().segment("QAK").is_some());
    assert_eq!(
        accepted(&mut client, message("ADT^A01", "Q-2")).await,
        AckCode::AA
    );
    client.close().await;
    let (status, out) = example.stop().await;
    assert!(status.success(), "{status}: {out}");
}

/// `otel` without an OTLP endpoint: serves (ADT accepted, ORU answered AE by its handler) and
/// drains on SIGTERM, its traces and metrics going to stdout.
#[tokio::test]
async fn otel_example_serves_without_an_endpoint_and_drains() {
    let dir = tempfile::tempdir().unwrap();
    let example = Running::start("otel", dir.path(), Says::Stderr).await;
    let mut client = example.client();
    assert_eq!(
        accepted(&mut client, message("ADT^A01", "O-1")).await,
        AckCode::AA
    );
    assert_eq!(
        refused(&mut client, message("ORU^R01", "O-2")).await,
        AckCode::AE
    );
    client.close().await;
    let (status, out) = example.stop().await;
    assert!(status.success(), "{status}: {out}");
}

/// `observer` runs its script against itself and reports what the observer counted.
#[tokio::test]
async fn observer_example_runs_its_script_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(binary("observer"))
        .env_remove("RUST_LOG")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = within(child).await.expect("run the example");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}: {out}", output.status);
    assert!(out.contains("ADT^A01: accepted"), "{out}");
    assert!(out.contains("drained"), "{out}");
}

/// The examples register their SIGTERM handlers before they announce their address, so a
/// SIGTERM sent the moment the address is out drains them (status 0) instead of ending them by
/// the signal's default action.
#[tokio::test]
async fn examples_drain_on_a_sigterm_the_moment_they_announce_their_address() {
    for name in ["echo", "adt_router", "durable", "embed", "query_response"] {
        let dir = tempfile::tempdir().unwrap();
        let example = Running::start(name, dir.path(), Says::Stdout).await;
        let (status, out) = example.stop().await;
        assert!(status.success(), "{name}: {status}: {out}");
    }
    let dir = tempfile::tempdir().unwrap();
    let example = Running::start("otel", dir.path(), Says::Stderr).await;
    let (status, out) = example.stop().await;
    assert!(status.success(), "otel: {status}: {out}");
}
