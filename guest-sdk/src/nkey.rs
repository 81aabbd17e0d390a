//! NKey signatures as nats-server checks them (feature `nkey`): a user key, and the
//! signature in any of the four base64 spellings clients send (URL-safe or standard
//! alphabet, padded or not). One copy of the rules and their messages, used by the host
//! (`verify-nkey-signature`, and its own check of a client's nonce signature) and by
//! [`crate::testing::TestHost`], so that a plugin's native tests accept and refuse
//! exactly what the host does.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use nkeys::KeyPairType;

/// Why a signature was refused. The messages are what plugins and logs show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("nkey is not a valid public key")]
    InvalidKey,
    #[error("nkey is not a user key (U...)")]
    NotUserKey,
    #[error("signature is not valid base64")]
    NotBase64,
    #[error("signature does not verify")]
    Mismatch,
}

/// Checks `signature` over `payload` by the user key `public_key` with the `nkeys` crate.
pub fn verify_user_signature(
    public_key: &str,
    payload: &[u8],
    signature: &str,
) -> Result<(), SignatureError> {
    verify_user_signature_with(public_key, payload, signature, |key, payload, sig| {
        nkeys::KeyPair::from_public_key(key)
            .ok()
            .is_some_and(|k| k.verify(payload, sig).is_ok())
    })
}

/// The same rules with another ed25519 implementation: `verify(public_key, payload,
/// raw_signature)` says whether the signature holds (the host's is aws-lc-rs, with
/// parsed keys cached).
pub fn verify_user_signature_with(
    public_key: &str,
    payload: &[u8],
    signature: &str,
    verify: impl FnOnce(&str, &[u8], &[u8]) -> bool,
) -> Result<(), SignatureError> {
    let (prefix, _) = nkeys::from_public_key(public_key).map_err(|_| SignatureError::InvalidKey)?;
    if KeyPairType::from(prefix) != KeyPairType::User {
        return Err(SignatureError::NotUserKey);
    }
    let sig = [URL_SAFE_NO_PAD, STANDARD, URL_SAFE, STANDARD_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(signature.trim()).ok())
        .ok_or(SignatureError::NotBase64)?;
    if verify(public_key, payload, &sig) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nkeys::KeyPair;

    #[test]
    fn every_base64_spelling_and_only_user_keys() {
        let user = KeyPair::new_user();
        let raw = user.sign(b"nonce").unwrap();
        for engine in [URL_SAFE_NO_PAD, URL_SAFE, STANDARD_NO_PAD, STANDARD] {
            verify_user_signature(&user.public_key(), b"nonce", &engine.encode(&raw)).unwrap();
        }
        let sig = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(
            verify_user_signature(&user.public_key(), b"other", &sig),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_user_signature(&KeyPair::new_user().public_key(), b"nonce", &sig),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_user_signature(&user.public_key(), b"nonce", "!!"),
            Err(SignatureError::NotBase64)
        );
        // A good signature by a key of another type is refused for its type.
        let account = KeyPair::new_account();
        let signed = URL_SAFE_NO_PAD.encode(account.sign(b"n").unwrap());
        assert_eq!(
            verify_user_signature(&account.public_key(), b"n", &signed),
            Err(SignatureError::NotUserKey)
        );
        assert_eq!(
            verify_user_signature("UBAD", b"n", &signed),
            Err(SignatureError::InvalidKey)
        );
    }
}
