//! Running the service: its configuration, the whole service wired together ([`app`]),
//! the operations listener and metrics, hot reload, keeping the revocation list current.

pub mod app;
pub mod config;
pub mod http;
pub mod metrics;
pub mod reload;
pub mod revocation;
