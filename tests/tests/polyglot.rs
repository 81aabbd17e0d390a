//! Plugins in Python and JavaScript: `examples/python-plugin` (componentize-py) and
//! `examples/js-plugin` (componentize-js), built by scripts/setup against the current
//! contract, loaded with the host's default limits, deciding real clients through a real
//! nats-server: API keys by SHA-256 and passwords through the host's
//! `verify-password-hash`, exactly as configured.

use anyhow::Result;
use nats_callout_tests::inject::Injector;
use nats_callout_tests::ops::check;
use nats_callout_tests::raw::{self, Outcome};
use nats_callout_tests::{
    Callout, Keys, NatsServer, callout_server_config, connect_watching, expect_server_error,
    init_tracing,
};
use sha2::{Digest, Sha256};

/// bcrypt (cost 4) of "s3cret".
const HASH: &str = "$2b$04$qlJ4LcpOAB6XT5EsktDSZ.FIJGEdd7lUH2/AXq872Avl2JGyY.lfm";

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A plugin entry for language `lang` (`python`, `js`): its key `<lang>-key`, its users
/// `<lang>-alice` and `<lang>-bob` (whose "hash" the host refuses), into DEVICES with
/// subjects of their own.
fn plugin(lang: &str) -> String {
    format!(
        "  - name: {lang}\n    builtin: {lang}-apikey\n    settings:\n      keys:\n        \
         {lang}-service:\n          sha256: {digest}\n          account: DEVICES\n          \
         permissions: {{ pub: {{ allow: [\"svc.{{{{name}}}}.>\"] }} }}\n      users:\n        \
         {lang}-alice:\n          password_hash: \"{HASH}\"\n          account: DEVICES\n          \
         permissions: {{ pub: {{ allow: [\"people.{{{{name}}}}\"] }} }}\n        \
         {lang}-bob:\n          password_hash: plain-text\n          account: DEVICES\n          \
         permissions: {{ pub: {{ allow: [\"people.{{{{name}}}}\"] }} }}\n",
        digest = sha256_hex(&format!("{lang}-key")),
    )
}

#[tokio::test]
async fn python_and_javascript_plugins_decide_real_clients() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let mut inject = Injector::start(&keys.issuer.public_key())?;
    // Default limits: the components must fit them as they are.
    let yaml = format!(
        "nats:\n  - {{ url: {}, nkey_seed_file: nkey-seed }}\n{}issuer_seed_file: issuer-seed\n\
         plugins:\n{}{}\
         routes:\n  \
         - {{ name: js-people, match: {{ credentials: user-password, username: \"js-*\" }}, plugins: [js] }}\n  \
         - {{ name: people, match: {{ credentials: user-password }}, plugins: [python] }}\n  \
         - {{ name: services, match: {{ credentials: bearer-token }}, plugins: [python, js] }}\n",
        server.url(),
        inject.nats_entry(),
        plugin("python"),
        plugin("js"),
    );
    let _callout = Callout::start(&keys, &yaml).await?;
    inject.connect().await?;
    let port = server.port;
    let refused = Outcome::Refused("Authorization Violation".into());

    for lang in ["python", "js"] {
        // A service with its key: its own subjects only. (The Python plugin abstains on
        // the JavaScript plugin's key, which decides it next.)
        let options = async_nats::ConnectOptions::with_token(format!("{lang}-key"));
        let (client, mut errors) = connect_watching(&server.url(), options).await?;
        client
            .publish(format!("svc.{lang}-service.up"), "1".into())
            .await?;
        client.publish("svc.other.up", "1".into()).await?;
        client.flush().await?;
        let e = expect_server_error(&mut errors, "permissions violation").await?;
        assert!(e.contains("svc.other.up"), "{lang}: {e}");

        // A person with a password the host verifies; a wrong one is refused.
        let user = format!("{lang}-alice");
        assert_eq!(
            raw::user_pass(port, &user, "s3cret").await?,
            Outcome::Admitted
        );
        assert_eq!(raw::user_pass(port, &user, "guess").await?, refused);
    }
    let reason = |user: &str, pass: &str| {
        let (user, pass) = (user.to_owned(), pass.to_owned());
        inject.error_for(move |c| {
            c["nats"]["connect_opts"]["user"] = user.into();
            c["nats"]["connect_opts"]["pass"] = pass.into();
        })
    };
    assert_eq!(
        reason("python-alice", "guess").await?,
        "people: wrong password for user 'python-alice'"
    );
    assert_eq!(
        reason("js-alice", "guess").await?,
        "js-people: wrong password for user 'js-alice'"
    );
    assert_eq!(
        reason("mallory", "x").await?,
        "people: no plugin accepted the credential"
    );
    assert_eq!(raw::bearer(port, "guessed-key").await?, refused);
    Ok(())
}

/// `check` refuses a component whose memory does not fit its limit before compiling it,
/// and says what it needs; a broken configuration is refused with the plugin's own words,
/// and an uncaught exception with its traceback (the plugin's stderr).
#[test]
fn check_says_what_a_component_needs() -> Result<()> {
    let yaml = |lang: &str, extra: &str| {
        format!(
            "nats: [ {{ url: \"nats://127.0.0.1:1\", nkey_seed_file: nkey-seed }} ]\n\
             issuer_seed_file: issuer-seed\n\
             plugins:\n  - {{ name: {lang}, builtin: {lang}-apikey, {extra} }}\n\
             routes: [ {{ name: r, plugins: [{lang}] }} ]\n"
        )
    };
    for lang in ["python", "js"] {
        // Built against the current contract, saying they read nothing but the credential.
        let settings = format!(
            "settings: {{ keys: {{ k: {{ sha256: {}, account: A }} }} }}",
            sha256_hex("k")
        );
        let c = check(&yaml(lang, &settings))?;
        assert!(c.ok, "{}", c.stderr);
        assert!(
            c.stderr.contains("contract=\"0.3.0\"") && c.stderr.contains("reads=none"),
            "{}",
            c.stderr
        );
        let c = check(&yaml(lang, "limits: { memory_bytes: 4194304 }"))?;
        assert!(!c.ok);
        assert!(
            c.stderr.contains(&format!("plugin {lang}: cannot load"))
                && c.stderr.contains("more than its memory limit of 4 MiB")
                && c.stderr.contains("raise the plugin's limits.memory_bytes"),
            "{}",
            c.stderr
        );
        let c = check(&yaml(lang, "settings: { keys: { x: { sha256: abc } } }"))?;
        assert!(!c.ok);
        assert!(
            c.stderr.contains(&format!(
                "plugin {lang}: rejected its configuration: settings.keys.x.sha256: must be 64 hex digits"
            )),
            "{}",
            c.stderr
        );
    }
    // An exception the Python plugin does not catch: its traceback is the reason.
    let c = check(&yaml("python", "settings: { keys: { x: not-an-entry } }"))?;
    assert!(!c.ok);
    assert!(
        c.stderr.contains(
            "plugin python: cannot load" // its first instance's init
        ) && c
            .stderr
            .contains("init trapped: Traceback (most recent call last): | File \"/0/app.py\"")
            && c.stderr
                .contains("AttributeError: 'str' object has no attribute 'get'"),
        "{}",
        c.stderr
    );
    Ok(())
}
