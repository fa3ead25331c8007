//! Reading certificates, keys and CA bundles from PEM files, with errors that name the file.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, InconsistentKeys, OtherError, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::error::{FileRole, PemError, TlsConfigError};

/// The largest PEM file read. A full public CA bundle is well under 1 MiB; the cap only keeps a
/// wrong path (a log file, a disk image) from being read into memory.
const MAX_PEM_FILE: u64 = 16 << 20;

/// Reads a whole file, refusing anything larger than [`MAX_PEM_FILE`].
fn read_capped(role: FileRole, path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    let read_err = |source| TlsConfigError::Read {
        role,
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(TlsConfigError::FileTooLarge {
            role,
            path: path.to_owned(),
            limit: MAX_PEM_FILE,
        });
    }
    Ok(bytes)
}

/// Every `CERTIFICATE` section of a file, in order; at least one.
pub(super) fn load_certs(
    role: FileRole,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let bytes = read_capped(role, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsConfigError::MalformedPem {
            role,
            path: path.to_owned(),
            source: PemError::new(redacted(source)),
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            role,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key of a file: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
/// (`EC PRIVATE KEY`).
pub(super) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    let bytes = read_capped(FileRole::PrivateKey, path)?;
    let encrypted = || TlsConfigError::EncryptedPrivateKey {
        path: path.to_owned(),
    };
    // A legacy OpenSSL key with a `Proc-Type: 4,ENCRYPTED` header would otherwise surface as a
    // base64 error: name the real problem.
    if contains(&bytes, b"Proc-Type: 4,ENCRYPTED") {
        return Err(encrypted());
    }
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        // PKCS#8 `ENCRYPTED PRIVATE KEY` is not a section rustls reads: say so, not "no key".
        Err(rustls_pki_types::pem::Error::NoItemsFound)
            if contains(&bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") =>
        {
            Err(encrypted())
        }
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(TlsConfigError::NoPrivateKey {
            path: path.to_owned(),
        }),
        Err(source) => Err(TlsConfigError::MalformedPem {
            role: FileRole::PrivateKey,
            path: path.to_owned(),
            source: PemError::new(redacted(source)),
        }),
    }
}

/// A root store holding every certificate of a CA bundle; every one must be a valid trust anchor.
pub(super) fn load_roots(path: &Path) -> Result<RootCertStore, TlsConfigError> {
    let certs = load_certs(FileRole::CaBundle, path)?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|source| TlsConfigError::InvalidCertificate {
                role: FileRole::CaBundle,
                path: path.to_owned(),
                index: i + 1,
                source,
            })?;
    }
    Ok(roots)
}

/// A certificate chain and its private key, checked to belong together.
pub(super) fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsConfigError> {
    let chain = load_certs(FileRole::Certificate, cert_path)?;
    // Every certificate of the chain, not only the leaf: a corrupt intermediate would otherwise
    // be sent in every handshake and fail it at the peer, far from the file at fault.
    for (i, cert) in chain.iter().enumerate() {
        if let Err(e) = webpki::EndEntityCert::try_from(cert) {
            return Err(TlsConfigError::InvalidCertificate {
                role: FileRole::Certificate,
                path: cert_path.to_owned(),
                index: i + 1,
                source: rustls::Error::InvalidCertificate(webpki_error(e)),
            });
        }
    }
    let key = load_key(key_path)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsConfigError::UnsupportedPrivateKey {
            path: key_path.to_owned(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the provider cannot tell (not the case for aws-lc-rs keys); a handshake
        // would fail visibly if they truly differed.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsConfigError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            })
        }
        Err(source) => Err(TlsConfigError::InvalidCertificate {
            role: FileRole::Certificate,
            path: cert_path.to_owned(),
            index: 1,
            source,
        }),
    }
}

fn webpki_error(e: webpki::Error) -> CertificateError {
    match e {
        webpki::Error::BadDer | webpki::Error::BadDerTime => CertificateError::BadEncoding,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    }
}

