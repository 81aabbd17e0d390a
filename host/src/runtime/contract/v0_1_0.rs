//! `nats-callout:plugin@0.1.0`: its bindings, its host imports, and the conversions
//! between its types and the SDK's. Frozen with the contract; plugins built against it
//! keep loading.

use wasmtime::component::HasSelf;

use crate::pipeline::decision;
use crate::runtime::{Legacy, PluginRequest, State};
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
        let level = match level {
            wit::LogLevel::Trace => sdk::LogLevel::Trace,
            wit::LogLevel::Debug => sdk::LogLevel::Debug,
            wit::LogLevel::Info => sdk::LogLevel::Info,
            wit::LogLevel::Warn => sdk::LogLevel::Warn,
            wit::LogLevel::Error => sdk::LogLevel::Error,
        };
        State::log(self, level, &message);
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
        State::verify_jwt(self, &token, None)
            .await
            .map(|v| wit::VerifiedJwt {
                claims_json: v.claims_json,
                expires_at: v.expires_at,
            })
    }

    fn verify_certificate_chain(&mut self, chain: Vec<String>) -> Result<(), String> {
        self.caps.verify_certificate_chain(&chain)
    }
}

/// The credential kinds a 0.1.0 plugin decides: those of its four modes. It says
/// nothing itself (0.1.0's `init` returns nothing), and abstains on modes not its own.
pub const CREDENTIALS: [sdk::CredentialKind; 4] = [
    sdk::CredentialKind::BearerToken,
    sdk::CredentialKind::Certificate,
    sdk::CredentialKind::Nkey,
    sdk::CredentialKind::None,
];

/// The 0.1.0 mode of a credential kind.
fn mode(kind: sdk::CredentialKind) -> Option<wit::AuthMode> {
    Some(match kind {
        sdk::CredentialKind::BearerToken => wit::AuthMode::Oauth2,
        sdk::CredentialKind::Certificate => wit::AuthMode::Mtls,
        sdk::CredentialKind::Nkey => wit::AuthMode::Nkey,
        sdk::CredentialKind::None => wit::AuthMode::Noauth,
        _ => return None,
    })
}

/// Run `authenticate` on `input`. The WIT request borrows the host's strings, so lowering
/// copies each string once, straight into the component's memory; only `list<string>`
/// fields need a small `Vec<&str>` (none is allocated for an empty list). The raw
/// CONNECT credentials 0.1.0 plugins read come from `input.legacy`, which the host
/// keeps for routes with 0.1.0 plugins.
pub async fn authenticate(
    world: &Plugin,
    store: &mut wasmtime::Store<State>,
    input: &PluginRequest,
) -> wasmtime::Result<decision::Decision> {
    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let req = &input.request;
    let Some(mode) = mode(req.credential.kind()) else {
        return Ok(decision::Decision::Abstain);
    };
    let empty = Legacy::default();
    let raw = input.legacy.as_ref().unwrap_or(&empty);
    fn opt(s: &str) -> Option<&str> {
        Some(s).filter(|s| !s.is_empty())
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
        mode,
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
            jwt: opt(&raw.jwt),
            nkey: opt(&raw.nkey),
            sig: opt(&raw.sig),
            auth_token: opt(&raw.auth_token),
            user: opt(&raw.user),
            pass: opt(&raw.pass),
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

/// 0.1.0's grant as the current one. Its `tags` and `limits` are dropped: nats-server
/// applies neither to auth-callout users.
fn decision(d: wit::Decision) -> decision::Decision {
    match d {
        wit::Decision::Allow(g) => {
            let mut grant = decision::Grant::default();
            grant.account = g.account;
            grant.name = g.name;
            grant.publish = permission(g.publish);
            grant.subscribe = permission(g.subscribe);
            grant.response = g.response.map(|r| decision::ResponsePermission {
                max_msgs: r.max_msgs,
                ttl_millis: r.ttl_millis,
            });
            grant.expires_at = g.expires_at;
            decision::Decision::Allow(grant)
        }
        wit::Decision::Deny(reason) => decision::Decision::Deny(reason),
        wit::Decision::Abstain => decision::Decision::Abstain,
    }
}
