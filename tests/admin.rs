//! The admin endpoint over real sockets: status codes and content types of every route, the
//! Prometheus text (checked line by line), the JSON shapes, readiness through a drain and a
//! failing health check, the token, and that no patient data reaches any body.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mllp::admin::{AdminState, Health, PrometheusMetrics};
use mllp::app::{Request, Router};
use mllp::{Server, ServerBuilder, ServerHandle, ServerState};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use support::{Peer, Recorder, SENTINEL, Seen, field, hl7, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

/// An HTTP/1.1 answer: status, content type, body.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// `GET path` with `Connection: close`, optionally with a bearer token.
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Answer {
    let mut stream = within(TcpStream::connect(addr)).await.expect("connect");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    within(stream.read_to_end(&mut raw)).await.unwrap();
    let text = String::from_utf8(raw).expect("utf-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_owned();
    Answer {
        status,
        content_type,
        body: body.to_owned(),
    }
}

/// A server with a Prometheus exporter and an admin endpoint; the endpoint stops once the
/// server has stopped.
struct Admin {
    server: ServerHandle,
    addr: SocketAddr,
    events: mpsc::UnboundedReceiver<Seen>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
    _provider: SdkMeterProvider,
}

async fn admin(builder: ServerBuilder, configure: impl FnOnce(AdminState) -> AdminState) -> Admin {
    let (metrics, reader) = PrometheusMetrics::new().unwrap();
    let provider = SdkMeterProvider::builder().with_reader(reader).build();
    let (recorder, events) = Recorder::new();
    let server = support::start(builder.meter(&provider.meter("mllp")).observer(recorder)).await;
    let state = configure(AdminState::new(server.clone()).metrics(metrics));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stopped = server.clone();
    let served = tokio::spawn(mllp::admin::serve(listener, state, async move {
        let _ = stopped.wait().await;
    }));
    Admin {
        server,
        addr,
        events,
        served,
        _provider: provider,
    }
}

fn accept_all() -> ServerBuilder {
    Server::builder().router(Router::new().route("*", |_: Request| async {}))
}

/// Waits for the observer to see an event matching `want` (the server's own counters and logs
/// are updated before user observers hear of it).
async fn seen(events: &mut mpsc::UnboundedReceiver<Seen>, want: impl Fn(&Seen) -> bool) {
    loop {
        let event = within(events.recv()).await.expect("server alive");
        if want(&event) {
            return;
        }
    }
}

/// A sample: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// One line of the Prometheus text exposition format (0.0.4), checked strictly: a `# HELP` or
/// `# TYPE` comment, or a sample `name{label="value",...} number`.
fn parse_line(line: &str) -> Result<Option<Sample>, String> {
    let is_name = |s: &str| {
        !s.is_empty()
            && s.chars().enumerate().all(|(i, c)| {
                c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
            })
    };
    if let Some(rest) = line.strip_prefix("# HELP ") {
        let name = rest.split(' ').next().unwrap_or_default();
        return is_name(name)
            .then_some(None)
            .ok_or(format!("bad HELP: {line}"));
    }
    if let Some(rest) = line.strip_prefix("# TYPE ") {
        let mut parts = rest.split(' ');
        let (name, kind) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let kinds = ["counter", "gauge", "histogram", "summary", "untyped"];
        return (is_name(name) && kinds.contains(&kind) && parts.next().is_none())
            .then_some(None)
            .ok_or(format!("bad TYPE: {line}"));
    }
    let (series, value) = line.rsplit_once(' ').ok_or(format!("no value: {line}"))?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| format!("bad value: {line}"))?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => {
            let inner = rest
                .strip_suffix('}')
                .ok_or(format!("unclosed labels: {line}"))?;
            let mut labels = Vec::new();
            let mut chars = inner.chars().peekable();
            while chars.peek().is_some() {
                let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                if !is_name(&key) || chars.next() != Some('"') {
                    return Err(format!("bad label in {line}"));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => value.push(chars.next().ok_or("dangling escape")?),
                        Some('"') => break,
                        Some(c) => value.push(c),
                        None => return Err(format!("unterminated label value: {line}")),
                    }
                }
                labels.push((key, value));
                match chars.next() {
                    Some(',') | None => {}
                    Some(c) => return Err(format!("unexpected {c:?} in {line}")),
                }
            }
            (name, labels)
        }
    };
    if !is_name(name) {
        return Err(format!("bad metric name: {line}"));
    }
    Ok(Some((name.to_owned(), labels, value)))
}

