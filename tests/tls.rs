//! TLS over real loopback sockets: the server side through `Transport::handshake`, the client
//! side through `TlsConnector`, with certificates generated per test run and read from PEM files.

#[path = "support/pki.rs"]
mod pki;

use std::future::Future;
use std::io;
use std::time::Duration;

use mllp::tls::{
    Admission, Admitted, FileRole, HandshakeError, TlsClientConfig, TlsConfig, TlsConfigError,
    TlsConnector, TlsTransport, TlsVersion,
};
use mllp_actors::{Established, PlainTcp, Transport};
use pki::{KeyFormat, LeafSpec, Pki};
use rustls::CertificateError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ADT: &[u8] = b"\x0bMSH|^~\\&|LAB|H|RIS|H|20250101||ADT^A01|1|P|2.5\r\x1c\r";
const ACK: &[u8] = b"\x0bMSH|^~\\&|RIS|H|LAB|H|20250101||ACK^A01^ACK|2|P|2.5\rMSA|AA|1\r\x1c\r";

/// A hang guard, not a synchronisation point.
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("test step hung")
}

/// A connected loopback pair: (server side, client side).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (accepted.expect("accept").0, client.expect("connect"))
}

fn server(pki: &Pki) -> TlsConfig {
    TlsConfig::new(&pki.server.cert, &pki.server.key)
}

fn client(pki: &Pki) -> TlsClientConfig {
    TlsClientConfig::new(&pki.ca.cert)
}

/// Writes `bytes` on one end and checks the other end reads exactly them.
async fn carries(
    from: &mut (impl AsyncWrite + Unpin),
    to: &mut (impl AsyncRead + Unpin),
    bytes: &[u8],
) {
    within(from.write_all(bytes)).await.unwrap();
    let mut got = vec![0u8; bytes.len()];
    within(to.read_exact(&mut got)).await.unwrap();
    assert_eq!(got, bytes);
}

/// Runs both handshakes over a fresh loopback pair.
async fn handshake<T: Transport>(
    transport: &T,
    connector: &TlsConnector,
) -> (
    io::Result<Established<T::Stream>>,
    io::Result<mllp::tls::ClientTlsStream>,
) {
    let (server_side, client_side) = tcp_pair().await;
    within(async {
        tokio::join!(
            transport.handshake(server_side),
            connector.connect(client_side, "localhost")
        )
    })
    .await
}

/// The handshake error inside a server-side failure.
fn handshake_error<S: std::fmt::Debug>(result: &io::Result<S>) -> &HandshakeError {
    let err = result.as_ref().expect_err("handshake should fail");
    HandshakeError::from_io(err).unwrap_or_else(|| panic!("not a HandshakeError: {err:?}"))
}

/// Asserts that reading yields no application data: end of stream or an error.
async fn assert_no_data(stream: &mut (impl AsyncRead + Unpin)) {
    let mut buf = [0u8; 64];
    match within(stream.read(&mut buf)).await {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("unexpected data: {:?}", &buf[..n]),
    }
}

/// Bytes written after a TLS handshake arrive intact in both directions, and a clean close is
/// seen as end of stream.
#[tokio::test]
async fn tls_round_trip_carries_bytes_both_ways() {
    let pki = Pki::new();
    let transport = server(&pki).build().unwrap();
    let connector = client(&pki).build().unwrap();
    let (established, client) = handshake(&transport, &connector).await;
    let established = established.expect("server handshake");
    let mut client = client.expect("client handshake");
    assert!(established.tls);
    assert_eq!(
        established.peer_identity, None,
        "no client certificate without mTLS"
    );
    let mut server = established.stream;

    carries(&mut client, &mut server, ADT).await;

    carries(&mut server, &mut client, ACK).await;

    within(client.shutdown()).await.unwrap();
    assert_eq!(within(server.read(&mut [0u8; 16])).await.unwrap(), 0);
}

/// TLS 1.2 and TLS 1.3 both negotiate with the default server configuration.
#[tokio::test]
async fn tls12_and_tls13_both_negotiate() {
    let pki = Pki::new();
    let transport = server(&pki).build().unwrap();
    for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
        let connector = client(&pki).versions(&[version]).build().unwrap();
        let (established, client) = handshake(&transport, &connector).await;
        let server = established.expect("server handshake").stream;
        let client = client.expect("client handshake");
        assert_eq!(server.protocol_version(), Some(version));
        assert_eq!(client.protocol_version(), Some(version));
    }
}

