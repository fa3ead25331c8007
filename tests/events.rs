//! The documented telemetry events (`mllp.connection.start/stop`, `mllp.message.start/stop/
//! exception`) reach any `tracing` subscriber with their names and fields, inside their spans,
//! and cost nothing when no subscriber wants them.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mllp::Server;
use mllp::app::{Request, Router};
use mllp::telemetry::EVENTS_TARGET;
use support::{Peer, SENTINEL, hl7, within};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// One captured event: its name, the span it was emitted in, and its fields as text.
#[derive(Debug, Clone)]
struct Captured {
    name: String,
    span: Option<String>,
    fields: BTreeMap<String, String>,
}

/// An in-memory layer that keeps every event of the `mllp::events` target.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != EVENTS_TARGET {
            return;
        }
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let span = ctx.event_span(event).map(|s| s.name().to_owned());
        self.0.lock().unwrap().push(Captured {
            name: event.metadata().name().to_owned(),
            span,
            fields,
        });
    }
}

impl Capture {
    fn named(&self, name: &str) -> Vec<Captured> {
        let all = self.0.lock().unwrap();
        all.iter().filter(|e| e.name == name).cloned().collect()
    }

    fn only(&self, name: &str) -> Captured {
        let named = self.named(name);
        assert_eq!(named.len(), 1, "{name}: {named:?}");
        named.into_iter().next().unwrap()
    }
}

fn has(event: &Captured, keys: &[&str]) {
    for key in keys {
        assert!(
            event.fields.contains_key(*key),
            "{} lacks {key}: {event:?}",
            event.name
        );
    }
}

/// Every event of one connection that handled an accepted, an erroring and a timed-out
/// message reaches the subscriber with its documented name, fields and span.
#[tokio::test(start_paused = true)]
async fn every_documented_event_reaches_a_subscriber_with_its_fields() {
    let capture = Capture::default();
    let _default =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let router = Router::new()
        .route("ADT^A01", |_req: Request| async {})
        .route("ADT^A02", |_req: Request| async {
            Err::<(), _>(mllp::app::HandlerError::from(std::io::Error::other(
                format!("{SENTINEL} locked"),
            )))
        })
        .route("ADT^A03", |_req: Request| std::future::pending::<()>());
    let server = support::start(
        Server::builder()
            .router(router)
            .handler_timeout(Duration::from_secs(2)),
    )
    .await;
    let mut peer = Peer::connect(server.local_addr()).await;
    peer.call(hl7("ADT^A01", "C1", "2.5")).await;
    peer.call(hl7("ADT^A02", "C2", "2.5")).await;
    peer.call(hl7("ADT^A03", "C3", "2.5")).await;
    drop(peer);
    within(server.shutdown()).await;

    let start = capture.only("mllp.connection.start");
    assert_eq!(start.span.as_deref(), Some("mllp.connection"));
    has(
        &start,
        &[
            "mllp.connection.id",
            "network.peer.address",
            "network.peer.port",
            "server.port",
            "tls",
            "system_time",
        ],
    );
    assert_eq!(start.fields["tls"], "false");

    let stop = capture.only("mllp.connection.stop");
    assert_eq!(stop.span.as_deref(), Some("mllp.connection"));
    has(
        &stop,
        &[
            "mllp.connection.id",
            "network.peer.address",
            "duration",
            "close_reason",
        ],
    );
    // The peer left and the server shut down at about the same time: either ended it.
    assert!(["peer_closed", "shutdown"].contains(&stop.fields["close_reason"].as_str()));
    assert_eq!(stop.fields["messages"], "3");

    let starts = capture.named("mllp.message.start");
    assert_eq!(starts.len(), 3);
    for (start, id) in starts.iter().zip(["C1", "C2", "C3"]) {
        assert_eq!(start.span.as_deref(), Some("mllp.message"));
        has(
            start,
            &[
                "mllp.connection.id",
                "network.peer.address",
                "mllp.message.size",
            ],
        );
        assert_eq!(start.fields["hl7.message_type"], "ADT");
        assert_eq!(start.fields["hl7.control_id"], id);
    }

    let stops = capture.named("mllp.message.stop");
    let codes: Vec<_> = stops
        .iter()
        .map(|e| e.fields["hl7.ack_code"].clone())
        .collect();
    assert_eq!(codes, ["AA", "AE"]);
    for stop in &stops {
        assert_eq!(stop.span.as_deref(), Some("mllp.message"));
        has(
            stop,
            &["duration", "mllp.response.size", "mllp.connection.id"],
        );
    }

    let exception = capture.only("mllp.message.exception");
    assert_eq!(exception.span.as_deref(), Some("mllp.message"));
    assert_eq!(exception.fields["error.type"], "timeout");
    assert_eq!(exception.fields["hl7.ack_code"], "AE");
    has(&exception, &["duration", "mllp.connection.id"]);

    let all = capture.0.lock().unwrap();
    assert!(
        all.iter().all(|e| !format!("{e:?}").contains(SENTINEL)),
        "no patient data in events"
    );
}

/// With a subscriber that does not want the events (a filter at INFO), none is built.
#[tokio::test]
async fn events_are_off_below_their_level() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(
        capture
            .clone()
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
    );
    let _default = tracing::subscriber::set_default(subscriber);
    let router = Router::new().route("*", |_req: Request| async {});
    let server = support::start(Server::builder().router(router)).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    peer.call(hl7("ADT^A01", "C1", "2.5")).await;
    drop(peer);
    within(server.shutdown()).await;
    assert!(capture.0.lock().unwrap().is_empty());
}
