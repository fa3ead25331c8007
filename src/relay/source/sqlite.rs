//! The SQLite source: messages after the relay's cursor row, oldest first.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Item, Next, chain};
use crate::relay::{RelayConfig, RelayError};
use crate::store::StoreError;
use crate::store::sqlite::{RelayLog, StoredMessage};

/// Messages read ahead of the one being sent.
const READ_AHEAD: usize = 64;

pub(crate) struct SqliteSource {
    /// Blocking SQLite calls run on the blocking pool, one at a time.
    log: Arc<Mutex<RelayLog>>,
    describe: String,
    /// The last id done (committed).
    position: u64,
    /// The last id read into `ahead`.
    read_to: u64,
    ahead: VecDeque<StoredMessage>,
    poll_interval: Duration,
    /// Held while the relay runs: one relay per name and store (see [`lock`]).
    _lock: std::fs::File,
}

/// Takes the lock file of relay `name` on the store at `path`
/// (`<store>-relay-<name>.lock`, beside it; left there, as lock files held with `flock` may
/// be). The lock goes with the process, however it ends.
fn lock(path: &std::path::Path, name: &str) -> Result<std::fs::File, RelayError> {
    let mut file_name = path.file_name().unwrap_or_default().to_owned();
    file_name.push(format!("-relay-{name}.lock"));
    let lock_path = path.with_file_name(file_name);
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
    let file = options.open(&lock_path).map_err(|e| {
        RelayError::Source(StoreError::Open {
            target: format!("sqlite:{}", path.display()),
            source: format!(
                "cannot create the relay's lock file {}: {e}",
                lock_path.display()
            )
            .into(),
        })
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(RelayError::AlreadyRunning {
            name: name.to_owned(),
            lock: lock_path,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(RelayError::Source(StoreError::Open {
            target: format!("sqlite:{}", path.display()),
            source: format!("cannot lock {}: {e}", lock_path.display()).into(),
        })),
    }
}

impl SqliteSource {
    pub(crate) async fn open(path: PathBuf, config: &RelayConfig) -> Result<Self, RelayError> {
        let describe = format!("sqlite:{}", path.display());
        let name = config.name.clone();
        // A missing store is reported as such by `RelayLog::open`, not as a lock failure.
        let lock = if path.is_file() {
            Some(lock(&path, &name)?)
        } else {
            None
        };
        let (log, position) = tokio::task::spawn_blocking(move || {
            let log = RelayLog::open(&path, name)?;
            let position = log.position()?;
            Ok::<_, StoreError>((log, position))
        })
        .await
        .map_err(|_| RelayError::Panicked)?
        .map_err(RelayError::Source)?;
        Ok(Self {
            log: Arc::new(Mutex::new(log)),
            describe,
            position,
            read_to: position,
            ahead: VecDeque::new(),
            poll_interval: config.poll_interval,
            _lock: lock.expect("RelayLog::open refuses a missing store"),
        })
    }

    pub(crate) fn describe(&self) -> String {
        self.describe.clone()
    }

    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// Runs `f` on the log in the blocking pool.
    async fn with_log<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut RelayLog) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, String> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            let mut log = log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut log)
        })
        .await
        .map_err(|e| format!("store task failed: {e}"))?
        .map_err(|e| chain(&e))
    }

    pub(crate) async fn backlog(&mut self) -> Option<u64> {
        let after = self.position;
        self.with_log(move |log| log.backlog(after)).await.ok()
    }

    pub(crate) async fn next(&mut self) -> Result<Next, String> {
        if self.ahead.is_empty() {
            let after = self.read_to;
            self.ahead = self
                .with_log(move |log| log.after(after, READ_AHEAD))
                .await?
                .into();
        }
        let Some(message) = self.ahead.pop_front() else {
            return Ok(Next::Idle);
        };
        self.read_to = message.summary.id;
        Ok(Next::Item(Box::new(Item {
            id: message.summary.id,
            message_type: message.summary.message_type.clone(),
            control_id: message.summary.control_id.clone(),
            payload: message.payload,
            #[cfg(feature = "nats")]
            message: None,
        })))
    }

    pub(crate) async fn done(&mut self, item: &Item) -> Result<(), String> {
        let id = item.id;
        self.with_log(move |log| log.advance(id)).await?;
        self.position = id;
        Ok(())
    }

    pub(crate) async fn dead_letter(&mut self, item: &Item, reason: &str) -> Result<(), String> {
        let (id, reason) = (item.id, reason.to_owned());
        self.with_log(move |log| log.dead_letter(id, &reason))
            .await?;
        self.position = id;
        Ok(())
    }
}
