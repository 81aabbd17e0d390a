//! Values as operators write them in YAML, shared by the host's configuration and the
//! plugins' settings so that both read them alike: durations (`"5s"`, `"250ms"`,
//! `"1m30s"` or integer milliseconds) and "one or many" strings.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses a duration as operators write it in YAML: one or more `<integer><unit>` parts
/// with unit `h`, `m`, `s` or `ms` (`"5s"`, `"250ms"`, `"1m30s"`), or a bare integer of
/// milliseconds (`"1500"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    let bad = || {
        format!(
            "invalid duration {text:?}: expected e.g. \"5s\", \"250ms\", \"1m30s\" or milliseconds"
        )
    };
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let (number, tail) = rest.split_at(digits);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let (unit_ms, tail) = if let Some(t) = tail.strip_prefix("ms") {
            (1, t)
        } else if let Some(t) = tail.strip_prefix('h') {
            (3_600_000, t)
        } else if let Some(t) = tail.strip_prefix('m') {
            (60_000, t)
        } else if let Some(t) = tail.strip_prefix('s') {
            (1_000, t)
        } else {
            return Err(bad());
        };
        let part = number
            .checked_mul(unit_ms)
            .map(Duration::from_millis)
            .ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = tail;
    }
    Ok(total)
}

/// serde adapter for a [`Duration`] field: a duration string or integer milliseconds in
/// (`#[serde(with = "nats_callout_sdk::format::duration")]`), milliseconds out.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d).map_err(|_| {
            D::Error::custom("expected a duration such as \"5s\" or integer milliseconds")
        })? {
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(text) => super::parse_duration(&text).map_err(D::Error::custom),
        }
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// The same for an `Option<Duration>` field (with `#[serde(default)]`).
    pub mod option {
        use std::time::Duration;

        use serde::{Deserializer, Serializer};

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }
    }
}

/// Deserializes a string or a list of strings into a list
/// (`#[serde(deserialize_with = "nats_callout_sdk::format::one_or_many")]`): operators
/// write `audience: nats` as often as `audience: [nats, mqtt]`.
pub fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(
            parse_duration("1h1m1s1ms").unwrap(),
            Duration::from_millis(3_661_001)
        );
        assert_eq!(parse_duration("1500").unwrap(), Duration::from_millis(1500));
        for bad in ["", "5x", "s", "1.5s", "-1s", "5 s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_or_many_strings() {
        #[derive(Deserialize)]
        struct T {
            #[serde(deserialize_with = "one_or_many")]
            v: Vec<String>,
        }
        let t: T = serde_json::from_str(r#"{"v": "a"}"#).unwrap();
        assert_eq!(t.v, ["a"]);
        let t: T = serde_json::from_str(r#"{"v": ["a", "b"]}"#).unwrap();
        assert_eq!(t.v, ["a", "b"]);
        assert!(serde_json::from_str::<T>(r#"{"v": 1}"#).is_err());
    }
}
