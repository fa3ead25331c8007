//! The writer thread: group commit, duplicate detection, pruning between commits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};

use super::{SqliteConfig, micros};
use crate::store::{Receipt, Record, StoreError, StoreId};

/// What the writer is asked to do.
pub(super) enum Job {
    /// Store one message; answered after the commit that carries it.
    Append {
        record: Box<Record>,
        reply: oneshot::Sender<Result<Receipt, StoreError>>,
    },
    /// Delete messages received before `cutoff` (µs), a small transaction at a time, while no
    /// append waits. Answered with the count once all are gone.
    Prune {
        cutoff: i64,
        reply: Option<oneshot::Sender<Result<u64, StoreError>>>,
    },
    /// Commit what came before, copy the log into the database file, and stop: appends sent
    /// after it are answered [`StoreError::Closed`].
    Close,
}

type Batch = Vec<(Record, oneshot::Sender<Result<Receipt, StoreError>>)>;

/// Rows one prune transaction deletes: small, so an append waits at most that long.
const PRUNE_CHUNK: usize = 500;

/// What the writer tells the store's handles.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// The last commit failed.
    pub(super) failing: AtomicBool,
    /// Transactions committed.
    pub(super) commits: AtomicU64,
    /// Messages stored.
    pub(super) stored: AtomicU64,
    /// Duplicates found.
    pub(super) duplicates: AtomicU64,
    /// Commits that failed.
    pub(super) failures: AtomicU64,
    /// Messages in the transaction being written now.
    pub(super) committing: AtomicUsize,
}

pub(super) fn spawn(
    conn: Connection,
    path: PathBuf,
    jobs: mpsc::Receiver<Job>,
    config: SqliteConfig,
    counters: Arc<Counters>,
) -> std::io::Result<JoinHandle<()>> {
    let files = Files::new(path);
    std::thread::Builder::new()
        .name("mllp-store-writer".into())
        .spawn(move || {
            Writer {
                conn,
                config,
                counters,
                prune: None,
                files,
                closing: false,
            }
            .run(jobs)
        })
}

struct Writer {
    conn: Connection,
    config: SqliteConfig,
    counters: Arc<Counters>,
    /// A prune under way: cutoff, deleted so far, who waits for the count.
    prune: Option<Prune>,
    /// The files the connection writes, as they were when it opened them.
    files: Files,
    /// A close was asked for: stop after this batch.
    closing: bool,
}

/// The database and write-ahead log files the connection has open, by device and inode, to
/// tell that they are still the ones at the store's path: SQLite goes on writing to a file that
/// was deleted or renamed under it, and a commit there is not durable under the store's name
/// (a restart opens a new, empty file, and discards the log of the old one).
struct Files {
    path: PathBuf,
    wal_path: PathBuf,
    db: Option<(u64, u64)>,
    /// Taken after the first commit (the log exists from the first write on).
    wal: Option<(u64, u64)>,
}

impl Files {
    fn new(path: PathBuf) -> Self {
        Files {
            db: identity(&path),
            wal_path: super::schema::wal_path(&path),
            path,
            wal: None,
        }
    }

    /// `Err` with the reason when a file at the store's path is not the one being written.
    fn check(&mut self) -> Result<(), String> {
        let moved = |what: &Path| {
            format!(
                "{} was deleted, renamed or replaced while the store had it open: commits there \
                 would be lost; restore it, or restart to open the file now at the path",
                what.display()
            )
        };
        if self.db.is_some() && identity(&self.path) != self.db {
            return Err(moved(&self.path));
        }
        let wal = identity(&self.wal_path);
        match self.wal {
            None => self.wal = wal,
            Some(_) if wal != self.wal => return Err(moved(&self.wal_path)),
            Some(_) => {}
        }
        Ok(())
    }
}

/// A file's device and inode, `None` when there is no file at `path` (or not on Unix).
fn identity(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Some((0, 0))
    }
}

struct Prune {
    cutoff: i64,
    deleted: u64,
    replies: Vec<oneshot::Sender<Result<u64, StoreError>>>,
}

