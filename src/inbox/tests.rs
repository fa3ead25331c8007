use std::time::Duration;

use super::*;

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mllp-inbox-test-")
        .tempdir()
        .expect("temp dir")
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// A file name holds only the characters the sanitiser allows, plus the fixed parts.
fn assert_valid_name(path: &Path, dir: &Path) {
    assert_eq!(
        path.parent(),
        Some(dir),
        "{} escaped the inbox",
        path.display()
    );
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(name.ends_with(".hl7"), "{name}");
    assert!(!name.starts_with('.'), "{name}");
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        "{name}"
    );
    let (stamp, _) = name.split_at(23);
    assert_eq!(stamp.as_bytes()[8], b'T', "{name}");
    assert_eq!(stamp.as_bytes()[15], b'.', "{name}");
    assert_eq!(stamp.as_bytes()[22], b'Z', "{name}");
}

/// Opening creates a missing directory and its parents.
#[test]
fn open_creates_missing_directory() {
    let tmp = temp_dir();
    let dir = tmp.path().join("a/b/inbox");
    let inbox = Inbox::open(&dir).unwrap();
    assert!(dir.is_dir());
    assert_eq!(inbox.dir(), dir);
    assert!(entries(&dir).is_empty(), "the write probe is removed");
}

/// Opening an existing directory keeps what it holds.
#[test]
fn open_keeps_existing_directory_contents() {
    let tmp = temp_dir();
    fs::write(tmp.path().join("old.hl7"), b"MSH|").unwrap();
    Inbox::open(tmp.path()).unwrap();
    assert_eq!(entries(tmp.path()), ["old.hl7"]);
}

/// A path that is a file is refused with `NotADirectory`, naming the path.
#[test]
fn open_rejects_a_file() {
    let tmp = temp_dir();
    let file = tmp.path().join("inbox");
    fs::write(&file, b"").unwrap();
    let err = Inbox::open(&file).unwrap_err();
    assert!(matches!(err, InboxError::NotADirectory { .. }));
    assert!(err.to_string().contains(&*file.to_string_lossy()));
}

/// The file holds exactly the payload bytes: Latin-1, UTF-8 and CR segment ends untouched.
#[tokio::test]
async fn stores_exact_bytes_in_any_encoding() {
    let tmp = temp_dir();
    let inbox = Inbox::open(tmp.path()).unwrap();
    let latin1 = b"MSH|^~\\&|A|B|||||ADT^A01|L1|P|2.5|||||8859/1\rPID|1||1||M\xfcller^Ren\xe9\r";
    let utf8 = "MSH|^~\\&|A|B|||||ADT^A01|U1|P|2.5|||||UNICODE UTF-8\rPID|1||1||Müller^René^李\r\n";
    for payload in [&latin1[..], utf8.as_bytes(), b"", b"\x00\xff\r\n\r"] {
        let path = inbox.store(payload, Some(b"ID1")).await.unwrap();
        assert_eq!(fs::read(&path).unwrap(), payload);
    }
}

/// A 5 MB payload is stored whole, through the zero-copy entry point too.
#[tokio::test]
async fn stores_large_payload_exactly() {
    let tmp = temp_dir();
    let inbox = Inbox::open(tmp.path()).unwrap();
    let payload: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let path = inbox.store(&payload, Some(b"BIG")).await.unwrap();
    assert_eq!(fs::read(&path).unwrap(), payload);
    let path = inbox
        .store_bytes(Bytes::from(payload.clone()), None)
        .await
        .unwrap();
    assert_eq!(fs::read(&path).unwrap(), payload);
}

/// Whatever MSH-10 holds, the file lands inside the inbox under a valid name.
#[tokio::test]
async fn hostile_control_ids_stay_inside_inbox() {
    let tmp = temp_dir();
    let inbox = Inbox::open(tmp.path()).unwrap();
    let long = vec![b'x'; 300];
    let hostile: [&[u8]; 12] = [
        b"../../etc/passwd",
        b"/abs",
        b"a/b",
        b"a\\b",
        b"..",
        b".",
        b"",
        &long,
        b"\xff\xfe",
        b"nul\x00byte",
        b"C:\\Windows\\x",
        "r\u{e9}sum\u{e9}\r\n".as_bytes(),
    ];
    for id in hostile {
        let path = inbox.store(b"MSH|", Some(id)).await.unwrap();
        assert_valid_name(&path, tmp.path());
        assert_eq!(fs::read(&path).unwrap(), b"MSH|");
    }
    let path = inbox.store(b"MSH|", None).await.unwrap();
    assert_valid_name(&path, tmp.path());
    assert_eq!(entries(tmp.path()).len(), hostile.len() + 1);
}

