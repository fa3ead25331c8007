//! The message store over real SQLite files and directories: group commit, duplicates, search,
//! retention, failures and restarts.

mod support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use mllp::hl7::Message;
use mllp::store::sqlite::{Filter, SqliteReader};
use mllp::store::{
    DirStore, FAILURE_HOLD, Receipt, Record, SqliteConfig, SqliteStore, Store, StoreError,
    StoreHealth,
};

fn message(sender: &str, control_id: &str, msh7: &str, kind: &str, body: &str) -> Message {
    let text = format!(
        "MSH|^~\\&|{sender}|HOSP|EHR|HOSP|{msh7}||{kind}|{control_id}|P|2.5.1\rPID|1||{body}\r"
    );
    Message::parse(Bytes::from(text)).unwrap()
}

fn record_at(message: &Message, at: SystemTime) -> Record {
    Record::from_message(
        message,
        at,
        "127.0.0.1:2575".parse().unwrap(),
        "127.0.0.1:40000".parse().unwrap(),
        None,
    )
}

fn record(message: &Message) -> Record {
    record_at(message, SystemTime::now())
}

fn adt(control_id: &str, body: &str) -> Message {
    message("LAB", control_id, "20240101120000", "ADT^A01^ADT_A01", body)
}

async fn open(dir: &tempfile::TempDir, config: SqliteConfig) -> SqliteStore {
    SqliteStore::open(dir.path().join("inbox.db"), config)
        .await
        .unwrap()
}

fn stored_id(receipt: &Receipt) -> u64 {
    match receipt {
        Receipt::Stored { id, .. } => id.as_u64().unwrap(),
        other => panic!("expected Stored, got {other:?}"),
    }
}

#[tokio::test]
async fn appended_message_is_stored_byte_for_byte_with_its_msh_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, SqliteConfig::default()).await;
    let msg = adt("MSG1", "PATIENT^NAME");
    let receipt = store.append(record(&msg)).await.unwrap();
    let id = stored_id(&receipt);

    let reader = store.reader().unwrap();
    let stored = reader.get(id).unwrap().unwrap();
    assert_eq!(stored.payload, *msg.as_bytes());
    let s = &stored.summary;
    assert_eq!(
        (s.sending_application.as_str(), s.sending_facility.as_str()),
        ("LAB", "HOSP")
    );
    assert_eq!(s.message_type, "ADT^A01^ADT_A01");
    assert_eq!(s.control_id, "MSG1");
    assert_eq!(
        (s.processing_id.as_str(), s.version.as_str()),
        ("P", "2.5.1")
    );
    assert_eq!(s.peer, "127.0.0.1:40000");
    assert_eq!(s.size, msg.as_bytes().len() as u64);
    assert!(!s.reused_control_id);
}

#[tokio::test]
async fn duplicate_resend_is_acknowledged_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, SqliteConfig::default()).await;
    let first = store.append(record(&adt("MSG1", "X"))).await.unwrap();
    // The sender re-stamped MSH-7 on the resend: still the same message.
    let resend = message("LAB", "MSG1", "20240101120500", "ADT^A01^ADT_A01", "X");
    let again = store.append(record(&resend)).await.unwrap();
    assert_eq!(
        again,
        Receipt::Duplicate {
            of: first.id().clone()
        }
    );
    assert_eq!(store.reader().unwrap().count().unwrap(), 1);
    assert_eq!(store.stats().duplicates, 1);
}

#[tokio::test]
async fn reused_control_id_with_other_content_is_stored_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, SqliteConfig::default()).await;
    store.append(record(&adt("MSG1", "X"))).await.unwrap();
    let other = store.append(record(&adt("MSG1", "Y"))).await.unwrap();
    assert!(matches!(
        other,
        Receipt::Stored {
            reused_control_id: true,
            ..
        }
    ));
    // Another sender's MSG1 is neither a duplicate nor a reuse.
    let elsewhere = message("RAD", "MSG1", "20240101120000", "ADT^A01", "X");
    let third = store.append(record(&elsewhere)).await.unwrap();
    assert!(matches!(
        third,
        Receipt::Stored {
            reused_control_id: false,
            ..
        }
    ));
    let reader = store.reader().unwrap();
    assert_eq!(reader.count().unwrap(), 3);
    let flagged = reader.get(stored_id(&other)).unwrap().unwrap();
    assert!(flagged.summary.reused_control_id);
}

