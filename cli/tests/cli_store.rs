//! `mllp serve` with its message store, end to end: duplicates, store failures, refused store
//! files, the `mllp inbox` verbs, and a SIGKILL under load that must lose no acknowledged
//! message.

#[path = "support/cli.rs"]
mod cli_support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cli_support::*;
use mllp::store::sqlite::{Filter, SqliteReader};
use mllp::{Client, ClientConfig, ClientError};

fn reader(dir: &Path) -> SqliteReader {
    SqliteReader::open(dir.join("mllp-inbox.db")).unwrap()
}

/// `mllp ARGS` started in `dir`, its stdout and stderr piped, to read while it runs.
fn piped(dir: &Path, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// A resend (same sender, MSH-10 and content; MSH-7 re-stamped) is acknowledged AA again, not
/// stored again, and logged as a duplicate with the stored copy's id.
#[tokio::test]
async fn duplicate_resend_is_acknowledged_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let first = write(dir.path(), "first.hl7", &hl7("DUP-1", b"DOE"));
    let restamped = String::from_utf8(hl7("DUP-1", b"DOE")).unwrap().replacen(
        "20261122120000",
        "20261122120500",
        1,
    );
    let resend = write(dir.path(), "resend.hl7", restamped.as_bytes());
    let other = write(dir.path(), "other.hl7", &hl7("DUP-1", b"ROE"));

    let serve = Serve::start(dir.path(), &[]).await;
    for file in [&first, &resend, &other] {
        let out = mllp(&["send", "--to", &serve.to(), file]).await;
        assert!(
            text(&out.stdout).contains("DUP-1  AA"),
            "{}",
            text(&out.stdout)
        );
    }
    let (status, _, stderr) = serve.stop().await;
    assert!(status.success());
    assert!(
        stderr.contains("duplicate of a stored message") && stderr.contains("store.id=1"),
        "{stderr}"
    );
    // The message lines of the first copy and of the resend both name the stored copy.
    let message_lines = |id: &str| {
        stderr
            .lines()
            .filter(|l| l.contains("mllp::messages") && l.contains(&format!("store.id=\"{id}\"")))
            .count()
    };
    assert_eq!(message_lines("1"), 2, "{stderr}");
    assert_eq!(message_lines("2"), 1, "{stderr}");
    assert!(
        stderr.contains("control id reused with other content"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(SENTINEL),
        "patient data in the log: {stderr}"
    );

    let rows = reader(dir.path()).list(&Filter::default()).unwrap();
    assert_eq!(rows.len(), 2, "the resend was stored again");
    assert!(rows[0].reused_control_id && !rows[1].reused_control_id);
}

/// A store that cannot commit (here: full at --store-max-size) answers AE with ERR 207, never
/// AA; the message is not in the store.
#[tokio::test]
async fn full_store_answers_ae_never_aa() {
    let dir = tempfile::tempdir().unwrap();
    let big = vec![b'X'; 16 * 1024];
    let files: Vec<String> = (0..12)
        .map(|i| {
            write(
                dir.path(),
                &format!("{i:02}.hl7"),
                &hl7(&format!("BIG-{i}"), &big),
            )
        })
        .collect();
    let serve = Serve::start(dir.path(), &["--store-max-size", "96KiB"]).await;
    let to = serve.to();
    let mut args = vec!["send", "--to", &to];
    args.extend(files.iter().map(String::as_str));
    let out = mllp(&args).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let refused: Vec<&str> = stdout.lines().filter(|l| l.contains("  AE")).collect();
    assert!(!refused.is_empty(), "{stdout}");
    assert!(
        refused.iter().all(|l| l.contains("could not be stored")),
        "{stdout}"
    );
    let accepted = stdout.lines().filter(|l| l.contains("  AA")).count();
    let (status, _, stderr) = serve.stop().await;
    assert!(status.success());
    assert_eq!(stderr.matches("store failed").count(), 1, "{stderr}");
    assert_eq!(reader(dir.path()).count().unwrap(), accepted as u64);
}

/// A store file that is not an mllp store, or is of a newer schema, refuses the start (exit 2)
/// with what to do, and is left as it was.
#[tokio::test]
async fn foreign_or_newer_store_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let out = mllp_in(
        dir.path(),
        None,
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--store",
            "sqlite:foreign.db",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is not an mllp store"),
        "{}",
        text(&out.stderr)
    );

    let newer = dir.path().join("newer.db");
    let out = mllp_in(
        dir.path(),
        None,
        &["inbox", "import", ".", "--store", "sqlite:newer.db"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute_batch("PRAGMA user_version = 7")
        .unwrap();
    let out = mllp_in(
        dir.path(),
        None,
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--store",
            "sqlite:newer.db",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("upgrade mllp"),
        "{}",
        text(&out.stderr)
    );
}

/// A sender's MSH-10 holding a terminal escape sequence is stored as sent, and `mllp inbox
/// list` prints it escaped: a listing on a terminal cannot be driven by what a sender wrote.
#[tokio::test]
async fn inbox_list_escapes_control_characters_in_msh_fields() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "esc.hl7", &hl7("E\u{1b}]0;T\u{7}1", b"DOE"));
    let serve = Serve::start(dir.path(), &[]).await;
    let sent = mllp(&["send", "--to", &serve.to(), &file]).await;
    assert!(sent.status.success(), "{}", text(&sent.stdout));
    serve.stop_cleanly().await;

    let rows = reader(dir.path()).list(&Filter::default()).unwrap();
    assert_eq!(rows[0].control_id, "E\u{1b}]0;T\u{7}1", "stored as sent");
    let out = mllp_in(dir.path(), None, &["inbox", "list"]).await;
    let listed = text(&out.stdout);
    assert!(out.status.success());
    assert!(listed.contains("E\\u{1b}]0;T\\u{7}1"), "{listed}");
    assert!(
        !listed.contains('\u{1b}') && !listed.contains('\u{7}'),
        "{listed}"
    );
}

