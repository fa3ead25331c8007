//! [`SqliteStore`]: the embedded default store, one SQLite file with group commit.
//!
//! # How a message becomes durable
//!
//! One thread (`mllp-store-writer`) owns the only write connection. [`Store::append`] hands it
//! the record and waits. The thread takes *everything waiting* (up to
//! [`SqliteConfig::max_batch`]), writes it in one transaction and commits: one `fsync` of the
//! write-ahead log serves every message of the batch, and each waiter is answered only after
//! that commit. Under load from many connections a commit carries many messages; on one
//! connection it carries one. The file is in WAL mode with `synchronous=FULL`, so a committed
//! transaction survives a power loss.
//!
//! # Duplicates
//!
//! Inside the same transaction, before each insert, the writer looks up messages from the same
//! sender (MSH-3 and MSH-4) with the same MSH-10 received inside
//! [`SqliteConfig::dedup_window`] (an index lookup, O(log n)). The same content (compared by
//! SHA-256 with MSH-7 left out) is a [`Receipt::Duplicate`](crate::store::Receipt::Duplicate) and is not stored; other content is
//! stored and flagged (`reused_control_id`).
//!
//! # Readers
//!
//! [`SqliteReader`] opens its own read-only connection, so `mllp inbox list` and the admin
//! endpoint read while the server writes; WAL readers never block the writer.
//!
//! # Failures
//!
//! A failed commit (disk full, [`SqliteConfig::max_size`] reached, locked by another process
//! past [`SqliteConfig::busy_timeout`], I/O error) rolls the whole batch back and answers every
//! message of it [`StoreError::Commit`]; the next batch tries again, so the store recovers by
//! itself once the cause is gone. [`Store::health`] is [`StoreHealth::Failing`] in between, or,
//! while no message comes to try again, for [`FAILURE_HOLD`](crate::store::FAILURE_HOLD).

mod read;
mod relay;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

pub use read::{DeadLetter, Filter, SqliteReader, StoredMessage, Summary};
pub use relay::RelayLog;

use crate::store::health::FailureHold;
use crate::store::{AppendFuture, CloseFuture, Record, Store, StoreError, StoreHealth};
use writer::{Counters, Job};

/// Settings of a [`SqliteStore`]. Every one has a `mllp serve` flag and TOML key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// How far back a resend is recognised as a duplicate; `None` turns duplicate detection
    /// off. Default is 24 hours.
    pub dedup_window: Option<Duration>,
    /// Messages older than this are deleted in the background, in small transactions between
    /// commits; `None` keeps everything. Default is `None`.
    pub retention: Option<Duration>,
    /// How long a commit waits for a lock held by another process (a `mllp inbox prune`, a
    /// backup) before it fails. Default is 5 seconds.
    pub busy_timeout: Duration,
    /// The most messages one transaction carries. Default is 1024.
    pub max_batch: usize,
    /// The largest the file may grow to, in bytes (rounded down to whole pages); past it every
    /// commit fails until retention or a prune frees pages. `None` is no limit (the disk's).
    /// Default is `None`.
    pub max_size: Option<u64>,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            dedup_window: Some(Duration::from_secs(24 * 60 * 60)),
            retention: None,
            busy_timeout: Duration::from_secs(5),
            max_batch: 1024,
            max_size: None,
        }
    }
}

impl SqliteConfig {
    /// Sets [`SqliteConfig::dedup_window`].
    pub fn dedup_window(mut self, window: Option<Duration>) -> Self {
        self.dedup_window = window;
        self
    }
    /// Sets [`SqliteConfig::retention`].
    pub fn retention(mut self, retention: Option<Duration>) -> Self {
        self.retention = retention;
        self
    }
    /// Sets [`SqliteConfig::busy_timeout`].
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }
    /// Sets [`SqliteConfig::max_batch`] (at least 1).
    pub fn max_batch(mut self, max: usize) -> Self {
        self.max_batch = max.max(1);
        self
    }
    /// Sets [`SqliteConfig::max_size`].
    pub fn max_size(mut self, bytes: Option<u64>) -> Self {
        self.max_size = bytes;
        self
    }
}

/// The embedded message store: one SQLite file, one writer thread, group commit, duplicate
/// detection, retention. Cheap to clone; clones share the writer.
///
/// The writer thread ends when the last clone is dropped, after answering what was queued.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    jobs: mpsc::Sender<Job>,
    counters: Arc<Counters>,
    path: PathBuf,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    hold: FailureHold,
}

/// How many jobs may wait for the writer. Callers wait (back-pressure) past this.
const QUEUE: usize = 4096;

