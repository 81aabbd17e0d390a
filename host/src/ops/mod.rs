//! Running the service: its configuration, the whole service wired together ([`app`]),
//! the operations listener and metrics, hot reload.

pub mod app;
pub mod config;
pub mod http;
pub mod metrics;
pub mod reload;
