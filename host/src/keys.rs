//! NKey material: the three seeds this service holds, and a cache of parsed public keys.
//!
//! Seeds come from a file or an environment variable, never from the YAML, and are
//! never formatted: `nkeys::KeyPair`'s `Debug` prints only the key type.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

use nkeys::{KeyPair, KeyPairType, XKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{what}: cannot read {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: not a valid seed (expected one starting with {prefix})")]
    Invalid {
        what: &'static str,
        prefix: &'static str,
    },
    #[error("{what}: is a {found} seed, expected one starting with {prefix}")]
    WrongType {
        what: &'static str,
        found: String,
        prefix: &'static str,
    },
    #[error("{what}: set a file path in the config or the environment variable {env}")]
    Missing {
        what: &'static str,
        env: &'static str,
    },
}

/// Where a seed comes from: the environment variable wins over the file, so a
/// Kubernetes `secretKeyRef` can override a mounted default.
pub struct SeedSource<'a> {
    pub what: &'static str,
    pub env: &'static str,
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
            what: self.what,
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
            what: self.what,
            prefix,
        })?;
        if kp.key_pair_type() != expected {
            return Err(KeyError::WrongType {
                what: self.what,
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
                what: self.what,
                prefix: "SX",
            })
    }

    pub fn required<T>(&self, v: Option<T>) -> Result<T, KeyError> {
        v.ok_or(KeyError::Missing {
            what: self.what,
            env: self.env,
        })
    }
}

/// How many parsed public keys to keep. Server ids and client NKeys repeat across
/// connections; parsing one costs a base32 decode, a CRC and a curve-point
/// decompression (~20 us), far more than a map lookup. 4096 covers a large fleet of
/// servers plus the busiest NKey clients; beyond it the cache is simply cleared.
const PUBLIC_KEY_CACHE: usize = 4096;

/// Parse a public key (`N...`, `U...`, `A...`), cached.
pub fn public_key(key: &str) -> Result<Arc<KeyPair>, nkeys::error::Error> {
    static CACHE: OnceLock<RwLock<HashMap<String, Arc<KeyPair>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Ok(map) = cache.read()
        && let Some(kp) = map.get(key)
    {
        return Ok(kp.clone());
    }
    let kp = Arc::new(KeyPair::from_public_key(key)?);
    if let Ok(mut map) = cache.write() {
        if map.len() >= PUBLIC_KEY_CACHE {
            map.clear();
        }
        map.insert(key.to_owned(), kp.clone());
    }
    Ok(kp)
}

/// Is `key` a public key of this type? (e.g. the server id must be an `N...` key.)
pub fn is_public_key_of(key: &str, kind: KeyPairType) -> bool {
    public_key(key).is_ok_and(|k| k.key_pair_type() == kind)
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
    fn public_keys_are_typed() {
        let server = KeyPair::new_server();
        assert!(is_public_key_of(&server.public_key(), KeyPairType::Server));
        assert!(!is_public_key_of(&server.public_key(), KeyPairType::User));
        assert!(!is_public_key_of("garbage", KeyPairType::Server));
    }
}