/// A server restricted to TLS 1.3 refuses a TLS 1.2-only client.
#[tokio::test]
async fn tls13_only_server_refuses_tls12_client() {
    let pki = Pki::new();
    let transport = server(&pki).versions(&[TlsVersion::Tls13]).build().unwrap();
    let connector = client(&pki).versions(&[TlsVersion::Tls12]).build().unwrap();
    let (established, client) = handshake(&transport, &connector).await;
    assert!(matches!(
        handshake_error(&established),
        HandshakeError::Protocol(_)
    ));
    assert!(client.is_err());
}

/// A plaintext MLLP client on a TLS port fails the handshake and is never sent data: at most a
/// TLS alert record, then the connection closes.
#[tokio::test]
async fn plaintext_client_on_tls_port_is_refused_without_an_answer() {
    let pki = Pki::new();
    let transport = server(&pki).build().unwrap();
    let (server_side, mut plain) = tcp_pair().await;
    within(plain.write_all(ADT)).await.unwrap();
    let result = within(transport.handshake(server_side)).await;
    assert!(matches!(handshake_error(&result), HandshakeError::NotTls));
    let err = result.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("plaintext"), "{err}");

    let mut received = Vec::new();
    // End of stream or a reset: either way the connection is closed.
    let _ = within(plain.read_to_end(&mut received)).await;
    assert!(
        !received.contains(&0x0b) && !received.contains(&0x1c),
        "no MLLP frame may be sent: {received:?}"
    );
    assert!(
        received.is_empty() || received[0] == 0x15,
        "anything sent must be a TLS alert record: {received:?}"
    );
}

/// A client that connects and stays silent leaves the handshake pending, so the runtime's
/// `handshake_timeout` is what ends it (not an error from the transport).
#[tokio::test(start_paused = true)]
async fn silent_client_leaves_handshake_pending() {
    let pki = Pki::new();
    let transport = server(&pki).build().unwrap();
    let (server_side, _silent) = tcp_pair().await;
    let start = tokio::time::Instant::now();
    let outcome =
        tokio::time::timeout(Duration::from_secs(5), transport.handshake(server_side)).await;
    assert!(outcome.is_err(), "handshake must still be pending");
    assert!(start.elapsed() >= Duration::from_secs(5));
}

/// With mutual TLS a client whose certificate chains to the client CA is admitted, and its CN
/// is the reported identity.
#[tokio::test]
async fn mtls_trusted_client_is_admitted_with_its_identity() {
    let pki = Pki::new();
    let transport = server(&pki).client_ca(&pki.ca.cert).build().unwrap();
    assert!(transport.client_auth());
    let connector = client(&pki)
        .client_cert(&pki.client.cert, &pki.client.key)
        .build()
        .unwrap();
    let (established, client) = handshake(&transport, &connector).await;
    let established = established.expect("server handshake");
    let mut client = client.expect("client handshake");
    assert!(established.tls);
    assert_eq!(established.peer_identity.as_deref(), Some("lab-sender"));
    let mut server = established.stream;
    assert_eq!(
        server.peer_certificates().map(|c| c[0].to_vec()),
        Some(pki.client.der.clone())
    );
    carries(&mut client, &mut server, ADT).await;
}

/// A resumed session (no certificate on the wire) still reports the client's identity.
#[tokio::test]
async fn mtls_resumed_session_keeps_the_identity() {
    let pki = Pki::new();
    let transport = server(&pki).client_ca(&pki.ca.cert).build().unwrap();
    let connector = client(&pki)
        .client_cert(&pki.client.cert, &pki.client.key)
        .build()
        .unwrap();
    let (established, client) = handshake(&transport, &connector).await;
    let mut server = established.expect("first handshake").stream;
    let mut client = client.expect("first handshake");
    assert!(!server.resumed());
    // TLS 1.3 session tickets arrive after the handshake: read an answer to receive them.
    carries(&mut server, &mut client, ACK).await;

    let (established, client) = handshake(&transport, &connector).await;
    let established = established.expect("second handshake");
    assert!(
        established.stream.resumed(),
        "second handshake should resume"
    );
    assert!(client.unwrap().resumed());
    assert_eq!(established.peer_identity.as_deref(), Some("lab-sender"));
}

/// A client certificate without a CN is identified by its first SAN DNS name.
#[tokio::test]
async fn mtls_identity_falls_back_to_first_dns_name() {
    let pki = Pki::new();
    let transport = server(&pki).client_ca(&pki.ca.cert).build().unwrap();
    let connector = client(&pki)
        .client_cert(&pki.san_only.cert, &pki.san_only.key)
        .build()
        .unwrap();
    let (established, _client) = handshake(&transport, &connector).await;
    assert_eq!(
        established
            .expect("server handshake")
            .peer_identity
            .as_deref(),
        Some("ris.example.org")
    );
}

