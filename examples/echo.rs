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
    let server = Server::builder()
        .router(router)
        .bind("127.0.0.1:2575")
        .await?;
    println!("listening on {}", server.local_addr());
    server.serve_with_shutdown(mllp::shutdown_signal()).await?;
    Ok(())
}
