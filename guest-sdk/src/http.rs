//! Outbound HTTP for plugins that ask another system (a device registry, a token
//! introspection endpoint): small blocking requests through [`crate::Host::http`], which
//! a component sends over the standard `wasi:http/outgoing-handler` and
//! [`crate::testing::TestHost`] answers in native tests.
//!
//! The host sends a request only to the hosts the operator lists in the plugin's
//! `allowed_outbound_hosts`, caps both bodies, follows redirects to listed hosts only,
//! and ends the exchange at the call's deadline; any of that, and every network error,
//! is an `Err` here. Decide on an `Err` by denying, never by allowing.
//!
//! ```
//! use nats_callout_sdk::http::Request;
//!
//! let request = Request::post(
//!     "https://idp.example.com/introspect",
//!     "application/x-www-form-urlencoded",
//!     nats_callout_sdk::http::form(&[("token", "abc"), ("token_type_hint", "access_token")]),
//! )
//! .header("accept", "application/json");
//! assert_eq!(request.method, "POST");
//! ```

use serde::de::DeserializeOwned;

/// An outgoing request.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Absolute: `https://host[:port]/path?query`.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn get(url: impl Into<String>) -> Self {
        Self {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn post(url: impl Into<String>, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            method: "POST".into(),
            url: url.into(),
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }

    /// The same request with one more header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// `scheme`, `host[:port]` and `/path?query` of [`Request::url`], or why not.
    pub fn url_parts(&self) -> Result<(&str, &str, &str), String> {
        let (scheme, rest) = self
            .url
            .split_once("://")
            .ok_or_else(|| format!("{:?} is not an absolute URL", self.url))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!(
                "{:?}: no host, or credentials in the URL",
                self.url
            ));
        }
        Ok((scheme, authority, if path.is_empty() { "/" } else { path }))
    }
}

/// A response, its body read whole.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first header of this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// `application/x-www-form-urlencoded` of `pairs` (an OAuth2 token or introspection
/// request's body).
pub fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
        .into_bytes()
}

/// `Authorization: Basic` of a client id and secret, as RFC 6749 (2.3.1) spells it: each
/// form-urlencoded, then joined by `:` and base64-encoded.
pub fn basic_auth(user: &str, password: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        base64(format!("{}:{}", enc(user), enc(password)).as_bytes())
    )
}

/// Standard base64 with padding; small enough not to pull a crate into every plugin.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_forms_and_basic_auth() {
        let r = Request::get("https://registry.example.com:8443/devices/7?x=1");
        assert_eq!(
            r.url_parts(),
            Ok(("https", "registry.example.com:8443", "/devices/7?x=1"))
        );
        assert_eq!(
            Request::get("http://127.0.0.1:9").url_parts(),
            Ok(("http", "127.0.0.1:9", "/"))
        );
        assert!(Request::get("registry/devices").url_parts().is_err());
        assert!(Request::get("https://u:p@host/").url_parts().is_err());
        assert_eq!(
            form(&[("token", "a b&c"), ("x", "é")]),
            b"token=a+b%26c&x=%C3%A9"
        );
        // RFC 6749 (2.3.1): form-encoded before base64, so the space is a `+`.
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuK3Nlc2FtZQ=="
        );
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64(b"ab"), "YWI=");
        let resp = Response {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: br#"{"active":true}"#.to_vec(),
        };
        assert!(resp.is_success());
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(resp.json::<serde_json::Value>().unwrap()["active"], true);
    }
}
