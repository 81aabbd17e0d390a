//! What the grant of contract 0.2.0 says, against the real nats-server: each field either
//! enforced by the server (`times` with `locale`, `proxy_required`) or by the host
//! (`allowed_connection_types` in password.rs, `source_networks` here), each with a case
//! that admits beside the one that refuses, so a field ignored would fail the test. And
//! the fields 0.2.0 leaves out because nats-server ignores them for auth-callout users:
//! a user JWT with a `subs` limit of 1 does not stop a third subscription.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use futures::StreamExt;
use nats_callout::nats::claims::RequestClaims;
use nats_callout::nats::jwt;
use nats_callout::pipeline::request::unix_now;
use nats_callout_tests::inject::Injector;
use nats_callout_tests::raw::{self, Outcome};
use nats_callout_tests::{
    Callout, Keys, NatsServer, callout_server_config, connect, init_tracing, platform, synced,
};
use serde_json::{Value, json};

/// `HH:MM:SS` of now plus `offset_secs`, in a zone `zone_secs` east of UTC.
fn clock(offset_secs: i64, zone_secs: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let t = (now + offset_secs + zone_secs).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60)
}

/// A route per case: user `<name>` gets `grant` from the misbehave plugin.
fn route(name: &str, grant: Value) -> (String, String) {
    let plugin = format!(
        "  - name: {name}\n    builtin: misbehave\n    settings: {{ behaviour: allow, grant: {grant} }}\n"
    );
    let route = format!(
        "  - {{ name: {name}, match: {{ credentials: user-password, username: {name} }}, plugins: [{name}] }}\n"
    );
    (plugin, route)
}

#[tokio::test]
async fn times_locale_proxy_and_source_networks_are_enforced() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let mut inject = Injector::start(&keys.issuer.public_key())?;
    let base = json!({ "account": "DEVICES", "publish": { "allow": ["x"] } });
    let with = |extra: Value| {
        let mut g = base.clone();
        if let (Some(g), Some(extra)) = (g.as_object_mut(), extra.as_object()) {
            g.extend(extra.clone());
        }
        g
    };
    // UTC+14: a window around now there is half a day from now in the server's zone,
    // so the server admits inside it only if it reads `locale`.
    let kiribati = 14 * 3600;
    let cases = [
        ("open", with(json!({}))),
        (
            "outside",
            with(
                json!({ "times": [{ "start": clock(7200, 0), "end": clock(10800, 0) }], "locale": "UTC" }),
            ),
        ),
        (
            "inside",
            with(
                json!({ "times": [{ "start": clock(-3600, kiribati), "end": clock(3600, kiribati) }],
                         "locale": "Etc/GMT-14" }),
            ),
        ),
        (
            "nowhere",
            with(
                json!({ "times": [{ "start": clock(-3600, 0), "end": clock(3600, 0) }],
                         "locale": "Mars/Olympus_Mons" }),
            ),
        ),
        ("proxied", with(json!({ "proxy_required": true }))),
        (
            "lan",
            with(json!({ "source_networks": ["10.0.0.0/8", "192.168.0.0/16"] })),
        ),
        (
            "loopback",
            with(json!({ "source_networks": ["127.0.0.0/8", "::1/128"] })),
        ),
    ];
    let (mut plugins, mut routes) = (String::new(), String::new());
    for (name, grant) in &cases {
        let (p, r) = route(name, grant.clone());
        plugins.push_str(&p);
        routes.push_str(&r);
    }
    let yaml = format!(
        "nats:\n  - {{ url: {}, nkey_seed_file: nkey-seed }}\n{}issuer_seed_file: issuer-seed\n\
         plugins:\n{plugins}routes:\n{routes}",
        server.url(),
        inject.nats_entry(),
    );
    let _callout = Callout::start(&keys, &yaml).await?;
    inject.connect().await?;
    let login = |user: &'static str| move |_: &str| json!({ "user": user, "pass": "x" });
    let refused = Outcome::Refused("Authorization Violation".into());
    for (user, expected) in [
        ("open", Outcome::Admitted),
        ("outside", refused.clone()),
        ("inside", Outcome::Admitted),
        ("nowhere", refused.clone()),
        ("proxied", refused.clone()),
        ("lan", refused.clone()),
        ("loopback", Outcome::Admitted),
    ] {
        assert_eq!(
            raw::connect(server.port, login(user)).await?,
            expected,
            "{user}"
        );
    }
    // The host's own refusal says why; the server's are in its log.
    let e = inject
        .error_for(|c| {
            c["nats"]["connect_opts"]["user"] = "lan".into();
            c["nats"]["connect_opts"]["pass"] = "x".into();
        })
        .await?;
    assert_eq!(
        e,
        "lan: client address 127.0.0.1 is outside the grant's source networks"
    );
    let log = server.log();
    assert!(log.contains("outside of valid connect times"), "{log}");
    Ok(())
}

