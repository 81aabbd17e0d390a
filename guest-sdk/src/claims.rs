//! A JWT's claims, read without building a JSON tree. The host checks an access token's
//! registered claims with it and hands the plugin the same object re-serialised; plugins
//! read [`crate::VerifiedJwt::claims_json`] with it.
//!
//! A token carries a dozen or more claims (`aud`, `scope`, `iat`, `jti`, ...) and a rule
//! looks at a few. Parsing them all into a `serde_json::Map` allocates every name and
//! every value, and inside WebAssembly each allocation is a call into the guest's
//! dlmalloc: in a profile of the oauth2 plugin, allocation was a third of its time. Here
//! every value stays raw JSON text, borrowed from the claims string, until a rule asks
//! for it.

use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A JSON string, borrowed unless it contains escapes.
#[derive(Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(transparent)]
struct JsonStr<'a>(#[serde(borrow)] Cow<'a, str>);

impl Borrow<str> for JsonStr<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// The claims object: names to raw values. A repeated name keeps its last value, as
/// `serde_json::Map` does. Serialising it writes each name once, in sorted order, with
/// its value as it came: that is how the host normalises what it hands a plugin, so
/// that both read the same value for every claim.
#[derive(Debug, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Claims<'a>(#[serde(borrow)] BTreeMap<JsonStr<'a>, &'a RawValue>);

impl<'a> Claims<'a> {
    /// The most claim names a plugin may ask the host for at once (contract 0.3.0's
    /// `verify-jwt`). Far above what a rule set reads (the built-in plugins ask for four to
    /// ten), and low enough that picking them out of a token's claims stays a few
    /// microseconds of host time, whatever a plugin sends.
    pub const MAX_ASKED: usize = 256;

    /// Refuses to pick more than [`Claims::MAX_ASKED`] names, with the count: the host's
    /// `verify-jwt` and [`crate::Host::verify_jwt_claims`]'s default (so `TestHost`) both
    /// answer so, and a plugin's native tests see what the component will.
    pub fn check_asked(names: &[String]) -> Result<(), String> {
        if names.len() > Self::MAX_ASKED {
            return Err(format!(
                "asks for {} claims; at most {}",
                names.len(),
                Self::MAX_ASKED
            ));
        }
        Ok(())
    }

    /// Fails unless `json` is a JSON object.
    pub fn parse(json: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// A claim as `T`: `None` if absent, an error if it does not fit `T`.
    pub fn get<T: Deserialize<'a>>(&self, name: &str) -> Option<Result<T, serde_json::Error>> {
        self.0.get(name).map(|raw| serde_json::from_str(raw.get()))
    }

    /// A claim that is a string; `None` if absent or of another type.
    pub fn str(&self, name: &str) -> Option<Cow<'a, str>> {
        self.get::<JsonStr<'a>>(name)?.ok().map(|s| s.0)
    }

    /// Keeps only the claims named in `names`: what the host hands a plugin that asks
    /// for those ([`crate::Host::verify_jwt_claims`]).
    pub fn retain(&mut self, names: &[String]) {
        self.0.retain(|name, _| names.iter().any(|n| *n == *name.0));
    }

    /// Present and not `null`.
    pub fn present(&self, name: &str) -> bool {
        self.0.get(name).is_some_and(|raw| raw.get() != "null")
    }

    /// A claim as template text: strings and numbers (as `serde_json` prints them);
    /// `None` for anything else.
    pub fn text(&self, name: &str) -> Option<String> {
        // A raw value starts with its own first character: one parse, of the right kind.
        let raw = self.0.get(name)?.get();
        if raw.starts_with('"') {
            serde_json::from_str::<JsonStr<'_>>(raw)
                .ok()
                .map(|s| s.0.into_owned())
        } else {
            serde_json::from_str::<serde_json::Number>(raw)
                .ok()
                .map(|n| n.to_string())
        }
    }
}

/// A token that names two different clients in `azp` and `client_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmbiguousClient;

impl std::fmt::Display for AmbiguousClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("azp and client_id name different clients")
    }
}

impl std::error::Error for AmbiguousClient {}

impl<'a> Claims<'a> {
    /// The OAuth2 client the token was issued to: `azp` (OpenID Connect) or
    /// `client_id` (RFC 9068), whichever is a string. Defined once, here, because the
    /// host (its `allowed_clients`) and the plugin (which entry applies) must agree on
    /// it; a token whose two claims disagree is refused rather than read one way by
    /// one side and the other way by the other.
    pub fn client(&self) -> Result<Option<Cow<'a, str>>, AmbiguousClient> {
        match (self.str("azp"), self.str("client_id")) {
            (Some(a), Some(c)) if a != c => Err(AmbiguousClient),
            (a, c) => Ok(a.or(c)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn reads_what_a_value_map_would() {
        let json = r#"{"sub":"first","q":"a\"b","azp":7,"n":1e3,"f":1.5,"t":true,"z":null,"o":{"x":1},
                       "l":["x"],"e\u0301":"é","w": "spaced","m":  5,"sub":"last"}"#;
        let claims = Claims::parse(json).unwrap();
        let map: serde_json::Map<String, Value> = serde_json::from_str(json).unwrap();
        for name in [
            "sub", "q", "azp", "n", "f", "t", "z", "o", "l", "e\u{301}", "w", "m", "missing",
        ] {
            let v = map.get(name);
            assert_eq!(
                claims.str(name).as_deref(),
                v.and_then(Value::as_str),
                "{name}"
            );
            assert_eq!(
                claims.present(name),
                v.is_some_and(|v| !v.is_null()),
                "{name}"
            );
            let text = v.and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
            assert_eq!(claims.text(name), text, "{name}");
        }
        assert_eq!(claims.str("sub").as_deref(), Some("last"));
        assert_eq!(claims.str("q").as_deref(), Some("a\"b"));
        assert_eq!(claims.get::<i64>("azp").and_then(Result::ok), Some(7));
        assert!(claims.get::<i64>("f").is_some_and(|r| r.is_err()));
        assert!(claims.contains("z") && !claims.contains("missing"));
        // Re-serialised: one value per name, as it came.
        let again: serde_json::Map<String, Value> =
            serde_json::from_str(&serde_json::to_string(&claims).unwrap()).unwrap();
        assert_eq!(again, map);
        assert!(Claims::parse("[1]").is_err());
        assert_eq!(
            claims.client(),
            Ok(None),
            "a non-string azp names no client"
        );
        assert!(Claims::parse("{\"a\":").is_err());
        let mut some = Claims::parse(json).unwrap();
        some.retain(&["sub".into(), "z".into(), "missing".into()]);
        assert_eq!(
            serde_json::to_string(&some).unwrap(),
            r#"{"sub":"last","z":null}"#
        );
    }

    #[test]
    fn client_is_azp_or_client_id_and_never_two() {
        let client = |json: &str| {
            Claims::parse(json)
                .unwrap()
                .client()
                .map(|c| c.map(Cow::into_owned))
        };
        assert_eq!(client(r#"{"azp":"a"}"#), Ok(Some("a".into())));
        assert_eq!(client(r#"{"client_id":"c"}"#), Ok(Some("c".into())));
        assert_eq!(
            client(r#"{"azp":"a","client_id":"a"}"#),
            Ok(Some("a".into()))
        );
        assert_eq!(
            client(r#"{"azp":"a","client_id":"c"}"#),
            Err(AmbiguousClient)
        );
        assert_eq!(client(r#"{"sub":"s"}"#), Ok(None));
    }
}
