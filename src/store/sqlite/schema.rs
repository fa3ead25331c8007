//! The file: connection settings, the schema, its version and migrations.
//!
//! The schema version is SQLite's `user_version`; `application_id` marks the file as an mllp
//! store, so that another application's database is refused instead of altered. Each migration
//! runs in its own transaction, from the file's version to [`VERSION`]; a file of a newer
//! version is refused.

use std::path::Path;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::SqliteConfig;
use crate::store::StoreError;

/// `application_id` of an mllp store: "MLLP" in ASCII.
pub(super) const APPLICATION_ID: i64 = 0x4D4C_4C50;

/// The schema version this release writes.
pub(super) const VERSION: i64 = 2;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: [&str; 2] = [
    // 0 → 1: messages, with the indexes behind duplicate detection and time-range search.
    "CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        received_at INTEGER NOT NULL,
        listener TEXT NOT NULL,
        peer TEXT NOT NULL,
        tls_identity TEXT,
        sending_application TEXT NOT NULL,
        sending_facility TEXT NOT NULL,
        receiving_application TEXT NOT NULL,
        receiving_facility TEXT NOT NULL,
        message_type TEXT NOT NULL,
        message_code TEXT NOT NULL,
        trigger_event TEXT NOT NULL,
        control_id TEXT NOT NULL,
        processing_id TEXT NOT NULL,
        version TEXT NOT NULL,
        dedup_key BLOB NOT NULL,
        digest BLOB NOT NULL,
        reused_control_id INTEGER NOT NULL DEFAULT 0,
        payload BLOB NOT NULL
    );
    CREATE INDEX messages_dedup ON messages (dedup_key, received_at);
    CREATE INDEX messages_received ON messages (received_at);",
    // 1 → 2: `mllp relay`: where each named relay is (the last id delivered downstream), and
    // the messages it gave up on. No foreign key to `messages`: retention may delete a message
    // whose dead letter stays.
    "CREATE TABLE relay_cursors (
        name TEXT PRIMARY KEY,
        last_id INTEGER NOT NULL
    );
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id INTEGER NOT NULL,
        relay TEXT NOT NULL,
        reason TEXT NOT NULL,
        at INTEGER NOT NULL
    );
    CREATE INDEX dead_letters_relay ON dead_letters (relay, id);",
];

fn target(path: &Path) -> String {
    format!("sqlite:{}", path.display())
}

/// Whether an SQLite error says the file is damaged or not a database at all.
fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// Whether the file at `path` starts with SQLite's header (false for a file of another kind;
/// true when it cannot be read, which is reported as it is).
fn has_sqlite_header(path: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 16];
    match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut header)) {
        Ok(()) => &header == b"SQLite format 3\0",
        Err(e) => e.kind() != std::io::ErrorKind::UnexpectedEof,
    }
}

fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) && !has_sqlite_header(path) {
        StoreError::NotADatabase {
            target: target(path),
        }
    } else if is_corruption(&e) {
        StoreError::Corrupt {
            target: target(path),
            source: Box::new(e),
        }
    } else {
        StoreError::Open {
            target: target(path),
            source: Box::new(e),
        }
    }
}

/// The write-ahead log of the store at `path`: `PATH-wal`.
pub(super) fn wal_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}

