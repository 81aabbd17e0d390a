//! A plugin of contract 0.2.0 that also imports an interface of another host (a secrets
//! vault): the host must refuse it at load, naming the import.

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    inline: "
        package test:foreign;
        interface vault {
            secret: func(name: string) -> string;
        }
        world foreign {
            import vault;
            include nats-callout:plugin/plugin@0.2.0;
        }
    ",
    path: ["../../../guest-sdk/wit/v0.2.0"],
    world: "test:foreign/foreign",
    generate_all,
});

use exports::nats_callout::plugin::authenticator::{AuthRequest, Decision, Guest, PluginInfo};

struct Foreign;

impl Guest for Foreign {
    fn init(_config: String) -> Result<PluginInfo, String> {
        Ok(PluginInfo {
            credentials: Vec::new(),
        })
    }

    fn authenticate(_request: AuthRequest) -> Decision {
        Decision::Deny(test::foreign::vault::secret("key"))
    }
}

export!(Foreign);
