//! Where messages are stored: `--store`, its aliases (`--inbox`, `--no-store`, `--no-inbox`)
//! and the SQLite store's settings.

use std::path::PathBuf;

use mllp::store::{SqliteConfig, StoreSpec};

use super::file::ConfigFile;
use crate::config::{self, SettingError};
use crate::serve::args::{self, ServeArgs};

/// The store used when neither a flag nor the file names one.
pub(crate) const DEFAULT_STORE: &str = crate::inbox::DEFAULT_STORE;

/// The store and its settings.
#[derive(Debug, Clone)]
pub(crate) struct StoreSettings {
    pub(crate) spec: StoreSpec,
    pub(crate) sqlite: SqliteConfig,
    /// The SQLite settings given (flags or keys): warned about when the store is another.
    pub(crate) sqlite_given: Vec<&'static str>,
    /// The JetStream settings given: warned about when the store is not nats://.
    #[cfg(feature = "nats")]
    pub(crate) jetstream_given: Vec<&'static str>,
    /// Without `max_message_size`, which `serve` sets from the server's.
    #[cfg(feature = "nats")]
    pub(crate) jetstream: mllp::store::JetStreamConfig,
}

impl ServeArgs {
    pub(super) fn store(&self, file: &ConfigFile) -> Result<StoreSettings, SettingError> {
        let mut sqlite_given = Vec::new();
        let sqlite = self.sqlite(file, &mut sqlite_given)?;
        #[cfg(feature = "nats")]
        let mut jetstream_given = Vec::new();
        Ok(StoreSettings {
            spec: self.store_spec(file)?,
            sqlite,
            sqlite_given,
            #[cfg(feature = "nats")]
            jetstream: self.jetstream(file, &mut jetstream_given)?,
            #[cfg(feature = "nats")]
            jetstream_given,
        })
    }

    /// A flag beats the file; in the file, as on the command line, only one of `store`,
    /// `inbox`, `no-store` (`no-inbox`) may be given.
    fn store_spec(&self, file: &ConfigFile) -> Result<StoreSpec, SettingError> {
        let f = &file.values;
        let from_file = {
            let given: Vec<&str> = [
                ("store", f.store.is_some()),
                ("inbox", f.inbox.is_some()),
                ("no-store", f.no_store.is_some()),
                ("no-inbox", f.no_inbox.is_some()),
            ]
            .into_iter()
            .filter_map(|(key, set)| set.then_some(key))
            .collect();
            if given.len() > 1 {
                return Err(file.invalid(
                    given[1],
                    &format!("cannot be used with {} (choose one)", given[0]),
                ));
            }
            let spec = file.pick(None, "store", f.store.clone(), |s| {
                s.parse::<StoreSpec>().map_err(|e| e.to_string())
            })?;
            spec.or_else(|| f.inbox.clone().map(StoreSpec::Dir))
                .or_else(|| {
                    (f.no_store == Some(true) || f.no_inbox == Some(true))
                        .then_some(StoreSpec::None)
                })
        };
        let from_flags = if self.no_store {
            Some(StoreSpec::None)
        } else {
            self.store
                .clone()
                .or_else(|| self.inbox.clone().map(StoreSpec::Dir))
        };
        Ok(from_flags.or(from_file).unwrap_or_else(|| {
            DEFAULT_STORE
                .parse()
                .unwrap_or(StoreSpec::Sqlite(PathBuf::from("mllp-inbox.db")))
        }))
    }

    fn sqlite(
        &self,
        file: &ConfigFile,
        given: &mut Vec<&'static str>,
    ) -> Result<SqliteConfig, SettingError> {
        let f = &file.values;
        let o = &self.store_options;
        let mut config = SqliteConfig::default();
        if let Some(args::MaybeDuration(window)) = file.pick(
            o.dedup_window,
            "dedup-window",
            f.dedup_window.clone(),
            args::maybe_duration,
        )? {
            given.push("dedup-window");
            config = config.dedup_window(window);
        }
        if let Some(args::MaybeDuration(retention)) = file.pick(
            o.retention,
            "retention",
            f.retention.clone(),
            args::maybe_duration,
        )? {
            given.push("retention");
            config = config.retention(retention);
        }
        if let Some(size) = file.pick(
            o.store_max_size,
            "store-max-size",
            config::number_text(f.store_max_size.clone()),
            config::byte_size,
        )? {
            given.push("store-max-size");
            config = config.max_size(Some(size as u64));
        }
        if let Some(timeout) = file.pick(
            o.store_busy_timeout,
            "store-busy-timeout",
            f.store_busy_timeout.clone(),
            config::positive_duration,
        )? {
            given.push("store-busy-timeout");
            config = config.busy_timeout(timeout);
        }
        if let Some(batch) = file.pick(
            o.store_max_batch,
            "store-max-batch",
            config::number_text(f.store_max_batch.clone()),
            config::positive_count,
        )? {
            given.push("store-max-batch");
            config = config.max_batch(batch);
        }
        Ok(config)
    }
}
