//! NATS I/O and the auth-callout protocol's wire formats.

pub mod audit;
pub mod claims;
pub mod jwt;
pub mod keys;
pub mod operator;
pub mod revocation_kv;
pub mod service;
pub mod sessions;