#[tokio::test]
async fn resend_outside_the_window_or_with_dedup_off_is_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        &dir,
        SqliteConfig::default().dedup_window(Some(Duration::from_secs(3600))),
    )
    .await;
    let msg = adt("MSG1", "X");
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    store.append(record_at(&msg, two_hours_ago)).await.unwrap();
    assert!(!store.append(record(&msg)).await.unwrap().is_duplicate());
    drop(store);

    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, SqliteConfig::default().dedup_window(None)).await;
    store.append(record(&msg)).await.unwrap();
    assert!(!store.append(record(&msg)).await.unwrap().is_duplicate());
    assert_eq!(store.reader().unwrap().count().unwrap(), 2);
}

#[tokio::test]
async fn duplicates_inside_one_batch_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, SqliteConfig::default()).await;
    let msg = adt("MSG1", "X");
    let receipts =
        futures_util::future::join_all((0..20).map(|_| store.append(record(&msg)))).await;
    let stored = receipts
        .iter()
        .filter(|r| !r.as_ref().unwrap().is_duplicate())
        .count();
    assert_eq!(stored, 1);
    assert_eq!(store.reader().unwrap().count().unwrap(), 1);
}

/// Holds SQLite's write lock from a second connection, as another process would.
fn lock_file(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    conn
}

#[tokio::test]
async fn waiting_messages_share_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, SqliteConfig::default()).await;
    // Warm up: the schema exists and one commit is counted.
    store.append(record(&adt("WARM", "X"))).await.unwrap();
    // While another connection holds the write lock, the writer is stuck on its first batch
    // and everything else queues behind it.
    let lock = lock_file(&dir.path().join("inbox.db"));
    let appends: Vec<_> = (0..200)
        .map(|i| tokio::spawn(store.append(record(&adt(&format!("M{i}"), "X")))))
        .collect();
    let waiting = || {
        let s = store.stats();
        s.queued + s.committing
    };
    while waiting() < 200 {
        tokio::task::yield_now().await;
    }
    lock.execute_batch("COMMIT").unwrap();
    for append in appends {
        assert!(!append.await.unwrap().unwrap().is_duplicate());
    }
    let stats = store.stats();
    assert_eq!(stats.stored, 201);
    // The warm-up, the batch the writer held while locked, and everything that waited behind
    // it in one more commit.
    assert!(stats.commits <= 3, "{stats:?}");
}

/// Appends messages `M0`, `M1`, … with `body` until one is refused (fewer than `most`): how
/// many were stored, and the refusal.
async fn fill_until_refused(store: &SqliteStore, body: &str, most: u64) -> (u64, StoreError) {
    let mut stored = 0;
    loop {
        match store
            .append(record(&adt(&format!("M{stored}"), body)))
            .await
        {
            Ok(_) => stored += 1,
            Err(e) => return (stored, e),
        }
        assert!(stored < most, "max_size never reached");
    }
}

#[tokio::test]
async fn full_store_answers_an_error_and_recovers_after_a_prune() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, SqliteConfig::default().max_size(Some(128 * 1024))).await;
    let big = "X".repeat(8000);
    let (stored, error) = fill_until_refused(&store, &big, 1000).await;
    assert!(matches!(error, StoreError::Commit(_)), "{error:?}");
    let text = format!("{}", std::error::Error::source(&error).unwrap());
    assert!(
        text.starts_with("the store reached its size limit (131072 bytes"),
        "names the limit, not a full disk: {text}"
    );
    assert_eq!(store.health(), StoreHealth::Failing);
    assert_eq!(store.reader().unwrap().count().unwrap(), stored);

    // Freeing space (what retention does) is enough: the next commit succeeds.
    let deleted = store
        .prune_before(SystemTime::now() + Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(deleted, stored);
    store.append(record(&adt("AFTER", "X"))).await.unwrap();
    assert_eq!(store.health(), StoreHealth::Ok);
    // The message of the failed commit was never stored: its resend is new, not a duplicate.
    let resend = store
        .append(record(&adt(&format!("M{stored}"), &big)))
        .await
        .unwrap();
    assert!(!resend.is_duplicate(), "{resend:?}");
}

