//! What-if experiments: run the same benchmark with one change to how the host works,
//! without changing the host's code, to size a proposed optimisation before anyone
//! implements it. Never used in the numbers written to BENCHMARKS.md's generated block.
//!
//! `ring-jwt`: jsonwebtoken (the host's access-token verification) verifies RS256 and
//! ES256 with ring instead of its RustCrypto backend, through jsonwebtoken's own
//! process-wide `CryptoProvider` hook. Everything else (claims rules, key pinning, the
//! other algorithms) is unchanged.

use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier};
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WhatIf {
    /// Verify RS256/ES256 access tokens with ring (jsonwebtoken `CryptoProvider`).
    RingJwt,
}

impl WhatIf {
    pub fn as_str(self) -> &'static str {
        match self {
            WhatIf::RingJwt => "ring-jwt",
        }
    }

    /// Apply the change to this process. Call before any token is verified.
    pub fn install(self) -> anyhow::Result<()> {
        match self {
            WhatIf::RingJwt => {
                let provider: &'static CryptoProvider = Box::leak(Box::new(CryptoProvider {
                    verifier_factory: ring_verifier,
                    ..jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.clone()
                }));
                provider.install_default().map_err(|_| {
                    anyhow::anyhow!("a jsonwebtoken CryptoProvider is already installed")
                })
            }
        }
    }
}

enum RingKey {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    P256(Vec<u8>),
}

struct RingVerifier {
    algorithm: Algorithm,
    key: RingKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), signature::Error> {
        let ok = match &self.key {
            RingKey::Rsa { n, e } => ring::signature::RsaPublicKeyComponents { n, e }
                .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
                .is_ok(),
            RingKey::P256(point) => ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                point,
            )
            .verify(msg, sig)
            .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

/// ring for RS256 with a modulus/exponent key and ES256 with an uncompressed P-256
/// point (how `DecodingKey::from_jwk` stores JWKS keys); RustCrypto for the rest.
fn ring_verifier(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    let ring_key = match (algorithm, key.kind()) {
        (Algorithm::RS256, DecodingKeyKind::RsaModulusExponent { n, e }) => Some(RingKey::Rsa {
            n: n.clone(),
            e: e.clone(),
        }),
        (Algorithm::ES256, DecodingKeyKind::SecretOrDer(point))
            if point.len() == 65 && point[0] == 0x04 =>
        {
            Some(RingKey::P256(point.clone()))
        }
        _ => None,
    };
    match ring_key {
        Some(key) => Ok(Box::new(RingVerifier {
            algorithm: *algorithm,
            key,
        })),
        None => {
            (jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.verifier_factory)(algorithm, key)
        }
    }
}