impl SqliteStore {
    /// Opens the store at `path`, creating the file (not its directory) and the schema if
    /// missing, migrating an older schema, and starting the writer thread (and, with
    /// [`SqliteConfig::retention`], the retention timer on the current tokio runtime).
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] (cannot create or open), [`StoreError::NotAStore`] (another
    /// application's database), [`StoreError::NewerSchema`], [`StoreError::Corrupt`]. None of
    /// them changes the file.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime with [`SqliteConfig::retention`] set.
    pub async fn open(path: impl AsRef<Path>, config: SqliteConfig) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        let (conn, path) = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || {
                schema::open_writer(&path, &config).map(|conn| (conn, path))
            })
            .await
            .map_err(|e| StoreError::Open {
                target: "sqlite".into(),
                source: e.into(),
            })??
        };
        let (jobs, queue) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let writer = writer::spawn(conn, path.clone(), queue, config.clone(), counters.clone())
            .map_err(|e| StoreError::Open {
                target: format!("sqlite:{}", path.display()),
                source: e.into(),
            })?;
        if let Some(retention) = config.retention {
            tokio::spawn(retention_timer(jobs.downgrade(), retention));
        }
        Ok(Self {
            shared: Arc::new(Shared {
                jobs,
                counters,
                path,
                writer: std::sync::Mutex::new(Some(writer)),
                hold: FailureHold::default(),
            }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// A read-only connection to the same file.
    ///
    /// # Errors
    ///
    /// As [`SqliteReader::open`].
    pub fn reader(&self) -> Result<SqliteReader, StoreError> {
        SqliteReader::open(&self.shared.path)
    }

    /// Deletes the messages received before `cutoff`, in small transactions between commits
    /// (so appends wait at most one small transaction), and returns how many were deleted.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] if a delete failed; [`StoreError::Closed`] if the writer stopped.
    pub async fn prune_before(&self, cutoff: SystemTime) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.shared
            .jobs
            .send(Job::Prune {
                cutoff: micros(cutoff),
                reply: Some(reply),
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Counters since the store was opened, and the messages waiting for the writer now.
    pub fn stats(&self) -> SqliteStats {
        let c = &self.shared.counters;
        SqliteStats {
            queued: QUEUE - self.shared.jobs.capacity(),
            committing: c.committing.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            stored: c.stored.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            failed_commits: c.failures.load(Ordering::Relaxed),
        }
    }

    /// Waits until the writer has answered everything queued and closed the file.
    ///
    /// Other clones keep the writer alive: the wait ends when the last one is dropped. To stop
    /// the writer for every clone at once (committing, then copying the log into the database
    /// file), call [`Store::close`] instead.
    pub async fn close(self) {
        Store::close(&self).await;
    }
}

impl Store for SqliteStore {
    fn append(&self, record: Record) -> AppendFuture {
        let shared = self.shared.clone();
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            shared
                .jobs
                .send(Job::Append {
                    record: Box::new(record),
                    reply,
                })
                .await
                .map_err(|_| StoreError::Closed)?;
            let result = answer.await.map_err(|_| StoreError::Closed)?;
            if result.is_err() {
                shared
                    .hold
                    .failed(shared.counters.failures.load(Ordering::Relaxed));
            }
            result
        })
    }

    fn close(&self) -> CloseFuture {
        let shared = self.shared.clone();
        Box::pin(async move {
            let writer = shared.writer.lock().ok().and_then(|mut w| w.take());
            let Some(writer) = writer else {
                return;
            };
            // Behind every append already sent; an append sent later is answered `Closed`.
            let _ = shared.jobs.send(Job::Close).await;
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        })
    }

    fn health(&self) -> StoreHealth {
        let c = &self.shared.counters;
        self.shared.hold.health(
            c.failing.load(Ordering::Relaxed),
            c.failures.load(Ordering::Relaxed),
        )
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.shared.path.display())
    }
}

/// What a [`SqliteStore`] has done since it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SqliteStats {
    /// Jobs (messages, prunes) waiting for the writer now: with `committing`, the store's lag.
    pub queued: usize,
    /// Messages in the transaction being committed now.
    pub committing: usize,
    /// Transactions committed. `stored + duplicates` over `commits` is the mean batch.
    pub commits: u64,
    /// Messages stored.
    pub stored: u64,
    /// Resends recognised as duplicates (not stored again).
    pub duplicates: u64,
    /// Commits that failed (each answered its whole batch AE).
    pub failed_commits: u64,
}

/// Asks the writer to prune every so often (a tenth of the retention, between one second and
/// one minute), for as long as the store is open.
async fn retention_timer(jobs: mpsc::WeakSender<Job>, retention: Duration) {
    let period = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(jobs) = jobs.upgrade() else { return };
        let cutoff = SystemTime::now()
            .checked_sub(retention)
            .unwrap_or(UNIX_EPOCH);
        if jobs
            .send(Job::Prune {
                cutoff: micros(cutoff),
                reply: None,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Microseconds since the Unix epoch, as stored (0 for times before it).
pub(crate) fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The time `micros` stands for.
pub(crate) fn from_micros(micros: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

fn boxed(e: rusqlite::Error) -> crate::store::BoxError {
    Box::new(e)
}
