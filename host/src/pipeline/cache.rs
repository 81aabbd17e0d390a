//! The decision cache: a client reconnecting with the same credential (the same access
//! token, the same certificate chain) gets its grant without another plugin call or
//! token verification. The user and response JWTs are still signed per connection:
//! `user_nkey` is new every time.
//!
//! What it assumes: a plugin deciding bearer tokens, certificates or passwords decides
//! from what is in the key (the route; the credential: the token, the username and
//! password, the verified chain; and the client's name, host, kind, type and MQTT id),
//! not from the clock or outside state beyond the credential's own expiry, nor from the
//! rest of the request (which server asks, the client's tags, lang or version). The
//! built-in plugins hold to that; a partner plugin that does not must run with the cache
//! off (`ttl: 0`). Only grants are cached, never denies (a deny may be transient: the
//! JWKS was unreachable); the cache lives inside one [`Authorizer`], so a reload (new
//! permissions, removed identities) starts with an empty one.
//!
//! Keys are SHA-256 over a random per-cache secret and the fields: no credential is
//! kept in clear, and a password's key is worthless outside this process (no table of
//! fast hashes can be built for it, as it could for a plain SHA-256).
//!
//! [`Authorizer`]: crate::pipeline::authorizer::Authorizer

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

use lru::LruCache;
use sha2::{Digest, Sha256};

use nats_callout_sdk::Credential;

use crate::nats::claims::AuthorizationRequest;
use crate::pipeline::decision::Grant;

/// Cache key: SHA-256 over the request's decision-relevant parts.
pub type Key = [u8; 32];

struct Entry {
    grant: Grant,
    /// Unix seconds after which the entry must not be used.
    valid_until: i64,
}

pub struct DecisionCache {
    ttl: Duration,
    /// Mixed into every key: a key means nothing outside this cache.
    secret: [u8; 32],
    entries: Mutex<LruCache<Key, Entry>>,
}

impl DecisionCache {
    /// `None` when disabled (`ttl` zero or no room).
    pub fn new(ttl: Duration, max_entries: usize) -> Option<Self> {
        let cap = NonZeroUsize::new(max_entries)?;
        (!ttl.is_zero()).then(|| Self {
            ttl,
            secret: rand::random(),
            entries: Mutex::new(LruCache::new(cap)),
        })
    }

    /// The key for a request of `route` presenting `credential` (already taken out of
    /// `req`), or `None` for credentials that never repeat (nkey: a signature over a
    /// fresh nonce; a user JWT, likewise signed over the nonce) or cost nothing to decide
    /// (none).
    pub fn key(
        &self,
        route: &str,
        credential: &Credential,
        req: &AuthorizationRequest,
    ) -> Option<Key> {
        let mut h = Sha256::new();
        h.update(self.secret);
        // Length-prefixed fields: no two different requests hash the same input.
        let mut field = |s: &str| {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        field(route);
        match credential {
            Credential::BearerToken(token) => {
                field("bearer-token");
                field(token.expose());
            }
            Credential::UserPassword { username, password } => {
                field("user-password");
                field(username);
                field(password.expose());
            }
            Credential::Certificate => field("certificate"),
            _ => return None,
        }
        let i = &req.client_info;
        for s in [
            &req.connect_opts.name,
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

    /// Forget every entry.
    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
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
    use nats_callout_sdk::Secret;

    fn token(t: &str) -> Credential {
        Credential::BearerToken(Secret::new(t))
    }

    fn key(cache: &DecisionCache, credential: &Credential) -> Key {
        cache
            .key("oauth2", credential, &AuthorizationRequest::default())
            .unwrap()
    }

    #[test]
    fn bounded_by_expiry_and_size() {
        let cache = DecisionCache::new(Duration::from_secs(60), 2).unwrap();
        let grant = |exp| {
            let mut g = Grant::default();
            g.account = "A".into();
            g.expires_at = exp;
            g
        };
        let k1 = key(&cache, &token("t1"));
        let k2 = key(&cache, &token("t2"));
        let k3 = key(&cache, &token("t3"));
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
        let req = AuthorizationRequest::default();
        assert!(
            cache
                .key("nkey", &Credential::Nkey("U".into()), &req)
                .is_none()
        );
        assert!(cache.key("noauth", &Credential::None, &req).is_none());
        assert!(DecisionCache::new(Duration::ZERO, 10).is_none());
    }

    #[test]
    fn route_credential_and_client_metadata_are_part_of_the_key() {
        let cache = DecisionCache::new(Duration::from_secs(60), 10).unwrap();
        let mut req = AuthorizationRequest::default();
        let k = cache.key("oauth2", &token("t"), &req).unwrap();
        assert_ne!(cache.key("other", &token("t"), &req).unwrap(), k);
        let password = |u: &str, p: &str| Credential::UserPassword {
            username: u.into(),
            password: Secret::new(p),
        };
        // Field boundaries count: ("ab", "c") is not ("a", "bc").
        assert_ne!(
            cache.key("r", &password("ab", "c"), &req),
            cache.key("r", &password("a", "bc"), &req)
        );
        req.client_info.name = "other".into();
        assert_ne!(cache.key("oauth2", &token("t"), &req).unwrap(), k);
        // Another cache (another process) keys the same request differently.
        let other = DecisionCache::new(Duration::from_secs(60), 10).unwrap();
        assert_ne!(
            other.key("oauth2", &token("t"), &AuthorizationRequest::default()),
            Some(k)
        );
    }
}
