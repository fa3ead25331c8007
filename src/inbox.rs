//! The durable inbox of `mllp serve`: one file per accepted message, on disk before the AA.
//!
//! [`Inbox::store`] returns only once the message is durable: it writes the payload to a temporary
//! file in the inbox directory (named `.tmp-…`), flushes it to disk (`fsync`), links it under its
//! final name, removes the temporary name and flushes the directory. A message whose `store`
//! returned `Ok` survives a crash or a power loss; only then may it be acknowledged.
//!
//! # File names
//!
//! `<UTC timestamp>-<control id>-<process id>-<counter>.hl7`, for example
//! `20261122T031501.123456Z-MSG00001-4242-17.hl7`:
//!
//! - the timestamp (microseconds, fixed width) is taken when `store` is called, and is strictly
//!   increasing within a process, so a directory listing sorted by name is in the order the
//!   messages were handed to the inbox (for `mllp serve`, arrival order), even when a later,
//!   smaller message finishes its `fsync` first;
//! - the control id is MSH-10 sanitised: only `A-Z a-z 0-9 . _ -` are kept, every other byte
//!   becomes `_`, it is cut to 64 bytes, a missing or empty id becomes `none`, and an id of only
//!   dots becomes as many `_`. The result never holds a path separator, so whatever MSH-10
//!   contains the file lands inside the inbox;
//! - the process id and a process-wide counter make names unique, so two messages with the same
//!   control id (a resend) are both kept.
//!
//! No file is ever overwritten: the final name is created with a hard link, which the operating
//! system refuses if the name exists (a plain `rename` would silently replace it); on that
//! refusal the next counter value is tried. The inbox therefore needs a filesystem with hard
//! links (any local POSIX filesystem, NTFS).
//!
//! Files are created readable by their owner and group only (mode `0640`, and `0750` for
//! directories `open` creates), before the umask: messages carry patient data.
//!
//! The payload is written exactly as received: no character set conversion, no line-ending
//! change, so Latin-1 and UTF-8 messages are kept byte for byte.
//!
//! A `.tmp-` file left in the directory is the trace of a crash during `store`; its message was
//! never acknowledged (or, if the crash hit between the link and the removal, it is also present
//! under its final name). Such files may be deleted.
//!
//! # Cancel safety
//!
//! The file system work runs on tokio's blocking pool. Dropping the future returned by
//! [`Inbox::store`] does not stop it: the message may still be stored, but the caller did not
//! learn it and must not acknowledge it. That is at-least-once delivery: the sender resends and
//! the inbox keeps both copies. ([`DirStore`](crate::store::DirStore), which `mllp serve` uses,
//! recognises such a resend while the process runs.)

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Longest sanitised control id kept in a file name, in bytes.
const MAX_ID_LEN: usize = 64;

/// How many names `store` tries before giving up when every one is taken.
const NAME_ATTEMPTS: u32 = 16;

