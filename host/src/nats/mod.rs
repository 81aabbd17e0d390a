//! NATS I/O and the auth-callout protocol's wire formats.

pub mod claims;
pub mod jwt;
pub mod keys;
pub mod service;