/// A limit below what a new file's schema already takes fails the first commit that needs a
/// page more, as any reached limit does (SQLite cannot lower its page limit below the file).
#[tokio::test]
async fn a_size_limit_below_the_new_files_size_fails_the_first_growing_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, SqliteConfig::default().max_size(Some(8192))).await;
    let (stored, error) = fill_until_refused(&store, &"X".repeat(8000), 10).await;
    assert!(matches!(error, StoreError::Commit(_)), "{error:?}");
    assert_eq!(
        stored, 0,
        "the first message needs pages the limit does not allow"
    );
}

/// A store's readiness check says why it is not ready while its commits fail, and is healthy
/// again once one succeeds.
#[cfg(feature = "admin")]
#[tokio::test]
async fn a_failing_stores_readiness_check_says_its_commits_fail() {
    use mllp::admin::Health;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, SqliteConfig::default().max_size(Some(8192))).await;
    let check = Health::of_store(&store);
    assert!(check.healthy, "{check:?}");
    assert!(check.detail.starts_with("sqlite:"), "{check:?}");
    store
        .append(record(&adt("BIG", &"X".repeat(8000))))
        .await
        .unwrap_err();
    let check = Health::of_store(&store);
    assert!(!check.healthy, "{check:?}");
    assert!(
        check
            .detail
            .contains(": commits are failing, messages are answered AE/CE"),
        "{check:?}"
    );
    store.append(record(&adt("SMALL", "X"))).await.unwrap();
    assert!(Health::of_store(&store).healthy);
}

#[tokio::test]
async fn locked_store_answers_an_error_and_recovers_when_released() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        &dir,
        SqliteConfig::default().busy_timeout(Duration::from_millis(50)),
    )
    .await;
    store.append(record(&adt("M0", "X"))).await.unwrap();
    let lock = lock_file(&dir.path().join("inbox.db"));
    let error = store.append(record(&adt("M1", "X"))).await.unwrap_err();
    assert!(matches!(error, StoreError::Commit(_)));
    assert_eq!(store.health(), StoreHealth::Failing);
    drop(lock);
    store.append(record(&adt("M1", "X"))).await.unwrap();
    assert_eq!(store.health(), StoreHealth::Ok);
    assert_eq!(store.reader().unwrap().count().unwrap(), 2);
}

/// A store whose commit failed is unready for `FAILURE_HOLD` while no message tries it, then
/// ready again: a load balancer sends nothing to an unready receiver, so without this the
/// store would never commit again, and never become ready, after its cause was gone. A
/// message that then fails holds it unready again; one that succeeds makes it ready at once.
#[tokio::test(start_paused = true)]
async fn failing_store_is_unready_for_the_hold_then_lets_a_message_try_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        &dir,
        SqliteConfig::default().busy_timeout(Duration::from_millis(50)),
    )
    .await;
    let lock = lock_file(&dir.path().join("inbox.db"));
    store.append(record(&adt("M1", "X"))).await.unwrap_err();
    assert_eq!(store.health(), StoreHealth::Failing);
    tokio::time::advance(FAILURE_HOLD - Duration::from_millis(1)).await;
    assert_eq!(store.health(), StoreHealth::Failing);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(store.health(), StoreHealth::Ok, "the hold is over");
    // Still locked: the message let through fails, and the store is held unready again.
    store.append(record(&adt("M1", "X"))).await.unwrap_err();
    assert_eq!(store.health(), StoreHealth::Failing);
    drop(lock);
    store.append(record(&adt("M1", "X"))).await.unwrap();
    assert_eq!(store.health(), StoreHealth::Ok);
}

/// The directory store reports its failed writes too (it was always `Ok`), with the same hold.
#[tokio::test(start_paused = true)]
async fn dir_store_is_unready_after_a_failed_write_until_one_succeeds_or_the_hold_ends() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    let store = DirStore::open(&inbox).unwrap();
    store.append(record(&adt("D0", "X"))).await.unwrap();
    assert_eq!(store.health(), StoreHealth::Ok);
    let Some(unwritable) = Unwritable::make(std::slice::from_ref(&inbox), true) else {
        eprintln!("skipped: this process cannot make a directory unwritable here");
        return;
    };
    let error = store.append(record(&adt("D1", "X"))).await.unwrap_err();
    assert!(matches!(error, StoreError::Dir(_)), "{error:?}");
    assert_eq!(store.health(), StoreHealth::Failing);
    tokio::time::advance(FAILURE_HOLD).await;
    assert_eq!(store.health(), StoreHealth::Ok, "the hold is over");
    store.append(record(&adt("D2", "X"))).await.unwrap_err();
    assert_eq!(store.health(), StoreHealth::Failing);
    drop(unwritable);
    store.append(record(&adt("D3", "X"))).await.unwrap();
    assert_eq!(store.health(), StoreHealth::Ok);
}

