//! Parsing the client certificates nats-server forwards (PEM), so that plugins get the
//! subject, CNs and SANs without carrying an ASN.1 parser each.

use nats_callout_sdk::Certificate;
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

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
    let mut out = Certificate {
        pem: pem.to_owned(),
        subject: rfc4514(&cert),
        common_names: cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
            .collect(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        fingerprint_sha256: hex(&Sha256::digest(&block.contents)),
        ..Default::default()
    };
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

/// RFC 4514 order is most-specific first (`CN=...,O=...`), the reverse of the DER
/// sequence; x509-parser prints DER order, so build the string here.
fn rfc4514(cert: &X509Certificate<'_>) -> String {
    let rdns: Vec<String> = cert
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let key = x509_parser::objects::oid2abbrev(
                        atv.attr_type(),
                        x509_parser::objects::oid_registry(),
                    )
                    .map(str::to_owned)
                    .unwrap_or_else(|_| atv.attr_type().to_id_string());
                    let value = atv.as_str().unwrap_or("");
                    format!("{key}={}", escape_dn_value(value))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == v.chars().count() - 1 && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