/// Process-wide, so two [`Inbox`] values on the same directory never pick the same name.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why the inbox could not be opened or a message could not be stored.
///
/// Paths appear in the messages (they hold a sanitised MSH-10 at most, never patient data); the
/// underlying I/O error is the `source()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// The inbox directory could not be created, opened, or written to, when the inbox was opened.
    #[error("cannot open inbox directory {}", path.display())]
    Open {
        /// The inbox directory.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// The inbox path exists and is not a directory.
    #[error("inbox path {} is not a directory", path.display())]
    NotADirectory {
        /// The inbox path.
        path: PathBuf,
    },
    /// Creating, writing or flushing the temporary file failed (disk full, permissions, I/O error).
    #[error("cannot write {}", path.display())]
    Write {
        /// The temporary file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// Giving the temporary file its final name failed.
    #[error("cannot link {} to {}", from.display(), to.display())]
    Commit {
        /// The temporary file.
        from: PathBuf,
        /// The final name.
        to: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// Flushing the directory after the final name was created failed: the message may not
    /// survive a crash, so its file was removed again (or, if that failed too, renamed to a
    /// hidden `.unacked-` name, and the failure logged).
    #[error("cannot sync inbox directory {}", path.display())]
    SyncDir {
        /// The inbox directory.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// Every name tried for the message already existed.
    #[error("no free file name in inbox directory {}", path.display())]
    NameCollision {
        /// The inbox directory.
        path: PathBuf,
    },
    /// The blocking task doing the file system work panicked or was cancelled by a runtime
    /// shutdown.
    #[error("inbox write task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// A directory where every accepted message is stored durably, one file per message.
///
/// Cheap to clone; clones write to the same directory.
#[derive(Debug, Clone)]
pub struct Inbox {
    dir: PathBuf,
}

impl Inbox {
    /// Opens the inbox at `dir`, creating the directory (and its parents) if missing.
    ///
    /// Checks that the directory can be written to, so that a server fails at start-up rather
    /// than on its first message.
    ///
    /// Removes the leftovers of writes a crash interrupted: `.tmp-<pid>-<n>` files of a process
    /// that is no longer running (on Linux, where `/proc` says which are; elsewhere, those of
    /// other processes older than an hour). They hold patient data and were never
    /// acknowledged. One log line says how many were removed, and one how many `.unacked-`
    /// files (complete messages answered AE, see [`InboxError::SyncDir`]) are kept.
    ///
    /// # Errors
    ///
    /// [`InboxError::NotADirectory`] if `dir` is a file; [`InboxError::Open`] if the directory
    /// cannot be created or written to.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Inbox, InboxError> {
        let dir = dir.into();
        let open_err = |source| InboxError::Open {
            path: dir.clone(),
            source,
        };
        if dir.as_os_str().is_empty() {
            // `create_dir_all("")` succeeds and files would land in the working directory,
            // where the directory sync then fails on every message.
            return Err(open_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the inbox path is empty",
            )));
        }
        match fs::metadata(&dir) {
            Ok(meta) if !meta.is_dir() => return Err(InboxError::NotADirectory { path: dir }),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_dirs(&dir).map_err(open_err)?;
                // Make the new directory's own entry durable too.
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    sync_dir(parent).map_err(open_err)?;
                }
            }
            Err(e) => return Err(open_err(e)),
        }
        let (probe, file) = create_temp(&dir).map_err(open_err)?;
        drop(file);
        fs::remove_file(&probe).map_err(open_err)?;
        sweep(&dir);
        Ok(Inbox { dir })
    }

    /// The inbox directory, as given to [`Inbox::open`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `payload` durably and returns the path of its file (inside [`Inbox::dir`]).
    ///
    /// `control_id` is the message's MSH-10 (message control ID), used in the file name after
    /// sanitising; `None` when the message has none. The name's timestamp is taken when this is
    /// called (not when the future first runs), so names sort in call order. When the future
    /// returns `Ok`, the bytes are on disk under their final name and the directory entry is
    /// flushed.
    ///
    /// Copies `payload` once, to hand it to the blocking pool; [`Inbox::store_bytes`] does not.
    ///
    /// # Errors
    ///
    /// An [`InboxError`] naming the step and path that failed. Nothing is left under a final
    /// name when it fails, whatever the step: a directory sync that fails after the link
    /// removes the file again. The temporary file is removed.
    pub fn store(
        &self,
        payload: &[u8],
        control_id: Option<&[u8]>,
    ) -> impl Future<Output = Result<PathBuf, InboxError>> + Send + 'static {
        self.store_bytes(Bytes::copy_from_slice(payload), control_id)
    }

    /// [`Inbox::store`] for a payload already held in [`Bytes`] (as the framer yields it),
    /// without copying it.
    ///
    /// # Errors
    ///
    /// As [`Inbox::store`].
    pub fn store_bytes(
        &self,
        payload: Bytes,
        control_id: Option<&[u8]>,
    ) -> impl Future<Output = Result<PathBuf, InboxError>> + Send + 'static {
        let write = self.prepare(control_id);
        async move {
            tokio::task::spawn_blocking(move || write.run(&payload))
                .await
                .map_err(InboxError::Task)?
        }
    }

    /// One message's write, named now (the name's time is taken at this call, not when a
    /// blocking thread gets to it), to be run on a blocking thread with [`PendingWrite::run`].
    pub(crate) fn prepare(&self, control_id: Option<&[u8]>) -> PendingWrite {
        PendingWrite {
            stamp: utc_timestamp(next_stamp()),
            dir: self.dir.clone(),
            id: sanitize_control_id(control_id),
        }
    }
}

