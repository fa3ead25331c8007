//! The `mllp` binary end to end: `serve` with its durable inbox, `send` and its exit codes
//! against test receivers, `bench --json`, flag and config-file errors, SIGTERM drain.
//!
//! Every server binds 127.0.0.1:0 and is found through its `listening on` line. Children are
//! spawned with `kill_on_drop`, so a failing test never leaves one running.

#[path = "support/cli.rs"]
mod cli_support;
#[path = "../../tests/support/pki.rs"]
mod pki;

use cli_support::*;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mllp::ack::{AckCode, ErrorCode};
use mllp::app::{HandlerError, Request, Router};
use mllp::frame::MllpCodec;
use mllp::{Acknowledgment, Client, ClientConfig, Server, ServerHandle};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio_util::codec::Framed;

/// Messages sent with `mllp send` are stored byte for byte (Latin-1 and UTF-8 alike), with
/// LF line endings in the file turned into CR on the wire, and each is reported AA.
#[tokio::test]
async fn send_to_serve_stores_exact_bytes_latin1_and_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, inbox) = Serve::with_inbox(dir.path()).await;

    let latin1 = hl7_with("LAT-1", b"M\xfcller", "|||||||8859/1");
    let utf8 = hl7_with("UTF-1", "Müller-Øre".as_bytes(), "|||||||UNICODE UTF-8");
    // The file uses LF between segments, as an editor would save it.
    let mut file = Vec::new();
    for m in [&latin1, &utf8] {
        file.extend(m.iter().map(|&b| if b == b'\r' { b'\n' } else { b }));
    }
    let input = write(dir.path(), "two.hl7", &file);
    let out = mllp(&["send", "--to", &serve.to(), &input]).await;
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "send failed: {stdout}{}",
        text(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.contains("  AA")).count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("two.hl7#1  LAT-1  AA"), "{stdout}");
    assert!(stdout.contains("sent 2: 2 accepted"), "{stdout}");

    let files = stored(&inbox);
    assert_eq!(files.len(), 2);
    assert_eq!(files["LAT-1"], vec![latin1]);
    assert_eq!(files["UTF-1"], vec![utf8]);
    serve.stop_cleanly().await;
}

/// A 5 MB message goes through and is stored intact.
#[tokio::test]
async fn large_message_is_stored_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, inbox) = Serve::with_inbox(dir.path()).await;
    let mut big = hl7("BIG-1", b"DOE");
    let body: Vec<u8> = (0..5 * 1024 * 1024)
        .map(|i| b'A' + (i % 26) as u8)
        .collect();
    big.extend_from_slice(b"OBX|1|ED|PDF^Report||^AP^PDF^Base64^");
    big.extend_from_slice(&body);
    big.extend_from_slice(b"||||||F\r");
    let input = write(dir.path(), "big.hl7", &big);
    let out = mllp(&["send", "--to", &serve.to(), &input]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let files = stored(&inbox);
    assert_eq!(files["BIG-1"].len(), 1);
    assert!(
        files["BIG-1"][0] == big,
        "stored bytes differ from sent bytes"
    );
    serve.stop_cleanly().await;
}

/// Control ids that look like paths never place a file outside the inbox, and each message is
/// still stored under a sanitised name.
#[tokio::test]
async fn hostile_control_ids_stay_inside_the_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, inbox) = Serve::with_inbox(dir.path()).await;
    let long = "x/".repeat(200);
    let hostile = [
        "../../escaped",
        "/tmp/absolute",
        "..",
        ".",
        "sub/dir/file",
        "..\\..\\windows",
        "name with spaces~and~tildes",
        long.as_str(),
    ];
    let mut file = Vec::new();
    for id in hostile {
        file.extend(hl7(id, b"DOE"));
    }
    let input = write(dir.path(), "hostile.hl7", &file);
    let out = mllp(&["send", "--to", &serve.to(), &input]).await;
    assert!(out.status.success(), "{}", text(&out.stdout));

    let files = stored(&inbox);
    let count: usize = files.values().map(Vec::len).sum();
    assert_eq!(count, hostile.len());
    for id in hostile {
        assert_eq!(files[id].len(), 1, "{id:?} not stored exactly once");
    }
    // Nothing but the inbox and the input file next to it, nothing above it.
    let mut siblings: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    siblings.sort();
    assert_eq!(siblings, ["hostile.hl7", "inbox"]);
    serve.stop_cleanly().await;
}

/// A control id sent three times (a resend) leaves three files: nothing is overwritten.
#[tokio::test]
async fn repeated_control_ids_are_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, inbox) = Serve::with_inbox(dir.path()).await;
    let versions: Vec<Vec<u8>> = [b"FIRST".as_slice(), b"SECOND", b"THIRD"]
        .iter()
        .map(|name| hl7("DUP-1", name))
        .collect();
    let input = write(dir.path(), "dups.hl7", &versions.concat());
    let out = mllp(&["send", "--to", &serve.to(), &input]).await;
    assert!(out.status.success(), "{}", text(&out.stdout));
    let mut kept = stored(&inbox).remove("DUP-1").unwrap();
    kept.sort();
    let mut expected = versions;
    expected.sort();
    assert_eq!(kept, expected);
    serve.stop_cleanly().await;
}