/// Every route answers with its status code and content type; `/metrics` is valid text
/// exposition with the server's instruments under their documented names; `/status` and
/// `/connections` have their JSON shape and count what was sent.
#[tokio::test]
async fn every_route_answers_with_its_status_and_content_type() {
    let mut admin = admin(accept_all(), |s| s).await;
    let mut peer = Peer::connect(admin.server.local_addr()).await;
    let ack = peer.call(hl7("ADT^A01", "CTL-1", "2.5")).await;
    assert_eq!(field(&ack, "MSA-1"), "AA");
    seen(&mut admin.events, |e| matches!(e, Seen::MessageStop { .. })).await;

    let health = get(admin.addr, "/healthz", None).await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert_eq!(health.content_type, "text/plain; charset=utf-8");
    let ready = get(admin.addr, "/readyz", None).await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    assert_eq!(get(admin.addr, "/nope", None).await.status, 404);

    let metrics = get(admin.addr, "/metrics", None).await;
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let mut samples = Vec::new();
    for line in metrics.body.lines() {
        if let Some(sample) = parse_line(line).unwrap() {
            samples.push(sample);
        }
    }
    let value = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| *v)
    };
    let ack_labels = [
        ("hl7_message_type", "ADT"),
        ("hl7_trigger_event", "A01"),
        ("hl7_ack_code", "AA"),
        ("otel_scope_name", "mllp"),
    ];
    assert_eq!(value("mllp_server_messages_total", &ack_labels), Some(1.0));
    assert_eq!(
        value("mllp_server_message_duration_seconds_count", &ack_labels),
        Some(1.0)
    );
    assert_eq!(
        value("mllp_server_connections_opened_total", &[]),
        Some(1.0)
    );
    assert_eq!(value("mllp_server_active_connections", &[]), Some(1.0));
    assert!(value("mllp_server_received_bytes_total", &[]).unwrap() > 100.0);
    assert!(value("mllp_server_sent_bytes_total", &[]).unwrap() > 50.0);
    assert!(value("mllp_server_message_size_bytes_bucket", &[("le", "+Inf")]).is_some());

    let status = get(admin.addr, "/status", None).await;
    assert_eq!(
        (status.status, status.content_type.as_str()),
        (200, "application/json")
    );
    let status: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    assert_eq!(status["state"], "running");
    assert_eq!(status["ready"], true);
    assert_eq!(status["listeners"][0]["accepting"], true);
    assert_eq!(
        status["listeners"][0]["address"],
        admin.server.local_addr().to_string()
    );
    assert_eq!(status["connections"]["active"], 1);
    assert_eq!(status["connections"]["max"], 1024);
    assert_eq!(status["messages"]["total"], 1);
    assert_eq!(status["messages"]["ack"]["AA"], 1);
    assert_eq!(status["rejects"]["not_hl7"], 0);
    assert_eq!(status["latency_ms"]["count"], 1);
    assert!(status["latency_ms"]["p99"].as_f64().unwrap() > 0.0);

    let connections = get(admin.addr, "/connections", None).await;
    assert_eq!(connections.status, 200);
    let connections: serde_json::Value = serde_json::from_str(&connections.body).unwrap();
    let connection = &connections["connections"][0];
    assert_eq!(connection["messages"], 1);
    assert_eq!(connection["in_flight"], 0);
    assert_eq!(connection["last_message_type"], "ADT^A01");
    assert_eq!(connection["last_ack_code"], "AA");
    assert_eq!(connection["tls"], false);
    assert!(connection["bytes_in"].as_u64().unwrap() > 100);
    assert!(connection["since"].as_str().unwrap().ends_with('Z'));
    assert!(connection["last_message_at"].is_string());
    let limited = get(admin.addr, "/connections?limit=0", None).await;
    let limited: serde_json::Value = serde_json::from_str(&limited.body).unwrap();
    assert_eq!(limited["connections"].as_array().unwrap().len(), 0);

    drop(peer);
    seen(&mut admin.events, |e| {
        matches!(e, Seen::ConnectionStop { .. })
    })
    .await;
    let connections = get(admin.addr, "/connections", None).await;
    let connections: serde_json::Value = serde_json::from_str(&connections.body).unwrap();
    assert_eq!(connections["connections"].as_array().unwrap().len(), 0);
    assert_eq!(connections["recently_closed"][0]["reason"], "peer_closed");
    assert_eq!(connections["recently_closed"][0]["messages"], 1);

    within(admin.server.shutdown()).await;
    within(admin.served).await.unwrap().unwrap();
}

