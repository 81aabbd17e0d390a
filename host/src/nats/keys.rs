//! NKey material: the three seeds this service holds, and parsed public keys (cached).
//!
//! Seeds come from a file or an environment variable, never from the YAML, and are
//! never formatted: `nkeys::KeyPair`'s `Debug` prints only the key type.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

use aws_lc_rs::error::Unspecified;
use aws_lc_rs::signature::{ED25519, ParsedPublicKey};
use nkeys::{KeyPair, KeyPairType, XKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{what}: cannot read {path}: {source}")]
    Read {
        what: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: not a valid seed (expected one starting with {prefix})")]
    Invalid { what: String, prefix: &'static str },
    #[error("{what}: is a {found} seed, expected one starting with {prefix}")]
    WrongType {
        what: String,
        found: String,
        prefix: &'static str,
    },
    #[error("{what}: set a file path in the config or the environment variable {env}")]
    Missing { what: String, env: String },
}

/// Where a seed comes from: the environment variable wins over the file, so a
/// Kubernetes `secretKeyRef` can override a mounted default.
pub struct SeedSource<'a> {
    pub what: &'a str,
    pub env: &'a str,
    pub file: Option<&'a Path>,
}

impl SeedSource<'_> {
    /// The seed text, trimmed; `None` when neither the variable nor a file is set.
    fn read(&self) -> Result<Option<String>, KeyError> {
        if let Ok(v) = std::env::var(self.env)
            && !v.trim().is_empty()
        {
            return Ok(Some(v.trim().to_owned()));
        }
        let Some(path) = self.file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            what: self.what.to_owned(),
            path: path.display().to_string(),
            source,
        })?;
        // `nsc`/`nk` write the seed alone or inside a creds-like block; take the seed line.
        let seed = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with('S') && l.len() >= 58)
            .unwrap_or_else(|| text.trim());
        Ok(Some(seed.to_owned()))
    }

    /// An ed25519 seed of the given type (`SU...` user, `SA...` account).
    pub fn key_pair(&self, expected: KeyPairType) -> Result<Option<KeyPair>, KeyError> {
        let prefix = match expected {
            KeyPairType::User => "SU",
            KeyPairType::Account => "SA",
            _ => "S",
        };
        let Some(seed) = self.read()? else {
            return Ok(None);
        };
        let kp = KeyPair::from_seed(&seed).map_err(|_| KeyError::Invalid {
            what: self.what.to_owned(),
            prefix,
        })?;
        if kp.key_pair_type() != expected {
            return Err(KeyError::WrongType {
                what: self.what.to_owned(),
                found: format!("{:?}", kp.key_pair_type()),
                prefix,
            });
        }
        Ok(Some(kp))
    }

    /// A curve (xkey) seed, `SX...`.
    pub fn xkey(&self) -> Result<Option<XKey>, KeyError> {
        let Some(seed) = self.read()? else {
            return Ok(None);
        };
        XKey::from_seed(&seed)
            .map(Some)
            .map_err(|_| KeyError::Invalid {
                what: self.what.to_owned(),
                prefix: "SX",
            })
    }

    pub fn required<T>(&self, v: Option<T>) -> Result<T, KeyError> {
        v.ok_or(KeyError::Missing {
            what: self.what.to_owned(),
            env: self.env.to_owned(),
        })
    }
}

/// An NKey public key ready to verify with: its type, from the prefix, and the ed25519
/// key held by aws-lc-rs.
///
/// Verification is aws-lc-rs', the library that already signs our JWTs, rather than the
/// nkeys crate's (ed25519-dalek). Its cost hardly depends on where the stack sits, and
/// dalek's does: 6–28% slower at unlucky addresses in our runs, which is an accident of the
/// caller (a tokio worker, a wasmtime fiber at a fixed call depth) that moves with every
/// build. On a quiet benchmark machine aws-lc-rs is also 5–10% faster; on a contended one
/// (other guests on the same cores) it measured up to 27% slower, so speed alone does
/// not decide it (BENCHMARKS.md, primitives table, which times both in every run). The
/// string form (base32, CRC, prefix) is still decoded by nkeys.
pub struct PublicKey {
    kind: KeyPairType,
    key: ParsedPublicKey,
}

/// A string that is not an NKey public key (length, base32, checksum or prefix).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a valid NKey public key")]
pub struct InvalidPublicKey;