/// Sanitising keeps safe characters, maps the rest, caps the length and is never empty or dots.
#[test]
fn control_id_sanitising() {
    let cases: [(Option<&[u8]>, &str); 10] = [
        (Some(b"MSG-00.1_a"), "MSG-00.1_a"),
        (Some(b"../../etc/passwd"), ".._.._etc_passwd"),
        (Some(b"/abs"), "_abs"),
        (Some(b"a/b"), "a_b"),
        (Some(b".."), "__"),
        (Some(b"."), "_"),
        (Some(b""), "none"),
        (None, "none"),
        (Some(b"\xff\x00"), "__"),
        (Some("é".as_bytes()), "__"),
    ];
    for (id, expected) in cases {
        assert_eq!(sanitize_control_id(id), expected, "{id:?}");
    }
    assert_eq!(sanitize_control_id(Some(&[b'x'; 300])).len(), MAX_ID_LEN);
}

/// The same control id twice gives two files; neither overwrites the other.
#[tokio::test]
async fn repeated_control_ids_keep_both_messages() {
    let tmp = temp_dir();
    let inbox = Inbox::open(tmp.path()).unwrap();
    let first = inbox.store(b"first", Some(b"DUP")).await.unwrap();
    let second = inbox.store(b"second", Some(b"DUP")).await.unwrap();
    assert_ne!(first, second);
    assert_eq!(fs::read(&first).unwrap(), b"first");
    assert_eq!(fs::read(&second).unwrap(), b"second");
}

/// Many concurrent stores with one control id, from two inboxes on one directory, give as many
/// distinct files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_stores_produce_distinct_files() {
    let tmp = temp_dir();
    let a = Inbox::open(tmp.path()).unwrap();
    let b = Inbox::open(tmp.path()).unwrap();
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let inbox = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            inbox.store(&i.to_be_bytes(), Some(b"SAME")).await.unwrap()
        }));
    }
    let mut paths = Vec::new();
    for task in tasks {
        paths.push(task.await.unwrap());
    }
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 64);
    assert_eq!(entries(tmp.path()).len(), 64);
}

/// No `.tmp-` file is left behind after successful stores.
#[tokio::test]
async fn no_temporary_files_left_after_store() {
    let tmp = temp_dir();
    let inbox = Inbox::open(tmp.path()).unwrap();
    for _ in 0..5 {
        inbox.store(b"MSH|", Some(b"T")).await.unwrap();
    }
    let names = entries(tmp.path());
    assert_eq!(names.len(), 5);
    assert!(names.iter().all(|n| !n.starts_with(".tmp-")), "{names:?}");
}

/// File names carry the sanitised control id and sort in store order.
#[tokio::test]
async fn file_names_carry_control_id_and_sort_by_time() {
    let tmp = temp_dir();
    let inbox = Inbox::open(tmp.path()).unwrap();
    let first = inbox.store(b"1", Some(b"MSG00001")).await.unwrap();
    let second = inbox.store(b"2", Some(b"MSG00002")).await.unwrap();
    let name = first.file_name().unwrap().to_str().unwrap();
    let pid = std::process::id();
    assert!(name.contains(&format!("-MSG00001-{pid}-")), "{name}");
    assert!(first < second, "{first:?} !< {second:?}");
}

/// The final name is created without replacing an existing file.
#[test]
fn link_refuses_to_replace_an_existing_file() {
    let tmp = temp_dir();
    let (from, to) = (tmp.path().join(".tmp-x"), tmp.path().join("taken.hl7"));
    fs::write(&from, b"new").unwrap();
    fs::write(&to, b"old").unwrap();
    let err = link_no_replace(&from, &to).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs::read(&to).unwrap(), b"old");
}

