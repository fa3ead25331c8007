//! `--forward HOST:PORT`: pass every accepted message on to another MLLP receiver (after the
//! store, when there is one) and answer with the downstream's acknowledgment.

use std::path::Path;
use std::time::Duration;

use mllp::ClientConfig;
use mllp::ack::AckOptions;
use mllp::forward::Forwarder;

use crate::config::{self, SettingError};

/// The forwarding flags of `mllp serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ForwardFlags {
    /// Forward every message (stored first, when a store is set) to this MLLP receiver,
    /// HOST:PORT, and answer the sender with its acknowledgment code and ERR segments; no
    /// answer within --forward-timeout, or no connection, is answered AE (ERR-3 = 207)
    /// [default: none: acknowledge locally]
    #[arg(long, value_name = "HOST:PORT", value_parser = crate::send::host_port)]
    forward: Option<String>,

    /// How long to wait for the downstream's acknowledgment of each forwarded message
    /// [default: 30s]
    #[arg(long, value_name = "DUR", value_parser = config::positive_duration)]
    forward_timeout: Option<Duration>,
}

/// Where to forward, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForwardSettings {
    pub(crate) addr: String,
    pub(crate) timeout: Duration,
}

/// The default wait for a downstream ACK (the client's).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl ForwardSettings {
    /// The flags over the file's `forward` and `forward-timeout` keys; `None` without a target.
    pub(crate) fn resolve(
        flags: &ForwardFlags,
        forward: Option<String>,
        forward_timeout: Option<String>,
        path: &Path,
    ) -> Result<Option<Self>, SettingError> {
        let addr = config::file_value(path, "forward", forward, crate::send::host_port)?;
        let timeout = config::file_value(
            path,
            "forward-timeout",
            forward_timeout,
            config::positive_duration,
        )?;
        let timeout = flags.forward_timeout.or(timeout);
        match flags.forward.clone().or(addr) {
            Some(addr) => Ok(Some(Self {
                addr,
                timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
            })),
            None if timeout.is_some() => Err(SettingError::Invalid(
                "--forward-timeout needs --forward".to_owned(),
            )),
            None => Ok(None),
        }
    }

    /// The pool the route forwards through, writing its ACKs with `ack`. No retries: a sender
    /// that gets AE resends, and the message is stored (and forwarded) again then.
    pub(crate) fn forwarder(&self, ack: AckOptions) -> Forwarder {
        let config = ClientConfig::default()
            .reply_timeout(self.timeout)
            .max_retries(0);
        Forwarder::with_config(self.addr.clone(), config).ack_options(ack)
    }
}
