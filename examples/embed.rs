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

    // SIGTERM/SIGINT handlers first: a signal during start-up is kept for the select below,
    // instead of ending the process before the receiver can drain.
    let shutdown = mllp::shutdown_signal();

    let router = Router::new().route("*", move |req: Request| {
        let tx = tx.clone();
        async move {
            let id = req.message().control_id().unwrap_or("").to_owned();
            tx.send(id)
                .await
                .map_err(|_| mllp::app::HandlerError::internal("store stopped"))
        }
    });
    // 127.0.0.1:2575, or MLLP_ADDR (tests/examples.rs runs this example on a free port).
    let addr = std::env::var("MLLP_ADDR").unwrap_or_else(|_| "127.0.0.1:2575".to_owned());
    let server = Server::builder()
        .router(router)
        .shutdown_grace(Duration::from_secs(5))
        .bind(addr)
        .await?;
    println!("listening on {}", server.local_addr());
    let handle = server.spawn().await?;

    tokio::select! {
        () = shutdown => println!("signal received, draining"),
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