/// A minimal callout of the test's own that admits everyone into DEVICES with a user
/// JWT saying `subs: 1`: what a grant with limits would produce.
async fn limited_responder(keys: &Keys, url: &str) -> Result<tokio::task::JoinHandle<()>> {
    let client = connect(
        url,
        async_nats::ConnectOptions::with_nkey(keys.callout.seed()?),
    )
    .await?;
    let mut requests = client.subscribe("$SYS.REQ.USER.AUTH").await?;
    synced(&client).await.ok();
    let issuer = jwt::SigningKey::from_nkey(&keys.issuer)?;
    let issuer_public = keys.issuer.public_key();
    Ok(tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            let Some(reply) = msg.reply else { continue };
            let Ok(text) = std::str::from_utf8(&msg.payload) else {
                continue;
            };
            let Ok(req) = jwt::decode_verified::<RequestClaims>(text) else {
                continue;
            };
            let user = req.nats.user_nkey;
            let mut user_claims = json!({
                "iat": unix_now(), "iss": issuer_public, "sub": user, "aud": "DEVICES",
                "nats": { "pub": { "allow": [">"] }, "sub": { "allow": [">"] },
                          "subs": 1, "data": -1, "payload": -1, "type": "user", "version": 2 }
            });
            let Ok(user_jwt) = jwt::encode(&mut user_claims, &issuer) else {
                continue;
            };
            let mut response = json!({
                "iat": unix_now(), "iss": issuer_public, "sub": user, "aud": req.iss,
                "nats": { "jwt": user_jwt, "type": "authorization_response", "version": 2 }
            });
            let Ok(answer) = jwt::encode(&mut response, &issuer) else {
                continue;
            };
            let _ = client.publish(reply, answer.into()).await;
        }
    }))
}

/// The README's claim, re-tested because a maintainer's comment (synadia-io/callout.go
/// issue 12) says `subs` is enforced: not for auth-callout users. nats-server clears the
/// client's JWT before it applies user limits (`applyAccountLimits` reads them from the
/// JWT the client presented). If a release starts enforcing them, this test fails and
/// the contract can offer limits again.
#[tokio::test]
async fn nats_server_ignores_user_limits_of_callout_users() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let responder = limited_responder(&keys, &server.url()).await?;
    let client = connect(&server.url(), async_nats::ConnectOptions::new()).await?;
    let mut subs = Vec::new();
    for i in 0..3 {
        subs.push(client.subscribe(format!("limits.{i}")).await?);
    }
    synced(&client).await?;
    let publisher = platform(&server.url()).await?;
    publisher.publish("limits.2", "third".into()).await?;
    publisher.flush().await?;
    let third = tokio::time::timeout(Duration::from_secs(5), subs[2].next())
        .await
        .context("the third subscription got nothing: subs is enforced now")?;
    assert_eq!(third.map(|m| m.payload.to_vec()), Some(b"third".to_vec()));
    responder.abort();
    Ok(())
}
