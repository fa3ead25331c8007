//! Watching a server from the embedding service: an observer made from a closure with
//! `mllp::observer_fn` (counting messages by ACK code and failures by kind), and the live
//! connections from `ServerHandle::connections()`.
//!
//! Run with: `cargo run --example observer`
//! It serves on a free loopback port, sends itself a few messages with the client, prints what
//! the observer and `connections()` saw, and exits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use mllp::app::{HandlerError, Request, Router};
use mllp::{Client, Event, Server, observer_fn};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Counts by outcome. The observer runs synchronously on the server's tasks: keep it cheap.
    let counts: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let seen = Arc::clone(&counts);
    let observer = observer_fn(move |event: &Event<'_>| {
        let key = match event {
            Event::ConnectionStart { .. } => "connection.start".to_owned(),
            Event::ConnectionStop { reason, .. } => format!("connection.stop {reason}"),
            Event::MessageStop { response, .. } => match response {
                Some(ack) => format!("message {}", ack.code().as_str()),
                None => "message (no ACK)".to_owned(),
            },
            Event::MessageException { failure, .. } => format!("exception {}", failure.kind()),
            _ => return,
        };
        *seen.lock().unwrap().entry(key).or_default() += 1;
    });

    let router = Router::new()
        .route("ADT^A01", |_req: Request| async {})
        .route("ADT^A02", |_req: Request| async {
            Err::<(), _>("the bed service is down") // AE 207, generic text
        })
        .route("ADT^A03", |_req: Request| async {
            Err::<(), _>(HandlerError::internal("discharge queue full")) // AE, this text
        });
    let server = Server::builder()
        .router(router)
        .observer(observer)
        .bind("127.0.0.1:0")
        .await?
        .spawn()
        .await?;

    let mut client = Client::new(server.local_addr().to_string());
    for (i, trigger) in ["A01", "A02", "A03", "A01"].iter().enumerate() {
        let message = format!(
            "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240102030405||ADT^{trigger}|MSG{i}|P|2.5\rPID|1||123\r"
        );
        match client.send(mllp::bytes::Bytes::from(message)).await {
            Ok(_) => println!("ADT^{trigger}: accepted"),
            Err(error) => println!("ADT^{trigger}: {error}"),
        }
    }

    for connection in server.connections().await {
        println!(
            "connection {} from {}: {} messages handled, {} in flight",
            connection.id, connection.peer, connection.messages, connection.in_flight
        );
    }
    client.close().await;
    let report = server.shutdown().await;
    println!("drained {}, aborted {}", report.drained, report.aborted);
    for (what, count) in counts.lock().unwrap().iter() {
        println!("{what}: {count}");
    }
    Ok(())
}