/// Makes files (or directories: no file can be created in them) unwritable for this process,
/// and undoes it on drop (an immutable file cannot
/// even be deleted with its directory): mode 0444 for an ordinary user; for root, whom modes do
/// not stop, the immutable attribute (`chattr +i`, ext4 and most disk file systems).
struct Unwritable {
    paths: Vec<std::path::PathBuf>,
    immutable: bool,
}

impl Unwritable {
    /// `None` when neither works here (root on a file system without the attribute): the caller
    /// cannot create the condition and says so.
    fn make(paths: &[std::path::PathBuf], allow_mode: bool) -> Option<Unwritable> {
        let writable = |p: &std::path::Path| {
            if p.is_dir() {
                tempfile::NamedTempFile::new_in(p).is_ok()
            } else {
                std::fs::OpenOptions::new().write(true).open(p).is_ok()
            }
        };
        if allow_mode {
            for path in paths {
                let mut mode = std::fs::metadata(path).unwrap().permissions();
                mode.set_readonly(true);
                std::fs::set_permissions(path, mode).unwrap();
            }
            if !paths.iter().any(|p| writable(p)) {
                return Some(Unwritable {
                    paths: paths.to_vec(),
                    immutable: false,
                });
            }
        }
        let guard = Unwritable {
            paths: paths.to_vec(),
            immutable: true,
        };
        let set = std::process::Command::new("chattr")
            .arg("+i")
            .args(paths)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        (set && !paths.iter().any(|p| writable(p))).then_some(guard)
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        if self.immutable {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .args(&self.paths)
                .stderr(std::process::Stdio::null())
                .status();
        }
        for path in &self.paths {
            if let Ok(meta) = std::fs::metadata(path) {
                let mut mode = meta.permissions();
                #[allow(clippy::permissions_set_readonly_false)]
                mode.set_readonly(false);
                let _ = std::fs::set_permissions(path, mode);
            }
        }
    }
}

/// A store file that cannot be written is refused when opened, with that reason: SQLite would
/// open it read-only without a word, and every message would then be answered AE until a
/// restart, even after the file became writable again.
#[tokio::test]
async fn unwritable_store_file_is_refused_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inbox.db");
    let store = SqliteStore::open(&path, SqliteConfig::default())
        .await
        .unwrap();
    store.append(record(&adt("M0", "X"))).await.unwrap();
    store.close().await;
    let Some(_unwritable) = Unwritable::make(std::slice::from_ref(&path), true) else {
        eprintln!(
            "skipped: this process cannot make a file unwritable here (root without chattr +i)"
        );
        return;
    };
    let err = SqliteStore::open(&path, SqliteConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(text.contains("the file cannot be written"), "{text}");
}

/// A running store whose files stop taking writes (here: made immutable; in the field, a file
/// system remounted read-only after an error) answers errors, and takes messages again once
/// they are writable, without a restart. Only root can do this to files a process already has
/// open (modes are checked at open), so this runs where `chattr +i` works.
#[tokio::test]
async fn store_whose_files_turn_unwritable_answers_an_error_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, SqliteConfig::default()).await;
    store.append(record(&adt("M0", "X"))).await.unwrap();
    let files: Vec<_> = ["inbox.db", "inbox.db-wal"]
        .iter()
        .map(|f| dir.path().join(f))
        .collect();
    let Some(unwritable) = Unwritable::make(&files, false) else {
        eprintln!("skipped: chattr +i is not available to this process");
        return;
    };
    let error = store.append(record(&adt("M1", "X"))).await.unwrap_err();
    assert!(matches!(error, StoreError::Commit(_)), "{error:?}");
    assert_eq!(store.health(), StoreHealth::Failing);
    drop(unwritable);
    store.append(record(&adt("M1", "X"))).await.unwrap();
    assert_eq!(store.health(), StoreHealth::Ok);
    assert_eq!(store.reader().unwrap().count().unwrap(), 2);
}

