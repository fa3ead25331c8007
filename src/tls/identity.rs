//! A client certificate's names: the identity reported to the runtime and the names matched
//! against the subject allow-list.
//!
//! SAN DNS names come from rustls-webpki (already in the tree for verification). The subject's
//! common names are read with a small bounded DER walk over the subject `Name` that webpki hands
//! out raw: the certificate has been verified by then, and the walk only ever reads inside the
//! slice it was given, stopping quietly at the first thing it does not understand.

use rustls_pki_types::CertificateDer;

/// The names in a certificate that identify its holder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct CertNames {
    /// Subject common names (OID 2.5.4.3), in certificate order.
    pub(super) common_names: Vec<String>,
    /// Subject-alternative-name DNS names, in certificate order.
    pub(super) dns_names: Vec<String>,
}

impl CertNames {
    /// Reads the names of a DER certificate; empty if it cannot be parsed.
    pub(super) fn of(cert: &CertificateDer<'_>) -> CertNames {
        let Ok(parsed) = webpki::EndEntityCert::try_from(cert) else {
            return CertNames::default();
        };
        CertNames {
            common_names: common_names(parsed.subject()),
            dns_names: parsed.valid_dns_names().map(str::to_owned).collect(),
        }
    }

    /// The identity reported for this certificate: the first CN, else the first SAN DNS name.
    pub(super) fn identity(&self) -> Option<&str> {
        self.common_names
            .first()
            .or_else(|| self.dns_names.first())
            .map(String::as_str)
    }

    /// Whether any CN or SAN DNS name equals an allow-list entry (ASCII case-insensitive;
    /// wildcards are compared literally, never expanded).
    pub(super) fn matches_any(&self, allowed: &[String]) -> bool {
        self.common_names
            .iter()
            .chain(&self.dns_names)
            .any(|name| allowed.iter().any(|a| a.eq_ignore_ascii_case(name)))
    }
}

const TAG_SET: u8 = 0x31;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_OID: u8 = 0x06;
/// id-at-commonName, 2.5.4.3.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// Splits one DER TLV off `input`: `(tag, contents, rest)`. `None` when truncated, for an
/// indefinite or over-long length, or for a multi-byte tag (none occurs in a `Name`).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// Every common name in a DER `Name` given without its outer SEQUENCE header (as webpki's
/// `Cert::subject` returns it).
fn common_names(mut rdns: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    while let Some((tag, set, rest)) = tlv(rdns) {
        rdns = rest;
        if tag != TAG_SET {
            continue;
        }
        let mut atvs = set;
        while let Some((tag, atv, rest)) = tlv(atvs) {
            atvs = rest;
            if tag != TAG_SEQUENCE {
                continue;
            }
            let Some((TAG_OID, oid, value)) = tlv(atv) else {
                continue;
            };
            if oid != OID_COMMON_NAME {
                continue;
            }
            // An empty CN names no one: the identity falls back to the SAN DNS names.
            if let Some(name) = tlv(value).and_then(|(t, v, _)| directory_string(t, v))
                && !name.trim().is_empty()
            {
                names.push(name);
            }
        }
    }
    names
}

