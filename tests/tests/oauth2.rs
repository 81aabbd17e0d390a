//! OAuth2 mode end to end: a real OpenID provider (`oidc-provider`) issues
//! client-credentials access tokens; clients connect to a real nats-server with
//! username `oauthtoken` and the token as password; the callout verifies the token
//! against the provider's JWKS and the oauth2 plugin picks the permissions.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use nats_callout::pipeline::request::unix_now;
use nats_callout_tests::inject::Injector;
use nats_callout_tests::oidc::{Oidc, client, decode_parts};
use nats_callout_tests::raw::{self, Outcome};
use nats_callout_tests::{
    Callout, Keys, NatsServer, callout_server_config, connect, connect_watching,
    expect_server_error, init_tracing, platform, stays_silent, synced, write_atomically,
};
use serde_json::{Value, json};

const AUDIENCE: &str = "nats-callout";
const RECV: Duration = Duration::from_secs(5);

fn clients() -> Vec<Value> {
    vec![
        client(
            "sensor-test-01",
            "RS256",
            json!({ "device_id": "sensor-test-01" }),
        ),
        client("sensor-a", "ES256", json!({ "device_id": "sensor-a" })),
        client("sensor-b", "RS256", json!({ "device_id": "sensor-b" })),
        client("mqtt-client", "ES256", json!({})),
        client("injector", "RS256", json!({ "device_id": "a.>" })),
        client("stranger", "RS256", json!({})),
    ]
}

/// The callout's config: the issue's example permissions plus a JWKS section.
fn callout_yaml(url: &str, issuer: &str, extra_nats: &str, jwks_extra: &str) -> String {
    format!(
        r#"nats:
  - {{ name: main, url: {url}, nkey_seed_file: nkey-seed }}
{extra_nats}issuer_seed_file: issuer-seed
reload_interval: 200ms
jwks:
  issuer: "{issuer}"
  audience: ["{AUDIENCE}"]
  require_typ: at+jwt
{jwks_extra}permissions:
  oauth2:
    mqtt-client:
      azp: "mqtt-client"
      account: "CSC"
      permissions: {{ pub: {{ allow: ["events.>"] }}, sub: {{ allow: ["events.>"] }} }}
    devices:
      subject: "*"
      claims: {{ device_id: "*" }}
      account: "DEVICES"
      permissions:
        pub: {{ allow: ["device-state.{{{{claims.device_id}}}}", "_INBOX.>"] }}
        sub: {{ allow: ["device-commands.{{{{claims.device_id}}}}", "_INBOX.>"] }}
  noauth:
    account: ANONYMOUS
    permissions: {{ pub: {{ allow: ["public.>"] }}, sub: {{ allow: ["public.>"] }} }}
"#
    )
}

/// nats-server config: adds account CSC for the mqtt-client entry.
fn server_config(keys: &Keys) -> String {
    callout_server_config(keys, false).replace("ANONYMOUS {}", "ANONYMOUS {}\n  CSC {}")
}

struct Deployment {
    server: NatsServer,
    oidc: Oidc,
    keys: Keys,
    callout: Callout,
    inject: Injector,
}

async fn deploy(jwks_extra: &str) -> Result<Deployment> {
    init_tracing();
    let oidc = Oidc::start(AUDIENCE, clients())?;
    deploy_with(oidc, jwks_extra).await
}

async fn deploy_with(oidc: Oidc, jwks_extra: &str) -> Result<Deployment> {
    let keys = Keys::generate();
    let server = NatsServer::start(&server_config(&keys))?;
    let mut inject = Injector::start(&keys.issuer.public_key())?;
    let yaml = callout_yaml(
        &server.url(),
        &oidc.issuer,
        &inject.nats_entry(),
        jwks_extra,
    );
    let callout = Callout::start(&keys, &yaml).await?;
    inject.connect().await?;
    Ok(Deployment {
        server,
        oidc,
        keys,
        callout,
        inject,
    })
}

fn token_options(token: String) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::with_user_and_password("oauthtoken".into(), token)
}

