//! OAuth2 / OIDC access tokens: the JWKS cache and the strict validation rules behind
//! the `verify-jwt` capability, configured by the `jwks` section.

mod config;
pub mod jwks;
pub mod token;

pub use config::JwksConfig;
pub use jwks::{Jwks, JwksError};
pub use token::{Rules, TokenError};
