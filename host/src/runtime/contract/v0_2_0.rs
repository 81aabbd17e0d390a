//! `nats-callout:plugin@0.2.0`: its bindings, its host imports, and the conversions
//! between its types and the SDK's. Frozen with the contract once released; plugins
//! built against it keep loading.

use crate::pipeline::decision;
use crate::runtime::{PluginRequest, State};
use nats_callout_sdk as sdk;

since_0_2_0!(
    "../guest-sdk/wit/v0.2.0",
    async fn verify_jwt(&mut self, token: String) -> Result<wit::VerifiedJwt, String> {
        verified(State::verify_jwt(self, &token, None).await)
    }
);

/// Every part of the request: 0.2.0 plugins read them all.
fn part<T>(_read: bool, value: impl FnOnce() -> T) -> T {
    value()
}

/// `init`: the credential kinds the plugin decides, or its refusal.
pub async fn init(
    world: &Plugin,
    store: &mut wasmtime::Store<State>,
    config: &str,
) -> wasmtime::Result<Result<Vec<sdk::CredentialKind>, String>> {
    let info = world
        .nats_callout_plugin_authenticator()
        .call_init(store, config)
        .await?;
    Ok(info.map(|info| info.credentials.into_iter().map(kind).collect()))
}