/// A payload that is not HL7, or lacks MSH-9 or MSH-10, is answered AR and never stored; a
/// message in enhanced mode is stored and answered CA.
#[tokio::test]
async fn rejected_messages_are_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, inbox) = Serve::with_inbox(dir.path()).await;
    let stream = TcpStream::connect(serve.addr).await.unwrap();
    let mut peer = Framed::new(stream, MllpCodec::new());
    let mut call = async |payload: Vec<u8>| {
        peer.send(Bytes::from(payload)).await.unwrap();
        let reply = within(peer.next()).await.expect("a reply").unwrap();
        Acknowledgment::parse(reply).expect("an ACK")
    };
    assert_eq!(call(b"hello, not hl7".to_vec()).await.code(), AckCode::AR);
    let no_id = b"MSH|^~\\&|A|B|C|D|20261122||ADT^A01||P|2.5\rPID|1\r".to_vec();
    assert_eq!(call(no_id).await.code(), AckCode::AR);
    let no_type = b"MSH|^~\\&|A|B|C|D|20261122|||NOTYPE-1|P|2.5\rPID|1\r".to_vec();
    assert_eq!(call(no_type).await.code(), AckCode::AR);
    let good = call(hl7("GOOD-1", b"DOE")).await;
    assert_eq!(good.code(), AckCode::AA);
    let enhanced = call(hl7_with("ENH-1", b"DOE", "|||AL|NE")).await;
    assert_eq!(enhanced.code(), AckCode::CA);

    let files = stored(&inbox);
    assert_eq!(files.keys().collect::<Vec<_>>(), ["ENH-1", "GOOD-1"]);
    drop(peer);
    serve.stop_cleanly().await;
}

/// Without a store flag, messages go to the SQLite file `./mllp-inbox.db`; with `--no-inbox`
/// (`--no-store`) they are acknowledged and nothing is written.
#[tokio::test]
async fn default_store_is_sqlite_and_no_inbox_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "one.hl7", &hl7("DEF-1", b"DOE"));

    let with_default = tempfile::tempdir().unwrap();
    let serve = Serve::start(with_default.path(), &[]).await;
    let out = mllp(&["send", "--to", &serve.to(), &input]).await;
    assert!(out.status.success());
    assert!(serve.stop().await.0.success());
    let reader =
        mllp::store::sqlite::SqliteReader::open(with_default.path().join("mllp-inbox.db")).unwrap();
    let rows = reader.list(&Default::default()).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].control_id, "DEF-1");

    let without = tempfile::tempdir().unwrap();
    let serve = Serve::start(without.path(), &["--no-inbox"]).await;
    let out = mllp(&["send", "--to", &serve.to(), &input]).await;
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("DEF-1  AA"));
    assert!(serve.stop().await.0.success());
    assert_eq!(std::fs::read_dir(without.path()).unwrap().count(), 0);
}

/// `--bind 127.0.0.1:0` prints the port actually bound, and it accepts connections.
#[tokio::test]
async fn bind_port_zero_prints_the_real_port() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &["--no-inbox"]).await;
    assert_eq!(serve.addr.ip().to_string(), "127.0.0.1");
    assert_ne!(serve.addr.port(), 0);
    TcpStream::connect(serve.addr)
        .await
        .expect("connect to printed address");
    let (status, stdout, _) = serve.stop().await;
    assert!(status.success());
    assert!(stdout.contains("shutdown complete"), "{stdout}");
}

/// SIGTERM while eight connections send: every message acknowledged AA is in the inbox, and
/// the server drains and exits 0 with a drain report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, inbox) = Serve::with_inbox(dir.path()).await;

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(Notify::new());
    // Driven with join_all rather than spawned: the clients run concurrently with the step that
    // sends SIGTERM, on this task.
    let to = serve.to();
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (acked, count, enough, to) =
                (acked.clone(), count.clone(), enough.clone(), to.clone());
            async move {
                let mut config = ClientConfig::default();
                config.max_retries = 0;
                config.reply_timeout = Duration::from_secs(5);
                let mut client = Client::with_config(to, config);
                for i in 0.. {
                    let id = format!("LOAD-{c}-{i}");
                    match client.send(Bytes::from(hl7(&id, b"DOE"))).await {
                        Ok(Some(ack)) => {
                            assert_eq!(ack.code(), AckCode::AA);
                            acked.lock().unwrap().push(id);
                            if count.fetch_add(1, Ordering::SeqCst) + 1 == 40 {
                                enough.notify_one();
                            }
                        }
                        Ok(None) => panic!("original-mode messages are always acknowledged"),
                        // The server closed the connection or refused a new one: the load ends.
                        Err(_) => break,
                    }
                }
            }
        })
        .collect();
    let stop = async {
        enough.notified().await;
        serve.stop().await
    };
    let (_, (status, stdout, stderr)) =
        within(async { tokio::join!(futures_util::future::join_all(clients), stop) }).await;
    assert!(status.success(), "exit {status:?}; stderr:\n{stderr}");
    assert!(
        stdout.contains("shutdown complete") && stdout.contains("0 aborted"),
        "{stdout}"
    );
    let files = stored(&inbox);
    let acked = acked.lock().unwrap();
    assert!(acked.len() >= 40);
    for id in acked.iter() {
        assert!(
            files.contains_key(id),
            "{id} was acknowledged but is not in the inbox"
        );
    }
}

