//! Switches for partners that do not keep to the wire rules, each a flag, a key of the config
//! file (and of a `[[listener]]` table) and a library setting; every one defaults to strict.

use std::path::Path;

use mllp::ServerBuilder;
use mllp::ack::AckOptions;
use mllp::app::plugin::{AllowedProcessingIds, AllowedVersions};
use mllp::app::{Charsets, InvalidText};
use mllp::hl7::ParseOptions;
use mllp::server::Transport;

use crate::config::SettingError;

/// The lenient-partner flags of `mllp serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct PartnerFlags {
    /// Accept segments that end in LF or CRLF as well as CR (what many lab devices and
    /// file-based senders write); the message is stored as received [default: CR only, others
    /// answered AR]
    #[arg(long)]
    lenient_line_endings: bool,

    /// Answer every message in original mode (AA/AE/AR, always sent) whatever its MSH-15 asks,
    /// for senders that set MSH-15 but wait for an ACK anyway [default: MSH-15 present means
    /// enhanced mode: CA/CE/CR, sent as MSH-15 says]
    #[arg(long)]
    original_mode: bool,

    /// MSH-3 (sending application) of every ACK, components separated by `^` [default: the
    /// message's MSH-5]
    #[arg(long, value_name = "NAME")]
    ack_sending_application: Option<String>,

    /// MSH-4 (sending facility) of every ACK, components separated by `^` [default: the
    /// message's MSH-6]
    #[arg(long, value_name = "NAME")]
    ack_sending_facility: Option<String>,

    /// Accept only messages of this HL7 version (MSH-12, e.g. 2.5.1; repeatable); others are
    /// answered AR with ERR-3 = 203 [default: any version]
    #[arg(long, value_name = "VERSION")]
    allow_version: Vec<String>,

    /// Accept only messages with this processing ID (MSH-11: P, T or D; repeatable); others
    /// are answered AR with ERR-3 = 202 [default: any]
    #[arg(long, value_name = "ID")]
    allow_processing_id: Vec<String>,

    /// Accept only this character set in MSH-18 (an HL7 table 0211 name such as 8859/1 or
    /// "UNICODE UTF-8"; ASCII for no MSH-18; repeatable); others are answered AR with ERR-3 =
    /// 103. Turns the character-set check on [default: any set, not checked]
    #[arg(long, value_name = "NAME")]
    charsets: Vec<String>,

    /// A message whose bytes are invalid in the character set its MSH-18 declares (UTF-8
    /// labelled 8859/1, 8-bit text without MSH-18): `accept` it and log a warning, or `reject`
    /// it (AR, ERR-3 = 102; 103 for an MSH-18 that cannot be decoded). Turns the check on
    /// [default: not checked]
    #[arg(long, value_name = "POLICY", value_parser = charset_errors)]
    charset_errors: Option<InvalidText>,
}

/// Parses `--charset-errors` and the `charset-errors` key.
pub(crate) fn charset_errors(s: &str) -> Result<InvalidText, String> {
    match s.trim() {
        "accept" => Ok(InvalidText::Accept),
        "reject" => Ok(InvalidText::Reject),
        _ => Err("expected accept or reject".to_owned()),
    }
}

/// The same settings as written in a config file or a `[[listener]]` table.
#[derive(Debug, Clone, Default)]
pub(crate) struct PartnerKeys {
    pub(crate) lenient_line_endings: Option<bool>,
    pub(crate) original_mode: Option<bool>,
    pub(crate) ack_sending_application: Option<String>,
    pub(crate) ack_sending_facility: Option<String>,
    pub(crate) allow_version: Option<Vec<String>>,
    pub(crate) allow_processing_id: Option<Vec<String>>,
    pub(crate) charsets: Option<Vec<String>>,
    pub(crate) charset_errors: Option<String>,
}

/// The lenient-partner settings, resolved: flags over the file's keys over the strict defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PartnerSettings {
    pub(crate) lenient_line_endings: bool,
    pub(crate) original_mode: bool,
    pub(crate) ack_sending_application: Option<String>,
    pub(crate) ack_sending_facility: Option<String>,
    /// Empty: every version.
    pub(crate) allow_version: Vec<String>,
    /// Empty: every processing ID.
    pub(crate) allow_processing_id: Vec<String>,
    /// Empty: every character set.
    pub(crate) charsets: Vec<String>,
    /// `None` (and no `charsets`): no character-set check.
    pub(crate) charset_errors: Option<InvalidText>,
}

