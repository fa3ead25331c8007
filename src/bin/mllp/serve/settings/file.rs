//! The `--config` file, read once and consulted by every concern.

use std::path::{Path, PathBuf};

use crate::config::{self, ServeFile, SettingError};

/// The `--config` file (empty without one) and its path, which errors name.
pub(super) struct ConfigFile {
    pub(super) values: ServeFile,
    path: PathBuf,
    /// One file per `[[listener]]` table: the table's keys over the top level's.
    pub(super) listeners: Vec<ConfigFile>,
}

/// Keys that set the whole process, not one listener: refused in a `[[listener]]` table.
const PROCESS_KEYS: &[&str] = &[
    "log-format",
    "log_format",
    "otlp-endpoint",
    "otlp_endpoint",
    "message-trace-ratio",
    "message_trace_ratio",
    "message-trace-limit",
    "message_trace_limit",
    "admin",
    "admin-token",
    "admin_token",
    "admin-token-file",
    "admin_token_file",
    "admin-public",
    "admin_public",
    "listener",
];

/// The keys that choose the store, of which one may be given.
const STORE_KEYS: &[&str] = &[
    "store", "inbox", "no-store", "no_store", "no-inbox", "no_inbox",
];

impl ConfigFile {
    pub(super) fn load(path: Option<&Path>) -> Result<Self, SettingError> {
        let Some(path) = path else {
            return Ok(Self {
                values: ServeFile::default(),
                path: PathBuf::new(),
                listeners: Vec::new(),
            });
        };
        let values = ServeFile::load(path)?;
        if values.name.is_some() {
            return Err(SettingError::Parse {
                path: path.to_path_buf(),
                message: "name names one [[listener]] table; put it in the table it names"
                    .to_owned(),
            });
        }
        let listeners = match &values.listener {
            Some(tables) => Self::listeners(path, tables)?,
            None => Vec::new(),
        };
        Ok(Self {
            values,
            path: path.to_path_buf(),
            listeners,
        })
    }

    /// Each `[[listener]]` table merged over the file's top level (already known to parse).
    fn listeners(path: &Path, tables: &[toml::Table]) -> Result<Vec<ConfigFile>, SettingError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut top: toml::Table = toml::from_str(&text).map_err(|e| SettingError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_owned(),
        })?;
        top.remove("listener");
        let mut listeners: Vec<ConfigFile> = Vec::with_capacity(tables.len());
        for (n, table) in tables.iter().enumerate() {
            let invalid = |message: String| SettingError::Parse {
                path: path.to_path_buf(),
                message: format!("[[listener]] {} ({}): {message}", n + 1, describe(table)),
            };
            if let Some(key) = table.keys().find(|k| PROCESS_KEYS.contains(&k.as_str())) {
                return Err(invalid(format!(
                    "{key} sets the whole process; put it at the top level of the file"
                )));
            }
            if !table.contains_key("bind") {
                return Err(invalid(
                    "bind is required in every listener table".to_owned(),
                ));
            }
            let mut merged = top.clone();
            // A store named in the table replaces the top level's, whichever key names it
            // (`store`, `inbox`, `no-store`): only one of them may be given.
            if table.keys().any(|k| STORE_KEYS.contains(&k.as_str())) {
                merged.retain(|k, _| !STORE_KEYS.contains(&k));
            }
            merged.extend(table.clone());
            let values: ServeFile = merged
                .try_into()
                .map_err(|e: toml::de::Error| invalid(config::readable(e.message())))?;
            if let Some(name) = &values.name {
                if name.is_empty()
                    || name.len() > 64
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                {
                    return Err(invalid(format!(
                        "name {name:?} must be 1 to 64 letters, digits, '.', '_' or '-' (it \
                         labels the listener's logs and metrics)"
                    )));
                }
                if listeners
                    .iter()
                    .any(|l| l.values.name.as_deref() == Some(name.as_str()))
                {
                    return Err(invalid(format!(
                        "name {name:?} is already another listener's"
                    )));
                }
            }
            listeners.push(ConfigFile {
                values,
                path: path.to_path_buf(),
                listeners: Vec::new(),
            });
        }
        Ok(listeners)
    }

    /// `flag` when given, else this file's `key` read with the flag's parser. The file's value
    /// is checked even when the flag overrides it: a broken file is refused whatever the flags.
    pub(super) fn pick<T>(
        &self,
        flag: Option<T>,
        key: &'static str,
        value: Option<String>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, SettingError> {
        let from_file = config::file_value(&self.path, key, value, parse)?;
        Ok(flag.or(from_file))
    }

    /// How a `[[listener]]` table is named in its logs, `/status` and metrics: its `name`,
    /// else its position and `bind` (which move when tables are reordered or rebound).
    pub(super) fn label(&self, n: usize) -> String {
        match &self.values.name {
            Some(name) => name.clone(),
            None => self.position(n),
        }
    }

    /// How a `[[listener]]` table is named in an error about it: its position and `bind`, and
    /// its name when it has one.
    pub(super) fn position(&self, n: usize) -> String {
        let bind = self.values.bind.as_deref().unwrap_or("?");
        match &self.values.name {
            Some(name) => format!("[[listener]] {n} ({name}, bind {bind})"),
            None => format!("[[listener]] {n} (bind {bind})"),
        }
    }

    /// The file's path (empty without one).
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// An error naming `key` in this file.
    pub(super) fn invalid(&self, key: &'static str, message: &str) -> SettingError {
        SettingError::Value {
            path: self.path.clone(),
            key,
            message: message.to_owned(),
        }
    }

    /// Keys present but empty are mistakes (a template that expanded to nothing), not
    /// defaults: an empty inbox path would be the working directory, and an empty allow-list
    /// reads as "nobody" to a reader but would be taken as "no list".
    pub(super) fn refuse_empty_keys(&self) -> Result<(), SettingError> {
        let file = &self.values;
        let empty = |key: &'static str, message: &str| SettingError::Value {
            path: self.path.clone(),
            key,
            message: message.to_owned(),
        };
        if file
            .inbox
            .as_ref()
            .is_some_and(|dir| dir.as_os_str().is_empty())
        {
            return Err(empty(
                "inbox",
                "must not be empty (no-store = true runs without storing)",
            ));
        }
        if file.allow_peer.as_ref().is_some_and(Vec::is_empty) {
            return Err(empty(
                "allow-peer",
                "an empty list would refuse every peer; remove the key to admit all",
            ));
        }
        if file
            .allow_client_subject
            .as_ref()
            .is_some_and(Vec::is_empty)
        {
            return Err(empty(
                "allow-client-subject",
                "an empty list would refuse every client; remove the key to admit any certificate the CA signed",
            ));
        }
        Ok(())
    }
}

/// A table as named in an error: its `bind`, when it has one.
fn describe(table: &toml::Table) -> String {
    match table.get("bind").and_then(|b| b.as_str()) {
        Some(bind) => format!("bind {bind}"),
        None => "no bind".to_owned(),
    }
}