#[tokio::test]
async fn reopened_store_keeps_its_messages_and_never_reuses_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, SqliteConfig::default()).await;
    let a = stored_id(&store.append(record(&adt("A", "X"))).await.unwrap());
    let b = stored_id(&store.append(record(&adt("B", "X"))).await.unwrap());
    store
        .prune_before(SystemTime::now() + Duration::from_secs(1))
        .await
        .unwrap();
    let c = stored_id(&store.append(record(&adt("C", "X"))).await.unwrap());
    store.close().await;

    let store = open(&dir, SqliteConfig::default()).await;
    // A resend of C after the restart is still recognised.
    assert!(
        store
            .append(record(&adt("C", "X")))
            .await
            .unwrap()
            .is_duplicate()
    );
    let d = stored_id(&store.append(record(&adt("D", "X"))).await.unwrap());
    assert!(a < b && b < c && c < d);
    assert_eq!(store.reader().unwrap().count().unwrap(), 2);
}

#[tokio::test]
async fn foreign_corrupt_and_newer_files_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();

    let foreign = dir.path().join("other.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE patients (name TEXT)")
        .unwrap();
    let before = std::fs::read(&foreign).unwrap();
    let err = SqliteStore::open(&foreign, SqliteConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
    assert_eq!(std::fs::read(&foreign).unwrap(), before);

    // SQLite's header over damaged bytes: corrupt, restore it.
    let damaged = dir.path().join("damaged.db");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend(vec![0x5a; 8192]);
    std::fs::write(&damaged, &bytes).unwrap();
    let err = SqliteStore::open(&damaged, SqliteConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("restore it from a backup"));
    assert_eq!(std::fs::read(&damaged).unwrap(), bytes);

    // Another kind of file altogether: not a database, choose another path.
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, vec![0x5a; 8192]).unwrap();
    let err = SqliteStore::open(&text, SqliteConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotADatabase { .. }), "{err:?}");
    assert!(
        err.to_string().contains("is not an SQLite database"),
        "{err}"
    );
    assert_eq!(std::fs::read(&text).unwrap(), vec![0x5a; 8192]);

    let newer = dir.path().join("newer.db");
    SqliteStore::open(&newer, SqliteConfig::default())
        .await
        .unwrap()
        .close()
        .await;
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let err = SqliteStore::open(&newer, SqliteConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NewerSchema { found: 99, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade mllp"));
}

#[tokio::test]
async fn search_filters_by_type_sender_control_id_and_time_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, SqliteConfig::default()).await;
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    store
        .append(record_at(
            &message("LAB", "1", "", "ADT^A01", "X"),
            hour_ago,
        ))
        .await
        .unwrap();
    store
        .append(record(&message("LAB", "2", "", "ADT^A08", "X")))
        .await
        .unwrap();
    store
        .append(record(&message("LAB", "3", "", "ORU^R01", "X")))
        .await
        .unwrap();
    store
        .append(record(&message("RAD", "4", "", "ADT^A01", "X")))
        .await
        .unwrap();
    let reader = store.reader().unwrap();
    let ids = |f: &Filter| -> Vec<String> {
        reader
            .list(f)
            .unwrap()
            .into_iter()
            .map(|s| s.control_id)
            .collect()
    };

    assert_eq!(ids(&Filter::default()), ["4", "3", "2", "1"]);
    let mut f = Filter::default();
    f.message_type = Some("ADT^*".parse().unwrap());
    assert_eq!(ids(&f), ["4", "2", "1"]);
    f.message_type = Some("*^A01".parse().unwrap());
    assert_eq!(ids(&f), ["4", "1"]);
    f.sending_application = Some("LAB".into());
    assert_eq!(ids(&f), ["1"]);
    let mut f = Filter::default();
    f.since = Some(SystemTime::now() - Duration::from_secs(60));
    f.limit = Some(2);
    assert_eq!(ids(&f), ["4", "3"]);
    f.oldest_first = true;
    assert_eq!(ids(&f), ["2", "3"]);
    let mut f = Filter::default();
    f.control_id = Some("3".into());
    assert_eq!(ids(&f), ["3"]);
    let mut payloads = 0;
    reader
        .for_each(&Filter::default(), |m| {
            payloads += m.payload.len();
            true
        })
        .unwrap();
    assert!(payloads > 0);
    // Row by row, newest first, and no further than the callback wants.
    let mut seen = Vec::new();
    reader
        .for_each_summary(&Filter::default(), |s| {
            seen.push(s.control_id);
            seen.len() < 2
        })
        .unwrap();
    assert_eq!(seen, ["4", "3"]);
}