/// JSON logs: one JSON object per line; at debug, a per-message line with the control id under
/// the telemetry contract's keys (MSH-9.1, MSH-9.2, MSH-10), and never a field outside MSH.
#[tokio::test]
async fn json_logs_carry_msh_metadata_only() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_with_env(
        dir.path(),
        &["--no-inbox", "--log-format", "json"],
        &[("RUST_LOG", "debug")],
    )
    .await;
    let input = write(dir.path(), "one.hl7", &hl7("LOG-1", b"DOE"));
    assert!(
        mllp(&["send", "--to", &serve.to(), &input])
            .await
            .status
            .success()
    );
    let (status, _, stderr) = serve.stop().await;
    assert!(status.success());
    let mut saw_message = false;
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.is_object());
        assert!(
            !line.contains(SENTINEL),
            "patient data in a log line: {line}"
        );
        saw_message |= line.contains("LOG-1");
    }
    assert!(saw_message, "no debug line names the control id:\n{stderr}");
    // The per-message line uses the telemetry contract's keys with their meaning.
    let line = stderr
        .lines()
        .find(|l| l.contains("message accepted (not stored)"))
        .unwrap_or_else(|| panic!("no per-message line:\n{stderr}"));
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(value["fields"]["hl7.message_type"], "ADT", "{line}");
    assert_eq!(value["fields"]["hl7.trigger_event"], "A01", "{line}");
    assert_eq!(value["fields"]["hl7.control_id"], "LOG-1", "{line}");
}

/// Invalid flags are refused with exit status 2 and a message naming the flag.
#[tokio::test]
async fn bad_flags_are_rejected_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["serve", "--idle-timeout", "banana"], "--idle-timeout"),
        (&["serve", "--frame-timeout", "0s"], "--frame-timeout"),
        (&["serve", "--max-connections", "0"], "--max-connections"),
        (&["serve", "--max-in-flight", "many"], "--max-in-flight"),
        (
            &["serve", "--max-message-size", "10parsecs"],
            "--max-message-size",
        ),
        (&["serve", "--framing", "sloppy"], "--framing"),
        (&["serve", "--log-format", "xml"], "--log-format"),
        (&["serve", "--inbox", "x", "--no-inbox"], "--no-store"),
        (&["serve", "--store", "x", "--inbox", "y"], "--store"),
        (&["serve", "--store", "mongodb:x"], "--store"),
        (&["serve", "--dedup-window", "soon"], "--dedup-window"),
        (&["serve", "--retention", "0s"], "--retention"),
        (
            &["serve", "--store-max-size", "10parsecs"],
            "--store-max-size",
        ),
        (&["send", "file.hl7"], "--to"),
        (
            &["send", "--to", "127.0.0.1:1", "--timeout", "soon", "f"],
            "--timeout",
        ),
        (
            &["bench", "--to", "127.0.0.1:1", "--connections", "0"],
            "--connections",
        ),
        // Incomplete or unusable TLS and admission settings say what is wrong.
        (&["serve", "--tls-cert", "server.pem"], "--tls-key"),
        (&["serve", "--tls-client-ca", "ca.pem"], "--tls-cert"),
        (
            &[
                "serve",
                "--tls-cert",
                "missing-cert.pem",
                "--tls-key",
                "missing-key.pem",
            ],
            "missing-cert.pem",
        ),
        (&["serve", "--allow-peer", "banana"], "--allow-peer"),
        (
            &["serve", "--handshake-timeout", "0s"],
            "--handshake-timeout",
        ),
        (
            &["serve", "--message-trace-ratio", "2"],
            "--message-trace-ratio",
        ),
        (
            &["serve", "--message-trace-limit", "lots"],
            "--message-trace-limit",
        ),
        (
            &["serve", "--handler-failure", "ignore"],
            "--handler-failure",
        ),
        (&["serve", "--max-restarts", "-1"], "--max-restarts"),
        (&["serve", "--max-restarts", "many"], "--max-restarts"),
        (&["serve", "--restart-window", "0s"], "--restart-window"),
        (&["serve", "--restart-backoff", "soon"], "--restart-backoff"),
        (
            &["serve", "--restart-max-backoff", "later"],
            "--restart-max-backoff",
        ),
        // A restart delay cap below the first delay names both flags, also when one of them
        // keeps its default (100ms).
        (
            &[
                "serve",
                "--restart-backoff",
                "2s",
                "--restart-max-backoff",
                "1s",
            ],
            "--restart-max-backoff must not be less than --restart-backoff",
        ),
        (
            &["serve", "--restart-max-backoff", "50ms"],
            "--restart-max-backoff must not be less than --restart-backoff (--restart-backoff 100ms",
        ),
    ];
    for (args, flag) in cases {
        let out = mllp(args).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?} does not name {flag}: {stderr}"
        );
    }
}

