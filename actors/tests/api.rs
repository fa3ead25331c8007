//! Compile-time checks of the public API's auto traits: errors are `Send + Sync + 'static`,
//! handles can cross threads, and every public future can be spawned on a multi-threaded
//! runtime. These tests fail by not compiling.

use std::future::Future;
use std::sync::Arc;

mod support;

use mllp_actors::{PlainTcp, Server, ServerConfig};
use support::Lines;

fn assert_send_sync<T: Send + Sync>() {}
fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
fn assert_send_future<F: Future + Send>(_: &F) {}

/// A future that can be stored and polled by value in a `select!` or a struct.
fn assert_send_unpin<F: Future + Send + Unpin>() {}

/// Every public error type can be boxed into `Box<dyn Error + Send + Sync>` and sent across
/// tasks.
#[test]
fn public_errors_are_send_sync_static() {
    assert_error::<mllp_actors::StartError>();
    assert_error::<mllp_actors::ServerError>();
    assert_error::<mllp_actors::ConfigError>();
}

/// Handles and values are `Send + Sync`, so they can be shared with tasks and kept in `Arc`s.
#[test]
fn public_handles_and_values_are_send_and_sync() {
    assert_send_sync::<mllp_actors::ServerHandle>();
    assert_send_sync::<mllp_actors::ServerConfig>();
    assert_send_sync::<mllp_actors::ConnectionInfo>();
    assert_send_sync::<mllp_actors::ConnectionSnapshot>();
    assert_send_sync::<mllp_actors::ShutdownReport>();
    assert_send_sync::<mllp_actors::Failure>();
    assert_send_sync::<mllp_actors::CloseReason>();
    assert_send_sync::<mllp_actors::Event<'static, Lines>>();
    assert_send_sync::<mllp_actors::PlainTcp>();
}

/// `Server::start` and the handle's futures are `Send`, so they can be spawned on a
/// multi-threaded runtime (checked without running them).
#[test]
fn public_futures_are_send() {
    // Never called: only type-checked.
    #[allow(dead_code)]
    async fn futures(handle: mllp_actors::ServerHandle, listener: tokio::net::TcpListener) {
        assert_send_future(&Server::start(
            listener,
            Lines::new(),
            PlainTcp,
            ServerConfig::default(),
            Vec::<Arc<dyn mllp_actors::Observer<Lines>>>::new(),
        ));
        assert_send_future(&handle.shutdown());
        assert_send_future(&handle.wait());
        assert_send_future(&handle.connections());
        assert_send_future(&handle.shutdown_on(std::future::pending::<()>()));
        assert_send_future(&mllp_actors::signal::terminate());
        assert_send_unpin::<mllp_actors::signal::Terminate>();
    }
    let _ = futures;
}
