//! Many short connections leave nothing behind.

mod support;

use mllp_actors::ServerConfig;
use support::{Rec, TestServer, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// 1,000 connect/disconnect cycles of every shape (closed at once, mid-line, after a request)
/// leave the registry empty and every slot free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_cycles_leave_registry_empty_and_slots_free() {
    const CYCLES: usize = 1000;
    const SLOTS: usize = 8;
    let server = TestServer::start(ServerConfig::default().max_connections(SLOTS)).await;
    for cycle in 0..CYCLES {
        let mut stream = within(TcpStream::connect(server.addr())).await.unwrap();
        match cycle % 3 {
            0 => {}
            1 => {
                let _ = stream.write_all(b"half a li").await;
            }
            _ => {
                let mut client = support::LineClient::from_stream(stream);
                assert_eq!(client.request("ping").await, "ping");
                continue;
            }
        }
        drop(stream);
    }
    server
        .recorder
        .wait_for(|events| {
            events
                .iter()
                .filter(|e| matches!(e, Rec::Stop { .. }))
                .count()
                == CYCLES
        })
        .await;
    assert!(server.handle.connections().await.is_empty());
    assert_eq!(server.handle.slots_in_use(), 0);

    // Every slot is free again: SLOTS clients are all served at once.
    let mut clients = Vec::new();
    for _ in 0..SLOTS {
        let (client, _) = server.connect_registered().await;
        clients.push(client);
    }
    for (n, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.request(&format!("c{n}")).await, format!("c{n}"));
    }
    drop(clients);
    server.finish().await;
}