/// A config file with an unknown key, or a bad value, is refused naming the key (exit 2).
#[tokio::test]
async fn bad_config_file_is_rejected_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (content, key) in [
        ("max-conections = 5\n", "did you mean `max-connections`?"),
        (
            "[[listener]]\nbind = \"127.0.0.1:0\"\nframeing = \"skip\"\n",
            "did you mean `framing`?",
        ),
        ("max-connections = 0\n", "max-connections"),
        ("idle-timeout = \"later\"\n", "idle-timeout"),
        ("framing = \"sloppy\"\n", "sloppy"),
        ("message-trace-ratio = 1.5\n", "message-trace-ratio"),
        ("message-trace-limit = -1\n", "message-trace-limit"),
        ("inbox = \"\"\n", "inbox"),
        ("allow-peer = []\n", "allow-peer"),
        ("allow-client-subject = []\n", "allow-client-subject"),
        ("handler-failure = \"ignore\"\n", "handler-failure"),
        ("max-restarts = -1\n", "max-restarts"),
        ("max_restarts = \"many\"\n", "max-restarts"),
        ("restart-window = \"0s\"\n", "restart-window"),
        ("restart-backoff = \"soon\"\n", "restart-backoff"),
        ("restart-max-backoff = \"later\"\n", "restart-max-backoff"),
    ] {
        let config = write(dir.path(), "mllp.toml", content.as_bytes());
        let out = mllp(&[
            "serve",
            "--no-inbox",
            "--bind",
            "127.0.0.1:0",
            "--config",
            &config,
        ])
        .await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{content}: {stderr}");
        assert!(stderr.contains(key), "{content}: {stderr}");
        assert!(stderr.contains("mllp.toml"), "{content}: {stderr}");
    }
    // Keys that are each valid but do not fit together are refused naming both.
    let config = write(
        dir.path(),
        "mllp.toml",
        b"restart-backoff = \"2s\"\nrestart-max-backoff = \"1s\"\n",
    );
    let out = mllp(&[
        "serve",
        "--no-inbox",
        "--bind",
        "127.0.0.1:0",
        "--config",
        &config,
    ])
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("restart-max-backoff must not be less than --restart-backoff"),
        "{stderr}"
    );
}

/// Settings from the config file apply, and a flag wins over the file: a 100-byte limit from
/// the file refuses the message, the same file with `--max-message-size 1MiB` accepts it.
#[tokio::test]
async fn config_file_applies_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "mllp.toml",
        b"max-message-size = 100\nno-inbox = true\nshutdown_grace = \"2s\"\nmessage-trace-ratio = 0.5\nmessage-trace-limit = 100\n",
    );
    let input = write(dir.path(), "one.hl7", &hl7("CFG-1", b"DOE"));

    let serve = Serve::start(dir.path(), &["--config", &config]).await;
    let out = mllp(&["send", "--to", &serve.to(), "--retries", "0", &input]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    assert!(serve.stop().await.0.success());

    let serve = Serve::start(
        dir.path(),
        &[
            "--config",
            &config,
            "--max-message-size",
            "1MiB",
            "--message-trace-limit",
            "none",
        ],
    )
    .await;
    let out = mllp(&["send", "--to", &serve.to(), &input]).await;
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(serve.stop().await.0.success());
    assert!(!dir.path().join("mllp-inbox").exists());
    assert!(!dir.path().join("mllp-inbox.db").exists());
}

/// The handler-failure and restart settings are accepted by flag and by key, every policy
/// name included, and the server then answers AA as usual. (The serve handler only writes to
/// the inbox, so a panic or timeout cannot be provoked deterministically to show the policy
/// acting; the library's tests cover that.)
#[tokio::test]
async fn handler_failure_and_restart_settings_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "one.hl7", &hl7("POL-1", b"DOE"));
    let config = write(
        dir.path(),
        "mllp.toml",
        b"no-inbox = true\nhandler-failure = \"no-response\"\nmax-restarts = 5\n\
          restart-window = \"10s\"\nrestart_backoff = \"50ms\"\nrestart-max-backoff = \"2s\"\n",
    );
    let runs: [&[&str]; 4] = [
        &["--config", &config],
        &[
            "--no-inbox",
            "--handler-failure",
            "respond",
            "--max-restarts",
            "0",
        ],
        &[
            "--no-inbox",
            "--handler-failure",
            "close",
            "--restart-window",
            "1m",
            "--restart-backoff",
            "0s",
            "--restart-max-backoff",
            "0s",
        ],
        &["--config", &config, "--handler-failure", "close"],
    ];
    for args in runs {
        let serve = Serve::start(dir.path(), args).await;
        let out = mllp(&["send", "--to", &serve.to(), &input]).await;
        assert!(out.status.success(), "{args:?}: {}", text(&out.stdout));
        serve.stop_cleanly().await;
    }
}

/// A restart flag wins over the same key in the file: a file whose delay cap is below its
/// first delay is refused alone, and starts once a flag replaces either value.
#[tokio::test]
async fn restart_flags_win_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "mllp.toml",
        b"no-inbox = true\nrestart-backoff = \"2s\"\nrestart-max-backoff = \"1s\"\n",
    );
    let out = mllp(&["serve", "--bind", "127.0.0.1:0", "--config", &config]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--restart-backoff 2s, --restart-max-backoff 1s"),
        "{}",
        text(&out.stderr)
    );
    for flag in [
        ["--restart-max-backoff", "3s"],
        ["--restart-backoff", "500ms"],
    ] {
        let serve = Serve::start(dir.path(), &["--config", &config, flag[0], flag[1]]).await;
        serve.stop_cleanly().await;
    }
}

/// An in-process receiver that answers every message through `router`.
async fn receiver(router: Router) -> ServerHandle {
    Server::builder()
        .router(router)
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn()
        .await
        .unwrap()
}