/// `/connections` sorts and limits on the server: the busiest connection first with
/// `sort=messages&order=desc&limit=1`; an unknown key or order is a 400. `/status` counts the
/// connections without listing them.
#[tokio::test]
async fn connections_sort_and_limit_on_the_server() {
    let mut admin = admin(accept_all(), |s| s).await;
    let mut quiet = Peer::connect(admin.server.local_addr()).await;
    quiet.call(hl7("ADT^A01", "Q-1", "2.5")).await;
    let mut busy = Peer::connect(admin.server.local_addr()).await;
    for i in 0..3 {
        busy.call(hl7("ORU^R01", &format!("B-{i}"), "2.5")).await;
    }
    for _ in 0..4 {
        seen(&mut admin.events, |e| matches!(e, Seen::MessageStop { .. })).await;
    }
    let json = |answer: Answer| -> serde_json::Value {
        assert_eq!(answer.status, 200, "{}", answer.body);
        serde_json::from_str(&answer.body).unwrap()
    };
    let top = json(
        get(
            admin.addr,
            "/connections?sort=messages&order=desc&limit=1",
            None,
        )
        .await,
    );
    let rows = top["connections"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["messages"], 3);
    assert_eq!(rows[0]["last_message_type"], "ORU^R01");
    let by_id = json(get(admin.addr, "/connections?sort=id", None).await);
    assert_eq!(by_id["connections"][0]["messages"], 1);
    assert_eq!(
        get(admin.addr, "/connections?sort=nope", None).await.status,
        400
    );
    assert_eq!(
        get(admin.addr, "/connections?order=up", None).await.status,
        400
    );
    let status = json(get(admin.addr, "/status", None).await);
    assert_eq!(status["connections"]["active"], 2);
    within(admin.server.shutdown()).await;
    within(admin.served).await.unwrap().unwrap();
}

/// With a token, the data routes need `Authorization: Bearer <token>` (401 otherwise, also for
/// a wrong one); the probes stay open.
#[tokio::test]
async fn data_routes_need_the_token_and_probes_do_not() {
    let admin = admin(accept_all(), |s| s.token("s3cret")).await;
    for path in ["/metrics", "/status", "/connections"] {
        assert_eq!(get(admin.addr, path, None).await.status, 401, "{path}");
        assert_eq!(
            get(admin.addr, path, Some("wrong")).await.status,
            401,
            "{path}"
        );
        assert_eq!(
            get(admin.addr, path, Some("s3cret")).await.status,
            200,
            "{path}"
        );
    }
    assert_eq!(get(admin.addr, "/healthz", None).await.status, 200);
    assert_eq!(get(admin.addr, "/readyz", None).await.status, 200);
    within(admin.server.shutdown()).await;
    within(admin.served).await.unwrap().unwrap();
}

