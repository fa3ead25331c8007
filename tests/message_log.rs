//! The message and reject log lines (`ServerBuilder::log_messages`, `log_rejects`), one per
//! reject kind, read back from a JSON subscriber. Its own test binary: `tracing` caches which
//! call sites are enabled process-wide, and a test running without a subscriber on another
//! thread would race with the scoped subscriber of this one.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use mllp::Server;
use mllp::app::{Request, Router};
use support::{Peer, Recorder, SENTINEL, Seen, field, hl7, within};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Waits for the observer to see an event matching `want` (the log lines of an event are
/// written before user observers hear of it).
async fn seen(events: &mut mpsc::UnboundedReceiver<Seen>, want: impl Fn(&Seen) -> bool) {
    loop {
        let event = within(events.recv()).await.expect("server alive");
        if want(&event) {
            return;
        }
    }
}

/// A log sink for the tracing subscriber of one test (a current-thread runtime, so every task
/// of the server logs into it).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let sink = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn lines(&self) -> Vec<serde_json::Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// The lines of one target.
    fn of(&self, target: &str) -> Vec<serde_json::Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["target"] == target)
            .collect()
    }
}

/// One INFO line per message (MSH-9, MSH-10, ACK code, latency, store id), one WARN line per
/// reject, with its reason, connection, ERR-3 code and the offending byte's offset, for each
/// kind: not HL7, a missing MSH-10, bytes outside a frame, an oversize frame, a stream cut
/// inside a frame. Never the payload.
#[tokio::test]
async fn message_and_reject_lines_name_reason_connection_and_offset() {
    let logs = Logs::default();
    let _guard = logs.install();
    let router = Router::new().route("*", |req: Request| async move {
        req.set_store_id("row-42");
    });
    let builder = Server::builder()
        .router(router)
        .max_message_size(4096)
        .log_messages(true)
        .log_rejects(true);
    let (recorder, mut events) = Recorder::new();
    let server = support::start(builder.observer(recorder)).await;
    let addr = server.local_addr();

    // An accepted message, and a message without MSH-10, on one connection.
    let mut peer = Peer::connect(addr).await;
    assert_eq!(
        field(&peer.call(hl7("ADT^A01", "OK-1", "2.5")).await, "MSA-1"),
        "AA"
    );
    let no_id = format!("MSH|^~\\&|A|B|C|D|20261122||ORU^R01||P|2.5\rPID|1||X||{SENTINEL}\r");
    assert_eq!(field(&peer.call(no_id.clone().into()).await, "MSA-1"), "AR");
    // Not HL7: line feeds between segments.
    let lf = format!("MSH|^~\\&|A|B|C|D|20261122||ADT^A01|LF-1|P|2.5\nPID|1||{SENTINEL}\n");
    assert_eq!(field(&peer.call(lf.clone().into()).await, "MSA-1"), "AR");
    drop(peer);
    seen(&mut events, |e| matches!(e, Seen::ConnectionStop { .. })).await;

    // Bytes outside a frame, after one good frame (offset in the stream).
    let mut peer = Peer::connect(addr).await;
    assert_eq!(
        field(&peer.call(hl7("ADT^A01", "OK-2", "2.5")).await, "MSA-1"),
        "AA"
    );
    let first_frame = hl7("ADT^A01", "OK-2", "2.5").len() as i64 + 3;
    peer.send_raw(format!("X{SENTINEL}").as_bytes()).await;
    peer.expect_closed().await;
    seen(&mut events, |e| matches!(e, Seen::ConnectionStop { .. })).await;

    // A frame over max_message_size.
    let mut peer = Peer::connect(addr).await;
    let mut big = vec![0x0b];
    big.extend(std::iter::repeat_n(b'A', 5000));
    peer.send_raw(&big).await;
    peer.expect_closed().await;
    seen(&mut events, |e| matches!(e, Seen::ConnectionStop { .. })).await;

    // A stream cut inside a frame.
    let mut peer = Peer::connect(addr).await;
    peer.send_raw(format!("\x0bMSH|^~\\&|{SENTINEL}").as_bytes())
        .await;
    peer.framed.get_mut().shutdown().await.unwrap();
    peer.expect_closed().await;
    seen(&mut events, |e| matches!(e, Seen::ConnectionStop { .. })).await;

    let messages = logs.of("mllp::messages");
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert_eq!(messages[0]["level"], "INFO");
    assert_eq!(messages[0]["hl7.message_type"], "ADT");
    assert_eq!(messages[0]["hl7.trigger_event"], "A01");
    assert_eq!(messages[0]["hl7.control_id"], "OK-1");
    assert_eq!(messages[0]["hl7.ack_code"], "AA");
    assert_eq!(messages[0]["store.id"], "row-42");
    assert!(messages[0]["latency_ms"].as_f64().unwrap() >= 0.0);

    let rejects = logs.of("mllp::rejects");
    let reasons: Vec<_> = rejects.iter().map(|r| r["reject.reason"].clone()).collect();
    assert_eq!(
        reasons,
        [
            "missing_msh_field",
            "not_hl7",
            "framing",
            "oversize",
            "truncated"
        ],
        "{rejects:#?}"
    );
    for reject in &rejects {
        assert_eq!(reject["level"], "WARN");
        assert!(reject["connection.id"].as_i64().unwrap() > 0);
        assert_eq!(reject["network.peer.address"], "127.0.0.1");
    }
    let missing = &rejects[0];
    assert_eq!(missing["reject.field"], "MSH-10");
    assert_eq!(missing["reject.code"], "101");
    assert_eq!(
        missing["reject.offset"],
        no_id.find("||P").unwrap() as i64 + 1
    );
    let not_hl7 = &rejects[1];
    assert_eq!(not_hl7["reject.code"], "100");
    assert_eq!(not_hl7["reject.offset"], lf.find('\n').unwrap() as i64);
    assert_eq!(rejects[2]["reject.offset"], first_frame);
    assert_eq!(rejects[3]["reject.offset"], 4097);
    assert!(rejects[4]["reject.offset"].as_i64().unwrap() > 10);

    let text = logs.text();
    assert!(
        !text.contains(SENTINEL),
        "patient data in a log line:\n{text}"
    );
    within(server.shutdown()).await;
}

