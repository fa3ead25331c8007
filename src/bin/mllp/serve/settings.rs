//! Every setting of `mllp serve`, resolved: the flag, else the config file's key, else the
//! default. Unset policies stay `None`, so the library's documented defaults apply.
//!
//! [`ServeArgs::resolve`] resolves one concern after another; the larger ones have a file here
//! (`server`: the server's policies, `restart`: the acceptor's restart policy), beside `file`,
//! the config file that every concern reads.

mod admin;
mod file;
#[cfg(feature = "nats")]
mod jetstream;
mod restart;
mod server;
mod store;

use std::path::PathBuf;

pub(super) use admin::AdminSettings;
pub(super) use server::{ServerSettings, flag_names};
pub(super) use store::StoreSettings;

use super::args::{self, ServeArgs, TraceLimit};
use super::forward::ForwardSettings;
use super::partner::{PartnerKeys, PartnerSettings};
use crate::config::{self, LogFormat, ServeFile, SettingError};
use file::ConfigFile;

/// The address bound when neither `--bind` nor the file says otherwise.
const DEFAULT_BIND: &str = "127.0.0.1:2575";

/// Every setting, resolved: flags, then the file, then the defaults.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) bind: String,
    pub(super) store: StoreSettings,
    pub(super) tls: Option<TlsSettings>,
    /// Empty: every peer is admitted.
    pub(super) allow_peer: Vec<String>,
    pub(super) server: ServerSettings,
    pub(super) partner: PartnerSettings,
    pub(super) forward: Option<ForwardSettings>,
    pub(super) telemetry: TelemetrySettings,
    /// How this listener is named in messages (`[[listener]] 2 (bind …)`); `None` for the
    /// one listener of the flags and the file's top level.
    pub(super) label: Option<String>,
    /// One entry per `[[listener]]` table; empty: serve these settings alone.
    pub(super) listeners: Vec<Settings>,
    /// `None`: no admin endpoint.
    pub(super) admin: Option<AdminSettings>,
}

/// The TLS settings, resolved and checked for completeness.
#[derive(Debug, Clone)]
pub(super) struct TlsSettings {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) client_ca: Option<PathBuf>,
    pub(super) allow_client_subject: Vec<String>,
}

/// Logs, export, and how many messages get a span.
#[derive(Debug, Clone)]
pub(super) struct TelemetrySettings {
    pub(super) log_format: LogFormat,
    #[cfg(feature = "otlp")]
    pub(super) otlp_endpoint: Option<String>,
    pub(super) message_trace_ratio: Option<f64>,
    pub(super) message_trace_limit: Option<TraceLimit>,
    /// One line per message (default on).
    pub(super) log_messages: bool,
    /// One line per reject (default on).
    pub(super) log_rejects: bool,
}

/// A repeatable flag's values, else the file's list, else none.
fn list(flag: &[String], file: &Option<Vec<String>>) -> Vec<String> {
    if flag.is_empty() {
        file.clone().unwrap_or_default()
    } else {
        flag.to_vec()
    }
}

impl ServeArgs {
    /// Merges the flags over the config file over the defaults. Unset policies stay `None`, so
    /// the library's documented defaults apply.
    ///
    /// With `[[listener]]` tables in the file, [`Settings::listeners`] holds one entry per
    /// table: its keys over the file's top level, the flags over both (as everywhere, a flag
    /// wins over the file). A bind at the top level or `--bind` is refused then: each listener
    /// has its own.
    pub(super) fn resolve(self) -> Result<Settings, SettingError> {
        let file = ConfigFile::load(self.config.as_deref())?;
        let mut settings = self.resolve_file(&file)?;
        if file.listeners.is_empty() {
            return Ok(settings);
        }
        if self.bind.is_some() || file.values.bind.is_some() {
            return Err(SettingError::Invalid(
                "--bind (or a top-level bind) cannot be combined with [[listener]] tables: give \
                 each listener its bind"
                    .to_owned(),
            ));
        }
        for (n, listener) in file.listeners.iter().enumerate() {
            let mut resolved = self.resolve_file(listener).map_err(|e| {
                SettingError::Invalid(format!(
                    "{} in {}: {}",
                    listener.position(n + 1),
                    file.path().display(),
                    crate::exit::chain(&e)
                ))
            })?;
            resolved.label = Some(listener.label(n + 1));
            settings.listeners.push(resolved);
        }
        Ok(settings)
    }

