//! Switches for partners that do not keep to the wire rules, each a flag, a key of the config
//! file (and of a `[[listener]]` table) and a library setting; every one defaults to strict.

use std::path::Path;

use mllp::ServerBuilder;
use mllp::ack::AckOptions;
use mllp::app::plugin::{AllowedProcessingIds, AllowedVersions};
use mllp::app::{Charsets, InvalidText};
use mllp::hl7::{Charset, CharsetError, ParseOptions};
use mllp::server::Transport;

use crate::config::SettingError;

/// The table 0211 names [`Charset`] decodes: what `--charsets` may name.
const CHARSET_NAMES: &[&str] = &[
    "ASCII",
    "8859/1",
    "8859/2",
    "8859/3",
    "8859/4",
    "8859/5",
    "8859/6",
    "8859/7",
    "8859/8",
    "8859/9",
    "8859/15",
    "UNICODE UTF-8",
    "GB 18030-2000",
    "KS X 1001",
    "BIG-5",
];

/// Refuses a name no MSH-18 could match (`8859-1`, `LATIN1`): every message would be answered
/// AR 103. Names of sets that are in table 0211 but not decoded are refused too, with the
/// reason.
fn check_charsets(names: &[String]) -> Result<(), SettingError> {
    for name in names {
        let why = match Charset::from_msh18(name.as_bytes()) {
            Ok(charset) if charset.name() == name => continue,
            Ok(_) => "use the name exactly as MSH-18 writes it".to_owned(),
            Err(CharsetError::Unsupported { why, .. }) => format!("not supported: {why}"),
            Err(_) => match near_charset(name) {
                Some(near) => format!("not an HL7 table 0211 name (did you mean {near:?}?)"),
                None => "not an HL7 table 0211 name".to_owned(),
            },
        };
        return Err(SettingError::Invalid(format!(
            "--charsets (or charsets) {name:?}: {why}; the names are {}",
            CHARSET_NAMES.join(", ")
        )));
    }
    Ok(())
}

/// The table 0211 name meant by a common other spelling (`UTF-8`, `latin1`, `ISO-8859-1`) or
/// a slip of the keyboard (`8859-1`).
fn near_charset(name: &str) -> Option<&'static str> {
    let squeezed: String = name
        .to_ascii_uppercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    match squeezed.as_str() {
        "UTF8" | "UNICODEUTF8" => Some("UNICODE UTF-8"),
        "LATIN1" | "ISO88591" => Some("8859/1"),
        "USASCII" => Some("ASCII"),
        _ => crate::config::closest(name, CHARSET_NAMES),
    }
}

/// Refuses a processing ID outside HL7 table 0103: no message could carry it.
fn check_processing_ids(ids: &[String]) -> Result<(), SettingError> {
    match ids.iter().find(|id| !["P", "T", "D"].contains(&id.trim())) {
        Some(id) => Err(SettingError::Invalid(format!(
            "--allow-processing-id (or allow-processing-id) {id:?}: HL7 table 0103 has P \
             (production), T (training) and D (debugging)"
        ))),
        None => Ok(()),
    }
}

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
        let allow_processing_id = list(&flags.allow_processing_id, &keys.allow_processing_id);
        check_processing_ids(&allow_processing_id)?;
        let charsets = list(&flags.charsets, &keys.charsets);
        check_charsets(&charsets)?;
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
            allow_processing_id,
            charsets,
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

    /// A character set or processing ID that no message could carry is refused at start (it
    /// would answer every message AR), with the names that exist and the one probably meant.
    #[test]
    fn names_no_message_could_match_are_refused() {
        let path = Path::new("mllp.toml");
        let resolve = |charsets: &[&str], ids: &[&str]| {
            let keys = PartnerKeys {
                charsets: Some(charsets.iter().map(|c| c.to_string()).collect()),
                allow_processing_id: Some(ids.iter().map(|c| c.to_string()).collect()),
                ..PartnerKeys::default()
            };
            PartnerSettings::resolve(&PartnerFlags::default(), &keys, path)
                .map_err(|e| e.to_string())
        };
        let fine = resolve(
            &["ASCII", "8859/1", "UNICODE UTF-8", "BIG-5"],
            &["P", "T", "D"],
        );
        assert!(fine.is_ok(), "{fine:?}");
        for (given, meant) in [
            ("8859-1", "8859/1"),
            ("latin1", "8859/1"),
            ("ISO-8859-1", "8859/1"),
            ("utf-8", "UNICODE UTF-8"),
            ("BIG5", "BIG-5"),
        ] {
            let error = resolve(&[given], &["P"]).unwrap_err();
            assert!(
                error.contains(&format!(
                    "{given:?}: not an HL7 table 0211 name (did you mean {meant:?}?)"
                )),
                "{error}"
            );
        }
        let error = resolve(&["UNICODE UTF-16"], &["P"]).unwrap_err();
        assert!(error.contains("not supported"), "{error}");
        let error = resolve(&[" 8859/1"], &["P"]).unwrap_err();
        assert!(error.contains("exactly as MSH-18 writes it"), "{error}");
        let error = resolve(&["ASCII"], &["X"]).unwrap_err();
        assert!(error.contains("\"X\": HL7 table 0103 has P"), "{error}");
    }
}