/// A failed store names the path and keeps the I/O error as its source.
#[tokio::test]
async fn store_into_removed_directory_fails_with_path() {
    let tmp = temp_dir();
    let dir = tmp.path().join("gone");
    let inbox = Inbox::open(&dir).unwrap();
    fs::remove_dir(&dir).unwrap();
    let err = inbox.store(b"MSH|", Some(b"X")).await.unwrap_err();
    assert!(matches!(err, InboxError::Write { .. }), "{err:?}");
    assert!(err.to_string().contains("gone"), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}

/// UTC timestamps are fixed width with microseconds, including leap days and centuries.
#[test]
fn utc_timestamp_format() {
    let at = |secs, micros| UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
    assert_eq!(
        utc_timestamp(at(1_795_317_301, 123_456)),
        "20261122T031501.123456Z"
    );
    assert_eq!(utc_timestamp(at(951_868_799, 7)), "20000229T235959.000007Z");
    assert_eq!(
        utc_timestamp(at(4_107_542_400, 0)),
        "21000301T000000.000000Z"
    );
    assert_eq!(utc_timestamp(UNIX_EPOCH), "19700101T000000.000000Z");
    assert_eq!(
        utc_timestamp(UNIX_EPOCH - Duration::from_secs(1)),
        "19700101T000000.000000Z"
    );
}

/// An empty inbox path is refused: it would put files in the working directory and then fail
/// every directory sync (so every message would be stored yet answered AE).
#[test]
fn open_refuses_an_empty_path() {
    let error = Inbox::open("").unwrap_err();
    assert!(matches!(error, InboxError::Open { .. }), "{error:?}");
}

/// Names sort in the order `store` was called, not the order the writes finished: a large
/// message handed over first still sorts before a small one handed over right after it (whose
/// write and fsync finish first), and two calls in the same microsecond still get distinct,
/// ordered times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_sort_in_call_order_whatever_finishes_first() {
    let tmp = temp_dir();
    let inbox = Inbox::open(tmp.path()).unwrap();
    let big = inbox.store_bytes(Bytes::from(vec![b'x'; 8 << 20]), Some(b"FIRST"));
    let small = inbox.store_bytes(Bytes::from_static(b"MSH|"), Some(b"SECOND"));
    let third = inbox.store_bytes(Bytes::from_static(b"MSH|"), Some(b"A-THIRD"));
    let (small, big, third) = tokio::join!(small, big, third);
    let names: Vec<String> = [big, small, third]
        .into_iter()
        .map(|path| {
            path.unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, names);
}

/// Stored messages and a directory the inbox creates are not readable by other users (patient
/// data), whatever the umask adds.
#[cfg(unix)]
#[tokio::test]
async fn files_and_created_directory_are_closed_to_others() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = temp_dir();
    let dir = tmp.path().join("new").join("inbox");
    let inbox = Inbox::open(&dir).unwrap();
    let path = inbox.store(b"MSH|", Some(b"P1")).await.unwrap();
    for p in [&path, &dir, &tmp.path().join("new")] {
        let mode = fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode & 0o007, 0, "{} has mode {mode:o}", p.display());
    }
}

/// A directory `fsync` that fails after the link: the message is answered AE, so its file must
/// not stay under its final name (a reader would take it as stored, and the resend would make
/// a second copy). Nothing is left, not even the temporary file.
#[test]
fn failed_directory_sync_leaves_no_stored_file() {
    let tmp = temp_dir();
    let inbox = Inbox::open(tmp.path()).unwrap();
    FAIL_SYNC_DIR.with(|fail| fail.set(true));
    let result = inbox.prepare(Some(b"SYNCFAIL")).run(b"MSH|^~\\&|A\r");
    FAIL_SYNC_DIR.with(|fail| fail.set(false));
    let err = result.unwrap_err();
    assert!(matches!(err, InboxError::SyncDir { .. }), "{err:?}");
    assert_eq!(entries(tmp.path()), Vec::<String>::new());
}

/// Opening an inbox removes the `.tmp-` leftovers of a crashed process (one no longer
/// running), keeps those of running processes and every stored message, and says how many it
/// removed in one log line.
#[test]
fn open_removes_leftovers_of_crashed_writes_and_logs_how_many() {
    use std::sync::{Arc, Mutex};

    let tmp = temp_dir();
    // No process runs with a pid this large (Linux's largest pid is 4194304).
    let dead = u32::MAX - 1;
    for n in 0..3 {
        fs::write(tmp.path().join(format!(".tmp-{dead}-{n}")), b"MSH|partial").unwrap();
    }
    let live = format!(".tmp-{}-999999", std::process::id());
    fs::write(tmp.path().join(&live), b"MSH|in progress").unwrap();
    fs::write(
        tmp.path().join("20260101T000000.000000Z-A-1-1.hl7"),
        b"MSH|",
    )
    .unwrap();

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || Inbox::open(tmp.path()).unwrap());

    let mut left = entries(tmp.path());
    left.sort();
    assert_eq!(left, [live, "20260101T000000.000000Z-A-1-1.hl7".to_owned()]);
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(
        log.contains("removed 3 leftover temporary file(s)"),
        "{log}"
    );
}