impl Writer {
    fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(self.config.max_batch);
        loop {
            // Wait for work; with a prune under way, do a piece of it whenever nothing waits.
            let first = if self.prune.is_some() {
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty) => {
                        self.prune_chunk();
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => break,
                }
            } else {
                match jobs.blocking_recv() {
                    Some(job) => job,
                    None => break,
                }
            };
            self.take(first, &mut batch);
            // Everything else already waiting goes into the same transaction.
            while batch.len() < self.config.max_batch && !self.closing {
                match jobs.try_recv() {
                    Ok(job) => self.take(job, &mut batch),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.commit(&mut batch);
            }
            if self.closing {
                // Everything committed goes into the database file, so that the file alone
                // (a copy of it once the service has stopped) holds every message; the log is
                // emptied. SQLite does it too when the last connection closes, but a reader
                // may still be open.
                if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
                    tracing::warn!(error = %crate::store::error_chain(&e), "store closing: checkpoint failed; the write-ahead log keeps the last commits");
                }
                break;
            }
        }
        // The store was dropped: answer a prune still under way with what it did.
        if let Some(prune) = self.prune.take() {
            for reply in prune.replies {
                let _ = reply.send(Ok(prune.deleted));
            }
        }
    }

    fn take(&mut self, job: Job, batch: &mut Batch) {
        match job {
            Job::Append { record, reply } => batch.push((*record, reply)),
            Job::Close => self.closing = true,
            Job::Prune { cutoff, reply } => {
                let prune = self.prune.get_or_insert(Prune {
                    cutoff,
                    deleted: 0,
                    replies: Vec::new(),
                });
                prune.cutoff = prune.cutoff.max(cutoff);
                prune.replies.extend(reply);
            }
        }
    }

    /// One transaction for the whole batch; every waiter is answered after it.
    fn commit(&mut self, batch: &mut Batch) {
        let window = self.config.dedup_window.map(|w| {
            micros(std::time::SystemTime::now()) - i64::try_from(w.as_micros()).unwrap_or(i64::MAX)
        });
        self.counters
            .committing
            .store(batch.len(), Ordering::Relaxed);
        let files = &mut self.files;
        let result = (|| -> Result<Vec<Receipt>, CommitFailure> {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let receipts = batch
                .iter()
                .map(|(record, _)| append(&tx, record, window))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            // Files moved away: rolled back (the transaction is dropped), so that what is
            // answered as failed is not in them either, where a reader or a relay that has
            // them open, or the files moved back, would find it.
            files.check().map_err(CommitFailure::Moved)?;
            tx.commit()?;
            // Moved between that check and the commit: committed there, not at the store's
            // path, so not durable under its name; answered as a failure (the sender resends,
            // and the files moved back hold a duplicate) rather than as stored.
            files.check().map_err(CommitFailure::Moved)?;
            Ok(receipts)
        })();
        self.counters.committing.store(0, Ordering::Relaxed);
        match result {
            Ok(receipts) => {
                let c = &self.counters;
                c.failing.store(false, Ordering::Relaxed);
                c.commits.fetch_add(1, Ordering::Relaxed);
                let duplicates = receipts.iter().filter(|r| r.is_duplicate()).count() as u64;
                c.duplicates.fetch_add(duplicates, Ordering::Relaxed);
                c.stored
                    .fetch_add(receipts.len() as u64 - duplicates, Ordering::Relaxed);
                for ((_, reply), receipt) in batch.drain(..).zip(receipts) {
                    // A waiter that gave up (handler timeout) is gone: its message is stored
                    // all the same, and its resend will be found a duplicate.
                    let _ = reply.send(Ok(receipt));
                }
            }
            Err(CommitFailure::Moved(reason)) => {
                self.counters.failing.store(true, Ordering::Relaxed);
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(StoreError::Commit(reason.clone().into())));
                }
            }
            Err(CommitFailure::Sqlite(e)) => {
                // The transaction was rolled back when it was dropped (rusqlite rolls back an
                // unfinished one, also after a failed COMMIT): none of the batch is visible. If
                // that rollback failed too, the connection would stay inside the transaction and
                // every later batch would fail to begin: roll back once more.
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                self.counters.failing.store(true, Ordering::Relaxed);
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                let limit = self.size_limit_reached(&e);
                let e = Arc::new(e);
                for (_, reply) in batch.drain(..) {
                    let error = SharedError(e.clone());
                    let _ = reply.send(Err(StoreError::Commit(match limit {
                        Some(max) => Box::new(SizeLimit { max, error }),
                        None => Box::new(error),
                    })));
                }
            }
        }
    }

    /// The configured size limit, when `e` ("database or disk is full") is the file having
    /// reached it rather than the disk being full.
    fn size_limit_reached(&self, e: &rusqlite::Error) -> Option<u64> {
        let max = self.config.max_size?;
        if e.sqlite_error_code() != Some(rusqlite::ErrorCode::DiskFull) {
            return None;
        }
        let pages = |pragma: &str| {
            self.conn
                .query_row(&format!("PRAGMA {pragma}"), [], |r| r.get::<_, i64>(0))
                .ok()
        };
        let (count, limit, free) = (
            pages("page_count")?,
            pages("max_page_count")?,
            pages("freelist_count")?,
        );
        // A transaction needs more pages than the free list holds, and none can be added.
        (count >= limit.saturating_sub(free.max(1))).then_some(max)
    }

    /// Deletes one small chunk of the prune under way; ends it when nothing is left.
    fn prune_chunk(&mut self) {
        let Some(prune) = self.prune.as_mut() else {
            return;
        };
        let result = self.conn.execute(
            "DELETE FROM messages WHERE id IN
                (SELECT id FROM messages WHERE received_at < ?1 ORDER BY received_at LIMIT ?2)",
            params![prune.cutoff, PRUNE_CHUNK as i64],
        );
        match result {
            Ok(n) => {
                prune.deleted += n as u64;
                if n < PRUNE_CHUNK {
                    let prune = self.prune.take().expect("checked above");
                    if prune.deleted > 0 {
                        tracing::info!(deleted = prune.deleted, "retention: old messages deleted");
                    }
                    for reply in prune.replies {
                        let _ = reply.send(Ok(prune.deleted));
                    }
                }
            }
            Err(e) => {
                let prune = self.prune.take().expect("checked above");
                tracing::warn!(error = %crate::store::error_chain(&e), "retention: delete failed; will try again");
                let e = Arc::new(e);
                for reply in prune.replies {
                    let _ = reply.send(Err(StoreError::Query(Box::new(SharedError(e.clone())))));
                }
            }
        }
    }
}

