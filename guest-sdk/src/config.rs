//! The configuration a plugin receives once, at `init`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;

use crate::Secret;

/// The JSON the host passes to `init`: `{"permissions": ..., "settings": ..., "secrets":
/// ..., "host": ...}` (`host`: a [`HostContext`]; `secrets`: from 0.2.0; hosts before
/// them send only the first two).
///
/// `permissions` is this mode's section of the operator's `permissions` config (the Helm
/// values shape), `settings` the plugin's own `settings` from the `plugins` list. Either
/// may be `null`. Plugins read them into their own types with [`PluginConfig::permissions`]
/// and [`PluginConfig::settings`], whose errors name the offending key, because an operator
/// fixing a typo in YAML needs the key, not a line and column of JSON they never wrote.
///
/// `secrets` are the values of the plugin's `secrets` in the operator's config (a client
/// secret, an API key), which the host reads from files or environment variables: read
/// one with [`PluginConfig::secret`]. `Debug` never shows them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginConfig {
    permissions: Value,
    settings: Value,
    secrets: BTreeMap<String, Secret>,
    host: HostContext,
}

/// What the host tells a plugin about its capabilities (`"host"` in the init JSON): which
/// verification capabilities have key material behind them. A plugin uses it to call a
/// capability exactly when it can answer, e.g. the mtls plugin verifies chains only when
/// the operator configured a CA bundle. An older host sends nothing: all `false`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct HostContext {
    /// A CA bundle is configured: `verify_certificate_chain` can answer.
    pub ca_bundle: bool,
    /// A JWKS is configured: `verify_jwt` can answer.
    pub jwks: bool,
}

impl PluginConfig {
    /// Builds a config directly, for native tests (feature `testing`; the host's JSON
    /// reaches a component through [`PluginConfig::from_json`]).
    #[cfg(any(test, feature = "testing"))]
    pub fn new(permissions: Value, settings: Value) -> Self {
        Self {
            permissions,
            settings,
            secrets: BTreeMap::new(),
            host: HostContext::default(),
        }
    }

    /// The same config with this secret, for native tests (feature `testing`).
    #[cfg(any(test, feature = "testing"))]
    pub fn with_secret(mut self, name: &str, value: &str) -> Self {
        self.secrets.insert(name.to_owned(), Secret::new(value));
        self
    }

    /// The same config with this host context, for native tests (feature `testing`).
    #[cfg(any(test, feature = "testing"))]
    pub fn with_host(mut self, host: HostContext) -> Self {
        self.host = host;
        self
    }

    /// What the host said about its capabilities.
    pub fn host(&self) -> HostContext {
        self.host
    }

    /// Parses the JSON string the host passes to `init`. Unknown top-level keys are
    /// ignored so that a newer host can add some without breaking older plugins.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let value: Value =
            serde_json::from_str(json).map_err(|e| ConfigError::Malformed(e.to_string()))?;
        let Value::Object(mut map) = value else {
            return Err(ConfigError::Malformed("not a JSON object".into()));
        };
        // Lenient: keys a newer host adds inside `host` are ignored too.
        let host = match map.remove("host") {
            None | Some(Value::Null) => HostContext::default(),
            Some(v) => HostContext::deserialize(v)
                .map_err(|e| ConfigError::Malformed(format!("host: {e}")))?,
        };
        let secrets = match map.remove("secrets") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(v) => BTreeMap::deserialize(v)
                .map_err(|_| ConfigError::Malformed("secrets: not an object of strings".into()))?,
        };
        Ok(Self {
            permissions: map.remove("permissions").unwrap_or(Value::Null),
            settings: map.remove("settings").unwrap_or(Value::Null),
            secrets,
            host,
        })
    }

    /// Whether the operator configured a permissions section for this mode at all.
    pub fn has_permissions(&self) -> bool {
        !self.permissions.is_null()
    }

    /// Whether the plugin has settings.
    pub fn has_settings(&self) -> bool {
        !self.settings.is_null()
    }

    /// For a plugin without settings: an error naming `plugin` unless the settings are
    /// absent or `{}`, so that a typo'd or misplaced key is refused instead of ignored.
    pub fn no_settings(&self, plugin: &str) -> Result<(), ConfigError> {
        let empty = self.settings.as_object().is_some_and(|m| m.is_empty());
        if self.has_settings() && !empty {
            return Err(ConfigError::at(
                "settings",
                format!("the {plugin} plugin takes no settings"),
            ));
        }
        Ok(())
    }

    /// The raw permissions section (`Value::Null` when absent).
    pub fn raw_permissions(&self) -> &Value {
        &self.permissions
    }

    /// The raw settings (`Value::Null` when absent).
    pub fn raw_settings(&self) -> &Value {
        &self.settings
    }

    /// Reads the permissions section into `T`. An absent section is
    /// [`ConfigError::Missing`] unless `T` accepts `null` (e.g. `Option<_>`).
    pub fn permissions<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        parse("permissions", &self.permissions)
    }

    /// Reads the plugin settings into `T`; same rules as [`PluginConfig::permissions`].
    pub fn settings<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        parse("settings", &self.settings)
    }

    /// The secret the operator configured as `secrets.<name>` of this plugin; an error
    /// saying how to configure it when there is none.
    pub fn secret(&self, name: &str) -> Result<&Secret, ConfigError> {
        self.secrets.get(name).ok_or_else(|| {
            ConfigError::at(
                format!("secrets.{name}"),
                "not configured: give the plugin's entry `secrets: {name}: {file: PATH}` \
                 (or `{env: VARIABLE}`)",
            )
        })
    }
}

