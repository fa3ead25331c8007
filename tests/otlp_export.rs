//! `mllp::otel::init` really delivers OTLP/HTTP protobuf exports: a tiny HTTP/1.1 receiver on
//! loopback stands in for the collector.
//!
//! `init` installs process-wide globals (the tracing subscriber, the tracer and meter
//! providers), so this binary holds exactly one test.

mod support;

use std::time::Duration;

use mllp::Server;
use mllp::app::{Request, Router};
use mllp::otel::{Export, LogWriter, OtelOptions};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use support::{Peer, field, hl7, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// One request as the receiver saw it.
#[derive(Debug)]
struct Received {
    path: String,
    content_type: String,
    body: Vec<u8>,
}

/// Largest request body the receiver accepts.
const MAX_BODY: usize = 16 << 20;

/// Accepts connections until the test's runtime ends, answering every request 200.
async fn receive(listener: TcpListener, tx: mpsc::UnboundedSender<Received>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(serve_connection(stream, tx.clone()));
    }
}

/// Reads HTTP/1.1 requests (keep-alive, `content-length` bodies) off one connection.
async fn serve_connection(mut stream: TcpStream, tx: mpsc::UnboundedSender<Received>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > 64 * 1024 || !read_more(&mut stream, &mut buf).await {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|request_line| request_line.split(' ').nth(1))
            .unwrap_or_default()
            .to_owned();
        let mut content_type = String::new();
        let mut length = 0usize;
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-type") {
                    content_type = value.trim().to_owned();
                } else if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(usize::MAX);
                }
            }
        }
        if length > MAX_BODY {
            return;
        }
        while buf.len() < head_end + length {
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        let _ = tx.send(Received {
            path,
            content_type,
            body,
        });
        let reply =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if stream.write_all(reply).await.is_err() {
            return;
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn string_value(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|AnyValue { value }| match value {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

fn int_value(attributes: &[KeyValue], key: &str) -> Option<i64> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|AnyValue { value }| match value {
            Some(any_value::Value::IntValue(i)) => Some(*i),
            _ => None,
        })
}

/// With an endpoint configured, `init` wires OTLP/HTTP: after a message is handled and the
/// guard flushed, the receiver got a protobuf `/v1/traces` export holding the `mllp.message`
/// span (server kind, its HL7 attributes, the service name) and a protobuf `/v1/metrics`
/// export holding the message counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_init_delivers_protobuf_traces_and_metrics_over_http() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(receive(listener, tx));

    // Log lines go to a writer of the test's (`OtelOptions::log_writer`).
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = lines.clone();
    let guard = mllp::otel::init(
        OtelOptions::default()
            .log_writer(LogWriter::new(move |line: &[u8]| {
                sink.lock().expect("lines").extend_from_slice(line);
            }))
            .endpoint(endpoint.clone())
            .service_name("otlp-export-test")
            .metrics_interval(Duration::from_secs(3600)),
    )
    .expect("init");
    assert_eq!(
        guard.export(),
        &Export::Otlp {
            endpoint: Some(endpoint)
        }
    );

    // Built after init: the server records into the global meter provider init installed.
    let router = Router::new().route("*", |_req: Request| async {});
    let server = Server::builder()
        .router(router)
        .log_messages(true)
        .bind("127.0.0.1:0")
        .await
        .expect("bind")
        .spawn()
        .await
        .expect("start");
    let mut peer = Peer::connect(server.local_addr()).await;
    let reply = peer.call(hl7("ADT^A01^ADT_A01", "OTLP-1", "2.5.1")).await;
    assert_eq!(field(&reply, "MSA-1"), "AA");
    drop(peer);
    within(server.shutdown()).await;
    let logged = String::from_utf8(lines.lock().expect("lines").clone()).expect("utf-8");
    let line = logged
        .lines()
        .find(|l| l.contains(" INFO mllp::messages: message "))
        .unwrap_or_else(|| panic!("no message line in the log writer's lines:\n{logged}"));
    assert!(
        line.contains("hl7.control_id=\"OTLP-1\" hl7.ack_code=\"AA\""),
        "{line}"
    );

    // Flushing blocks until the exporters' threads have posted: keep it off the runtime.
    let guard = tokio::task::spawn_blocking(move || {
        guard.force_flush().expect("flush");
        guard
    })
    .await
    .expect("flush task");

    let mut message_span = None;
    let mut messages_metric = false;
    while message_span.is_none() || !messages_metric {
        let received = within(rx.recv()).await.expect("receiver running");
        assert_eq!(
            received.content_type, "application/x-protobuf",
            "{}",
            received.path
        );
        match received.path.as_str() {
            "/v1/traces" => {
                let request =
                    ExportTraceServiceRequest::decode(received.body.as_slice()).expect("protobuf");
                for resource_spans in request.resource_spans {
                    let service = resource_spans
                        .resource
                        .as_ref()
                        .and_then(|r| string_value(&r.attributes, "service.name"));
                    for scope in resource_spans.scope_spans {
                        for span in scope.spans {
                            if span.name == "mllp.message" {
                                message_span = Some((service.clone(), span));
                            }
                        }
                    }
                }
            }
            "/v1/metrics" => {
                let request = ExportMetricsServiceRequest::decode(received.body.as_slice())
                    .expect("protobuf");
                messages_metric |= request
                    .resource_metrics
                    .iter()
                    .flat_map(|r| &r.scope_metrics)
                    .flat_map(|s| &s.metrics)
                    .any(|m| m.name == "mllp.server.messages");
            }
            other => panic!("unexpected export path {other}"),
        }
    }

    let (service, span) = message_span.expect("mllp.message exported");
    assert_eq!(service.as_deref(), Some("otlp-export-test"));
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert!(
        span.parent_span_id.is_empty(),
        "message span is a trace root"
    );
    assert_eq!(span.links.len(), 1, "linked to its connection span");
    assert_eq!(
        string_value(&span.attributes, "hl7.control_id").as_deref(),
        Some("OTLP-1")
    );
    assert_eq!(
        string_value(&span.attributes, "hl7.ack_code").as_deref(),
        Some("AA")
    );
    assert!(int_value(&span.attributes, "mllp.message.size").is_some_and(|n| n > 0));

    tokio::task::spawn_blocking(move || guard.shutdown())
        .await
        .expect("shutdown task")
        .expect("clean provider shutdown");
}
