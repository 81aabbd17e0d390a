//! What the host verifies credentials against, natively: the OpenID provider's keys
//! ([`oauth`]) and the operator's client-certificate CAs ([`x509`]).

pub mod oauth;
pub mod x509;