impl PublicKey {
    /// Decode `N...`, `U...`, `A...` (any public-key prefix). The curve point is not
    /// checked here: a key that is not one never verifies a signature.
    pub fn parse(text: &str) -> Result<Self, InvalidPublicKey> {
        let (prefix, bytes) = nkeys::from_public_key(text).map_err(|_| InvalidPublicKey)?;
        let key = ParsedPublicKey::new(&ED25519, bytes).map_err(|_| InvalidPublicKey)?;
        Ok(Self {
            kind: KeyPairType::from(prefix),
            key,
        })
    }

    pub fn kind(&self) -> KeyPairType {
        self.kind.clone()
    }

    /// Check an ed25519 signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Unspecified> {
        self.key.verify_sig(message, signature)
    }
}

/// How many parsed public keys to keep. Server ids and client NKeys repeat across
/// connections; a lookup (a hash and a read lock) is cheaper than the base32 decode,
/// CRC and key allocation of a parse. 4096 covers a large fleet of servers plus the
/// busiest NKey clients; beyond it the cache is simply cleared.
const PUBLIC_KEY_CACHE: usize = 4096;

/// Parse a public key that signs things we verify (a server id, a client's NKey), cached.
pub fn public_key(key: &str) -> Result<Arc<PublicKey>, InvalidPublicKey> {
    static CACHE: OnceLock<RwLock<HashMap<String, Arc<PublicKey>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Ok(map) = cache.read()
        && let Some(k) = map.get(key)
    {
        return Ok(k.clone());
    }
    let parsed = Arc::new(PublicKey::parse(key)?);
    if let Ok(mut map) = cache.write() {
        if map.len() >= PUBLIC_KEY_CACHE {
            map.clear();
        }
        map.insert(key.to_owned(), parsed.clone());
    }
    Ok(parsed)
}

/// Is `key` a public key of this type? (e.g. `user_nkey` must be a `U...` key.) Not
/// cached: `user_nkey` is a fresh key on every connection and would only churn the
/// cache of [`public_key`].
pub fn is_public_key_of(key: &str, kind: KeyPairType) -> bool {
    nkeys::from_public_key(key).is_ok_and(|(prefix, _)| KeyPairType::from(prefix) == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_file_is_typed() {
        let dir = tempfile::tempdir().unwrap();
        let user = KeyPair::new_user();
        let path = dir.path().join("seed");
        std::fs::write(&path, format!("{}\n", user.seed().unwrap())).unwrap();
        let src = SeedSource {
            what: "issuer seed",
            env: "NATS_CALLOUT_TEST_UNSET_VAR",
            file: Some(&path),
        };
        let err = src.key_pair(KeyPairType::Account).unwrap_err().to_string();
        assert!(err.contains("expected one starting with SA"), "{err}");
        assert!(!err.contains(&user.seed().unwrap()));
        let kp = src.key_pair(KeyPairType::User).unwrap().unwrap();
        assert_eq!(kp.public_key(), user.public_key());
    }

    #[test]
    fn public_key_verifies_its_own_signatures_only() {
        let server = KeyPair::new_server();
        let key = PublicKey::parse(&server.public_key()).unwrap();
        assert_eq!(key.kind(), KeyPairType::Server);
        let sig = server.sign(b"request").unwrap();
        assert!(key.verify(b"request", &sig).is_ok());
        assert!(key.verify(b"requesT", &sig).is_err());
        assert!(key.verify(b"request", &sig[..63]).is_err());
        let other = KeyPair::new_server().sign(b"request").unwrap();
        assert!(key.verify(b"request", &other).is_err());
        // A seed, a wrong checksum and garbage are not public keys.
        assert!(PublicKey::parse(&server.seed().unwrap()).is_err());
        let mut bad_crc = server.public_key();
        let last = if bad_crc.ends_with('A') { "B" } else { "A" };
        bad_crc.replace_range(55.., last);
        assert_eq!(PublicKey::parse(&bad_crc).err(), Some(InvalidPublicKey));
        assert!(PublicKey::parse("garbage").is_err());
    }

    #[test]
    fn public_keys_are_typed() {
        let server = KeyPair::new_server();
        assert!(is_public_key_of(&server.public_key(), KeyPairType::Server));
        assert!(!is_public_key_of(&server.public_key(), KeyPairType::User));
        assert!(!is_public_key_of("garbage", KeyPairType::Server));
        let user = KeyPair::new_user();
        assert!(is_public_key_of(&user.public_key(), KeyPairType::User));
        assert!(!is_public_key_of(&user.seed().unwrap(), KeyPairType::User));
        let cached = public_key(&user.public_key()).unwrap();
        assert_eq!(cached.kind(), KeyPairType::User);
        assert!(Arc::ptr_eq(
            &cached,
            &public_key(&user.public_key()).unwrap()
        ));
    }
}
