//! The acceptor's restart policy, from four settings checked together.

use std::time::Duration;

use mllp::RestartPolicy;

use super::file::ConfigFile;
use super::server::flag_names;
use crate::config::{self, SettingError};
use crate::serve::args::ServeArgs;

impl ServeArgs {
    /// The acceptor's restart policy from its four settings (see [`restart_policy`]).
    pub(super) fn restart(&self, file: &ConfigFile) -> Result<Option<RestartPolicy>, SettingError> {
        let f = &file.values;
        restart_policy(
            file.pick(
                self.max_restarts,
                "max-restarts",
                config::number_text(f.max_restarts.clone()),
                config::restart_count,
            )?,
            file.pick(
                self.restart_window,
                "restart-window",
                f.restart_window.clone(),
                config::positive_duration,
            )?,
            file.pick(
                self.restart_backoff,
                "restart-backoff",
                f.restart_backoff.clone(),
                config::any_duration,
            )?,
            file.pick(
                self.restart_max_backoff,
                "restart-max-backoff",
                f.restart_max_backoff.clone(),
                config::any_duration,
            )?,
        )
    }
}

/// The acceptor's restart policy from its four settings, each unset one keeping the library
/// default's value; `None` when none is set. Checked here with the library's own rule, so a
/// combination the server would refuse is refused before anything is created on disk.
fn restart_policy(
    max_restarts: Option<u32>,
    window: Option<Duration>,
    backoff: Option<Duration>,
    max_backoff: Option<Duration>,
) -> Result<Option<RestartPolicy>, SettingError> {
    if max_restarts.is_none() && window.is_none() && backoff.is_none() && max_backoff.is_none() {
        return Ok(None);
    }
    let RestartPolicy::Backoff {
        max_restarts: default_restarts,
        window: default_window,
        backoff: default_backoff,
        max_backoff: default_max_backoff,
        ..
    } = RestartPolicy::default()
    else {
        unreachable!("the library's default restart policy restarts with backoff")
    };
    // Zero restarts is the library's "never restart"; the other settings are still checked.
    let policy = RestartPolicy::backoff(
        max_restarts.unwrap_or(default_restarts),
        window.unwrap_or(default_window),
        backoff.unwrap_or(default_backoff),
        max_backoff.unwrap_or(default_max_backoff),
    );
    match mllp::ServerConfig::default().restart(policy).validate() {
        Ok(()) => Ok(Some(policy)),
        Err(e) => {
            // The values in force, defaults included: one of the two may not have been set.
            let values = if matches!(e, mllp::server::RuntimeConfigError::BackoffRange) {
                let shown = |d: Duration| humantime::format_duration(d).to_string();
                format!(
                    " (--restart-backoff {}, --restart-max-backoff {})",
                    shown(backoff.unwrap_or(default_backoff)),
                    shown(max_backoff.unwrap_or(default_max_backoff)),
                )
            } else {
                String::new()
            };
            Err(SettingError::Invalid(format!(
                "invalid setting: {}{values}",
                flag_names(&e.into()),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const S: Duration = Duration::from_secs(1);

    /// No restart setting leaves the library's policy alone; each one set replaces only its
    /// own part of the default (3 within 5 s, 100 ms doubling to 5 s).
    #[test]
    fn restart_settings_change_only_their_part_of_the_default() {
        assert_eq!(restart_policy(None, None, None, None).unwrap(), None);
        assert_eq!(
            restart_policy(Some(0), None, Some(250 * MS), None).unwrap(),
            Some(RestartPolicy::backoff(0, 5 * S, 250 * MS, 5 * S))
        );
        assert_eq!(
            restart_policy(None, Some(S), None, Some(S)).unwrap(),
            Some(RestartPolicy::backoff(3, S, 100 * MS, S))
        );
    }

    /// Combinations the library refuses are refused naming the flags, never a library name.
    #[test]
    fn bad_restart_combinations_name_the_flags() {
        let err = restart_policy(None, None, Some(2 * S), Some(S))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--restart-max-backoff must not be less than --restart-backoff"),
            "{err}"
        );
        let err = restart_policy(None, Some(Duration::ZERO), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--restart-window must be greater than zero"),
            "{err}"
        );
        assert!(!err.contains('_'), "{err}");
    }
}
