//! A nats-callout authentication plugin that asks another system: devices connect with
//! an NKey (the host has already checked their signature over the server's nonce), and
//! the plugin asks the operator's device registry over HTTP whether the device is active
//! and which site it belongs to, then grants subjects of that device and site only.
//!
//! ```yaml
//! plugins:
//!   - name: registry
//!     path: plugins/nats_callout_plugin_registry.wasm
//!     settings:
//!       registry: "https://registry.example.com"     # GET {registry}/devices/{public key}
//!       cache_ttl: 30s                                # how long an answer is reused
//!       grant:
//!         account: DEVICES
//!         permissions:
//!           pub: { allow: ["telemetry.{{site}}.{{device}}"] }
//!           sub: { allow: ["commands.{{device}}"] }
//!     secrets:
//!       registry_token: { file: secrets/registry-token }   # optional: sent as a bearer token
//!     allowed_outbound_hosts: ["https://registry.example.com"]
//! routes:
//!   - { name: devices, match: { credentials: [nkey] }, plugins: [registry, nkey] }
//! ```
//!
//! The registry answers `200 {"id": "dev-42", "active": true, "site": "plant-3"}` for a
//! device it knows and `404` for one it does not. An unknown key is not this plugin's: it
//! abstains, so a later plugin of the route (the built-in `nkey` with its static entries)
//! may still know it. An inactive device is denied; so is every failure of the registry
//! (unreachable, slow past the deadline, another status, not a device record): a registry
//! that cannot answer admits no one.
//!
//! Answers about known devices are kept in the plugin cache, shared by all instances of
//! the plugin, for `cache_ttl`: a device reconnecting is asked about once per TTL, and a
//! deactivation takes effect within it.

use std::time::Duration;

use nats_callout_sdk::format::duration;
use nats_callout_sdk::http::Request;
use nats_callout_sdk::{
    AuthRequest, CompiledEntry, ConfigError, Credential, CredentialKind, Decision, Host, InitError,
    PermissionEntry, Placeholders, Plugin, PluginConfig, RequestParts, Secret,
};
use serde::Deserialize;

/// Long enough to absorb a fleet reconnecting after a network blip (one registry call per
/// device, not per attempt); short enough that a device switched off in the registry is
/// out within the minute.
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Base URL of the registry; its host must be in the plugin's allowed_outbound_hosts.
    registry: String,
    #[serde(default = "default_cache_ttl", with = "duration")]
    cache_ttl: Duration,
    /// The grant of every active device; `{{device}}` and `{{site}}` are the registry's.
    grant: PermissionEntry,
}

fn default_cache_ttl() -> Duration {
    DEFAULT_CACHE_TTL
}

/// What the registry says about a device.
#[derive(Debug, Deserialize)]
struct Device {
    id: String,
    active: bool,
    site: String,
}

#[derive(Debug)]
pub struct RegistryPlugin {
    registry: String,
    cache_ttl: Duration,
    token: Option<Secret>,
    grant: CompiledEntry,
}

impl Plugin for RegistryPlugin {
    fn init(config: PluginConfig) -> Result<Self, InitError> {
        let settings: Settings = config.settings()?;
        let registry = settings.registry.trim_end_matches('/').to_owned();
        if !registry.starts_with("https://") && !registry.starts_with("http://") {
            return Err(ConfigError::at("settings.registry", "must be an http(s) URL").into());
        }
        let grant = settings
            .grant
            .compile(&Placeholders::new(["device", "site"]))
            .map_err(|e| ConfigError::at("settings.grant", e))?;
        Ok(Self {
            registry,
            cache_ttl: settings.cache_ttl,
            token: config.secret("registry_token").ok().cloned(),
            grant,
        })
    }

    /// The credential is all it reads: the host copies nothing else into a call.
    fn reads(&self) -> RequestParts {
        RequestParts::NONE
    }

    fn credentials(&self) -> &[CredentialKind] {
        &[CredentialKind::Nkey]
    }

    fn authenticate(&self, request: &AuthRequest, host: &dyn Host) -> Decision {
        let Credential::Nkey(public_key) = &request.credential else {
            return Decision::Abstain;
        };
        let device = match self.lookup(public_key, host) {
            Ok(Some(device)) => device,
            Ok(None) => {
                host.debug(&format!("{public_key} is not in the registry"));
                return Decision::Abstain;
            }
            Err(reason) => {
                host.warn(&reason);
                return Decision::deny(reason);
            }
        };
        if !device.active {
            return Decision::deny(format!("device {:?} is not active", device.id));
        }
        let filled = self.grant.grant(|p| match p {
            "device" => Some(device.id.clone()),
            "site" => Some(device.site.clone()),
            _ => None,
        });
        match filled {
            Ok(mut grant) => {
                grant.name = device.id;
                Decision::Allow(grant)
            }
            // A registry value that would widen a subject (`a.>`): the template says which.
            Err(e) => Decision::deny(format!("device {:?}: {e}", device.id)),
        }
    }
}

