//! The SDK as a partner gets it: packaged (`cargo package`, as crates.io would serve it),
//! a crate written by `nats-callout plugin new` built against that package for
//! wasm32-wasip2, checked by `nats-callout check`, and serving a client end to end.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use nats_callout_tests::ops::{cargo, run_cli};
use nats_callout_tests::raw::{self, Outcome};
use nats_callout_tests::{
    Callout, Keys, NatsServer, callout_server_config, init_tracing, workspace_root,
};
use sha2::{Digest, Sha256};

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cargo package -p nats-callout-sdk`, unpacked into `into`: the SDK's directory.
fn packaged_sdk(into: &Path) -> Result<PathBuf> {
    let target = workspace_root().join("target/sdk-package");
    run(
        cargo()
            .args([
                "package",
                "-p",
                "nats-callout-sdk",
                "--no-verify",
                "--allow-dirty",
            ])
            .arg("--target-dir")
            .arg(&target),
        "cargo package",
    )?;
    let version = env!("CARGO_PKG_VERSION");
    let krate = target.join(format!("package/nats-callout-sdk-{version}.crate"));
    run(
        Command::new("tar")
            .arg("xzf")
            .arg(&krate)
            .arg("-C")
            .arg(into),
        "tar",
    )?;
    let sdk = into.join(format!("nats-callout-sdk-{version}"));
    ensure!(
        sdk.join("wit/v0.3.0/plugin.wit").is_file(),
        "the packaged SDK lacks its WIT"
    );
    Ok(sdk)
}

#[tokio::test]
async fn a_plugin_new_crate_builds_against_the_packaged_sdk_and_serves() -> Result<()> {
    init_tracing();
    let work = tempfile::tempdir()?;
    let sdk = packaged_sdk(work.path())?;
    let out = run_cli(&[
        "plugin",
        "new",
        "fleet-auth",
        "--dir",
        &work.path().to_string_lossy(),
        "--sdk",
        &sdk.to_string_lossy(),
    ])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crate_dir = work.path().join("fleet-auth");
    // The crate's own build, as its README says, outside this workspace; its target
    // directory is kept between runs so that only the first compiles its dependencies.
    let target = workspace_root().join("target/scaffold");
    run(
        cargo()
            .current_dir(&crate_dir)
            .args(["build", "--quiet", "--target", "wasm32-wasip2", "--release"])
            .env("CARGO_TARGET_DIR", &target),
        "cargo build of the new plugin",
    )?;
    let component = target.join("wasm32-wasip2/release/fleet_auth.wasm");
    ensure!(component.is_file(), "{} was not built", component.display());

    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let digest: String = Sha256::digest(b"fleet-key")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let yaml = format!(
        "nats:\n  - {{ url: {}, nkey_seed_file: nkey-seed }}\nissuer_seed_file: issuer-seed\n\
         plugins:\n  - name: fleet\n    path: {}\n    settings:\n      keys:\n        \
         gateway:\n          sha256: {digest}\n          account: DEVICES\n          \
         permissions: {{ pub: {{ allow: [\"fleet.>\"] }} }}\n\
         routes:\n  - {{ name: fleet, match: {{ credentials: bearer-token }}, plugins: [fleet] }}\n",
        server.url(),
        component.display()
    );
    let config = work.path().join("callout.yaml");
    std::fs::write(&config, nats_callout_tests::with_test_defaults(&yaml))?;
    keys.write(work.path())?;
    let out = run_cli(&["check", "--config", &config.to_string_lossy()])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("routes [fleet]"),
        "{out:?}"
    );

    let _callout = Callout::start(&keys, &yaml).await?;
    assert_eq!(
        raw::bearer(server.port, "fleet-key").await?,
        Outcome::Admitted
    );
    assert_eq!(
        raw::bearer(server.port, "other-key").await?,
        Outcome::Refused("Authorization Violation".into())
    );
    Ok(())
}
