//! `nats-callout:plugin@0.1.0`: its bindings, its host imports, and the conversions
//! between its types and the SDK's. Frozen with the contract; plugins built against it
//! keep loading.

use wasmtime::component::HasSelf;

use crate::pipeline::decision;
use crate::runtime::State;
use nats_callout_sdk as sdk;

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit/v0.1.0",
    world: "plugin",
    // Plugins run on fibers (`call_async`) on the service's own threads: no hop to a
    // blocking pool per call. `verify-jwt` may wait for a JWKS refetch, so it is the
    // one async import; the plugin is suspended, not a thread blocked.
    imports: { "nats-callout:plugin/host.verify-jwt": async },
    exports: { default: async },
    // The request is lowered straight from the host's strings: no owned copy of every
    // field per call just to hand the component a reference.
    ownership: Borrowing { duplicate_if_necessary: false },
});

use self::nats_callout::plugin::types as wit;

pub fn add_to_linker(linker: &mut wasmtime::component::Linker<State>) -> wasmtime::Result<()> {
    Plugin::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
}

impl wit::Host for State {}

impl self::nats_callout::plugin::host::Host for State {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        // Plugins are untrusted: a bounded number of lines per call, each cut to 2 KiB,
        // with line breaks and control characters escaped so that no plugin can write
        // what looks like another log line.
        if self.log_lines_left == 0 {
            return;
        }
        self.log_lines_left -= 1;
        let plugin = &self.caps.plugin;
        let cut = crate::runtime::truncate(&message, 2048);
        let message = cut.escape_debug();
        match level {
            wit::LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            wit::LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            wit::LogLevel::Info => tracing::info!(plugin, "{message}"),
            wit::LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            wit::LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
        if self.log_lines_left == 0 {
            tracing::warn!(
                plugin,
                "plugin wrote {} log lines in one call; further lines of this call are dropped",
                crate::runtime::LOG_LINES_PER_CALL
            );
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
        if let Ok(v) = &result {
            self.note_credential_expiry(v.expires_at);
        }
        result.map(|v| wit::VerifiedJwt {
            claims_json: v.claims_json,
            expires_at: v.expires_at,
        })
    }

    fn verify_certificate_chain(&mut self, chain: Vec<String>) -> Result<(), String> {
        self.caps.verify_certificate_chain(&chain)
    }
}

/// Run `authenticate` on `req`. The WIT request borrows the host's strings, so lowering
/// copies each string once, straight into the component's memory; only `list<string>`
/// fields need a small `Vec<&str>` (none is allocated for an empty list).
pub async fn authenticate(
    world: &Plugin,
    store: &mut wasmtime::Store<State>,
    req: &sdk::AuthRequest,
) -> wasmtime::Result<decision::Decision> {
    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let (s, c, o) = (&req.server, &req.client, &req.connect);
    let (server_tags, client_tags) = (strs(&s.tags), strs(&c.tags));
    let certs = req.tls.iter().flat_map(|t| &t.verified_chain);
    let names: Vec<[Vec<&str>; 5]> = certs
        .clone()
        .map(|p| {
            [
                strs(&p.common_names),
                strs(&p.dns_sans),
                strs(&p.uri_sans),
                strs(&p.email_sans),
                strs(&p.ip_sans),
            ]
        })
        .collect();
    let chain: Vec<wit::Certificate<'_>> = certs
        .zip(&names)
        .map(|(p, [cn, dns, uri, email, ip])| wit::Certificate {
            pem: &p.pem,
            subject: &p.subject,
            common_names: cn,
            dns_sans: dns,
            uri_sans: uri,
            email_sans: email,
            ip_sans: ip,
            not_before: p.not_before,
            not_after: p.not_after,
            fingerprint_sha256: &p.fingerprint_sha256,
        })
        .collect();
    let request = wit::AuthRequest {
        mode: match req.mode {
            sdk::AuthMode::Oauth2 => wit::AuthMode::Oauth2,
            sdk::AuthMode::Mtls => wit::AuthMode::Mtls,
            sdk::AuthMode::Nkey => wit::AuthMode::Nkey,
            sdk::AuthMode::Noauth => wit::AuthMode::Noauth,
        },
        server: wit::ServerInfo {
            name: &s.name,
            host: &s.host,
            id: &s.id,
            version: &s.version,
            cluster: s.cluster.as_deref(),
            tags: &server_tags,
        },
        user_nkey: &req.user_nkey,
        client: wit::ClientInfo {
            host: c.host.as_deref(),
            id: c.id,
            user: c.user.as_deref(),
            name: c.name.as_deref(),
            tags: &client_tags,
            name_tag: c.name_tag.as_deref(),
            kind: c.kind.as_deref(),
            client_type: c.client_type.as_deref(),
            mqtt_id: c.mqtt_id.as_deref(),
            nonce: c.nonce.as_deref(),
        },
        connect: wit::ConnectOpts {
            jwt: o.jwt.as_deref(),
            nkey: o.nkey.as_deref(),
            sig: o.sig.as_deref(),
            auth_token: o.auth_token.as_deref(),
            user: o.user.as_deref(),
            pass: o.pass.as_deref(),
            name: o.name.as_deref(),
            lang: o.lang.as_deref(),
            version: o.version.as_deref(),
            protocol: o.protocol,
        },
        tls: req.tls.as_ref().map(|t| wit::ClientTls {
            version: t.version.as_deref(),
            cipher: t.cipher.as_deref(),
            verified_chain: &chain,
        }),
    };
    Ok(decision(world.call_authenticate(store, request).await?))
}

fn permission(p: wit::Permission) -> decision::Permission {
    decision::Permission {
        allow: p.allow,
        deny: p.deny,
    }
}

fn decision(d: wit::Decision) -> decision::Decision {
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
