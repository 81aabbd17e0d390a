//! Bad input on the request subject and a misbehaving plugin: each gets a clear error
//! (a signed error response where the request can be addressed; otherwise an empty
//! answer, which nats-server takes as "not authorized" at once, and a log line), and
//! the next good connection still succeeds.

use anyhow::Result;
use nats_callout::pipeline::request::unix_now;
use nats_callout_tests::inject::{Injector, request};
use nats_callout_tests::raw::{self, Outcome};
use nats_callout_tests::{Callout, Keys, NatsServer, callout_server_config, init_tracing};

struct Setup {
    server: NatsServer,
    keys: Keys,
    callout: Callout,
    inject: Injector,
}

const NOAUTH: &str = "permissions:\n  noauth:\n    account: ANONYMOUS\n    permissions:\n      pub: { allow: [\"public.>\"] }\n";

async fn setup(yaml_extra: &str) -> Result<Setup> {
    setup_with(yaml_extra, false, "").await
}

/// `xkey`: nats-server seals its requests to the callout's xkey (the callout needs
/// `xkey_seed_file` then). `side`: the injector's server config.
async fn setup_with(yaml_extra: &str, xkey: bool, side: &str) -> Result<Setup> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, xkey))?;
    let mut inject = Injector::start_with(&keys.issuer.public_key(), side)?;
    let yaml = format!(
        "nats:\n  - {{ name: main, url: {}, nkey_seed_file: nkey-seed }}\n{}\
         issuer_seed_file: issuer-seed\n{yaml_extra}",
        server.url(),
        inject.nats_entry()
    );
    let callout = Callout::start(&keys, &yaml).await?;
    inject.connect().await?;
    Ok(Setup {
        server,
        keys,
        callout,
        inject,
    })
}

impl Setup {
    /// The `nats.error` of the response to a raw payload.
    async fn error_for(&self, payload: Vec<u8>) -> Result<String> {
        let claims = self.inject.response(payload).await?;
        assert!(
            claims["nats"]["jwt"].is_null(),
            "an error response carries no user JWT"
        );
        Ok(claims["nats"]["error"].as_str().unwrap_or("").to_owned())
    }

    async fn anonymous_is_admitted(&self) -> Result<()> {
        let outcome = raw::anonymous(self.server.port).await?;
        assert_eq!(outcome, Outcome::Admitted);
        Ok(())
    }
}

#[tokio::test]
async fn hostile_requests_get_clear_errors_and_service_continues() -> Result<()> {
    let s = setup(NOAUTH).await?;
    let issuer = s.keys.issuer.public_key();
    let server = nkeys::KeyPair::new_server();

    // A control: a well-formed forged request is decided (its "client" is anonymous).
    let ok = s.inject.decide(|_| {}).await?;
    assert!(ok["nats"]["jwt"].is_string(), "{ok}");

    // Signed by another key than its issuer.
    let other = nkeys::KeyPair::new_server();
    let mut forged = request(&other, &issuer, |_| {});
    let good = request(&server, &issuer, |_| {});
    let sig = good.rsplit('.').next().unwrap_or_default().to_owned();
    forged.truncate(forged.rfind('.').unwrap_or(0) + 1);
    forged.push_str(&sig);
    let e = s.error_for(forged.into_bytes()).await?;
    assert!(e.contains("signature does not verify"), "{e}");

    let e = s
        .error_for(request(&server, &issuer, |c| c["aud"] = "someone-else".into()).into_bytes())
        .await?;
    assert!(e.contains("audience"), "{e}");

    let e = s
        .error_for(request(&server, &issuer, |c| c["exp"] = (unix_now() - 60).into()).into_bytes())
        .await?;
    assert!(e.contains("expired"), "{e}");
    let e = s
        .error_for(request(&server, &issuer, |c| c["exp"] = i64::MIN.into()).into_bytes())
        .await?;
    assert!(e.contains("expired"), "{e}");

    let e = s
        .error_for(
            request(&server, &issuer, |c| {
                if let Some(m) = c.as_object_mut() {
                    m.remove("exp");
                }
            })
            .into_bytes(),
        )
        .await?;
    assert!(e.contains("no expiry"), "{e}");

    let e = s
        .error_for(
            request(&server, &issuer, |c| {
                c["sub"] = nkeys::KeyPair::new_account().public_key().into()
            })
            .into_bytes(),
        )
        .await?;
    assert!(e.contains("this service answers for"), "{e}");

    // Not a server key as issuer (a user key signing its own request).
    let user = nkeys::KeyPair::new_user();
    let e = s
        .error_for(
            request(&user, &issuer, |c| {
                c["nats"]["server_id"]["id"] = user.public_key().into()
            })
            .into_bytes(),
        )
        .await?;
    assert!(e.contains("not a server key"), "{e}");

    // A credential of a mode that is not enabled is refused, not admitted anonymously.
    let e = s
        .error_for(
            request(&server, &issuer, |c| {
                c["nats"]["connect_opts"]["auth_token"] = "a-bearer-token".into()
            })
            .into_bytes(),
        )
        .await?;
    assert!(e.contains("oauth2 authentication is not enabled"), "{e}");

    // Garbage cannot be addressed: an empty answer, a log line, and nothing breaks.
    for garbage in [
        b"\x00\xffgarbage".to_vec(),
        b"eyJ.eyJ.x".to_vec(),
        vec![b'.'; 100_000],
        Vec::new(),
    ] {
        assert_eq!(s.inject.ask(garbage).await?, Some(Vec::new()));
    }

    // Without a reply subject nobody waits for a decision: none is made or counted.
    let requests = &s.callout.app().metrics().requests;
    let before = requests.get();
    s.inject
        .publish(request(&server, &issuer, |_| {}).into_bytes())
        .await?;
    s.inject.decide(|_| {}).await?;
    assert_eq!(
        requests.get(),
        before + 1,
        "only the request with a reply counts"
    );
    s.anonymous_is_admitted().await
}

