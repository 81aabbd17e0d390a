//! Client certificates: parsing the chain nats-server forwards (PEM), so that plugins get
//! the subject, CNs and SANs without carrying an ASN.1 parser each; and verifying a chain
//! against the operator's CA bundle (`verify-certificate-chain`), natively, with
//! rustls-webpki: path building to a trust anchor, validity now, EKU clientAuth.

use std::path::Path;

use nats_callout_sdk::Certificate;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use sha2::{Digest, Sha256};
use x509_parser::asn1_rs::{Any, Tag, ToDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate {0} is not valid PEM")]
    Pem(usize),
    #[error("certificate {0} is not a valid X.509 certificate")]
    Der(usize),
}

/// Parse a PEM chain, leaf first. `index` in errors is the position in the chain.
pub fn parse_chain(chain: &[String]) -> Result<Vec<Certificate>, CertError> {
    chain
        .iter()
        .enumerate()
        .map(|(i, pem)| parse_pem(i, pem))
        .collect()
}

fn parse_pem(index: usize, pem: &str) -> Result<Certificate, CertError> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|_| CertError::Pem(index))?;
    let (_, cert) =
        X509Certificate::from_der(&block.contents).map_err(|_| CertError::Der(index))?;
    let mut out = Certificate::default();
    out.pem = pem.to_owned();
    out.subject = rfc4514(cert.subject());
    // Every CN, whatever its string type: a CN the parser could not read must still
    // count, or a two-CN certificate would pass for a one-CN one.
    out.common_names = cert
        .subject()
        .iter_common_name()
        .map(|cn| attr_value(cn.attr_value()).unwrap_or_else(|| hex_value(cn)))
        .collect();
    out.not_before = cert.validity().not_before.timestamp();
    out.not_after = cert.validity().not_after.timestamp();
    out.fingerprint_sha256 = hex(&Sha256::digest(&block.contents));
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(s) => out.dns_sans.push((*s).to_owned()),
                GeneralName::URI(s) => out.uri_sans.push((*s).to_owned()),
                GeneralName::RFC822Name(s) => out.email_sans.push((*s).to_owned()),
                GeneralName::IPAddress(b) => {
                    if let Some(ip) = ip_from_bytes(b) {
                        out.ip_sans.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// The subject as an RFC 4514 string, the form `openssl x509 -noout -subject -nameopt
/// RFC2253` prints, so operators can copy it into an `identity`: most-specific RDN first
/// (`CN=...,O=...`, the reverse of the DER sequence), multi-valued RDNs joined by `+`.
///
/// Attribute names are RFC 4514's (`CN`, `L`, `ST`, `O`, `OU`, `C`, `STREET`, `DC`, `UID`)
/// plus OpenSSL's spelling of a few common in device certificates (`emailAddress`,
/// `serialNumber`, ...). Any other attribute, and any value that is not a character
/// string, is written as RFC 4514 §2.4 prescribes: dotted OID and `#` + hex of the DER
/// value, which is unambiguous even if unreadable.
pub fn rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    match (attr_name(&oid), attr_value(atv.attr_value())) {
                        (Some(key), Some(value)) => {
                            format!("{key}={}", nats_callout_sdk::cert::escape_dn_value(&value))
                        }
                        _ => format!("{oid}={}", hex_value(atv)),
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// Short names written for known attribute types (by dotted OID).
fn attr_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "2.5.4.5" => "serialNumber",
        "2.5.4.17" => "postalCode",
        "2.5.4.12" => "title",
        "2.5.4.42" => "GN",
        "2.5.4.4" => "SN",
        _ => return None,
    })
}

/// The value of a directory string as text, for the string types X.520 allows (Go's
/// crypto/x509 reads the same set). `None` for anything else or a malformed encoding.
fn attr_value(value: &Any<'_>) -> Option<String> {
    let data: &[u8] = value.data;
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_owned),
        Tag::BmpString => {
            if !data.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        Tag::UniversalString => {
            if !data.len().is_multiple_of(4) {
                return None;
            }
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        // T.61 in practice carries Latin-1, as Go and OpenSSL read it.
        Tag::TeletexString => Some(data.iter().map(|&b| char::from(b)).collect()),
        _ => None,
    }
}

/// `#` + hex of the DER value (RFC 4514 §2.4).
fn hex_value(atv: &AttributeTypeAndValue<'_>) -> String {
    match atv.attr_value().to_der_vec() {
        Ok(der) => format!("#{}", hex(&der)),
        Err(_) => "#".to_owned(),
    }
}