/// Serves `router` with the message and reject lines on, and hands back its events.
async fn logging(router: Router) -> (mllp::ServerHandle, mpsc::UnboundedReceiver<Seen>) {
    let builder = Server::builder()
        .router(router)
        .log_messages(true)
        .log_rejects(true);
    let (recorder, events) = Recorder::new();
    (support::start(builder.observer(recorder)).await, events)
}

/// Sends a batch and reads its (batch) acknowledgment, which is not one message.
async fn send_batch(peer: &mut Peer, batch: String) {
    peer.send(batch.into()).await;
    within(futures_util::StreamExt::next(&mut peer.framed))
        .await
        .unwrap()
        .unwrap();
}

/// A batch is logged as its messages: a line for each (its MSH-9, MSH-10, ACK code and store
/// id), a reject line for one refused inside it, and the snapshot counts them the same way. A
/// malformed envelope is one reject line of its own reason, `batch`, naming the fault; neither
/// is a "not HL7" reject (the batch's first segment is not MSH, but it was never meant to be).
#[tokio::test]
async fn a_batch_is_logged_and_counted_as_its_messages() {
    let logs = Logs::default();
    let _guard = logs.install();
    let router = Router::new().route("*", |req: Request| async move {
        let id = format!("row-{}", req.message().control_id().unwrap_or_default());
        req.set_store_id(id);
    });
    let (server, mut events) = logging(router).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let batch = format!(
        "BHS|^~\\&|LAB|HOSP|EHR|WARD|20260101120000||||B1\r\
         MSH|^~\\&|LAB|HOSP|EHR|WARD|20260101120000||ORU^R01^ORU_R01|BX-1|P|2.5\r\
         PID|1||X||{SENTINEL}\r\
         MSH|^~\\&|LAB|HOSP|EHR|WARD|20260101120000||ORU^R01^ORU_R01||P|2.5\r\
         PID|1||X||{SENTINEL}\r\
         MSH|^~\\&|LAB|HOSP|EHR|WARD|20260101120000||ADT^A08^ADT_A01|BX-3|P|2.5\r\
         BTS|3\r"
    );
    send_batch(&mut peer, batch).await;
    let bad = format!(
        "BHS|^~\\&|LAB|HOSP|EHR|WARD|20260101120000||||B2\r\
         MSH|^~\\&|LAB|HOSP|EHR|WARD|20260101120000||ORU^R01^ORU_R01|BAD-1|P|2.5\r\
         PID|1||X||{SENTINEL}\r\
         BTS|5\r"
    );
    assert_eq!(field(&peer.call(bad.into()).await, "MSA-1"), "AR");
    drop(peer);
    seen(&mut events, |e| matches!(e, Seen::ConnectionStop { .. })).await;

    let messages = logs.of("mllp::messages");
    let logged: Vec<_> = messages
        .iter()
        .map(|m| {
            (
                m["hl7.control_id"].as_str().unwrap_or_default().to_owned(),
                m["hl7.message_type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                m["hl7.ack_code"].as_str().unwrap_or_default().to_owned(),
                m["store.id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let row = |id: &str, code: &str| {
        (
            id.to_owned(),
            code.to_owned(),
            "AA".to_owned(),
            format!("row-{id}"),
        )
    };
    assert_eq!(
        logged,
        [row("BX-1", "ORU"), row("BX-3", "ADT")],
        "{messages:#?}"
    );
    let rejects = logs.of("mllp::rejects");
    let reasons: Vec<_> = rejects.iter().map(|r| r["reject.reason"].clone()).collect();
    assert_eq!(reasons, ["missing_msh_field", "batch"], "{rejects:#?}");
    assert_eq!(rejects[0]["reject.field"], "MSH-10");
    assert!(
        rejects[1]["reject.detail"]
            .as_str()
            .is_some_and(|d| d.contains("BTS-1")),
        "{rejects:#?}"
    );
    assert!(rejects[1]["reject.offset"].is_null(), "{rejects:#?}");

    let counts = within(server.snapshot()).await.totals;
    assert_eq!(counts.messages, 4);
    assert_eq!(counts.acks.aa, 2);
    assert_eq!(
        counts.acks.ar, 2,
        "the message without MSH-10, and the bad batch"
    );
    assert_eq!(counts.rejects.missing_msh_field, 1);
    assert_eq!(counts.rejects.batch, 1);
    assert_eq!(counts.rejects.not_hl7, 0);
    assert!(!logs.text().contains(SENTINEL));
    within(server.shutdown()).await;
}

/// A batch of many tiny messages: the first are logged one by one (16 here, for a batch of
/// under 4 KiB: one per 256 bytes, at least 16), one line counts the rest, and the snapshot
/// counts every answer. What the observers hold stays near the batch's own size.
#[tokio::test]
async fn a_batch_of_many_tiny_messages_is_logged_in_part_and_counted_whole() {
    let logs = Logs::default();
    let _guard = logs.install();
    let router = Router::new().route("*", |_req: Request| async {});
    let (server, mut events) = logging(router).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let mut batch = String::from("BHS|^~\\&|A|B|C|D|20260101||||T1\r");
    for n in 0..40 {
        batch.push_str(&format!("MSH|^~\\&|A|B|C|D|20260101||ADT^A01|T{n}|P|2.5\r"));
    }
    batch.push_str("BTS|40\r");
    assert!(batch.len() < 4096);
    send_batch(&mut peer, batch).await;
    drop(peer);
    seen(&mut events, |e| matches!(e, Seen::ConnectionStop { .. })).await;

    let messages = logs.of("mllp::messages");
    let ids: Vec<_> = messages
        .iter()
        .filter_map(|m| m["hl7.control_id"].as_str())
        .collect();
    let first: Vec<String> = (0..16).map(|n| format!("T{n}")).collect();
    assert_eq!(ids, first, "{messages:#?}");
    assert_eq!(messages.last().unwrap()["hl7.batch.unlogged"], 24);
    let counts = within(server.snapshot()).await.totals;
    assert_eq!((counts.messages, counts.acks.aa), (40, 40));
    within(server.shutdown()).await;
}

impl Logs {
    /// A text subscriber as `mllp serve` installs it (`TextFormat`, no colours), with `filter`.
    fn install_text(&self, filter: &str) -> tracing::subscriber::DefaultGuard {
        let sink = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .fmt_fields(mllp::telemetry::TextFields)
            .event_format(mllp::telemetry::TextFormat::new())
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// The `mllp::messages` lines, with the timestamp, the connection id and the latency
    /// (which differ from one message to the next) masked.
    fn message_lines(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(" mllp::messages: "))
            .map(|l| {
                let (stamp, rest) = l.split_at(27);
                assert!(stamp.ends_with('Z'), "{l}");
                let (head, latency) = rest.split_once(" latency_ms=").unwrap();
                let after = latency.split_once(' ').map_or("", |(_, a)| a);
                let (before, id) = head.split_once(" connection.id=").unwrap();
                let id_rest = id.split_once(' ').map_or("", |(_, r)| r);
                format!("TS{before} connection.id=C {id_rest} latency_ms=L {after}")
            })
            .collect()
    }
}

/// One message through a server with `log_messages`, logging into `logs` (a text subscriber
/// with `filter`) and, when `direct` is given, with `message_lines_to` writing there too.
async fn one_message(
    logs: &Logs,
    filter: &str,
    direct: Option<&Logs>,
    control_id: &str,
) -> mllp::hl7::Message {
    let _guard = logs.install_text(filter);
    let router = Router::new().route("*", |req: Request| async move {
        req.set_store_id("row-7");
    });
    let mut builder = Server::builder().router(router).log_messages(true);
    if let Some(direct) = direct {
        let sink = direct.clone();
        builder = builder.message_lines_to(Arc::new(move |line: &[u8]| {
            sink.0.lock().unwrap().extend_from_slice(line);
        }));
    }
    let (recorder, mut events) = Recorder::new();
    let server = support::start(builder.observer(recorder)).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let ack = peer.call(hl7("ADT^A01", control_id, "2.5")).await;
    assert_eq!(field(&ack, "MSA-1"), "AA");
    seen(&mut events, |e| matches!(e, Seen::MessageStop { .. })).await;
    drop(peer);
    within(server.shutdown()).await;
    ack
}

/// A control id far longer than MSH-10 allows (100,000 bytes) is echoed whole in MSA-2, but
/// the message line carries its first 199 bytes and a `…`, through `tracing` and straight to
/// the sink alike: one message cannot put its whole size into every line about it.
#[tokio::test]
async fn an_overlong_control_id_is_cut_in_the_log_line_not_in_the_ack() {
    let long = "L".repeat(100_000);
    let cut = format!("hl7.control_id=\"{}…\"", "L".repeat(199));
    for direct in [false, true] {
        let logs = Logs::default();
        let sink = Logs::default();
        let ack = one_message(&logs, "info", direct.then_some(&sink), &long).await;
        assert_eq!(field(&ack, "MSA-2"), long);
        let lines = if direct { &sink } else { &logs }.message_lines();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains(&cut), "{}", &lines[0][..400]);
        assert!(lines[0].len() < 1000, "{} bytes", lines[0].len());
    }
}

/// `message_lines_to` writes the line the text format writes for the event, byte for byte
/// (timestamp and latency aside), and nothing through `tracing`; a control id the text format
/// would escape still goes through `tracing`; a filter that leaves `mllp::messages` out stops
/// the line on both paths.
#[tokio::test]
async fn message_lines_to_writes_the_text_formats_line_and_follows_the_filter() {
    let through_tracing = Logs::default();
    one_message(&through_tracing, "info", None, "LINE-1").await;
    let expected = through_tracing.message_lines();
    assert_eq!(expected.len(), 1, "{}", through_tracing.text());
    assert!(
        expected[0].contains(r#"hl7.control_id="LINE-1""#),
        "{}",
        expected[0]
    );
    assert!(
        expected[0].ends_with(r#"store.id="row-7""#),
        "{}",
        expected[0]
    );

    let logs = Logs::default();
    let direct = Logs::default();
    one_message(&logs, "info", Some(&direct), "LINE-1").await;
    assert_eq!(direct.message_lines(), expected);
    assert!(direct.text().ends_with('\n'));
    assert!(logs.message_lines().is_empty(), "{}", logs.text());

    // A quote in MSH-10: escaped by the text format, so written through `tracing`.
    let logs = Logs::default();
    let direct = Logs::default();
    one_message(&logs, "info", Some(&direct), "Q\"1").await;
    assert!(direct.text().is_empty(), "{}", direct.text());
    let lines = logs.message_lines();
    assert_eq!(lines.len(), 1, "{}", logs.text());
    assert!(
        lines[0].contains(r#"hl7.control_id="Q\"1""#),
        "{}",
        lines[0]
    );

    // `mllp::messages` filtered out: no line anywhere.
    let logs = Logs::default();
    let direct = Logs::default();
    one_message(&logs, "info,mllp::messages=off", Some(&direct), "LINE-2").await;
    assert!(direct.text().is_empty(), "{}", direct.text());
    assert!(logs.message_lines().is_empty(), "{}", logs.text());
}

/// An address the allow-list does not admit is refused with a WARN line that names the peer
/// and the reason (an operator whose partner cannot connect sees why), not silently.
#[tokio::test]
async fn a_peer_outside_the_allow_list_is_refused_with_a_warning() {
    let logs = Logs::default();
    let _guard = logs.install();
    let (recorder, mut events) = Recorder::new();
    let server = support::start(
        Server::builder()
            .router(Router::new().route("*", |_req: Request| async {}))
            .observer(recorder)
            .transport(mllp::tls::Admitted::new(
                mllp::server::PlainTcp,
                mllp::tls::Admission::allow_list(["10.0.0.0/8"]).unwrap(),
            )),
    )
    .await;
    let mut peer = Peer::connect(server.local_addr()).await;
    peer.expect_closed().await;
    seen(&mut events, |s| *s == Seen::ConnectionRefused).await;
    let refusals = logs.of("mllp_actors::peers");
    assert_eq!(refusals.len(), 1, "{}", logs.text());
    assert_eq!(refusals[0]["level"], "WARN");
    assert_eq!(refusals[0]["network.peer.address"], "127.0.0.1");
    let message = refusals[0]["message"].as_str().unwrap();
    assert!(
        message.contains("not among the admitted"),
        "the reason is given: {message}"
    );
    within(server.shutdown()).await;
}
