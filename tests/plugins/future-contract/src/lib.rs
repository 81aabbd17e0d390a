//! A component of a contract version the host does not know yet (`0.9.0`), as a plugin
//! built with a future SDK would be: the host must refuse it at load and say why.

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    inline: "
        package nats-callout:plugin@0.9.0;
        interface authenticator {
            init: func(config: string) -> result<_, string>;
        }
        world plugin {
            export authenticator;
        }
    ",
});

struct Future;

impl exports::nats_callout::plugin::authenticator::Guest for Future {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
}

export!(Future);
