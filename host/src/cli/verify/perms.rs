//! Permissions as nats-server reports them and as user JWTs state them, compared as
//! sets, and NATS subject matching: what `verify` needs to say whether a probe got
//! what the config grants.

use std::collections::BTreeSet;

/// nats-server's defaults for a response permission's zero fields.
pub(super) const DEFAULT_RESP_MAX: i64 = 1;
pub(super) const DEFAULT_RESP_TTL_NANOS: i64 = 120_000_000_000;

/// Publish and subscribe permissions, as sets (nats-server lists them in no order).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Perms {
    pub(super) pub_allow: BTreeSet<String>,
    pub(super) pub_deny: BTreeSet<String>,
    pub(super) sub_allow: BTreeSet<String>,
    pub(super) sub_deny: BTreeSet<String>,
    /// `max` and `ttl` (nanoseconds), nats-server's defaults applied.
    pub(super) resp: Option<(i64, i64)>,
}

impl Perms {
    /// From a user JWT's `nats` claims (`pub`, `sub`, `resp`).
    pub(super) fn from_user_claims(nats: &serde_json::Value) -> Self {
        Self::read(nats, ["pub", "sub", "resp"])
    }

    /// From `$SYS.REQ.USER.INFO`'s `permissions`.
    pub(super) fn from_user_info(p: &serde_json::Value) -> Self {
        Self::read(p, ["publish", "subscribe", "responses"])
    }

    /// The same shape under either set of key names.
    fn read(v: &serde_json::Value, [publish, subscribe, responses]: [&str; 3]) -> Self {
        Self {
            pub_allow: strings(&v[publish]["allow"]),
            pub_deny: strings(&v[publish]["deny"]),
            sub_allow: strings(&v[subscribe]["allow"]),
            sub_deny: strings(&v[subscribe]["deny"]),
            resp: response(&v[responses]),
        }
    }

    /// Whether a client with these permissions may publish to the literal `subject`.
    /// With a response permission, an empty allow list allows nothing (nats-server
    /// turns the blanket allow off).
    pub(super) fn may_publish(&self, subject: &str) -> bool {
        let allowed = if self.pub_allow.is_empty() {
            self.resp.is_none()
        } else {
            self.pub_allow.iter().any(|p| subject_matches(p, subject))
        };
        allowed && !self.pub_deny.iter().any(|p| subject_matches(p, subject))
    }

    pub(super) fn may_subscribe(&self, subject: &str) -> bool {
        let pattern = |p: &String| p.split(' ').next().unwrap_or_default().to_owned();
        let allowed = self.sub_allow.is_empty()
            || self
                .sub_allow
                .iter()
                .any(|p| subject_matches(&pattern(p), subject));
        allowed
            && !self
                .sub_deny
                .iter()
                .any(|p| subject_matches(&pattern(p), subject))
    }
}

impl std::fmt::Display for Perms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |s: &BTreeSet<String>| {
            let v: Vec<&str> = s.iter().map(String::as_str).collect();
            format!("[{}]", v.join(", "))
        };
        let mut parts = Vec::new();
        for (name, set) in [
            ("pub allow", &self.pub_allow),
            ("pub deny", &self.pub_deny),
            ("sub allow", &self.sub_allow),
            ("sub deny", &self.sub_deny),
        ] {
            if !set.is_empty() {
                parts.push(format!("{name} {}", list(set)));
            }
        }
        if let Some((max, ttl)) = self.resp {
            parts.push(format!("responses max {max} ttl {}ms", ttl / 1_000_000));
        }
        if parts.is_empty() {
            f.write_str("no permissions")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

fn strings(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn response(v: &serde_json::Value) -> Option<(i64, i64)> {
    v.as_object()?;
    let max = v["max"]
        .as_i64()
        .filter(|m| *m != 0)
        .unwrap_or(DEFAULT_RESP_MAX);
    let ttl = v["ttl"]
        .as_i64()
        .filter(|t| *t != 0)
        .unwrap_or(DEFAULT_RESP_TTL_NANOS);
    Some((max, ttl))
}

/// NATS subject matching: `pattern` may hold `*` (one token) and `>` (the rest).
pub(super) fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some(pt), Some(st)) if pt == "*" || pt == st => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::verify::USER_INFO;

    #[test]
    fn subjects_match_as_nats_matches_them() {
        assert!(subject_matches("a.b", "a.b"));
        assert!(subject_matches("a.*", "a.b"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(subject_matches(">", "$SYS.REQ.USER.INFO"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(!subject_matches("a.b.c", "a.b"));
    }

    #[test]
    fn permissions_decide_the_user_info_exchange() {
        let nats = serde_json::json!({
            "pub": {"allow": ["public.>", "$SYS.REQ.USER.INFO"]},
            "sub": {"allow": ["public.>", "_INBOX.>"]},
        });
        let p = Perms::from_user_claims(&nats);
        assert!(p.may_publish(USER_INFO) && p.may_subscribe("_INBOX.x"));
        let nats = serde_json::json!({"pub": {"deny": [">"]}, "sub": {"allow": ["public.>"]}});
        let p = Perms::from_user_claims(&nats);
        assert!(!p.may_publish(USER_INFO) && !p.may_subscribe("_INBOX.x"));
        // A response permission turns the blanket publish allow off.
        let nats = serde_json::json!({"sub": {"allow": ["a"]}, "resp": {"max": 0, "ttl": 0}});
        let p = Perms::from_user_claims(&nats);
        assert_eq!(p.resp, Some((DEFAULT_RESP_MAX, DEFAULT_RESP_TTL_NANOS)));
        assert!(!p.may_publish(USER_INFO));
        // nats-server's listing compares as sets.
        let info = serde_json::json!({
            "publish": {"allow": ["b", "a"]},
            "subscribe": {"allow": ["a"]},
            "responses": {"max": 1, "ttl": 120_000_000_000i64},
        });
        let claims = serde_json::json!({"pub": {"allow": ["a", "b"]}, "sub": {"allow": ["a"]}, "resp": {"max": 1}});
        assert_eq!(
            Perms::from_user_info(&info),
            Perms::from_user_claims(&claims)
        );
    }
}
