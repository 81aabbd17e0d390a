//! What the host verifies credentials against, natively: the OpenID provider's keys
//! ([`oauth`]), the operator's client-certificate CAs ([`x509`]) and, in operator mode,
//! the callout account's keys for its users' own JWTs ([`user_jwt`]).

pub mod oauth;
pub mod user_jwt;
pub mod x509;
