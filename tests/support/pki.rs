//! A throw-away PKI for TLS tests and benchmarks: a CA, a second (untrusted) CA, and server and
//! client certificates written to a temp directory as PEM files, so the file-loading path is the
//! one exercised.

#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and key written as PEM files.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate in DER, to compare with what a peer presented.
    pub der: Vec<u8>,
}

/// What a generated leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

/// How a leaf's private key is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// `PRIVATE KEY` (ECDSA P-256).
    Pkcs8,
    /// `RSA PRIVATE KEY` (RSA 2048).
    Pkcs1,
    /// `EC PRIVATE KEY` (ECDSA P-256).
    Sec1,
}

/// Options for one leaf certificate.
#[derive(Debug, Clone)]
pub struct LeafSpec<'a> {
    pub file: &'a str,
    pub cn: Option<&'a str>,
    pub dns: &'a [&'a str],
    pub ips: &'a [IpAddr],
    pub usage: Usage,
    pub expired: bool,
    /// Valid from a day ago until this long from now (else rcgen's default, 1975 to 4096).
    pub valid_for: Option<std::time::Duration>,
    pub key_format: KeyFormat,
}

impl<'a> LeafSpec<'a> {
    pub fn server(file: &'a str) -> Self {
        LeafSpec {
            file,
            cn: Some("mllp test server"),
            dns: &["localhost"],
            ips: &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            usage: Usage::Server,
            expired: false,
            valid_for: None,
            key_format: KeyFormat::Pkcs8,
        }
    }

    pub fn client(file: &'a str, cn: &'a str) -> Self {
        LeafSpec {
            file,
            cn: Some(cn),
            dns: &[],
            ips: &[],
            usage: Usage::Client,
            expired: false,
            valid_for: None,
            key_format: KeyFormat::Pkcs8,
        }
    }
}

/// A CA that can issue certificates, and where its certificate is stored.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub cert: PathBuf,
}

impl Ca {
    /// A self-signed CA written to `dir/file`.
    pub fn new(dir: &Path, file: &str, cn: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(Some(cn));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let cert = dir.join(file);
        std::fs::write(&cert, issuer.pem()).expect("write CA");
        Ca { issuer, cert }
    }

    /// Issues a leaf certificate and writes `dir/<file>.crt` and `dir/<file>.key`.
    pub fn issue(&self, dir: &Path, spec: &LeafSpec<'_>) -> Leaf {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(spec.cn);
        params.subject_alt_names = spec
            .dns
            .iter()
            .map(|d| SanType::DnsName((*d).try_into().expect("dns name")))
            .chain(spec.ips.iter().map(|ip| SanType::IpAddress(*ip)))
            .collect();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match spec.usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        if spec.expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        if let Some(valid_for) = spec.valid_for {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970");
            let epoch = rcgen::date_time_ymd(1970, 1, 1);
            params.not_before = epoch + (now - std::time::Duration::from_secs(86_400));
            params.not_after = epoch + (now + valid_for);
        }
        let (key, key_pem) = key_pair(spec.key_format);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        let leaf = Leaf {
            cert: dir.join(format!("{}.crt", spec.file)),
            key: dir.join(format!("{}.key", spec.file)),
            der: cert.der().to_vec(),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
        std::fs::write(&leaf.key, key_pem).expect("write key");
        leaf
    }
}

fn dn(cn: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(cn) = cn {
        dn.push(DnType::CommonName, cn);
    }
    dn
}

/// A fresh key pair (for rcgen to sign with) and its PEM in the requested format.
fn key_pair(format: KeyFormat) -> (KeyPair, String) {
    match format {
        KeyFormat::Pkcs8 => {
            let key = KeyPair::generate().expect("key");
            let pem = key.serialize_pem();
            (key, pem)
        }
        KeyFormat::Pkcs1 => {
            let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .expect("rsa key");
            // PKCS#8's privateKey OCTET STRING is the PKCS#1 RSAPrivateKey.
            let pem = pem_encode("RSA PRIVATE KEY", pkcs8_inner_key(key.serialized_der()));
            (key, pem)
        }
        KeyFormat::Sec1 => {
            use aws_lc_rs::encoding::{AsDer, EcPrivateKeyRfc5915Der};
            use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
            let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).expect("ec key");
            let pkcs8 = ec.to_pkcs8v1().expect("pkcs8");
            let sec1: EcPrivateKeyRfc5915Der<'static> = ec.private_key().as_der().expect("sec1");
            let key = KeyPair::try_from(pkcs8.as_ref()).expect("rcgen key");
            (key, pem_encode("EC PRIVATE KEY", sec1.as_ref()))
        }
    }
}

