//! Benchmarks of nats-callout (issue #5): the in-process decision pipeline with WASM
//! and native plugins, end-to-end connects through a real nats-server with a raw NATS
//! client (static users, a null callout, nats-callout per mode), a reconnect storm, the
//! decision cache, plugins that reach out (introspection, a device registry), and a
//! three-node cluster with its callout replicas under faults.
//! `src/main.rs` runs them and writes BENCHMARKS.md; see the README's "Benchmarks"
//! section.

pub mod children;
pub mod cluster;
pub mod connect;
pub mod crypto;
pub mod fixture;
pub mod languages;
pub mod outbound;
pub mod pipeline;
pub mod procs;
pub mod rawclient;
pub mod report;
pub mod soak;
pub mod stats;
pub mod watch;