/// With mutual TLS a client that presents no certificate is refused: certificates are
/// required, not merely requested.
#[tokio::test]
async fn mtls_client_without_certificate_is_refused() {
    let pki = Pki::new();
    let transport = server(&pki).client_ca(&pki.ca.cert).build().unwrap();
    let connector = client(&pki).build().unwrap();
    for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
        let connector_v = client(&pki).versions(&[version]).build().unwrap();
        let (established, client) = handshake(&transport, &connector_v).await;
        assert!(
            matches!(
                handshake_error(&established),
                HandshakeError::ClientCertificateRequired
            ),
            "{version:?}: {established:?}"
        );
        assert_eq!(
            established.unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        // TLS 1.3 clients finish first and learn of the refusal on their first read.
        if let Ok(mut client) = client {
            assert_no_data(&mut client).await;
        }
    }
    drop(connector);
}

/// A client certificate from a CA the server does not trust is refused.
#[tokio::test]
async fn mtls_client_from_untrusted_ca_is_refused() {
    let pki = Pki::new();
    let transport = server(&pki).client_ca(&pki.ca.cert).build().unwrap();
    let connector = client(&pki)
        .client_cert(&pki.wrong_ca.cert, &pki.wrong_ca.key)
        .build()
        .unwrap();
    let (established, client) = handshake(&transport, &connector).await;
    assert!(
        matches!(
            handshake_error(&established),
            HandshakeError::CertificateRejected(CertificateError::UnknownIssuer)
        ),
        "{established:?}"
    );
    if let Ok(mut client) = client {
        assert_no_data(&mut client).await;
    }
}

/// An expired client certificate is refused even though its CA is trusted.
#[tokio::test]
async fn mtls_expired_client_certificate_is_refused() {
    let pki = Pki::new();
    let transport = server(&pki).client_ca(&pki.ca.cert).build().unwrap();
    let connector = client(&pki)
        .client_cert(&pki.expired.cert, &pki.expired.key)
        .build()
        .unwrap();
    let (established, client) = handshake(&transport, &connector).await;
    assert!(
        matches!(
            handshake_error(&established),
            HandshakeError::CertificateRejected(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        ),
        "{established:?}"
    );
    if let Ok(mut client) = client {
        assert_no_data(&mut client).await;
    }
}

/// A verified client whose subject is not on the allow-list is refused, and the error names
/// the subject.
#[tokio::test]
async fn mtls_client_subject_not_on_allow_list_is_refused() {
    let pki = Pki::new();
    let transport = server(&pki)
        .client_ca(&pki.ca.cert)
        .allow_client_subject("lab-sender")
        .build()
        .unwrap();
    let connector = client(&pki)
        .client_cert(&pki.intruder.cert, &pki.intruder.key)
        .build()
        .unwrap();
    let (established, client) = handshake(&transport, &connector).await;
    match handshake_error(&established) {
        HandshakeError::SubjectNotAllowed { subject } => assert_eq!(subject, "intruder"),
        other => panic!("wrong error: {other:?}"),
    }
    let err = established.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("\"intruder\""), "{err}");
    if let Ok(mut client) = client {
        assert_no_data(&mut client).await;
    }
}

/// The allow-list matches SAN DNS names as well as the CN; the identity is still the CN.
#[tokio::test]
async fn mtls_allow_list_matches_san_dns_name() {
    let pki = Pki::new();
    let transport = server(&pki)
        .client_ca(&pki.ca.cert)
        .allow_client_subjects(["someone-else", "LAB.example.org"])
        .build()
        .unwrap();
    let connector = client(&pki)
        .client_cert(&pki.client.cert, &pki.client.key)
        .build()
        .unwrap();
    let (established, _client) = handshake(&transport, &connector).await;
    assert_eq!(
        established.expect("admitted").peer_identity.as_deref(),
        Some("lab-sender")
    );
}

