//! Component glue, compiled only for wasm32: the wit-bindgen bindings of world `plugin`,
//! conversions between its types and the SDK's, and the `Host` that calls the imports.
//!
//! Nothing here is public API; [`crate::export_plugin!`] reaches it through
//! `nats_callout_sdk::__private`.

use std::sync::OnceLock;

pub use wit_bindgen;

use crate::{
    AuthMode, AuthRequest, Certificate, ClientInfo, ClientTls, ConnectOpts, Decision, Grant, Host,
    Limits, LogLevel, Permission, Plugin, ResponsePermission, ServerInfo, VerifiedJwt,
};

/// Generated bindings. The export macro is public so that it can be expanded in the
/// plugin's crate (the component's exports must be defined in the final artifact), and
/// its paths go through `::nats_callout_sdk::__private` so the plugin needs no direct
/// wit-bindgen dependency.
pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "wit/v0.1.0",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "::nats_callout_sdk::__private::bindings",
        runtime_path: "::nats_callout_sdk::__private::wit_bindgen::rt",
    });
}

pub use bindings::Guest;
use bindings::nats_callout::plugin::{host as wit_host, types as wit};
pub use wit::{AuthRequest as WitAuthRequest, Decision as WitDecision};

/// `init` export. Also routes panics to the host's log first: a panic traps the
/// instance, and the trap alone does not say why.
pub fn init<P: Plugin>(slot: &OnceLock<P>, config: String) -> Result<(), String> {
    std::panic::set_hook(Box::new(|info| {
        wit_host::log(wit::LogLevel::Error, &format!("plugin panicked: {info}"));
    }));
    crate::glue::init(slot, &config)
}

/// `authenticate` export: convert, decide, convert back.
pub fn authenticate<P: Plugin>(slot: &OnceLock<P>, request: WitAuthRequest) -> WitDecision {
    crate::glue::authenticate(slot, &request.into(), &ComponentHost).into()
}

/// [`Host`] backed by the component's imports.
struct ComponentHost;

impl Host for ComponentHost {
    fn log(&self, level: LogLevel, message: &str) {
        wit_host::log(level.into(), message);
    }

    fn verify_nkey_signature(
        &self,
        public_key: &str,
        payload: &[u8],
        signature: &str,
    ) -> Result<(), String> {
        wit_host::verify_nkey_signature(public_key, payload, signature)
    }

    fn verify_jwt(&self, token: &str) -> Result<VerifiedJwt, String> {
        wit_host::verify_jwt(token).map(|v| VerifiedJwt {
            claims_json: v.claims_json,
            expires_at: v.expires_at,
        })
    }

    fn verify_certificate_chain(&self, chain: &[String]) -> Result<(), String> {
        wit_host::verify_certificate_chain(chain)
    }
}

impl From<LogLevel> for wit::LogLevel {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Trace => wit::LogLevel::Trace,
            LogLevel::Debug => wit::LogLevel::Debug,
            LogLevel::Info => wit::LogLevel::Info,
            LogLevel::Warn => wit::LogLevel::Warn,
            LogLevel::Error => wit::LogLevel::Error,
        }
    }
}

impl From<wit::AuthMode> for AuthMode {
    fn from(mode: wit::AuthMode) -> Self {
        match mode {
            wit::AuthMode::Oauth2 => AuthMode::Oauth2,
            wit::AuthMode::Mtls => AuthMode::Mtls,
            wit::AuthMode::Nkey => AuthMode::Nkey,
            wit::AuthMode::Noauth => AuthMode::Noauth,
        }
    }
}

impl From<wit::AuthRequest> for AuthRequest {
    fn from(r: wit::AuthRequest) -> Self {
        AuthRequest {
            mode: r.mode.into(),
            server: ServerInfo {
                name: r.server.name,
                host: r.server.host,
                id: r.server.id,
                version: r.server.version,
                cluster: r.server.cluster,
                tags: r.server.tags,
            },
            user_nkey: r.user_nkey,
            client: ClientInfo {
                host: r.client.host,
                id: r.client.id,
                user: r.client.user,
                name: r.client.name,
                tags: r.client.tags,
                name_tag: r.client.name_tag,
                kind: r.client.kind,
                client_type: r.client.client_type,
                mqtt_id: r.client.mqtt_id,
                nonce: r.client.nonce,
            },
            connect: ConnectOpts {
                jwt: r.connect.jwt,
                nkey: r.connect.nkey,
                sig: r.connect.sig,
                auth_token: r.connect.auth_token,
                user: r.connect.user,
                pass: r.connect.pass,
                name: r.connect.name,
                lang: r.connect.lang,
                version: r.connect.version,
                protocol: r.connect.protocol,
            },
            tls: r.tls.map(|t| ClientTls {
                version: t.version,
                cipher: t.cipher,
                verified_chain: t
                    .verified_chain
                    .into_iter()
                    .map(|c| Certificate {
                        pem: c.pem,
                        subject: c.subject,
                        common_names: c.common_names,
                        dns_sans: c.dns_sans,
                        uri_sans: c.uri_sans,
                        email_sans: c.email_sans,
                        ip_sans: c.ip_sans,
                        not_before: c.not_before,
                        not_after: c.not_after,
                        fingerprint_sha256: c.fingerprint_sha256,
                    })
                    .collect(),
            }),
        }
    }
}

impl From<Permission> for wit::Permission {
    fn from(p: Permission) -> Self {
        wit::Permission {
            allow: p.allow,
            deny: p.deny,
        }
    }
}

impl From<Grant> for wit::Grant {
    fn from(g: Grant) -> Self {
        wit::Grant {
            account: g.account,
            name: g.name,
            publish: g.publish.into(),
            subscribe: g.subscribe.into(),
            response: g
                .response
                .map(|r: ResponsePermission| wit::ResponsePermission {
                    max_msgs: r.max_msgs,
                    ttl_millis: r.ttl_millis,
                }),
            expires_at: g.expires_at,
            tags: g.tags,
            limits: g.limits.map(|l: Limits| wit::Limits {
                subs: l.subs,
                data: l.data,
                payload: l.payload,
            }),
        }
    }
}

impl From<Decision> for wit::Decision {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Allow(grant) => wit::Decision::Allow(grant.into()),
            Decision::Deny(reason) => wit::Decision::Deny(reason),
            Decision::Abstain => wit::Decision::Abstain,
        }
    }
}
