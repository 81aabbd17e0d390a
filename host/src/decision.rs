//! A plugin's answer, in the host's own types (independent of any WIT version), and
//! the checks the host applies to a grant before it signs anything.

/// What a plugin decided. Not boxed: one is made per request and moved once, and
/// `Allow` is the common case.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Grant),
    Deny(String),
    Abstain,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permission {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePermission {
    pub max_msgs: i32,
    pub ttl_millis: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub subs: i64,
    pub data: i64,
    pub payload: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            subs: -1,
            data: -1,
            payload: -1,
        }
    }
}

/// What an admitted client may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub account: String,
    pub name: String,
    pub publish: Permission,
    pub subscribe: Permission,
    pub response: Option<ResponsePermission>,
    pub expires_at: Option<i64>,
    pub tags: Vec<String>,
    pub limits: Option<Limits>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrantError {
    #[error("grant has no account")]
    NoAccount,
    #[error("grant account {0:?} is not a valid account name")]
    Account(String),
    #[error("grant {field} subject {subject:?} is not a valid NATS subject")]
    Subject {
        field: &'static str,
        subject: String,
    },
    #[error("grant expired at {0}, before the connection was admitted")]
    Expired(i64),
}

impl Grant {
    /// Host-side bounds on any plugin's grant: whatever a (third-party) plugin returns,
    /// nats-server only ever sees well-formed subjects and a real account name.
    pub fn check(&self, now: i64) -> Result<(), GrantError> {
        if self.account.is_empty() {
            return Err(GrantError::NoAccount);
        }
        if self
            .account
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>'))
        {
            return Err(GrantError::Account(self.account.clone()));
        }
        let lists = [
            ("pub.allow", &self.publish.allow),
            ("pub.deny", &self.publish.deny),
            ("sub.allow", &self.subscribe.allow),
            ("sub.deny", &self.subscribe.deny),
        ];
        for (field, list) in lists {
            for s in list {
                if !valid_subject(s, field.starts_with("sub")) {
                    return Err(GrantError::Subject {
                        field,
                        subject: s.clone(),
                    });
                }
            }
        }
        if let Some(exp) = self.expires_at
            && exp <= now
        {
            return Err(GrantError::Expired(exp));
        }
        Ok(())
    }
}

/// A NATS subject (or, for subscriptions, a subject with an optional queue group:
/// `subject queue`): non-empty tokens, no whitespace inside a token, `>` only last.
pub fn valid_subject(s: &str, allow_queue: bool) -> bool {
    let mut parts = s.split(' ');
    let subject = parts.next().unwrap_or("");
    let queue = parts.next();
    if parts.next().is_some() || (queue.is_some() && !allow_queue) {
        return false;
    }
    if queue.is_some_and(|q| q.is_empty() || q.chars().any(char::is_control)) {
        return false;
    }
    if subject.is_empty() {
        return false;
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    tokens.iter().enumerate().all(|(i, t)| {
        !t.is_empty()
            && !t.chars().any(|c| c.is_whitespace() || c.is_control())
            && (*t != ">" || i == tokens.len() - 1)
            && (!t.contains('>') || *t == ">")
            && (!t.contains('*') || *t == "*")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        for ok in ["a", "a.b", "a.*.c", "a.>", ">", "_INBOX.>"] {
            assert!(valid_subject(ok, false), "{ok}");
        }
        for bad in [
            "", "a..b", ".a", "a.", "a.>.b", "a b", "a.b*", "a\tb", "a.>x",
        ] {
            assert!(!valid_subject(bad, false), "{bad:?}");
        }
        assert!(valid_subject("jobs.> workers", true));
        assert!(!valid_subject("jobs.> workers", false));
    }

    #[test]
    fn grant_checks() {
        let mut g = Grant {
            account: "DEVICES".into(),
            ..Default::default()
        };
        assert_eq!(g.check(10), Ok(()));
        g.publish.allow.push("a..b".into());
        assert!(matches!(g.check(10), Err(GrantError::Subject { .. })));
        g.publish.allow.clear();
        g.expires_at = Some(5);
        assert_eq!(g.check(10), Err(GrantError::Expired(5)));
        g.account = "A.B".into();
        assert!(matches!(g.check(1), Err(GrantError::Account(_))));
    }
}
