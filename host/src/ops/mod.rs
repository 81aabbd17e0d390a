//! Running the service: its configuration, the whole service wired together ([`app`]),
//! the operations listener and metrics, hot reload, keeping the revocation list current,
//! the allocator's settings.

pub mod app;
pub mod config;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod reload;
pub mod revocation;
