//! [`SqliteReader`]: search and read a store through its own read-only connection.

use std::fmt;
use std::path::Path;
use std::time::SystemTime;

use bytes::Bytes;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params_from_iter};

use super::{boxed, from_micros, micros, schema};
use crate::app::RoutePattern;
use crate::store::StoreError;

/// Which messages to read. The default is every message, newest first.
///
/// ```
/// use mllp::store::sqlite::Filter;
/// let mut filter = Filter::default();
/// filter.message_type = Some("ADT^*".parse()?);
/// filter.limit = Some(20);
/// # Ok::<(), mllp::app::RoutePatternError>(())
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Filter {
    /// Received at or after this time.
    pub since: Option<SystemTime>,
    /// Received before this time.
    pub until: Option<SystemTime>,
    /// MSH-9 matches this pattern, as the router's (`ADT^A01`, `ADT^*`, `*^A01`).
    pub message_type: Option<RoutePattern>,
    /// MSH-3 (sending application) is exactly this.
    pub sending_application: Option<String>,
    /// MSH-4 (sending facility) is exactly this.
    pub sending_facility: Option<String>,
    /// MSH-10 (message control id) is exactly this.
    pub control_id: Option<String>,
    /// Store id greater than this (paging, replay cursors).
    pub after_id: Option<u64>,
    /// Only messages this relay gave up on (its dead letters), each once.
    pub dead_letters_of: Option<String>,
    /// At most this many.
    pub limit: Option<usize>,
    /// Oldest first (by store id, which is arrival order) instead of newest first.
    pub oldest_first: bool,
}

/// A stored message's metadata (MSH fields only; no payload).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Store id (arrival order; never reused).
    pub id: u64,
    /// When it was received.
    pub received_at: SystemTime,
    /// The local address it came in on.
    pub listener: String,
    /// The sender's address.
    pub peer: String,
    /// The verified client identity (mutual TLS).
    pub tls_identity: Option<String>,
    /// MSH-3.
    pub sending_application: String,
    /// MSH-4.
    pub sending_facility: String,
    /// MSH-5.
    pub receiving_application: String,
    /// MSH-6.
    pub receiving_facility: String,
    /// MSH-9, whole.
    pub message_type: String,
    /// MSH-10.
    pub control_id: String,
    /// MSH-11.
    pub processing_id: String,
    /// MSH-12.
    pub version: String,
    /// Payload size in bytes.
    pub size: u64,
    /// Stored although the sender had used this control id for other content inside the
    /// duplicate window.
    pub reused_control_id: bool,
}

/// A stored message: its metadata and its payload, byte for byte as received.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredMessage {
    /// The metadata.
    pub summary: Summary,
    /// The payload.
    pub payload: Bytes,
}

impl fmt::Debug for StoredMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredMessage")
            .field("summary", &self.summary)
            .field("len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

/// A message a relay gave up on, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The dead letter's own id (order of giving up).
    pub id: u64,
    /// The store id of the message (see `mllp inbox show`).
    pub message_id: u64,
    /// The relay that gave up.
    pub relay: String,
    /// Why: the downstream's answer (ACK code and ERR-3), or the last failure.
    pub reason: String,
    /// When.
    pub at: SystemTime,
}

/// A read-only connection to a store file. Reads never block the server's writer (WAL).
#[derive(Debug)]
pub struct SqliteReader {
    conn: Connection,
}

const COLUMNS: &str = "id, received_at, listener, peer, tls_identity, sending_application,
    sending_facility, receiving_application, receiving_facility, message_type, control_id,
    processing_id, version, length(payload), reused_control_id";