/// One message's durable write, named when it was prepared ([`Inbox::prepare`]).
#[derive(Debug)]
pub(crate) struct PendingWrite {
    dir: PathBuf,
    id: String,
    stamp: String,
}

impl PendingWrite {
    /// The whole durable write, blocking: see [`Inbox::store`].
    pub(crate) fn run(&self, payload: &[u8]) -> Result<PathBuf, InboxError> {
        store_blocking(&self.dir, payload, &self.id, &self.stamp)
    }
}

/// The file name the inbox gives a message received at `received_at` with MSH-10
/// `control_id`, with `unique` in place of `<process id>-<counter>`:
/// `<UTC timestamp>-<sanitised control id>-<unique>.hl7`. `mllp inbox export` names its files
/// this way (with the store id as `unique`), so exported files sort and read like an inbox.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
/// assert_eq!(
///     mllp::inbox::file_name(at, Some(b"MSG/1"), "42"),
///     "20231114T221320.123456Z-MSG_1-42.hl7"
/// );
/// ```
pub fn file_name(received_at: SystemTime, control_id: Option<&[u8]>, unique: &str) -> String {
    format!(
        "{}-{}-{unique}.hl7",
        utc_timestamp(received_at),
        sanitize_control_id(control_id)
    )
}

/// The time for the next file name: now, or a microsecond after the previous one if the clock
/// has not moved on (or went back), so names sort in the order `store` was called.
fn next_stamp() -> SystemTime {
    static LAST_MICROS: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64;
    let mut last = LAST_MICROS.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST_MICROS.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return UNIX_EPOCH + std::time::Duration::from_micros(next),
            Err(actual) => last = actual,
        }
    }
}

/// Removes the `.tmp-` leftovers of interrupted writes and counts the `.unacked-` files; logs
/// one line for each when there are any. A leftover that cannot be removed is counted as kept
/// and the sweep goes on: it never stops the inbox from opening.
fn sweep(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let (mut removed, mut kept, mut unacked) = (0usize, 0usize, 0usize);
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".unacked-") {
            unacked += 1;
            continue;
        }
        let Some(rest) = name.strip_prefix(".tmp-") else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if !is_leftover(pid, &entry) {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(_) => kept += 1,
        }
    }
    if removed > 0 {
        // The removals reach the disk with the directory's next sync; a crash before it only
        // brings back files the next start removes again.
        let _ = sync_dir(dir);
        tracing::warn!(
            dir = %dir.display(),
            removed,
            "inbox: removed {removed} leftover temporary file(s) of writes interrupted by a crash \
             (never acknowledged)"
        );
    }
    if kept > 0 {
        tracing::warn!(
            dir = %dir.display(),
            kept,
            "inbox: {kept} leftover temporary file(s) could not be removed"
        );
    }
    if unacked > 0 {
        tracing::warn!(
            dir = %dir.display(),
            unacked,
            "inbox: {unacked} .unacked- file(s) hold messages answered AE (not acknowledged)"
        );
    }
}

/// Whether a `.tmp-` file of process `pid` is the leftover of an interrupted write rather than
/// a write under way: its process has ended. On Linux `/proc` says which processes run; where
/// it cannot, a file of another process counts as a leftover once it is an hour old.
fn is_leftover(pid: Option<u32>, entry: &fs::DirEntry) -> bool {
    let own = std::process::id();
    match pid {
        Some(pid) if pid == own => false,
        Some(pid) if Path::new("/proc/self").exists() => {
            !Path::new("/proc").join(pid.to_string()).exists()
        }
        _ => entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(3600)),
    }
}

/// Creates `dir` and its missing parents, owner and group only (`0750` before the umask).
fn create_dirs(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o750);
    builder.create(dir)
}

