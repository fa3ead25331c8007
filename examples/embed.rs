//! An MLLP receiver embedded in a service that has tasks of its own, all stopped together on
//! SIGTERM/SIGINT: the receiver drains (every message in flight gets its ACK) before the
//! service exits.
//!
//! Run with: `cargo run --example embed`, then press Ctrl-C.

use std::time::Duration;

use mllp::Server;
use mllp::app::{Request, Router};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The service's own work: a writer that consumes what the receiver hands it.
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    let stop = CancellationToken::new();
    let writer = tokio::spawn({
        let stop = stop.clone();
        async move {
            loop {
                tokio::select! {
                    Some(id) = rx.recv() => println!("stored {id}"),
                    () = stop.cancelled() => break,
                }
            }
            // Drain what is left after the receiver stopped.
            while let Ok(id) = rx.try_recv() {
                println!("stored {id}");
            }
        }
    });

    let router = Router::new().route("*", move |req: Request| {
        let tx = tx.clone();
        async move {
            let id = req.message().control_id().unwrap_or("").to_owned();
            tx.send(id)
                .await
                .map_err(|_| mllp::app::HandlerError::internal("store stopped"))
        }
    });
    let server = Server::builder()
        .router(router)
        .shutdown_grace(Duration::from_secs(5))
        .bind("127.0.0.1:2575")
        .await?;
    println!("listening on {}", server.local_addr());
    let handle = server.spawn().await?;

    tokio::select! {
        () = mllp::shutdown_signal() => println!("signal received, draining"),
        result = handle.wait() => result?,
    }
    let report = handle.shutdown().await;
    println!(
        "receiver drained {} connections, aborted {}",
        report.drained, report.aborted
    );
    stop.cancel();
    writer.await?;
    Ok(())
}
