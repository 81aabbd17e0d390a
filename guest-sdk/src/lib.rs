//! Guest SDK for nats-callout plugins.
//!
//! A plugin is a Rust type implementing [`Plugin`]; [`export_plugin!`] turns it into a
//! WebAssembly component of the WIT world `nats-callout:plugin/plugin@0.3.0` (the WIT
//! ships in this crate, `wit/v0.3.0/`) when built for `wasm32-wasip2`. Plugin code sees
//! only this crate's plain types and the [`Host`] trait, never wit-bindgen's, so the same
//! crate also compiles natively: unit tests run it against [`testing::TestHost`]
//! (feature `testing`).
//!
//! ```
//! use nats_callout_sdk::{
//!     AuthRequest, Credential, CredentialKind, Decision, Host, InitError, Plugin, PluginConfig,
//! };
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn init(_config: PluginConfig) -> Result<Self, InitError> {
//!         Ok(Hello)
//!     }
//!     fn credentials(&self) -> &[CredentialKind] {
//!         &[CredentialKind::None]
//!     }
//!     fn authenticate(&self, request: &AuthRequest, _host: &dyn Host) -> Decision {
//!         match request.credential {
//!             Credential::None => Decision::deny("no anonymous clients here"),
//!             _ => Decision::Abstain,
//!         }
//!     }
//! }
//!
//! nats_callout_sdk::export_plugin!(Hello);
//! ```

/// One spelling of the contract version, for [`CONTRACT_VERSION`] and the component's
/// `nats-callout-sdk` section (`concat!` takes literals only).
macro_rules! contract_version {
    () => {
        "0.3.0"
    };
}

// Lets the generated bindings name this crate by the same absolute path from inside it
// and from the plugin crates that expand the export macro.
extern crate self as nats_callout_sdk;

pub mod cert;
mod claims;
mod config;
pub mod format;
pub mod http;
// Used by the wasm export only, but compiled and unit-tested natively too.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod glue;
#[cfg(feature = "nkey")]
pub mod nkey;
pub mod password;
pub mod policy;
mod types;

#[cfg(feature = "testing")]
pub mod testing;

#[cfg(target_arch = "wasm32")]
mod export;

pub use claims::{AmbiguousClient, Claims};
pub use config::{ConfigError, HostContext, PluginConfig};
pub use policy::{
    CompiledEntry, PermissionEntry, Permissions, Placeholders, PolicyError, SubjectKind,
};
pub use types::{
    AuthRequest, Certificate, ClientInfo, ClientTls, ConnectOpts, ConnectionType, Credential,
    CredentialKind, Decision, Grant, LogLevel, Permission, RequestParts, ResponsePermission,
    Secret, ServerInfo, TimeRange, VerifiedJwt,
};

/// The plugin contract this SDK builds components against.
pub const CONTRACT_VERSION: &str = contract_version!();

/// Error type of [`Plugin::init`]: anything displayable as an error (`ConfigError`,
/// `PolicyError`, `String`, `&str` via `.into()`), so `?` works on all of them. The host
/// shows its `Display` text to the operator when it rejects the plugin.
pub type InitError = Box<dyn std::error::Error + Send + Sync>;

/// Capabilities the host offers to a plugin (the WIT interface `host`).
///
/// Heavy crypto runs natively in the host; plugins stay small and call these instead.
pub trait Host {
    /// A log line attributed to this plugin. Never pass credentials.
    fn log(&self, level: LogLevel, message: &str);

    /// Verifies an ed25519 NKey `signature` (base64, URL-safe or standard, padded or not)
    /// over `payload` by the user key `public_key` (`U...`).
    fn verify_nkey_signature(
        &self,
        public_key: &str,
        payload: &[u8],
        signature: &str,
    ) -> Result<(), String>;

    /// Verifies a JWT access token against this plugin's JWKS with the host's strict rules.
    fn verify_jwt(&self, token: &str) -> Result<VerifiedJwt, String>;

    /// [`Host::verify_jwt`], handing back only the claims named in `claims` (those the
    /// token has): the host checks the token the same way, and the plugin copies and
    /// parses a few claims instead of all of them. Read the result with [`Claims`].
    fn verify_jwt_claims(&self, token: &str, claims: &[String]) -> Result<VerifiedJwt, String> {
        Claims::check_asked(claims)?;
        let mut verified = self.verify_jwt(token)?;
        let mut all = Claims::parse(&verified.claims_json).map_err(|e| e.to_string())?;
        all.retain(claims);
        verified.claims_json = serde_json::to_string(&all).map_err(|e| e.to_string())?;
        Ok(verified)
    }

    /// Verifies a PEM chain (leaf first) against this plugin's CA bundle, now.
    fn verify_certificate_chain(&self, chain: &[String]) -> Result<(), String>;

    /// Verifies `password` against a bcrypt or argon2id `hash` (see [`password`]),
    /// natively: `Ok(false)` for a wrong password; an error for a hash or password
    /// outside the host's rules. A right and a wrong password cost the same. The time it
    /// takes counts against the plugin's deadline: bcrypt cost 12 takes about 0.3 s.
    fn verify_password_hash(&self, password: &str, hash: &str) -> Result<bool, String>;

    /// The value stored under `key` by any instance of this plugin, unless expired: the
    /// plugin's cache, shared by its pooled instances, bounded, emptied by a reload.
    fn cache_get(&self, key: &str) -> Option<Vec<u8>>;

    /// Stores `value` under `key` for `ttl` at most (the operator caps it). Keep secrets
    /// out of keys: store by digest.
    fn cache_set(&self, key: &str, value: &[u8], ttl: std::time::Duration);

    /// Sends an HTTP request and reads the whole response (see [`http`]): only to hosts
    /// the operator listed for this plugin, within the call's deadline. An `Err` for
    /// anything but a response: deny then, never allow.
    fn http(&self, request: &http::Request) -> Result<http::Response, String>;

    /// `log(LogLevel::Debug, ..)`.
    fn debug(&self, message: &str) {
        self.log(LogLevel::Debug, message);
    }

    /// `log(LogLevel::Info, ..)`.
    fn info(&self, message: &str) {
        self.log(LogLevel::Info, message);
    }

    /// `log(LogLevel::Warn, ..)`.
    fn warn(&self, message: &str) {
        self.log(LogLevel::Warn, message);
    }

    /// `log(LogLevel::Error, ..)`.
    fn error(&self, message: &str) {
        self.log(LogLevel::Error, message);
    }
}

/// An authentication plugin.
///
/// The host creates several instances of a component (a warm pool) and calls `init` once
/// in each, then `authenticate` for many requests; so `init` is the place for all parsing
/// and validation, and `authenticate` should be cheap and must not rely on state shared
/// between requests. `Send + Sync + 'static` because the export glue keeps the instance
/// in a static.
pub trait Plugin: Sized + Send + Sync + 'static {
    /// Builds the plugin from its configuration. An error rejects the plugin at load time;
    /// make it name the offending key (see [`ConfigError`]).
    fn init(config: PluginConfig) -> Result<Self, InitError>;

    /// The credential kinds this plugin decides. The host asks it only about those, and
    /// refuses (at load, and in `nats-callout check`) a config whose route sends it none
    /// of them, or a route one of whose kinds no plugin of its chain takes.
    fn credentials(&self) -> &[CredentialKind];

    /// The parts of a request this plugin reads beyond its route, credential and user
    /// key, asked once after `init`: the host copies only these into each call, and the
    /// others arrive empty. Everything unless a plugin says less; each part left out
    /// saves copying its strings into the component on every connect. The native test
    /// harness (`testing::decide`) empties the same parts, so unit tests catch a plugin
    /// that reads more than it says.
    fn reads(&self) -> RequestParts {
        RequestParts::ALL
    }

    /// Decides one connection: allow with a grant, deny with a reason (no secrets: it is
    /// logged and sent to nats-server), or abstain to let the next plugin of the route
    /// decide.
    fn authenticate(&self, request: &AuthRequest, host: &dyn Host) -> Decision;
}