impl Deployment {
    /// The callout's signed response claims for `token` as an oauthtoken password.
    async fn response(&self, token: &str) -> Result<Value> {
        let token = token.to_owned();
        self.inject
            .decide(move |c| {
                c["nats"]["connect_opts"]["user"] = "oauthtoken".into();
                c["nats"]["connect_opts"]["pass"] = token.into();
            })
            .await
    }

    /// The callout's answer to `token`: the deny reason, or "" when it admits.
    async fn answer(&self, token: &str) -> Result<String> {
        let claims = self.response(token).await?;
        Ok(claims["nats"]["error"].as_str().unwrap_or("").to_owned())
    }

    /// The deny reason for `token`; an error if it is admitted.
    async fn reason(&self, token: &str) -> Result<String> {
        match self.answer(token).await? {
            reason if reason.is_empty() => bail!("token was admitted"),
            reason => Ok(reason),
        }
    }

    /// Rewrite the callout's config with `edit` (write beside, then rename) and wait
    /// for the hot reload to succeed.
    async fn reload_with(&self, edit: impl FnOnce(String) -> String) -> Result<()> {
        let metrics = &self.callout.app().metrics();
        let reloads = metrics.reloads.with_label_values(&["ok"]);
        let before = reloads.get();
        let path = self.callout.config_path();
        write_atomically(&path, edit(std::fs::read_to_string(&path)?))?;
        for _ in 0..150 {
            if reloads.get() > before {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("config was not reloaded")
    }

    /// Connect for real with a raw client; the token must never get in (also not as
    /// an anonymous client).
    async fn refused(&self, token: &str) -> Result<()> {
        let outcome = raw::connect(
            self.server.port,
            |_| json!({ "user": "oauthtoken", "pass": token }),
        )
        .await?;
        assert_eq!(outcome, Outcome::Refused("Authorization Violation".into()));
        Ok(())
    }

    /// Claims of a well-formed token for `device_id`, to be edited and signed.
    fn claims(&self, device_id: &str) -> Value {
        let now = unix_now();
        json!({
            "iss": self.oidc.issuer, "sub": "forged", "aud": AUDIENCE, "azp": "forged",
            "iat": now, "exp": now + 300, "jti": "x", "device_id": device_id,
        })
    }
}

/// A JWS with any header and payload, signed with `sign` (over `header.payload`).
fn jws(header: &Value, payload: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

#[tokio::test]
async fn device_authenticates_and_pubsub() -> Result<()> {
    let d = deploy("").await?;
    let url = d.server.url();
    let token = d.oidc.token("sensor-test-01").await?;
    let (header, payload) = decode_parts(&token)?;
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(payload["device_id"], "sensor-test-01");

    let platform = platform(&url).await?;
    let mut states = platform.subscribe("device-state.>").await?;
    synced(&platform).await?;
    let device = connect(&url, token_options(token)).await?;
    let mut commands = device.subscribe("device-commands.sensor-test-01").await?;
    device.flush().await?;
    device
        .publish("device-state.sensor-test-01", "temp=21".into())
        .await?;
    device.flush().await?;
    let msg = tokio::time::timeout(RECV, states.next())
        .await?
        .expect("state");
    assert_eq!(msg.subject.as_str(), "device-state.sensor-test-01");
    platform
        .publish("device-commands.sensor-test-01", "reboot".into())
        .await?;
    platform.flush().await?;
    let cmd = tokio::time::timeout(RECV, commands.next())
        .await?
        .expect("command");
    assert_eq!(&cmd.payload[..], b"reboot");

    // The token also works as a bare auth_token (and it is ES256 for sensor-a).
    let es = d.oidc.token("sensor-a").await?;
    assert_eq!(decode_parts(&es)?.0["alg"], "ES256");
    let outcome = raw::connect(d.server.port, |_| json!({ "auth_token": es })).await?;
    assert_eq!(outcome, Outcome::Admitted);
    Ok(())
}

#[tokio::test]
async fn device_cannot_access_other_device_subjects() -> Result<()> {
    let d = deploy("").await?;
    let url = d.server.url();
    let platform = platform(&url).await?;
    let mut states = platform.subscribe("device-state.>").await?;
    synced(&platform).await?;
    let b = connect(&url, token_options(d.oidc.token("sensor-b").await?)).await?;
    let mut b_commands = b.subscribe("device-commands.sensor-b").await?;
    b.flush().await?;

    let (a, mut errors) =
        connect_watching(&url, token_options(d.oidc.token("sensor-a").await?)).await?;
    let _sneaky = a.subscribe("device-commands.sensor-b").await?;
    a.flush().await?;
    expect_server_error(&mut errors, "permissions violation for subscription").await?;
    a.publish("device-commands.sensor-b", "forged".into())
        .await?;
    a.publish("device-state.sensor-b", "forged".into()).await?;
    a.flush().await?;
    expect_server_error(&mut errors, "permissions violation for publish").await?;
    a.publish("device-state.sensor-a", "mine".into()).await?;
    a.flush().await?;
    let msg = tokio::time::timeout(RECV, states.next())
        .await?
        .expect("state");
    assert_eq!(msg.subject.as_str(), "device-state.sensor-a");
    assert!(stays_silent(&mut b_commands).await);
    Ok(())
}

#[tokio::test]
async fn mqtt_client_entry_is_scoped_to_events() -> Result<()> {
    let d = deploy("").await?;
    let url = d.server.url();
    let (c, mut errors) =
        connect_watching(&url, token_options(d.oidc.token("mqtt-client").await?)).await?;
    let mut events = c.subscribe("events.door").await?;
    c.flush().await?;
    c.publish("events.door", "open".into()).await?;
    let msg = tokio::time::timeout(RECV, events.next())
        .await?
        .expect("event");
    assert_eq!(&msg.payload[..], b"open");
    c.publish("device-state.x", "no".into()).await?;
    c.flush().await?;
    expect_server_error(&mut errors, "permissions violation for publish").await?;
    let _no = c.subscribe("public.x").await?;
    c.flush().await?;
    expect_server_error(&mut errors, "permissions violation for subscription").await?;

    // The user JWT expires with the token: the callout's response carries its exp.
    let token = d.oidc.token("mqtt-client").await?;
    let exp = decode_parts(&token)?.1["exp"].as_i64();
    let claims = d
        .inject
        .decide(|c| {
            c["nats"]["connect_opts"]["user"] = "oauthtoken".into();
            c["nats"]["connect_opts"]["pass"] = token.into();
        })
        .await?;
    let user_jwt = claims["nats"]["jwt"].as_str().unwrap_or_default();
    let (_, user) = decode_parts(user_jwt)?;
    assert_eq!(user["exp"].as_i64(), exp);
    assert_eq!(user["aud"], "CSC");

    // A token whose client has no entry is denied, never anonymous.
    let stranger = d.oidc.token("stranger").await?;
    d.refused(&stranger).await?;
    assert!(
        d.reason(&stranger)
            .await?
            .contains("no oauth2 permissions entry")
    );
    Ok(())
}

#[tokio::test]
async fn hostile_tokens_are_denied_with_distinct_reasons() -> Result<()> {
    let d = deploy("  unknown_kid_cooldown: 30s\n").await?;
    let good = d.oidc.token("sensor-a").await?;
    let (good_header, _) = decode_parts(&good)?;
    let rs_kid = "rsa-1";
    let now = unix_now();

    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    let none = jws(
        &json!({"alg": "none", "typ": "at+jwt"}),
        &d.claims("x"),
        b"",
    );
    cases.push(("alg none", none, "algorithm \"none\""));

    // HS256 with the provider's RSA public key (PEM) as the HMAC secret.
    let pem = d.oidc.public_pem(rs_kid).await?;
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            typ: Some("at+jwt".into()),
            kid: Some(rs_kid.into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &d.claims("x"),
        &jsonwebtoken::EncodingKey::from_secret(pem.as_bytes()),
    )?;
    cases.push(("HS256 with the public key", hs, "algorithm \"HS256\""));

    let sign = |header: Value, payload: Value| d.oidc.sign(rs_kid, header, payload);
    let typ = json!({"typ": "at+jwt"});
    let mut exp_past = d.claims("x");
    exp_past["exp"] = (now - 3600).into();
    exp_past["iat"] = (now - 7200).into();
    cases.push((
        "expired",
        sign(typ.clone(), exp_past).await?,
        "token expired",
    ));
    let mut nbf = d.claims("x");
    nbf["nbf"] = (now + 3600).into();
    cases.push(("nbf future", sign(typ.clone(), nbf).await?, "not valid yet"));
    let mut exp_str = d.claims("x");
    exp_str["exp"] = json!((now + 300).to_string());
    cases.push((
        "string exp",
        sign(typ.clone(), exp_str).await?,
        "claim \"exp\" has the wrong type",
    ));
    let mut wrong_iss = d.claims("x");
    wrong_iss["iss"] = "https://evil.example".into();
    cases.push((
        "wrong iss",
        sign(typ.clone(), wrong_iss).await?,
        "issuer is not the configured",
    ));
    let mut no_iss = d.claims("x");
    no_iss.as_object_mut().map(|m| m.remove("iss"));
    cases.push((
        "missing iss",
        sign(typ.clone(), no_iss).await?,
        "required claim \"iss\"",
    ));
    let mut wrong_aud = d.claims("x");
    wrong_aud["aud"] = "someone-else".into();
    cases.push((
        "wrong aud",
        sign(typ.clone(), wrong_aud).await?,
        "audience is not one of",
    ));
    let mut no_aud = d.claims("x");
    no_aud.as_object_mut().map(|m| m.remove("aud"));
    cases.push((
        "missing aud",
        sign(typ.clone(), no_aud).await?,
        "required claim \"aud\"",
    ));
    let crit = sign(json!({"typ": "at+jwt", "crit": ["exp"]}), d.claims("x")).await?;
    cases.push(("crit", crit, "critical extensions"));
    let embedded = d
        .oidc
        .sign(
            "attacker",
            json!({"typ": "at+jwt", "embed_jwk": true}),
            d.claims("x"),
        )
        .await?;
    assert!(decode_parts(&embedded)?.0["jwk"].is_object());
    cases.push(("embedded jwk", embedded, "embeds a key (jwk)"));
    // A valid ES256 token with its signature replaced by zeros.
    let zero = format!(
        "{}.{}",
        good.rsplit_once('.').map_or("", |(hp, _)| hp),
        URL_SAFE_NO_PAD.encode([0u8; 64])
    );
    cases.push(("zero ES256 signature", zero, "signature is invalid"));
    let wrong_typ = sign(json!({"typ": "JWT"}), d.claims("x")).await?;
    cases.push(("id-token typ", wrong_typ, "token type \"JWT\""));
    let injected = d.oidc.token("injector").await?;
    cases.push(("template injection", injected, "claims.device_id"));
    assert_eq!(good_header["alg"], "ES256");

    let mut reasons = Vec::new();
    for (what, token, expect) in &cases {
        let reason = d.reason(token).await?;
        assert!(
            reason.contains(expect),
            "{what}: {reason:?} lacks {expect:?}"
        );
        d.refused(token).await?;
        reasons.push(reason);
    }
    let mut distinct = reasons.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        reasons.len(),
        "reasons must be distinct: {reasons:#?}"
    );

    // 1 MiB of dots: nats-server refuses the CONNECT line itself (max_control_line),
    // and the host's own cap refuses it before any decoding.
    let dots = ".".repeat(1 << 20);
    let outcome = raw::connect(
        d.server.port,
        |_| json!({ "user": "oauthtoken", "pass": dots }),
    )
    .await;
    assert!(!matches!(outcome, Ok(Outcome::Admitted)));
    let big = ".".repeat(64 * 1024);
    assert!(d.reason(&big).await?.contains("over the 8192-byte cap"));

    // An unknown kid, 1000 times: at most a handful of JWKS fetches.
    let before = d.oidc.jwks_fetches().await?;
    let unknown = sign(
        json!({"typ": "at+jwt", "kid": "no-such-key"}),
        d.claims("x"),
    )
    .await?;
    for _ in 0..1000 {
        let reason = d.reason(&unknown).await?;
        assert!(
            reason.contains("kid \"no-such-key\" is not in the JWKS"),
            "{reason}"
        );
    }
    let fetches = d.oidc.jwks_fetches().await? - before;
    assert!(
        fetches <= 2,
        "{fetches} JWKS fetches for 1000 unknown-kid tokens"
    );

    // And good tokens still work.
    let outcome = raw::connect(
        d.server.port,
        |_| json!({ "user": "oauthtoken", "pass": good }),
    )
    .await?;
    assert_eq!(outcome, Outcome::Admitted);
    let _ = &d.keys;
    let _ = &d.callout;
    Ok(())
}

#[tokio::test]
async fn key_rotation_is_picked_up_without_restart() -> Result<()> {
    let d = deploy("  unknown_kid_cooldown: 1s\n").await?;
    let mut d = d;
    let old = d.oidc.token("sensor-a").await?;
    assert_eq!(
        d.reason(&old).await.err().map(|e| e.to_string()),
        Some("token was admitted".into())
    );

    // Restart the provider on the same port with new keys.
    let port = d.oidc.port;
    d.oidc.stop();
    d.oidc = Oidc::start_with(
        json!({
            "generate": [ { "kid": "rsa-2", "alg": "RS256" }, { "kid": "ec-2", "alg": "ES256" } ],
            "audience": AUDIENCE,
            "clients": clients(),
        }),
        port,
    )?;
    let new = d.oidc.token("sensor-a").await?;
    assert_eq!(decode_parts(&new)?.0["kid"], "ec-2");
    // The first token with the new kid triggers a refetch (the cool-down has long
    // passed since start), waited for within the request.
    let mut admitted = false;
    for _ in 0..20 {
        let outcome = raw::connect(
            d.server.port,
            |_| json!({ "user": "oauthtoken", "pass": new }),
        )
        .await?;
        if outcome == Outcome::Admitted {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(admitted, "new key never accepted");
    // Tokens of the old key: an unseen one is now refused (its kid left the JWKS);
    // one already decided may still be served from the decision cache until its TTL.
    let stale = jws(
        &json!({"alg": "ES256", "typ": "at+jwt", "kid": "ec-1"}),
        &decode_parts(&old)?.1,
        b"sig",
    );
    assert!(d.reason(&stale).await?.contains("is not in the JWKS"));
    Ok(())
}

#[tokio::test]
async fn provider_outages_keep_cached_keys_until_their_bound() -> Result<()> {
    init_tracing();
    // Down at start: the port is reserved but nothing listens yet.
    let port = nats_callout_tests::free_port()?;
    let issuer = format!("http://127.0.0.1:{port}");
    let keys = Keys::generate();
    let server = NatsServer::start(&server_config(&keys))?;
    let mut inject = Injector::start(&keys.issuer.public_key())?;
    let yaml = callout_yaml(
        &server.url(),
        &issuer,
        &inject.nats_entry(),
        "  refresh_interval: 1s\n  max_stale: 3s\n  fetch_timeout: 1s\n",
    ) + "decision_cache: { ttl: 0 }\n"; // the JWKS bound alone, not the grant cache
    let callout = Callout::start(&keys, &yaml).await?;
    inject.connect().await?;
    let ready = callout.app().http_addr();
    assert!(!http_ok(ready, "/readyz").await?, "not ready without JWKS");
    let shaped = jws(
        &json!({"alg": "ES256", "typ": "at+jwt", "kid": "ec-1"}),
        &json!({}),
        b"sig",
    );
    let claims = inject
        .decide(|c| {
            c["nats"]["connect_opts"]["user"] = "oauthtoken".into();
            c["nats"]["connect_opts"]["pass"] = shaped.into();
        })
        .await?;
    let reason = claims["nats"]["error"].as_str().unwrap_or("").to_owned();
    assert!(reason.contains("JWKS unavailable"), "{reason}");

    // The provider comes up: the background refresh finds it.
    let mut oidc = Oidc::start_with(
        json!({
            "generate": [ { "kid": "rsa-1", "alg": "RS256" }, { "kid": "ec-1", "alg": "ES256" } ],
            "audience": AUDIENCE,
            "clients": clients(),
        }),
        port,
    )?;
    assert_eq!(oidc.issuer, issuer);
    let token = oidc.token("sensor-a").await?;
    let mut admitted = false;
    for _ in 0..40 {
        if raw::connect(
            server.port,
            |_| json!({ "user": "oauthtoken", "pass": token }),
        )
        .await?
            == Outcome::Admitted
        {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(admitted, "tokens not accepted after the provider came up");
    assert!(http_ok(ready, "/readyz").await?);

    // Down during refresh: cached keys keep working, then a clear deny after max_stale.
    oidc.stop();
    let outcome = raw::connect(
        server.port,
        |_| json!({ "user": "oauthtoken", "pass": token }),
    )
    .await?;
    assert_eq!(outcome, Outcome::Admitted, "cached keys must still verify");
    let mut reason = String::new();
    for _ in 0..40 {
        let tok = token.clone();
        let claims = inject
            .decide(move |c| {
                c["nats"]["connect_opts"]["user"] = "oauthtoken".into();
                c["nats"]["connect_opts"]["pass"] = tok.into();
            })
            .await?;
        reason = claims["nats"]["error"].as_str().unwrap_or("").to_owned();
        if !reason.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        reason.contains("JWKS unavailable") && reason.contains("max_stale"),
        "{reason}"
    );
    assert!(!http_ok(ready, "/readyz").await?);
    Ok(())
}

/// GET `path` on the operations listener; true on 200.
async fn http_ok(addr: std::net::SocketAddr, path: &str) -> Result<bool> {
    let resp = reqwest::get(format!("http://{addr}{path}")).await?;
    Ok(resp.status().is_success())
}

#[tokio::test]
async fn connection_is_dropped_when_its_token_expires() -> Result<()> {
    init_tracing();
    let oidc = Oidc::start_with(
        json!({
            "generate": [ { "kid": "rsa-1", "alg": "RS256" }, { "kid": "ec-1", "alg": "ES256" } ],
            "audience": AUDIENCE,
            "ttl": 5,
            "clients": clients(),
        }),
        0,
    )?;
    let d = deploy_with(oidc, "").await?;
    let token = d.oidc.token("mqtt-client").await?;
    let (client, mut errors) = connect_watching(&d.server.url(), token_options(token)).await?;
    client.flush().await?;
    // nats-server enforces the user JWT's exp, which is the token's: the connection is
    // closed with an expiry error a few seconds in.
    let e = expect_server_error(&mut errors, "expired").await?;
    assert!(e.to_lowercase().contains("authentication expired"), "{e}");
    Ok(())
}

#[tokio::test]
async fn cached_grants_never_outlive_the_token_or_a_reload() -> Result<()> {
    init_tracing();
    let oidc = Oidc::start_with(
        json!({
            "generate": [ { "kid": "rsa-1", "alg": "RS256" }, { "kid": "ec-1", "alg": "ES256" } ],
            "audience": AUDIENCE,
            "ttl": 6,
            "clients": clients(),
        }),
        0,
    )?;
    let d = deploy_with(oidc, "").await?;
    let metrics = &d.callout.app().metrics();
    let admit = |token: String| {
        let d = &d;
        async move { d.answer(&token).await }
    };

    // A repeat connect with the same token is served from the cache...
    let token = d.oidc.token("mqtt-client").await?;
    assert_eq!(admit(token.clone()).await?, "");
    let hits = metrics.cache_hits.get();
    assert_eq!(admit(token.clone()).await?, "");
    assert_eq!(metrics.cache_hits.get(), hits + 1);

    // ...but never past the token's expiry.
    let exp = decode_parts(&token)?.1["exp"].as_i64().unwrap_or(0);
    while unix_now() <= exp {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reason = admit(token).await?;
    assert!(reason.contains("expired"), "{reason}");

    // A client removed from the config is not served from the cache after the reload.
    let token = d.oidc.token("mqtt-client").await?;
    assert_eq!(admit(token.clone()).await?, "");
    assert_eq!(admit(token.clone()).await?, "");
    d.reload_with(|yaml| {
        let start = yaml.find("    mqtt-client:").unwrap_or(0);
        let end = yaml.find("    devices:").unwrap_or(start);
        format!("{}{}", &yaml[..start], &yaml[end..])
    })
    .await?;
    let reason = admit(token).await?;
    assert!(reason.contains("no oauth2 permissions entry"), "{reason}");
    Ok(())
}

/// A reload while the provider is down keeps the keys the running set has (still
/// bounded by `max_stale`), so an unrelated config edit during an outage does not turn
/// into an oauth2 outage; a reload that takes the keys from elsewhere starts without.
#[tokio::test]
async fn a_reload_during_a_provider_outage_keeps_the_keys() -> Result<()> {
    let mut d = deploy("").await?;
    let token = d.oidc.token("mqtt-client").await?;
    assert_eq!(d.answer(&token).await?, "");
    d.oidc.stop();
    d.reload_with(|yaml| yaml + "# edited during the outage\n")
        .await?;
    assert_eq!(
        d.answer(&token).await?,
        "",
        "the keys did not survive the reload"
    );
    assert!(http_ok(d.callout.app().http_addr(), "/readyz").await?);

    let dead = nats_callout_tests::free_port()?;
    d.reload_with(|yaml| {
        yaml.replace(
            "jwks:\n",
            &format!("jwks:\n  url: \"http://127.0.0.1:{dead}/jwks\"\n"),
        )
    })
    .await?;
    let reason = d.reason(&token).await?;
    assert!(reason.contains("JWKS unavailable"), "{reason}");
    Ok(())
}

/// Whatever an oauth2 plugin grants ends with the token it had the host verify: a
/// partner plugin that sets no expiry of its own (`misbehave`'s `verify-jwt`) still
/// gets the token's `exp` on the user JWT.
#[tokio::test]
async fn a_grant_never_outlives_the_verified_token() -> Result<()> {
    let d = deploy("").await?;
    d.reload_with(|yaml| {
        yaml + "plugins:\n  - { mode: oauth2, builtin: misbehave, \
                settings: { behaviour: verify-jwt, account: CSC } }\n"
    })
    .await?;
    let token = d.oidc.token("mqtt-client").await?;
    let claims = d.response(&token).await?;
    let user_jwt = claims["nats"]["jwt"].as_str().context("admitted")?;
    let token_exp = decode_parts(&token)?.1["exp"].as_i64();
    assert!(token_exp.is_some());
    assert_eq!(decode_parts(user_jwt)?.1["exp"].as_i64(), token_exp);
    Ok(())
}

#[tokio::test]
async fn mqtt_client_connects_with_its_token_as_password() -> Result<()> {
    init_tracing();
    let oidc = Oidc::start(AUDIENCE, clients())?;
    let keys = Keys::generate();
    let mqtt_port = nats_callout_tests::free_port()?;
    let js = tempfile::tempdir()?;
    // MQTT (3.1.1) needs a server name and JetStream, also in the account it lands in.
    let config = format!(
        "server_name: mqtt-1\njetstream {{ store_dir: {:?} }}\nmqtt {{ listen: 127.0.0.1:{mqtt_port} }}\n{}",
        js.path(),
        // A static user in CSC (bypassing the callout) watches everything there.
        server_config(&keys)
            .replace(
                "CSC {}",
                "CSC { jetstream: enabled, users: [ { user: watch, password: watch } ] }"
            )
            .replace(", platform ]", ", platform, watch ]")
    );
    let server = NatsServer::start(&config)?;
    let yaml = callout_yaml(&server.url(), &oidc.issuer, "", "");
    let _callout = Callout::start(&keys, &yaml).await?;

    let token = oidc.token("mqtt-client").await?;
    let watcher = connect(
        &server.url(),
        async_nats::ConnectOptions::with_user_and_password("watch".into(), "watch".into()),
    )
    .await?;
    let mut events = watcher.subscribe("events.>").await?;
    let mut outside = watcher.subscribe("device-state.>").await?;
    synced(&watcher).await?;

    let mut options = rumqttc::MqttOptions::new("mqtt-client-1", "127.0.0.1", mqtt_port);
    options.set_credentials("oauthtoken", token);
    let mut mqtt = match nats_callout_tests::mqtt::connect(options).await? {
        Ok(m) => m,
        Err(refused) => bail!("MQTT client refused: {refused}"),
    };
    mqtt.publish("events/door", b"open").await?;
    let msg = tokio::time::timeout(RECV, events.next())
        .await?
        .expect("event");
    assert_eq!(msg.subject.as_str(), "events.door");
    // Outside its grant: not delivered (nats-server drops it for this client), while
    // the watcher, allowed everything in CSC, would have seen it.
    let _ = mqtt.publish("device-state/x", b"no").await;
    assert!(
        stays_silent(&mut outside).await,
        "a publish outside the grant was delivered"
    );

    // A bad token over MQTT is refused, never anonymous.
    let mut options = rumqttc::MqttOptions::new("mqtt-client-2", "127.0.0.1", mqtt_port);
    options.set_credentials("oauthtoken", "not-a-token");
    assert!(nats_callout_tests::mqtt::connect(options).await?.is_err());
    Ok(())
}

/// Revoked tokens are refused by their `sub`, client (`azp`) or `jti`, a cached grant
/// included, while other tokens of the same provider keep being admitted.
#[tokio::test]
async fn revoked_subjects_clients_and_token_ids_are_refused_at_once() -> Result<()> {
    init_tracing();
    let files = tempfile::tempdir()?;
    let revoked = files.path().join("revoked.yaml");
    std::fs::write(&revoked, "")?;
    let oidc = Oidc::start(AUDIENCE, clients())?;
    // Inserted after the jwks keys, at the top level.
    let revocation = format!("revocation: {{ file: {revoked:?} }}\n");
    let d = deploy_with(oidc, &revocation).await?;
    let claim = |token: &str, name: &str| -> Result<String> {
        let (_, claims) = decode_parts(token)?;
        claims[name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no {name} in {claims}"))
    };
    let revoke = |text: String| write_atomically(&revoked, text);
    let refused_as = |token: String, needle: String| {
        let d = &d;
        async move {
            nats_callout_tests::ops::eventually("the revocation", RECV * 3, || {
                let (token, needle) = (token.clone(), needle.clone());
                async move { Ok(d.answer(&token).await?.contains(&needle).then_some(())) }
            })
            .await
        }
    };

    let a = d.oidc.token("sensor-a").await?;
    let b = d.oidc.token("sensor-b").await?;
    let (c, c2) = (
        d.oidc.token("mqtt-client").await?,
        d.oidc.token("mqtt-client").await?,
    );
    for t in [&a, &a, &b, &c, &c2] {
        assert_eq!(d.answer(t).await?, "", "admitted before any revocation");
    }
    assert!(d.callout.app().metrics().cache_hits.get() >= 1);

    let sub = claim(&a, "sub")?;
    revoke(format!("sub: [{sub:?}]\n"))?;
    refused_as(a.clone(), format!("sub {sub:?} is revoked")).await?;
    d.refused(&a).await?;
    assert_eq!(d.answer(&b).await?, "", "another subject stays");

    let client_b = claim(&b, "azp")?;
    let jti = claim(&c, "jti")?;
    revoke(format!("client: [{client_b}]\njti: [{jti:?}]\n"))?;
    refused_as(b, format!("client {client_b:?} is revoked")).await?;
    refused_as(c, format!("jti {jti:?} is revoked")).await?;
    assert_eq!(
        d.answer(&c2).await?,
        "",
        "the same client's other token stays"
    );
    assert_eq!(
        d.answer(&a).await?,
        "",
        "lifted: only the file's entries count"
    );
    Ok(())
}
