//! The filters that `list`, `export` and `replay` share.

use std::time::{Duration, SystemTime};

use mllp::app::RoutePattern;
use mllp::store::sqlite::Filter;

/// Which messages.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FilterArgs {
    /// Received at or after TIME: RFC 3339 (`2026-12-04T10:00:00Z`) or an age (`2h`, `7d`)
    #[arg(long, value_name = "TIME", value_parser = time)]
    since: Option<SystemTime>,

    /// Received before TIME (as --since)
    #[arg(long, value_name = "TIME", value_parser = time)]
    until: Option<SystemTime>,

    /// MSH-9 matches PATTERN, as a route does: ADT^A01, ADT^*, *^A01
    #[arg(long = "type", value_name = "PATTERN")]
    message_type: Option<RoutePattern>,

    /// MSH-3 (sending application) is exactly APP
    #[arg(long, value_name = "APP")]
    sender: Option<String>,

    /// MSH-4 (sending facility) is exactly FACILITY
    #[arg(long, value_name = "FACILITY")]
    facility: Option<String>,

    /// MSH-10 (message control id) is exactly ID
    #[arg(long, value_name = "ID")]
    control_id: Option<String>,

    /// Only messages with a store id greater than ID
    #[arg(long, value_name = "ID")]
    after_id: Option<u64>,

    /// Only messages `mllp relay --name RELAY` gave up on (its dead letters; `mllp inbox
    /// dead-letters` says why)
    #[arg(long, value_name = "RELAY")]
    dead_letters: Option<String>,
}

impl FilterArgs {
    pub(crate) fn filter(&self) -> Filter {
        let mut f = Filter::default();
        f.since = self.since;
        f.until = self.until;
        f.message_type = self.message_type.clone();
        f.sending_application = self.sender.clone();
        f.sending_facility = self.facility.clone();
        f.control_id = self.control_id.clone();
        f.after_id = self.after_id;
        f.dead_letters_of = self.dead_letters.clone();
        f
    }
}

/// RFC 3339, or an age such as `2h` counted back from now.
fn time(s: &str) -> Result<SystemTime, String> {
    let s = s.trim();
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    let age: Duration = humantime::parse_duration(s).map_err(|_| {
        "expected an RFC 3339 time (2026-12-04T10:00:00Z) or an age (2h, 7d)".to_owned()
    })?;
    SystemTime::now()
        .checked_sub(age)
        .ok_or_else(|| "is too far back".to_owned())
}

/// `2026-12-04T10:00:00.123456Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}