/// Exports a [`Plugin`] type as the component's `init` and `authenticate`, and records
/// the SDK and contract version in the component (custom section `nats-callout-sdk`,
/// which the host logs at load).
///
/// Expands to nothing on native targets, so plugin crates compile natively for tests.
/// On wasm32: `init` parses the config JSON and stores the plugin in a static (a second
/// `init` is an error); `authenticate` before `init` denies with "plugin not initialised".
///
/// ```text
/// nats_callout_sdk::export_plugin!(MyPlugin);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            static PLUGIN: $crate::__private::OnceLock<$plugin> =
                $crate::__private::OnceLock::new();

            #[unsafe(link_section = "nats-callout-sdk")]
            #[used]
            static BUILT_WITH: [u8; $crate::__private::BUILT_WITH.len()] =
                *$crate::__private::BUILT_WITH;

            struct Component;

            impl $crate::__private::Guest for Component {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<$crate::__private::WitPluginInfo, ::std::string::String>
                {
                    $crate::__private::init(&PLUGIN, config)
                }

                fn authenticate(
                    request: $crate::__private::WitAuthRequest,
                ) -> $crate::__private::WitDecision {
                    $crate::__private::authenticate(&PLUGIN, request)
                }
            }

            $crate::__private::bindings::__export_plugin_world!(
                Component with_types_in $crate::__private::bindings
            );
        };
    };
}

/// Implementation details of [`export_plugin!`]; not API.
#[doc(hidden)]
pub mod __private {
    pub use std::sync::OnceLock;

    /// What [`export_plugin!`] writes into the component's `nats-callout-sdk` section.
    pub const BUILT_WITH: &[u8; BUILT_WITH_TEXT.len()] = {
        let mut out = [0u8; BUILT_WITH_TEXT.len()];
        let text = BUILT_WITH_TEXT.as_bytes();
        let mut i = 0;
        while i < text.len() {
            out[i] = text[i];
            i += 1;
        }
        &{ out }
    };
    const BUILT_WITH_TEXT: &str = concat!(
        "{\"sdk\":\"",
        env!("CARGO_PKG_VERSION"),
        "\",\"contract\":\"",
        contract_version!(),
        "\"}"
    );

    #[cfg(target_arch = "wasm32")]
    pub use crate::export::{
        Guest, WitAuthRequest, WitDecision, WitPluginInfo, authenticate, bindings, init,
        wit_bindgen,
    };
}
