//! nats-callout: a NATS auth-callout service whose authentication modes are
//! WebAssembly component plugins.
//!
//! The flow of one request, module by module: [`service`] receives it from NATS,
//! [`request`] opens and verifies it, [`routing`] picks the mode, [`plugin`] runs the
//! mode's plugin chain (with [`capabilities`] as their native helpers), [`decision`]
//! bounds the grant, and [`respond`] signs the answer. [`authorizer`] ties the steps
//! together independently of NATS I/O.

pub mod app;
pub mod authorizer;
pub mod cache;
pub mod capabilities;
pub mod claims;
pub mod config;
pub mod decision;
pub mod http;
pub mod jwt;
pub mod keys;
pub mod metrics;
pub mod oauth;
pub mod plugin;
pub mod reload;
pub mod request;
pub mod respond;
pub mod routing;
pub mod service;
pub mod x509;
