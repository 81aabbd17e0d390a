//! A throwaway PKI for TLS tests, made with rcgen: CAs, a server certificate for
//! 127.0.0.1, and client certificates of any shape (expired, several CNs, SANs), written
//! as PEM files for nats-server and the clients.

use std::path::{Path, PathBuf};

use anyhow::Result;
pub use rcgen;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// A certificate authority that can issue certificates.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// An issued certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Paths of an [`Issued`] written to disk.
#[derive(Clone, Debug)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// A self-signed root, `CN=<cn>,O=nats-callout tests`.
    pub fn new(cn: &str) -> Result<Self> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "nats-callout tests");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(365);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(365);
        let key = KeyPair::generate()?;
        let pem = params.self_signed(&key)?.pem();
        Ok(Self {
            pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Sign `params` with this CA (fresh P-256 key).
    pub fn issue(&self, params: &CertificateParams) -> Result<Issued> {
        let key = KeyPair::generate()?;
        Ok(Issued {
            cert_pem: params.signed_by(&key, &self.issuer)?.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A TLS server certificate for `127.0.0.1` and `localhost`.
    pub fn server(&self) -> Result<Issued> {
        let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "nats-server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        valid_now(&mut params);
        self.issue(&params)
    }

    /// A client certificate whose subject is `CN=<cn>`, valid now, EKU clientAuth.
    pub fn client(&self, cn: &str) -> Result<Issued> {
        self.issue(&client_params(&[(DnType::CommonName, cn)], &[]))
    }
}

/// Parameters of a client certificate valid from yesterday for 30 days, EKU clientAuth,
/// with `subject` in DER order (most general first: `O` then `CN` prints as `CN=..,O=..`).
pub fn client_params(subject: &[(DnType, &str)], sans: &[SanType]) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    for (ty, value) in subject {
        params.distinguished_name.push(ty.clone(), *value);
    }
    params.subject_alt_names = sans.to_vec();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    valid_now(&mut params);
    params
}

fn valid_now(params: &mut CertificateParams) {
    params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
    params.not_after = OffsetDateTime::now_utc() + Duration::days(30);
}

/// Make `params` a certificate that expired yesterday.
pub fn expired(params: &mut CertificateParams) {
    params.not_before = OffsetDateTime::now_utc() - Duration::days(30);
    params.not_after = OffsetDateTime::now_utc() - Duration::days(1);
}

impl Issued {
    /// Write `<name>.pem` and `<name>-key.pem` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> Result<Files> {
        let files = Files {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&files.cert, &self.cert_pem)?;
        std::fs::write(&files.key, &self.key_pem)?;
        Ok(files)
    }
}

/// Write PEM certificates concatenated into one bundle file.
pub fn write_bundle(path: &Path, pems: &[&str]) -> Result<PathBuf> {
    std::fs::write(path, pems.concat())?;
    Ok(path.to_path_buf())
}
