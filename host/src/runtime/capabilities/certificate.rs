//! `verify-certificate-chain`: a client certificate chain against the operator's CA
//! bundle (`mtls.ca_file`), natively (`identity::x509`).

use super::Capabilities;

impl Capabilities {
    /// A client certificate chain (PEM, leaf first), verified against the configured CA
    /// bundle now: path to a trust anchor, validity, EKU clientAuth. Without a bundle
    /// there is nothing to verify against, which is an error, never a silent success.
    pub fn verify_certificate_chain(&self, chain: &[String]) -> Result<(), String> {
        match &self.ca {
            Some(ca) => ca
                .verify(chain, crate::pipeline::request::unix_now())
                .map_err(|e| e.to_string()),
            None => Err(format!(
                "no CA bundle is configured for plugin {:?} (set mtls.ca_file or AUTH_CALLOUT_MTLS_CA_PATH)",
                self.plugin
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::identity::x509::CaBundle;

    #[test]
    fn chain_verification_needs_a_ca_bundle() {
        let caps = Capabilities::new("mtls/mtls");
        let e = caps.verify_certificate_chain(&[]).unwrap_err();
        assert!(
            e.starts_with("no CA bundle is configured for plugin \"mtls/mtls\""),
            "{e}"
        );
        let ca = rcgen::generate_simple_self_signed(vec!["ca".to_owned()]).unwrap();
        let bundle = CaBundle::from_pem(ca.cert.pem().as_bytes()).unwrap();
        let caps = caps.with_ca(Some(Arc::new(bundle)));
        assert_eq!(
            caps.verify_certificate_chain(&[]),
            Err("the certificate chain is empty".into())
        );
        // Real verification is in x509's tests; here: the answer comes from the bundle.
        // rcgen names every simple certificate alike: same issuer name, another key.
        let forged = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
        assert_eq!(
            caps.verify_certificate_chain(&[forged.cert.pem()]),
            Err("a signature in the chain does not verify".into())
        );
    }
}
