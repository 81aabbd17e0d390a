//! Plugin contract versions: components built against an older contract keep loading
//! and deciding end to end (the committed 0.1.0 and 0.2.0 fixtures), a 0.3.0 plugin is
//! handed only the parts of a request it says it reads, and a component of no contract
//! this host knows is refused at load with a reason that says so.

use std::path::PathBuf;

use anyhow::Result;
use nats_callout_tests::inject::Injector;
use nats_callout_tests::ops::check;
use nats_callout_tests::raw::{self, Outcome};
use nats_callout_tests::{
    Callout, Keys, NatsServer, callout_server_config, connect_watching, expect_server_error,
    init_tracing, platform, synced, workspace_root,
};
use sha2::{Digest, Sha256};

/// A plugin built against an older contract, as committed in tests/fixtures.
fn fixture(version: &str, name: &str) -> PathBuf {
    workspace_root().join(format!("tests/fixtures/v{version}/{name}.wasm"))
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn plugins_built_against_contract_0_1_0_keep_deciding() -> Result<()> {
    keep_deciding("0.1.0").await
}

#[tokio::test]
async fn plugins_built_against_contract_0_2_0_keep_deciding() -> Result<()> {
    keep_deciding("0.2.0").await
}

/// The noauth and apikey plugins of contract `version` admit their clients with their
/// grants, and refuse an unknown key.
async fn keep_deciding(version: &str) -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let yaml = format!(
        "nats:\n  - {{ url: {url}, nkey_seed_file: nkey-seed }}\nissuer_seed_file: issuer-seed\n\
         plugins:\n  - mode: noauth\n    path: {noauth}\n  - mode: oauth2\n    path: {apikey}\n    \
         settings:\n      keys:\n        billing:\n          sha256: {digest}\n          \
         account: DEVICES\n          permissions:\n            pub: {{ allow: [\"billing.{{{{name}}}}.>\"] }}\n            \
         sub: {{ allow: [\"_INBOX.>\"] }}\n\
         permissions:\n  noauth:\n    account: ANONYMOUS\n    permissions:\n      \
         pub: {{ allow: [\"public.>\"] }}\n      sub: {{ allow: [\"public.>\"] }}\n",
        url = server.url(),
        noauth = fixture(version, "noauth").display(),
        apikey = fixture(version, "apikey").display(),
        digest = sha256_hex("billing-key-1"),
    );
    let _callout = Callout::start(&keys, &yaml).await?;

    // noauth: anonymous clients get exactly the public grant.
    let (anonymous, mut errors) =
        connect_watching(&server.url(), async_nats::ConnectOptions::new()).await?;
    anonymous.publish("public.hello", "1".into()).await?;
    anonymous.publish("private.hello", "1".into()).await?;
    anonymous.flush().await?;
    let e = expect_server_error(&mut errors, "permissions violation").await?;
    assert!(e.contains("private.hello"), "{e}");

    // apikey: its service gets its entry, an unknown key nothing.
    assert_eq!(
        raw::bearer(server.port, "billing-key-1").await?,
        Outcome::Admitted
    );
    assert_eq!(
        raw::bearer(server.port, "guessed-key").await?,
        Outcome::Refused("Authorization Violation".into())
    );
    let watcher = platform(&server.url()).await?;
    let mut invoices = watcher.subscribe("billing.>").await?;
    synced(&watcher).await?;
    let options = async_nats::ConnectOptions::with_token("billing-key-1".into());
    let (service, _errors) = connect_watching(&server.url(), options).await?;
    service
        .publish("billing.billing.invoice", "42".into())
        .await?;
    service.flush().await?;
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        use futures::StreamExt;
        invoices.next().await
    })
    .await?
    .map(|m| m.subject.to_string());
    assert_eq!(got.as_deref(), Some("billing.billing.invoice"));
    Ok(())
}

/// A component of a contract this host does not know, or of two at once, or of none, is
/// refused at load (by `check`, and by a reload, which keeps the running set) with a
/// reason that says which.
#[test]
fn components_of_no_known_contract_are_refused_at_load() -> Result<()> {
    let check_plugin = |plugin: &str| -> Result<(bool, String)> {
        let c = check(&format!(
            "nats: [ {{ url: \"nats://127.0.0.1:1\", nkey_seed_file: nkey-seed }} ]\n\
             issuer_seed_file: issuer-seed\nplugins:\n  - {{ mode: noauth, builtin: {plugin} }}\n\
             permissions: {{ noauth: {{ account: A, permissions: {{ sub: {{ allow: [x] }} }} }} }}\n"
        ))?;
        Ok((c.ok, c.stderr))
    };
    let (ok, e) = check_plugin("future-contract")?;
    assert!(!ok);
    assert!(
        e.contains("built against plugin contract 0.9.0, which this host does not know (it loads 0.1.0, 0.2.0, 0.3.0)"),
        "{e}"
    );
    let (ok, e) = check_plugin("both-contracts")?;
    assert!(!ok);
    assert!(
        e.contains("exports plugin contracts 0.1.0 and 0.2.0 at once"),
        "{e}"
    );
    // The same config with a plugin of the current contract passes.
    let (ok, e) = check_plugin("noauth")?;
    assert!(ok, "{e}");
    Ok(())
}

/// A 0.3.0 plugin gets only the parts of a request it says it reads (the test plugin's
/// `reads`); the others arrive empty, whatever nats-server sent.
#[tokio::test]
async fn a_plugin_is_handed_only_the_parts_it_reads() -> Result<()> {
    init_tracing();
    for (reads, seen) in [
        ("[client]", "server= client=127.0.0.1 connect= tls=false"),
        (
            "[server, connect]",
            "server=forge client= connect=rust tls=false",
        ),
        ("[]", "server= client= connect= tls=false"),
        (
            "null",
            "server=forge client=127.0.0.1 connect=rust tls=false",
        ),
    ] {
        let keys = Keys::generate();
        let server = NatsServer::start(&callout_server_config(&keys, false))?;
        let mut inject = Injector::start(&keys.issuer.public_key())?;
        let yaml = format!(
            "nats:\n  - {{ url: {}, nkey_seed_file: nkey-seed }}\n{}issuer_seed_file: issuer-seed\n\
             plugins:\n  - {{ mode: noauth, builtin: misbehave, settings: {{ behaviour: echo, reads: {reads} }} }}\n",
            server.url(),
            inject.nats_entry(),
        );
        let _callout = Callout::start(&keys, &yaml).await?;
        inject.connect().await?;
        let said = inject.error_for(|_| {}).await?;
        assert!(said.contains(seen), "reads {reads}: {said}");
    }
    Ok(())
}
