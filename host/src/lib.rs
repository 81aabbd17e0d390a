//! nats-callout: a NATS auth-callout service whose authentication modes are
//! WebAssembly component plugins.
//!
//! The folders follow one request through the service:
//!
//! - [`nats`]: NATS I/O and the callout protocol's wire formats: connections and the
//!   queue subscription ([`nats::service`]), the exchange's JWT claims, NKeys.
//! - [`pipeline`]: the decision for one request, independent of NATS I/O: verify the
//!   request, route it, ask the route's plugin chain, bound the grant, sign the answer
//!   ([`pipeline::authorizer`] ties the steps together).
//! - [`runtime`]: the WebAssembly plugin runtime: pooled instances with limits, one
//!   module per contract version, one module per host capability.
//! - [`identity`]: what the capabilities verify against: the OpenID provider's keys,
//!   client-certificate CAs.
//! - [`ops`]: running it: configuration, metrics and probes, hot reload.

pub mod identity;
pub mod nats;
pub mod ops;
pub mod pipeline;
pub mod runtime;