fn ip_from_bytes(b: &[u8]) -> Option<std::net::IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a PEM certificate's DER, lowercase hex: `openssl x509 -fingerprint
/// -sha256` without the colons. The identity a certificate is revoked and audited by.
pub fn fingerprint(pem: &str) -> Option<String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    Some(hex(&Sha256::digest(&block.contents)))
}

/// Longest chain accepted for verification. Real client chains are two or three
/// certificates; the cap bounds what a plugin can make the host parse.
pub const MAX_CHAIN_LEN: usize = 8;

/// Why the CA bundle could not be loaded. Fatal at start and on reload: running without
/// the operator's CA would silently drop a check they asked for.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read CA bundle {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("CA bundle {path}: {message}")]
    Invalid { path: String, message: String },
}

/// Why a client chain does not verify. The text goes to the deny reason, so it says what
/// an operator needs to fix (which CA, which date), never key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("the certificate chain is empty")]
    Empty,
    #[error("the certificate chain has {0} certificates; at most {MAX_CHAIN_LEN} are accepted")]
    TooLong(usize),
    #[error("certificate {0} of the chain is not valid PEM")]
    Pem(usize),
    #[error("the client certificate is not a valid X.509 certificate")]
    BadLeaf,
    #[error("the client certificate is not issued by a CA in the configured CA bundle")]
    UnknownIssuer,
    #[error("a certificate in the chain expired at {}", rfc3339(*.0))]
    Expired(i64),
    #[error("a certificate in the chain is not valid before {}", rfc3339(*.0))]
    NotYetValid(i64),
    #[error(
        "the client certificate is not valid for TLS client authentication (extended key usage lacks clientAuth)"
    )]
    NotForClientAuth,
    #[error("the client certificate is a CA certificate, not a client certificate")]
    CaAsClient,
    #[error("a signature in the chain does not verify")]
    BadSignature,
    #[error("the certificate chain does not verify: {0}")]
    Other(String),
}

/// Trust anchors for client certificates: the operator's CA bundle (`mtls.ca_file`).
pub struct CaBundle {
    anchors: Vec<TrustAnchor<'static>>,
    subjects: Vec<String>,
    algorithms: &'static [&'static dyn SignatureVerificationAlgorithm],
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("subjects", &self.subjects)
            .finish()
    }
}

