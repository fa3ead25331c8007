//! `mllp send` against receivers that behave like third-party tools: negative ACKs without
//! MSA-2, receivers that drop the connection, control ids with escape sequences, messages
//! without a final CR, standard input, and directories with subdirectories.
//!
//! Each test runs the real binary against an in-process receiver on a loopback port.

#[path = "support/cli.rs"]
mod cli_support;

use cli_support::*;

use std::net::SocketAddr;
use std::process::Stdio;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use mllp::frame::MllpCodec;
use mllp::hl7::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

/// What a test receiver does with each frame it reads.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Answers AA, MSA-2 = the frame's MSH-10.
    Accept,
    /// Answers AR with an empty MSA-2 and a text in MSA-3, as hl7apy and simple-hl7 refuse.
    RejectWithoutId,
    /// Closes the connection without answering.
    HangUp,
}

/// A receiver on a loopback port; every payload it reads goes to the returned channel.
async fn receiver(behaviour: Behaviour) -> (SocketAddr, mpsc::UnboundedReceiver<Bytes>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut framed = Framed::new(stream, MllpCodec::new());
                while let Some(Ok(frame)) = framed.next().await {
                    let _ = tx.send(frame.clone());
                    let reply = match behaviour {
                        Behaviour::Accept => {
                            let id = Message::parse(frame)
                                .ok()
                                .and_then(|m| m.control_id().map(str::to_owned))
                                .unwrap_or_default();
                            format!("MSH|^~\\&|R|R|S|S|20261122||ACK^A01^ACK|R1|P|2.5\rMSA|AA|{id}\r")
                        }
                        Behaviour::RejectWithoutId => {
                            "MSH|^~\\&|R|R|S|S|20261122||ACK|R1|P|2.5\rMSA|AR||message not understood\r"
                                .to_owned()
                        }
                        Behaviour::HangUp => return,
                    };
                    if framed.send(Bytes::from(reply)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// An AR whose MSA-2 is empty (how hl7apy and simple-hl7 refuse a message) is reported as
/// what it is, AR with its text, and counted as rejected (exit 1), not as a mismatched ACK.
#[tokio::test]
async fn ar_with_an_empty_msa2_is_reported_with_its_code_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "one.hl7", &hl7("EMPTY-1", b"DOE"));
    let (addr, _frames) = receiver(Behaviour::RejectWithoutId).await;
    let out = mllp(&["send", "--to", &addr.to_string(), &input]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("EMPTY-1  AR  message not understood"),
        "{stdout}"
    );
    assert!(stdout.contains("1 rejected (AR/CR)"), "{stdout}");
}

/// Each retry gets its own line naming the attempt and why, and the summary counts every
/// attempt: against a receiver that hangs up on every message, two messages with one retry each
/// are four attempts, not "sent 2".
#[tokio::test]
async fn retries_are_shown_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "two.hl7",
        &[hl7("RETRY-1", b"DOE"), hl7("RETRY-2", b"DOE")].concat(),
    );
    let (addr, mut frames) = receiver(Behaviour::HangUp).await;
    let out = mllp(&["send", "--to", &addr.to_string(), "--retries", "1", &input]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    for id in ["RETRY-1", "RETRY-2"] {
        let retry = format!("{id}  RETRY 1/1");
        assert_eq!(stdout.matches(&retry).count(), 1, "{stdout}");
        assert!(stdout.contains(&format!("{id}  FAILED")), "{stdout}");
    }
    assert!(stdout.contains("sent 2 in 4 attempts"), "{stdout}");
    let mut received = 0;
    while frames.try_recv().is_ok() {
        received += 1;
    }
    assert_eq!(received, 4, "every attempt reached the receiver");
}

/// A control id holding an escape sequence is printed as it is on the wire: one backslash,
/// not the doubled backslashes of a Rust debug string.
#[tokio::test]
async fn control_ids_are_printed_without_doubled_backslashes() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "esc.hl7", &hl7("ID\\E\\1", b"DOE"));
    let (addr, _frames) = receiver(Behaviour::Accept).await;
    let out = mllp(&["send", "--to", &addr.to_string(), &input]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("  ID\\E\\1  AA"), "{stdout}");
}

/// A message that arrived without a CR after its last segment (an inbox file, an export) is
/// sent byte for byte: no CR is added; a file whose last line ends is sent with its CR.
#[tokio::test]
async fn a_message_without_a_final_cr_is_sent_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let mut bare = hl7("NOCR-1", b"DOE");
    assert_eq!(bare.pop(), Some(b'\r'));
    let input = write(dir.path(), "stored.hl7", &bare);
    let ended = write(dir.path(), "ended.hl7", &hl7("CR-1", b"DOE"));
    let (addr, mut frames) = receiver(Behaviour::Accept).await;
    let out = mllp(&["send", "--to", &addr.to_string(), &input, &ended]).await;
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(&within(frames.recv()).await.unwrap()[..], &bare[..]);
    assert_eq!(
        &within(frames.recv()).await.unwrap()[..],
        &hl7("CR-1", b"DOE")[..]
    );
}