#[tokio::test]
async fn retention_deletes_old_messages_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, SqliteConfig::default()).await;
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 86_400);
    for i in 0..1200 {
        store
            .append(record_at(&adt(&format!("OLD{i}"), "X"), two_days_ago))
            .await
            .unwrap();
    }
    store.append(record(&adt("NEW", "X"))).await.unwrap();
    store.close().await;

    // Reopened with a one-day retention: the first round runs at once, in chunks.
    let store = open(
        &dir,
        SqliteConfig::default().retention(Some(Duration::from_secs(86_400))),
    )
    .await;
    let reader = store.reader().unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while reader.count().unwrap() != 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("retention never ran");
    let left = reader.list(&Filter::default()).unwrap();
    assert_eq!(left[0].control_id, "NEW");
}

#[tokio::test]
async fn reader_refuses_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteReader::open(dir.path().join("nope.db")).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(!dir.path().join("nope.db").exists());
}

/// A store path in a directory that does not exist is refused with that reason (SQLite alone
/// says only "unable to open database file"), and the directory is not created.
#[tokio::test]
async fn store_in_a_missing_directory_names_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let err = SqliteStore::open(missing.join("inbox.db"), SqliteConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        text.contains(&format!("directory {} does not exist", missing.display())),
        "{text}"
    );
    assert!(!missing.exists());

    // A path under a file: said so, not "does not exist".
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let err = SqliteStore::open(file.join("inbox.db"), SqliteConfig::default())
        .await
        .unwrap_err();
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        text.contains(&format!("directory {} is not a directory", file.display())),
        "{text}"
    );
}

/// A write-ahead log whose database file is missing or empty (the .db deleted or moved while
/// its -wal stayed): opening would start an empty store and throw the log's messages away, so
/// it is refused, naming both files, and neither is touched. A store that fails to open
/// leaves no empty file of its own making.
#[tokio::test]
async fn a_write_ahead_log_without_its_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, SqliteConfig::default()).await;
    store.append(record(&adt("W0", "X"))).await.unwrap();
    // Keep the log: copy both files while the store is open (as a crash would leave them).
    let kept = tempfile::tempdir().unwrap();
    let wal = kept.path().join("inbox.db-wal");
    std::fs::copy(dir.path().join("inbox.db-wal"), &wal).unwrap();
    store.close().await;
    let wal_bytes = std::fs::read(&wal).unwrap();
    assert!(!wal_bytes.is_empty());
    let err = SqliteStore::open(kept.path().join("inbox.db"), SqliteConfig::default())
        .await
        .unwrap_err();
    let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        text.contains("holds committed messages but") && text.contains("is missing or empty"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&wal).unwrap(),
        wal_bytes,
        "the log is untouched"
    );
    assert!(
        !kept.path().join("inbox.db").exists(),
        "no empty database left"
    );
}

/// The store file holds patient data: it is created readable by its owner and group only
/// (0640 before the umask), as the directory store's files are, and its `-wal` and `-shm`
/// files take the same mode. A file that exists keeps its own.
#[cfg(unix)]
#[tokio::test]
async fn new_store_files_are_not_world_readable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, SqliteConfig::default()).await;
    store.append(record(&adt("MODE-1", "X"))).await.unwrap();
    for name in ["inbox.db", "inbox.db-wal", "inbox.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o007, 0, "{name}: {mode:o}");
        assert_eq!(mode & 0o600, 0o600, "{name}: {mode:o}");
    }
    store.close().await;

    let path = dir.path().join("inbox.db");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let store = open(&dir, SqliteConfig::default()).await;
    store.append(record(&adt("MODE-2", "X"))).await.unwrap();
    store.close().await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "an existing file keeps its mode");
}

#[tokio::test]
async fn dir_store_writes_one_file_per_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path().join("inbox")).unwrap();
    let msg = adt("MSG1", "X");
    let a = store.append(record(&msg)).await.unwrap();
    let b = store.append(record(&msg)).await.unwrap();
    assert_ne!(a.id(), b.id(), "the directory store keeps resends");
    let file = dir.path().join("inbox").join(a.id().as_str());
    assert_eq!(std::fs::read(file).unwrap(), msg.as_bytes().as_ref());
    assert_eq!(
        store.describe(),
        format!("dir:{}", dir.path().join("inbox").display())
    );
}

