//! Opaque access tokens end to end: the real `oidc-provider` issues them, clients connect
//! with them to a real nats-server, and the introspection plugin asks the provider's RFC
//! 7662 endpoint about each, over outbound HTTP, authenticating with a client secret read
//! from a file; the oauth2 plugin's permissions entries decide, and JWTs on the same route
//! go on to the oauth2 plugin.

use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use nats_callout_tests::inject::Injector;
use nats_callout_tests::oidc::{Oidc, client, opaque_client};
use nats_callout_tests::ops::{check, count, scrape};
use nats_callout_tests::raw::{self, Outcome};
use nats_callout_tests::{
    Callout, Keys, NatsServer, callout_server_config, connect, connect_watching,
    expect_server_error, init_tracing, platform, synced,
};
use serde_json::json;

const AUDIENCE: &str = "nats-callout";
const SECRET: &str = "introspector-secret";

struct Deployment {
    server: NatsServer,
    oidc: Oidc,
    inject: Injector,
    callout: Callout,
    /// The client secret's file (in a directory of its own).
    secret_file: std::path::PathBuf,
    _secret_dir: tempfile::TempDir,
}

/// A deployment whose bearer tokens take the route [introspection, oauth2], with the
/// decision cache off (so that every connect reaches the plugin) and the plugin cache
/// for `cache_ttl`. The service introspects as client `introspector` with `secret`.
async fn deploy(cache_ttl: &str, secret: &str) -> Result<Deployment> {
    init_tracing();
    let oidc = Oidc::start(
        AUDIENCE,
        vec![
            opaque_client("sensor-7", json!({ "device_id": "sensor-7" })),
            opaque_client("sensor-8", json!({ "device_id": "sensor-8" })),
            opaque_client("hostile", json!({ "device_id": "a.>" })),
            client("jwt-sensor", "ES256", json!({ "device_id": "jwt-sensor" })),
            client("introspector", "RS256", json!({})),
        ],
    )?;
    let secret_dir = tempfile::tempdir()?;
    let secret_file = secret_dir.path().join("client-secret");
    std::fs::write(&secret_file, format!("{secret}\n"))?;
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let mut inject = Injector::start(&keys.issuer.public_key())?;
    let yaml = format!(
        r#"nats:
  - {{ url: {url}, nkey_seed_file: nkey-seed }}
{inject}issuer_seed_file: issuer-seed
reload_interval: 200ms
decision_cache: {{ ttl: 0 }}
jwks: {{ issuer: "{issuer}", audience: [{AUDIENCE}] }}
plugins:
  - name: introspection
    builtin: introspection
    permissions: oauth2
    settings:
      endpoint: "{issuer}/token/introspection"
      client_id: introspector
      audience: {AUDIENCE}
      issuer: "{issuer}"
      cache_ttl: {cache_ttl}
      jwt_tokens: abstain
    secrets: {{ client_secret: {{ file: "{secret_file}" }} }}
    allowed_outbound_hosts: ["http://127.0.0.1:{port}"]
routes:
  - {{ name: tokens, match: {{ credentials: bearer-token }}, plugins: [introspection, oauth2] }}
permissions:
  oauth2:
    devices:
      subject: "*"
      claims: {{ device_id: "*" }}
      account: DEVICES
      permissions:
        pub: {{ allow: ["device-state.{{{{claims.device_id}}}}"] }}
        sub: {{ allow: ["device-commands.{{{{claims.device_id}}}}"] }}
"#,
        url = server.url(),
        inject = inject.nats_entry(),
        issuer = oidc.issuer,
        port = oidc.port,
        secret_file = secret_file.display(),
    );
    let callout = Callout::start(&keys, &yaml).await?;
    inject.connect().await?;
    Ok(Deployment {
        server,
        oidc,
        inject,
        callout,
        secret_file,
        _secret_dir: secret_dir,
    })
}

impl Deployment {
    /// The callout's deny reason for `token` ("" when it admits).
    async fn answer(&self, token: &str) -> Result<String> {
        let token = token.to_owned();
        self.inject
            .error_for(move |c| {
                c["nats"]["connect_opts"]["user"] = "oauthtoken".into();
                c["nats"]["connect_opts"]["pass"] = token.into();
            })
            .await
    }
}

fn token_options(token: String) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::with_user_and_password("oauthtoken".into(), token)
}