/// The client refuses a server whose certificate does not carry the expected name.
#[tokio::test]
async fn client_refuses_server_with_wrong_name() {
    let pki = Pki::new();
    let transport = server(&pki).build().unwrap();
    let connector = client(&pki).build().unwrap();
    let (server_side, client_side) = tcp_pair().await;
    let (established, client) = within(async {
        tokio::join!(
            transport.handshake(server_side),
            connector.connect(client_side, "hl7.example.org")
        )
    })
    .await;
    assert!(
        matches!(
            handshake_error(&client),
            HandshakeError::CertificateRejected(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{client:?}"
    );
    // The server learns why from the client's alert.
    assert!(
        matches!(
            handshake_error(&established),
            HandshakeError::AlertReceived(_)
        ),
        "{established:?}"
    );
}

/// The client refuses a server whose certificate does not chain to its CA bundle.
#[tokio::test]
async fn client_refuses_server_from_untrusted_ca() {
    let pki = Pki::new();
    let transport = server(&pki).build().unwrap();
    let connector = TlsClientConfig::new(&pki.other_ca.cert).build().unwrap();
    let (_established, client) = handshake(&transport, &connector).await;
    assert!(
        matches!(
            handshake_error(&client),
            HandshakeError::CertificateRejected(CertificateError::UnknownIssuer)
        ),
        "{client:?}"
    );
}

/// The boxed connector verifies the host part of the address (here an IP SAN) or the
/// configured server name, and yields a working stream.
#[tokio::test]
async fn connector_verifies_address_host_or_configured_name() {
    let pki = Pki::new();
    let transport = server(&pki).build().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let by_ip = client(&pki)
        .build()
        .unwrap()
        .connector(&addr.to_string())
        .unwrap();
    let by_name = client(&pki)
        .server_name("localhost")
        .build()
        .unwrap()
        .connector("192.0.2.1:2575")
        .unwrap();
    let wrong = client(&pki)
        .build()
        .unwrap()
        .connector("hl7.example.org:2575")
        .unwrap();

    for (connector, ok) in [(by_ip, true), (by_name, true), (wrong, false)] {
        let (tcp, accepted) =
            within(async { tokio::join!(TcpStream::connect(addr), listener.accept()) }).await;
        let (established, stream) = within(async {
            tokio::join!(
                transport.handshake(accepted.unwrap().0),
                connector(tcp.unwrap())
            )
        })
        .await;
        assert_eq!(
            stream.is_ok(),
            ok,
            "{stream:?}",
            stream = stream.as_ref().err()
        );
        if ok {
            let mut stream = stream.unwrap();
            let mut server = established.unwrap().stream;
            carries(&mut stream, &mut server, ADT).await;
        }
    }
}

/// A peer that drops TCP without `close_notify` is read as an ordinary end of stream.
#[tokio::test]
async fn missing_close_notify_reads_as_end_of_stream() {
    let pki = Pki::new();
    let transport = server(&pki).build().unwrap();
    let connector = client(&pki).build().unwrap();
    let (established, client) = handshake(&transport, &connector).await;
    let mut server = established.unwrap().stream;
    let mut client = client.unwrap();
    within(client.write_all(ADT)).await.unwrap();
    // Read an answer first, so the client's socket holds no unread bytes (TLS 1.3 session
    // tickets): closing it then sends FIN, not RST.
    carries(&mut server, &mut client, ACK).await;
    drop(client); // no shutdown(): TCP FIN without close_notify
    let mut got = Vec::new();
    within(server.read_to_end(&mut got))
        .await
        .expect("end of stream, not an error");
    assert_eq!(got, ADT, "data before the close is delivered");
}

/// Shutting the server stream down sends `close_notify`: a raw rustls client sees a clean end
/// of stream, where a dropped stream gives it `UnexpectedEof`.
#[tokio::test]
async fn shutdown_sends_close_notify_and_drop_does_not() {
    let pki = Pki::new();
    let transport = server(&pki).build().unwrap();
    let raw = pki.raw_client();
    for graceful in [true, false] {
        let (server_side, client_side) = tcp_pair().await;
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let (established, client) = within(async {
            tokio::join!(
                transport.handshake(server_side),
                raw.connect(name, client_side)
            )
        })
        .await;
        let mut server = established.unwrap().stream;
        let mut client = client.unwrap();
        if graceful {
            within(server.shutdown()).await.unwrap();
        } else {
            drop(server);
        }
        let read = within(client.read(&mut [0u8; 16])).await;
        if graceful {
            assert_eq!(read.unwrap(), 0);
        } else {
            assert_eq!(read.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        }
    }
}

/// After the PEM files are rewritten and reloaded, new handshakes present the new certificate
/// while a connection established before keeps working on the old one.
#[tokio::test]
async fn reload_serves_new_certificate_and_keeps_live_connections() {
    let pki = Pki::new();
    let transport = server(&pki).build().unwrap();
    let reloader = transport.reloader();
    let connector = client(&pki).build().unwrap();

    let (established, old_client) = handshake(&transport, &connector).await;
    let mut old_server = established.unwrap().stream;
    let mut old_client = old_client.unwrap();
    assert_eq!(
        old_client.peer_certificates().unwrap()[0].to_vec(),
        pki.server.der
    );

    // Same paths, new key and certificate.
    let renewed = pki.ca.issue(
        pki.dir.path(),
        &LeafSpec {
            cn: Some("mllp test server, renewed"),
            ..LeafSpec::server("server")
        },
    );
    assert_eq!(renewed.cert, pki.server.cert);
    assert_ne!(renewed.der, pki.server.der);
    within(tokio::task::spawn_blocking(move || reloader.reload()))
        .await
        .unwrap()
        .expect("reload");

    let (established, new_client) = handshake(&transport, &connector).await;
    let new_client = new_client.expect("new handshake");
    assert_eq!(
        new_client.peer_certificates().unwrap()[0].to_vec(),
        renewed.der
    );
    drop(established);

    // The old connection still carries traffic both ways.
    carries(&mut old_client, &mut old_server, ADT).await;
    carries(&mut old_server, &mut old_client, ACK).await;
}

/// The transport tells when the certificate it presents expires, and a reload that brings a
/// renewed certificate (here one that expires in ten days) updates it; a failed reload leaves
/// it as it was.
#[test]
fn certificate_validity_follows_reloads() {
    let pki = Pki::new();
    let transport = server(&pki).build().unwrap();
    let now = std::time::SystemTime::now();
    let first = transport.certificate_validity().expect("validity read");
    // rcgen's default validity: 1975 to 4096.
    assert!(first.is_valid_at(now), "{first:?}");
    assert!(first.remaining(now).unwrap() > Duration::from_secs(1000 * 365 * 86_400));

    let ten_days = Duration::from_secs(10 * 86_400);
    pki.ca.issue(
        pki.dir.path(),
        &LeafSpec {
            valid_for: Some(ten_days),
            ..LeafSpec::server("server")
        },
    );
    let reloader = transport.reloader();
    reloader.reload().expect("reload");
    let renewed = reloader.certificate_validity().expect("validity read");
    let remaining = renewed.remaining(std::time::SystemTime::now()).unwrap();
    assert!(
        remaining <= ten_days && remaining > ten_days - Duration::from_secs(3600),
        "{remaining:?}"
    );
    assert_eq!(transport.certificate_validity(), Some(renewed));

    std::fs::write(&pki.server.cert, "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    reloader.reload().unwrap_err();
    assert_eq!(transport.certificate_validity(), Some(renewed));
}

/// The transport remembers what its last reload did: nothing before the first, then each
/// outcome in turn, a failure with its reason naming the file (for an operator's status page),
/// cleared by the next reload that succeeds.
#[test]
fn last_reload_tells_a_failure_until_a_reload_succeeds() {
    let pki = Pki::new();
    let transport = server(&pki).build().unwrap();
    assert_eq!(transport.last_reload(), None);
    let before = std::time::SystemTime::now();
    let reloader = transport.reloader();
    reloader.reload().expect("reload");
    let ok = transport.last_reload().expect("a reload ran");
    assert_eq!(ok.error, None);
    assert!(ok.at >= before);

    let good = std::fs::read(&pki.server.cert).unwrap();
    std::fs::write(&pki.server.cert, "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    let err = reloader.reload().unwrap_err();
    let failed = reloader.last_reload().expect("a reload ran");
    let reason = failed.error.expect("the failure");
    assert!(reason.starts_with(&err.to_string()), "{reason} / {err}");
    assert!(
        reason.contains(&*pki.server.cert.to_string_lossy()),
        "{reason}"
    );
    assert!(failed.at >= ok.at);

    std::fs::write(&pki.server.cert, good).unwrap();
    reloader.reload().expect("reload");
    assert_eq!(transport.last_reload().expect("a reload ran").error, None);
}

/// A reload that fails (a half-written certificate) reports a typed error and keeps serving
/// the previous certificate.
#[tokio::test]
async fn failed_reload_keeps_previous_certificate() {
    let pki = Pki::new();
    let transport = server(&pki).build().unwrap();
    let connector = client(&pki).build().unwrap();
    std::fs::write(&pki.server.cert, "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    let err = transport.reloader().reload().unwrap_err();
    assert!(
        matches!(
            err,
            TlsConfigError::MalformedPem {
                role: FileRole::Certificate,
                ..
            }
        ),
        "{err:?}"
    );
    let (established, client) = handshake(&transport, &connector).await;
    established.expect("still serving");
    assert_eq!(
        client.unwrap().peer_certificates().unwrap()[0].to_vec(),
        pki.server.der
    );
}

/// Damaged base64 inside a PEM section is said in words, not as the decoder's Rust value, and
/// quotes none of the file.
#[test]
fn damaged_base64_is_said_in_words() {
    let pki = Pki::new();
    let pem = std::fs::read_to_string(&pki.server.cert).unwrap();
    let mut lines: Vec<String> = pem.lines().map(str::to_owned).collect();
    lines[1].replace_range(5..6, "@");
    std::fs::write(&pki.server.cert, lines.join("\n")).unwrap();
    let err = server(&pki).build().unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        matches!(
            err,
            TlsConfigError::MalformedPem {
                role: FileRole::Certificate,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(chain.contains("base64 text is damaged"), "{chain}");
    assert!(!chain.contains("InvalidCharacter"), "{chain}");
    assert!(
        !chain.contains(&lines[1][..20]),
        "quotes none of the file: {chain}"
    );
}

/// A missing certificate file is named in the error.
#[test]
fn missing_certificate_file_is_named() {
    let pki = Pki::new();
    let missing = pki.path("nope.crt");
    let err = TlsConfig::new(&missing, &pki.server.key)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, TlsConfigError::Read { role: FileRole::Certificate, path, source }
            if *path == missing && source.kind() == io::ErrorKind::NotFound),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );
}

/// A missing key file is named in the error.
#[test]
fn missing_key_file_is_named() {
    let pki = Pki::new();
    let missing = pki.path("nope.key");
    let err = TlsConfig::new(&pki.server.cert, &missing)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, TlsConfigError::Read { role: FileRole::PrivateKey, path, .. } if *path == missing),
        "{err:?}"
    );
}

/// Garbage where a certificate should be is reported as "no certificate in" that file.
#[test]
fn garbage_certificate_file_has_no_certificate() {
    let pki = Pki::new();
    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, b"\x00\x01 definitely not PEM \xff").unwrap();
    let err = TlsConfig::new(&garbage, &pki.server.key)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, TlsConfigError::NoCertificate { role: FileRole::Certificate, path } if *path == garbage),
        "{err:?}"
    );
}

/// A PEM certificate whose contents are not a certificate is reported as invalid.
#[test]
fn non_certificate_der_is_invalid_certificate() {
    let pki = Pki::new();
    let bogus = pki.path("bogus.crt");
    std::fs::write(&bogus, pki::pem_encode("CERTIFICATE", b"not der at all")).unwrap();
    let err = TlsConfig::new(&bogus, &pki.server.key).build().unwrap_err();
    assert!(
        matches!(&err, TlsConfigError::InvalidCertificate { index: 1, path, .. } if *path == bogus),
        "{err:?}"
    );
}

/// A key file holding only a certificate reports that it has no private key.
#[test]
fn certificate_given_as_key_has_no_private_key() {
    let pki = Pki::new();
    let err = TlsConfig::new(&pki.server.cert, &pki.server.cert)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, TlsConfigError::NoPrivateKey { .. }),
        "{err:?}"
    );
}