impl RegistryPlugin {
    /// The registry's record of the device with this key, `None` if it knows none.
    fn lookup(&self, public_key: &str, host: &dyn Host) -> Result<Option<Device>, String> {
        let key = format!("device:{public_key}");
        if let Some(cached) = host.cache_get(&key)
            && let Ok(device) = serde_json::from_slice(&cached)
        {
            return Ok(Some(device));
        }
        // The host checked the key's signature, and user keys are base32: safe in a path.
        let mut request = Request::get(format!("{}/devices/{public_key}", self.registry))
            .header("accept", "application/json");
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {}", token.expose()));
        }
        let response = host
            .http(&request)
            .map_err(|e| format!("registry unreachable: {e}"))?;
        match response.status {
            200 => {}
            404 => return Ok(None),
            status => return Err(format!("registry answered HTTP {status}")),
        }
        let device: Device = response
            .json()
            .map_err(|e| format!("registry answered something other than a device: {e}"))?;
        host.cache_set(&key, &response.body, self.cache_ttl);
        Ok(Some(device))
    }
}

nats_callout_sdk::export_plugin!(RegistryPlugin);

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use nats_callout_sdk::http::Response;
    use nats_callout_sdk::testing::{self, RequestBuilder, TestHost, config};
    use serde_json::{Value, json};

    use super::*;

    const KEY: &str = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4";

    fn settings() -> Value {
        json!({
            "registry": "https://registry.example.com/",
            "grant": {
                "account": "DEVICES",
                "permissions": {
                    "pub": { "allow": ["telemetry.{{site}}.{{device}}"] },
                    "sub": { "allow": ["commands.{{device}}"] }
                }
            }
        })
    }

    fn plugin() -> RegistryPlugin {
        RegistryPlugin::init(config(Value::Null, settings())).unwrap()
    }

    /// A registry answering `status` and `body` for every device, counting its calls.
    fn registry(status: u16, body: Value) -> (TestHost, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let host = TestHost::new().with_http(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(status, body.to_string()))
        });
        (host, calls)
    }

    fn decide(p: &RegistryPlugin, host: &TestHost) -> Decision {
        testing::decide(p, &RequestBuilder::new("devices").nkey(KEY).build(), host)
    }

    #[test]
    fn active_devices_get_their_own_subjects_once_per_ttl() {
        let p = plugin();
        let (host, calls) = registry(
            200,
            json!({"id": "dev-42", "active": true, "site": "plant-3"}),
        );
        for _ in 0..3 {
            let Decision::Allow(g) = decide(&p, &host) else {
                panic!("{:?}", host.logs())
            };
            assert_eq!(g.name, "dev-42");
            assert_eq!(g.publish.allow, ["telemetry.plant-3.dev-42"]);
            assert_eq!(g.subscribe.allow, ["commands.dev-42"]);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let sent = &host.http_requests()[0];
        assert_eq!(
            sent.url,
            format!("https://registry.example.com/devices/{KEY}")
        );
        assert!(!sent.headers.iter().any(|(n, _)| n == "authorization"));
    }

    #[test]
    fn the_registry_token_is_sent_when_configured() {
        let c = config(Value::Null, settings()).with_secret("registry_token", "t0ken");
        let p = RegistryPlugin::init(c).unwrap();
        let (host, _) = registry(404, json!({}));
        assert_eq!(decide(&p, &host), Decision::Abstain);
        let sent = &host.http_requests()[0];
        assert!(
            sent.headers
                .contains(&("authorization".into(), "Bearer t0ken".into()))
        );
        assert!(!host.logs().iter().any(|(_, l)| l.contains("t0ken")));
    }

    #[test]
    fn anything_but_an_active_device_is_not_admitted() {
        let p = plugin();
        let cases = [
            (
                200,
                json!({"id": "dev-9", "active": false, "site": "x"}),
                "device \"dev-9\" is not active",
            ),
            (
                200,
                json!({"id": "dev-9", "active": true, "site": "a.>"}),
                "device \"dev-9\": ",
            ),
            (200, json!({"id": "dev-9"}), "something other than a device"),
            (
                500,
                json!({"id": "dev-9", "active": true, "site": "x"}),
                "registry answered HTTP 500",
            ),
        ];
        for (status, body, expected) in cases {
            let (host, _) = registry(status, body.clone());
            match decide(&p, &host) {
                Decision::Deny(r) => assert!(r.contains(expected), "{body}: {r}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        let host = TestHost::new().with_http(|_| Err("timed out".into()));
        assert_eq!(
            decide(&p, &host),
            Decision::deny("registry unreachable: timed out")
        );
        let password = RequestBuilder::new("devices")
            .user_password("dev", "pw")
            .build();
        assert_eq!(testing::decide(&p, &password, &host), Decision::Abstain);
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |s: Value| {
            RegistryPlugin::init(config(Value::Null, s))
                .unwrap_err()
                .to_string()
        };
        let mut s = settings();
        s["registry"] = json!("registry.example.com");
        assert!(err(s).starts_with("settings.registry"));
        let mut s = settings();
        s["grant"]["permissions"]["pub"]["allow"] = json!(["x.{{serial}}"]);
        assert!(err(s).starts_with("settings.grant"));
        let mut s = settings();
        s["cache_ttl"] = json!("later");
        assert!(err(s).starts_with("settings.cache_ttl"));
    }
}
