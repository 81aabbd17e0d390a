//! `verify-nkey-signature`: the SDK's rules of an NKey signature (one copy, which the
//! plugins' native tests use too), with the host's ed25519 (aws-lc-rs, parsed keys
//! cached: `nats::keys`).

use nats_callout_sdk::nkey::verify_user_signature_with;

use super::Capabilities;

/// A user NKey's signature as nats-server checks it. Also the host's own check of a
/// client's signature over the server nonce.
pub fn verify_nkey_signature(
    public_key: &str,
    payload: &[u8],
    signature: &str,
) -> Result<(), String> {
    verify_user_signature_with(public_key, payload, signature, |key, payload, sig| {
        crate::nats::keys::public_key(key).is_ok_and(|k| k.verify(payload, sig).is_ok())
    })
    .map_err(|e| e.to_string())
}

impl Capabilities {
    /// The `verify-nkey-signature` capability: [`verify_nkey_signature`].
    pub fn verify_nkey_signature(
        &self,
        public_key: &str,
        payload: &[u8],
        signature: &str,
    ) -> Result<(), String> {
        verify_nkey_signature(public_key, payload, signature)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    /// The host and the SDK's TestHost accept and refuse the same signatures, with the
    /// same words: the rules are the SDK's, only the ed25519 code differs.
    #[test]
    fn the_same_answers_as_the_sdk() {
        let kp = nkeys::KeyPair::new_user();
        let good = URL_SAFE_NO_PAD.encode(kp.sign(b"nonce").unwrap());
        let other = URL_SAFE_NO_PAD.encode(nkeys::KeyPair::new_user().sign(b"nonce").unwrap());
        let account = nkeys::KeyPair::new_account();
        let by_account = URL_SAFE_NO_PAD.encode(account.sign(b"nonce").unwrap());
        for (key, sig) in [
            (kp.public_key(), good.clone()),
            (kp.public_key(), other),
            (kp.public_key(), "!!".into()),
            (account.public_key(), by_account),
            ("UBAD".into(), good),
        ] {
            let sdk = nats_callout_sdk::nkey::verify_user_signature(&key, b"nonce", &sig)
                .map_err(|e| e.to_string());
            assert_eq!(
                verify_nkey_signature(&key, b"nonce", &sig),
                sdk,
                "{key} {sig}"
            );
        }
    }
}
