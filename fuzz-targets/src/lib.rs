//! The parsers nats-callout feeds bytes it does not control, one function per fuzz
//! target. `../fuzz` (cargo-fuzz, nightly) runs each under libFuzzer; this crate's tests run
//! the same functions as property tests on stable, so CI exercises them on every change;
//! `fuzz/regressions/<target>/` holds every input that once failed, replayed by the tests.
//!
//! A target panics only on a bug: an `Err` is the parser doing its job. Targets whose
//! parser sits behind a signature also sign the fuzzed bytes with a fixed key, so that
//! the fuzzer reaches what the signature guards, not only the signature check.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nats_callout::identity::oauth::jwks::parse_keys;
use nats_callout::identity::oauth::token::{Key, Rules};
use nats_callout::identity::{user_jwt, x509};
use nats_callout::nats::jwt::{self, SigningKey};
use nats_callout::nats::operator::AccountClaims;
use nats_callout::pipeline::request::Verifier;
use nats_callout_sdk::{Placeholders, SubjectKind, policy::SubjectTemplate};
use nkeys::{KeyPair, XKey};

/// A fuzz target: any bytes in, a panic only on a bug.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/<name>.rs` and FUZZING.md call them.
pub const TARGETS: [(&str, Target); 8] = [
    ("request", request),
    ("access_token", access_token),
    ("jwks", jwks),
    ("dn", dn),
    ("x509", x509),
    ("subject_template", subject_template),
    ("config", config),
    ("operator_jwt", operator_jwt),
];

/// Fixed keys: the same input means the same run.
struct Keys {
    server: KeyPair,
    issuer: KeyPair,
    server_xkey: XKey,
    callout_xkey: XKey,
    account: KeyPair,
    ed25519: aws_lc_rs::signature::Ed25519KeyPair,
    token_key: Arc<Key>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let seed = |kind: nkeys::KeyPairType, byte: u8| {
            KeyPair::new_from_raw(kind, [byte; 32]).expect("a fixed raw seed")
        };
        let xkey = |byte: u8| XKey::new_from_raw([byte; 32]);
        let ed25519 = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&[7; 32])
            .expect("a fixed ed25519 seed");
        use aws_lc_rs::signature::KeyPair as _;
        let jwks = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","kid":"k1","x":"{}"}}]}}"#,
            URL_SAFE_NO_PAD.encode(ed25519.public_key().as_ref())
        );
        let token_key = parse_keys(jwks.as_bytes(), 4)
            .expect("the fixed JWKS parses")
            .remove(0);
        Keys {
            server: seed(nkeys::KeyPairType::Server, 1),
            issuer: seed(nkeys::KeyPairType::Account, 2),
            server_xkey: xkey(3),
            callout_xkey: xkey(4),
            account: seed(nkeys::KeyPairType::Account, 5),
            ed25519,
            token_key,
        }
    })
}

/// `data` as JSON claims signed by `key`, if it is JSON at all; `iss` is set to the
/// key (else the signature check would stop every input), and `fix` may set more.
fn signed(
    data: &[u8],
    key: &KeyPair,
    fix: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_slice(data).ok()?;
    if let Some(claims) = value.as_object_mut() {
        claims.insert("iss".into(), key.public_key().into());
        fix(claims);
    }
    jwt::encode(&mut value, &SigningKey::from_nkey(key).ok()?).ok()
}

/// The request claims `data`, signed by the server for the fixed issuer: what reaches
/// the checks after the signature.
pub fn signed_request(data: &[u8]) -> Option<String> {
    let k = keys();
    let server = k.server.public_key();
    signed(data, &k.server, |claims| {
        claims.insert("sub".into(), k.issuer.public_key().into());
        if let Some(id) = claims
            .get_mut("nats")
            .and_then(|n| n.get_mut("server_id"))
            .and_then(|s| s.as_object_mut())
        {
            id.insert("id".into(), server.into());
        }
    })
}

/// The verifier of the fixed keys; `sealed`: with the callout's xkey.
pub fn verifier(sealed: bool) -> Verifier<'static> {
    static ISSUER: OnceLock<String> = OnceLock::new();
    let k = keys();
    Verifier {
        issuer: ISSUER.get_or_init(|| k.issuer.public_key()),
        xkey: sealed.then_some(&k.callout_xkey),
        leeway: Duration::from_secs(2),
    }
}

/// The authorization request as nats-server sends it: opened (xkey), decoded, its
/// signature and claims checked. The first byte picks the path: raw bytes, sealed raw
/// bytes, or the rest signed by the server key as claims (sealed or not).
pub fn request(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let k = keys();
    let server_xkey = k.server_xkey.public_key();
    let payload = match mode % 3 {
        0 => rest.to_vec(),
        1 => match signed_request(rest) {
            Some(token) => token.into_bytes(),
            None => return,
        },
        _ => match signed_request(rest) {
            Some(token) => token.into_bytes(),
            None => rest.to_vec(),
        },
    };
    let _ = verifier(false).verify(&payload, None);
    if let Ok(sealed) = k.server_xkey.seal(&payload, &k.callout_xkey) {
        let _ = verifier(true).verify(&sealed, Some(&server_xkey));
    }
    let _ = verifier(true).verify(&payload, Some(&server_xkey));
}

