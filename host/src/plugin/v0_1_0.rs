//! Bindings of `nats-callout:plugin@0.1.0` and conversions to and from the host's types.
//! A later WIT version gets a sibling module; this one stays, so old plugins keep loading.

use wasmtime::component::HasSelf;

use super::State;
use crate::decision;
use nats_callout_sdk as sdk;

wasmtime::component::bindgen!({
    path: "../wit/v0.1.0",
    world: "plugin",
    // Plugins run on fibers (`call_async`) on the service's own threads: no hop to a
    // blocking pool per call. `verify-jwt` may wait for a JWKS refetch, so it is the
    // one async import; the plugin is suspended, not a thread blocked.
    imports: { "nats-callout:plugin/host.verify-jwt": async },
    exports: { default: async },
});

use self::nats_callout::plugin::types as wit;

pub use Plugin as World;
pub use PluginPre as WorldPre;

pub fn add_to_linker(linker: &mut wasmtime::component::Linker<State>) -> wasmtime::Result<()> {
    Plugin::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
}

impl wit::Host for State {}

impl self::nats_callout::plugin::host::Host for State {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        let plugin = &self.caps.plugin;
        // Plugins are untrusted: cap what one line may put into our logs.
        let message = super::truncate(&message, 2048);
        match level {
            wit::LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            wit::LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            wit::LogLevel::Info => tracing::info!(plugin, "{message}"),
            wit::LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            wit::LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn verify_nkey_signature(
        &mut self,
        public_key: String,
        payload: Vec<u8>,
        signature: String,
    ) -> Result<(), String> {
        self.caps
            .verify_nkey_signature(&public_key, &payload, &signature)
    }

    async fn verify_jwt(&mut self, token: String) -> Result<wit::VerifiedJwt, String> {
        // May wait for a JWKS refetch: that wait is I/O, not the plugin's CPU time.
        let started = std::time::Instant::now();
        let result = self.caps.verify_jwt(&token).await;
        self.credit_host_time(started.elapsed());
        result.map(|v| wit::VerifiedJwt {
            claims_json: v.claims_json,
            expires_at: v.expires_at,
        })
    }

    fn verify_certificate_chain(&mut self, chain: Vec<String>) -> Result<(), String> {
        self.caps.verify_certificate_chain(&chain)
    }
}

/// The WIT request from the host's plain one.
pub fn request(req: &sdk::AuthRequest) -> wit::AuthRequest {
    let s = &req.server;
    let c = &req.client;
    let o = &req.connect;
    wit::AuthRequest {
        mode: match req.mode {
            sdk::AuthMode::Oauth2 => wit::AuthMode::Oauth2,
            sdk::AuthMode::Mtls => wit::AuthMode::Mtls,
            sdk::AuthMode::Nkey => wit::AuthMode::Nkey,
            sdk::AuthMode::Noauth => wit::AuthMode::Noauth,
        },
        server: wit::ServerInfo {
            name: s.name.clone(),
            host: s.host.clone(),
            id: s.id.clone(),
            version: s.version.clone(),
            cluster: s.cluster.clone(),
            tags: s.tags.clone(),
        },
        user_nkey: req.user_nkey.clone(),
        client: wit::ClientInfo {
            host: c.host.clone(),
            id: c.id,
            user: c.user.clone(),
            name: c.name.clone(),
            tags: c.tags.clone(),
            name_tag: c.name_tag.clone(),
            kind: c.kind.clone(),
            client_type: c.client_type.clone(),
            mqtt_id: c.mqtt_id.clone(),
            nonce: c.nonce.clone(),
        },
        connect: wit::ConnectOpts {
            jwt: o.jwt.clone(),
            nkey: o.nkey.clone(),
            sig: o.sig.clone(),
            auth_token: o.auth_token.clone(),
            user: o.user.clone(),
            pass: o.pass.clone(),
            name: o.name.clone(),
            lang: o.lang.clone(),
            version: o.version.clone(),
            protocol: o.protocol,
        },
        tls: req.tls.as_ref().map(|t| wit::ClientTls {
            version: t.version.clone(),
            cipher: t.cipher.clone(),
            verified_chain: t
                .verified_chain
                .iter()
                .map(|p| wit::Certificate {
                    pem: p.pem.clone(),
                    subject: p.subject.clone(),
                    common_names: p.common_names.clone(),
                    dns_sans: p.dns_sans.clone(),
                    uri_sans: p.uri_sans.clone(),
                    email_sans: p.email_sans.clone(),
                    ip_sans: p.ip_sans.clone(),
                    not_before: p.not_before,
                    not_after: p.not_after,
                    fingerprint_sha256: p.fingerprint_sha256.clone(),
                })
                .collect(),
        }),
    }
}

fn permission(p: wit::Permission) -> decision::Permission {
    decision::Permission {
        allow: p.allow,
        deny: p.deny,
    }
}

pub fn decision(d: wit::Decision) -> decision::Decision {
    match d {
        wit::Decision::Allow(g) => decision::Decision::Allow(decision::Grant {
            account: g.account,
            name: g.name,
            publish: permission(g.publish),
            subscribe: permission(g.subscribe),
            response: g.response.map(|r| decision::ResponsePermission {
                max_msgs: r.max_msgs,
                ttl_millis: r.ttl_millis,
            }),
            expires_at: g.expires_at,
            tags: g.tags,
            limits: g.limits.map(|l| decision::Limits {
                subs: l.subs,
                data: l.data,
                payload: l.payload,
            }),
        }),
        wit::Decision::Deny(reason) => decision::Decision::Deny(reason),
        wit::Decision::Abstain => decision::Decision::Abstain,
    }
}