/// A listing longer than the rows its column widths are fitted to (1000) is written as it is
/// read: every row once, under one header, the later ones in the same columns (a wider cell
/// only pushes its own line out). A reader that stops early (`| head`) ends it without error.
#[tokio::test]
async fn inbox_list_streams_a_long_listing_and_stops_quietly_at_a_closed_pipe() {
    use mllp::store::{Record, SqliteConfig, SqliteStore, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("mllp-inbox.db"), SqliteConfig::default())
        .await
        .unwrap();
    let addr = "127.0.0.1:2575".parse().unwrap();
    // The 200 oldest (listed last) have control ids longer than any of the 1000 newest.
    let control_id = |n: usize| {
        if n < 200 {
            format!("A-LONGER-CONTROL-ID-{n:05}")
        } else {
            format!("B-{n:05}")
        }
    };
    for chunk in (0..1200).collect::<Vec<_>>().chunks(100) {
        let appends = chunk.iter().map(|&n| {
            let message =
                mllp::hl7::Message::parse(Bytes::from(hl7(&control_id(n), b"DOE"))).unwrap();
            store.append(Record::from_message(
                &message,
                std::time::SystemTime::now(),
                addr,
                addr,
                None,
            ))
        });
        for receipt in futures_util::future::join_all(appends).await {
            assert!(!receipt.unwrap().is_duplicate());
        }
    }
    store.close().await;

    let out = mllp_in(dir.path(), None, &["inbox", "list", "--limit", "5000"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 1201, "a header and every row");
    assert!(lines[0].starts_with("  ID  RECEIVED"), "{}", lines[0]);
    assert_eq!(listed.matches("RECEIVED").count(), 1);
    for n in 0..1200 {
        assert_eq!(
            listed.matches(&control_id(n)).count(),
            1,
            "{}",
            control_id(n)
        );
    }
    let received_at = lines[0].find("RECEIVED").unwrap();
    let sender_at = lines[0].find("SENDER").unwrap();
    for line in &lines[1..] {
        assert_eq!(line.find("T").map(|t| t - 10), Some(received_at), "{line}");
    }
    assert_eq!(
        lines[1000].find("SENDAPP"),
        Some(sender_at),
        "{}",
        lines[1000]
    );
    assert!(
        lines[1001].find("SENDAPP").unwrap() > sender_at,
        "{}",
        lines[1001]
    );

    let json = mllp_in(
        dir.path(),
        None,
        &["inbox", "list", "--json", "--limit", "5000"],
    )
    .await;
    assert!(json.status.success());
    assert_eq!(text(&json.stdout).lines().count(), 1200);

    // `mllp inbox list | head -1`: the pipe closes after one line.
    let mut child = piped(dir.path(), &["inbox", "list", "--limit", "5000"]);
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 8];
    tokio::io::AsyncReadExt::read_exact(&mut stdout, &mut first)
        .await
        .unwrap();
    drop(stdout);
    let out = within(child.wait_with_output()).await.unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

/// Settings of another kind of store than the one in use are said to do nothing, at start: a
/// retention set for compliance on a `dir:` store must not go unnoticed.
#[tokio::test]
async fn settings_of_another_store_kind_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(
        dir.path(),
        &[
            "--inbox",
            "inbox",
            "--retention",
            "30d",
            "--store-max-size",
            "1GiB",
        ],
    )
    .await;
    let (status, _, stderr) = serve.stop().await;
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("settings of the SQLite store do nothing for this store")
            && stderr.contains("ignored=\"retention, store-max-size\""),
        "{stderr}"
    );
    let serve = Serve::start(dir.path(), &["--retention", "30d"]).await;
    let (_, _, stderr) = serve.stop().await;
    assert!(!stderr.contains("do nothing"), "{stderr}");
}