/// A key that belongs to another certificate is refused, naming both files.
#[test]
fn key_that_does_not_match_certificate_is_refused() {
    let pki = Pki::new();
    let err = TlsConfig::new(&pki.server.cert, &pki.client.key)
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, TlsConfigError::KeyMismatch { cert, key } if *cert == pki.server.cert && *key == pki.client.key),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("server.crt") && text.contains("client.key"),
        "{text}"
    );
}

/// A key PEM whose contents are not a key is refused as unusable.
#[test]
fn corrupt_key_is_unsupported() {
    let pki = Pki::new();
    let bad = pki.path("bad.key");
    std::fs::write(&bad, pki::pem_encode("PRIVATE KEY", b"not a key")).unwrap();
    let err = TlsConfig::new(&pki.server.cert, &bad).build().unwrap_err();
    assert!(
        matches!(err, TlsConfigError::UnsupportedPrivateKey { .. }),
        "{err:?}"
    );
}

/// A client CA bundle with no certificate, or with a corrupt one, is refused, naming the file.
#[test]
fn bad_client_ca_bundle_is_refused() {
    let pki = Pki::new();
    let empty = pki.path("empty-ca.pem");
    std::fs::write(&empty, "").unwrap();
    let err = server(&pki).client_ca(&empty).build().unwrap_err();
    assert!(
        matches!(&err, TlsConfigError::NoCertificate { role: FileRole::CaBundle, path } if *path == empty),
        "{err:?}"
    );

    let corrupt = pki.path("corrupt-ca.pem");
    let mut bundle = std::fs::read_to_string(&pki.ca.cert).unwrap();
    bundle.push_str(&pki::pem_encode("CERTIFICATE", b"junk"));
    std::fs::write(&corrupt, bundle).unwrap();
    let err = server(&pki).client_ca(&corrupt).build().unwrap_err();
    assert!(
        matches!(
            &err,
            TlsConfigError::InvalidCertificate {
                role: FileRole::CaBundle,
                index: 2,
                ..
            }
        ),
        "{err:?}"
    );
}

