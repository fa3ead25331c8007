//! [`StoreSpec`]: where messages go, as written on the command line (`sqlite:PATH`,
//! `dir:PATH`, `nats://HOST:PORT/STREAM`, `none`).

mod nats;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use nats::NatsSpec;

/// Where a store lives, parsed from `KIND:LOCATION`.
///
/// | text | store |
/// |---|---|
/// | `sqlite:PATH` | [`SqliteStore`](crate::store::SqliteStore) in the file `PATH` |
/// | `dir:PATH` | [`DirStore`](crate::store::DirStore) in the directory `PATH` |
/// | `nats://HOST:PORT/STREAM` | `JetStreamStore` (feature `nats`) on the JetStream stream `STREAM`; see [`NatsSpec`] |
/// | `none` | no store: messages are acknowledged without being stored |
///
/// ```
/// use mllp::store::StoreSpec;
/// assert_eq!("sqlite:inbox.db".parse::<StoreSpec>()?, StoreSpec::Sqlite("inbox.db".into()));
/// assert_eq!("dir:/var/spool/hl7".parse::<StoreSpec>()?.to_string(), "dir:/var/spool/hl7");
/// assert!("inbox.db".parse::<StoreSpec>().is_err());
/// # Ok::<(), mllp::store::StoreSpecError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreSpec {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A directory of one file per message.
    Dir(PathBuf),
    /// A NATS JetStream stream.
    Nats(NatsSpec),
    /// No store.
    None,
}

/// Why a store specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid store {text:?}: {reason}; expected sqlite:PATH, dir:PATH, nats://HOST:PORT/STREAM \
     or none"
)]
pub struct StoreSpecError {
    text: String,
    reason: &'static str,
}

impl FromStr for StoreSpec {
    type Err = StoreSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason| StoreSpecError {
            text: text.to_owned(),
            reason,
        };
        if text == "none" {
            return Ok(StoreSpec::None);
        }
        if text.starts_with("nats://") || text.starts_with("tls://") {
            return NatsSpec::parse(text).map(StoreSpec::Nats).map_err(err);
        }
        let (kind, location) = text.split_once(':').ok_or_else(|| err("no store kind"))?;
        if location.is_empty() {
            return Err(err("the path is empty"));
        }
        match kind {
            "sqlite" => Ok(StoreSpec::Sqlite(location.into())),
            "dir" => Ok(StoreSpec::Dir(location.into())),
            _ => Err(err("unknown store kind")),
        }
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreSpec::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            StoreSpec::Dir(path) => write!(f, "dir:{}", path.display()),
            StoreSpec::Nats(spec) => spec.fmt(f),
            StoreSpec::None => f.write_str("none"),
        }
    }
}