/// A raw receiver: for each connection, reads frames and passes each to `answer`, which may
/// return a reply frame. Returns its address.
async fn raw_receiver(answer: fn(&Bytes) -> Option<Vec<u8>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut framed = Framed::new(stream, MllpCodec::new());
                while let Some(Ok(frame)) = framed.next().await {
                    if let Some(reply) = answer(&frame) {
                        let _ = framed.send(Bytes::from(reply)).await;
                    }
                }
            });
        }
    });
    addr
}

/// `mllp send` exits 0 on AA, 1 on AE or AR, 3 on timeout, mismatched ACK or refused
/// connection, 2 on unreadable input or a message without MSH-10; each with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_exit_codes_follow_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "one.hl7", &hl7("EXIT-1", b"DOE"));

    let ok = receiver(Router::new().route("*", |_r: Request| async {})).await;
    let out = mllp(&["send", "--to", &ok.local_addr().to_string(), &input]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    let ae = receiver(Router::new().route("*", |_r: Request| async {
        Err::<(), _>(HandlerError::internal("database unavailable"))
    }))
    .await;
    let out = mllp(&["send", "--to", &ae.local_addr().to_string(), &input]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("EXIT-1  AE  database unavailable"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("1 error (AE/CE)"));
    assert!(text(&out.stderr).contains("negative acknowledgment"));

    let ar = receiver(Router::new().route("*", |_r: Request| async {
        Err::<(), _>(HandlerError::reject(
            ErrorCode::UnsupportedEventCode,
            "not taking admissions",
        ))
    }))
    .await;
    let out = mllp(&["send", "--to", &ar.local_addr().to_string(), &input]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("EXIT-1  AR"),
        "{}",
        text(&out.stdout)
    );

    let silent = raw_receiver(|_| None).await;
    let out = mllp(&[
        "send",
        "--to",
        &silent.to_string(),
        "--timeout",
        "300ms",
        "--retries",
        "0",
        &input,
    ])
    .await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stdout).contains("no acknowledgment within"),
        "{}",
        text(&out.stdout)
    );

    let liar = raw_receiver(|_| {
        Some(b"MSH|^~\\&|R|R|S|S|20261122||ACK^A01^ACK|X1|P|2.5\rMSA|AA|SOMEONE-ELSE\r".to_vec())
    })
    .await;
    let out = mllp(&["send", "--to", &liar.to_string(), &input]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stdout).contains("SOMEONE-ELSE"),
        "{}",
        text(&out.stdout)
    );

    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = closed.local_addr().unwrap().to_string();
    drop(closed);
    let out = mllp(&["send", "--to", &refused, "--retries", "0", &input, &input]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stdout).contains("1 not sent"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("cannot reach"),
        "{}",
        text(&out.stderr)
    );

    let missing = path_str(&dir.path().join("missing.hl7"));
    let out = mllp(&["send", "--to", &refused, &missing]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.hl7"));

    let no_id = write(
        dir.path(),
        "noid.hl7",
        b"MSH|^~\\&|A|B|C|D|1||ADT^A01||P|2.5\r",
    );
    let out = mllp(&["send", "--to", &ok.local_addr().to_string(), &no_id]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("MSH-10"),
        "{}",
        text(&out.stderr)
    );

    for server in [ok, ae, ar] {
        within(server.shutdown()).await;
    }
}

/// A directory is sent in file-name order, hidden files skipped.
#[tokio::test]
async fn send_walks_a_directory_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    std::fs::create_dir(&outbox).unwrap();
    write(&outbox, "b.hl7", &hl7("ORDER-2", b"DOE"));
    write(
        &outbox,
        "a.hl7",
        &[hl7("ORDER-0", b"DOE"), hl7("ORDER-1", b"DOE")].concat(),
    );
    write(&outbox, ".tmp-1-2", b"not a message");
    let ok = receiver(Router::new().route("*", |_r: Request| async {})).await;
    let out = mllp(&[
        "send",
        "--to",
        &ok.local_addr().to_string(),
        &path_str(&outbox),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ids: Vec<String> = text(&out.stdout)
        .lines()
        .filter(|l| l.contains("  AA"))
        .map(|l| l.split("  ").nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["ORDER-0", "ORDER-1", "ORDER-2"]);
    within(ok.shutdown()).await;
}

/// `mllp bench --json` prints one JSON line whose counts add up, closed-loop and pipelined.
#[tokio::test]
async fn bench_json_output_parses() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &["--no-inbox", "--max-in-flight", "4"]).await;
    for pipeline in ["1", "4"] {
        let out = mllp(&[
            "bench",
            "--to",
            &serve.to(),
            "--connections",
            "3",
            "--messages",
            "60",
            "--pipeline",
            pipeline,
            "--json",
        ])
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        let v: serde_json::Value = serde_json::from_str(&stdout).expect("bench prints JSON");
        assert_eq!(v["ok"], 60);
        assert_eq!(v["errors"], 0);
        assert_eq!(v["connections"], 3);
        assert!(v["throughput_per_s"].as_f64().unwrap() > 0.0);
        let lat = &v["latency_us"];
        assert!(lat["p50"].as_u64().unwrap() > 0);
        assert!(lat["p50"].as_u64() <= lat["p99"].as_u64());
        assert!(lat["p99"].as_u64() <= lat["max"].as_u64());
        assert!(v["message_bytes"].as_u64().unwrap() > 900);
    }
    assert!(serve.stop().await.0.success());
}