/// The whole durable write, on a blocking thread.
fn store_blocking(
    dir: &Path,
    payload: &[u8],
    id: &str,
    stamp: &str,
) -> Result<PathBuf, InboxError> {
    let (tmp, mut file) = create_temp(dir).map_err(|source| InboxError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let written = file.write_all(payload).and_then(|()| file.sync_all());
    drop(file);
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp);
        return Err(InboxError::Write { path: tmp, source });
    }

    let pid = std::process::id();
    let mut committed = None;
    for _ in 0..NAME_ATTEMPTS {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dest = dir.join(format!("{stamp}-{id}-{pid}-{n}.hl7"));
        match link_no_replace(&tmp, &dest) {
            Ok(()) => {
                committed = Some(dest);
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => {
                let _ = fs::remove_file(&tmp);
                return Err(InboxError::Commit {
                    from: tmp,
                    to: dest,
                    source,
                });
            }
        }
    }
    // The message is under its final name now (or nowhere); the temporary name goes either way.
    let _ = fs::remove_file(&tmp);
    let Some(dest) = committed else {
        return Err(InboxError::NameCollision {
            path: dir.to_path_buf(),
        });
    };
    if let Err(source) = sync_dir(dir) {
        // The caller answers AE: the message must not stay under its final name, where a
        // reader would take it as stored (and its resend would be a second copy).
        withdraw(dir, &dest);
        return Err(InboxError::SyncDir {
            path: dir.to_path_buf(),
            source,
        });
    }
    Ok(dest)
}

/// Takes a file whose store failed after its link out of the inbox: removes it, or, if that
/// fails too, renames it to a hidden `.unacked-` name that readers skip. Says so in the log
/// when neither works (the name only: it holds a sanitised MSH-10 at most).
fn withdraw(dir: &Path, dest: &Path) {
    if fs::remove_file(dest).is_ok() {
        // Best effort: the removal reaches the disk with the directory's next sync.
        let _ = sync_dir(dir);
        return;
    }
    let hidden = dest
        .file_name()
        .map(|name| dir.join(format!(".unacked-{}", name.to_string_lossy())));
    if let Some(hidden) = hidden
        && fs::rename(dest, &hidden).is_ok()
    {
        tracing::error!(
            file = %hidden.display(),
            "inbox: a message answered AE could not be removed; it was renamed to a hidden name"
        );
        return;
    }
    tracing::error!(
        file = %dest.display(),
        "inbox: a message answered AE could not be removed from the inbox; delete it, or \
         expect its resend as a second copy"
    );
}

/// Creates a fresh `.tmp-` file in `dir`, never reusing an existing one.
fn create_temp(dir: &Path) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".tmp-{pid}-{n}"));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        // Owner and group only: the file holds patient data.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
        match options.open(&path) {
            Ok(file) => return Ok((path, file)),
            // A leftover from an earlier process with the same pid: take the next number.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Gives `from` the additional name `to`, failing with `AlreadyExists` if `to` exists: unlike
/// `rename`, this can never replace a stored message.
fn link_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    fs::hard_link(from, to)
}

#[cfg(test)]
thread_local! {
    /// Test hook: the next directory syncs on this thread fail, as a failing disk's would.
    static FAIL_SYNC_DIR: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Flushes a directory's entries to disk, so that a file created or renamed in it survives a
/// crash. Only Unix lets a directory be opened and synced; elsewhere this does nothing.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    if FAIL_SYNC_DIR.with(std::cell::Cell::get) {
        return Err(io::Error::other("injected directory sync failure"));
    }
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// MSH-10 made safe for a file name: `[A-Za-z0-9._-]` kept, anything else `_`, at most
/// [`MAX_ID_LEN`] bytes, never empty (`none`) and never only dots.
fn sanitize_control_id(control_id: Option<&[u8]>) -> String {
    let id: String = control_id
        .unwrap_or_default()
        .iter()
        .take(MAX_ID_LEN)
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' => char::from(b),
            _ => '_',
        })
        .collect();
    if id.is_empty() {
        "none".to_owned()
    } else if id.bytes().all(|b| b == b'.') {
        "_".repeat(id.len())
    } else {
        id
    }
}

/// `YYYYMMDDTHHMMSS.ffffffZ` in UTC. A clock before 1970 is written as the epoch.
fn utc_timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970 of a `u64` of seconds fit an `i64`.
    let (year, month, day) = crate::ack::civil_from_days(days as i64);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

#[cfg(test)]
mod tests;
