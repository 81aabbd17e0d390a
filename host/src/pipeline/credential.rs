//! What the client presented, as one credential: the first step of routing.
//!
//! The rule that matters most: a credential that was presented is never `none`. Only a
//! client that presented nothing at all is anonymous, so a failed credential can never
//! fall through to the anonymous route.

use nats_callout_sdk::{Credential, CredentialKind, Secret};

use crate::nats::claims::{AuthorizationRequest, ConnectOptions};

/// Username that marks a bearer token in the password (NATS and MQTT), as the seed's
/// OAuth2 clients send their access tokens.
pub const TOKEN_USERNAME: &str = "oauthtoken";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("incomplete credential: a signature without an nkey")]
    SignatureOnly,
}

/// Whether nats-server handed over a verified client certificate chain.
pub fn has_verified_chain(req: &AuthorizationRequest) -> bool {
    req.client_tls
        .as_ref()
        .is_some_and(|t| t.verified_chains.first().is_some_and(|ch| !ch.is_empty()))
}

/// The kind of credential `req` presents. When a client sent several, the first of
/// bearer token, certificate, nkey, user JWT, username/password counts: the order in
/// which the four modes of contract 0.1.0 were chosen, so a deployment routes as before.
pub fn kind(req: &AuthorizationRequest) -> Result<CredentialKind, CredentialError> {
    let c = &req.connect_opts;
    Ok(
        if c.user == TOKEN_USERNAME || (!c.auth_token.is_empty() && c.user.is_empty()) {
            CredentialKind::BearerToken
        } else if has_verified_chain(req) {
            CredentialKind::Certificate
        } else if !c.nkey.is_empty() {
            CredentialKind::Nkey
        } else if !c.jwt.is_empty() && !is_bearer(&c.jwt) {
            CredentialKind::UserJwt
        } else if !c.user.is_empty() || !c.pass.is_empty() {
            CredentialKind::UserPassword
        } else if !c.sig.is_empty() && c.jwt.is_empty() {
            return Err(CredentialError::SignatureOnly);
        } else {
            CredentialKind::None
        },
    )
}

/// Whether a user JWT is a bearer token. In operator mode every client presents a user
/// JWT of the callout account, if only the `default_sentinel` nats-server fills in: a
/// bearer one is that ticket to the callout, not who the client is, so what else the
/// client sent decides (nothing else: `none`). Read unverified: it only picks the
/// route, and the `jwt` plugin verifies what it admits.
fn is_bearer(jwt: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Claims {
        #[serde(default)]
        nats: Flags,
    }
    #[derive(serde::Deserialize, Default)]
    struct Flags {
        #[serde(default)]
        bearer_token: bool,
    }
    crate::nats::jwt::decode_unverified::<Claims>(jwt).is_some_and(|c| c.nats.bearer_token)
}