/// The stored messages of one sender and control id received since a time, oldest first.
const DEDUP_LOOKUP: &str =
    "SELECT id, digest FROM messages WHERE dedup_key = ?1 AND received_at >= ?2
    ORDER BY id";

/// One message, stored.
const INSERT: &str = "INSERT INTO messages (received_at, listener, peer, tls_identity,
        sending_application, sending_facility, receiving_application, receiving_facility,
        message_type, message_code, trigger_event, control_id, processing_id, version,
        dedup_key, digest, reused_control_id, payload)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)";

/// Looks for a duplicate, else inserts; inside the batch's transaction, so a duplicate inside
/// the same batch is found too.
fn append(tx: &Transaction<'_>, record: &Record, window: Option<i64>) -> rusqlite::Result<Receipt> {
    let key = record.dedup_key();
    let mut reused = false;
    if let Some(since) = window.filter(|_| !record.control_id().is_empty()) {
        let mut query = tx.prepare_cached(DEDUP_LOOKUP)?;
        let mut rows = query.query(params![key, since])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let digest: Vec<u8> = row.get(1)?;
            if digest == record.digest() {
                return Ok(Receipt::Duplicate {
                    of: StoreId::from(id as u64),
                });
            }
            reused = true;
        }
    }
    // MSH fields as text per MSH-18 (a Latin-1 MSH-10 is searchable as it reads).
    let text = |b| record.text(b);
    let mut insert = tx.prepare_cached(INSERT)?;
    insert.execute(params![
        micros(record.received_at()),
        record.listener().to_string(),
        record.peer().to_string(),
        record.tls_identity(),
        text(record.sending_application()),
        text(record.sending_facility()),
        text(record.receiving_application()),
        text(record.receiving_facility()),
        text(record.message_type()),
        text(record.message_code()),
        text(record.trigger_event()),
        text(record.control_id()),
        text(record.processing_id()),
        text(record.version()),
        key,
        &record.digest()[..],
        reused,
        &record.payload()[..],
    ])?;
    let id = tx.last_insert_rowid();
    Ok(Receipt::Stored {
        id: StoreId::from(id as u64),
        reused_control_id: reused,
    })
}

impl From<rusqlite::Error> for CommitFailure {
    fn from(e: rusqlite::Error) -> Self {
        CommitFailure::Sqlite(e)
    }
}

/// Why a batch was not stored.
enum CommitFailure {
    /// SQLite refused it (rolled back).
    Sqlite(rusqlite::Error),
    /// Committed to files no longer at the store's path.
    Moved(String),
}

/// A commit refused because the file reached [`SqliteConfig::max_size`].
#[derive(Debug)]
struct SizeLimit {
    max: u64,
    error: SharedError,
}

impl std::fmt::Display for SizeLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the store reached its size limit ({} bytes, max_size / --store-max-size): prune \
             older messages (retention, `mllp inbox prune`) or raise the limit",
            self.max
        )
    }
}

impl std::error::Error for SizeLimit {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// One SQLite error reported to every waiter of a failed batch.
#[derive(Debug)]
struct SharedError(Arc<rusqlite::Error>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::SystemTime;

    use bytes::Bytes;
    use rusqlite::StatementStatus;

    use super::super::schema;
    use super::*;
    use crate::hl7::Message;

    /// The writer's statements are planned once: a new control id (a new bound value) does not
    /// make SQLite prepare the duplicate lookup again, as it would with the bundled build's
    /// STAT4 and no planner stability guarantee (a tenth of the writer's CPU under load).
    #[test]
    fn writer_statements_are_not_prepared_again_per_message() {
        let dir = tempfile::tempdir().unwrap();
        let config = SqliteConfig::default();
        let mut conn = schema::open_writer(&dir.path().join("inbox.db"), &config).unwrap();
        let addr: SocketAddr = "127.0.0.1:2575".parse().unwrap();
        for n in 0..20 {
            let text = format!("MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240102||ADT^A01|C{n}|P|2.5\rPID|1\r");
            let message = Message::parse(Bytes::from(text)).unwrap();
            let record = Record::from_message(&message, SystemTime::now(), addr, addr, None);
            let tx = conn.transaction().unwrap();
            let receipt = append(&tx, &record, Some(0)).unwrap();
            assert!(!receipt.is_duplicate());
            tx.commit().unwrap();
        }
        for sql in [DEDUP_LOOKUP, INSERT] {
            let statement = conn.prepare_cached(sql).unwrap();
            assert_eq!(statement.get_status(StatementStatus::RePrepare), 0, "{sql}");
        }
    }
}