    /// The settings of one listener: the flags over `file` over the defaults.
    fn resolve_file(&self, file: &ConfigFile) -> Result<Settings, SettingError> {
        file.refuse_empty_keys()?;
        let tls = self.tls(&file.values)?;
        let server = self.server(file)?;
        let telemetry = self.telemetry(file)?;
        let store = self.store(file)?;
        let f = &file.values;
        let keys = PartnerKeys {
            lenient_line_endings: f.lenient_line_endings,
            original_mode: f.original_mode,
            ack_sending_application: f.ack_sending_application.clone(),
            ack_sending_facility: f.ack_sending_facility.clone(),
            allow_version: f.allow_version.clone(),
            allow_processing_id: f.allow_processing_id.clone(),
            charsets: f.charsets.clone(),
            charset_errors: f.charset_errors.clone(),
        };
        let partner = PartnerSettings::resolve(&self.partner, &keys, file.path())?;
        let forward = ForwardSettings::resolve(
            &self.forward,
            f.forward.clone(),
            f.forward_timeout.clone(),
            file.path(),
        )?;
        let admin = self.admin(file)?;
        Ok(Settings {
            bind: self
                .bind
                .clone()
                .or_else(|| file.values.bind.clone())
                .unwrap_or_else(|| DEFAULT_BIND.to_owned()),
            store,
            tls,
            allow_peer: list(&self.allow_peer, &file.values.allow_peer),
            server,
            partner,
            forward,
            telemetry,
            label: None,
            listeners: Vec::new(),
            admin,
        })
    }

    /// TLS when both a certificate and its key are given; the client settings need them.
    fn tls(&self, file: &ServeFile) -> Result<Option<TlsSettings>, SettingError> {
        let cert = self.tls_cert.clone().or_else(|| file.tls_cert.clone());
        let key = self.tls_key.clone().or_else(|| file.tls_key.clone());
        let client_ca = self
            .tls_client_ca
            .clone()
            .or_else(|| file.tls_client_ca.clone());
        let allow_client_subject = list(&self.allow_client_subject, &file.allow_client_subject);
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(TlsSettings {
                cert,
                key,
                client_ca,
                allow_client_subject,
            })),
            (None, None) if client_ca.is_some() || !allow_client_subject.is_empty() => {
                Err(SettingError::Invalid(
                    "--tls-client-ca and --allow-client-subject need --tls-cert and --tls-key"
                        .to_owned(),
                ))
            }
            (None, None) => Ok(None),
            _ => Err(SettingError::Invalid(
                "--tls-cert and --tls-key go together".to_owned(),
            )),
        }
    }

    /// Logs, OTLP export, and which messages get a span.
    fn telemetry(&self, file: &ConfigFile) -> Result<TelemetrySettings, SettingError> {
        let f = &file.values;
        Ok(TelemetrySettings {
            message_trace_ratio: file.pick(
                self.message_trace_ratio,
                "message-trace-ratio",
                config::number_text(f.message_trace_ratio.clone()),
                config::ratio,
            )?,
            message_trace_limit: file.pick(
                self.message_trace_limit,
                "message-trace-limit",
                config::number_text(f.message_trace_limit.clone()),
                args::trace_limit,
            )?,
            log_format: self.log_format.or(f.log_format).unwrap_or_default(),
            log_messages: self.log_messages.or(f.log_messages).unwrap_or(true),
            log_rejects: self.log_rejects.or(f.log_rejects).unwrap_or(true),
            #[cfg(feature = "otlp")]
            otlp_endpoint: self
                .otlp_endpoint
                .clone()
                .or_else(|| f.otlp_endpoint.clone()),
        })
    }
}