/// An allow-list without a client CA bundle is a configuration error, not a silently
/// unenforced list.
#[test]
fn subject_allow_list_without_client_ca_is_refused() {
    let pki = Pki::new();
    let err = server(&pki)
        .allow_client_subject("lab-sender")
        .build()
        .unwrap_err();
    assert!(
        matches!(err, TlsConfigError::SubjectsWithoutClientCa),
        "{err:?}"
    );
    let err = server(&pki)
        .client_ca(&pki.ca.cert)
        .allow_client_subject(" lab-sender")
        .build()
        .unwrap_err();
    assert!(
        matches!(err, TlsConfigError::InvalidClientSubject { .. }),
        "{err:?}"
    );
}

/// An empty version list is refused on both sides.
#[test]
fn empty_version_list_is_refused() {
    let pki = Pki::new();
    assert!(matches!(
        server(&pki).versions(&[]).build().unwrap_err(),
        TlsConfigError::NoProtocolVersion
    ));
    assert!(matches!(
        client(&pki).versions(&[]).build().unwrap_err(),
        TlsConfigError::NoProtocolVersion
    ));
}

/// The client side reports bad files the same way.
#[test]
fn client_config_errors_name_the_file() {
    let pki = Pki::new();
    let missing = pki.path("missing-ca.pem");
    assert!(matches!(
        TlsClientConfig::new(&missing).build().unwrap_err(),
        TlsConfigError::Read {
            role: FileRole::CaBundle,
            ..
        }
    ));
    assert!(matches!(
        client(&pki)
            .client_cert(&pki.client.cert, &pki.server.key)
            .build()
            .unwrap_err(),
        TlsConfigError::KeyMismatch { .. }
    ));
    assert!(matches!(
        client(&pki).server_name("bad name!").build().unwrap_err(),
        TlsConfigError::InvalidServerName { .. }
    ));
}

