//! The plugin runtime contains misbehaving plugins: a plugin that loops forever, one
//! that allocates without bound and one that traps are each denied with the right
//! cause, the host's memory stays bounded, and good clients beside them get in. A burst
//! larger than the instance pool is answered in full.

use anyhow::Result;
use futures::future::join_all;
use nats_callout_tests::inject::Injector;
use nats_callout_tests::ops::check;
use nats_callout_tests::raw::{self, Outcome};
use nats_callout_tests::{Callout, Keys, NatsServer, callout_server_config, init_tracing};

struct Setup {
    server: NatsServer,
    inject: Injector,
    _callout: Callout,
    device: nkeys::KeyPair,
}

/// Anonymous clients go to the misbehaving plugin (with `limits`), NKey clients to the
/// real nkey plugin.
async fn setup(behaviour: &str, limits: &str) -> Result<Setup> {
    init_tracing();
    let keys = Keys::generate();
    let device = nkeys::KeyPair::new_user();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let mut inject = Injector::start(&keys.issuer.public_key())?;
    let yaml = format!(
        "nats:\n  - {{ name: main, url: {}, nkey_seed_file: nkey-seed }}\n{}issuer_seed_file: issuer-seed\n\
         plugins:\n  - {{ mode: noauth, builtin: misbehave, settings: {{ behaviour: \"{behaviour}\" }}, limits: {limits} }}\n  \
         - {{ mode: nkey, builtin: nkey }}\n\
         permissions:\n  nkey:\n    dev:\n      public_key: {}\n      account: DEVICES\n      \
         permissions: {{ pub: {{ allow: [\"device-state.dev\"] }} }}\n",
        server.url(),
        inject.nats_entry(),
        device.public_key()
    );
    let callout = Callout::start(&keys, &yaml).await?;
    inject.connect().await?;
    Ok(Setup {
        server,
        inject,
        _callout: callout,
        device,
    })
}

impl Setup {
    async fn device_admitted(&self) -> Result<bool> {
        let d = &self.device;
        let outcome = raw::connect(self.server.port, |nonce| {
            raw::nkey_connect(&d.public_key(), d, nonce)
        })
        .await?;
        Ok(outcome == Outcome::Admitted)
    }
}

/// Resident memory of this process (the host runs in-process), from /proc.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test]
async fn misbehaving_plugins_are_denied_with_their_cause() -> Result<()> {
    let cases = [
        ("loop", "{ timeout: 200ms }", "exceeded its time limit"),
        ("loop", "{ fuel: 5000000, timeout: 5s }", "ran out of fuel"),
        (
            "alloc",
            "{ memory_bytes: 16777216 }",
            "exceeded its memory limit",
        ),
        ("trap", "{}", "trapped"),
    ];
    for (behaviour, limits, cause) in cases {
        let s = setup(behaviour, limits).await?;
        let rss_before = rss_bytes();
        // Several bad calls at once, and a good client connecting at the same time.
        let bad = join_all((0..4).map(|_| s.inject.error_for(|_| {})));
        let (bad, good) = tokio::join!(bad, s.device_admitted());
        for reason in bad {
            let reason = reason?;
            assert!(reason.contains(cause), "{behaviour} {limits}: {reason}");
        }
        assert!(good?, "{behaviour}: the good client must get in beside it");
        // Each poisoned instance was dropped: the plugin still answers (with its cause).
        let again = s.inject.error_for(|_| {}).await?;
        assert!(again.contains(cause), "{again}");
        // Memory: the runaway allocations were bounded by the plugin's memory limit.
        let grown = rss_bytes().saturating_sub(rss_before);
        assert!(grown < 256 << 20, "{behaviour}: RSS grew by {grown} bytes");
    }
    Ok(())
}

#[tokio::test]
async fn a_burst_larger_than_the_pool_is_answered_in_full() -> Result<()> {
    // One instance, each call ~30 ms: 40 concurrent requests queue for it. Those that
    // cannot get the instance within the plugin deadline are denied as busy; none is
    // lost or left unanswered.
    let s = setup("slow:30", "{ instances: 1, timeout: 300ms }").await?;
    let answers = join_all((0..40).map(|_| s.inject.decide(|_| {}))).await;
    let mut admitted = 0;
    for a in answers {
        let claims = a?;
        if claims["nats"]["jwt"].is_string() {
            admitted += 1;
        } else {
            let e = claims["nats"]["error"].as_str().unwrap_or("");
            assert!(e.contains("busy"), "{e}");
        }
    }
    assert!(admitted > 0);
    assert!(s.device_admitted().await?);
    Ok(())
}

/// The sandbox, as `check` reports it: a component importing an interface the host does
/// not provide (another host's secrets vault) is refused at load with each such import
/// named and what the sandbox offers; one importing interfaces the sandbox links but
/// refuses (sockets, files) loads with a warning naming them, and its attempt to connect
/// is denied.
#[tokio::test]
async fn the_sandbox_names_what_it_refuses() -> Result<()> {
    let check_plugin = |plugin: &str| -> Result<(bool, String)> {
        let c = check(&format!(
            "nats: [ {{ url: \"nats://127.0.0.1:1\", nkey_seed_file: nkey-seed }} ]\n\
             issuer_seed_file: issuer-seed\n\
             plugins:\n  - {{ mode: noauth, builtin: {plugin}, settings: {{ behaviour: connect }} }}\n"
        ))?;
        Ok((c.ok, c.stderr))
    };
    let (ok, err) = check_plugin("foreign-import")?;
    assert!(!ok);
    assert!(
        err.contains("imports what the plugin sandbox does not offer: test:foreign/vault")
            && err.contains("(not an interface this host provides)")
            && err.contains("it has no other network, no files"),
        "{err}"
    );
    let (ok, err) = check_plugin("misbehave")?;
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: plugin noauth/misbehave imports what the sandbox refuses")
            && err.contains("wasi:sockets/tcp@")
            && err.contains("(network sockets: the sandbox has no network)"),
        "{err}"
    );

    let s = setup("connect", "{}").await?;
    let reason = s.inject.error_for(|_| {}).await?;
    assert!(reason.starts_with("noauth: no network: "), "{reason}");
    Ok(())
}
