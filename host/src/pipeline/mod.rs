//! The decision for one request, in the order it is made: [`request`] (open and verify),
//! [`credential`] (what the client presented), [`routing`] (which route's plugin
//! chain), the plugins ([`crate::runtime`]), [`decision`]
//! (host-side bounds on the grant), [`respond`] (sign and seal the answer, into
//! the account [`accounts`] names in operator mode);
//! [`authorizer`] runs the steps, [`cache`] lets repeat connects skip the plugins,
//! [`identity`] and [`revocation`] refuse revoked identities before either runs.

pub mod accounts;
pub mod authorizer;
pub mod cache;
pub mod credential;
pub mod decision;
pub mod identity;
pub mod request;
pub mod respond;
pub mod revocation;
pub mod routing;