/// PKCS#1 (RSA) and SEC1 (EC) keys load as well as PKCS#8, and serve a handshake.
#[tokio::test]
async fn pkcs1_and_sec1_keys_serve_handshakes() {
    let pki = Pki::new();
    for (file, format) in [("rsa", KeyFormat::Pkcs1), ("sec1", KeyFormat::Sec1)] {
        let leaf = pki.ca.issue(
            pki.dir.path(),
            &LeafSpec {
                key_format: format,
                ..LeafSpec::server(file)
            },
        );
        let transport = TlsConfig::new(&leaf.cert, &leaf.key).build().unwrap();
        let connector = client(&pki).build().unwrap();
        let (established, client) = handshake(&transport, &connector).await;
        established.unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(
            client.unwrap().peer_certificates().unwrap()[0].to_vec(),
            leaf.der
        );
    }
}

/// Admission composes with TLS: refused peers are refused in `admit()`, admitted ones still get
/// the TLS handshake.
#[tokio::test]
async fn admission_wraps_tls_transport() {
    let pki = Pki::new();
    let transport = Admitted::new(
        server(&pki).build().unwrap(),
        Admission::allow_list(["127.0.0.0/8"]).unwrap(),
    );
    assert!(!transport.admit("192.0.2.1:5000".parse().unwrap()));
    let connector = client(&pki).build().unwrap();
    let (server_side, client_side) = tcp_pair().await;
    assert!(transport.admit(server_side.peer_addr().unwrap()));
    let (established, client) = within(async {
        tokio::join!(
            transport.handshake(server_side),
            connector.connect(client_side, "localhost")
        )
    })
    .await;
    assert!(established.unwrap().tls);
    client.unwrap();

    let plain = Admitted::new(PlainTcp, Admission::allow_list(["10.0.0.0/8"]).unwrap());
    assert!(!plain.admit("127.0.0.1:5000".parse().unwrap()));
    let _: &TlsTransport = transport.inner();
}

/// The TLS transport says it is TLS before any handshake, and the admission wrapper passes
/// that on; plain TCP stays plain.
#[test]
fn tls_transport_reports_tls_before_the_handshake() {
    let pki = Pki::new();
    let transport = server(&pki).build().unwrap();
    assert!(Transport::tls(&transport));
    let admitted = Admitted::new(transport, Admission::allow_list(["127.0.0.1"]).unwrap());
    assert!(admitted.tls());
    assert!(!Admitted::new(PlainTcp, Admission::any()).tls());
}