/// Through a real server: the handler runs once per stored message and sees its receipt; a
/// duplicate is acknowledged without calling it, or with `DuplicatePolicy::Handle` with a
/// duplicate receipt.
#[tokio::test]
async fn store_layer_runs_the_handler_after_the_commit_and_skips_duplicates() {
    use std::sync::{Arc, Mutex};

    use mllp::app::{Request, Router};
    use mllp::store::{DuplicatePolicy, StoreLayer, Stored};

    for policy in [DuplicatePolicy::Acknowledge, DuplicatePolicy::Handle] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, SqliteConfig::default()).await;
        let seen: Arc<Mutex<Vec<Receipt>>> = Arc::default();
        let log = seen.clone();
        let probe = Arc::new(Mutex::new(store.reader().unwrap()));
        let router = Router::new()
            .route("*", move |req: Request| {
                let log = log.clone();
                // The receipt is there, and the message is already readable: committed.
                let Stored(receipt) = req.extensions().get::<Stored>().unwrap().clone();
                let id = receipt.id().as_u64().unwrap();
                assert!(probe.lock().unwrap().get(id).unwrap().is_some());
                log.lock().unwrap().push(receipt);
                async {}
            })
            .layer(StoreLayer::new(store.clone()).duplicates(policy));
        let server = support::start(mllp::Server::builder().router(router)).await;
        let mut client = mllp::Client::new(server.local_addr().to_string());
        let msg = adt("L-1", "X");
        for _ in 0..2 {
            let ack = client.send(msg.as_bytes().clone()).await.unwrap().unwrap();
            assert_eq!(ack.code(), mllp::ack::AckCode::AA);
        }
        client.close().await;
        server.shutdown().await;
        let seen = seen.lock().unwrap();
        match policy {
            DuplicatePolicy::Acknowledge => assert_eq!(seen.len(), 1),
            _ => {
                assert_eq!(seen.len(), 2);
                assert!(seen[1].is_duplicate());
            }
        }
        assert_eq!(store.reader().unwrap().count().unwrap(), 1);
    }
}

/// A resend of a message whose handler did not accept it (AE, AR) is handled again, not
/// acknowledged AA from the store: that would claim a success the handler never gave. Once
/// the handler has accepted it, resends are acknowledged without calling it. Nothing is
/// stored twice.
#[tokio::test]
async fn resend_of_a_refused_message_is_handled_again_not_acknowledged_from_the_store() {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use mllp::ack::{AckCode, ErrorCode};
    use mllp::app::{HandlerError, Request, Router};
    use mllp::store::StoreLayer;

    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, SqliteConfig::default()).await;
    let calls: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let counted = calls.clone();
    let router = Router::new()
        .route("*", move |req: Request| {
            let id = req.message().control_id().unwrap_or_default().to_owned();
            let call = {
                let mut calls = counted.lock().unwrap();
                let n = calls.entry(id.clone()).or_default();
                *n += 1;
                *n
            };
            async move {
                match (id.as_str(), call) {
                    ("FLAKY", 1) => Err(HandlerError::internal("busy")),
                    ("BAD", _) => Err(HandlerError::reject(
                        ErrorCode::UnsupportedEventCode,
                        "not here",
                    )),
                    _ => Ok(()),
                }
            }
        })
        .layer(StoreLayer::new(store.clone()));
    let server = support::start(mllp::Server::builder().router(router)).await;
    let mut client = mllp::Client::new(server.local_addr().to_string());
    async fn answer(client: &mut mllp::Client, id: &str) -> AckCode {
        match client.send(adt(id, "X").as_bytes().clone()).await {
            Ok(Some(ack)) => ack.code(),
            Err(mllp::ClientError::Negative { code, .. }) => code,
            other => panic!("{other:?}"),
        }
    }
    let c = &mut client;
    assert_eq!(answer(c, "FLAKY").await, AckCode::AE);
    assert_eq!(
        answer(c, "FLAKY").await,
        AckCode::AA,
        "handled again, and accepted"
    );
    assert_eq!(answer(c, "FLAKY").await, AckCode::AA, "now from the store");
    assert_eq!(answer(c, "BAD").await, AckCode::AR);
    assert_eq!(
        answer(c, "BAD").await,
        AckCode::AR,
        "never AA from the store"
    );
    assert_eq!(answer(c, "GOOD").await, AckCode::AA);
    assert_eq!(answer(c, "GOOD").await, AckCode::AA);
    client.close().await;
    server.shutdown().await;
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        (calls["FLAKY"], calls["BAD"], calls["GOOD"]),
        (2, 2, 1),
        "{calls:?}"
    );
    assert_eq!(
        store.reader().unwrap().count().unwrap(),
        3,
        "each stored once"
    );
}

