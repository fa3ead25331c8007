//! A receiver that stores every message in SQLite before its handler runs: `mllp serve`'s
//! guarantee (nothing acknowledged before it is committed; resends acknowledged, not stored
//! twice) in an embedding service, with the store id handed to the handler.
//!
//! Run with: `cargo run --example durable`
//! Then send it a message twice: `cargo run -- send --to 127.0.0.1:2575 tests/fixtures/adt_a01.hl7`
//! (the second is a duplicate: acknowledged, not stored, the handler not called), and list the
//! store: `cargo run -- inbox list --store sqlite:durable-example.db`.

use mllp::Server;
use mllp::app::{Request, Router};
use mllp::store::{SqliteConfig, SqliteStore, StoreLayer, Stored};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = SqliteStore::open("durable-example.db", SqliteConfig::default()).await?;
    let router = Router::new()
        .route("*", |req: Request| async move {
            // Runs only after the commit: the message is durable here.
            if let Some(Stored(receipt)) = req.extensions().get::<Stored>() {
                println!("stored as {}", receipt.id());
            }
        })
        .layer(StoreLayer::new(store.clone()));
    // SIGTERM/SIGINT handlers before the address is announced: a signal from then on drains.
    let shutdown = mllp::shutdown_signal();
    // 127.0.0.1:2575, or MLLP_ADDR (tests/examples.rs runs this example on a free port).
    let addr = std::env::var("MLLP_ADDR").unwrap_or_else(|_| "127.0.0.1:2575".to_owned());
    let server = Server::builder().router(router).bind(addr).await?;
    println!("listening on {}", server.local_addr());
    server.serve_with_shutdown(shutdown).await?;
    // Answers what the writer still holds, then closes the file.
    store.close().await;
    Ok(())
}
