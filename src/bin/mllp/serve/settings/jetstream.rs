//! The settings of a nats:// store: the JetStream flags over the file's keys over the library's
//! defaults. `max-message-size` joins them in `serve` (the stream must admit it).

use mllp::store::nats::{JetStreamConfig, NatsOptions, Storage, StreamSettings};

use super::file::ConfigFile;
use crate::config::{self, SettingError};
use crate::nats::StreamStorage;
use crate::serve::args::ServeArgs;

impl ServeArgs {
    pub(super) fn jetstream(
        &self,
        file: &ConfigFile,
        given: &mut Vec<&'static str>,
    ) -> Result<JetStreamConfig, SettingError> {
        let f = &file.values;
        let j = &self.jetstream;
        let mut config = JetStreamConfig::default();
        if let Some(prefix) = file.pick(
            j.nats_subject_prefix.clone(),
            "nats-subject-prefix",
            f.nats_subject_prefix.clone(),
            |s| Ok(s.to_owned()),
        )? {
            given.push("nats-subject-prefix");
            config = config.subject_prefix(prefix);
        }
        if let Some(timeout) = file.pick(
            j.nats_ack_timeout,
            "nats-ack-timeout",
            f.nats_ack_timeout.clone(),
            config::positive_duration,
        )? {
            given.push("nats-ack-timeout");
            config = config.ack_timeout(timeout);
        }
        if let Some(window) = file.pick(
            j.nats_duplicate_window,
            "nats-duplicate-window",
            f.nats_duplicate_window.clone(),
            config::positive_duration,
        )? {
            given.push("nats-duplicate-window");
            config = config.duplicate_window(window);
        }
        let replicas = file.pick(
            j.stream_replicas,
            "stream-replicas",
            config::number_text(f.stream_replicas.clone()),
            config::positive_count,
        )?;
        let storage = file.pick(
            j.stream_storage,
            "stream-storage",
            f.stream_storage.clone(),
            |s| {
                <StreamStorage as clap::ValueEnum>::from_str(s, true)
                    .map_err(|_| "expected file or memory".to_owned())
            },
        )?;
        if j.create_stream || f.create_stream == Some(true) {
            given.push("create-stream");
            if replicas.is_some() {
                given.push("stream-replicas");
            }
            if storage.is_some() {
                given.push("stream-storage");
            }
            let mut settings = StreamSettings::default();
            if let Some(n) = replicas {
                settings = settings.replicas(n);
            }
            if storage == Some(StreamStorage::Memory) {
                settings = settings.storage(Storage::Memory);
            }
            config = config.create_stream(Some(settings));
        } else if replicas.is_some() || storage.is_some() {
            return Err(SettingError::Invalid(
                "--stream-replicas and --stream-storage apply to a stream created with \
                 --create-stream"
                    .to_owned(),
            ));
        }
        Ok(config.nats(self.nats_options(file, given)))
    }

    fn nats_options(&self, file: &ConfigFile, given: &mut Vec<&'static str>) -> NatsOptions {
        let f = &file.values;
        let mut flags = self.jetstream.connect.clone();
        flags.nats_creds = flags.nats_creds.or_else(|| f.nats_creds.clone());
        flags.nats_tls_ca = flags.nats_tls_ca.or_else(|| f.nats_tls_ca.clone());
        if flags.nats_tls_cert.is_none() {
            flags.nats_tls_cert = f.nats_tls_cert.clone();
            flags.nats_tls_key = f.nats_tls_key.clone();
        }
        for (name, set) in [
            ("nats-creds", flags.nats_creds.is_some()),
            ("nats-tls-ca", flags.nats_tls_ca.is_some()),
            ("nats-tls-cert", flags.nats_tls_cert.is_some()),
            ("nats-tls-key", flags.nats_tls_key.is_some()),
        ] {
            if set {
                given.push(name);
            }
        }
        flags.options("mllp serve")
    }
}