/// Decodes an X.520 `DirectoryString` (and IA5String); `None` for other types or bad encodings.
fn directory_string(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String; TeletexString only when it is valid UTF-8
        // (in practice it carries ASCII).
        0x0c | 0x13 | 0x16 | 0x14 => std::str::from_utf8(value).ok().map(str::to_owned),
        // BMPString: UCS-2 big-endian.
        0x1e => {
            if !value.len().is_multiple_of(2) {
                return None;
            }
            let units = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        // UniversalString: UCS-4 big-endian.
        0x1c => {
            if !value.len().is_multiple_of(4) {
                return None;
            }
            value
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(contents.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(contents.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(contents);
        out
    }

    fn rdn(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        let mut atv = der(TAG_OID, oid);
        atv.extend(der(tag, value));
        der(TAG_SET, &der(TAG_SEQUENCE, &atv))
    }

    const OID_ORG: &[u8] = &[0x55, 0x04, 0x0a];

    /// The CN is found among other attributes, whatever its string type.
    #[test]
    fn finds_common_names_of_every_string_type() {
        let mut name = rdn(OID_ORG, 0x0c, b"Hospital");
        name.extend(rdn(OID_COMMON_NAME, 0x13, b"lab-sender"));
        name.extend(rdn(OID_COMMON_NAME, 0x0c, "r\u{e9}sum\u{e9}".as_bytes()));
        let bmp: Vec<u8> = "ris".encode_utf16().flat_map(u16::to_be_bytes).collect();
        name.extend(rdn(OID_COMMON_NAME, 0x1e, &bmp));
        let ucs4: Vec<u8> = "pacs"
            .chars()
            .flat_map(|c| (c as u32).to_be_bytes())
            .collect();
        name.extend(rdn(OID_COMMON_NAME, 0x1c, &ucs4));
        assert_eq!(
            common_names(&name),
            ["lab-sender", "r\u{e9}sum\u{e9}", "ris", "pacs"]
        );
    }

    /// A long-form length (a CN over 127 bytes) is decoded.
    #[test]
    fn reads_long_form_lengths() {
        let long = "a".repeat(300);
        let name = rdn(OID_COMMON_NAME, 0x0c, long.as_bytes());
        assert_eq!(common_names(&name), [long]);
    }

    /// A name without a CN yields nothing, and so does an empty one, or an empty or blank CN
    /// (which names no one: the identity falls back to the first SAN DNS name).
    #[test]
    fn name_without_common_name_is_empty() {
        assert!(common_names(&rdn(OID_ORG, 0x0c, b"Hospital")).is_empty());
        assert!(common_names(&[]).is_empty());
        assert!(common_names(&rdn(OID_COMMON_NAME, 0x0c, b"")).is_empty());
        assert!(common_names(&rdn(OID_COMMON_NAME, 0x13, b"  ")).is_empty());
        let mut both = rdn(OID_COMMON_NAME, 0x0c, b"");
        both.extend(rdn(OID_COMMON_NAME, 0x0c, b"lab-sender"));
        assert_eq!(common_names(&both), ["lab-sender"]);
    }

    /// Truncated or hostile input never panics and never reads past the slice.
    #[test]
    fn malformed_names_never_panic() {
        let good = rdn(OID_COMMON_NAME, 0x0c, b"lab-sender");
        for cut in 0..good.len() {
            let _ = common_names(&good[..cut]);
        }
        for bytes in [
            &[0x31, 0x84, 0xff, 0xff, 0xff, 0xff][..],
            &[0x31, 0x80, 0x00, 0x00],
            &[0x1f, 0x01, 0x00],
            &[0x31, 0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        ] {
            assert!(common_names(bytes).is_empty());
        }
        // Odd-length BMPString and invalid UTF-8 are skipped, not mangled.
        let mut name = rdn(OID_COMMON_NAME, 0x1e, &[0x00, 0x41, 0x00]);
        name.extend(rdn(OID_COMMON_NAME, 0x0c, &[0xff, 0xfe]));
        assert!(common_names(&name).is_empty());
    }

    /// The identity prefers the CN, falls back to the first DNS name, and may be absent.
    #[test]
    fn identity_is_cn_then_first_dns_name() {
        let both = CertNames {
            common_names: vec!["cn".into()],
            dns_names: vec!["a.example".into(), "b.example".into()],
        };
        assert_eq!(both.identity(), Some("cn"));
        let dns_only = CertNames {
            common_names: vec![],
            dns_names: vec!["a.example".into(), "b.example".into()],
        };
        assert_eq!(dns_only.identity(), Some("a.example"));
        assert_eq!(CertNames::default().identity(), None);
    }

    /// The allow-list matches any CN or DNS name, ignoring ASCII case, and never expands
    /// wildcards.
    #[test]
    fn allow_list_matches_any_name_case_insensitively() {
        let names = CertNames {
            common_names: vec!["Lab-Sender".into()],
            dns_names: vec!["lab.example.org".into(), "*.example.org".into()],
        };
        assert!(names.matches_any(&["lab-sender".into()]));
        assert!(names.matches_any(&["LAB.EXAMPLE.ORG".into()]));
        assert!(names.matches_any(&["*.example.org".into()]));
        assert!(!names.matches_any(&["other.example.org".into()]));
        assert!(!names.matches_any(&[]));
    }
}