/// Splits one DER TLV: (tag, contents, rest).
fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = input[0];
    let (len, hdr) = match input[1] {
        n if n < 0x80 => (usize::from(n), 2),
        0x81 => (usize::from(input[2]), 3),
        0x82 => (usize::from(u16::from_be_bytes([input[2], input[3]])), 4),
        other => panic!("unexpected DER length byte {other:#x}"),
    };
    (tag, &input[hdr..hdr + len], &input[hdr + len..])
}

/// The privateKey field of a PKCS#8 PrivateKeyInfo.
fn pkcs8_inner_key(pkcs8: &[u8]) -> &[u8] {
    let (_, info, _) = tlv(pkcs8);
    let (_, _version, rest) = tlv(info);
    let (_, _algorithm, rest) = tlv(rest);
    let (tag, key, _) = tlv(rest);
    assert_eq!(tag, 0x04, "privateKey is an OCTET STRING");
    key
}

/// PEM-encodes DER under `label` (base64, 64-character lines).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Everything the TLS tests need, in one temp directory that lives as long as this value.
pub struct Pki {
    pub dir: tempfile::TempDir,
    /// The CA that issues the server and the trusted clients.
    pub ca: Ca,
    /// A CA nobody trusts.
    pub other_ca: Ca,
    /// Server certificate for `localhost` and `127.0.0.1`.
    pub server: Leaf,
    /// Client `CN=lab-sender`, SAN DNS `lab.example.org`.
    pub client: Leaf,
    /// Client `CN=intruder`, issued by the trusted CA.
    pub intruder: Leaf,
    /// Client without CN, SAN DNS `ris.example.org` then `ris2.example.org`.
    pub san_only: Leaf,
    /// Client `CN=lab-sender` whose validity ended in 2001.
    pub expired: Leaf,
    /// Client `CN=lab-sender` issued by the untrusted CA.
    pub wrong_ca: Leaf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let ca = Ca::new(d, "ca.pem", "mllp test root");
        let other_ca = Ca::new(d, "other-ca.pem", "somebody else's root");
        let server = ca.issue(d, &LeafSpec::server("server"));
        let client = ca.issue(
            d,
            &LeafSpec {
                dns: &["lab.example.org"],
                ..LeafSpec::client("client", "lab-sender")
            },
        );
        let intruder = ca.issue(d, &LeafSpec::client("intruder", "intruder"));
        let san_only = ca.issue(
            d,
            &LeafSpec {
                cn: None,
                dns: &["ris.example.org", "ris2.example.org"],
                ..LeafSpec::client("san-only", "")
            },
        );
        let expired = ca.issue(
            d,
            &LeafSpec {
                expired: true,
                ..LeafSpec::client("expired", "lab-sender")
            },
        );
        let wrong_ca = other_ca.issue(d, &LeafSpec::client("wrong-ca", "lab-sender"));
        Pki {
            dir,
            ca,
            other_ca,
            server,
            client,
            intruder,
            san_only,
            expired,
            wrong_ca,
        }
    }

    /// A path inside the temp directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

impl Pki {
    /// A bare tokio-rustls client trusting the test CA: unlike the crate's own client stream,
    /// it reports a missing `close_notify` as `UnexpectedEof`, so tests can tell the two apart.
    #[allow(dead_code)]
    pub fn raw_client(&self) -> tokio_rustls::TlsConnector {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_file(&self.ca.cert).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
    }
}