#[tokio::test]
async fn opaque_tokens_are_introspected_once_and_scoped_like_jwts() -> Result<()> {
    let d = deploy("60s", SECRET).await?;
    let url = d.server.url();
    let token = d.oidc.token("sensor-7").await?;
    assert!(!token.contains('.'), "not opaque: {token}");

    // A real client with its opaque token: its own subjects only.
    let platform = platform(&url).await?;
    let mut states = platform.subscribe("device-state.>").await?;
    synced(&platform).await?;
    let (device, mut errors) = connect_watching(&url, token_options(token.clone())).await?;
    device
        .publish("device-state.sensor-8", "forged".into())
        .await?;
    device.flush().await?;
    expect_server_error(&mut errors, "permissions violation for publish").await?;
    device
        .publish("device-state.sensor-7", "21C".into())
        .await?;
    device.flush().await?;
    let msg = tokio::time::timeout(Duration::from_secs(5), states.next())
        .await?
        .expect("state");
    assert_eq!(msg.subject.as_str(), "device-state.sensor-7");

    // Reconnects (as auth_token too) are answered from the plugin cache: one introspection.
    for _ in 0..3 {
        assert_eq!(raw::bearer(d.server.port, &token).await?, Outcome::Admitted);
    }
    assert_eq!(d.oidc.introspections().await?, 1);

    // A JWT on the same route: introspection abstains, oauth2 verifies it locally.
    let jwt = d.oidc.token("jwt-sensor").await?;
    let _jwt_device = connect(&url, token_options(jwt)).await?;
    assert_eq!(d.oidc.introspections().await?, 1);

    // Tokens the provider does not know, and claims that would widen a subject.
    assert_eq!(
        d.answer("made-up-token").await?,
        "tokens: access token is not active (expired, revoked or unknown to the provider)"
    );
    let hostile = d.oidc.token("hostile").await?;
    let r = d.answer(&hostile).await?;
    assert!(r.contains("claims.device_id"), "{r}");

    let m = scrape(d.callout.app().http_addr()).await?;
    let series = format!(
        "plugin_http_requests_total{{host=\"http://127.0.0.1:{}\",plugin=\"introspection\",status=\"200\"}}",
        d.oidc.port
    );
    assert_eq!(count(&m, &series), 3, "{m}");
    assert_eq!(
        count(&m, "auth_route_failures_total{route=\"tokens\"}"),
        2,
        "{m}"
    );
    Ok(())
}

/// Without the plugin cache every connect asks, and a token revoked at the provider is
/// refused at once; with it, it is honoured until the answer expires (the README says so).
#[tokio::test]
async fn revoked_tokens_are_refused_when_not_cached() -> Result<()> {
    let d = deploy("0s", SECRET).await?;
    let token = d.oidc.token("sensor-8").await?;
    assert_eq!(d.answer(&token).await?, "");
    assert_eq!(d.answer(&token).await?, "");
    assert_eq!(d.oidc.introspections().await?, 2);
    d.oidc.revoke("sensor-8", &token).await?;
    let r = d.answer(&token).await?;
    assert!(r.contains("not active"), "{r}");
    assert_eq!(
        raw::bearer(d.server.port, &token).await?,
        Outcome::Refused("Authorization Violation".into())
    );
    Ok(())
}

/// The endpoint refusing the service, or gone: a deny that says why, never an allow, and
/// no secret in the reason. A rotated secret file takes effect without a restart.
#[tokio::test]
async fn endpoint_failures_deny() -> Result<()> {
    let mut d = deploy("60s", "wrong-secret").await?;
    let token = d.oidc.token("sensor-7").await?;
    let r = d.answer(&token).await?;
    assert!(
        r.starts_with("tokens: introspection endpoint refused this service (HTTP 401)"),
        "{r}"
    );
    assert!(!r.contains("wrong-secret"), "{r}");

    let reloads = d.callout.app().metrics().reloads.with_label_values(&["ok"]);
    let before = reloads.get();
    std::fs::write(&d.secret_file, SECRET)?;
    for _ in 0..100 {
        if reloads.get() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reloads.get() > before, "the rotated secret did not reload");
    assert_eq!(d.answer(&token).await?, "");

    // The provider gone: a token it answered for is still served from the plugin cache,
    // a new one is refused.
    let fresh = d.oidc.token("sensor-8").await?;
    d.oidc.stop();
    assert_eq!(d.answer(&token).await?, "");
    let r = d.answer(&fresh).await?;
    assert!(
        r.starts_with("tokens: introspection endpoint unreachable"),
        "{r}"
    );
    assert_eq!(
        raw::bearer(d.server.port, &fresh).await?,
        Outcome::Refused("Authorization Violation".into())
    );
    Ok(())
}

/// Secrets are named in errors, never shown: a missing file, an unset variable, an entry
/// without the secret the plugin needs.
#[test]
fn check_names_secret_problems() -> Result<()> {
    let yaml = |secrets: &str| {
        format!(
            "nats: [ {{ url: \"nats://127.0.0.1:1\", nkey_seed_file: nkey-seed }} ]\n\
             issuer_seed_file: issuer-seed\n\
             plugins:\n  - {{ name: introspection, builtin: introspection, permissions: oauth2, \
             allowed_outbound_hosts: [\"https://idp.example.com\"], settings: {{ endpoint: \
             \"https://idp.example.com/introspect\", client_id: nats, audience: nats }}, \
             secrets: {{ {secrets} }} }}\n\
             routes: [ {{ name: tokens, plugins: [introspection] }} ]\n\
             permissions:\n  oauth2:\n    any: {{ subject: \"*\", account: A, permissions: {{}} }}\n"
        )
    };
    for (secrets, expected) in [
        (
            "client_secret: { file: /nonexistent/secret }",
            "plugins[0].secrets.client_secret: cannot read /nonexistent/secret",
        ),
        (
            "client_secret: { env: NATS_CALLOUT_TEST_UNSET_SECRET }",
            "plugins[0].secrets.client_secret: the environment variable \
             NATS_CALLOUT_TEST_UNSET_SECRET is not set",
        ),
        (
            "client_secret: { file: a, env: B }",
            "plugins[0].secrets.client_secret: set either file or env",
        ),
        (
            "api_key: { env: PATH }",
            "secrets.client_secret: not configured",
        ),
    ] {
        let c = check(&yaml(secrets))?;
        assert!(!c.ok, "{secrets}");
        assert!(c.stderr.contains(expected), "{secrets}: {}", c.stderr);
    }
    let c = check(&yaml("client_secret: { env: PATH }"))?;
    assert!(c.ok, "{}", c.stderr);
    Ok(())
}
