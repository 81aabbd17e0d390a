//! The `noauth` mode: admits clients that presented no credential at all, with the one
//! grant of the operator's `permissions.noauth` entry. Meant for development and public
//! read-only subjects, never as a fallback for failed credentials (the host never routes
//! those here, and this plugin refuses any request that carries one anyway).

use nats_callout_sdk::{
    AuthRequest, ConfigError, Credential, CredentialKind, Decision, Grant, Host, InitError,
    PermissionEntry, Placeholders, Plugin, PluginConfig, RequestParts,
};

/// The plugin: the grant is the same for every anonymous client, so it is built once.
#[derive(Debug)]
pub struct Noauth {
    grant: Grant,
}

impl Plugin for Noauth {
    fn init(config: PluginConfig) -> Result<Self, InitError> {
        if !config.has_permissions() {
            return Err("noauth mode needs a permissions.noauth entry".into());
        }
        config.no_settings("noauth")?;
        let entry: PermissionEntry = config.permissions()?;
        // No placeholders: an anonymous client has no verified identity to fill them with,
        // and a client-chosen name must not pick the subjects it gets.
        let compiled = entry
            .compile(&Placeholders::new::<&str>([]))
            .map_err(|e| ConfigError::at("permissions", e))?;
        let grant = compiled
            .grant(|_| None)
            .map_err(|e| ConfigError::at("permissions", e))?;
        Ok(Self { grant })
    }

    fn credentials(&self) -> &[CredentialKind] {
        &[CredentialKind::None]
    }

    /// Whether a certificate came with the connection, below; nothing else.
    fn reads(&self) -> RequestParts {
        RequestParts::TLS
    }

    fn authenticate(&self, request: &AuthRequest, _host: &dyn Host) -> Decision {
        // Defence in depth for the rule "a presented credential never falls through to
        // noauth": the host routes only credential-less clients here.
        if request.credential != Credential::None {
            return Decision::deny(format!(
                "noauth refuses a client that presented a credential ({}); it must \
                 authenticate with it",
                request.credential.kind()
            ));
        }
        let verified_cert = request
            .tls
            .as_ref()
            .is_some_and(|tls| !tls.verified_chain.is_empty());
        if verified_cert {
            return Decision::deny(
                "noauth refuses a client that presented a client certificate; it must \
                 authenticate with it",
            );
        }
        Decision::Allow(self.grant.clone())
    }
}

nats_callout_sdk::export_plugin!(Noauth);

#[cfg(test)]
mod tests {
    use nats_callout_sdk::testing::{RequestBuilder, TestHost, config, decide};
    use nats_callout_sdk::{Certificate, ClientTls, Permission};
    use serde_json::{Value, json};

    use super::*;

    fn noauth_section() -> Value {
        json!({
            "account": "ANONYMOUS",
            "permissions": {
                "pub": {"allow": ["public.>"]},
                "sub": {"allow": ["public.>"]},
                "resp": {"max": 1, "ttl": "5s"}
            }
        })
    }

    fn plugin() -> Noauth {
        Noauth::init(config(noauth_section(), Value::Null)).unwrap()
    }

    fn init_err(permissions: Value, settings: Value) -> String {
        Noauth::init(config(permissions, settings))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn allows_anonymous_clients_with_the_entry() {
        let host = TestHost::new();
        let request = RequestBuilder::new("noauth").build();
        let Decision::Allow(grant) = decide(&plugin(), &request, &host) else {
            panic!("expected allow");
        };
        assert_eq!(grant.account, "ANONYMOUS");
        assert_eq!(grant.name, "");
        assert_eq!(grant.publish.allow, ["public.>"]);
        assert_eq!(grant.subscribe.allow, ["public.>"]);
        assert_eq!(grant.response.map(|r| r.ttl_millis), Some(5000));
        assert_eq!(grant.expires_at, None);
    }

    #[test]
    fn takes_only_anonymous_clients() {
        assert_eq!(plugin().credentials(), [CredentialKind::None]);
    }

    #[test]
    fn refuses_requests_carrying_credentials() {
        let host = TestHost::new();
        let p = plugin();
        let mut cert = ClientTls::default();
        cert.verified_chain = vec![Certificate::default()];
        for request in [
            RequestBuilder::new("noauth").nkey("UABC"),
            RequestBuilder::new("noauth").bearer_token("t"),
            RequestBuilder::new("noauth").user_password("u", "p"),
            RequestBuilder::new("noauth").user_jwt("eyJ"),
            RequestBuilder::new("noauth").certificate(cert.clone()),
            // A verified chain is a credential even where the host did not call it one.
            RequestBuilder::new("noauth").tls(cert),
        ] {
            let decision = decide(&p, &request.build(), &host);
            assert!(matches!(decision, Decision::Deny(_)), "{decision:?}");
        }
        // TLS without a verified client certificate is still anonymous.
        let request = RequestBuilder::new("noauth")
            .tls(ClientTls::default())
            .build();
        assert!(matches!(decide(&p, &request, &host), Decision::Allow(_)));
    }

    #[test]
    fn missing_pub_allows_nothing() {
        let p = Noauth::init(config(
            json!({"account": "ANONYMOUS", "permissions": {"sub": {"allow": ["public.>"]}}}),
            Value::Null,
        ))
        .unwrap();
        assert_eq!(
            p.grant.publish,
            Permission {
                allow: vec![],
                deny: vec![">".into()]
            }
        );
    }

    #[test]
    fn config_errors() {
        assert_eq!(
            init_err(Value::Null, Value::Null),
            "noauth mode needs a permissions.noauth entry"
        );
        assert_eq!(
            init_err(json!({"permissions": {}}), Value::Null),
            "permissions: missing field `account`"
        );
        assert_eq!(
            init_err(
                json!({"account": "A", "permissions": {"pub": {"allow": ["public..x"]}}}),
                Value::Null
            ),
            "permissions: subject \"public..x\" has an empty token (leading, trailing or double `.`)"
        );
        assert_eq!(
            init_err(
                json!({"account": "A", "permissions": {"sub": {"alow": ["x"]}}}),
                Value::Null
            ),
            "permissions.permissions.sub.alow: unknown field `alow`, expected `allow` or `deny`"
        );
        assert!(
            init_err(
                json!({"account": "A", "permissions": {"pub": {"allow": ["p.{{client.name}}"]}}}),
                Value::Null
            )
            .contains("unknown placeholder {{client.name}} (this plugin offers: none)")
        );
        assert_eq!(
            init_err(noauth_section(), json!({"x": 1})),
            "settings: the noauth plugin takes no settings"
        );
        Noauth::init(config(noauth_section(), json!({}))).unwrap();
    }
}
