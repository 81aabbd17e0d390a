//! A plugin's answer and the checks the host applies to a grant before it signs
//! anything. The decision types are the guest SDK's plain Rust types: every WIT
//! version's bindings convert to them, so the rest of the host is version-independent.

use std::net::IpAddr;

use nats_callout_sdk::ConnectionType;
use nats_callout_sdk::policy::{
    PolicyError, SubjectKind, parse_network, validate_account, validate_locale, validate_subject,
    validate_time_range,
};
pub use nats_callout_sdk::{Decision, Grant, Permission, ResponsePermission};

/// The connection a grant is for, as far as the host checks it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Connection {
    pub kind: Option<ConnectionType>,
    pub addr: Option<IpAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GrantError {
    #[error("grant account {0:?} is not a valid account name")]
    Account(String),
    #[error("grant {field}: {source}")]
    Subject {
        field: &'static str,
        source: PolicyError,
    },
    #[error("grant expired at {0}, before the connection was admitted")]
    Expired(i64),
    #[error(
        "grant sets no permissions, which nats-server reads as everything in the account; \
         allow \">\" explicitly if that is meant"
    )]
    NoPermissions,
    #[error("grant lists {0} bytes of subjects, over the {MAX_SUBJECT_BYTES}-byte cap")]
    TooLarge(usize),
    #[error("grant {field}: {source}")]
    Limit {
        field: &'static str,
        source: PolicyError,
    },
    #[error("grant admits {allowed} connections only, not this {actual} connection")]
    ConnectionType { allowed: String, actual: String },
    #[error("client address {0} is outside the grant's source networks")]
    SourceNetwork(String),
}

/// Subjects (all four lists together) one grant may carry. The grant travels base64'd
/// twice (the user JWT inside the response JWT), so 64 KiB of subjects make a response
/// of about 120 KiB, well under nats-server's default 1 MiB `max_payload`; real grants
/// list a handful of subjects.
pub const MAX_SUBJECT_BYTES: usize = 64 * 1024;

