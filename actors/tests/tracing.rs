//! What the runtime puts into `tracing`: spans, fields, levels, and never a request's contents.
//! Alone in its test binary: a scoped subscriber must not race other tests for callsite
//! interest.

mod support;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mllp_actors::ServerConfig;
use support::TestServer;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Metadata, Subscriber};

/// The connection span gets `close_reason` (a string) and `messages` (an i64) at close; open
/// and close are `info` events; a failed handler is a `warn` inside its message span; nothing
/// in any span or event carries a request's contents.
#[tokio::test]
async fn tracing_records_close_and_never_payloads() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());

    let server = TestServer::start(ServerConfig::default()).await;
    let (mut client, id) = server.connect_registered().await;
    assert_eq!(
        client.request("echo-secret-payload").await,
        "echo-secret-payload"
    );
    assert_eq!(client.request("panic secret-arg").await, "failed: panic");
    drop(client);
    server.recorder.stop_of(id).await;
    server.shutdown().await;

    let spans = capture.spans.lock().unwrap().clone();
    let connection = spans
        .values()
        .find(|s| s.name == "test.connection")
        .expect("connection span");
    assert_eq!(connection.fields["close_reason"], "str:peer_closed");
    assert_eq!(connection.fields["messages"], "i64:2");
    let message_spans = spans.values().filter(|s| s.name == "message").count();
    assert_eq!(message_spans, 2);

    let events = capture.events.lock().unwrap().clone();
    let find = |message: &str| {
        events
            .iter()
            .find(|e| e.fields.get("message").is_some_and(|m| m.contains(message)))
            .unwrap_or_else(|| panic!("no {message:?} event in {events:#?}"))
            .clone()
    };
    assert_eq!(find("connection accepted").level, Level::INFO);
    let closed = find("connection closed");
    assert_eq!(closed.level, Level::INFO);
    assert_eq!(closed.fields["close_reason"], "str:peer_closed");
    let failed = find("handler failed");
    assert_eq!(failed.level, Level::WARN);
    assert_eq!(failed.fields["failure.kind"], "str:panic");
    assert_eq!(failed.span.as_deref(), Some("message"));
    assert!(
        !events
            .iter()
            .any(|e| e.level == Level::ERROR && e.target.starts_with("mllp_actors")),
        "error events without a listener failure"
    );

    for text in spans
        .values()
        .flat_map(|s| s.fields.values())
        .chain(events.iter().flat_map(|e| e.fields.values()))
    {
        assert!(
            !text.contains("secret"),
            "payload leaked into telemetry: {text}"
        );
    }
}

// ===== a minimal capturing subscriber =====

#[derive(Debug, Clone)]
struct SpanRec {
    name: &'static str,
    fields: HashMap<String, String>,
}

#[derive(Debug, Clone)]
struct EventRec {
    level: Level,
    target: String,
    span: Option<String>,
    fields: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Capture {
    next: Arc<AtomicU64>,
    spans: Arc<Mutex<HashMap<u64, SpanRec>>>,
    events: Arc<Mutex<Vec<EventRec>>>,
}

thread_local! {
    static CURRENT: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), format!("i64:{value}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), format!("u64:{value}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), format!("str:{value}"));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _metadata: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.spans.lock().unwrap().insert(
            id,
            SpanRec {
                name: attrs.metadata().name(),
                fields,
            },
        );
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(span) = self.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        let parent = event
            .parent()
            .map(Id::into_u64)
            .or_else(|| CURRENT.with(|c| c.borrow().last().copied()));
        let span = parent.and_then(|id| {
            self.spans
                .lock()
                .unwrap()
                .get(&id)
                .map(|s| s.name.to_owned())
        });
        self.events.lock().unwrap().push(EventRec {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            span,
            fields,
        });
    }

    fn enter(&self, span: &Id) {
        CURRENT.with(|c| c.borrow_mut().push(span.into_u64()));
    }

    fn exit(&self, _span: &Id) {
        CURRENT.with(|c| {
            c.borrow_mut().pop();
        });
    }
}