impl SqliteReader {
    /// Opens `path` read-only.
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`] when the file is missing or unreadable, and the errors of
    /// [`SqliteStore::open`](super::SqliteStore::open) for a file that is not an mllp store,
    /// newer, or corrupt.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let open = |e: rusqlite::Error| StoreError::Open {
            target: format!("sqlite:{}", path.display()),
            source: Box::new(e),
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open)?;
        schema::check_identity(path, &conn)?;
        Ok(Self { conn })
    }

    /// The metadata of the messages `filter` selects.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the read fails.
    pub fn list(&self, filter: &Filter) -> Result<Vec<Summary>, StoreError> {
        let mut rows = Vec::new();
        self.for_each_summary(filter, |row| {
            rows.push(row);
            true
        })?;
        Ok(rows)
    }

    /// Calls `each` with the metadata of every message `filter` selects, one at a time, as
    /// they are read (a long listing is never held whole); stops early when `each` returns
    /// `false`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the read fails.
    pub fn for_each_summary(
        &self,
        filter: &Filter,
        mut each: impl FnMut(Summary) -> bool,
    ) -> Result<(), StoreError> {
        let (sql, args) = select(COLUMNS, filter);
        let mut query = self.conn.prepare(&sql).map_err(query_err)?;
        let mut rows = query.query(params_from_iter(args)).map_err(query_err)?;
        while let Some(row) = rows.next().map_err(query_err)? {
            if !each(summary(row).map_err(query_err)?) {
                break;
            }
        }
        Ok(())
    }

    /// Calls `each` with every message `filter` selects, payload included, one at a time (the
    /// store is never loaded whole); stops early when `each` returns `false`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the read fails.
    pub fn for_each(
        &self,
        filter: &Filter,
        mut each: impl FnMut(StoredMessage) -> bool,
    ) -> Result<(), StoreError> {
        let (sql, args) = select(&format!("{COLUMNS}, payload"), filter);
        let mut query = self.conn.prepare(&sql).map_err(query_err)?;
        let mut rows = query.query(params_from_iter(args)).map_err(query_err)?;
        while let Some(row) = rows.next().map_err(query_err)? {
            let message = stored(row).map_err(query_err)?;
            if !each(message) {
                break;
            }
        }
        Ok(())
    }

    /// The message with store id `id`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the read fails.
    pub fn get(&self, id: u64) -> Result<Option<StoredMessage>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS}, payload FROM messages WHERE id = ?1"),
                [id as i64],
                stored,
            )
            .optional()
            .map_err(query_err)
    }

    /// How many messages `filter` selects (its `limit` applies too).
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the read fails.
    pub fn count_matching(&self, filter: &Filter) -> Result<u64, StoreError> {
        let (sql, args) = select("id", filter);
        self.conn
            .query_row(
                &format!("SELECT count(*) FROM ({sql})"),
                params_from_iter(args),
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(query_err)
    }

    /// The dead letters of `relay` (every relay's with `None`), oldest first: which message,
    /// why and when. The messages themselves are read with [`Filter::dead_letters_of`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the read fails.
    pub fn dead_letters(&self, relay: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT id, message_id, relay, reason, at FROM dead_letters
                 WHERE ?1 IS NULL OR relay = ?1 ORDER BY id",
            )
            .map_err(query_err)?;
        let rows = statement
            .query_map([relay], |r| {
                Ok(DeadLetter {
                    id: r.get::<_, i64>(0)? as u64,
                    message_id: r.get::<_, i64>(1)? as u64,
                    relay: r.get(2)?,
                    reason: r.get(3)?,
                    at: from_micros(r.get(4)?),
                })
            })
            .map_err(query_err)?;
        rows.collect::<Result<_, _>>().map_err(query_err)
    }

    /// How many messages the store holds.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`] when the read fails.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(query_err)
    }
}

fn query_err(e: rusqlite::Error) -> StoreError {
    StoreError::Query(boxed(e))
}

/// `SELECT columns FROM messages WHERE … ORDER BY id … LIMIT …` and its arguments.
fn select(columns: &str, filter: &Filter) -> (String, Vec<Value>) {
    let mut clauses = Vec::new();
    let mut args = Vec::new();
    let mut clause = |sql: &str, value: Value| {
        args.push(value);
        clauses.push(format!("{sql} ?{}", args.len()));
    };
    if let Some(t) = filter.since {
        clause("received_at >=", Value::Integer(micros(t)));
    }
    if let Some(t) = filter.until {
        clause("received_at <", Value::Integer(micros(t)));
    }
    if let Some(pattern) = &filter.message_type {
        if let Some(code) = pattern.code() {
            clause("message_code =", Value::Text(code.to_owned()));
        }
        if let Some(event) = pattern.event() {
            clause("trigger_event =", Value::Text(event.to_owned()));
        }
    }
    if let Some(v) = &filter.sending_application {
        clause("sending_application =", Value::Text(v.clone()));
    }
    if let Some(v) = &filter.sending_facility {
        clause("sending_facility =", Value::Text(v.clone()));
    }
    if let Some(v) = &filter.control_id {
        clause("control_id =", Value::Text(v.clone()));
    }
    if let Some(id) = filter.after_id {
        clause("id >", Value::Integer(id as i64));
    }
    if let Some(relay) = &filter.dead_letters_of {
        args.push(Value::Text(relay.clone()));
        clauses.push(format!(
            "id IN (SELECT message_id FROM dead_letters WHERE relay = ?{})",
            args.len()
        ));
    }
    let mut sql = format!("SELECT {columns} FROM messages");
    if !clauses.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&clauses.join(" AND "));
    }
    sql.push_str(if filter.oldest_first {
        " ORDER BY id ASC"
    } else {
        " ORDER BY id DESC"
    });
    if let Some(limit) = filter.limit {
        sql.push_str(&format!(" LIMIT {}", limit.min(i64::MAX as usize)));
    }
    (sql, args)
}

fn summary(row: &Row<'_>) -> rusqlite::Result<Summary> {
    Ok(Summary {
        id: row.get::<_, i64>(0)? as u64,
        received_at: from_micros(row.get(1)?),
        listener: row.get(2)?,
        peer: row.get(3)?,
        tls_identity: row.get(4)?,
        sending_application: row.get(5)?,
        sending_facility: row.get(6)?,
        receiving_application: row.get(7)?,
        receiving_facility: row.get(8)?,
        message_type: row.get(9)?,
        control_id: row.get(10)?,
        processing_id: row.get(11)?,
        version: row.get(12)?,
        size: row.get::<_, i64>(13)? as u64,
        reused_control_id: row.get(14)?,
    })
}

fn stored(row: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        summary: summary(row)?,
        payload: Bytes::from(row.get::<_, Vec<u8>>(15)?),
    })
}
