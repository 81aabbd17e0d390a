//! A plugin that asks an HTTP endpoint before it decides, as a partner's registry lookup
//! does: `GET <url>`, and a body of exactly `allow` admits (into `ANONYMOUS`, with
//! `public.>`); anything else, any error, denies with what happened. Settings: `url`,
//! `cache_ms` (keep an answer in the plugin cache that long; default: ask every time),
//! `fetch_at_init` (ask once in `init` as well, which the host refuses).

use std::time::Duration;

use nats_callout_sdk::http::Request;
use nats_callout_sdk::{
    AuthRequest, CredentialKind, Decision, Grant, Host, InitError, Permission, Plugin, PluginConfig,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    url: String,
    #[serde(default)]
    cache_ms: Option<u64>,
    #[serde(default)]
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    fetch_at_init: bool,
}

pub struct Networked {
    settings: Settings,
}

impl Plugin for Networked {
    fn init(config: PluginConfig) -> Result<Self, InitError> {
        let settings: Settings = config.settings()?;
        // The SDK offers no host at init; the raw interface does, and the host must
        // refuse it there.
        #[cfg(target_arch = "wasm32")]
        if settings.fetch_at_init {
            use wasip2::http::types::{Fields, OutgoingRequest, Scheme};
            let request = OutgoingRequest::new(Fields::new());
            let _ = request.set_scheme(Some(&Scheme::Http));
            let _ = request.set_authority(Some("127.0.0.1:9"));
            let _ = request.set_path_with_query(Some("/x"));
            wasip2::http::outgoing_handler::handle(request, None)
                .map_err(|e| format!("fetch at init: {e:?}"))?;
        }
        Ok(Networked { settings })
    }

    fn credentials(&self) -> &[CredentialKind] {
        &[CredentialKind::None]
    }

    fn authenticate(&self, _request: &AuthRequest, host: &dyn Host) -> Decision {
        let url = &self.settings.url;
        let cached = self.settings.cache_ms.and_then(|_| host.cache_get(url));
        let body = match cached {
            Some(body) => body,
            None => match host.http(&Request::get(url)) {
                Ok(r) if r.is_success() => {
                    if let Some(ms) = self.settings.cache_ms {
                        host.cache_set(url, &r.body, Duration::from_millis(ms));
                    }
                    r.body
                }
                Ok(r) => return Decision::deny(format!("lookup answered {}", r.status)),
                Err(e) => return Decision::deny(format!("lookup failed: {e}")),
            },
        };
        if body == b"allow" {
            let public = Permission {
                allow: vec!["public.>".into()],
                deny: Vec::new(),
            };
            let mut grant = Grant::default();
            grant.account = "ANONYMOUS".into();
            grant.publish = public.clone();
            grant.subscribe = public;
            Decision::Allow(grant)
        } else {
            let shown: String = String::from_utf8_lossy(&body).chars().take(32).collect();
            Decision::deny(format!("lookup said {shown:?}"))
        }
    }
}

nats_callout_sdk::export_plugin!(Networked);
