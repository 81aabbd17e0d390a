//! The `nats-callout` command's subcommands beside `run` and `check`.

pub mod keys;
pub mod operator;
pub mod password;
pub mod plugin_new;
pub mod verify;
pub mod wit;
