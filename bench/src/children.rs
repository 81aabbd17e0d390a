//! What the benchmark's child processes run: the null callout responder (the baseline)
//! and the callout service itself. Both print `READY` on stdout once they serve.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use nats_callout::nats::jwt;
use nats_callout::nats::service;
use nats_callout::ops::app::App;
use nats_callout::pipeline::decision::{Grant, Permission};
use nats_callout::pipeline::request::{ReplyTarget, Verifier, unix_now};
use nats_callout::pipeline::respond::Signer;

/// Subject nats-server sends authorization requests on.
const AUTH_SUBJECT: &str = "$SYS.REQ.USER.AUTH";

/// The two fields the null responder reads from a request.
#[derive(serde::Deserialize)]
struct MinimalRequest {
    #[serde(default)]
    iss: String,
    #[serde(default)]
    nats: MinimalNats,
}

#[derive(serde::Deserialize, Default)]
struct MinimalNats {
    #[serde(default)]
    user_nkey: String,
}

/// The thinnest correct callout: admits everyone into `account` with a fixed grant.
/// It reads `user_nkey` and the server id from the request without verifying the
/// request's signature, signs a user JWT and the response JWT (both are required for
/// nats-server to admit the client), and replies. Same I/O shape as nats-callout's
/// service (async-nats, one task per request), so that the difference between the two
/// is the decision work: request verification, routing, the plugin, grant checks.
///
/// `busy`: CPU time to burn on each request's task before answering (normally zero).
/// Set to what nats-callout spends on a decision beyond this responder, it tells
/// whether a gap between the two is that CPU time and nothing else.
///
/// `verify`: the verifying null, the fair floor. It does the work every correct callout
/// must do and nothing else: the request's signature (by the server key it names) and
/// claims (audience, type, expiry, server id, our issuer, a user key), with nats-callout's
/// own verifier, before it signs. Neither benchmark target seals with an xkey, so
/// neither opens one.
pub async fn null_responder(
    url: &str,
    nkey_seed: &Path,
    issuer_seed: &Path,
    account: &str,
    busy: Duration,
    verify: bool,
) -> Result<()> {
    let read = |p: &Path| -> Result<String> {
        Ok(std::fs::read_to_string(p)
            .with_context(|| format!("cannot read {}", p.display()))?
            .trim()
            .to_owned())
    };
    let issuer = nkeys::KeyPair::from_seed(&read(issuer_seed)?).context("bad issuer seed")?;
    let signer = Arc::new(Signer::new(&issuer, None, None)?);
    let public = Permission {
        allow: vec!["public.>".into()],
        deny: vec![],
    };
    let mut grant = Grant::default();
    grant.account = account.to_owned();
    grant.publish = public.clone();
    grant.subscribe = public;
    let grant = Arc::new(grant);
    let client = async_nats::ConnectOptions::with_nkey(read(nkey_seed)?)
        .subscription_capacity(64 * 1024)
        .connect(url)
        .await
        .context("null responder cannot connect")?;
    let mut requests = client.subscribe(AUTH_SUBJECT).await?;
    ensure!(
        service::confirm_subscribed(&client, "null").await,
        "null responder lost its connection before serving"
    );
    println!("READY");
    while let Some(msg) = requests.next().await {
        let (client, signer, grant) = (client.clone(), signer.clone(), grant.clone());
        tokio::spawn(async move {
            let Some(reply) = msg.reply else { return };
            let target = if verify {
                let verifier = Verifier {
                    issuer: &signer.issuer_public,
                    xkey: None,
                    leeway: Duration::from_secs(2),
                };
                match verifier.verify(&msg.payload, None) {
                    Ok(verified) => verified.target,
                    Err(rejected) => {
                        tracing::warn!(error = %rejected.error, "request does not verify");
                        return;
                    }
                }
            } else {
                let Some(req) = std::str::from_utf8(&msg.payload)
                    .ok()
                    .and_then(|t| jwt::decode_unverified::<MinimalRequest>(t.trim()))
                else {
                    return;
                };
                ReplyTarget {
                    user_nkey: req.nats.user_nkey,
                    server_id: req.iss,
                    server_xkey: None,
                }
            };
            burn(busy);
            let now = unix_now();
            let user = signer
                .user_jwt(&grant, &target.user_nkey, now)
                .map_err(|e| e.to_string());
            match signer.response(&target, user.as_deref().map_err(String::as_str), now) {
                Ok(bytes) => {
                    if let Err(e) = client.publish(reply, bytes.into()).await {
                        tracing::warn!(error = %e, "cannot publish response");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot sign response"),
            }
        });
    }
    Ok(())
}

/// Spin on this thread for `d`, as a decision's CPU work would hold it. Zero (the
/// baseline) reads no clock at all.
fn burn(d: Duration) {
    if d.is_zero() {
        return;
    }
    let started = std::time::Instant::now();
    while started.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// The callout service exactly as `nats-callout run --config <config>` starts it
/// (`App::start` on a multi-threaded runtime, logs at `info` to stderr, draining on
/// SIGTERM), plus a `READY` line once it is subscribed and its JWKS (if any) is loaded.
///
/// `native`: before `READY`, swap in an authorizer whose plugins are the same crates
/// compiled natively (as a reload would swap one in), so that the connects measure what
/// WebAssembly costs in the running service. Nothing reloads during a benchmark.
pub async fn serve_callout(config: &Path, native: bool) -> Result<()> {
    let app = App::start(config).await?;
    if native {
        let auth = crate::pipeline::native_authorizer(app.config(), app.metrics().clone()).await?;
        app.shared().store(Arc::new(auth));
    }
    if !app.wait_ready(Duration::from_secs(15)).await {
        bail!("callout did not subscribe within 15 s");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while let Some(jwks) = app.shared().load().jwks().cloned() {
        if jwks.is_loaded() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("JWKS not loaded within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("READY");
    // Serve until SIGTERM, then drain as `nats-callout run` does (the cluster part
    // drains a replica mid-storm), or until killed (by the benchmark, or with it:
    // PR_SET_PDEATHSIG).
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    term.recv().await;
    app.shutdown().await;
    Ok(())
}
