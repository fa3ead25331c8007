//! TLS cost over loopback, server and client in one process:
//!
//! - `tls_handshake`: TCP connect + accept + a full TLS 1.3 handshake (client session resumption
//!   off, so every handshake is full; server through `TlsTransport`), and a TCP-only baseline.
//!   Handshakes/s = 1 / time per iteration (criterion prints it as elem/s).
//! - `tls_throughput`: bulk 8 KiB writes on one established connection, TLS vs plain TCP in the
//!   same run (bytes/s, criterion prints the rate), and the same over 64 connections at once.
//!
//! Run briefly with: `cargo bench --bench tls -- --warm-up-time 1 --measurement-time 2`

#[path = "../tests/support/pki.rs"]
mod pki;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mllp::tls::{TlsClientConfig, TlsConfig, TlsConnector, TlsTransport};
use mllp_actors::{PlainTcp, Transport};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const CHUNK: usize = 8 * 1024;
/// Bytes per iteration on one connection: 128 writes of 8 KiB.
const ONE_CONN_BYTES: usize = 1 << 20;
const CONNS: usize = 64;
/// Bytes per connection per iteration with 64 connections: 16 writes of 8 KiB (8 MiB in all).
const PER_CONN_BYTES: usize = 128 * 1024;

struct Setup {
    _pki: pki::Pki,
    listener: TcpListener,
    transport: TlsTransport,
    connector: TlsConnector,
    full_handshake: tokio_rustls::TlsConnector,
}

async fn setup() -> Setup {
    let pki = pki::Pki::new();
    let transport = TlsConfig::new(&pki.server.cert, &pki.server.key)
        .build()
        .expect("server tls");
    let connector = TlsClientConfig::new(&pki.ca.cert)
        .build()
        .expect("client tls");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_file(&pki.ca.cert).expect("ca"))
        .expect("root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    Setup {
        _pki: pki,
        listener,
        transport,
        connector,
        full_handshake: tokio_rustls::TlsConnector::from(Arc::new(config)),
    }
}

async fn tcp_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().expect("addr");
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (accepted.expect("accept").0, client.expect("connect"))
}

/// Writes `total` bytes in 8 KiB chunks on one side while the other reads them all.
async fn pump(
    mut writer: impl AsyncWrite + Unpin,
    mut reader: impl AsyncRead + Unpin,
    total: usize,
) {
    let chunk = [0x5au8; CHUNK];
    let write = async {
        for _ in 0..total / CHUNK {
            writer.write_all(&chunk).await.expect("write");
        }
        writer.flush().await.expect("flush");
        writer
    };
    let read = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < total {
            let n = reader.read(&mut buf).await.expect("read");
            assert!(n > 0, "unexpected end of stream");
            got += n;
        }
        reader
    };
    black_box(tokio::join!(write, read));
}

fn handshakes(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let s = rt.block_on(setup());
    let mut group = c.benchmark_group("tls_handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("tcp_only", |b| {
        b.iter(|| rt.block_on(async { black_box(tcp_pair(&s.listener).await) }));
    });
    group.bench_function("full_tls13", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (server, client) = tcp_pair(&s.listener).await;
                let name = ServerName::try_from("localhost").expect("name");
                let (a, b) = tokio::join!(
                    s.transport.handshake(server),
                    s.full_handshake.connect(name, client)
                );
                black_box((a.expect("server"), b.expect("client")));
            });
        });
    });
    group.finish();
}

fn throughput(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let s = rt.block_on(setup());

    let mut group = c.benchmark_group("tls_throughput");
    group.throughput(Throughput::Bytes(ONE_CONN_BYTES as u64));
    let (mut plain_server, mut plain_client) = rt.block_on(async {
        let (server, client) = tcp_pair(&s.listener).await;
        (
            PlainTcp.handshake(server).await.expect("plain").stream,
            client,
        )
    });
    group.bench_function("plain_1_conn_8k_writes", |b| {
        b.iter(|| rt.block_on(pump(&mut plain_client, &mut plain_server, ONE_CONN_BYTES)));
    });
    let (mut tls_server, mut tls_client) = rt.block_on(async {
        let (server, client) = tcp_pair(&s.listener).await;
        let (a, b) = tokio::join!(
            s.transport.handshake(server),
            s.connector.connect(client, "localhost")
        );
        (a.expect("server").stream, b.expect("client"))
    });
    group.bench_function("tls_1_conn_8k_writes", |b| {
        b.iter(|| rt.block_on(pump(&mut tls_client, &mut tls_server, ONE_CONN_BYTES)));
    });

    group.throughput(Throughput::Bytes((CONNS * PER_CONN_BYTES) as u64));
    let mut plain_pairs = rt.block_on(async {
        let mut pairs = Vec::with_capacity(CONNS);
        for _ in 0..CONNS {
            let (server, client) = tcp_pair(&s.listener).await;
            pairs.push((client, server));
        }
        pairs
    });
    group.bench_function("plain_64_conns_8k_writes", |b| {
        b.iter(|| {
            rt.block_on(run_all(&mut plain_pairs));
        });
    });
    let mut tls_pairs = rt.block_on(async {
        let mut pairs = Vec::with_capacity(CONNS);
        for _ in 0..CONNS {
            let (server, client) = tcp_pair(&s.listener).await;
            let (a, b) = tokio::join!(
                s.transport.handshake(server),
                s.connector.connect(client, "localhost")
            );
            pairs.push((b.expect("client"), a.expect("server").stream));
        }
        pairs
    });
    group.bench_function("tls_64_conns_8k_writes", |b| {
        b.iter(|| {
            rt.block_on(run_all(&mut tls_pairs));
        });
    });
    group.finish();
}

/// Pumps [`PER_CONN_BYTES`] over every pair at once, each pair on its own task.
async fn run_all<C, S>(pairs: &mut Vec<(C, S)>)
where
    C: AsyncWrite + Unpin + Send + 'static,
    S: AsyncRead + Unpin + Send + 'static,
{
    let tasks: Vec<_> = pairs
        .drain(..)
        .map(|(mut client, mut server)| {
            tokio::spawn(async move {
                pump(&mut client, &mut server, PER_CONN_BYTES).await;
                (client, server)
            })
        })
        .collect();
    for task in tasks {
        pairs.push(task.await.expect("pump task"));
    }
}

criterion_group!(benches, handshakes, throughput);
criterion_main!(benches);
