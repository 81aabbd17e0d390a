//! `verify-jwt`: an access token against the plugin's JWKS with the host's strict rules
//! (`identity::oauth`). The one capability that may wait (a JWKS refetch for an unknown
//! `kid`), so the one whose time is credited to the call's deadline.

use std::time::Instant;

use super::{Capabilities, VerifiedJwt};
use crate::runtime::State;

impl Capabilities {
    /// An access token, verified against the configured JWKS with strict rules; the
    /// claims handed back are those named in `wanted`, or all.
    pub async fn verify_jwt(
        &self,
        token: &str,
        wanted: Option<&[String]>,
    ) -> Result<VerifiedJwt, String> {
        if let Some(names) = wanted {
            nats_callout_sdk::Claims::check_asked(names)?;
        }
        match &self.jwks {
            Some(jwks) => jwks
                .verify(token, crate::pipeline::request::unix_now(), wanted)
                .await
                .map_err(|e| e.to_string()),
            None => Err(format!(
                "no JWKS is configured for plugin {:?} (add a jwks section)",
                self.plugin
            )),
        }
    }
}

impl State {
    /// The capability as a call sees it: a refetch's wait is I/O, not the plugin's CPU
    /// time, so it moves the deadline (boundedly); a verified token bounds the grant.
    pub(crate) async fn verify_jwt(
        &mut self,
        token: &str,
        wanted: Option<&[String]>,
    ) -> Result<VerifiedJwt, String> {
        let started = Instant::now();
        let result = self.caps.verify_jwt(token, wanted).await;
        self.credit_host_time(started.elapsed());
        if let Ok(v) = &result {
            self.note_credential_expiry(v.expires_at);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_asks_for_a_bounded_number_of_claims() {
        let caps = Capabilities::new("p");
        let names = vec!["sub".to_owned(); nats_callout_sdk::Claims::MAX_ASKED + 1];
        let verify = |names: &[String]| {
            futures::executor::block_on(caps.verify_jwt("t", Some(names))).unwrap_err()
        };
        assert_eq!(verify(&names), "asks for 257 claims; at most 256");
        // Within the bound the token is verified (here: no key set to verify it with).
        assert!(verify(&names[1..]).contains("no JWKS is configured"));
    }
}
