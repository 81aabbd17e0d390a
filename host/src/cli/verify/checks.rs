//! The verdicts: what each check concludes from the probes (how each client fared,
//! the request copy nats-server sent for it, what the loaded config decides on it and
//! what the running callout answered), and what to change when one fails.

use nats_callout::pipeline::request::RequestError;
use nkeys::XKey;

use super::perms::Perms;
use super::{
    Answer, Check, Connected, Decided, Deployment, Info, Opened, Probe, Status, USER_INFO, who_of,
};

impl Deployment<'_> {
    /// Check 2: the seal (and the rest of the request's verification).
    pub(super) fn xkey_check(&self, observing: bool, probes: &[(&str, &Probe)]) -> Check {
        const NAME: &str = "xkey";
        if !observing {
            return Check::new(
                Status::Skip,
                NAME,
                "no request copy can be seen without the callout's own connection (see bypass)",
            );
        }
        let Some((label, p, copy)) = probes
            .iter()
            .find_map(|(label, p)| p.copy.as_ref().map(|c| (*label, p, c)))
        else {
            return Check::new(
                Status::Fail,
                NAME,
                format!(
                    "nats-server sent no auth request on {} for any probe client: is \
                     authorization.auth_callout configured on the server at {}, with account \
                     the callout's user is in?",
                    self.server.subject, self.url
                ),
            );
        };
        let ours = self.xkey().map(XKey::public_key);
        match (&copy.opened, &ours) {
            (Opened::Unreadable(why), _) => {
                return Check::new(Status::Fail, NAME, format!("{why} ({label}'s request)"));
            }
            (Opened::Plain(_), Some(ours)) => {
                return Check::new(
                    Status::Fail,
                    NAME,
                    format!(
                        "nats-server sends auth requests unsealed, but the callout has an xkey \
                         and refuses plaintext: set `xkey: {ours}` in authorization.auth_callout"
                    ),
                );
            }
            _ => {}
        }
        let how = match &ours {
            Some(k) => format!("sealed to the callout's xkey {k}"),
            None => "plain JWTs (no xkey on either side)".to_owned(),
        };
        let Some(verified) = &p.verified else {
            return Check::new(
                Status::Fail,
                NAME,
                format!("{label}'s request cannot be read"),
            );
        };
        match verified {
            Ok(()) => Check::new(
                Status::Pass,
                NAME,
                format!("auth requests are {how}, and verify"),
            ),
            // The issuer check says what to fix.
            Err(RequestError::WrongIssuer(..)) => Check::new(
                Status::Pass,
                NAME,
                format!("auth requests are {how} (they name another issuer: see issuer)"),
            ),
            Err(e) => {
                let hint = match e {
                    RequestError::Expired(_) => ": is this host's clock (or nats-server's) off?",
                    _ => "",
                };
                Check::new(
                    Status::Fail,
                    NAME,
                    format!("auth requests are {how}, but {label}'s does not verify: {e}{hint}"),
                )
            }
        }
    }

    /// Check 3: anonymous clients get what the config grants them, or are refused.
    pub(super) fn anonymous_check(&self, observing: bool, p: &Probe) -> Check {
        const NAME: &str = "anonymous";
        let fail = |d: String| Check::new(Status::Fail, NAME, d);
        match (&p.connected, self.anonymous_routed) {
            (Connected::Failed(e), _) => fail(format!(
                "cannot connect an anonymous client to {}: {e}",
                self.url
            )),
            (Connected::Refused(e), false) => Check::new(
                Status::Pass,
                NAME,
                format!("an anonymous client is refused ({e}); no route takes anonymous clients"),
            ),
            (Connected::Admitted(info), false) => fail(format!(
                "nats-server admitted an anonymous client{}, but the config routes no \
                 anonymous clients: {}",
                who_of(info),
                if !observing {
                    "remove no_auth_user (or a user without credentials) from nats-server's config"
                        .to_owned()
                } else if p.copy.is_none() {
                    "nats-server did not ask the callout: remove no_auth_user (or a user without \
                     credentials) from its config"
                        .to_owned()
                } else {
                    "the callout was asked and this config refuses it: does another callout \
                     (replica) in the queue group run another config?"
                        .to_owned()
                }
            )),
            (Connected::Refused(e), true) => fail(format!(
                "the config routes anonymous clients, but nats-server refused one ({e}): {}",
                self.why_refused(p)
            )),
            (Connected::Admitted(info), true) => {
                if !observing {
                    return Check::new(
                        Status::Skip,
                        NAME,
                        "an anonymous client is admitted, but without the callout's own \
                         connection its request cannot be seen (see bypass)",
                    );
                }
                let Some(decided) = &p.decided else {
                    return fail(match &p.copy {
                        None => format!(
                            "nats-server admitted an anonymous client{} without asking the \
                             callout: remove no_auth_user (or a user without credentials) from \
                             its config",
                            who_of(info)
                        ),
                        Some(_) => "an anonymous client is admitted, but its request cannot be \
                                    opened (see xkey)"
                            .to_owned(),
                    });
                };
                let (account, expected) = match decided {
                    Decided::Admit { account, perms } => (account, perms),
                    Decided::Refuse(r) | Decided::Invalid(r) => {
                        return fail(format!(
                            "nats-server admitted an anonymous client{}, which this config \
                             refuses ({r}): does another callout (replica) in the queue group \
                             run another config?",
                            who_of(info)
                        ));
                    }
                };
                self.compare_grant(info, account, expected)
            }
        }
    }

    /// The anonymous client is admitted; does nats-server apply the grant?
    fn compare_grant(&self, info: &Info, account: &str, expected: &Perms) -> Check {
        const NAME: &str = "anonymous";
        let fail = |d: String| Check::new(Status::Fail, NAME, d);
        // What the grant says about the USER.INFO exchange itself.
        let may_ask = expected.may_publish(USER_INFO) && expected.may_subscribe("_INBOX.verify");
        match info {
            Info::Answered {
                account: got,
                perms,
                ..
            } => {
                let got_perms = perms.clone().unwrap_or_default();
                // Operator mode: nats-server names the account by its public key.
                let account = self
                    .authorizer
                    .accounts()
                    .map_or(account, |a| a.public_key(account));
                if got != account {
                    fail(format!(
                        "an anonymous client is admitted into account {got}, but the config \
                         grants account {account}: does another callout (replica) run another \
                         config?"
                    ))
                } else if perms.is_none() || &got_perms != expected {
                    fail(format!(
                        "nats-server gives an anonymous client {}, but the config grants \
                         {expected}: does another callout (replica) run another config?",
                        if perms.is_none() {
                            "no permissions (everything in the account)".to_owned()
                        } else {
                            got_perms.to_string()
                        }
                    ))
                } else {
                    Check::new(
                        Status::Pass,
                        NAME,
                        format!(
                            "an anonymous client is admitted into account {account} with exactly \
                             the grant of the config: {expected}"
                        ),
                    )
                }
            }
            Info::Violation(v) if may_ask => fail(format!(
                "nats-server refused an anonymous client's {USER_INFO} ({v}), which the \
                 config's grant allows ({expected}): does another callout (replica) run \
                 another config?"
            )),
            Info::Violation(_) => Check::new(
                Status::Pass,
                NAME,
                format!(
                    "an anonymous client is admitted (the config grants account {account}, \
                     {expected}); the grant does not allow {USER_INFO} and nats-server refused \
                     it too, so the permissions were not listed (allow publishing {USER_INFO} \
                     and subscribing to _INBOX.> to compare them)"
                ),
            ),
            Info::NoAnswer(why) => Check::new(
                Status::Pass,
                NAME,
                format!(
                    "an anonymous client is admitted (the config grants account {account}, \
                     {expected}); nats-server did not answer {USER_INFO} ({why}), so the \
                     permissions were not compared"
                ),
            ),
        }
    }

    /// Why a client the config routes was refused, as far as its request copy tells.
    fn why_refused(&self, p: &Probe) -> String {
        let ours = &self.issuer;
        match &p.answer {
            Answer::Missing => {
                return format!(
                    "no callout answered nats-server's request: is nats-callout running, \
                     connected to this server and subscribed to {} (its /readyz)?",
                    self.server.subject
                );
            }
            Answer::Empty => {
                return "the callout answered with nothing, as it does to a request it cannot \
                        read (see xkey)"
                    .into();
            }
            Answer::Signed { issuer, .. } if issuer != ours => {
                return format!(
                    "the answer is signed by {issuer}, not by this config's issuer {ours}: \
                     another callout with other keys is in queue group {}",
                    self.server.queue_group
                );
            }
            Answer::Signed {
                outcome: Err(e), ..
            } => {
                let config = match &p.decided {
                    Some(Decided::Admit { .. }) => {
                        " (this config admits it: does another callout in the queue group run \
                         another config?)"
                    }
                    _ => "",
                };
                return format!("the callout answered: {e}{config}");
            }
            Answer::Signed {
                outcome: Ok(account),
                ..
            } => {
                return format!(
                    "the callout admitted it into account {account}, and nats-server rejected \
                     the answer: compare auth_callout.issuer with the callout's issuer {ours}, \
                     and check that account {account} exists in nats-server's config"
                );
            }
            Answer::Unseen | Answer::Unreadable => {}
        }
        match (&p.copy, &p.decided) {
            (None, _) => "nats-server did not ask the callout; is auth_callout configured?".into(),
            (Some(c), None) => match &c.opened {
                Opened::Unreadable(why) => format!("{why} (see xkey)"),
                _ => "its request could not be read".into(),
            },
            (Some(_), Some(Decided::Refuse(r))) => format!("the config refuses it: {r}"),
            (Some(_), Some(Decided::Invalid(r))) => {
                format!("the callout cannot accept its auth request: {r} (see xkey and issuer)")
            }
            (Some(_), Some(Decided::Admit { account, .. })) => format!(
                "the callout admits it into account {account}, and nats-server rejected the \
                 answer: compare auth_callout.issuer with the callout's issuer {}, and check \
                 that account {account} exists in nats-server's config",
                self.issuer
            ),
        }
    }

    /// Check 4: a forged token gets nobody in.
    pub(super) fn forged_check(
        &self,
        observing: bool,
        as_token: &Probe,
        as_password: &Probe,
    ) -> Check {
        const NAME: &str = "bogus-token";
        let mut refused = Vec::new();
        for (how, p) in [
            ("as auth_token", as_token),
            ("as user oauthtoken's password", as_password),
        ] {
            match &p.connected {
                Connected::Refused(_) => refused.push(match &p.decided {
                    Some(Decided::Refuse(r)) => format!("{how}: {r}"),
                    _ => how.to_owned(),
                }),
                Connected::Failed(e) => {
                    return Check::new(
                        Status::Fail,
                        NAME,
                        format!(
                            "cannot connect with a forged token {how} to {}: {e}",
                            self.url
                        ),
                    );
                }
                Connected::Admitted(info) => {
                    let why = match (&p.copy, &p.decided) {
                        _ if !observing => {
                            "the callout's view could not be seen (see bypass)".to_owned()
                        }
                        (None, _) => "nats-server did not ask the callout: its own authorization \
                                      admits the token (a `token`, or a user oauthtoken?)"
                            .to_owned(),
                        (_, Some(Decided::Admit { account, .. })) => format!(
                            "this config admits it into {account}: a plugin accepts unsigned \
                             tokens; fix its route or plugin before anything else"
                        ),
                        _ => "this config refuses it: does another callout (replica) in the \
                              queue group run another config?"
                            .to_owned(),
                    };
                    return Check::new(
                        Status::Fail,
                        NAME,
                        format!("a forged token {how} was admitted{}: {why}", who_of(info)),
                    );
                }
            }
        }
        Check::new(
            Status::Pass,
            NAME,
            format!("a forged token is refused ({})", refused.join("; ")),
        )
    }

    /// Check 5: nats-server accepts what the callout signs.
    pub(super) fn issuer_check(&self, probes: &[(&str, &Probe)], xkey_failed: bool) -> Check {
        const NAME: &str = "issuer";
        let ours = &self.issuer;
        // nats-server names its auth_callout.issuer (operator mode: the callout account)
        // in every request (`sub`).
        let expected = &self.request_subject;
        if let Some(named) = probes
            .iter()
            .filter_map(|(_, p)| p.copy.as_ref()?.claims.as_ref())
            .map(|c| c.sub.as_str())
            .find(|sub| sub != expected)
        {
            let detail = if self.operator_mode() {
                format!(
                    "nats-server's requests come from account {named}, but \
                     operator.callout_account_jwt_file is account {expected}'s JWT"
                )
            } else {
                format!(
                    "nats-server's auth_callout.issuer is {named}, but the callout signs as \
                     {ours}: set `issuer: {ours}` in authorization.auth_callout"
                )
            };
            return Check::new(Status::Fail, NAME, detail);
        }
        let admitted_by_callout = probes.iter().find(|(_, p)| {
            matches!(p.connected, Connected::Admitted(_))
                && matches!(p.decided, Some(Decided::Admit { .. }))
        });
        if let Some((label, _)) = admitted_by_callout {
            return Check::new(
                Status::Pass,
                NAME,
                format!(
                    "nats-server admitted {label} on the callout's answer: it accepts issuer \
                     {ours}"
                ),
            );
        }
        let refused_though_admitted = probes.iter().find(|(_, p)| {
            matches!(p.connected, Connected::Refused(_))
                && matches!(p.decided, Some(Decided::Admit { .. }))
        });
        if let Some((label, p)) = refused_though_admitted {
            // Refused for a reason other than the signature: nothing proven either way.
            let unproven = match &p.answer {
                Answer::Missing => Some("no callout answered (see anonymous)".to_owned()),
                Answer::Signed {
                    issuer,
                    outcome: Err(e),
                } if issuer == ours => Some(format!("the callout that answered refused it ({e})")),
                _ => None,
            };
            return match unproven {
                Some(why) => Check::new(
                    Status::Skip,
                    NAME,
                    format!("nats-server refused {label}, which this config admits: {why}"),
                ),
                None => Check::new(
                    Status::Fail,
                    NAME,
                    format!("nats-server refused {label}: {}", self.why_refused(p)),
                ),
            };
        }
        // An operator's credential the callout itself refuses proves nothing either.
        if let Some((label, Some(Decided::Refuse(r)))) = probes
            .iter()
            .find(|(label, _)| label.starts_with("the --"))
            .map(|(label, p)| (label, &p.decided))
        {
            return Check::new(
                Status::Skip,
                NAME,
                format!(
                    "no client the callout admits got to prove issuer {ours}: the config \
                     refuses {label} ({r}); pass a credential it admits"
                ),
            );
        }
        let hint = if xkey_failed {
            "the callout cannot accept nats-server's requests (see xkey); fix that first"
        } else {
            "route anonymous clients (permissions.noauth), or pass --token-env VAR or \
             --user NAME --password-env VAR with a credential the callout admits"
        };
        Check::new(
            Status::Skip,
            NAME,
            format!("no client the callout admits got to prove issuer {ours}: {hint}"),
        )
    }
}
