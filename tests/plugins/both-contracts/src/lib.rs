//! A component exporting contract 0.1.0's functions and 0.2.0's `authenticator` at once.
//! Built with wit-bindgen directly, as no SDK would build it; the host must refuse to
//! load it rather than pick one.

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    inline: "
        package test:both;
        world both {
            include nats-callout:plugin/plugin@0.1.0;
            include nats-callout:plugin/plugin@0.2.0;
        }
    ",
    path: ["../../../guest-sdk/wit/v0.1.0", "../../../guest-sdk/wit/v0.2.0"],
    world: "test:both/both",
    generate_all,
});

use exports::nats_callout::plugin0_2_0::authenticator as v2;
use nats_callout::plugin0_1_0::types as v1;

struct Both;

impl Guest for Both {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn authenticate(_request: v1::AuthRequest) -> v1::Decision {
        v1::Decision::Deny("0.1.0".into())
    }
}

impl v2::Guest for Both {
    fn init(_config: String) -> Result<v2::PluginInfo, String> {
        Ok(v2::PluginInfo {
            credentials: Vec::new(),
        })
    }

    fn authenticate(_request: v2::AuthRequest) -> v2::Decision {
        v2::Decision::Deny("0.2.0".into())
    }
}

export!(Both);
