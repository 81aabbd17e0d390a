//! `nats-callout:plugin@0.3.0`, the current contract: its bindings, its host imports,
//! and the conversions between its types and the SDK's. Frozen with the contract once
//! released; plugins built against it keep loading.

use crate::pipeline::decision;
use crate::runtime::{PluginRequest, State};
use nats_callout_sdk as sdk;

since_0_2_0!(
    "../guest-sdk/wit/v0.3.0",
    async fn verify_jwt(
        &mut self,
        token: String,
        claims: Option<Vec<String>>,
    ) -> Result<wit::VerifiedJwt, String> {
        verified(State::verify_jwt(self, &token, claims.as_deref()).await)
    }
);

/// A part of the request the plugin reads, or `None`.
fn part<T>(read: bool, value: impl FnOnce() -> T) -> Option<T> {
    read.then(value)
}

/// `init`: the credential kinds the plugin decides and the parts of a request it reads,
/// or its refusal.
pub async fn init(
    world: &Plugin,
    store: &mut wasmtime::Store<State>,
    config: &str,
) -> wasmtime::Result<Result<(Vec<sdk::CredentialKind>, sdk::RequestParts), String>> {
    let info = world
        .nats_callout_plugin_authenticator()
        .call_init(store, config)
        .await?;
    Ok(info.map(|info| {
        let mut reads = sdk::RequestParts::NONE;
        reads.server = info.reads.contains(wit::RequestParts::SERVER);
        reads.client = info.reads.contains(wit::RequestParts::CLIENT);
        reads.connect = info.reads.contains(wit::RequestParts::CONNECT);
        reads.tls = info.reads.contains(wit::RequestParts::TLS);
        (info.credentials.into_iter().map(kind).collect(), reads)
    }))
}
