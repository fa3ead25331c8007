//! [`RelayLog`]: what a relay keeps in an SQLite store: its cursor and its dead letters.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, params};

use super::{DeadLetter, Filter, SqliteConfig, SqliteReader, StoredMessage, boxed, micros, schema};
use crate::store::StoreError;

/// A relay's view of an SQLite store: the messages after its cursor, oldest first; its cursor
/// (`relay_cursors`, one row per relay name); its dead letters (`dead_letters`).
///
/// It opens its own connections (one to write, one to read), so it works beside a running
/// `mllp serve` on the same file: WAL lets it read while the server writes, and its small
/// writes wait for the server's commits ([`SqliteConfig::busy_timeout`], 5 seconds).
/// Every write is its own transaction, committed with `synchronous=FULL`.
#[derive(Debug)]
pub struct RelayLog {
    conn: Connection,
    reader: SqliteReader,
    name: String,
    path: PathBuf,
}

impl RelayLog {
    /// Opens the store at `path` (it must exist) for the relay `name`, migrating its schema if
    /// it is older.
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] when the file is missing or cannot be opened, and the errors of
    /// [`SqliteStore::open`](super::SqliteStore::open) for a file that is not an mllp store,
    /// newer, or corrupt.
    pub fn open(path: impl AsRef<Path>, name: impl Into<String>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(StoreError::Open {
                target: format!("sqlite:{}", path.display()),
                source: "no such file: a relay reads an existing store".into(),
            });
        }
        // An empty file would be made a store (its schema written) by the writer's open.
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            return Err(StoreError::Open {
                target: format!("sqlite:{}", path.display()),
                source: "the file is empty: a relay reads a store `mllp serve` wrote".into(),
            });
        }
        let conn = schema::open_writer(path, &SqliteConfig::default())?;
        let reader = SqliteReader::open(path)?;
        Ok(Self {
            conn,
            reader,
            name: name.into(),
            path: path.to_owned(),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The relay's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The id of the last message the relay is done with (delivered or dead-lettered); 0 when
    /// it has not started.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the read fails.
    pub fn position(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT last_id FROM relay_cursors WHERE name = ?1",
                [&self.name],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|id| id.map_or(0, |id| id as u64))
            .map_err(|e| StoreError::Query(boxed(e)))
    }

    /// Up to `limit` messages with an id above `after`, oldest first, payloads included.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the read fails.
    pub fn after(&self, after: u64, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        let filter = Filter {
            after_id: Some(after),
            limit: Some(limit),
            oldest_first: true,
            ..Filter::default()
        };
        let mut out = Vec::new();
        self.reader.for_each(&filter, |m| {
            out.push(m);
            true
        })?;
        Ok(out)
    }

    /// How many messages have an id above `after` (the relay's backlog).
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the read fails.
    pub fn backlog(&self, after: u64) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM messages WHERE id > ?1",
                [after as i64],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| StoreError::Query(boxed(e)))
    }

    /// Moves the cursor to `id`: the relay is done with every message up to it. Durable when
    /// it returns. It never moves back: an `id` below the cursor leaves it where it is.
    ///
    /// # Errors
    ///
    /// [`StoreError::Commit`] when the write fails (locked past the busy timeout, disk full).
    pub fn advance(&self, id: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO relay_cursors (name, last_id) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET last_id = max(last_id, excluded.last_id)",
                params![self.name, id as i64],
            )
            .map(|_| ())
            .map_err(|e| StoreError::Commit(boxed(e)))
    }

    /// Records that the relay gave up on message `message_id` because of `reason`, and moves
    /// the cursor past it, in one transaction.
    ///
    /// # Errors
    ///
    /// [`StoreError::Commit`] when the write fails; then neither happened.
    pub fn dead_letter(&mut self, message_id: u64, reason: &str) -> Result<(), StoreError> {
        let commit = |e| StoreError::Commit(boxed(e));
        let tx = self.conn.transaction().map_err(commit)?;
        tx.execute(
            "INSERT INTO dead_letters (message_id, relay, reason, at) VALUES (?1, ?2, ?3, ?4)",
            params![
                message_id as i64,
                self.name,
                reason,
                micros(SystemTime::now())
            ],
        )
        .map_err(commit)?;
        tx.execute(
            "INSERT INTO relay_cursors (name, last_id) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id",
            params![self.name, message_id as i64],
        )
        .map_err(commit)?;
        tx.commit().map_err(commit)
    }

    /// This relay's dead letters, oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the read fails.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.reader.dead_letters(Some(&self.name))
    }
}