fn token_rules() -> Rules {
    Rules {
        issuer: "https://idp.example".into(),
        audiences: vec!["nats-callout".into()],
        leeway: Duration::from_secs(30),
        max_lifetime: Duration::from_secs(86_400),
        max_token_bytes: 8 * 1024,
        required_typ: None,
        allowed_clients: None,
    }
}

/// An OAuth2 access token: the header checks before any key is chosen, then (the rest
/// signed with the fixed EdDSA key as the claims) the signature and claim checks.
pub fn access_token(data: &[u8]) {
    let rules = token_rules();
    let k = keys();
    let text = String::from_utf8_lossy(data);
    if let Ok(checked) = rules.check_header(&text) {
        let _ = rules.verify(&text, &checked, &k.token_key, 1_800_000_000, None);
    }
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","kid":"k1","typ":"at+jwt"}"#);
    let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(data));
    let sig = URL_SAFE_NO_PAD.encode(k.ed25519.sign(signing_input.as_bytes()).as_ref());
    let token = format!("{signing_input}.{sig}");
    if let Ok(checked) = rules.check_header(&token) {
        let _ = rules.verify(&token, &checked, &k.token_key, 1_800_000_000, None);
    }
}

/// A JWKS document as an identity provider serves it.
pub fn jwks(data: &[u8]) {
    let _ = parse_keys(data, 16);
}

/// A distinguished name as operators write it in `permissions.mtls` (RFC 4514).
pub fn dn(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(dn) = nats_callout_plugin_mtls::dn::parse(text)
    {
        // What parses prints and parses back to the same name.
        let again = nats_callout_plugin_mtls::dn::parse(&dn.to_string())
            .unwrap_or_else(|e| panic!("{dn} does not parse back: {e}"));
        assert_eq!(dn, again, "{text:?}");
    }
}

/// Client certificate chains (PEM, as nats-server forwards them) and CA bundles: the
/// bytes as PEM text, and wrapped in PEM armour as DER.
pub fn x509(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let armoured = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(data)
    );
    for pem in [text, armoured] {
        let _ = x509::parse_chain(std::slice::from_ref(&pem));
        let _ = x509::fingerprint(&pem);
        if let Ok(bundle) = x509::CaBundle::from_pem(pem.as_bytes()) {
            let _ = bundle.verify(std::slice::from_ref(&pem), 1_800_000_000);
        }
    }
}

/// A subject template and a claim value: whatever the value, the rendered subject is a
/// valid subject of the template's shape (a value can neither add tokens nor wildcards).
pub fn subject_template(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (template, value) = text.split_once('\0').unwrap_or((&text, "value"));
    let placeholders = Placeholders::new(["claims.device_id", "name"]);
    for kind in [SubjectKind::Publish, SubjectKind::Subscribe] {
        let Ok(t) = SubjectTemplate::parse(template, kind, &placeholders) else {
            continue;
        };
        let Ok(subject) = t.render(&|_| Some(value.to_owned()), 256) else {
            continue;
        };
        let shape = t
            .render(&|_| Some("x".to_owned()), 256)
            .expect("a plain value renders");
        assert_eq!(
            subject.split('.').count(),
            shape.split('.').count(),
            "{template:?} with {value:?} rendered {subject:?}"
        );
        nats_callout_sdk::policy::validate_subject(&subject, kind)
            .unwrap_or_else(|e| panic!("{template:?} with {value:?}: {subject:?}: {e}"));
        if t.is_static() {
            assert_eq!(subject, template);
        }
    }
}

/// The YAML config, as `check`, start-up and every reload read it.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = nats_callout::ops::config::Config::parse(text, Path::new("fuzz.yaml"));
    }
}

/// Operator mode's account JWTs (the operator section's files) and a client's own user
/// JWT, raw and signed by the fixed account key.
pub fn operator_jwt(data: &[u8]) {
    let k = keys();
    let text = String::from_utf8_lossy(data);
    let _ = AccountClaims::decode(&text);
    let mut account = AccountClaims {
        sub: k.account.public_key(),
        ..Default::default()
    };
    account.nats.revocations.insert("*".into(), 1);
    let user = |jwt: &str| {
        let presented = user_jwt::Presented {
            jwt,
            nonce: "nonce",
            sig: "c2ln",
        };
        let _ = user_jwt::verify(&presented, &account, 1_800_000_000);
    };
    user(&text);
    if let Some(token) = signed(data, &k.account, |_| {}) {
        let _ = AccountClaims::decode(&token);
        user(&token);
    }
}

#[cfg(test)]
mod tests;
