//! Revoked identities: refused at their next connect whatever a plugin or the decision
//! cache would say, checked before either runs.
//!
//! Two sources, merged: a file (hot-reloaded) and, optionally, a NATS KV bucket
//! (watched). Both hold the same shape, a map from identity kind to values:
//!
//! ```yaml
//! jti: [4f1c...]            # access token ids
//! sub: [alice@example.com]  # token subjects
//! client: [legacy-app]      # azp / client_id
//! nkey: [UDXU4RCSJNZOIQHZ...]
//! cert_sha256: ["AB:CD:..."] # with or without colons, any case
//! user: [bob]
//! ```
//!
//! A KV entry holds one such document; deleting the entry lifts what it revoked.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Deserialize;
use tokio::sync::watch;

use crate::pipeline::identity::Identity;

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("revocation list {path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Parse(String),
}

/// One revocation document (a file, or one KV entry).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    #[serde(default)]
    jti: HashSet<String>,
    #[serde(default)]
    sub: HashSet<String>,
    #[serde(default)]
    client: HashSet<String>,
    #[serde(default)]
    nkey: HashSet<String>,
    #[serde(default)]
    cert_sha256: HashSet<String>,
    #[serde(default)]
    user: HashSet<String>,
}

impl Revoked {
    /// Parse a document; empty text revokes nothing.
    pub fn parse(text: &str) -> Result<Self, RevocationError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let mut r: Self =
            serde_yaml_ng::from_str(text).map_err(|e| RevocationError::Parse(e.to_string()))?;
        r.cert_sha256 = r
            .cert_sha256
            .into_iter()
            .map(|f| normalise_fingerprint(&f))
            .collect();
        Ok(r)
    }

    /// Read and parse the file at `path`.
    pub fn load(path: &Path) -> Result<Self, RevocationError> {
        let err = |message: String| RevocationError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Self::parse(&text).map_err(|e| err(e.to_string()))
    }

    /// The sets in the order of [`KINDS`](crate::pipeline::identity::KINDS).
    fn sets(&self) -> [&HashSet<String>; 6] {
        [
            &self.jti,
            &self.sub,
            &self.client,
            &self.nkey,
            &self.cert_sha256,
            &self.user,
        ]
    }

    fn sets_mut(&mut self) -> [&mut HashSet<String>; 6] {
        [
            &mut self.jti,
            &mut self.sub,
            &mut self.client,
            &mut self.nkey,
            &mut self.cert_sha256,
            &mut self.user,
        ]
    }

    /// How many identities are revoked.
    pub fn len(&self) -> usize {
        self.sets().iter().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first revoked field of `identity`, as (kind, value).
    pub fn find<'a>(&self, identity: &'a Identity) -> Option<(&'static str, &'a str)> {
        crate::pipeline::identity::KINDS
            .into_iter()
            .zip(identity.values())
            .zip(self.sets())
            .find_map(|((kind, value), set)| value.filter(|v| set.contains(*v)).map(|v| (kind, v)))
    }

    fn extend(&mut self, other: &Revoked) {
        for (mine, theirs) in self.sets_mut().into_iter().zip(other.sets()) {
            mine.extend(theirs.iter().cloned());
        }
    }
}

/// `AB:CD:...` or `abcd...` as [`Identity::cert_sha256`] spells it.
fn normalise_fingerprint(f: &str) -> String {
    f.chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The revocations in force, shared by every reload of the authorizer and by the
/// watchers that feed it. Readers get the merged set without a lock.
pub struct Revocations {
    merged: ArcSwap<Revoked>,
    sources: Mutex<Sources>,
    /// Bumped on every change: what the connection kicker waits on.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Sources {
    file: Revoked,
    kv: BTreeMap<String, Revoked>,
}

impl Default for Revocations {
    fn default() -> Self {
        Self {
            merged: ArcSwap::from_pointee(Revoked::default()),
            sources: Mutex::new(Sources::default()),
            changed: watch::channel(0).0,
        }
    }
}

impl Revocations {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The merged set now in force.
    pub fn current(&self) -> Arc<Revoked> {
        self.merged.load_full()
    }

    /// Notified after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Replace what the file revokes.
    pub fn set_file(&self, revoked: Revoked) {
        self.update(|s| s.file = revoked);
    }

    /// Set (`Some`) or lift (`None`) what KV entry `key` revokes.
    pub fn set_kv(&self, key: &str, revoked: Option<Revoked>) {
        self.update(|s| match revoked {
            Some(r) => {
                s.kv.insert(key.to_owned(), r);
            }
            None => {
                s.kv.remove(key);
            }
        });
    }

    /// Replace every KV entry at once (the bucket's watch starts over from a snapshot).
    pub fn replace_kv(&self, entries: BTreeMap<String, Revoked>) {
        self.update(|s| s.kv = entries);
    }

    fn update(&self, edit: impl FnOnce(&mut Sources)) {
        let Ok(mut sources) = self.sources.lock() else {
            return;
        };
        edit(&mut sources);
        let mut merged = sources.file.clone();
        for r in sources.kv.values() {
            merged.extend(r);
        }
        if *self.merged.load_full() != merged {
            self.merged.store(Arc::new(merged));
            self.changed.send_modify(|n| *n += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sub: &str, cert: Option<&str>) -> Identity {
        Identity {
            sub: Some(sub.into()),
            cert_sha256: cert.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn documents_and_matching() {
        let r = Revoked::parse("sub: [alice]\ncert_sha256: [\"AB:CD\"]\n").unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r.find(&id("alice", None)), Some(("sub", "alice")));
        assert_eq!(
            r.find(&id("bob", Some("abcd"))),
            Some(("cert_sha256", "abcd"))
        );
        assert_eq!(r.find(&id("bob", None)), None);
        assert!(Revoked::parse("  \n").unwrap().is_empty());
        let e = Revoked::parse("subject: [alice]").unwrap_err().to_string();
        assert!(e.contains("unknown field `subject`"), "{e}");
        assert!(
            Revoked::parse("sub: alice").is_err(),
            "a list, not a string"
        );
    }

    #[test]
    fn sources_merge_and_notify() {
        let all = Revocations::new();
        let mut changes = all.subscribe();
        all.set_file(Revoked::parse("user: [bob]").unwrap());
        all.set_kv("k1", Some(Revoked::parse("sub: [alice]").unwrap()));
        assert_eq!(all.current().len(), 2);
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        all.set_kv("k1", Some(Revoked::parse("sub: [alice]").unwrap()));
        assert!(!changes.has_changed().unwrap(), "no change, no notice");
        all.set_kv("k1", None);
        assert_eq!(all.current().find(&id("alice", None)), None, "lifted");
        all.set_kv("k2", Some(Revoked::parse("sub: [carol]").unwrap()));
        all.replace_kv(BTreeMap::new());
        assert_eq!(all.current().len(), 1, "the file's stays");
    }
}