/// Every text an error shows: its `Debug` and the `Display` of each error in its chain.
fn error_texts(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{err:?}");
    let mut next = Some(err);
    while let Some(e) = next {
        text.push('\n');
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

/// Whether `text` shows any 12-byte piece of `secret`, as text or as a list of byte values.
fn shows_any_of(text: &str, secret: &[u8]) -> bool {
    secret.windows(12).step_by(6).any(|piece| {
        let bytes = format!("{piece:?}");
        text.contains(&*String::from_utf8_lossy(piece))
            || text.contains(bytes.trim_start_matches('[').trim_end_matches(']'))
    })
}

/// A key file whose line breaks were lost or escaped (a key pasted on one line, or copied out
/// of JSON with literal `\n`) is malformed PEM, and the error never shows the key material:
/// not in its text, its `Debug`, nor its source chain.
#[test]
fn malformed_key_file_error_never_shows_key_material() {
    let pki = Pki::new();
    let pem = std::fs::read_to_string(&pki.server.key).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let escaped = pem.trim_end().replace('\n', "\\n");
    let one_line = pem.trim_end().replace('\n', "");
    for (name, contents) in [("escaped", escaped), ("one-line", one_line + "\n")] {
        let bad = pki.path(&format!("{name}.key"));
        std::fs::write(&bad, &contents).unwrap();
        let err = TlsConfig::new(&pki.server.cert, &bad).build().unwrap_err();
        assert!(
            matches!(&err, TlsConfigError::MalformedPem { role: FileRole::PrivateKey, path, .. } if *path == bad),
            "{name}: {err:?}"
        );
        let text = error_texts(&err);
        assert!(
            !shows_any_of(&text, body.as_bytes()),
            "{name}: key material in the error: {text}"
        );
    }
}

/// A client certificate that is not valid for client authentication (a server certificate,
/// extended key usage `serverAuth` only) is refused even though its CA is trusted.
#[tokio::test]
async fn mtls_server_certificate_as_client_certificate_is_refused() {
    let pki = Pki::new();
    let transport = server(&pki).client_ca(&pki.ca.cert).build().unwrap();
    let connector = client(&pki)
        .client_cert(&pki.server.cert, &pki.server.key)
        .build()
        .unwrap();
    let (established, client) = handshake(&transport, &connector).await;
    assert!(
        matches!(
            handshake_error(&established),
            HandshakeError::CertificateRejected(_)
        ),
        "{established:?}"
    );
    if let Ok(mut client) = client {
        assert_no_data(&mut client).await;
    }
}

/// A TLS 1.3 client refused by the subject allow-list learns it on its first read as the
/// server's alert (an error), not as a clean end of stream.
#[tokio::test]
async fn mtls_refused_tls13_client_reads_the_alert() {
    let pki = Pki::new();
    let transport = server(&pki)
        .client_ca(&pki.ca.cert)
        .allow_client_subject("lab-sender")
        .build()
        .unwrap();
    let connector = client(&pki)
        .versions(&[TlsVersion::Tls13])
        .client_cert(&pki.intruder.cert, &pki.intruder.key)
        .build()
        .unwrap();
    let (established, client) = handshake(&transport, &connector).await;
    assert!(established.is_err());
    let mut client = client.expect("a TLS 1.3 client finishes before the server checks it");
    let err = within(client.read(&mut [0u8; 16]))
        .await
        .expect_err("the refusal is an error, not end of stream");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(err.to_string().contains("CertificateUnknown"), "{err}");
}

/// A certificate chain whose second certificate is not a certificate is refused when the
/// configuration is built, naming its position, on the server and the client side alike.
#[test]
fn corrupt_intermediate_in_chain_is_invalid_certificate() {
    let pki = Pki::new();
    let chain = pki.path("chain.crt");
    let mut pem = std::fs::read_to_string(&pki.server.cert).unwrap();
    // A well-formed CA certificate after the leaf is fine.
    let with_ca = pki.path("with-ca.crt");
    std::fs::write(
        &with_ca,
        pem.clone() + &std::fs::read_to_string(&pki.ca.cert).unwrap(),
    )
    .unwrap();
    TlsConfig::new(&with_ca, &pki.server.key)
        .build()
        .expect("leaf then CA");
    pem.push_str(&pki::pem_encode("CERTIFICATE", b"not der at all"));
    std::fs::write(&chain, pem).unwrap();
    let err = TlsConfig::new(&chain, &pki.server.key).build().unwrap_err();
    assert!(
        matches!(&err, TlsConfigError::InvalidCertificate { role: FileRole::Certificate, index: 2, path, .. } if *path == chain),
        "{err:?}"
    );
    assert!(err.to_string().contains("#2"), "{err}");
    let err = client(&pki)
        .client_cert(&chain, &pki.server.key)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            TlsConfigError::InvalidCertificate {
                role: FileRole::Certificate,
                index: 2,
                ..
            }
        ),
        "{err:?}"
    );
}
