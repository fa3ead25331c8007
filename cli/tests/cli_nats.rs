//! `mllp serve --store nats://…` and `mllp relay`, as binaries, against a real nats-server:
//! stored then acknowledged, a resend stored once, limits refused at start, and a relay
//! killed with SIGKILL that resumes without losing a message.

#[path = "support/cli.rs"]
mod cli_support;
#[path = "../../tests/support/nats.rs"]
mod nats_server;

use std::path::Path;
use std::process::Stdio;

use cli_support::*;
use mllp::store::sqlite::{Filter, SqliteReader};
use nats_server::NatsServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn stored_ids(db: &Path) -> Vec<String> {
    let reader = SqliteReader::open(db).unwrap();
    let mut filter = Filter::default();
    filter.oldest_first = true;
    reader
        .list(&filter)
        .unwrap()
        .into_iter()
        .map(|s| s.control_id)
        .collect()
}

/// Messages sent to `serve --store nats://` are AA'd (the resend too) and in the stream once;
/// `mllp relay --from nats://` then delivers each once, in order, to another receiver, and
/// prints one JSON line per message.
#[tokio::test]
async fn serve_stores_in_jetstream_and_relay_delivers_downstream() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("{}/HL7", nats.url());
    let serve = Serve::start(
        dir.path(),
        &[
            "--store",
            &store,
            "--create-stream",
            "--max-message-size",
            "512KiB",
        ],
    )
    .await;
    let a = write(dir.path(), "a.hl7", &hl7("JS-1", b"DOE"));
    let b = write(dir.path(), "b.hl7", &hl7("JS-2", b"ROE"));
    let out = mllp(&["send", "--to", &serve.to(), &a, &b, &a]).await;
    let sent = text(&out.stdout);
    assert!(out.status.success(), "{sent}{}", text(&out.stderr));
    assert_eq!(sent.matches("  AA").count(), 3, "{sent}");
    let (status, _, stderr) = serve.stop().await;
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains(SENTINEL), "PHI in the log");

    let down_dir = tempfile::tempdir().unwrap();
    let down = Serve::start(down_dir.path(), &[]).await;
    let out = mllp(&[
        "relay",
        "--from",
        &store,
        "--to",
        &down.to(),
        "--create-stream",
        "--no-follow",
        "--json",
    ])
    .await;
    let lines = text(&out.stdout);
    assert!(out.status.success(), "{lines}{}", text(&out.stderr));
    let delivered: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "delivered")
        .collect();
    let ids: Vec<&str> = delivered
        .iter()
        .map(|v| v["control_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["JS-1", "JS-2"]);
    assert!(delivered.iter().all(|v| v["ack"] == "AA"));
    down.stop_cleanly().await;
    assert_eq!(
        stored_ids(&down_dir.path().join("mllp-inbox.db")),
        ["JS-1", "JS-2"]
    );
}

/// The default max message size (10 MiB) above the server's max_payload (1 MB by default) is
/// refused at start with exit status 2 and what to change, before any stream is created; so is
/// a missing stream.
#[tokio::test]
async fn serve_refuses_a_log_that_cannot_take_its_largest_message() {
    let nats = NatsServer::start();
    let store = format!("{}/HL7", nats.url());
    let out = mllp(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--store",
        &store,
        "--create-stream",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("the server's max_payload is 1048576 bytes"),
        "{err}"
    );
    assert!(
        err.contains("lower the max message size to 1044480"),
        "{err}"
    );

    let out = mllp(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--store",
        &store,
        "--max-message-size",
        "512KiB",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("stream HL7 not found") && err.contains("--create-stream"),
        "{err}"
    );
}

/// `mllp relay` killed with SIGKILL mid-run and started again: every message reaches the
/// downstream; the one in flight at the kill may be sent twice (same MSH-10), and the
/// downstream `mllp serve` recognises it, so its store holds each message once.
#[tokio::test]
async fn relay_killed_with_sigkill_resumes_and_the_downstream_stores_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let up = Serve::start(dir.path(), &[]).await;
    let files: Vec<String> = (0..60)
        .map(|i| {
            write(
                dir.path(),
                &format!("m{i:03}.hl7"),
                &hl7(&format!("R-{i:03}"), b"DOE"),
            )
        })
        .collect();
    let to = up.to();
    let mut args = vec!["send", "--to", to.as_str()];
    args.extend(files.iter().map(String::as_str));
    let out = mllp(&args).await;
    assert!(out.status.success(), "{}", text(&out.stdout));
    up.stop_cleanly().await;
    let from = format!("sqlite:{}", dir.path().join("mllp-inbox.db").display());

    let down_dir = tempfile::tempdir().unwrap();
    let down = Serve::start(down_dir.path(), &[]).await;
    let mut relay = Command::new(BIN)
        .args([
            "relay",
            "--from",
            &from,
            "--to",
            &down.to(),
            "--name",
            "lis",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(relay.stdout.take().unwrap()).lines();
    let mut delivered = 0;
    while delivered < 25 {
        let line = within(lines.next_line())
            .await
            .unwrap()
            .expect("relay output");
        if line.starts_with("delivered") {
            delivered += 1;
        }
    }
    relay.start_kill().unwrap();
    relay.wait().await.unwrap();

    let out = mllp(&[
        "relay",
        "--from",
        &from,
        "--to",
        &down.to(),
        "--name",
        "lis",
        "--no-follow",
    ])
    .await;
    let text_out = text(&out.stdout);
    assert!(out.status.success(), "{text_out}");
    let resumed_after: u64 = text_out
        .lines()
        .find_map(|l| l.strip_prefix("started after id "))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .expect("a started line");
    assert!(resumed_after >= 25, "{text_out}");
    let (status, _, stderr) = down.stop().await;
    assert!(status.success(), "{stderr}");
    let expected: Vec<String> = (0..60).map(|i| format!("R-{i:03}")).collect();
    assert_eq!(stored_ids(&down_dir.path().join("mllp-inbox.db")), expected);
}

/// The JetStream settings are keys of the config file too: a subject prefix and a created
/// stream from the file; `--stream-replicas` without `--create-stream` is refused.
#[tokio::test]
async fn jetstream_settings_come_from_the_config_file() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "serve.toml",
        format!(
            "store = \"{}/IN\"\ncreate-stream = true\nstream-replicas = 1\n\
             stream-storage = \"file\"\nnats-subject-prefix = \"site1.in\"\n\
             nats-ack-timeout = \"3s\"\nnats-duplicate-window = \"10m\"\n\
             max-message-size = \"256KiB\"\n",
            nats.url()
        )
        .as_bytes(),
    );
    let serve = Serve::start(dir.path(), &["--config", &config]).await;
    let a = write(dir.path(), "a.hl7", &hl7("CF-1", b"DOE"));
    let out = mllp(&["send", "--to", &serve.to(), &a]).await;
    assert!(
        text(&out.stdout).contains("CF-1  AA"),
        "{}",
        text(&out.stdout)
    );
    serve.stop_cleanly().await;

    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let mut stream = js.get_stream("IN").await.unwrap();
    let info = stream.info().await.unwrap().clone();
    assert_eq!(info.config.subjects, ["site1.in.>"]);
    assert_eq!(
        info.config.duplicate_window,
        std::time::Duration::from_secs(600)
    );
    let stored = stream.get_raw_message(1).await.unwrap();
    assert_eq!(stored.subject.as_str(), "site1.in.ADT.A01");

    let out = mllp(&[
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--store",
        &format!("{}/IN", nats.url()),
        "--stream-replicas",
        "3",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--create-stream"),
        "{}",
        text(&out.stderr)
    );
}
