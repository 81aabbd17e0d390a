//! The `oauth2` mode: clients connect with username `oauthtoken` and an OAuth2 access
//! token as password (or as `auth_token`, or as the MQTT password). The host verifies
//! the token against the provider's JWKS (`verify-jwt`, native crypto, strict rules);
//! this plugin only decides which permissions entry the verified claims get, by the
//! rules of [`nats_callout_token_entries`] (shared with the `introspection` plugin).

use nats_callout_sdk::{
    AuthRequest, Claims, CredentialKind, Decision, Host, InitError, Plugin, PluginConfig,
    RequestParts,
};
use nats_callout_token_entries::{TokenEntries, access_token};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Longest value a placeholder may be filled with (characters).
    #[serde(default)]
    max_template_value_len: Option<usize>,
}

#[derive(Debug)]
pub struct OauthPlugin {
    entries: TokenEntries,
}

impl Plugin for OauthPlugin {
    fn init(config: PluginConfig) -> Result<Self, InitError> {
        let settings: Option<Settings> = config.settings()?;
        let settings = settings.unwrap_or_default();
        Ok(Self {
            entries: TokenEntries::from_config("oauth2", &config, settings.max_template_value_len)?,
        })
    }

    fn credentials(&self) -> &[CredentialKind] {
        &[CredentialKind::BearerToken]
    }

    fn reads(&self) -> RequestParts {
        self.entries.reads()
    }

    fn authenticate(&self, request: &AuthRequest, host: &dyn Host) -> Decision {
        let token = match access_token(request) {
            Ok(token) => token,
            Err(decision) => return decision,
        };
        let verified = match host.verify_jwt_claims(token, self.entries.claims()) {
            Ok(v) => v,
            Err(reason) => return Decision::deny(format!("access token rejected: {reason}")),
        };
        let Ok(claims) = Claims::parse(&verified.claims_json) else {
            return Decision::deny("access token claims are not a JSON object");
        };
        self.entries
            .decide(&claims, verified.expires_at, request, host)
    }
}

nats_callout_sdk::export_plugin!(OauthPlugin);

#[cfg(test)]
mod tests {
    use nats_callout_sdk::VerifiedJwt;
    use nats_callout_sdk::testing::{self, RequestBuilder, TestHost, config};
    use serde_json::{Value, json};

    use super::*;

    /// The test double of the host's verifier: a "token" is the claims JSON itself;
    /// anything else fails like a bad signature does.
    fn host() -> TestHost {
        TestHost::new().with_verify_jwt(|token| {
            serde_json::from_str::<Value>(token)
                .ok()
                .filter(Value::is_object)
                .map(|v| VerifiedJwt {
                    expires_at: v["exp"].as_i64().unwrap_or(4_000_000_000),
                    claims_json: token.to_owned(),
                })
                .ok_or_else(|| "token signature is invalid".to_owned())
        })
    }

    fn plugin() -> OauthPlugin {
        let section = json!({
            "mqtt-client": {
                "azp": "mqtt-client",
                "account": "CSC",
                "permissions": { "pub": { "allow": ["events.{{claims.site}}"] } }
            }
        });
        OauthPlugin::init(config(section, json!({"max_template_value_len": 3}))).unwrap()
    }

    fn decide(p: &OauthPlugin, token: impl Into<String>) -> Decision {
        let request = RequestBuilder::new("oauth2").bearer_token(token).build();
        testing::decide(p, &request, &host())
    }

    fn deny_reason(d: Decision) -> String {
        match d {
            Decision::Deny(r) => r,
            other => panic!("expected deny, got {other:?}"),
        }
    }

    #[test]
    fn verified_claims_pick_the_entry_and_the_grant_expires_with_the_token() {
        let p = plugin();
        let token = json!({"azp": "mqtt-client", "site": "eu", "exp": 1234});
        let Decision::Allow(g) = decide(&p, token.to_string()) else {
            panic!()
        };
        assert_eq!((g.account.as_str(), g.expires_at), ("CSC", Some(1234)));
        assert_eq!(g.publish.allow, ["events.eu"]);
        // settings.max_template_value_len reaches the entries.
        let token = json!({"azp": "mqtt-client", "site": "europe"});
        let r = deny_reason(decide(&p, token.to_string()));
        assert!(r.contains("longer than 3"), "{r}");
    }

    #[test]
    fn unverified_and_empty_tokens_are_denied() {
        let p = plugin();
        let r = deny_reason(decide(&p, "not-a-token"));
        assert_eq!(r, "access token rejected: token signature is invalid");
        assert!(deny_reason(decide(&p, "")).contains("no access token"));
        let r = deny_reason(decide(&p, json!({"sub": "x"}).to_string()));
        assert!(r.contains("no oauth2 permissions entry"), "{r}");
    }

    #[test]
    fn only_bearer_tokens() {
        let p = plugin();
        assert_eq!(p.credentials(), [CredentialKind::BearerToken]);
        let token = json!({"azp": "mqtt-client"}).to_string();
        for other in [
            RequestBuilder::new("oauth2"),
            RequestBuilder::new("oauth2").user_password("oauth", token.clone()),
            RequestBuilder::new("oauth2").user_jwt(token),
        ] {
            assert_eq!(
                testing::decide(&p, &other.build(), &host()),
                Decision::Abstain
            );
        }
    }

    #[test]
    fn config_errors() {
        let err = |p: Value, s: Value| OauthPlugin::init(config(p, s)).unwrap_err().to_string();
        let e = err(Value::Null, Value::Null);
        assert!(e.contains("permissions.oauth2"), "{e}");
        let e = err(
            json!({"x": {"azp": "a", "account": "A"}}),
            json!({"max_len": 1}),
        );
        assert!(e.contains("settings") && e.contains("max_len"), "{e}");
    }
}