impl PartnerSettings {
    /// The flags over the keys of `file` (at `path`, for errors). An empty allow-list in the
    /// file is refused: it reads as "nothing" but would be taken as "no list".
    pub(crate) fn resolve(
        flags: &PartnerFlags,
        keys: &PartnerKeys,
        path: &Path,
    ) -> Result<Self, SettingError> {
        let refuse_empty = |key: &'static str, list: &Option<Vec<String>>| match list {
            Some(list) if list.is_empty() || list.iter().any(|v| v.trim().is_empty()) => {
                Err(SettingError::Value {
                    path: path.to_path_buf(),
                    key,
                    message: "must name at least one value, none of them empty; remove the key \
                              to accept any"
                        .to_owned(),
                })
            }
            _ => Ok(()),
        };
        refuse_empty("allow-version", &keys.allow_version)?;
        refuse_empty("allow-processing-id", &keys.allow_processing_id)?;
        refuse_empty("charsets", &keys.charsets)?;
        let from_file = crate::config::file_value(
            path,
            "charset-errors",
            keys.charset_errors.clone(),
            charset_errors,
        )?;
        let list = |flag: &[String], key: &Option<Vec<String>>| {
            if flag.is_empty() {
                key.clone().unwrap_or_default()
            } else {
                flag.to_vec()
            }
        };
        Ok(Self {
            lenient_line_endings: flags.lenient_line_endings
                || keys.lenient_line_endings.unwrap_or(false),
            original_mode: flags.original_mode || keys.original_mode.unwrap_or(false),
            ack_sending_application: flags
                .ack_sending_application
                .clone()
                .or_else(|| keys.ack_sending_application.clone()),
            ack_sending_facility: flags
                .ack_sending_facility
                .clone()
                .or_else(|| keys.ack_sending_facility.clone()),
            allow_version: list(&flags.allow_version, &keys.allow_version),
            allow_processing_id: list(&flags.allow_processing_id, &keys.allow_processing_id),
            charsets: list(&flags.charsets, &keys.charsets),
            charset_errors: flags.charset_errors.or(from_file),
        })
    }

    /// How ACKs are written under these settings.
    pub(crate) fn ack_options(&self) -> AckOptions {
        let mut ack = AckOptions::default().original_mode_only(self.original_mode);
        if let Some(application) = &self.ack_sending_application {
            ack = ack.sending_application(application);
        }
        if let Some(facility) = &self.ack_sending_facility {
            ack = ack.sending_facility(facility);
        }
        ack
    }

    /// These settings on `builder`: its ACK and parse options, and the allow-list plugins.
    pub(crate) fn apply<T: Transport>(&self, mut builder: ServerBuilder<T>) -> ServerBuilder<T> {
        builder = builder
            .ack_options(self.ack_options())
            .parse_options(ParseOptions::default().lenient_line_endings(self.lenient_line_endings));
        if !self.allow_version.is_empty() {
            builder = builder.plugin(AllowedVersions::new(self.allow_version.clone()));
        }
        if !self.allow_processing_id.is_empty() {
            builder = builder.plugin(AllowedProcessingIds::new(self.allow_processing_id.clone()));
        }
        if !self.charsets.is_empty() || self.charset_errors.is_some() {
            let mut plugin = Charsets::new().invalid_text(self.charset_errors.unwrap_or_default());
            if !self.charsets.is_empty() {
                plugin = plugin.allow(self.charsets.clone());
            }
            builder = builder.plugin(plugin);
        }
        builder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing given is the strict default; a flag wins over the key; an empty list in the
    /// file is refused naming the key.
    #[test]
    fn flags_win_over_keys_and_empty_lists_are_refused() {
        let path = Path::new("mllp.toml");
        let none =
            PartnerSettings::resolve(&PartnerFlags::default(), &PartnerKeys::default(), path);
        assert_eq!(none.unwrap(), PartnerSettings::default());

        let keys = PartnerKeys {
            lenient_line_endings: Some(true),
            ack_sending_application: Some("FILE".to_owned()),
            allow_version: Some(vec!["2.3".to_owned()]),
            ..PartnerKeys::default()
        };
        let flags = PartnerFlags {
            ack_sending_application: Some("FLAG".to_owned()),
            allow_version: vec!["2.5".to_owned()],
            ..PartnerFlags::default()
        };
        let s = PartnerSettings::resolve(&flags, &keys, path).unwrap();
        assert!(s.lenient_line_endings);
        assert_eq!(s.ack_sending_application.as_deref(), Some("FLAG"));
        assert_eq!(s.allow_version, ["2.5"]);

        let empty = PartnerKeys {
            allow_processing_id: Some(Vec::new()),
            ..PartnerKeys::default()
        };
        let error = PartnerSettings::resolve(&PartnerFlags::default(), &empty, path).unwrap_err();
        assert!(error.to_string().contains("allow-processing-id"), "{error}");
    }
}
