//! OAuth2 / OIDC access tokens: the JWKS cache and the strict validation rules behind
//! the `verify-jwt` capability.

pub mod jwks;
pub mod token;

pub use jwks::{Jwks, JwksError};
pub use token::{Rules, TokenError};
