//! Which authentication mode a request belongs to, from what the client presented.
//!
//! The rule that matters most: a credential that was presented never routes to
//! `noauth`. Only a client that presented nothing at all is anonymous.

use serde::Deserialize;

use crate::nats::claims::AuthorizationRequest;

/// Username that marks an OAuth2 access token in the password (and MQTT password).
pub const OAUTH_USERNAME: &str = "oauthtoken";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Oauth2,
    Mtls,
    Nkey,
    Noauth,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Oauth2, Mode::Mtls, Mode::Nkey, Mode::Noauth];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Oauth2 => "oauth2",
            Mode::Mtls => "mtls",
            Mode::Nkey => "nkey",
            Mode::Noauth => "noauth",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error(
        "unsupported credential: NATS user JWTs are not accepted (operator mode is not enabled)"
    )]
    UserJwt,
    #[error(
        "unsupported credential: username/password (use username \"oauthtoken\" with an access token as password)"
    )]
    Password,
    #[error("incomplete credential: a signature without an nkey")]
    SignatureOnly,
}

/// Pick the mode. Order follows DESIGN.md: oauth2, mtls, nkey, noauth.
pub fn route(req: &AuthorizationRequest) -> Result<Mode, RouteError> {
    let c = &req.connect_opts;
    if c.user == OAUTH_USERNAME || (!c.auth_token.is_empty() && c.user.is_empty()) {
        return Ok(Mode::Oauth2);
    }
    if req
        .client_tls
        .as_ref()
        .is_some_and(|t| t.verified_chains.first().is_some_and(|ch| !ch.is_empty()))
    {
        return Ok(Mode::Mtls);
    }
    if !c.nkey.is_empty() {
        return Ok(Mode::Nkey);
    }
    if !c.jwt.is_empty() {
        return Err(RouteError::UserJwt);
    }
    if !c.user.is_empty() || !c.pass.is_empty() {
        return Err(RouteError::Password);
    }
    if !c.sig.is_empty() {
        return Err(RouteError::SignatureOnly);
    }
    Ok(Mode::Noauth)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::claims::{ClientTls, ConnectOptions};

    fn req(c: ConnectOptions) -> AuthorizationRequest {
        AuthorizationRequest {
            connect_opts: c,
            ..Default::default()
        }
    }

    #[test]
    fn routes() {
        let r = |c| route(&req(c));
        assert_eq!(r(ConnectOptions::default()), Ok(Mode::Noauth));
        assert_eq!(
            r(ConnectOptions {
                user: "oauthtoken".into(),
                pass: "t".into(),
                ..Default::default()
            }),
            Ok(Mode::Oauth2)
        );
        assert_eq!(
            r(ConnectOptions {
                auth_token: "t".into(),
                ..Default::default()
            }),
            Ok(Mode::Oauth2)
        );
        assert_eq!(
            r(ConnectOptions {
                nkey: "U".into(),
                ..Default::default()
            }),
            Ok(Mode::Nkey)
        );
        assert_eq!(
            r(ConnectOptions {
                user: "bob".into(),
                pass: "x".into(),
                ..Default::default()
            }),
            Err(RouteError::Password)
        );
        // A lone signature is a presented (broken) credential, never anonymous.
        assert_eq!(
            r(ConnectOptions {
                sig: "x".into(),
                ..Default::default()
            }),
            Err(RouteError::SignatureOnly)
        );
        let mut tls = req(ConnectOptions::default());
        tls.client_tls = Some(ClientTls {
            certs: vec!["unverified".into()],
            ..Default::default()
        });
        assert_eq!(
            route(&tls),
            Ok(Mode::Noauth),
            "unverified certs never count"
        );
        tls.client_tls = Some(ClientTls {
            verified_chains: vec![vec!["pem".into()]],
            ..Default::default()
        });
        assert_eq!(route(&tls), Ok(Mode::Mtls));
    }
}
