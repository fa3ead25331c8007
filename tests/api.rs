//! Compile-time checks of the public API's auto traits: errors are `Send + Sync + 'static`,
//! handles and values can cross threads, and every public future can be spawned on a
//! multi-threaded runtime. These tests fail by not compiling.

use std::future::Future;

use bytes::Bytes;

fn assert_send<T: Send>() {}
fn assert_sync<T: Sync>() {}
fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
fn assert_send_future<F: Future + Send>(_: &F) {}

/// Every public error type can be boxed into `Box<dyn Error + Send + Sync>` and sent across
/// tasks.
#[test]
fn public_errors_are_send_sync_static() {
    assert_error::<mllp::Error>();
    assert_error::<mllp::ConfigError>();
    assert_error::<mllp::ClientError>();
    assert_error::<mllp::frame::FrameError>();
    assert_error::<mllp::hl7::ParseError>();
    assert_error::<mllp::hl7::PathError>();
    assert_error::<mllp::hl7::DelimiterError>();
    assert_error::<mllp::app::RoutePatternError>();
    assert_error::<mllp::inbox::InboxError>();
    assert_error::<mllp::tls::TlsConfigError>();
    assert_error::<mllp::tls::HandshakeError>();
    assert_error::<mllp::tls::AdmissionError>();
    #[cfg(feature = "otlp")]
    {
        assert_error::<mllp::otel::OtelError>();
        assert_error::<mllp::otel::UnknownLogFormat>();
    }
    assert_error::<mllp::server::StartError>();
    assert_error::<mllp::server::ServerError>();
    assert_error::<mllp::server::RuntimeConfigError>();
}

/// Handles, configuration and values are `Send + Sync`, so they can be shared with tasks and
/// kept in `Arc`s.
#[test]
fn public_handles_and_values_are_send_and_sync() {
    fn both<T: Send + Sync>() {
        assert_send::<T>();
        assert_sync::<T>();
    }
    both::<mllp::Server>();
    both::<mllp::ServerBuilder>();
    both::<mllp::Server<mllp::tls::TlsTransport>>();
    both::<mllp::ServerBuilder<mllp::tls::TlsTransport>>();
    both::<mllp::ServerHandle>();
    both::<mllp::ClientConfig>();
    both::<mllp::Acknowledgment>();
    both::<mllp::app::Router>();
    both::<mllp::app::Request>();
    both::<mllp::app::Response>();
    both::<mllp::app::HandlerError>();
    both::<mllp::hl7::Message>();
    both::<mllp::ack::Ack>();
    both::<mllp::inbox::Inbox>();
    both::<mllp::telemetry::Metrics>();
    both::<mllp::tls::TlsTransport>();
    both::<mllp::tls::TlsReloader>();
    both::<mllp::tls::TlsConnector>();
    both::<mllp::tls::Admission>();
    both::<mllp::server::Hl7>();
    both::<mllp::server::Inbound>();
    both::<mllp::telemetry::Failure>();
    // `Client` is used through `&mut self`: `Send` is what spawning needs. It is not `Sync`
    // (its boxed stream is not).
    assert_send::<mllp::Client>();
    assert_send::<mllp::app::RouteFuture>();
    assert_send::<mllp::app::Next>();
}

/// The futures of the server, its handle and the client are `Send`, so they can be spawned on
/// a multi-threaded runtime (checked without running them).
#[test]
fn public_futures_are_send() {
    // Never called: only type-checked.
    #[allow(dead_code, clippy::too_many_arguments)]
    async fn futures(
        handle: mllp::ServerHandle,
        mut client: mllp::Client,
        server: mllp::Server,
        tls_server: mllp::Server<mllp::tls::TlsTransport>,
        connector: mllp::tls::TlsConnector,
        transport: mllp::tls::TlsTransport,
        tcp: tokio::net::TcpStream,
        tcp2: tokio::net::TcpStream,
    ) {
        assert_send_future(&mllp::Server::builder().bind("127.0.0.1:0"));
        assert_send_future(&server.serve_with_shutdown(std::future::pending::<()>()));
        assert_send_future(&tls_server.spawn());
        assert_send_future(&handle.shutdown());
        assert_send_future(&handle.wait());
        assert_send_future(&handle.connections());
        assert_send_future(&mllp::shutdown_signal());
        assert_send_future(&client.send(Bytes::new()));
        assert_send_future(&client.send_all(Vec::<Bytes>::new()));
        assert_send_future(&client.connect());
        assert_send_future(&client.close());
        assert_send_future(&connector.connect(tcp, "example.org"));
        assert_send_future(&transport.accept(tcp2));
    }
    let _ = futures;
}

fn debug_text<T: std::fmt::Debug>(value: &T) -> String {
    format!("{value:?}")
}

/// A builder switched to another transport is still `Debug` (C-DEBUG), and says which
/// transport it serves over.
#[test]
fn server_builder_is_debug_for_every_transport() {
    let plain = debug_text(&mllp::Server::builder());
    assert!(plain.starts_with("ServerBuilder {"), "{plain}");
    assert!(plain.contains("PlainTcp"), "{plain}");

    let admitted = mllp::tls::Admitted::new(mllp::server::PlainTcp, mllp::tls::Admission::any());
    let text = debug_text(&mllp::Server::builder().transport(admitted));
    assert!(text.starts_with("ServerBuilder {"), "{text}");
    assert!(text.contains("Admitted"), "{text}");
}

/// Configuration values compare by content (C-COMMON-TRAITS), so a caller can check a loaded
/// configuration against the defaults or against the one in force.
#[test]
fn configurations_compare_by_content() {
    use std::time::Duration;

    use mllp::tls::{TlsClientConfig, TlsConfig};

    assert_eq!(mllp::ClientConfig::default(), mllp::ClientConfig::default());
    assert_ne!(
        mllp::ClientConfig::default().reply_timeout(Duration::from_secs(1)),
        mllp::ClientConfig::default()
    );

    assert_eq!(
        TlsConfig::new("a.crt", "a.key"),
        TlsConfig::new("a.crt", "a.key")
    );
    assert_ne!(
        TlsConfig::new("a.crt", "a.key").client_ca("ca.pem"),
        TlsConfig::new("a.crt", "a.key")
    );

    assert_eq!(
        TlsClientConfig::new("ca.pem"),
        TlsClientConfig::new("ca.pem")
    );
    assert_ne!(
        TlsClientConfig::new("ca.pem").server_name("hl7.example"),
        TlsClientConfig::new("ca.pem")
    );
}
