//! The smallest MLLP receiver: accepts every message (AA, or CA when its MSH-15 asks for an
//! enhanced-mode accept ACK, as `adt_a01.hl7` does).
//!
//! Run with: `cargo run --example echo`
//! Then send it a message: `cargo run -- send --to 127.0.0.1:2575 tests/fixtures/adt_a01.hl7`

use mllp::Server;
use mllp::app::{Request, Router};

#[tokio::main]
async fn main() -> Result<(), mllp::Error> {
    let router = Router::new().route("*", |req: Request| async move {
        println!("received {:?}", req.message().control_id());
    });
    // SIGTERM/SIGINT handlers before the address is announced: a signal from then on drains.
    let shutdown = mllp::shutdown_signal();
    // 127.0.0.1:2575, or MLLP_ADDR (tests/examples.rs runs this example on a free port).
    let addr = std::env::var("MLLP_ADDR").unwrap_or_else(|_| "127.0.0.1:2575".to_owned());
    let server = Server::builder().router(router).bind(addr).await?;
    println!("listening on {}", server.local_addr());
    server.serve_with_shutdown(shutdown).await?;
    Ok(())
}