/// The PEM parser's error with the file bytes it quotes cut down to the section label. The
/// parser quotes a whole `-----BEGIN` line, and takes everything up to the last dashes of that
/// line as the label, so a key whose line breaks were lost (pasted on one line, or copied with
/// literal `\n`) would otherwise put the key itself into the error.
fn redacted(err: rustls_pki_types::pem::Error) -> rustls_pki_types::pem::Error {
    use rustls_pki_types::pem::Error;
    const BEGIN: &[u8] = b"-----BEGIN ";
    match err {
        Error::IllegalSectionStart { line } => {
            let mut kept = BEGIN.to_vec();
            kept.extend_from_slice(label_of(line.strip_prefix(BEGIN).unwrap_or(&line)));
            Error::IllegalSectionStart { line: kept }
        }
        Error::MissingSectionEnd { end_marker } => Error::MissingSectionEnd {
            end_marker: label_of(&end_marker).to_vec(),
        },
        other => other,
    }
}

/// The leading section label of `bytes`: upper-case letters, digits and spaces (what real
/// labels such as `PRIVATE KEY` or `X509 CRL` consist of), at most 40 of them. Base64 has
/// lower-case letters, `+`, `/` and `=`, so at most a few bytes of a DER header pass.
fn label_of(bytes: &[u8]) -> &[u8] {
    let len = bytes
        .iter()
        .take(40)
        .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || **b == b' ')
        .count();
    &bytes[..len]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(contents: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(contents).expect("write temp file");
        f
    }

    /// A missing file is a read error that names the path.
    #[test]
    fn missing_file_names_the_path() {
        let err =
            load_certs(FileRole::Certificate, Path::new("/nonexistent/cert.pem")).unwrap_err();
        assert!(matches!(
            err,
            TlsConfigError::Read {
                role: FileRole::Certificate,
                ..
            }
        ));
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }

    /// A file past the size cap is refused without being read into memory.
    #[test]
    fn oversized_file_is_refused() {
        let f = tempfile::NamedTempFile::new().expect("temp file");
        f.as_file().set_len(MAX_PEM_FILE + 1).expect("sparse file");
        let err = load_certs(FileRole::CaBundle, f.path()).unwrap_err();
        assert!(
            matches!(
                err,
                TlsConfigError::FileTooLarge {
                    limit: MAX_PEM_FILE,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    /// A file without PEM sections holds no certificate.
    #[test]
    fn text_without_pem_has_no_certificate() {
        let f = file_with(b"hello, this is not a certificate\n");
        let err = load_certs(FileRole::CaBundle, f.path()).unwrap_err();
        assert!(matches!(
            err,
            TlsConfigError::NoCertificate {
                role: FileRole::CaBundle,
                ..
            }
        ));
    }

    /// A certificate section with broken base64 is malformed PEM, not "no certificate".
    #[test]
    fn broken_base64_is_malformed_pem() {
        let f = file_with(
            b"-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
        );
        let err = load_certs(FileRole::Certificate, f.path()).unwrap_err();
        assert!(
            matches!(err, TlsConfigError::MalformedPem { .. }),
            "{err:?}"
        );
    }

    /// A section that never ends (a half-written file) is malformed PEM, said in words.
    #[test]
    fn unterminated_section_is_malformed_pem() {
        let f = file_with(b"-----BEGIN CERTIFICATE-----\nAAAA\n");
        let err = load_certs(FileRole::Certificate, f.path()).unwrap_err();
        let TlsConfigError::MalformedPem { source, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(
            source.to_string(),
            "the CERTIFICATE section has no END line (a truncated or half-written file?)"
        );
    }

    /// A key file with only a certificate in it has no private key.
    #[test]
    fn key_file_without_key_reports_no_private_key() {
        let f = file_with(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let err = load_key(f.path()).unwrap_err();
        assert!(
            matches!(err, TlsConfigError::NoPrivateKey { .. }),
            "{err:?}"
        );
    }

    /// A passphrase-protected PKCS#8 key is named as encrypted.
    #[test]
    fn encrypted_pkcs8_key_is_reported_as_encrypted() {
        let f = file_with(
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        let err = load_key(f.path()).unwrap_err();
        assert!(
            matches!(err, TlsConfigError::EncryptedPrivateKey { .. }),
            "{err:?}"
        );
    }

    /// A legacy OpenSSL encrypted RSA key (Proc-Type header) is named as encrypted.
    #[test]
    fn legacy_encrypted_rsa_key_is_reported_as_encrypted() {
        let f = file_with(
            b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        );
        let err = load_key(f.path()).unwrap_err();
        assert!(
            matches!(err, TlsConfigError::EncryptedPrivateKey { .. }),
            "{err:?}"
        );
    }
}
