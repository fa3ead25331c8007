//! When the served certificate is valid, read from the leaf of its chain, so that an operator
//! hears of an expiring certificate before partners' handshakes start failing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;

/// A certificate's validity period: its `notBefore` and `notAfter` times.
///
/// [`TlsTransport::certificate_validity`](super::TlsTransport::certificate_validity) gives the
/// one of the certificate new handshakes present, updated by every successful reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertificateValidity {
    not_before: SystemTime,
    not_after: SystemTime,
}

impl CertificateValidity {
    /// Reads the validity of a DER certificate; `None` when it cannot be parsed for it.
    pub(super) fn of(cert: &CertificateDer<'_>) -> Option<CertificateValidity> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
        let validity = parsed.validity();
        Some(CertificateValidity {
            not_before: at(validity.not_before.timestamp()),
            not_after: at(validity.not_after.timestamp()),
        })
    }

    /// A validity period from `not_before` to `not_after`, as a certificate would carry it (for
    /// code that checks expiry, and its tests).
    pub fn new(not_before: SystemTime, not_after: SystemTime) -> CertificateValidity {
        CertificateValidity {
            not_before,
            not_after,
        }
    }

    /// The first moment the certificate is valid.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// The last moment the certificate is valid: from then on, a peer that verifies it refuses
    /// the handshake.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Whether the certificate is valid at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// How long the certificate stays valid after `now`; `None` once it has expired.
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        self.not_after.duration_since(now).ok()
    }
}

/// Seconds since the Unix epoch as a time; before 1970 (never a real certificate) clamps to it.
fn at(seconds: i64) -> SystemTime {
    u64::try_from(seconds)
        .ok()
        .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)))
        .unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_has_no_validity() {
        assert_eq!(
            CertificateValidity::of(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])),
            None
        );
    }

    #[test]
    fn validity_window_and_remaining_time() {
        let day = Duration::from_secs(86_400);
        let v = CertificateValidity {
            not_before: UNIX_EPOCH + day,
            not_after: UNIX_EPOCH + day * 10,
        };
        assert!(!v.is_valid_at(UNIX_EPOCH));
        assert!(v.is_valid_at(UNIX_EPOCH + day * 4));
        assert!(!v.is_valid_at(UNIX_EPOCH + day * 11));
        assert_eq!(v.remaining(UNIX_EPOCH + day * 4), Some(day * 6));
        assert_eq!(v.remaining(UNIX_EPOCH + day * 11), None);
    }

    #[test]
    fn times_before_the_epoch_clamp_to_it() {
        assert_eq!(at(-5), UNIX_EPOCH);
        assert_eq!(at(60), UNIX_EPOCH + Duration::from_secs(60));
    }
}
