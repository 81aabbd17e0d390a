//! A nats-callout authentication plugin: services connect with an API key as their
//! bearer token (`auth_token`), and the operator's config lists, per service, the key's
//! SHA-256 and the service's permissions. The config holds digests only, so it leaks no
//! key. (nats-callout's example plugin, and what `nats-callout plugin new` starts from:
//! change `authenticate` to decide your way.)
//!
//! ```yaml
//! plugins:
//!   - name: apikey
//!     path: /plugins/partner/apikey.wasm
//!     settings:
//!       keys:
//!         billing:                                   # entry name: {{name}}
//!           sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//!           account: SERVICES
//!           permissions:
//!             pub: { allow: ["billing.{{name}}.>"] }
//!             sub: { allow: ["_INBOX.>"] }
//! routes:
//!   - { name: services, match: { credentials: [bearer-token] }, plugins: [apikey, oauth2] }
//! ```
//!
//! A token that matches no digest is not this plugin's: it abstains, so a JWT plugin
//! later in the chain can still decide it (and the host denies when none does).

use std::collections::BTreeMap;

use nats_callout_sdk::{
    AuthRequest, CompiledEntry, ConfigError, Credential, CredentialKind, Decision, Host, InitError,
    PermissionEntry, Placeholders, Plugin, PluginConfig, RequestParts,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    keys: BTreeMap<String, PermissionEntry<KeyDigest>>,
}

/// The identifier field of an entry: the key's SHA-256, lowercase hex.
#[derive(Deserialize)]
struct KeyDigest {
    sha256: String,
}

pub struct ApiKeyPlugin {
    /// Entry name and compiled grant, by key digest.
    by_digest: BTreeMap<String, (String, CompiledEntry)>,
}

impl Plugin for ApiKeyPlugin {
    fn init(config: PluginConfig) -> Result<Self, InitError> {
        let settings: Settings = config.settings()?;
        let placeholders = Placeholders::new(["name"]);
        let mut by_digest = BTreeMap::new();
        for (name, entry) in settings.keys {
            let at = |field: &str| format!("settings.keys.{name}{field}");
            let digest = entry.identity.sha256.to_ascii_lowercase();
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::at(at(".sha256"), "must be 64 hex digits").into());
            }
            let policy = entry
                .compile(&placeholders)
                .map_err(|e| ConfigError::at(at(""), e))?;
            if by_digest.insert(digest, (name.clone(), policy)).is_some() {
                return Err(ConfigError::at(at(".sha256"), "the same key twice").into());
            }
        }
        Ok(Self { by_digest })
    }

    /// The credential is all it reads: the host copies nothing else into a call.
    fn reads(&self) -> RequestParts {
        RequestParts::NONE
    }

    fn credentials(&self) -> &[CredentialKind] {
        &[CredentialKind::BearerToken]
    }

    fn authenticate(&self, request: &AuthRequest, host: &dyn Host) -> Decision {
        let Credential::BearerToken(key) = &request.credential else {
            return Decision::Abstain;
        };
        let Some((name, policy)) = self.by_digest.get(&sha256_hex(key.expose())) else {
            host.debug("not a configured API key"); // never log the key itself
            return Decision::Abstain;
        };
        match policy.grant(|p| (p == "name").then(|| name.clone())) {
            Ok(mut grant) => {
                grant.name = name.clone();
                Decision::Allow(grant)
            }
            Err(e) => Decision::deny(format!("api key {name:?}: {e}")),
        }
    }
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

nats_callout_sdk::export_plugin!(ApiKeyPlugin);

#[cfg(test)]
mod tests {
    use nats_callout_sdk::testing::{self, RequestBuilder, TestHost, config};
    use serde_json::{Value, json};

    use super::*;

    fn plugin(keys: Value) -> Result<ApiKeyPlugin, InitError> {
        ApiKeyPlugin::init(config(Value::Null, json!({ "keys": keys })))
    }

    fn billing() -> Value {
        json!({"billing": {
            "sha256": sha256_hex("s3cret-key"),
            "account": "SERVICES",
            "permissions": {"pub": {"allow": ["billing.{{name}}.>"]}}
        }})
    }

    fn decide(p: &ApiKeyPlugin, token: &str) -> Decision {
        let request = RequestBuilder::new("services").bearer_token(token).build();
        testing::decide(p, &request, &TestHost::new())
    }

    #[test]
    fn a_configured_key_gets_its_entry() {
        let p = plugin(billing()).unwrap();
        let Decision::Allow(grant) = decide(&p, "s3cret-key") else {
            panic!("not admitted")
        };
        assert_eq!(grant.account, "SERVICES");
        assert_eq!(grant.name, "billing");
        assert_eq!(grant.publish.allow, ["billing.billing.>"]);
        assert_eq!(grant.subscribe.deny, [">"], "no sub rules: nothing");
    }

    #[test]
    fn other_tokens_and_modes_are_not_its_business() {
        let p = plugin(billing()).unwrap();
        assert_eq!(decide(&p, "another-key"), Decision::Abstain);
        let password = RequestBuilder::new("services")
            .user_password("billing", "s3cret-key")
            .build();
        assert_eq!(
            testing::decide(&p, &password, &TestHost::new()),
            Decision::Abstain
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        let mut keys = billing();
        keys["billing"]["sha256"] = "abc".into();
        let e = plugin(keys)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("settings.keys.billing.sha256"), "{e}");
        let mut keys = billing();
        keys["twin"] = keys["billing"].clone();
        let e = plugin(keys)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("the same key twice"), "{e}");
    }
}