fn parse<T: DeserializeOwned>(section: &'static str, value: &Value) -> Result<T, ConfigError> {
    if value.is_null() {
        // `Option<_>` and friends accept null; anything else gets a clearer message than
        // serde's "invalid type: null".
        return T::deserialize(Value::Null).map_err(|_| ConfigError::Missing { section });
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            section.to_string()
        } else {
            format!("{section}.{path}")
        };
        ConfigError::Invalid {
            path,
            message: e.into_inner().to_string(),
        }
    })
}

/// Why a plugin's configuration was rejected. Messages name the key, e.g.
/// `permissions.sensor-1.permissions.pub.alow: unknown field ...`.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The host passed something that is not the expected JSON object (a host bug).
    #[error("plugin config from the host is malformed: {0}")]
    Malformed(String),
    /// A required section is absent.
    #[error("no {section} configured for this plugin")]
    Missing { section: &'static str },
    /// A value is wrong; `path` is the dotted key from the section down.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl ConfigError {
    /// A plugin's own validation error at a key, e.g.
    /// `ConfigError::at("permissions.sensor-1.public_key", "not a user public key")`.
    pub fn at(path: impl Into<String>, message: impl std::fmt::Display) -> Self {
        ConfigError::Invalid {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Entry {
        account: String,
    }

    #[test]
    fn from_json_tolerates_missing_and_extra_keys() {
        let c = PluginConfig::from_json(r#"{"settings": {"a": 1}, "future": true}"#).unwrap();
        assert!(!c.has_permissions());
        assert!(c.has_settings());
        assert_eq!(c.host(), HostContext::default());
        let c = PluginConfig::from_json(r#"{"host": {"ca_bundle": true, "future": 1}}"#).unwrap();
        assert!(c.host().ca_bundle && !c.host().jwks);
        assert!(PluginConfig::from_json(r#"{"host": {"ca_bundle": "yes"}}"#).is_err());
        assert!(PluginConfig::from_json("[1]").is_err());
        assert!(PluginConfig::from_json("{").is_err());
    }

    #[test]
    fn secrets_are_read_by_name_and_never_printed() {
        let c = PluginConfig::from_json(r#"{"secrets": {"client_secret": "s3cr3t"}}"#).unwrap();
        assert_eq!(c.secret("client_secret").unwrap().expose(), "s3cr3t");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let e = c.secret("api_key").unwrap_err().to_string();
        assert!(e.starts_with("secrets.api_key: not configured"), "{e}");
        let e = PluginConfig::from_json(r#"{"secrets": {"k": 1}}"#).unwrap_err();
        assert!(!e.to_string().contains('1'), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let c = PluginConfig::new(json!({"dev-1": {"acount": "A"}}), Value::Null);
        let e = c.permissions::<BTreeMap<String, Entry>>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "permissions.dev-1.acount: unknown field `acount`, expected `account`"
        );
        let c = PluginConfig::new(json!({"dev-1": {"account": 3}}), Value::Null);
        let e = c.permissions::<BTreeMap<String, Entry>>().unwrap_err();
        assert!(
            e.to_string()
                .starts_with("permissions.dev-1.account: invalid type: integer `3`"),
            "{e}"
        );
        let c = PluginConfig::new(json!("text"), Value::Null);
        let e = c.permissions::<Entry>().unwrap_err();
        assert!(
            e.to_string().starts_with("permissions: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn no_settings_allows_absent_or_empty_only() {
        for ok in [Value::Null, json!({})] {
            assert!(PluginConfig::new(Value::Null, ok).no_settings("x").is_ok());
        }
        for bad in [json!({"a": 1}), json!("on"), json!([])] {
            let e = PluginConfig::new(Value::Null, bad)
                .no_settings("nkey")
                .unwrap_err();
            assert_eq!(e.to_string(), "settings: the nkey plugin takes no settings");
        }
    }

    #[test]
    fn null_is_missing_unless_optional() {
        let c = PluginConfig::default();
        assert!(matches!(
            c.permissions::<Entry>(),
            Err(ConfigError::Missing {
                section: "permissions"
            })
        ));
        assert!(c.settings::<Option<Entry>>().unwrap().is_none());
    }
}
