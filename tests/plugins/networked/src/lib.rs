//! A plugin that asks the network (an outbound HTTP request through the standard
//! `wasi:http/outgoing-handler`) before it decides: what a partner's registry lookup
//! looks like. The host's sandbox does not offer the interface, and must say so at load.

use nats_callout_sdk::{
    AuthRequest, CredentialKind, Decision, Host, InitError, Plugin, PluginConfig,
};

pub struct Networked;

impl Plugin for Networked {
    fn init(_config: PluginConfig) -> Result<Self, InitError> {
        Ok(Networked)
    }

    fn credentials(&self) -> &[CredentialKind] {
        &[CredentialKind::None]
    }

    fn authenticate(&self, _request: &AuthRequest, _host: &dyn Host) -> Decision {
        #[cfg(target_arch = "wasm32")]
        {
            use wasip2::http::{outgoing_handler, types};
            let request = types::OutgoingRequest::new(types::Fields::new());
            if let Err(e) = outgoing_handler::handle(request, None) {
                return Decision::deny(format!("registry unreachable: {e:?}"));
            }
        }
        Decision::deny("registry lookups are not implemented")
    }
}

nats_callout_sdk::export_plugin!(Networked);
