//! The plugin contract versions this host loads, one module each, and the dispatch
//! between them (Zed's `since_vX_Y_Z` pattern): a component's version is read from its
//! exports when it is loaded, and each version's bindings convert to and from the SDK's
//! plain types, so the rest of the host sees one request and one decision type whatever
//! a plugin was built against. A published version is frozen: a change to the contract
//! is a new module beside the old ones, which stay.

#[macro_use]
mod since_0_2_0;

pub mod v0_1_0;
pub mod v0_2_0;
pub mod v0_3_0;

use wasmtime::component::{Component, InstancePre, Linker, types::ComponentItem};
use wasmtime::{Engine, Store};

use super::{PluginRequest, State};
use crate::pipeline::decision::Decision;
use nats_callout_sdk as sdk;

/// The contract versions this host loads, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V0_1_0,
    V0_2_0,
    V0_3_0,
}

impl Version {
    pub const ALL: [Version; 3] = [Version::V0_1_0, Version::V0_2_0, Version::V0_3_0];

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_1_0 => "0.1.0",
            Version::V0_2_0 => "0.2.0",
            Version::V0_3_0 => "0.3.0",
        }
    }

    /// This version's WIT package, as the bindings read it (`guest-sdk/wit/vX.Y.Z/`):
    /// what `nats-callout wit` hands a plugin author in any language.
    pub fn wit(self) -> &'static str {
        match self {
            Version::V0_1_0 => include_str!("../../../../guest-sdk/wit/v0.1.0/plugin.wit"),
            Version::V0_2_0 => include_str!("../../../../guest-sdk/wit/v0.2.0/plugin.wit"),
            Version::V0_3_0 => include_str!("../../../../guest-sdk/wit/v0.3.0/plugin.wit"),
        }
    }

    /// Whether `component` exports this version's world.
    fn exported_by(self, exports: &[(String, ComponentItem)]) -> bool {
        let has = |name: &str| exports.iter().any(|(n, _)| n == name);
        match self {
            // 0.1.0 exports its two functions at the top level of the world.
            Version::V0_1_0 => [("init"), ("authenticate")].iter().all(|name| {
                exports
                    .iter()
                    .any(|(n, item)| n == name && matches!(item, ComponentItem::ComponentFunc(_)))
            }),
            // Later versions export the interface `authenticator` of their package.
            Version::V0_2_0 => has("nats-callout:plugin/authenticator@0.2.0"),
            Version::V0_3_0 => has("nats-callout:plugin/authenticator@0.3.0"),
        }
    }
}

/// Every version this host supports, for messages: `0.1.0, 0.2.0, 0.3.0`.
pub fn supported() -> String {
    Version::ALL.map(Version::as_str).join(", ")
}

/// Which contract version `component` was built against, or why it is none this host
/// can load (no plugin at all, a newer contract, several at once).
pub fn detect(engine: &Engine, component: &Component) -> Result<Version, String> {
    let exports: Vec<(String, ComponentItem)> = component
        .component_type()
        .exports(engine)
        .map(|(name, item)| (name.to_owned(), item.ty))
        .collect();
    let found: Vec<Version> = Version::ALL
        .into_iter()
        .filter(|v| v.exported_by(&exports))
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => {
            let names: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
            let other = names
                .iter()
                .find_map(|n| n.strip_prefix("nats-callout:plugin/"))
                .and_then(|n| n.split_once('@'))
                .map(|(_, version)| version);
            Err(match other {
                Some(version) => format!(
                    "built against plugin contract {version}, which this host does not \
                     know (it loads {}): upgrade nats-callout or rebuild the plugin \
                     against a supported SDK",
                    supported()
                ),
                None => format!(
                    "not a nats-callout plugin: it exports [{}], none of the contract \
                     versions {} (build it with the nats-callout-sdk crate's export_plugin!)",
                    names.join(", "),
                    supported()
                ),
            })
        }
        several => Err(format!(
            "exports plugin contracts {} at once; a component implements exactly one",
            several
                .iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(" and ")
        )),
    }
}

/// Adds every version's host imports to `linker`.
pub fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    v0_1_0::add_to_linker(linker)?;
    v0_2_0::add_to_linker(linker)?;
    v0_3_0::add_to_linker(linker)
}

/// A component ready to instantiate, with its version's bindings.
pub enum Pre {
    V0_1_0(v0_1_0::PluginPre<State>),
    V0_2_0(v0_2_0::PluginPre<State>),
    V0_3_0(v0_3_0::PluginPre<State>),
}

impl Pre {
    pub fn new(version: Version, pre: InstancePre<State>) -> wasmtime::Result<Self> {
        Ok(match version {
            Version::V0_1_0 => Pre::V0_1_0(v0_1_0::PluginPre::new(pre)?),
            Version::V0_2_0 => Pre::V0_2_0(v0_2_0::PluginPre::new(pre)?),
            Version::V0_3_0 => Pre::V0_3_0(v0_3_0::PluginPre::new(pre)?),
        })
    }

    pub async fn instantiate(&self, store: &mut Store<State>) -> wasmtime::Result<Bindings> {
        Ok(match self {
            Pre::V0_1_0(pre) => Bindings::V0_1_0(pre.instantiate_async(store).await?),
            Pre::V0_2_0(pre) => Bindings::V0_2_0(pre.instantiate_async(store).await?),
            Pre::V0_3_0(pre) => Bindings::V0_3_0(pre.instantiate_async(store).await?),
        })
    }
}

/// One instance's exports.
pub enum Bindings {
    V0_1_0(v0_1_0::Plugin),
    V0_2_0(v0_2_0::Plugin),
    V0_3_0(v0_3_0::Plugin),
}

impl Bindings {
    /// `init`, the credential kinds the plugin decides and the parts of a request it
    /// reads (before 0.3.0: all of them). The outer error is a trap, the inner one the
    /// plugin's refusal of its configuration.
    pub async fn init(
        &self,
        store: &mut Store<State>,
        config: &str,
    ) -> wasmtime::Result<Result<(Vec<sdk::CredentialKind>, sdk::RequestParts), String>> {
        let all = |kinds| (kinds, sdk::RequestParts::ALL);
        match self {
            Bindings::V0_1_0(world) => Ok(world
                .call_init(store, config)
                .await?
                .map(|()| all(v0_1_0::CREDENTIALS.to_vec()))),
            Bindings::V0_2_0(world) => Ok(v0_2_0::init(world, store, config).await?.map(all)),
            Bindings::V0_3_0(world) => v0_3_0::init(world, store, config).await,
        }
    }

    /// `authenticate` with the parts of a request the plugin reads (`init` said; all of
    /// them before 0.3.0).
    pub async fn authenticate(
        &self,
        store: &mut Store<State>,
        request: &PluginRequest,
        reads: sdk::RequestParts,
    ) -> wasmtime::Result<Decision> {
        match self {
            Bindings::V0_1_0(world) => v0_1_0::authenticate(world, store, request).await,
            Bindings::V0_2_0(world) => v0_2_0::authenticate(world, store, request, reads).await,
            Bindings::V0_3_0(world) => v0_3_0::authenticate(world, store, request, reads).await,
        }
    }
}