/// Negative ACKs are counted by code and make bench exit 1.
#[tokio::test]
async fn bench_counts_negative_acks_by_kind() {
    let ae = receiver(Router::new().route("*", |_r: Request| async {
        Err::<(), _>(HandlerError::internal("no"))
    }))
    .await;
    let out = mllp(&[
        "bench",
        "--to",
        &ae.local_addr().to_string(),
        "--messages",
        "10",
        "--json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], 0);
    assert_eq!(v["error_kinds"]["AE"], 10);
    within(ae.shutdown()).await;
}

/// A stand-in OTLP/HTTP collector: answers every request 200 and reports its path.
#[cfg(feature = "otlp")]
async fn collector(listener: TcpListener, paths: mpsc::UnboundedSender<String>) {
    use tokio::io::AsyncWriteExt;
    while let Ok((mut stream, _)) = listener.accept().await {
        let paths = paths.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            loop {
                // One request: headers, then a content-length body (keep-alive).
                let head_end = loop {
                    if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    let mut chunk = [0u8; 8192];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                let length: usize = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    let mut chunk = [0u8; 8192];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                buf.drain(..head_end + length);
                let _ = paths.send(path);
                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                if stream.write_all(ok).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// `--otlp-endpoint` exports the server's traces and metrics over OTLP/HTTP (flushed at
/// shutdown); an https:// endpoint is refused naming the flag.
#[cfg(feature = "otlp")]
#[tokio::test]
async fn otlp_endpoint_exports_traces_and_metrics() {
    let out = mllp(&[
        "serve",
        "--no-inbox",
        "--otlp-endpoint",
        "https://127.0.0.1:1",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--otlp-endpoint"),
        "{}",
        text(&out.stderr)
    );

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (tx, mut paths) = mpsc::unbounded_channel();
    tokio::spawn(collector(listener, tx));

    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &["--no-inbox", "--otlp-endpoint", &endpoint]).await;
    let input = write(dir.path(), "one.hl7", &hl7("OTEL-1", b"DOE"));
    assert!(
        mllp(&["send", "--to", &serve.to(), &input])
            .await
            .status
            .success()
    );
    let (status, _, stderr) = serve.stop().await;
    assert!(status.success(), "{stderr}");
    // The exporters got their 200s before the process exited, so every path is queued.
    let mut seen = Vec::new();
    while let Ok(path) = paths.try_recv() {
        seen.push(path);
    }
    assert!(seen.iter().any(|p| p == "/v1/traces"), "{seen:?}\n{stderr}");
    assert!(
        seen.iter().any(|p| p == "/v1/metrics"),
        "{seen:?}\n{stderr}"
    );
}

/// `serve` over mutual TLS and `send` with a client certificate: the message is acknowledged
/// and stored; a plaintext `send` to the TLS port fails as a transport error (exit 3).
#[tokio::test]
async fn tls_flags_serve_and_send_over_mutual_tls() {
    let pki = pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    let serve = Serve::start(
        dir.path(),
        &[
            "--inbox",
            &path_str(&inbox),
            "--tls-cert",
            &path_str(&pki.server.cert),
            "--tls-key",
            &path_str(&pki.server.key),
            "--tls-client-ca",
            &path_str(&pki.ca.cert),
            "--allow-client-subject",
            "lab-sender",
            "--allow-peer",
            "127.0.0.0/8",
        ],
    )
    .await;
    let input = write(dir.path(), "one.hl7", &hl7("TLS-1", b"DOE"));
    let out = mllp(&[
        "send",
        "--to",
        &serve.to(),
        "--tls-ca",
        &path_str(&pki.ca.cert),
        "--tls-cert",
        &path_str(&pki.client.cert),
        "--tls-key",
        &path_str(&pki.client.key),
        &input,
    ])
    .await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(stored(&inbox).len(), 1);

    let plain = mllp(&[
        "send",
        "--to",
        &serve.to(),
        "--timeout",
        "5s",
        "--retries",
        "0",
        &input,
    ])
    .await;
    assert_eq!(plain.status.code(), Some(3), "{}", text(&plain.stderr));
    assert_eq!(
        stored(&inbox).len(),
        1,
        "nothing stored from the plaintext sender"
    );

    // Without a client certificate: refused in the handshake, and the log says why.
    let anonymous = mllp(&[
        "send",
        "--to",
        &serve.to(),
        "--tls-ca",
        &path_str(&pki.ca.cert),
        "--retries",
        "0",
        &input,
    ])
    .await;
    assert_eq!(
        anonymous.status.code(),
        Some(3),
        "{}",
        text(&anonymous.stdout)
    );
    let (status, _, stderr) = serve.stop().await;
    assert!(status.success(), "{stderr}");
    let closed = stderr
        .lines()
        .find(|l| l.contains("close_reason=\"handshake_failed\""))
        .unwrap_or_else(|| panic!("no handshake_failed line:\n{stderr}"));
    assert!(closed.contains("close_detail="), "{closed}");
}

/// `send` follows each message's MSH-15 as the receiver does: a message with `NE` is not waited
/// for and one with `ER` is accepted by silence, so the whole fixture corpus (which has both)
/// goes through with exit 0 and each message is stored exactly once.
#[tokio::test]
async fn send_follows_msh_15_of_enhanced_mode_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, inbox) = Serve::with_inbox(dir.path()).await;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
    let out = mllp(&["send", "--to", &serve.to(), "--timeout", "1s", fixtures]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("oru_r01.hl7#1  LAB-000042  sent (no ACK requested by MSH-15)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("adt_a08.hl7#1  UPD-88  sent (no ACK requested by MSH-15)"),
        "{stdout}"
    );
    // Files only: subdirectories (fixtures of other tests) are not sent.
    let sent = std::fs::read_dir(fixtures)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_file())
        .count();
    // Shown if the test fails: what send reported for each message.
    println!("{stdout}");
    // The NE messages were not waited for: their files may still be on the way.
    let files: usize = stored_when(&inbox, sent).await.values().map(Vec::len).sum();
    assert_eq!(files, sent, "one stored file per message, no resends");
    let bench = mllp(&[
        "bench",
        "--to",
        &serve.to(),
        "--connections",
        "1",
        "--messages",
        "1",
        "--message",
        &format!("{fixtures}/oru_r01.hl7"),
    ])
    .await;
    assert_eq!(bench.status.code(), Some(2), "{}", text(&bench.stderr));
    assert!(
        text(&bench.stderr).contains("MSH-15"),
        "{}",
        text(&bench.stderr)
    );
    serve.stop_cleanly().await;
}

/// SIGHUP does not stop a server without TLS (its default action would kill the process): it is
/// logged and ignored, the server goes on answering, and SIGTERM still drains it cleanly.
#[tokio::test]
async fn sighup_does_not_stop_a_plain_server() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "one.hl7", &hl7("HUP-1", b"DOE"));
    let serve = Serve::start(dir.path(), &["--no-inbox"]).await;
    serve.hangup();
    let out = mllp(&["send", "--to", &serve.to(), &input]).await;
    assert!(out.status.success(), "{}", text(&out.stdout));
    serve.hangup();
    serve.stop_cleanly().await;
}

/// `serve --no-inbox` over TLS with `pki`'s server certificate.
async fn serve_tls(dir: &std::path::Path, pki: &pki::Pki) -> Serve {
    Serve::start(
        dir,
        &[
            "--no-inbox",
            "--tls-cert",
            &path_str(&pki.server.cert),
            "--tls-key",
            &path_str(&pki.server.key),
        ],
    )
    .await
}

/// A sender whose TLS handshake fails (the receiver's certificate is from a CA it does not
/// trust) is told the handshake failed, not that the receiver cannot be reached, which would
/// send an operator to the network.
#[tokio::test]
async fn send_says_the_tls_handshake_failed_not_that_the_receiver_is_unreachable() {
    let pki = pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "one.hl7", &hl7("TLS-1", b"DOE"));
    let serve = serve_tls(dir.path(), &pki).await;
    let out = mllp(&[
        "send",
        "--to",
        &serve.to(),
        "--tls-ca",
        &path_str(&pki.other_ca.cert),
        "--retries",
        "0",
        &input,
    ])
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("the TLS handshake with {} failed", serve.to())),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot reach"), "{stderr}");
    serve.stop_cleanly().await;
}