/// Creates a missing store file with mode 0640 (before the umask), as the directory store's
/// files are: it holds patient data. SQLite would create it 0644, and its `-wal` and `-shm`
/// files take the mode of the database file. An existing file keeps its mode.
fn create_private(path: &Path) -> std::io::Result<bool> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
    match options.open(path) {
        // An empty file is an empty database to SQLite.
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Opens the write connection: creates the file if missing, checks it is an mllp store of a
/// version this release reads, migrates it, and sets WAL and `synchronous=FULL`.
pub(super) fn open_writer(path: &Path, config: &SqliteConfig) -> Result<Connection, StoreError> {
    // SQLite says only "unable to open database file" when the directory is missing.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        let what = if dir.exists() {
            "is not a directory"
        } else {
            "does not exist: create it"
        };
        return Err(StoreError::Open {
            target: target(path),
            source: format!("directory {} {what}, or give another path", dir.display()).into(),
        });
    }
    // A write-ahead log without its database (the .db deleted or moved away, its -wal left):
    // SQLite would start an empty database and throw the log, and the messages in it, away.
    let wal = wal_path(path);
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    if size(&wal) > 0 && size(path) == 0 {
        return Err(StoreError::Open {
            target: target(path),
            source: format!(
                "{} holds committed messages but {} is missing or empty: put the database file \
                 back beside it (the two belong together), or move the -wal file away to start \
                 an empty store",
                wal.display(),
                path.display()
            )
            .into(),
        });
    }
    let created = create_private(path).map_err(|e| StoreError::Open {
        target: target(path),
        source: Box::new(e),
    })?;
    // A store that fails to open leaves no empty file of its own making behind.
    configure(path, config).inspect_err(|_| {
        if created {
            let _ = std::fs::remove_file(path);
        }
    })
}

/// Opens the file for writing and checks and sets it up, as [`open_writer`] says.
fn configure(path: &Path, config: &SqliteConfig) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| classify(path, e))?;
    conn.busy_timeout(config.busy_timeout)
        .map_err(|e| classify(path, e))?;
    check_identity(path, &conn)?;
    // A file SQLite cannot write is opened read-only without a word; every commit would fail
    // until a restart (the connection stays read-only after the cause is gone). Refused here.
    if conn.is_readonly("main").map_err(|e| classify(path, e))? {
        return Err(StoreError::Open {
            target: target(path),
            source: "the file cannot be written (its permissions, an immutable attribute, or a \
                     read-only file system): make it writable, or give another path"
                .into(),
        });
    }
    // WAL: readers never block the writer; FULL: the WAL is synced at every commit, so a
    // committed message survives a power loss, not only a crash.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| classify(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Open {
            target: target(path),
            source: format!("the file system does not support WAL (journal mode {mode})").into(),
        });
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(|e| classify(path, e))?;
    migrate(path, &conn)?;
    // The writer runs the same two statements for ever. Without the query planner stability
    // guarantee, the bundled SQLite (built with STAT4) plans the duplicate lookup again each time
    // a bound value changes, i.e. for every message: a tenth of the writer's CPU under load.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(|e| classify(path, e))?;
    if let Some(max) = config.max_size {
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| classify(path, e))?;
        let pages = (max / u64::try_from(page_size.max(1)).unwrap_or(4096)).max(1);
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(|e| classify(path, e))?;
    }
    Ok(conn)
}

/// Refuses a database another application wrote, or a newer schema.
pub(super) fn check_identity(path: &Path, conn: &Connection) -> Result<(), StoreError> {
    let app: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| classify(path, e))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| classify(path, e))?;
    if app == 0 {
        // A new file, or an SQLite database of no declared application: only an empty one is
        // taken (a database with tables of its own is someone else's).
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(|e| classify(path, e))?;
        if tables > 0 {
            return Err(StoreError::NotAStore {
                target: target(path),
                found: 0,
            });
        }
    } else if app != APPLICATION_ID {
        return Err(StoreError::NotAStore {
            target: target(path),
            found: app,
        });
    }
    if version > VERSION {
        return Err(StoreError::NewerSchema {
            target: target(path),
            found: version,
            supported: VERSION,
        });
    }
    Ok(())
}

/// Applies the migrations from the file's version on, each in its own transaction.
fn migrate(path: &Path, conn: &Connection) -> Result<(), StoreError> {
    loop {
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| classify(path, e))?;
        let Some(step) = usize::try_from(version)
            .ok()
            .and_then(|v| MIGRATIONS.get(v))
        else {
            return Ok(());
        };
        let sql = format!(
            "BEGIN IMMEDIATE;
             {step}
             PRAGMA application_id = {APPLICATION_ID};
             PRAGMA user_version = {};
             COMMIT;",
            version + 1
        );
        if let Err(e) = conn.execute_batch(&sql) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(classify(path, e));
        }
    }
}
