//! `nats-callout verify` against real deployments: nats-server, the callout running
//! in-process, and the `nats-callout` binary probing them as an operator's CI would. One
//! deployment wired right, then one mistake each: the issuer, the xkey, an anonymous
//! client let in by nats-server itself.

use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use nats_callout_tests::ops::callout_bin;
use nats_callout_tests::{
    Callout, Keys, NatsServer, S3CRET_BCRYPT, callout_server_config, init_tracing,
    with_test_defaults,
};

const CHECKS: [&str; 5] = ["bypass", "xkey", "anonymous", "bogus-token", "issuer"];

/// Anonymous clients may ask nats-server who they are (`$SYS.REQ.USER.INFO` and its
/// inbox): verify compares the permissions nats-server lists with the grant.
const NOAUTH: &str = "  noauth:\n    account: ANONYMOUS\n    permissions:\n      \
                      pub: { allow: [\"public.>\", \"$SYS.REQ.USER.INFO\"] }\n      \
                      sub: { allow: [\"public.>\", \"_INBOX.>\"] }\n      \
                      resp: { max: 1, ttl: 5s }\n";

/// Anonymous clients that may not ask: verify can only see that nats-server refuses the
/// question as the grant says.
const NOAUTH_QUIET: &str = "  noauth:\n    account: ANONYMOUS\n    permissions:\n      \
                            pub: { allow: [\"public.>\"] }\n      sub: { allow: [\"public.>\"] }\n";

/// A password entry (user `alice`, password `s3cret`) and no noauth.
fn password_only() -> String {
    format!(
        "  password:\n    alice:\n      password_hash: \"{S3CRET_BCRYPT}\"\n      account: DEVICES\n      \
         permissions:\n        pub: {{ allow: [\"alice.>\"] }}\n        sub: {{ allow: [\"_INBOX.>\"] }}\n"
    )
}

/// Callout config with all three seeds (`Callout::start` writes them beside it).
fn config(url: &str, permissions: &str) -> String {
    format!(
        "nats:\n  - url: {url}\n    nkey_seed_file: nkey-seed\nissuer_seed_file: issuer-seed\n\
         xkey_seed_file: xkey-seed\npermissions:\n{permissions}"
    )
}

/// What `nats-callout verify` printed and how it exited.
struct Verified {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Verified {
    /// The `PASS|FAIL|SKIP` of one check and its detail.
    fn check(&self, name: &str) -> (&str, &str) {
        self.stdout
            .lines()
            .find_map(|l| {
                let (status, rest) = l.split_once("  ")?;
                let detail = rest.strip_prefix(name)?.strip_prefix(": ")?;
                ["PASS", "FAIL", "SKIP"]
                    .contains(&status)
                    .then_some((status, detail))
            })
            .unwrap_or(("missing", ""))
    }

    fn status(&self, name: &str) -> &str {
        self.check(name).0
    }

