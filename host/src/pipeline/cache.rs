//! The decision cache: a client reconnecting with the same credential (the same access
//! token, the same certificate chain) gets its grant without another plugin call or
//! token verification. The user and response JWTs are still signed per connection:
//! `user_nkey` is new every time.
//!
//! What it assumes: an oauth2 or mtls plugin decides from what is in the key (the
//! mode; the credential: user, password, token, JWT, the verified chain; and the
//! client's name, host, kind, type and MQTT id), not from the clock or outside state
//! beyond the credential's own expiry, nor from the rest of the request (which server
//! asks, the client's tags, lang or version). The built-in plugins hold to that; a
//! partner plugin that does not must run with the cache off (`ttl: 0`). Only grants are
//! cached, never denies (a deny may be transient: the JWKS was unreachable); the cache
//! lives inside one [`Authorizer`], so a reload (new permissions, removed identities)
//! starts with an empty one.
//!
//! [`Authorizer`]: crate::pipeline::authorizer::Authorizer

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::nats::claims::AuthorizationRequest;
use crate::pipeline::decision::Grant;
use crate::pipeline::routing::Mode;

/// Cache key: SHA-256 over the request's decision-relevant parts.
pub type Key = [u8; 32];

struct Entry {
    grant: Grant,
    /// Unix seconds after which the entry must not be used.
    valid_until: i64,
}

pub struct DecisionCache {
    ttl: Duration,
    entries: Mutex<LruCache<Key, Entry>>,
}

impl DecisionCache {
    /// `None` when disabled (`ttl` zero or no room).
    pub fn new(ttl: Duration, max_entries: usize) -> Option<Self> {
        let cap = NonZeroUsize::new(max_entries)?;
        (!ttl.is_zero()).then(|| Self {
            ttl,
            entries: Mutex::new(LruCache::new(cap)),
        })
    }

    /// The key for this request, or `None` for modes whose credential never repeats
    /// (nkey: a signature over a fresh nonce) or costs nothing to decide (noauth).
    pub fn key(mode: Mode, req: &AuthorizationRequest) -> Option<Key> {
        if !matches!(mode, Mode::Oauth2 | Mode::Mtls) {
            return None;
        }
        let c = &req.connect_opts;
        let i = &req.client_info;
        let mut h = Sha256::new();
        // Length-prefixed fields: no two different requests hash the same input.
        let mut field = |s: &str| {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        field(mode.as_str());
        for s in [
            &c.user,
            &c.pass,
            &c.auth_token,
            &c.jwt,
            &c.name,
            &i.name,
            &i.host,
            &i.kind,
            &i.client_type,
            &i.mqtt_id,
        ] {
            field(s);
        }
        if let Some(chain) = req
            .client_tls
            .as_ref()
            .and_then(|t| t.verified_chains.first())
        {
            for pem in chain {
                field(pem);
            }
        }
        Some(h.finalize().into())
    }

    pub fn get(&self, key: &Key, now: i64) -> Option<Grant> {
        let mut entries = self.entries.lock().ok()?;
        match entries.get(key) {
            Some(e) if e.valid_until > now => Some(e.grant.clone()),
            Some(_) => {
                entries.pop(key);
                None
            }
            None => None,
        }
    }

    /// Remember a grant until the configured TTL or the grant's own expiry, whichever
    /// comes first.
    pub fn put(&self, key: Key, grant: &Grant, now: i64) {
        let ttl_end = now.saturating_add(self.ttl.as_secs() as i64);
        let valid_until = grant.expires_at.map_or(ttl_end, |exp| exp.min(ttl_end));
        if valid_until <= now {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            entries.put(
                key,
                Entry {
                    grant: grant.clone(),
                    valid_until,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::claims::ConnectOptions;

    fn req(token: &str) -> AuthorizationRequest {
        AuthorizationRequest {
            connect_opts: ConnectOptions {
                user: "oauthtoken".into(),
                pass: token.into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn bounded_by_expiry_and_size() {
        let cache = DecisionCache::new(Duration::from_secs(60), 2).unwrap();
        let grant = |exp| Grant {
            account: "A".into(),
            expires_at: exp,
            ..Default::default()
        };
        let k1 = DecisionCache::key(Mode::Oauth2, &req("t1")).unwrap();
        let k2 = DecisionCache::key(Mode::Oauth2, &req("t2")).unwrap();
        let k3 = DecisionCache::key(Mode::Oauth2, &req("t3")).unwrap();
        assert_ne!(k1, k2);
        cache.put(k1, &grant(Some(110)), 100);
        assert!(cache.get(&k1, 109).is_some());
        assert!(
            cache.get(&k1, 110).is_none(),
            "never past the credential's expiry"
        );
        cache.put(k1, &grant(None), 100);
        assert!(cache.get(&k1, 159).is_some());
        assert!(cache.get(&k1, 160).is_none(), "never past the TTL");
        cache.put(k1, &grant(None), 100);
        cache.put(k2, &grant(None), 100);
        cache.put(k3, &grant(None), 100);
        assert!(cache.get(&k1, 100).is_none(), "least recently used evicted");
        assert!(cache.get(&k3, 100).is_some());
        assert!(DecisionCache::key(Mode::Nkey, &req("t")).is_none());
        assert!(DecisionCache::new(Duration::ZERO, 10).is_none());
    }

    #[test]
    fn client_metadata_is_part_of_the_key() {
        let mut a = req("t");
        let k = DecisionCache::key(Mode::Oauth2, &a).unwrap();
        a.client_info.name = "other".into();
        assert_ne!(DecisionCache::key(Mode::Oauth2, &a).unwrap(), k);
    }
}
