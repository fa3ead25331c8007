//! The admin endpoint's settings: its address, its token, and whether it may be public.

use std::net::SocketAddr;

use super::file::ConfigFile;
use crate::config::SettingError;
use crate::serve::args::{self, ServeArgs};

/// The admin endpoint, resolved and checked: `None` when off.
#[derive(Clone)]
pub(crate) struct AdminSettings {
    pub(crate) addr: SocketAddr,
    pub(crate) token: Option<String>,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl ServeArgs {
    /// `--admin` and its companions, over the file's `admin*` keys. A non-loopback address
    /// without a token is refused unless `--admin-public` says it is meant.
    pub(super) fn admin(&self, file: &ConfigFile) -> Result<Option<AdminSettings>, SettingError> {
        let f = &file.values;
        let addr = file.pick(self.admin, "admin", f.admin.clone(), args::admin_addr)?;
        let token_file = self
            .admin_token_file
            .clone()
            .or_else(|| f.admin_token_file.clone());
        let token = match (self.admin_token.clone(), token_file) {
            (Some(token), _) => Some(token),
            (None, Some(path)) => Some(read_token(&path)?),
            (None, None) => f.admin_token.clone(),
        };
        if token.as_ref().is_some_and(|t| t.trim().is_empty()) {
            return Err(SettingError::Invalid(
                "the admin token must not be empty".to_owned(),
            ));
        }
        let public = self.admin_public || f.admin_public == Some(true);
        let Some(addr) = addr else {
            // A token or exposure setting without an endpoint would go unnoticed.
            if token.is_some() || public {
                return Err(SettingError::Invalid(
                    "--admin-token, --admin-token-file and --admin-public need --admin (the \
                     endpoint's address)"
                        .to_owned(),
                ));
            }
            return Ok(None);
        };
        mllp::admin::check_exposure(addr, token.is_some(), public).map_err(|_| {
            SettingError::Invalid(format!(
                "--admin {addr} is not a loopback address: set --admin-token (or \
                 --admin-token-file) so that /metrics, /status and /connections need it, or pass \
                 --admin-public if the network protects the endpoint"
            ))
        })?;
        Ok(Some(AdminSettings {
            addr,
            token: token.map(|t| t.trim().to_owned()),
        }))
    }
}

/// The first line of a token file.
fn read_token(path: &std::path::Path) -> Result<String, SettingError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}