/// `--to` without a port is a usage error (exit 2) naming the flag, found before anything is
/// read or sent.
#[tokio::test]
async fn to_without_a_port_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "one.hl7", &hl7("PORT-1", b"DOE"));
    for to in ["127.0.0.1", "localhost:", "host:notaport", ":2575"] {
        let out = mllp(&["send", "--to", to, &input]).await;
        assert_eq!(out.status.code(), Some(2), "--to {to}");
        assert!(text(&out.stderr).contains("--to"), "{}", text(&out.stderr));
    }
}

/// `mllp send -` reads the messages from standard input, labelled `stdin`.
#[tokio::test]
async fn dash_reads_standard_input() {
    let (addr, mut frames) = receiver(Behaviour::Accept).await;
    let mut child = tokio::process::Command::new(BIN)
        .args(["send", "--to", &addr.to_string(), "-"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = [hl7("STDIN-1", b"DOE"), hl7("STDIN-2", b"DOE")].concat();
    stdin.write_all(&input).await.unwrap();
    drop(stdin);
    let out = within(child.wait_with_output()).await.unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("stdin#1  STDIN-1  AA"), "{stdout}");
    assert!(stdout.contains("stdin#2  STDIN-2  AA"), "{stdout}");
    assert_eq!(
        &within(frames.recv()).await.unwrap()[..],
        &hl7("STDIN-1", b"DOE")[..]
    );
}

/// A subdirectory of a directory given on the command line is not entered, and says so on
/// stderr instead of being skipped without a word; the files beside it are sent.
#[tokio::test]
async fn subdirectories_are_reported_not_silently_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(outbox.join("archive")).unwrap();
    write(&outbox.join("archive"), "old.hl7", &hl7("OLD-1", b"DOE"));
    write(&outbox, "a.hl7", &hl7("NEW-1", b"DOE"));
    let (addr, _frames) = receiver(Behaviour::Accept).await;
    let out = mllp(&["send", "--to", &addr.to_string(), &path_str(&outbox)]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("NEW-1  AA"), "{stdout}");
    assert!(!stdout.contains("OLD-1"), "{stdout}");
    assert!(stderr.contains("archive"), "{stderr}");
    assert!(stderr.contains("not sent"), "{stderr}");
}

fn partner_fixture(name: &str) -> String {
    format!(
        "{}/../tests/fixtures/partner/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// `--batch` sends a batch file as one frame and reports each message from the batch
/// acknowledgment (exit 1 for the one rejected); a file of plain messages is wrapped in BHS …
/// BTS; a receiver that answers the whole batch with one AR gets every message reported AR.
#[tokio::test]
async fn batch_flag_sends_one_frame_and_reports_each_message() {
    use mllp::ack::ErrorCode;
    use mllp::app::{HandlerError, Request, Router};
    let router = Router::new()
        .route("ORU^R01", |_r: Request| async {})
        .route("ADT^A08", |_r: Request| async {
            Err::<(), _>(HandlerError::reject(
                ErrorCode::UnsupportedEventCode,
                "no updates",
            ))
        });
    let server = mllp::Server::builder()
        .router(router)
        .bind("127.0.0.1:0")
        .await
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let to = server.local_addr().to_string();
    let out = mllp(&[
        "send",
        "--batch",
        "--to",
        &to,
        &partner_fixture("batch_fhs.hl7"),
    ])
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("batch_fhs.hl7#1  B1-M1  AA"), "{stdout}");
    assert!(stdout.contains("batch_fhs.hl7#2  B1-M2  AA"), "{stdout}");
    assert!(
        stdout.contains("batch_fhs.hl7#3  B1-M3  AR  no updates"),
        "{stdout}"
    );
    assert!(stdout.contains("sent 3: 2 accepted"), "{stdout}");
    within(server.shutdown()).await;

    let dir = tempfile::tempdir().unwrap();
    let plain = write(
        dir.path(),
        "plain.hl7",
        &[hl7("PLAIN-1", b"DOE"), hl7("PLAIN-2", b"DOE")].concat(),
    );
    let (addr, mut frames) = receiver(Behaviour::Accept).await;
    let out = mllp(&["send", "--batch", "--to", &addr.to_string(), &plain]).await;
    assert!(out.status.success(), "{}", text(&out.stdout));
    let frame = within(frames.recv()).await.unwrap();
    assert!(frame.starts_with(b"BHS|^~\\&\rMSH|"), "{frame:?}");
    assert!(frame.ends_with(b"BTS|2\r"), "{frame:?}");
    assert!(frames.try_recv().is_err(), "one frame for the batch");

    let (addr, _frames) = receiver(Behaviour::RejectWithoutId).await;
    let out = mllp(&["send", "--batch", "--to", &addr.to_string(), &plain]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("plain.hl7#1  PLAIN-1  AR  message not understood"),
        "{stdout}"
    );
    assert!(
        stdout.contains("plain.hl7#2  PLAIN-2  AR  message not understood"),
        "{stdout}"
    );
}