/// Host-side bounds on any plugin's grant: whatever a (third-party) plugin returns,
/// nats-server only ever sees well-formed subjects and a real account name, and a
/// direction the grant leaves empty allows nothing. nats-server reads an empty direction
/// as "everything"; the SDK's entries never produce one, and a hand-built grant that
/// lists only what to publish must not open every subscription in the account.
///
/// The connection types and source networks of a grant are enforced here, against
/// `connection`: nats-server (2.10 to 2.15) checks neither for auth-callout users, and
/// the connect is when it checks them for users of its own.
pub fn check(grant: &mut Grant, now: i64, connection: &Connection) -> Result<(), GrantError> {
    validate_account(&grant.account).map_err(|_| GrantError::Account(grant.account.clone()))?;
    let lists = [
        ("pub.allow", &grant.publish.allow, SubjectKind::Publish),
        ("pub.deny", &grant.publish.deny, SubjectKind::Publish),
        ("sub.allow", &grant.subscribe.allow, SubjectKind::Subscribe),
        ("sub.deny", &grant.subscribe.deny, SubjectKind::Subscribe),
    ];
    let mut bytes = 0;
    for (field, list, kind) in lists {
        for s in list {
            validate_subject(s, kind).map_err(|source| GrantError::Subject { field, source })?;
            bytes += s.len();
        }
    }
    if bytes > MAX_SUBJECT_BYTES {
        return Err(GrantError::TooLarge(bytes));
    }
    // nats-server builds no permissions from an empty set (and no `resp`), and a user
    // without permissions may publish and subscribe to anything in its account: a
    // plugin that forgot its permissions must not grant everything.
    if bytes == 0 && grant.response.is_none() {
        return Err(GrantError::NoPermissions);
    }
    for direction in [&mut grant.publish, &mut grant.subscribe] {
        if direction.allow.is_empty() && direction.deny.is_empty() {
            direction.deny.push(">".into());
        }
    }
    if let Some(exp) = grant.expires_at
        && exp <= now
    {
        return Err(GrantError::Expired(exp));
    }
    let limit = |field| move |source| GrantError::Limit { field, source };
    for range in &grant.times {
        validate_time_range(range).map_err(limit("times"))?;
    }
    if let Some(locale) = &grant.locale {
        validate_locale(locale).map_err(limit("locale"))?;
    }
    if !grant.allowed_connection_types.is_empty()
        && !connection
            .kind
            .is_some_and(|k| grant.allowed_connection_types.contains(&k))
    {
        let names = |types: &[ConnectionType]| {
            types
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(GrantError::ConnectionType {
            allowed: names(&grant.allowed_connection_types),
            actual: connection.kind.map_or("unknown", |k| k.as_str()).into(),
        });
    }
    if !grant.source_networks.is_empty() {
        let networks = grant
            .source_networks
            .iter()
            .map(|n| parse_network(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(limit("source_networks"))?;
        let inside = connection
            .addr
            .is_some_and(|a| networks.iter().any(|n| n.contains(&a)));
        if !inside {
            return Err(GrantError::SourceNetwork(
                connection.addr.map_or("unknown".into(), |a| a.to_string()),
            ));
        }
    }
    Ok(())
}

/// The earlier of two expiries, either of which may be open (`None`): how a grant is
/// bounded by its credential, and how the expiries of several credentials combine.
pub fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_of_two_expiries() {
        assert_eq!(earliest(None, None), None);
        assert_eq!(earliest(None, Some(100)), Some(100), "set when left open");
        assert_eq!(earliest(Some(100), Some(200)), Some(100), "never extended");
        assert_eq!(earliest(Some(100), Some(50)), Some(50), "lowered");
        assert_eq!(earliest(Some(100), None), Some(100));
    }

    #[test]
    fn connection_types_and_source_networks_are_enforced() {
        let mut g = Grant::default();
        g.account = "DEVICES".into();
        g.publish.allow.push("x".into());
        let nats = Connection {
            kind: Some(ConnectionType::Standard),
            addr: Some("10.1.2.3".parse().unwrap()),
        };
        g.allowed_connection_types = vec![ConnectionType::Mqtt, ConnectionType::Websocket];
        assert_eq!(
            check(&mut g, 1, &nats),
            Err(GrantError::ConnectionType {
                allowed: "mqtt, websocket".into(),
                actual: "standard".into()
            })
        );
        let mqtt = Connection {
            kind: Some(ConnectionType::Mqtt),
            ..nats
        };
        assert_eq!(check(&mut g, 1, &mqtt), Ok(()));
        assert!(
            check(&mut g, 1, &Connection::default()).is_err(),
            "unknown type"
        );
        g.source_networks = vec!["10.0.0.0/8".into(), "2001:db8::/32".into()];
        assert_eq!(check(&mut g, 1, &mqtt), Ok(()));
        let outside = Connection {
            addr: Some("192.168.1.1".parse().unwrap()),
            ..mqtt
        };
        assert_eq!(
            check(&mut g, 1, &outside),
            Err(GrantError::SourceNetwork("192.168.1.1".into()))
        );
        let v6 = Connection {
            addr: Some("2001:db8::7".parse().unwrap()),
            ..mqtt
        };
        assert_eq!(check(&mut g, 1, &v6), Ok(()));
        g.source_networks = vec!["10.0.0.0/33".into()];
        assert!(matches!(
            check(&mut g, 1, &mqtt),
            Err(GrantError::Limit {
                field: "source_networks",
                ..
            })
        ));
        g.source_networks.clear();
        g.times = vec![nats_callout_sdk::TimeRange {
            start: "8:00".into(),
            end: "18:00:00".into(),
        }];
        assert!(matches!(
            check(&mut g, 1, &mqtt),
            Err(GrantError::Limit { field: "times", .. })
        ));
        g.times.clear();
        g.locale = Some("../etc/passwd".into());
        assert!(matches!(
            check(&mut g, 1, &mqtt),
            Err(GrantError::Limit {
                field: "locale",
                ..
            })
        ));
    }

    #[test]
    fn grant_checks() {
        let any = Connection::default();
        let mut g = Grant::default();
        g.account = "DEVICES".into();
        assert_eq!(check(&mut g, 10, &any), Err(GrantError::NoPermissions));
        g.publish.allow.push(">".into());
        assert_eq!(
            check(&mut g, 10, &any),
            Ok(()),
            "publish everything, when asked for"
        );
        assert_eq!(
            g.subscribe.deny,
            [">"],
            "the direction left empty allows nothing, not everything"
        );
        assert!(g.publish.deny.is_empty());
        g.publish.allow.clear();
        g.subscribe.deny.clear();
        g.response = Some(ResponsePermission {
            max_msgs: 1,
            ttl_millis: 0,
        });
        assert_eq!(check(&mut g, 10, &any), Ok(()), "only replies");
        assert_eq!(
            (&g.publish.deny, &g.subscribe.deny),
            (&vec![">".to_owned()], &vec![">".to_owned()])
        );
        g.response = None;
        g.publish.deny.clear();
        assert_eq!(
            check(&mut g, 10, &any),
            Ok(()),
            "nothing at all, when asked for"
        );
        g.subscribe.allow = vec!["a".repeat(200); MAX_SUBJECT_BYTES / 200 + 1];
        assert!(matches!(
            check(&mut g, 10, &any),
            Err(GrantError::TooLarge(_))
        ));
        g.subscribe.allow.clear();
        g.publish.allow.push("a..b".into());
        assert!(matches!(
            check(&mut g, 10, &any),
            Err(GrantError::Subject { .. })
        ));
        g.publish.allow = vec!["jobs.> workers".into()];
        assert!(
            matches!(check(&mut g, 10, &any), Err(GrantError::Subject { .. })),
            "queue groups only on subscribe"
        );
        g.publish.allow.clear();
        g.subscribe.allow = vec!["jobs.> workers".into()];
        assert_eq!(check(&mut g, 10, &any), Ok(()));
        g.expires_at = Some(5);
        assert_eq!(check(&mut g, 10, &any), Err(GrantError::Expired(5)));
        g.account = "A.B".into();
        assert!(matches!(
            check(&mut g, 1, &any),
            Err(GrantError::Account(_))
        ));
        g.account = String::new();
        assert!(matches!(
            check(&mut g, 1, &any),
            Err(GrantError::Account(_))
        ));
    }
}
