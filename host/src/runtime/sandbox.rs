//! What the plugin sandbox offers, and a component's imports read against it at load:
//! an import the host does not provide at all fails the load with a reason per import
//! (not the linker's "no matching implementation"), and one that is linked but always
//! refused (a socket, a file) is named at load, so that `check` says what a connect would
//! otherwise only find out as "permission denied".

use wasmtime::Engine;
use wasmtime::component::Component;

/// What a plugin can use, for messages.
pub const OFFERS: &str = "the plugin sandbox offers the host capabilities \
    (nats-callout:plugin/host: log, verify-jwt, verify-nkey-signature, \
    verify-certificate-chain, verify-password-hash, cache-get, cache-set), clocks, random \
    numbers and outbound HTTP (wasi:http/outgoing-handler) to the hosts the operator lists \
    in the plugin's allowed_outbound_hosts; it has no other network, no files and no \
    environment variables, discards stdout, and keeps of stderr only the end of what a \
    trapping call wrote, for its deny reason";

/// How the sandbox treats one import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Treatment {
    Offered,
    /// Linked, but every use fails: why.
    Refused(&'static str),
    /// Not provided: the component cannot be instantiated. Why.
    Missing(&'static str),
}

fn treatment(import: &str, outbound: bool) -> Treatment {
    let interface = import.split('@').next().unwrap_or(import);
    let package = interface.split('/').next().unwrap_or(interface);
    match package {
        "nats-callout:plugin" | "wasi:io" | "wasi:clocks" | "wasi:random" | "wasi:cli" => {
            Treatment::Offered
        }
        "wasi:sockets" => Treatment::Refused("network sockets: the sandbox has no network"),
        "wasi:filesystem" => Treatment::Refused(
            "files: the sandbox has no directories (give a plugin its data as settings)",
        ),
        "wasi:http" if outbound => Treatment::Offered,
        "wasi:http" => Treatment::Refused(
            "outbound HTTP: the plugin has no allowed_outbound_hosts, so every request is denied",
        ),
        _ => Treatment::Missing("not an interface this host provides"),
    }
}

/// The largest initial size of a linear memory the component defines, in bytes: what one
/// instance needs before its first call. An interpreter's component (Python's, with its
/// heap snapshot) starts at 10 MiB and more; a Rust plugin at about 1. Read from the
/// bytes, before the slow compile, so that a limit too small says so at once.
pub fn initial_memory(component: &[u8]) -> u64 {
    wasmparser::Parser::new(0)
        .parse_all(component)
        .filter_map(Result::ok)
        .filter_map(|payload| match payload {
            wasmparser::Payload::MemorySection(memories) => Some(memories),
            _ => None,
        })
        .flat_map(|memories| memories.into_iter().filter_map(Result::ok))
        .map(|m| {
            m.initial
                .saturating_mul(1 << m.page_size_log2.unwrap_or(16))
        })
        .max()
        .unwrap_or(0)
}

/// A component's imports that the sandbox refuses or lacks.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Review {
    /// Linked, but every use fails: `import: why`.
    pub refused: Vec<String>,
    /// Not provided, so the component cannot load: `import: why`.
    pub missing: Vec<String>,
}

/// `outbound`: the operator listed hosts the plugin may send HTTP requests to.
pub fn review(engine: &Engine, component: &Component, outbound: bool) -> Review {
    let mut review = Review::default();
    for (name, _) in component.component_type().imports(engine) {
        match treatment(name, outbound) {
            Treatment::Offered => {}
            Treatment::Refused(why) => review.refused.push(format!("{name} ({why})")),
            Treatment::Missing(why) => review.missing.push(format!("{name} ({why})")),
        }
    }
    review
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_memory_is_the_memory_minimum() {
        // A core module whose one memory starts at 17 pages of 64 KiB: the header, then
        // the memory section (id 5, 3 bytes: one memory, no maximum, 17 pages).
        let module = [0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 5, 3, 1, 0x00, 17];
        assert_eq!(initial_memory(&module), 17 << 16);
        assert_eq!(initial_memory(b"not wasm"), 0);
    }

    #[test]
    fn imports_by_package() {
        for ok in [
            "nats-callout:plugin/host@0.2.0",
            "wasi:io/streams@0.2.6",
            "wasi:clocks/wall-clock@0.2.0",
            "wasi:cli/environment@0.2.6",
            "wasi:random/random@0.2.6",
        ] {
            assert_eq!(treatment(ok, false), Treatment::Offered, "{ok}");
        }
        assert!(matches!(
            treatment("wasi:sockets/tcp@0.2.6", true),
            Treatment::Refused(_)
        ));
        assert!(matches!(
            treatment("wasi:filesystem/preopens@0.2.6", true),
            Treatment::Refused(_)
        ));
        assert!(matches!(
            treatment("wasi:http/outgoing-handler@0.2.12", false),
            Treatment::Refused(_)
        ));
        assert_eq!(
            treatment("wasi:http/outgoing-handler@0.2.12", true),
            Treatment::Offered
        );
        assert!(matches!(
            treatment("acme:vault/secrets", true),
            Treatment::Missing(_)
        ));
    }
}