/// Readiness follows a pluggable health check (a store that fails and recovers): 503 naming
/// the check while it fails, 200 again once it passes.
#[tokio::test]
async fn readiness_follows_a_failing_health_check() {
    let failing = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&failing);
    let admin = admin(accept_all(), move |s| {
        s.check("store", move || {
            if flag.load(Ordering::SeqCst) {
                Health::unhealthy("sqlite:test.db: last commit failed")
            } else {
                Health::healthy("sqlite:test.db")
            }
        })
    })
    .await;
    assert_eq!(get(admin.addr, "/readyz", None).await.status, 200);
    failing.store(true, Ordering::SeqCst);
    let ready = get(admin.addr, "/readyz", None).await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.body,
        "not ready\nstore: sqlite:test.db: last commit failed\n"
    );
    let status: serde_json::Value =
        serde_json::from_str(&get(admin.addr, "/status", None).await.body).unwrap();
    assert_eq!(status["ready"], false);
    assert_eq!(status["checks"][0]["name"], "store");
    assert_eq!(status["checks"][0]["healthy"], false);
    failing.store(false, Ordering::SeqCst);
    assert_eq!(get(admin.addr, "/readyz", None).await.status, 200);
    within(admin.server.shutdown()).await;
    within(admin.served).await.unwrap().unwrap();
}

/// A degraded check (serving, but needing attention) leaves the server ready and is flagged
/// in `/status`; a healthy one is not flagged.
#[tokio::test]
async fn a_degraded_check_is_flagged_in_status_and_leaves_the_server_ready() {
    let admin = admin(accept_all(), |s| {
        s.check("tls", || {
            Health::degraded("certificate expires in 3 day(s), at 2026-12-10T00:00:00Z")
        })
        .check("store", || Health::healthy("sqlite:test.db"))
    })
    .await;
    assert_eq!(get(admin.addr, "/readyz", None).await.status, 200);
    let status: serde_json::Value =
        serde_json::from_str(&get(admin.addr, "/status", None).await.body).unwrap();
    assert_eq!(status["ready"], true);
    assert_eq!(status["checks"][0]["name"], "tls");
    assert_eq!(status["checks"][0]["healthy"], true);
    assert_eq!(status["checks"][0]["degraded"], true);
    assert_eq!(status["checks"][1]["degraded"], false);
    within(admin.server.shutdown()).await;
    within(admin.served).await.unwrap().unwrap();
}

/// During a drain `/readyz` answers 503 `draining` while `/healthz` stays 200, and the
/// endpoint keeps serving until the server has stopped, then stops too.
#[tokio::test]
async fn readiness_is_false_for_the_whole_drain() {
    let release = Arc::new(Notify::new());
    let hold = Arc::clone(&release);
    let router = Router::new().route("*", move |_: Request| {
        let hold = Arc::clone(&hold);
        async move { hold.notified().await }
    });
    let mut admin = admin(Server::builder().router(router), |s| s).await;
    let mut peer = Peer::connect(admin.server.local_addr()).await;
    peer.send(hl7("ADT^A01", "BUSY-1", "2.5")).await;
    seen(&mut admin.events, |e| {
        matches!(e, Seen::MessageStart { .. })
    })
    .await;

    // The drain begins on the first poll of `shutdown()`; the busy connection holds it open.
    let mut shutdown = Box::pin({
        let server = admin.server.clone();
        async move { server.shutdown().await }
    });
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(shutdown.as_mut().poll(&mut cx).is_pending());
    let drain = tokio::spawn(shutdown);
    assert_eq!(admin.server.state(), ServerState::Draining);

    let ready = get(admin.addr, "/readyz", None).await;
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (503, "not ready\ndraining\n")
    );
    assert_eq!(get(admin.addr, "/healthz", None).await.status, 200);
    let status: serde_json::Value =
        serde_json::from_str(&get(admin.addr, "/status", None).await.body).unwrap();
    assert_eq!(status["state"], "draining");
    assert_eq!(status["listeners"][0]["accepting"], false);

    release.notify_one();
    assert_eq!(field(&within(peer.recv()).await.unwrap(), "MSA-1"), "AA");
    let report = within(drain).await.unwrap();
    assert_eq!(report.drained, 1);
    within(admin.served).await.unwrap().unwrap();
}