/// The credential of [`kind`] `kind`, moved out of the CONNECT options (the fields it
/// takes are left empty: no copy of a secret stays behind).
pub fn take(connect: &mut ConnectOptions, kind: CredentialKind) -> Credential {
    let take = std::mem::take::<String>;
    match kind {
        CredentialKind::BearerToken if connect.user == TOKEN_USERNAME => {
            Credential::BearerToken(Secret::new(take(&mut connect.pass)))
        }
        CredentialKind::BearerToken => {
            Credential::BearerToken(Secret::new(take(&mut connect.auth_token)))
        }
        CredentialKind::Certificate => Credential::Certificate,
        CredentialKind::Nkey => Credential::Nkey(take(&mut connect.nkey)),
        CredentialKind::UserJwt => Credential::UserJwt(Secret::new(take(&mut connect.jwt))),
        CredentialKind::UserPassword => Credential::UserPassword {
            username: take(&mut connect.user),
            password: Secret::new(take(&mut connect.pass)),
        },
        _ => Credential::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::claims::ClientTls;

    fn req(c: ConnectOptions) -> AuthorizationRequest {
        AuthorizationRequest {
            connect_opts: c,
            ..Default::default()
        }
    }

    fn classify(mut r: AuthorizationRequest) -> Result<Credential, CredentialError> {
        let k = kind(&r)?;
        let credential = take(&mut r.connect_opts, k);
        assert_eq!(credential.kind(), k);
        Ok(credential)
    }

    #[test]
    fn classifies_in_the_order_of_the_four_modes() {
        let k = |c| kind(&req(c));
        assert_eq!(k(ConnectOptions::default()), Ok(CredentialKind::None));
        let r = req(ConnectOptions {
            user: "oauthtoken".into(),
            pass: "t".into(),
            auth_token: "t".into(),
            ..Default::default()
        });
        assert_eq!(
            classify(r),
            Ok(Credential::BearerToken(Secret::new("t"))),
            "MQTT: the token as password and as auth_token"
        );
        assert_eq!(
            k(ConnectOptions {
                auth_token: "t".into(),
                ..Default::default()
            }),
            Ok(CredentialKind::BearerToken)
        );
        assert_eq!(
            k(ConnectOptions {
                nkey: "U".into(),
                sig: "s".into(),
                ..Default::default()
            }),
            Ok(CredentialKind::Nkey)
        );
        assert_eq!(
            k(ConnectOptions {
                jwt: "eyJ".into(),
                sig: "s".into(),
                ..Default::default()
            }),
            Ok(CredentialKind::UserJwt)
        );
        // MQTT username/password: the password also arrives as auth_token.
        let mut r = req(ConnectOptions {
            user: "bob".into(),
            pass: "x".into(),
            auth_token: "x".into(),
            ..Default::default()
        });
        assert_eq!(
            take(&mut r.connect_opts, CredentialKind::UserPassword),
            Credential::UserPassword {
                username: "bob".into(),
                password: Secret::new("x")
            }
        );
        assert!(r.connect_opts.pass.is_empty(), "moved, not copied");
        // A lone signature is a presented (broken) credential, never anonymous.
        assert_eq!(
            k(ConnectOptions {
                sig: "x".into(),
                ..Default::default()
            }),
            Err(CredentialError::SignatureOnly)
        );
    }

    /// Operator mode: a bearer user JWT (the sentinel every client of the callout
    /// account carries) is not who the client is; what else it sent is.
    #[test]
    fn a_bearer_user_jwt_is_the_sentinel_not_a_credential() {
        let jwt = |bearer: bool| {
            use base64::Engine as _;
            let claims = serde_json::json!({ "nats": { "bearer_token": bearer, "type": "user" } });
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            format!(
                "{}.{}.sig",
                b64.encode("{}"),
                b64.encode(claims.to_string())
            )
        };
        let k = |c| kind(&req(c));
        let sentinel = || ConnectOptions {
            jwt: jwt(true),
            sig: "signed-nonce".into(),
            ..Default::default()
        };
        assert_eq!(k(sentinel()), Ok(CredentialKind::None));
        assert_eq!(
            k(ConnectOptions {
                user: "bob".into(),
                pass: "x".into(),
                ..sentinel()
            }),
            Ok(CredentialKind::UserPassword)
        );
        assert_eq!(
            k(ConnectOptions {
                jwt: jwt(false),
                ..sentinel()
            }),
            Ok(CredentialKind::UserJwt)
        );
    }

    #[test]
    fn only_a_verified_chain_is_a_certificate() {
        let mut tls = req(ConnectOptions::default());
        tls.client_tls = Some(ClientTls {
            certs: vec!["unverified".into()],
            ..Default::default()
        });
        assert_eq!(
            kind(&tls),
            Ok(CredentialKind::None),
            "unverified certs never count"
        );
        let mut tls = req(ConnectOptions {
            user: "device-7".into(),
            ..Default::default()
        });
        tls.client_tls = Some(ClientTls {
            verified_chains: vec![vec!["pem".into()]],
            ..Default::default()
        });
        assert_eq!(
            classify(tls),
            Ok(Credential::Certificate),
            "a certificate wins over a username"
        );
    }
}
