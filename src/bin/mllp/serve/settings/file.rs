//! The `--config` file, read once and consulted by every concern.

use std::path::{Path, PathBuf};

use crate::config::{self, ServeFile, SettingError};

/// The `--config` file (empty without one) and its path, which errors name.
pub(super) struct ConfigFile {
    pub(super) values: ServeFile,
    path: PathBuf,
}

impl ConfigFile {
    pub(super) fn load(path: Option<&Path>) -> Result<Self, SettingError> {
        Ok(match path {
            Some(path) => Self {
                values: ServeFile::load(path)?,
                path: path.to_path_buf(),
            },
            None => Self {
                values: ServeFile::default(),
                path: PathBuf::new(),
            },
        })
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