/// SIGHUP re-reads the certificate files and checks what it read: a certificate that has
/// expired is logged as an error (clients refuse it), and the server goes on serving.
#[tokio::test]
async fn sighup_reload_of_an_expired_certificate_is_an_error_in_the_log() {
    let pki = pki::Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let serve = serve_tls(dir.path(), &pki).await;
    serve.stderr_shows("tls certificate valid").await;
    std::fs::copy(&pki.expired.cert, &pki.server.cert).unwrap();
    std::fs::copy(&pki.expired.key, &pki.server.key).unwrap();
    serve.hangup();
    serve.stderr_shows("tls certificates reloaded").await;
    serve
        .stderr_shows("tls certificate has expired: clients that verify it refuse every handshake")
        .await;
    serve.stop_cleanly().await;
}

/// A flag refused as a usage error (exit 2) leaves nothing behind: every setting is checked
/// before the inbox directory is created. A `--bind` host that does not resolve is such an
/// error.
#[tokio::test]
async fn refused_flags_create_no_inbox() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["serve", "--bind", "127.0.0.1:0", "--allow-peer", "nope"][..],
        // `.invalid` never resolves (RFC 6761).
        &["serve", "--bind", "nosuchhost.invalid:2575"],
        &["serve", "--bind", "127.0.0.1:99999"],
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--restart-backoff",
            "2s",
            "--restart-max-backoff",
            "1s",
        ],
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--tls-cert",
            "missing-cert.pem",
            "--tls-key",
            "missing-key.pem",
        ],
    ] {
        let out = mllp_in(dir.path(), None, args).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            !dir.path().join("mllp-inbox").exists() && !dir.path().join("mllp-inbox.db").exists(),
            "{args:?} created the store"
        );
    }
}