/// A message with patient data in PID (and a non-HL7 payload and stray bytes carrying it)
/// leaves no trace of it in any endpoint's body.
#[tokio::test]
async fn no_patient_data_in_any_endpoint() {
    let mut admin = admin(accept_all().log_messages(true).log_rejects(true), |s| s).await;
    let mut peer = Peer::connect(admin.server.local_addr()).await;
    peer.call(hl7("ADT^A01", "PHI-1", "2.5")).await;
    peer.call(format!("NOTHL7 {SENTINEL}").into()).await;
    seen(&mut admin.events, |e| matches!(e, Seen::MessageStop { .. })).await;
    seen(&mut admin.events, |e| matches!(e, Seen::MessageStop { .. })).await;
    let mut stray = Peer::connect(admin.server.local_addr()).await;
    stray.send_raw(SENTINEL.as_bytes()).await;
    stray.expect_closed().await;
    for path in ["/healthz", "/readyz", "/metrics", "/status", "/connections"] {
        let answer = get(admin.addr, path, None).await;
        assert_eq!(answer.status, 200, "{path}");
        assert!(
            !answer.body.contains(SENTINEL),
            "patient data in {path}:\n{}",
            answer.body
        );
    }
    within(admin.server.shutdown()).await;
    within(admin.served).await.unwrap().unwrap();
}

/// The exposure rule of `--admin`: loopback always; anything else only with a token or when
/// public exposure is asked for.
#[test]
fn non_loopback_addresses_need_a_token_or_public() {
    use mllp::admin::check_exposure;
    let local: SocketAddr = "127.0.0.1:9575".parse().unwrap();
    let local6: SocketAddr = "[::1]:9575".parse().unwrap();
    let any: SocketAddr = "0.0.0.0:9575".parse().unwrap();
    assert!(check_exposure(local, false, false).is_ok());
    assert!(check_exposure(local6, false, false).is_ok());
    assert!(check_exposure(any, false, false).is_err());
    assert!(check_exposure(any, true, false).is_ok());
    assert!(check_exposure(any, false, true).is_ok());
}

/// One endpoint for several servers (one per listener): `/status` adds them up and lists each
/// listener by name, `/connections` lists every connection with its listener, and `/readyz`
/// is 503 as soon as one of them drains.
#[tokio::test]
async fn several_servers_are_reported_together() {
    let first = support::start(accept_all()).await;
    let second = support::start(accept_all()).await;
    let state = AdminState::new(first.clone())
        .label("lab")
        .server("radiology", second.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(mllp::admin::serve(listener, state, std::future::pending()));
    let mut a = Peer::connect(first.local_addr()).await;
    a.call(hl7("ADT^A01", "L-1", "2.5")).await;
    let mut b = Peer::connect(second.local_addr()).await;
    b.call(hl7("ORU^R01", "R-1", "2.5")).await;
    b.call(hl7("ORU^R01", "R-2", "2.5")).await;

    let status: serde_json::Value =
        serde_json::from_str(&get(addr, "/status", None).await.body).unwrap();
    assert_eq!(status["state"], "running");
    assert_eq!(status["messages"]["total"], 3);
    assert_eq!(status["messages"]["ack"]["AA"], 3);
    assert_eq!(status["connections"]["active"], 2);
    assert_eq!(status["connections"]["max"], 2048);
    assert_eq!(status["latency_ms"]["count"], 3);
    assert_eq!(status["listeners"][0]["label"], "lab");
    assert_eq!(status["listeners"][1]["label"], "radiology");
    let connections: serde_json::Value = serde_json::from_str(
        &get(addr, "/connections?sort=messages&order=desc", None)
            .await
            .body,
    )
    .unwrap();
    assert_eq!(connections["connections"][0]["listener"], "radiology");
    assert_eq!(connections["connections"][0]["messages"], 2);
    assert_eq!(connections["connections"][1]["listener"], "lab");

    drop(b);
    within(second.shutdown()).await;
    let ready = get(addr, "/readyz", None).await;
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (503, "not ready\nradiology: stopped\n")
    );
    within(first.shutdown()).await;
    served.abort();
}
