//! Plugins that reach out: outbound HTTP to a real server, only to the hosts the operator
//! lists; every failure of the other side is a deny with its reason and a metric, never an
//! allow, and every other client is served meanwhile. The plugin cache makes a lookup
//! once per identity, for all instances.

use std::time::Duration;

use anyhow::Result;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use nats_callout_tests::inject::Injector;
use nats_callout_tests::ops::{check, count, scrape};
use nats_callout_tests::raw::{self, Outcome};
use nats_callout_tests::web::WebServer;
use nats_callout_tests::{Callout, Keys, NatsServer, callout_server_config, init_tracing};

/// An endpoint with every way to answer a lookup.
async fn endpoint() -> Result<WebServer> {
    let router = Router::new()
        .route("/allow", get(|| async { "allow" }))
        .route("/no", get(|| async { "not you" }))
        .route(
            "/error",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/garbage",
            get(|| async { (StatusCode::OK, vec![0xffu8, 0x00, 0xfe, 0x80]) }),
        )
        .route("/huge", get(|| async { vec![b'x'; 10 << 20] }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "allow"
            }),
        )
        .route(
            "/redirect-in",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/allow")]).into_response() }),
        );
    WebServer::start(router).await
}

/// A deployment whose anonymous clients are decided by the networked plugin asking
/// `path` of `web`, the plugin allowed to reach `allowed`.
async fn deploy(
    web: &WebServer,
    path: &str,
    allowed: &str,
    extra_settings: &str,
) -> Result<(NatsServer, Injector, Callout)> {
    init_tracing();
    let keys = Keys::generate();
    let server = NatsServer::start(&callout_server_config(&keys, false))?;
    let mut inject = Injector::start(&keys.issuer.public_key())?;
    let yaml = format!(
        "nats:\n  - {{ url: {}, nkey_seed_file: nkey-seed }}\n{}issuer_seed_file: issuer-seed\n\
         plugins:\n  - mode: noauth\n    builtin: networked\n    \
         settings: {{ url: \"{}\"{extra_settings} }}\n    allowed_outbound_hosts: [{allowed}]\n    \
         limits: {{ timeout: 500ms, instances: 2 }}\n",
        server.url(),
        inject.nats_entry(),
        web.url(path),
    );
    let callout = Callout::start(&keys, &yaml).await?;
    inject.connect().await?;
    Ok((server, inject, callout))
}

#[tokio::test]
async fn lookups_reach_only_listed_hosts_and_failures_deny() -> Result<()> {
    let web = endpoint().await?;
    let listed = format!("\"http://127.0.0.1:{}\"", web.addr.port());
    // Each way the other side can fail, with the reason it becomes.
    for (path, reason) in [
        ("/allow", ""),
        ("/no", "noauth: lookup said \"not you\""),
        ("/error", "noauth: lookup answered 500"),
        (
            "/garbage",
            "noauth: lookup said \"\u{fffd}\\0\u{fffd}\u{fffd}\"",
        ),
        (
            "/huge",
            "noauth: lookup failed: HTTP request failed: response body too large",
        ),
        ("/redirect-in", ""),
    ] {
        let (_server, inject, _callout) = deploy(&web, path, &listed, "").await?;
        let e = inject.error_for(|_| {}).await?;
        assert!(
            e.starts_with(reason) && (reason.is_empty() == e.is_empty()),
            "{path}: {e}"
        );
    }
    // A host that is not listed: denied before any connection; the endpoint never sees it.
    let before = web.served();
    let other = "\"http://127.0.0.2:1\"";
    let (server, inject, callout) = deploy(&web, "/allow", other, "").await?;
    let e = inject.error_for(|_| {}).await?;
    assert_eq!(
        e,
        "noauth: lookup failed: HTTP request failed: denied: not a host in the plugin's \
         allowed_outbound_hosts"
    );
    assert_eq!(web.served(), before, "the request left the host");
    let m = scrape(callout.app().http_addr()).await?;
    assert_eq!(
        count(
            &m,
            "plugin_http_requests_total{host=\"-\",plugin=\"noauth/networked\",status=\"denied\"}"
        ),
        1,
        "{m}"
    );
    drop((server, inject, callout));

    // Too slow: the call's deadline (500 ms) ends the exchange; the call times out.
    let (server, inject, callout) = deploy(&web, "/slow", &listed, "").await?;
    let e = inject.error_for(|_| {}).await?;
    assert!(e.contains("exceeded its time limit"), "{e}");
    assert_eq!(
        raw::anonymous(server.port).await?,
        Outcome::Refused("Authorization Violation".into())
    );
    let m = scrape(callout.app().http_addr()).await?;
    assert!(
        m.contains("status=\"timeout\""),
        "the timeout is counted: {m}"
    );
    Ok(())
}

