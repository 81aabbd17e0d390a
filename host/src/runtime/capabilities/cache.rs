//! `cache-get` / `cache-set`: one cache per plugin, shared by all its pooled instances,
//! so that a lookup (a registry, an introspection endpoint) is made once per identity,
//! not once per instance. Bounded in bytes (least recently used entries go first),
//! entries live no longer than the operator's cap, and a reload starts empty (the cache
//! belongs to the loaded plugin).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

use super::Capabilities;

/// A key longer than this is refused: keys are identities or their digests.
pub const MAX_KEY_BYTES: usize = 1024;

struct Entry {
    value: Vec<u8>,
    expires: Instant,
}

pub struct PluginCache {
    entries: Mutex<(LruCache<String, Entry>, usize)>,
    max_bytes: usize,
    max_ttl: Duration,
}

impl PluginCache {
    pub fn new(max_bytes: usize, max_ttl: Duration) -> Self {
        Self {
            entries: Mutex::new((LruCache::unbounded(), 0)),
            max_bytes,
            max_ttl,
        }
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut guard = self.entries.lock().ok()?;
        let (entries, bytes) = &mut *guard;
        match entries.get(key) {
            Some(e) if e.expires > Instant::now() => Some(e.value.clone()),
            Some(_) => {
                if let Some(e) = entries.pop(key) {
                    *bytes -= key.len() + e.value.len();
                }
                None
            }
            None => None,
        }
    }

    /// Stores `value` for `ttl` (at most the operator's cap); an entry larger than a
    /// quarter of the cache, or a key over [`MAX_KEY_BYTES`], is not stored.
    pub fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        let size = key.len() + value.len();
        if key.len() > MAX_KEY_BYTES || size > self.max_bytes / 4 || ttl.is_zero() {
            return;
        }
        let Ok(mut guard) = self.entries.lock() else {
            return;
        };
        let (entries, bytes) = &mut *guard;
        let expires = Instant::now() + ttl.min(self.max_ttl);
        if let Some(old) = entries.put(key.to_owned(), Entry { value, expires }) {
            *bytes -= key.len() + old.value.len();
        }
        *bytes += size;
        while *bytes > self.max_bytes {
            let Some((k, e)) = entries.pop_lru() else {
                break;
            };
            *bytes -= k.len() + e.value.len();
        }
    }
}

impl Capabilities {
    pub fn cache_get(&self, key: &str) -> Option<Vec<u8>> {
        self.cache.as_ref()?.get(key)
    }

    pub fn cache_set(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        if let Some(cache) = &self.cache {
            cache.set(key, value, ttl);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_bytes_and_time() {
        let cache = PluginCache::new(400, Duration::from_secs(60));
        cache.set("a", vec![1; 90], Duration::from_secs(10));
        assert_eq!(cache.get("a"), Some(vec![1; 90]));
        assert_eq!(cache.get("b"), None);
        cache.set("big", vec![0; 101], Duration::from_secs(10));
        assert_eq!(cache.get("big"), None, "over a quarter of the cache");
        for k in ["b", "c", "d", "e"] {
            cache.set(k, vec![2; 90], Duration::from_secs(10));
        }
        assert_eq!(cache.get("a"), None, "least recently used, evicted");
        assert!(cache.get("e").is_some());
        cache.set("gone", vec![3], Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(cache.get("gone"), None, "expired");
        let capped = PluginCache::new(400, Duration::from_millis(1));
        capped.set("k", vec![1], Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(capped.get("k"), None, "the operator's cap wins");
        cache.set(
            &"k".repeat(MAX_KEY_BYTES + 1),
            vec![1],
            Duration::from_secs(1),
        );
        assert_eq!(cache.get(&"k".repeat(MAX_KEY_BYTES + 1)), None);
    }
}