/// In nkey mode the host checks the client's signature over the nonce before any
/// plugin runs: even a plugin that admits every request (as a careless partner plugin
/// might) never sees a forged or missing signature.
#[tokio::test]
async fn the_host_checks_the_nkey_signature_before_any_plugin() -> Result<()> {
    let s =
        setup("plugins:\n  - { mode: nkey, builtin: misbehave, settings: { behaviour: allow } }\n")
            .await?;
    let device = nkeys::KeyPair::new_user();
    let pk = device.public_key();
    let signed = |key: &nkeys::KeyPair, nonce: &str| {
        raw::nkey_connect(&pk, key, nonce)["sig"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let ask = |nonce: &str, sig: String| {
        let (pk, nonce) = (pk.clone(), nonce.to_owned());
        s.inject.error_for(move |c| {
            c["nats"]["connect_opts"]["nkey"] = pk.into();
            c["nats"]["connect_opts"]["sig"] = sig.into();
            c["nats"]["client_info"]["nonce"] = nonce.into();
        })
    };
    // The control: a genuine signature reaches the plugin, which admits.
    assert_eq!(ask("nonce-1", signed(&device, "nonce-1")).await?, "");
    for (nonce, sig, why) in [
        (
            "nonce-1",
            signed(&device, "nonce-2"),
            "invalid nkey signature",
        ),
        (
            "nonce-1",
            signed(&nkeys::KeyPair::new_user(), "nonce-1"),
            "invalid nkey signature",
        ),
        (
            "nonce-1",
            "not base64!".to_owned(),
            "invalid nkey signature",
        ),
        ("nonce-1", String::new(), "sig) missing"),
        ("", signed(&device, ""), "nonce missing"),
    ] {
        let e = ask(nonce, sig).await?;
        assert!(e.contains(why), "{why}: {e}");
    }
    // And end to end: a real client signing with the wrong key is refused.
    let thief = nkeys::KeyPair::new_user();
    let outcome =
        raw::connect(s.server.port, |nonce| raw::nkey_connect(&pk, &thief, nonce)).await?;
    assert_eq!(outcome, Outcome::Refused("Authorization Violation".into()));
    let outcome = raw::connect(s.server.port, |nonce| {
        raw::nkey_connect(&pk, &device, nonce)
    })
    .await?;
    assert_eq!(outcome, Outcome::Admitted);
    Ok(())
}

/// With xkey on, a request sealed to another key, a broken seal, or a seal without
/// the server's key in its header cannot be opened: an empty answer, at once, so
/// nats-server refuses the client instead of waiting out its auth timeout.
#[tokio::test]
async fn requests_that_cannot_be_unsealed_are_refused_at_once() -> Result<()> {
    let s = setup_with(&format!("{NOAUTH}xkey_seed_file: xkey-seed\n"), true, "").await?;
    let issuer = s.keys.issuer.public_key();
    let server = nkeys::KeyPair::new_server();
    let server_xkey = nkeys::XKey::new();
    let header = |key: &str| {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Server-Xkey", key);
        h
    };
    let request = request(&server, &issuer, |_| {}).into_bytes();
    let ours = nkeys::XKey::from_public_key(&s.keys.xkey.public_key())?;
    let sealed = server_xkey.seal(&request, &ours)?;
    let answer = s
        .inject
        .ask_with(sealed.clone(), header(&server_xkey.public_key()))
        .await?
        .unwrap_or_default();
    assert!(!answer.is_empty(), "a well-sealed request is answered");

    let elsewhere = server_xkey.seal(&request, &nkeys::XKey::new())?;
    let mut broken = sealed.clone();
    let last = broken.len() - 1;
    broken[last] ^= 1;
    for (what, payload, headers) in [
        (
            "sealed to another key",
            elsewhere,
            header(&server_xkey.public_key()),
        ),
        ("broken seal", broken, header(&server_xkey.public_key())),
        (
            "not an xkey in the header",
            sealed.clone(),
            header("not-a-key"),
        ),
        ("no header", sealed, async_nats::HeaderMap::new()),
    ] {
        let answer = s.inject.ask_with(payload, headers).await?;
        assert_eq!(answer, Some(Vec::new()), "{what}");
    }
    s.anonymous_is_admitted().await
}

#[tokio::test]
async fn trapping_plugin_denies_with_cause_and_host_keeps_serving() -> Result<()> {
    // Anonymous clients go to a plugin that traps on every call; NKey clients to the
    // real nkey plugin, which must keep working right beside it.
    let device = nkeys::KeyPair::new_user();
    let yaml = format!(
        "plugins:\n  - {{ mode: noauth, builtin: misbehave, settings: {{ behaviour: trap }} }}\n  \
         - {{ mode: nkey, builtin: nkey }}\npermissions:\n  nkey:\n    dev:\n      public_key: {}\n      \
         account: DEVICES\n      permissions: {{ pub: {{ allow: [\"device-state.dev\"] }} }}\n",
        device.public_key()
    );
    let s = setup(&yaml).await?;
    let issuer = s.keys.issuer.public_key();
    let server = nkeys::KeyPair::new_server();
    for _ in 0..3 {
        let e = s
            .error_for(request(&server, &issuer, |_| {}).into_bytes())
            .await?;
        assert!(e.contains("trapped"), "{e}");
        let outcome = raw::anonymous(s.server.port).await?;
        assert_eq!(outcome, Outcome::Refused("Authorization Violation".into()));
        let outcome = raw::connect(s.server.port, |nonce| {
            raw::nkey_connect(&device.public_key(), &device, nonce)
        })
        .await?;
        assert_eq!(outcome, Outcome::Admitted);
    }
    Ok(())
}

/// A response the server cannot take (over its `max_payload`, here a grant of many
/// subjects against a 4 KiB limit) is replaced by an empty answer, so the client is
/// refused at once instead of after the auth timeout.
#[tokio::test]
async fn a_response_over_max_payload_becomes_an_empty_answer() -> Result<()> {
    let subjects: Vec<String> = (0..40)
        .map(|i| format!("\"public.a-rather-long-subject-name-to-fill-the-grant.{i:02}\""))
        .collect();
    let yaml = format!(
        "permissions:\n  noauth:\n    account: ANONYMOUS\n    permissions:\n      \
         pub: {{ allow: [{}] }}\n",
        subjects.join(", ")
    );
    let s = setup_with(&yaml, false, "max_payload: 4096").await?;
    let issuer = s.keys.issuer.public_key();
    let request = request(&s.inject.server_key, &issuer, |_| {});
    assert!(request.len() < 4096, "the request itself fits");
    assert_eq!(s.inject.ask(request.into_bytes()).await?, Some(Vec::new()));
    // The same grant through the main server (default 1 MiB) admits.
    s.anonymous_is_admitted().await
}
