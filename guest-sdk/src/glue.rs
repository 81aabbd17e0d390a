//! The target-independent half of the export glue: what `init` and `authenticate` do with
//! the plugin instance, kept out of `export` so it is unit-tested natively.

use std::sync::OnceLock;

use crate::{AuthRequest, CredentialKind, Decision, Host, Plugin, PluginConfig, RequestParts};

const ALREADY: &str = "plugin already initialised";

/// Parses the config and builds the plugin once per instance; the credential kinds it
/// decides and the parts of a request it reads.
pub fn init<P: Plugin>(
    slot: &OnceLock<P>,
    config: &str,
) -> Result<(Vec<CredentialKind>, RequestParts), String> {
    // Checked before building, so a second init cannot repeat the plugin's init work.
    if slot.get().is_some() {
        return Err(ALREADY.into());
    }
    let config = PluginConfig::from_json(config).map_err(|e| e.to_string())?;
    let plugin = P::init(config).map_err(|e| e.to_string())?;
    let info = (plugin.credentials().to_vec(), plugin.reads());
    slot.set(plugin).map_err(|_| ALREADY.to_string())?;
    Ok(info)
}

/// Decides with the plugin, or denies if `init` has not succeeded.
pub fn authenticate<P: Plugin>(
    slot: &OnceLock<P>,
    request: &AuthRequest,
    host: &dyn Host,
) -> Decision {
    match slot.get() {
        Some(plugin) => plugin.authenticate(request, host),
        None => Decision::deny("plugin not initialised"),
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::InitError;
    use crate::testing::{RequestBuilder, TestHost};

    struct Echo(String);

    impl Plugin for Echo {
        fn init(config: PluginConfig) -> Result<Self, InitError> {
            Ok(Echo(config.settings::<String>()?))
        }
        fn credentials(&self) -> &[CredentialKind] {
            &[CredentialKind::None]
        }
        fn authenticate(&self, _: &AuthRequest, _: &dyn Host) -> Decision {
            Decision::deny(self.0.clone())
        }
    }

    #[test]
    fn init_once_then_decide() {
        let slot = OnceLock::new();
        let request = RequestBuilder::new("noauth").build();
        let host = TestHost::new();
        assert_eq!(
            authenticate::<Echo>(&slot, &request, &host),
            Decision::deny("plugin not initialised")
        );
        assert_eq!(
            init::<Echo>(&slot, r#"{"settings": 1}"#),
            Err("settings: invalid type: integer `1`, expected a string".into())
        );
        assert!(init::<Echo>(&slot, "nope").is_err());
        assert_eq!(
            init::<Echo>(&slot, r#"{"permissions": null, "settings": "hi"}"#),
            Ok((vec![CredentialKind::None], RequestParts::ALL))
        );
        assert_eq!(
            init::<Echo>(&slot, r#"{"settings": "again"}"#),
            Err(ALREADY.into())
        );
        assert_eq!(authenticate(&slot, &request, &host), Decision::deny("hi"));
    }
}