    fn detail(&self, name: &str) -> &str {
        self.check(name).1
    }
}

impl std::fmt::Display for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Run `nats-callout verify --config <the callout's config> <args>` with `env` added, on
/// a blocking thread: the callout answering its probes runs on this test's runtime.
async fn verify(callout: &Callout, args: &[&str], env: &[(&str, &str)]) -> Result<Verified> {
    let bin = callout_bin()?;
    let mut cmd = Command::new(bin);
    cmd.arg("verify")
        .arg("--config")
        .arg(callout.config_path())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .context("cannot run nats-callout verify")?;
    Ok(Verified {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_correctly_wired_deployment_passes_every_check() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, true))?;
    let callout = Callout::start(&keys, &config(&server.url(), NOAUTH)).await?;
    let out = verify(&callout, &[], &[]).await?;
    assert_eq!(out.code, Some(0), "{out}");
    for name in CHECKS {
        assert_eq!(out.status(name), "PASS", "{name}: {out}");
    }
    let anonymous = out.detail("anonymous");
    assert!(
        anonymous.contains("account ANONYMOUS with exactly the grant of the config")
            && anonymous.contains("$SYS.REQ.USER.INFO")
            && anonymous.contains("responses max 1 ttl 5000ms"),
        "{out}"
    );
    assert!(
        out.detail("xkey").contains(&keys.xkey.public_key()),
        "{out}"
    );
    assert!(
        out.detail("bypass").contains(&keys.callout.public_key()),
        "{out}"
    );

    // A grant that does not let anonymous clients ask who they are still passes: nats-server
    // refuses the question, as the grant says.
    drop(callout);
    let callout = Callout::start(&keys, &config(&server.url(), NOAUTH_QUIET)).await?;
    let out = verify(&callout, &[], &[]).await?;
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.detail("anonymous")
            .contains("the grant does not allow $SYS.REQ.USER.INFO and nats-server refused it too"),
        "{out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn another_issuer_in_nats_server_fails_the_issuer_check() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let other = nkeys::KeyPair::new_account();
    let server_config =
        callout_server_config(&keys, true).replace(&keys.issuer.public_key(), &other.public_key());
    let server = NatsServer::start(&server_config)?;
    let callout = Callout::start(&keys, &config(&server.url(), NOAUTH)).await?;
    let out = verify(&callout, &[], &[]).await?;
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(out.status("issuer"), "FAIL", "{out}");
    let issuer = out.detail("issuer");
    assert!(
        issuer.contains(&format!("auth_callout.issuer is {}", other.public_key()))
            && issuer.contains(&format!("set `issuer: {}`", keys.issuer.public_key())),
        "{out}"
    );
    // The seal is right; the anonymous client, which the config admits, is refused, and
    // the callout's answer (watched on nats-server's reply subjects) says why.
    assert_eq!(out.status("xkey"), "PASS", "{out}");
    assert_eq!(out.status("anonymous"), "FAIL", "{out}");
    assert!(
        out.detail("anonymous").contains(&format!(
            "the callout answered: request is for {}",
            other.public_key()
        )),
        "{out}"
    );
    assert_eq!(out.status("bypass"), "PASS", "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_the_xkey_fails_the_xkey_check() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let callout = Callout::start(&keys, &config(&server.url(), NOAUTH)).await?;
    let out = verify(&callout, &[], &[]).await?;
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(out.status("xkey"), "FAIL", "{out}");
    assert!(
        out.detail("xkey").contains(&format!(
            "unsealed, but the callout has an xkey and refuses plaintext: set `xkey: {}`",
            keys.xkey.public_key()
        )),
        "{out}"
    );
    // Nobody the callout admits gets in, so the issuer cannot be proven.
    assert_eq!(out.status("issuer"), "SKIP", "{out}");
    assert!(out.detail("issuer").contains("see xkey"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn without_noauth_anonymous_clients_must_be_refused() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, true))?;
    let callout = Callout::start(&keys, &config(&server.url(), &password_only())).await?;
    let login = [
        "--user",
        "alice",
        "--password-env",
        "NATS_CALLOUT_VERIFY_TEST_PASSWORD",
    ];
    let env = [("NATS_CALLOUT_VERIFY_TEST_PASSWORD", "s3cret")];
    let out = verify(&callout, &login, &env).await?;
    assert_eq!(out.code, Some(0), "{out}");
    for name in CHECKS {
        assert_eq!(out.status(name), "PASS", "{name}: {out}");
    }
    assert!(out.detail("anonymous").contains("refused"), "{out}");
    assert!(out.detail("issuer").contains("the --user client"), "{out}");

    // Without a credential the callout admits, the issuer cannot be proven.
    let out = verify(&callout, &[], &[]).await?;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(out.status("issuer"), "SKIP", "{out}");
    assert!(out.detail("issuer").contains("--password-env"), "{out}");

    // A wrong password for --user is a client the callout refuses: no proof either.
    let out = verify(
        &callout,
        &login,
        &[("NATS_CALLOUT_VERIFY_TEST_PASSWORD", "guess")],
    )
    .await?;
    assert_eq!(out.status("issuer"), "SKIP", "{out}");

    // nats-server letting anonymous clients in by itself (`no_auth_user` naming a user
    // that bypasses the callout) is what the check is for.
    drop(callout);
    drop(server);
    let server = NatsServer::start(&format!(
        "no_auth_user: platform\n{}",
        callout_server_config(&keys, true)
    ))?;
    let callout = Callout::start(&keys, &config(&server.url(), &password_only())).await?;
    let out = verify(&callout, &login, &env).await?;
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(out.status("anonymous"), "FAIL", "{out}");
    let anonymous = out.detail("anonymous");
    assert!(
        anonymous.contains("as user platform in account DEVICES")
            && anonymous.contains("did not ask the callout: remove no_auth_user"),
        "{out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callout_that_is_not_running_is_named() -> Result<()> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, true))?;
    // The config and seeds of a callout, and no callout.
    let dir = tempfile::tempdir()?;
    keys.write(dir.path())?;
    let path = dir.path().join("callout.yaml");
    std::fs::write(&path, with_test_defaults(&config(&server.url(), NOAUTH)))?;
    let bin = callout_bin()?;
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .arg("verify")
            .arg("--config")
            .arg(path)
            .stdin(Stdio::null())
            .output()
    })
    .await??;
    let out = Verified {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(out.code, Some(1), "{out}");
    // nats-server still sends its requests, sealed right: only the answer is missing.
    assert_eq!(out.status("bypass"), "PASS", "{out}");
    assert_eq!(out.status("xkey"), "PASS", "{out}");
    assert_eq!(out.status("anonymous"), "FAIL", "{out}");
    assert!(
        out.detail("anonymous")
            .contains("no callout answered nats-server's request: is nats-callout running"),
        "{out}"
    );
    assert_eq!(out.status("issuer"), "SKIP", "{out}");
    Ok(())
}