/// A redirect to a host that is not listed is not followed; a listed one is (above).
#[tokio::test]
async fn redirects_go_only_to_listed_hosts() -> Result<()> {
    let target = endpoint().await?;
    let redirect_to = target.url("/allow");
    let web = WebServer::start(Router::new().route(
        "/out",
        get(move || {
            let to = redirect_to.clone();
            async move { (StatusCode::FOUND, [(header::LOCATION, to)]).into_response() }
        }),
    ))
    .await?;
    let only_first = format!("\"http://127.0.0.1:{}\"", web.addr.port());
    let (_server, inject, _callout) = deploy(&web, "/out", &only_first, "").await?;
    let e = inject.error_for(|_| {}).await?;
    assert_eq!(
        e,
        "noauth: lookup failed: HTTP request failed: denied: not a host in the plugin's \
         allowed_outbound_hosts"
    );
    assert_eq!(target.served(), 0, "the redirect was followed");
    Ok(())
}

/// The plugin cache: one lookup serves every instance until it expires, and a reload (a
/// new set of plugins) starts without it.
#[tokio::test]
async fn the_plugin_cache_is_shared_by_instances() -> Result<()> {
    let web = endpoint().await?;
    let listed = format!("\"http://127.0.0.1:{}\"", web.addr.port());
    let (server, inject, _callout) = deploy(&web, "/allow", &listed, ", cache_ms: 60000").await?;
    let before = web.served();
    let answers = futures::future::join_all((0..12).map(|_| inject.error_for(|_| {}))).await;
    for a in answers {
        assert_eq!(a?, "");
    }
    assert_eq!(raw::anonymous(server.port).await?, Outcome::Admitted);
    // Concurrent first calls may each miss; after them, every call is a hit.
    let after = web.served() - before;
    assert!(
        (1..=2).contains(&after),
        "{after} lookups for 13 decisions by 2 instances"
    );
    Ok(())
}

/// `check` says what a plugin's outbound HTTP is before anything runs: without
/// `allowed_outbound_hosts` it loads with a warning that every request is denied; a
/// listed plain-http host that is not loopback is a config error unless the entry says
/// so; a request during `init` is refused, which fails the load with its reason.
#[test]
fn check_names_outbound_http_problems() -> Result<()> {
    let yaml = |extra: &str| {
        format!(
            "nats: [ {{ url: \"nats://127.0.0.1:1\", nkey_seed_file: nkey-seed }} ]\n\
             issuer_seed_file: issuer-seed\n\
             plugins:\n  - {{ mode: noauth, builtin: networked, settings: {{ url: \"http://127.0.0.1:9/x\"{extra} }} }}\n"
        )
    };
    let c = check(&yaml(""))?;
    assert!(c.ok, "{}", c.stderr);
    assert!(
        c.stderr.contains("wasi:http/outgoing-handler@")
            && c.stderr
                .contains("no allowed_outbound_hosts, so every request is denied"),
        "{}",
        c.stderr
    );
    let c = check(&yaml(", fetch_at_init: true").replace(
        "} }\n",
        "}, allowed_outbound_hosts: [\"http://127.0.0.1:9\"] }\n",
    ))?;
    assert!(!c.ok);
    assert!(
        c.stderr
            .contains("rejected its configuration: fetch at init: ErrorCode::HttpProtocolError"),
        "{}",
        c.stderr
    );
    let c = check(&yaml("").replace(
        "} }\n",
        "}, allowed_outbound_hosts: [\"http://registry.lan\"] }\n",
    ))?;
    assert!(!c.ok);
    assert!(
        c.stderr.contains("plugins[0].allowed_outbound_hosts")
            || c.stderr
                .contains("plain http to a host that is not loopback"),
        "{}",
        c.stderr
    );
    Ok(())
}

/// Only plugins that send HTTP requests import wasi:http (the SDK's `http` feature, which
/// scripts/setup and the Dockerfile build apart because cargo unifies features within a
/// build): the others load without a note about an import the sandbox refuses.
#[test]
fn only_plugins_that_send_requests_import_http() -> Result<()> {
    for builtin in nats_callout::ops::config::BUILTINS {
        let path = nats_callout_tests::plugin_dir().join(format!("{builtin}.wasm"));
        let component = std::fs::read(&path)?;
        let imports_http = component
            .windows(b"wasi:http/outgoing-handler".len())
            .any(|w| w == b"wasi:http/outgoing-handler");
        assert_eq!(imports_http, builtin == "introspection", "{builtin}");
    }
    let c = check(
        "nats: [ { url: \"nats://127.0.0.1:1\", nkey_seed_file: nkey-seed } ]\n\
         issuer_seed_file: issuer-seed\n\
         permissions:\n  noauth: { account: A, permissions: { pub: { allow: [a] } } }\n  \
         password: { u: { password_hash: \"$2b$04$qlJ4LcpOAB6XT5EsktDSZ.FIJGEdd7lUH2/AXq872Avl2JGyY.lfm\", account: A, permissions: {} } }\n",
    )?;
    assert!(c.ok, "{}", c.stderr);
    assert!(!c.stderr.contains("sandbox refuses"), "{}", c.stderr);
    Ok(())
}