/// When `send` stops early (an unreachable receiver, `--stop-on-error`), every message left
/// unsent gets its own `NOT SENT` line, with `--quiet` too, so the operator knows exactly which
/// ones to send again.
#[tokio::test]
async fn send_lists_every_message_it_did_not_send() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "three.hl7",
        &[
            hl7("LEFT-1", b"DOE"),
            hl7("LEFT-2", b"DOE"),
            hl7("LEFT-3", b"DOE"),
        ]
        .concat(),
    );
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = closed.local_addr().unwrap().to_string();
    drop(closed);
    for quiet in [false, true] {
        let mut args = vec!["send", "--to", &refused, "--retries", "0", &input];
        if quiet {
            args.push("--quiet");
        }
        let out = mllp(&args).await;
        assert_eq!(out.status.code(), Some(3));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("three.hl7#1  LEFT-1  FAILED"), "{stdout}");
        assert!(stdout.contains("three.hl7#2  LEFT-2  NOT SENT"), "{stdout}");
        assert!(stdout.contains("three.hl7#3  LEFT-3  NOT SENT"), "{stdout}");
        assert!(stdout.contains("2 not sent"), "{stdout}");
    }

    let ae = receiver(Router::new().route("*", |_r: Request| async {
        Err::<(), _>(HandlerError::internal("no"))
    }))
    .await;
    let out = mllp(&[
        "send",
        "--to",
        &ae.local_addr().to_string(),
        "--stop-on-error",
        "-q",
        &input,
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].ends_with("#1  LEFT-1  AE  no"), "{stdout}");
    assert!(lines[1].ends_with("#2  LEFT-2  NOT SENT"), "{stdout}");
    assert!(lines[2].ends_with("#3  LEFT-3  NOT SENT"), "{stdout}");
    within(ae.shutdown()).await;
}

/// Replaying an inbox sends each stored message byte for byte, even one with a line feed inside
/// a field (senders put raw LFs in report text): the LF is data in a CR-terminated file, not a
/// segment break that would cut the field and invent a segment.
#[tokio::test]
async fn send_replays_an_inbox_message_with_a_line_feed_in_a_field_intact() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("replay");
    std::fs::create_dir(&outbox).unwrap();
    let original = b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20261122120000||ORU^R01|REPLAY-LF|P|2.5\r\
        OBX|1|TX|TEXT||Result:\nNEG||||||F\r"
        .to_vec();
    write(
        &outbox,
        "20261122T120000.000001Z-REPLAY-LF-1-1.hl7",
        &original,
    );
    let (serve, inbox) = Serve::with_inbox(dir.path()).await;
    let out = mllp(&["send", "--to", &serve.to(), &path_str(&outbox)]).await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serve.stop_cleanly().await;
    assert_eq!(stored(&inbox)["REPLAY-LF"], vec![original]);
}

/// A message whose segments end in CR with a line feed inside a field (report text) is sent
/// whole and arrives byte for byte: the up-front check is the client's own, which reads a bare
/// LF in such a message as data, not as a broken segment.
#[tokio::test]
async fn send_sends_a_message_with_a_line_feed_inside_a_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "a.hl7", &hl7("UPFRONT-1", b"DOE"));
    let payload: &[u8] = b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20261122120000||ORU^R01|UPFRONT-2|P|2.5\r\
          OBX|1|TX|TEXT||first line\nsecond line||||||F\r";
    let other = write(dir.path(), "b.hl7", payload);
    let (serve, inbox) = Serve::with_inbox(dir.path()).await;
    let out = mllp(&["send", "--to", &serve.to(), &good, &other]).await;
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serve.stop_cleanly().await;
    let stored = stored(&inbox);
    assert_eq!(stored["UPFRONT-2"], [payload.to_vec()]);
    assert_eq!(stored.len(), 2);
}

/// `--timeout` bounds the write as well as the wait for the ACK: against a receiver that
/// accepts connections but never reads, a message too large for the socket buffers is counted
/// as a timeout and bench ends with status 3 instead of hanging.
#[tokio::test]
async fn bench_does_not_hang_on_a_receiver_that_stops_reading() {
    let dir = tempfile::tempdir().unwrap();
    // Connections complete in the kernel's backlog; nothing ever reads them.
    let stalled = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut big = hl7("BIG-1", b"DOE");
    big.extend_from_slice(b"OBX|1|ED|PDF||");
    big.resize(big.len() + 32 * 1024 * 1024, b'A');
    big.extend_from_slice(b"\r");
    let message = write(dir.path(), "big.hl7", &big);
    let out = mllp(&[
        "bench",
        "--to",
        &stalled.local_addr().unwrap().to_string(),
        "--messages",
        "1",
        "--timeout",
        "300ms",
        "--message",
        &message,
        "--json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error_kinds"]["timeout"], 1, "{v}");
    drop(stalled);
}

/// An invalid `RUST_LOG` is refused by every command (exit 2, naming the variable) before
/// anything runs, rather than logging something other than what was asked for.
#[tokio::test]
async fn invalid_rust_log_is_refused_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "one.hl7", &hl7("LOG-1", b"DOE"));
    // A receiver that is never served: refused before it, send and bench never get that far.
    let receiver = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let to = receiver.local_addr().unwrap().to_string();
    for args in [
        &["serve", "--bind", "127.0.0.1:0", "--no-inbox"][..],
        &["send", "--to", &to, &input],
        &["bench", "--to", &to, "-n", "1"],
    ] {
        let out = mllp_in(dir.path(), Some("info,[=nonsense"), args).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("invalid RUST_LOG"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}
