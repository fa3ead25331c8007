//! Parser plugins: checks and enrichment that run between the parser and the router.
//!
//! Plugins run in the order they were added, before any middleware. Each may attach
//! diagnostics (warnings and information become ERR segments on an accepted message), insert
//! typed data into the request's extensions, or reject the message with a [`Response`]; a
//! rejected message never reaches middleware or a handler. A diagnostic of severity error or
//! fatal attached without a rejection refuses the message too (AR, or CR in enhanced mode):
//! a message is never answered as accepted with an error.

use std::fmt;

use crate::ack::ErrorCode;
use crate::app::{Request, Response};

/// A check or enrichment step run on every parsed message before routing.
pub trait Plugin: Send + Sync + 'static {
    /// A short name for logs and docs.
    fn name(&self) -> &'static str;

    /// Inspects the request. Return `Err(response)` to answer without calling the handler
    /// (usually [`Response::reject`]).
    ///
    /// # Errors
    /// The response to send instead of routing the message.
    fn inspect(&self, request: &mut Request) -> Result<(), Response>;
}

/// Rejects messages without MSH-9 (message type) or MSH-10 (message control ID) with AR,
/// ERR-3 = 101 (required field missing). On by default; a message without a control ID cannot
/// be correlated by its sender.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequireMshFields;

impl Plugin for RequireMshFields {
    fn name(&self) -> &'static str {
        "require_msh_fields"
    }

    fn inspect(&self, request: &mut Request) -> Result<(), Response> {
        let message = request.message();
        // Presence only, in any character set: a Latin-1 MSH-10 (MSH-18 = 8859/1) is there.
        if message.message_code_bytes().is_none() {
            return Err(Response::reject(
                ErrorCode::RequiredFieldMissing,
                "required field missing: MSH-9 (message type)",
            ));
        }
        if message.control_id_bytes().is_none() {
            return Err(Response::reject(
                ErrorCode::RequiredFieldMissing,
                "required field missing: MSH-10 (message control ID)",
            ));
        }
        Ok(())
    }
}

/// Accepts only the listed HL7 versions (MSH-12); others get AR, ERR-3 = 203
/// (unsupported version ID). Off by default.
#[derive(Clone)]
pub struct AllowedVersions {
    versions: Vec<String>,
}

impl AllowedVersions {
    /// Allows exactly these versions, e.g. `["2.3", "2.5.1"]`.
    pub fn new<I, S>(versions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            versions: versions.into_iter().map(Into::into).collect(),
        }
    }
}

impl fmt::Debug for AllowedVersions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AllowedVersions")
            .field(&self.versions)
            .finish()
    }
}

impl Plugin for AllowedVersions {
    fn name(&self) -> &'static str {
        "allowed_versions"
    }

    fn inspect(&self, request: &mut Request) -> Result<(), Response> {
        match request.message().version() {
            Some(v) if self.versions.iter().any(|a| a == v) => Ok(()),
            Some(v) => Err(Response::reject(
                ErrorCode::UnsupportedVersionId,
                format!("unsupported version ID {v:?} in MSH-12"),
            )),
            // Empty, or bytes that are not UTF-8 (a Latin-1 `2.5ü`): shown as read, lossily.
            None => {
                let raw = request
                    .message()
                    .msh()
                    .field(12)
                    .and_then(|v| v.component(1))
                    .map_or(&[][..], |v| v.as_bytes());
                Err(Response::reject(
                    ErrorCode::UnsupportedVersionId,
                    if raw.is_empty() {
                        "unsupported version ID: MSH-12 is empty".to_owned()
                    } else {
                        format!(
                            "unsupported version ID {:?} in MSH-12",
                            String::from_utf8_lossy(raw)
                        )
                    },
                ))
            }
        }
    }
}

/// Accepts only the listed processing IDs (MSH-11.1: `P` production, `T` training,
/// `D` debugging); others get AR, ERR-3 = 202 (unsupported processing ID). Off by default.
#[derive(Clone, Debug)]
pub struct AllowedProcessingIds {
    ids: Vec<String>,
}

impl AllowedProcessingIds {
    /// Allows exactly these processing IDs, e.g. `["P"]`.
    pub fn new<I, S>(ids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            ids: ids.into_iter().map(Into::into).collect(),
        }
    }
}

impl Plugin for AllowedProcessingIds {
    fn name(&self) -> &'static str {
        "allowed_processing_ids"
    }

    fn inspect(&self, request: &mut Request) -> Result<(), Response> {
        match request.message().processing_id() {
            Some(p) if self.ids.iter().any(|a| a == p) => Ok(()),
            other => Err(Response::reject(
                ErrorCode::UnsupportedProcessingId,
                format!(
                    "unsupported processing ID {:?} in MSH-11",
                    other.unwrap_or("")
                ),
            )),
        }
    }
}