/// `mllp relay --to` is checked as `mllp send --to` is: a bad address is a usage error (exit
/// 2) at start, not a relay that retries it for ever. A second relay of a running relay's name
/// on the same store is refused the same way.
#[tokio::test]
async fn relay_refuses_a_bad_address_and_a_name_already_running() {
    let dir = tempfile::tempdir().unwrap();
    for to in ["127.0.0.1", "127.0.0.1:99999", ""] {
        let out = mllp_in(
            dir.path(),
            None,
            &["relay", "--from", "sqlite:mllp-inbox.db", "--to", to],
        )
        .await;
        assert_eq!(out.status.code(), Some(2), "{to:?}");
        assert!(
            text(&out.stderr).contains("for '--to <HOST:PORT>'"),
            "{to:?}"
        );
    }
    write(dir.path(), "m.hl7", &hl7("R-1", b"DOE"));
    let out = mllp_in(
        dir.path(),
        None,
        &["inbox", "import", dir.path().to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The first relay waits for a downstream that is not there (a port just bound and let
    // go: nothing listens), holding its name from before its first line.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let relay = ["relay", "--from", "sqlite:mllp-inbox.db", "--to", &gone];
    let mut first = piped(dir.path(), &relay);
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(first.stdout.take().unwrap()));
    let started = within(lines.next_line()).await.unwrap().unwrap();
    assert!(started.starts_with("relaying"), "{started}");
    let out = mllp_in(dir.path(), None, &relay).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is already running on this store"),
        "{}",
        text(&out.stderr)
    );
    first.kill().await.unwrap();
}

/// The relay's dead letters from the command line: `inbox dead-letters` says which messages a
/// relay gave up on and why, `--dead-letters RELAY` selects them for `list` and `replay`, and
/// the replay sends them again.
#[tokio::test]
async fn dead_letters_are_listed_with_their_reason_and_replayed() {
    let dir = tempfile::tempdir().unwrap();
    for (i, id) in ["DL-1", "DL-2", "DL-3"].iter().enumerate() {
        write(dir.path(), &format!("m{i}.hl7"), &hl7(id, b"DOE"));
    }
    let out = mllp_in(
        dir.path(),
        None,
        &["inbox", "import", dir.path().to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A downstream that takes only v2.3: these 2.5 messages are rejected (AR 203).
    let strict_dir = tempfile::tempdir().unwrap();
    let strict = Serve::start(strict_dir.path(), &["--no-store", "--allow-version", "2.3"]).await;
    let out = mllp_in(
        dir.path(),
        None,
        &[
            "relay",
            "--from",
            "sqlite:mllp-inbox.db",
            "--to",
            &strict.to(),
            "--name",
            "lis",
            "--no-follow",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    strict.stop_cleanly().await;

    let out = mllp_in(
        dir.path(),
        None,
        &["inbox", "dead-letters", "--relay", "lis"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three: {listed}");
    assert!(lines[0].starts_with("AT "), "{listed}");
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.contains("  lis  ") && l.contains("rejected: AR")),
        "{listed}"
    );
    let out = mllp_in(
        dir.path(),
        None,
        &["inbox", "dead-letters", "--relay", "other"],
    )
    .await;
    assert_eq!(text(&out.stdout).lines().count(), 1, "only the header");

    let out = mllp_in(
        dir.path(),
        None,
        &["inbox", "list", "--dead-letters", "lis", "--json"],
    )
    .await;
    assert_eq!(
        text(&out.stdout).lines().count(),
        3,
        "{}",
        text(&out.stdout)
    );

    let open_dir = tempfile::tempdir().unwrap();
    let open = Serve::start(open_dir.path(), &["--no-store"]).await;
    let out = mllp_in(
        dir.path(),
        None,
        &[
            "inbox",
            "replay",
            "--dead-letters",
            "lis",
            "--to",
            &open.to(),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stdout));
    let replayed = text(&out.stdout);
    for id in ["DL-1", "DL-2", "DL-3"] {
        assert!(replayed.contains(&format!("{id}  AA")), "{replayed}");
    }
    open.stop_cleanly().await;
}

/// After a clean stop (SIGTERM), the database file alone holds every message: `mllp serve`
/// closes its store, which copies the write-ahead log into it. A copy of the `.db` taken once
/// the service has stopped is a complete backup.
#[tokio::test]
async fn a_clean_stop_leaves_every_message_in_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[]).await;
    for n in 0..5 {
        let file = write(
            dir.path(),
            &format!("c{n}.hl7"),
            &hl7(&format!("CLOSE-{n}"), b"DOE"),
        );
        let out = mllp(&["send", "--to", &serve.to(), &file]).await;
        assert!(out.status.success(), "{}", text(&out.stdout));
    }
    serve.stop_cleanly().await;
    let wal = dir.path().join("mllp-inbox.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "the log was copied into the database and emptied"
    );
    let backup = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.path().join("mllp-inbox.db"),
        backup.path().join("mllp-inbox.db"),
    )
    .unwrap();
    assert_eq!(reader(backup.path()).count().unwrap(), 5);
}

/// An export whose write fails (here a file-size limit, `ulimit -f`, as a full disk would)
/// leaves no partial file under a final name: a re-run after the cause is gone writes it.
#[tokio::test]
async fn a_failed_export_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let big = "X".repeat(100_000);
    write(dir.path(), "big.hl7", &hl7("BIG-1", big.as_bytes()));
    let out = mllp_in(
        dir.path(),
        None,
        &["inbox", "import", dir.path().to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let to = dir.path().join("out");
    // Files over 40 KiB cannot be written (EFBIG; SIGXFSZ ignored), as a full disk would refuse
    // them (ENOSPC); the store's 32 KiB shared-memory file still fits.
    let out = within(
        tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "trap '' XFSZ; ulimit -f 80; exec {BIN} inbox export --to {}",
                to.display()
            ))
            .current_dir(dir.path())
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot write"),
        "{}",
        text(&out.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(&to).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    let out = mllp_in(
        dir.path(),
        None,
        &["inbox", "export", "--to", to.to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_dir(&to).unwrap().count(), 1);
    // Exported files hold patient data: not readable by others (0640), as a dir: store's.
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::read_dir(&to)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o007, 0, "{mode:o}");
    let fresh = dir.path().join("fresh");
    let out = mllp_in(
        dir.path(),
        None,
        &["inbox", "export", "--to", fresh.to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
    assert_eq!(mode & 0o007, 0, "a directory it creates is 0750: {mode:o}");
}

/// Every `mllp inbox` verb on a store that `mllp serve` wrote.
#[tokio::test]
async fn inbox_verbs_list_show_export_import_replay_and_prune() {
    let dir = tempfile::tempdir().unwrap();
    let messages = [hl7("V-1", b"DOE"), hl7("V-2", b"ROE"), hl7("V-3", b"POE")];
    let files: Vec<String> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| write(dir.path(), &format!("m{i}.hl7"), m))
        .collect();
    let serve = Serve::start(dir.path(), &[]).await;
    for f in &files {
        assert!(
            mllp(&["send", "--to", &serve.to(), f])
                .await
                .status
                .success()
        );
    }
    serve.stop_cleanly().await;
    let inbox = |args: &[&str]| {
        let mut all = vec!["inbox"];
        all.extend_from_slice(args);
        let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
        let dir = dir.path().to_owned();
        async move {
            let args: Vec<&str> = all.iter().map(String::as_str).collect();
            mllp_in(&dir, None, &args).await
        }
    };

    // list: newest first, MSH fields only.
    let out = inbox(&["list"]).await;
    let listed = text(&out.stdout);
    assert!(out.status.success());
    let order: Vec<usize> = ["V-3", "V-2", "V-1"]
        .iter()
        .map(|id| listed.find(id).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{listed}");
    assert!(!listed.contains(SENTINEL));
    let out = inbox(&["list", "--json", "--control-id", "V-2"]).await;
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["control_id"], "V-2");
    assert_eq!(rows[0]["message_type"], "ADT^A01^ADT_A01");
    assert_eq!(
        text(&inbox(&["list", "--type", "ORU^*"]).await.stdout)
            .lines()
            .count(),
        1
    );

    // show: the exact bytes, or numbered fields.
    let out = inbox(&["show", "2"]).await;
    assert_eq!(out.stdout, messages[1]);
    let fields = text(&inbox(&["show", "2", "--segments"]).await.stdout);
    assert!(
        fields.contains("  MSH-10: V-2") && fields.contains("  PID-3: PATID1234"),
        "{fields}"
    );
    assert_eq!(inbox(&["show", "99"]).await.status.code(), Some(1));

    // export, then import the export into a second store: same bytes; again: all duplicates.
    let out = inbox(&["export", "--to", "exported"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("exported"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3);
    assert!(names[0].ends_with("-V-1-1.hl7"), "{names:?}");
    let out = inbox(&["import", "exported", "--store", "sqlite:copy.db"]).await;
    assert!(
        text(&out.stdout).contains("3 stored, 0 duplicate(s)"),
        "{}",
        text(&out.stdout)
    );
    let out = inbox(&["import", "exported", "--store", "sqlite:copy.db"]).await;
    assert!(
        text(&out.stdout).contains("0 stored, 3 duplicate(s)"),
        "{}",
        text(&out.stdout)
    );
    let copy = SqliteReader::open(dir.path().join("copy.db")).unwrap();
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(copy.get(i as u64 + 1).unwrap().unwrap().payload, m[..]);
    }

    // replay to another receiver, oldest first, byte for byte.
    let target = tempfile::tempdir().unwrap();
    let receiver = Serve::start(target.path(), &[]).await;
    let out = inbox(&["replay", "--to", &receiver.to(), "--since", "1h"]).await;
    let replayed = text(&out.stdout);
    assert!(out.status.success(), "{replayed}");
    assert!(
        replayed.contains("store#1  V-1  AA") && replayed.contains("store#3  V-3  AA"),
        "{replayed}"
    );
    assert!(replayed.contains("sent 3: 3 accepted"), "{replayed}");
    receiver.stop_cleanly().await;
    let received = reader(target.path()).list(&Filter::default()).unwrap();
    assert_eq!(
        received
            .iter()
            .map(|r| r.control_id.as_str())
            .collect::<Vec<_>>(),
        ["V-3", "V-2", "V-1"]
    );
    assert_eq!(
        reader(target.path()).get(1).unwrap().unwrap().payload,
        messages[0][..]
    );

    // prune: everything older than now.
    let out = inbox(&["prune", "--older-than", "0s"]).await;
    assert!(
        text(&out.stdout).contains("deleted 3 message(s)"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(reader(dir.path()).count().unwrap(), 0);

    // A missing store is refused, not created.
    let out = inbox(&["list", "--store", "sqlite:nothing.db"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.path().join("nothing.db").exists());
}

/// `mllp serve` is killed with SIGKILL while 16 connections send; restarted on the same store,
/// every message that was answered AA is there, byte for byte, exactly once, and is recognised
/// as a duplicate when sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[]).await;
    let to = serve.to();
    let acked: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
    // The kill comes after a number of acknowledgments drawn at random: a moment in the load
    // that differs from run to run, with no timer.
    let kill_after = 200 + fastrand::usize(..800);
    let reached = Arc::new(tokio::sync::Notify::new());
    let senders: Vec<_> = (0..16)
        .map(|c| {
            let (to, acked, reached) = (to.clone(), acked.clone(), reached.clone());
            tokio::spawn(async move {
                let mut config = ClientConfig::default();
                config.max_retries = 0;
                let mut client = Client::with_config(to, config);
                for n in 0.. {
                    let id = format!("K{c}-{n}");
                    let message = hl7(&id, format!("NAME{n}").as_bytes());
                    match client.send(Bytes::from(message.clone())).await {
                        Ok(_) => {
                            let mut acked = acked.lock().unwrap();
                            acked.insert(id, message);
                            if acked.len() == kill_after {
                                reached.notify_one();
                            }
                        }
                        Err(ClientError::Negative { .. }) => panic!("{id} refused"),
                        Err(_) => return, // the server is gone
                    }
                }
            })
        })
        .collect();
    within(reached.notified()).await;
    let pid = serve.child.id().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for sender in senders {
        within(sender).await.unwrap();
    }
    drop(serve);

    // The store opens again after the crash and takes new messages.
    let restarted = Serve::start(dir.path(), &[]).await;
    let after = write(dir.path(), "after.hl7", &hl7("AFTER-1", b"DOE"));
    assert!(
        mllp(&["send", "--to", &restarted.to(), &after])
            .await
            .status
            .success()
    );
    // Every acknowledged message sent again is recognised as a duplicate (AA, not stored
    // again): the duplicate index survived the kill with the messages.
    let resends: Vec<Vec<u8>> = acked.lock().unwrap().values().cloned().collect();
    let mut client = Client::new(restarted.to());
    for message in resends {
        within(client.send(Bytes::from(message))).await.unwrap();
    }
    restarted.stop_cleanly().await;

    let acked = acked.lock().unwrap();
    let mut found: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    reader(dir.path())
        .for_each(&Filter::default(), |m| {
            found
                .entry(m.summary.control_id.clone())
                .or_default()
                .push(m.payload.to_vec());
            true
        })
        .unwrap();
    assert!(acked.len() >= kill_after);
    eprintln!(
        "acknowledged before the kill: {}, stored: {}",
        acked.len(),
        found.values().map(Vec::len).sum::<usize>()
    );
    for (id, message) in acked.iter() {
        let copies = found.get(id).map_or(0, Vec::len);
        assert_eq!(
            copies, 1,
            "{id} was acknowledged and is stored {copies} times"
        );
        assert_eq!(&found[id][0], message, "{id} is not byte-identical");
    }
}