/// The store's file renamed (or deleted) under a running store: SQLite would go on writing to
/// the open file, which is no longer at the store's path, and a restart would open a new,
/// empty one. Such a commit is answered as a failure, never as stored; once the file is back
/// at its path, the store takes messages again. The same for the write-ahead log.
#[cfg(unix)]
#[tokio::test]
async fn a_store_file_moved_while_open_fails_commits_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, SqliteConfig::default()).await;
    store.append(record(&adt("M0", "X"))).await.unwrap();
    let path = dir.path().join("inbox.db");
    let aside = dir.path().join("aside.db");
    std::fs::rename(&path, &aside).unwrap();
    let error = store.append(record(&adt("M1", "X"))).await.unwrap_err();
    let text = format!("{}", std::error::Error::source(&error).unwrap());
    assert!(
        text.contains("was deleted, renamed or replaced while the store had it open"),
        "{text}"
    );
    assert_eq!(store.health(), StoreHealth::Failing);
    std::fs::rename(&aside, &path).unwrap();
    store.append(record(&adt("M2", "X"))).await.unwrap();
    assert_eq!(store.health(), StoreHealth::Ok);

    let wal = dir.path().join("inbox.db-wal");
    let wal_aside = dir.path().join("aside.db-wal");
    std::fs::rename(&wal, &wal_aside).unwrap();
    let error = store.append(record(&adt("M3", "X"))).await.unwrap_err();
    let text = format!("{}", std::error::Error::source(&error).unwrap());
    assert!(text.contains("inbox.db-wal was deleted"), "{text}");
    std::fs::rename(&wal_aside, &wal).unwrap();
    store.append(record(&adt("M4", "X"))).await.unwrap();
    // What was answered as failed is not stored, in the moved files either: with the files
    // back, only the messages that were acknowledged are there.
    let reader = store.reader().unwrap();
    let ids: Vec<String> = reader
        .list(&Filter::default())
        .unwrap()
        .into_iter()
        .map(|m| m.control_id)
        .collect();
    assert_eq!(ids, ["M4", "M2", "M0"]);
    store.close().await;
}

/// Two messages sent in one frame are refused (AR, ERR-3 100, ERR-2 naming the second MSH,
/// MSA-2 the first message's control id) and nothing is stored: the second was once stored
/// inside the first, never acknowledged nor found by its own control id. The connection goes
/// on, and each message sent in a frame of its own is stored.
#[tokio::test]
async fn two_messages_in_one_frame_are_refused_and_not_stored() {
    use mllp::app::{Request, Router};
    use mllp::store::StoreLayer;
    use support::{Peer, field, within};

    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, SqliteConfig::default()).await;
    let router = Router::new()
        .route("*", |_req: Request| async {})
        .layer(StoreLayer::new(store.clone()));
    let server = support::start(mllp::Server::builder().router(router)).await;
    let mut peer = Peer::connect(server.local_addr()).await;
    let first = adt("F001", "ONE");
    let second = adt("F002", "TWO");
    let both = [first.as_bytes().as_ref(), second.as_bytes().as_ref()].concat();
    let ack = peer.call(Bytes::from(both)).await;
    assert_eq!(field(&ack, "MSA-1"), "AR");
    assert_eq!(field(&ack, "MSA-2"), "F001");
    assert_eq!(field(&ack, "ERR-3.1"), "100");
    assert_eq!(field(&ack, "ERR-2"), "MSH^2");
    assert_eq!(store.reader().unwrap().count().unwrap(), 0);
    for message in [first, second] {
        let ack = peer.call(message.as_bytes().clone()).await;
        assert_eq!(field(&ack, "MSA-1"), "AA");
    }
    assert_eq!(store.reader().unwrap().count().unwrap(), 2);
    within(server.shutdown()).await;
}