impl CaBundle {
    /// Every `CERTIFICATE` block of a PEM file; other blocks (keys) are ignored.
    pub fn load(path: &Path) -> Result<Self, CaError> {
        let pem = std::fs::read(path).map_err(|source| CaError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_pem(&pem).map_err(|message| CaError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// The bundle from PEM text; the error says what is wrong with it.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let mut anchors = Vec::new();
        let mut subjects = Vec::new();
        for (i, der) in CertificateDer::pem_slice_iter(pem).enumerate() {
            let der = der.map_err(|e| format!("certificate {i} is not valid PEM: {e}"))?;
            let (_, cert) = X509Certificate::from_der(&der)
                .map_err(|_| format!("certificate {i} is not a valid X.509 certificate"))?;
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| format!("certificate {i} cannot be a trust anchor: {e:?}"))?;
            anchors.push(anchor.to_owned());
            subjects.push(rfc4514(cert.subject()));
        }
        if anchors.is_empty() {
            return Err("no PEM certificate found".into());
        }
        Ok(Self {
            anchors,
            subjects,
            algorithms: rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .all,
        })
    }

    /// Subjects of the CAs, for the startup log.
    pub fn subjects(&self) -> &[String] {
        &self.subjects
    }

    /// Verify a PEM chain (leaf first; the rest are path-building hints, trust comes only
    /// from the bundle) for TLS client authentication at `now`, unix seconds.
    ///
    /// EKU: a leaf without the extension is accepted, one with it must list clientAuth;
    /// the rule Go (nats-server) applies at the handshake. No revocation checking: CRLs
    /// and OCSP are nats-server's (`tls { ocsp_peer ... }`).
    pub fn verify(&self, chain: &[String], now: i64) -> Result<(), ChainError> {
        if chain.is_empty() {
            return Err(ChainError::Empty);
        }
        if chain.len() > MAX_CHAIN_LEN {
            return Err(ChainError::TooLong(chain.len()));
        }
        let ders = chain
            .iter()
            .enumerate()
            .map(|(i, pem)| {
                CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|_| ChainError::Pem(i))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let leaf = webpki::EndEntityCert::try_from(&ders[0]).map_err(|_| ChainError::BadLeaf)?;
        let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(now).unwrap_or(0),
        ));
        leaf.verify_for_usage(
            self.algorithms,
            &self.anchors,
            &ders[1..],
            time,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map(|_| ())
        .map_err(chain_error)
    }
}

fn chain_error(e: webpki::Error) -> ChainError {
    let secs = |t: UnixTime| i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    #[allow(deprecated)] // RequiredEkuNotFound: older spelling, still matched for safety
    match e {
        webpki::Error::UnknownIssuer => ChainError::UnknownIssuer,
        webpki::Error::CertExpired { not_after, .. } => ChainError::Expired(secs(not_after)),
        webpki::Error::CertNotValidYet { not_before, .. } => {
            ChainError::NotYetValid(secs(not_before))
        }
        webpki::Error::RequiredEkuNotFound | webpki::Error::RequiredEkuNotFoundContext(_) => {
            ChainError::NotForClientAuth
        }
        webpki::Error::CaUsedAsEndEntity => ChainError::CaAsClient,
        webpki::Error::InvalidSignatureForPublicKey => ChainError::BadSignature,
        other => ChainError::Other(format!("{other:?}")),
    }
}

pub use nats_callout_sdk::cert::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
        ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType, date_time_ymd,
    };

    const NOW: i64 = 1_750_000_000; // 2025-06-15

    struct Ca {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(cn: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Test");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(ca: &Ca, edit: impl FnOnce(&mut CertificateParams)) -> String {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "bms.cpc-1");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = date_time_ymd(2025, 1, 1);
        params.not_after = date_time_ymd(2026, 1, 1);
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, &ca.issuer).unwrap().pem()
    }

    #[test]
    fn chain_verification() {
        let ca1 = ca("CA one");
        let ca2 = ca("CA two");
        let bundle = CaBundle::from_pem(ca1.pem.as_bytes()).unwrap();
        assert_eq!(bundle.subjects(), ["CN=CA one,O=Test"]);
        let good = leaf(&ca1, |_| {});

        bundle.verify(std::slice::from_ref(&good), NOW).unwrap();
        // nats-server's verified chain ends with the root; that is fine too.
        bundle
            .verify(&[good.clone(), ca1.pem.clone()], NOW)
            .unwrap();

        let foreign = leaf(&ca2, |_| {});
        assert_eq!(
            bundle.verify(std::slice::from_ref(&foreign), NOW),
            Err(ChainError::UnknownIssuer)
        );
        // A foreign chain cannot smuggle its own root in as an intermediate.
        assert_eq!(
            bundle.verify(&[foreign, ca2.pem.clone()], NOW),
            Err(ChainError::UnknownIssuer)
        );

        let expired = bundle.verify(std::slice::from_ref(&good), 1_800_000_000);
        assert_eq!(expired, Err(ChainError::Expired(1_767_225_600)));
        assert_eq!(
            expired.unwrap_err().to_string(),
            "a certificate in the chain expired at 2026-01-01T00:00:00Z"
        );
        let early = bundle.verify(std::slice::from_ref(&good), 1_700_000_000);
        assert_eq!(early, Err(ChainError::NotYetValid(1_735_689_600)));
        assert!(
            early
                .unwrap_err()
                .to_string()
                .contains("2025-01-01T00:00:00Z")
        );

        let server_only = leaf(&ca1, |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
        });
        assert_eq!(
            bundle.verify(&[server_only], NOW),
            Err(ChainError::NotForClientAuth)
        );
        // No EKU at all is accepted, as Go accepts it.
        let no_eku = leaf(&ca1, |p| p.extended_key_usages.clear());
        bundle.verify(&[no_eku], NOW).unwrap();

        // Both CAs in the bundle: both verify.
        let both = CaBundle::from_pem(format!("{}{}", ca1.pem, ca2.pem).as_bytes()).unwrap();
        both.verify(&[leaf(&ca2, |_| {})], NOW).unwrap();
        assert_eq!(both.subjects().len(), 2);
    }

    #[test]
    fn hostile_chains_are_refused_cleanly() {
        let ca1 = ca("CA one");
        let bundle = CaBundle::from_pem(ca1.pem.as_bytes()).unwrap();
        assert_eq!(bundle.verify(&[], NOW), Err(ChainError::Empty));
        assert_eq!(
            bundle.verify(&["not pem".into()], NOW),
            Err(ChainError::Pem(0))
        );
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(
            bundle.verify(&[garbage.into()], NOW),
            Err(ChainError::BadLeaf)
        );
        let good = leaf(&ca1, |_| {});
        assert_eq!(
            bundle.verify(&vec![good; MAX_CHAIN_LEN + 1], NOW),
            Err(ChainError::TooLong(MAX_CHAIN_LEN + 1))
        );
        // The CA itself presented as a client certificate.
        assert!(bundle.verify(std::slice::from_ref(&ca1.pem), NOW).is_err());
    }

    #[test]
    fn bundle_errors() {
        let e = CaBundle::from_pem(b"").unwrap_err();
        assert_eq!(e, "no PEM certificate found");
        let key_only = KeyPair::generate().unwrap().serialize_pem();
        assert!(CaBundle::from_pem(key_only.as_bytes()).is_err());
        let e = CaBundle::load(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read CA bundle /nonexistent/ca.pem")
        );
    }

    #[test]
    fn parsing_subject_cns_and_sans() {
        let ca1 = ca("CA one");
        let pem = leaf(&ca1, |p| {
            p.distinguished_name = DistinguishedName::new();
            p.distinguished_name.push(DnType::CountryName, "DE");
            p.distinguished_name
                .push(DnType::OrganizationName, "Acme, Inc.");
            p.distinguished_name
                .push(DnType::OrganizationalUnitName, " Building #1 ");
            p.distinguished_name.push(DnType::CommonName, "bms.cpc-1");
            p.distinguished_name.push(
                DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
                DnValue::Ia5String("ops@example.org".try_into().unwrap()),
            );
            p.subject_alt_names = vec![
                SanType::DnsName("bms.example.org".try_into().unwrap()),
                SanType::URI("spiffe://example.org/bms/cpc-1".try_into().unwrap()),
                SanType::Rfc822Name("dev@example.org".try_into().unwrap()),
                SanType::IpAddress("10.0.0.7".parse().unwrap()),
                SanType::IpAddress("::1".parse().unwrap()),
            ];
        });
        let certs = parse_chain(&[pem.clone(), ca1.pem.clone()]).unwrap();
        let c = &certs[0];
        assert_eq!(
            c.subject,
            r"emailAddress=ops@example.org,CN=bms.cpc-1,OU=\ Building #1\ ,O=Acme\, Inc.,C=DE"
        );
        assert_eq!(c.common_names, ["bms.cpc-1"]);
        assert_eq!(c.dns_sans, ["bms.example.org"]);
        assert_eq!(c.uri_sans, ["spiffe://example.org/bms/cpc-1"]);
        assert_eq!(c.email_sans, ["dev@example.org"]);
        assert_eq!(c.ip_sans, ["10.0.0.7", "::1"]);
        assert_eq!(c.not_before, 1_735_689_600);
        assert_eq!(c.not_after, 1_767_225_600);
        assert_eq!(c.fingerprint_sha256.len(), 64);
        assert_eq!(certs[1].subject, "CN=CA one,O=Test");

        // Same string as OpenSSL's RFC 2253 output, when openssl is installed.
        if let Ok(out) = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child.stdin.take().unwrap().write_all(pem.as_bytes())?;
                child.wait_with_output()
            })
            && out.status.success()
        {
            let printed = String::from_utf8(out.stdout).unwrap();
            assert_eq!(printed.trim(), format!("subject={}", c.subject));
        }
    }

    #[test]
    fn every_common_name_counts_whatever_its_string_type() {
        let ca1 = ca("CA one");
        let pem = leaf(&ca1, |p| {
            p.distinguished_name = DistinguishedName::new();
            p.distinguished_name.push(DnType::CommonName, "bms.cpc-1");
            p.distinguished_name.push(
                DnType::CustomDnType(vec![2, 5, 4, 3]),
                DnValue::BmpString("admin".try_into().unwrap()),
            );
        });
        let c = &parse_chain(&[pem]).unwrap()[0];
        assert_eq!(c.common_names, ["bms.cpc-1", "admin"]);
        assert_eq!(c.subject, "CN=admin,CN=bms.cpc-1");
    }

    #[test]
    fn escaping_and_dates() {
        assert_eq!(
            nats_callout_sdk::cert::escape_dn_value("#a=b;c"),
            r"\#a=b\;c"
        );
        assert_eq!(nats_callout_sdk::cert::escape_dn_value("a\nb"), r"a\0Ab");
        assert_eq!(nats_callout_sdk::cert::escape_dn_value("x "), r"x\ ");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
    }
}
