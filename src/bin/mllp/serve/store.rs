//! Opening the store `--store` names, before the server binds.

use std::process::ExitCode;
use std::sync::Arc;

use mllp::store::{DirStore, SqliteStore, Store, StoreError, StoreSpec};

use super::settings::StoreSettings;
use crate::exit;

/// The store, or `None` for `--no-store`. A file that is not an mllp store, of a newer schema,
/// or corrupt is a usage error (exit 2, saying what to do); a store that cannot be created or
/// opened (permissions, missing directory) is exit 1.
///
/// A nats:// store must admit messages of `max_message_size` (the server's setting, 10 MiB
/// when unset): a stream or server limit below it, a missing stream, or one that does not
/// capture the subjects is a usage error too; NATS unreachable is exit 1.
#[cfg_attr(not(feature = "nats"), allow(unused_variables))]
pub(super) async fn open(
    settings: &StoreSettings,
    max_message_size: Option<usize>,
) -> Result<Option<Arc<dyn Store>>, ExitCode> {
    warn_ignored(settings);
    let opened: Result<Arc<dyn Store>, StoreError> = match &settings.spec {
        StoreSpec::None => return Ok(None),
        StoreSpec::Dir(dir) => DirStore::open(dir).map(|s| Arc::new(s) as Arc<dyn Store>),
        StoreSpec::Sqlite(path) => SqliteStore::open(path, settings.sqlite.clone())
            .await
            .map(|s| Arc::new(s) as Arc<dyn Store>),
        #[cfg(feature = "nats")]
        StoreSpec::Nats(spec) => {
            let mut config = settings.jetstream.clone();
            if let Some(size) = max_message_size {
                config = config.max_message_size(size);
            }
            mllp::store::JetStreamStore::open(spec, config)
                .await
                .map(|s| Arc::new(s) as Arc<dyn Store>)
        }
        other => {
            return Err(exit::fail_text(
                exit::USAGE,
                &format!("--store {other} is not supported by this build"),
            ));
        }
    };
    opened
        .map(Some)
        .map_err(|e| exit::fail(exit::store_code(&e), &e))
}

/// Settings of another kind of store than the one in use do nothing: said at start, so that a
/// retention meant for compliance is not silently without effect. (A warning, not a refusal:
/// a config file's top-level keys apply to every `[[listener]]`, whatever each one stores in.)
fn warn_ignored(settings: &StoreSettings) {
    let store = settings.spec.to_string();
    if !matches!(settings.spec, StoreSpec::Sqlite(_)) && !settings.sqlite_given.is_empty() {
        tracing::warn!(
            store,
            ignored = settings.sqlite_given.join(", "),
            "settings of the SQLite store do nothing for this store"
        );
    }
    #[cfg(feature = "nats")]
    if !matches!(settings.spec, StoreSpec::Nats(_)) && !settings.jetstream_given.is_empty() {
        tracing::warn!(
            store,
            ignored = settings.jetstream_given.join(", "),
            "settings of the JetStream store do nothing for this store"
        );
    }
}

/// How long closing the store may take once serving has ended: its last commit and, for
/// SQLite, copying the write-ahead log into the database file. Longer means a commit is stuck
/// (a lock another process holds, a hung disk).
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Closes `store`, waiting at most [`CLOSE_WAIT`]; `false` when it did not close in time. The
/// process may then exit all the same: the connections are gone, so whatever the stuck commit
/// holds was never acknowledged, and SQLite finishes or discards it from its log at the next
/// start.
pub(super) async fn close(store: &Arc<dyn Store>) -> bool {
    match tokio::time::timeout(CLOSE_WAIT, store.close()).await {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!(
                store = %store.describe(),
                wait_s = CLOSE_WAIT.as_secs() as i64,
                "store did not close in time (a commit is stuck: a lock another process holds, \
                 or a hung disk); exiting without it: nothing it holds was acknowledged"
            );
            false
        }
    }
}
