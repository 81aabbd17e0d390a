//! The `mtls` mode: admits a client whose TLS client certificate, as nats-server verified
//! it, belongs to one of the operator's `permissions.mtls` entries, with that entry's
//! permissions, for no longer than the certificate is valid.
//!
//! Only the verified chain counts: the host passes plugins `verified_chains[0]` and never
//! the unverified `certs`. On top of nats-server's verification, the host has checked
//! the chain against the operator's CA bundle, when one is configured, before any mtls
//! plugin runs (defence in depth against a server whose `ca_file` trusts more CAs than
//! device identities should come from), and this plugin checks the leaf's validity
//! window itself.
//!
//! Matching rule (see README): an `identity` of the form `CN=<name>` alone matches a
//! certificate whose only CN is `<name>`, whatever else its subject holds; any other
//! `identity` is a full subject DN and must equal the certificate's subject, RDN by RDN.
//! `san` conditions (URI, DNS, email, IP) must all be present among the certificate's
//! SANs. A certificate with more than one CN is always denied, and one that matches two
//! entries is denied as ambiguous, so a certificate maps to exactly one entry or to none.

pub mod dn;

use std::collections::BTreeMap;
use std::net::IpAddr;

use nats_callout_sdk::{
    AuthRequest, Certificate, CompiledEntry, ConfigError, Credential, CredentialKind, Decision,
    Host, InitError, PermissionEntry, Placeholders, Plugin, PluginConfig, RequestParts,
};
use serde::Deserialize;

use crate::dn::Dn;

/// The identifier fields of an mtls entry, flattened into [`PermissionEntry`]. At least
/// one of them is required.
#[derive(Debug, Deserialize)]
pub struct MtlsIdentity {
    /// `CN=<name>` (matches on the CN) or a full RFC 4514 subject DN (matches exactly).
    #[serde(default)]
    pub identity: Option<String>,
    /// Subject alternative names the certificate must carry, all of them.
    #[serde(default)]
    pub san: Option<SanIdentity>,
}

/// `san: { uri, dns, email, ip }`: each one given must be among the certificate's SANs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SanIdentity {
    /// A URI SAN, exactly, e.g. a SPIFFE ID `spiffe://example.org/bms/cpc-1`.
    #[serde(default)]
    pub uri: Option<String>,
    /// A DNS SAN, compared case-insensitively; no wildcards.
    #[serde(default)]
    pub dns: Option<String>,
    /// An email (rfc822Name) SAN, exactly.
    #[serde(default)]
    pub email: Option<String>,
    /// An IP address SAN (`10.0.0.7`, `fd00::7`).
    #[serde(default)]
    pub ip: Option<String>,
}

/// `permissions.mtls`: entry name to entry.
pub type MtlsEntries = BTreeMap<String, PermissionEntry<MtlsIdentity>>;

/// Placeholders mtls subjects may use: the entry name, the certificate's CN, and its URI
/// SAN (the one the entry names, else the only one the certificate has). No DNS SAN: a
/// DNS name has dots, which a filled value may never carry.
pub const PLACEHOLDERS: [&str; 3] = ["name", "cert.cn", "cert.san.uri"];

/// How an entry matches the subject.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SubjectRule {
    /// `CN=<name>` alone: the certificate's single CN.
    Cn(String),
    /// Anything else: the whole subject DN.
    Dn(Dn),
}

impl SubjectRule {
    /// The CN a matching certificate must have, when the rule fixes one.
    fn common_name(&self) -> Option<&str> {
        match self {
            SubjectRule::Cn(cn) => Some(cn),
            SubjectRule::Dn(dn) => match dn.common_names().as_slice() {
                [cn] => Some(cn),
                _ => None,
            },
        }
    }
}

/// The `san` conditions, normalised: DNS names lower-case, IPs parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SanRule {
    uri: Option<String>,
    dns: Option<String>,
    email: Option<String>,
    ip: Option<IpAddr>,
}

impl SanRule {
    fn is_empty(&self) -> bool {
        *self == SanRule::default()
    }

    fn matches(&self, leaf: &Certificate) -> bool {
        self.uri
            .as_ref()
            .is_none_or(|u| leaf.uri_sans.iter().any(|s| s == u))
            && self
                .dns
                .as_ref()
                .is_none_or(|d| leaf.dns_sans.iter().any(|s| s.eq_ignore_ascii_case(d)))
            && self
                .email
                .as_ref()
                .is_none_or(|e| leaf.email_sans.iter().any(|s| s == e))
            && self.ip.is_none_or(|ip| {
                leaf.ip_sans
                    .iter()
                    .any(|s| s.parse::<IpAddr>().is_ok_and(|p| p == ip))
            })
    }
}

#[derive(Debug)]
struct Entry {
    name: String,
    subject: Option<SubjectRule>,
    san: SanRule,
    policy: CompiledEntry,
}

/// The plugin: configured entries, indexed by the CN they require. `BTreeMap`s, not
/// `HashMap`s: std's hasher seeding would make the component import `wasi:random`.
#[derive(Debug)]
pub struct MtlsPlugin {
    entries: Vec<Entry>,
    /// Entries whose rule fixes a CN, by that CN.
    by_cn: BTreeMap<String, Vec<usize>>,
    /// Entries that match certificates of any CN (SAN-only, or a DN without CN).
    any_cn: Vec<usize>,
}

impl Plugin for MtlsPlugin {
    fn init(config: PluginConfig) -> Result<Self, InitError> {
        if !config.has_permissions() {
            return Err(
                "mtls mode needs a permissions.mtls section with at least one entry".into(),
            );
        }
        config.no_settings("mtls")?;
        let raw: MtlsEntries = config.permissions()?;
        if raw.is_empty() {
            return Err(ConfigError::at("permissions", "no mtls entries configured").into());
        }
        let placeholders = Placeholders::new(PLACEHOLDERS);
        let mut entries: Vec<Entry> = Vec::with_capacity(raw.len());
        for (name, entry) in raw {
            let at = |key: &str| format!("permissions.{name}{key}");
            let subject = match entry.identity.identity.as_deref() {
                None => None,
                Some(text) => {
                    Some(subject_rule(text).map_err(|e| ConfigError::at(at(".identity"), e))?)
                }
            };
            let san = match &entry.identity.san {
                None => SanRule::default(),
                Some(s) => {
                    let rule = san_rule(s)
                        .map_err(|(key, e)| ConfigError::at(at(&format!(".san.{key}")), e))?;
                    if rule.is_empty() {
                        return Err(ConfigError::at(
                            at(".san"),
                            "name at least one of uri, dns, email, ip",
                        )
                        .into());
                    }
                    rule
                }
            };
            if subject.is_none() && san.is_empty() {
                return Err(ConfigError::at(
                    at(""),
                    "needs an identity (`CN=<name>` or a subject DN) or a san to match certificates by",
                )
                .into());
            }
            let policy = entry
                .compile(&placeholders)
                .map_err(|e| ConfigError::at(at(""), e))?;
            // Fill what is known now, so that a template that can never be filled (a CN
            // with a `.` in `{{cert.cn}}`, an entry name in `{{name}}`) fails at load time.
            let known_cn = subject.as_ref().and_then(SubjectRule::common_name);
            policy
                .grant(|p| {
                    Some(match p {
                        "name" => name.clone(),
                        "cert.cn" => known_cn.unwrap_or("x").to_owned(),
                        "cert.san.uri" => san.uri.clone().unwrap_or_else(|| "x".into()),
                        _ => "x".into(),
                    })
                })
                .map_err(|e| ConfigError::at(at(""), e))?;
            if let Some(other) = entries.iter().find(|o| overlaps(o, &subject, &san)) {
                return Err(ConfigError::at(
                    at(""),
                    format!(
                        "matches the same certificates as entry {:?}; each certificate must map to one entry",
                        other.name
                    ),
                )
                .into());
            }
            entries.push(Entry {
                name,
                subject,
                san,
                policy,
            });
        }
        let mut by_cn: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut any_cn = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            match e.subject.as_ref().and_then(SubjectRule::common_name) {
                Some(cn) => by_cn.entry(cn.to_owned()).or_default().push(i),
                None => any_cn.push(i),
            }
        }
        Ok(Self {
            entries,
            by_cn,
            any_cn,
        })
    }

    fn credentials(&self) -> &[CredentialKind] {
        &[CredentialKind::Certificate]
    }

    /// The verified chain; nothing else.
    fn reads(&self) -> RequestParts {
        RequestParts::TLS
    }

    fn authenticate(&self, request: &AuthRequest, host: &dyn Host) -> Decision {
        self.authenticate_at(request, host, unix_now())
    }
}

impl MtlsPlugin {
    /// [`Plugin::authenticate`] at a given time (unix seconds), for tests.
    pub fn authenticate_at(&self, request: &AuthRequest, host: &dyn Host, now: i64) -> Decision {
        if request.credential != Credential::Certificate {
            return Decision::Abstain;
        }
        let chain = request
            .tls
            .as_ref()
            .map(|t| t.verified_chain.as_slice())
            .unwrap_or(&[]);
        let Some(leaf) = chain.first() else {
            return Decision::deny(
                "no verified client certificate (nats-server verified no chain)",
            );
        };
        let subject = loggable(&leaf.subject);
        if leaf.common_names.len() > 1 {
            return Decision::deny(format!(
                "client certificate \"{subject}\" has {} common names (CN); at most one is allowed",
                leaf.common_names.len()
            ));
        }
        if now < leaf.not_before {
            return Decision::deny(format!(
                "client certificate \"{subject}\" is not valid before {}",
                nats_callout_sdk::cert::rfc3339(leaf.not_before)
            ));
        }
        if now > leaf.not_after {
            return Decision::deny(format!(
                "client certificate \"{subject}\" expired at {}",
                nats_callout_sdk::cert::rfc3339(leaf.not_after)
            ));
        }
        let parsed = dn::parse(&leaf.subject);
        if let Err(e) = &parsed {
            // Only entries matching by CN or SAN can still match; say why DNs cannot.
            host.warn(&format!(
                "certificate subject \"{subject}\" does not parse: {e}"
            ));
        }
        let parsed = parsed.ok();
        let candidates = leaf
            .common_names
            .first()
            .and_then(|cn| self.by_cn.get(cn))
            .into_iter()
            .flatten()
            .chain(&self.any_cn);
        let matched: Vec<&Entry> = candidates
            .map(|&i| &self.entries[i])
            .filter(|e| matches(e, leaf, parsed.as_ref()))
            .collect();
        let entry = match matched.as_slice() {
            [] => {
                host.info(&format!("certificate \"{subject}\" matches no mtls entry"));
                return Decision::deny(format!(
                    "unknown certificate identity \"{subject}\" (no mtls entry matches its subject or SANs)"
                ));
            }
            [one] => *one,
            many => {
                let names: Vec<&str> = many.iter().map(|e| e.name.as_str()).collect();
                return Decision::deny(format!(
                    "certificate \"{subject}\" matches several mtls entries ({}); identities must be unambiguous",
                    names.join(", ")
                ));
            }
        };
        let filled = entry.policy.grant(|p| match p {
            "name" => Some(entry.name.clone()),
            "cert.cn" => leaf.common_names.first().cloned(),
            "cert.san.uri" => entry.san.uri.clone().or_else(|| only(&leaf.uri_sans)),
            _ => None,
        });
        match filled {
            Ok(mut grant) => {
                grant.name = entry.name.clone();
                // The user JWT must not outlive the certificate, nor any CA above it.
                let until = chain.iter().map(|c| c.not_after).min();
                grant.expires_at = until.or(Some(leaf.not_after));
                Decision::Allow(grant)
            }
            Err(e) => Decision::deny(format!("mtls entry {:?}: {e}", entry.name)),
        }
    }
}

fn matches(e: &Entry, leaf: &Certificate, subject: Option<&Dn>) -> bool {
    let subject_ok = match &e.subject {
        None => true,
        Some(SubjectRule::Cn(cn)) => leaf.common_names.as_slice() == std::slice::from_ref(cn),
        Some(SubjectRule::Dn(dn)) => subject == Some(dn),
    };
    subject_ok && e.san.matches(leaf)
}

/// Whether a new entry provably matches certificates an existing one matches: the same
/// rules, or a `CN=` rule and a full DN with that CN, with the same SAN conditions.
/// Overlaps that depend on what a CA issues (a CN rule and a SAN-only rule) are caught
/// per request instead, as an ambiguous match.
fn overlaps(existing: &Entry, subject: &Option<SubjectRule>, san: &SanRule) -> bool {
    if existing.san != *san {
        return false;
    }
    match (&existing.subject, subject) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            let cn_rule = matches!(a, SubjectRule::Cn(_)) || matches!(b, SubjectRule::Cn(_));
            a == b || (cn_rule && a.common_name().is_some() && a.common_name() == b.common_name())
        }
        _ => false,
    }
}

fn subject_rule(text: &str) -> Result<SubjectRule, String> {
    let parsed = dn::parse(text).map_err(|e| format!("{:?} is not a valid DN: {e}", text))?;
    if parsed.common_names().len() > 1 {
        return Err(
            "names more than one CN; certificates with several CNs are always denied".into(),
        );
    }
    Ok(match parsed.as_cn_only() {
        Some("") => return Err("the CN is empty".into()),
        Some(cn) => SubjectRule::Cn(cn.to_owned()),
        None => SubjectRule::Dn(parsed),
    })
}

fn san_rule(s: &SanIdentity) -> Result<SanRule, (&'static str, String)> {
    let clean =
        |key: &'static str, v: &Option<String>| -> Result<Option<String>, (&'static str, String)> {
            match v.as_deref().map(str::trim) {
                None => Ok(None),
                Some("") => Err((key, "must not be empty".into())),
                Some(v) if v.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                    Err((key, "must not contain whitespace".into()))
                }
                Some(v) => Ok(Some(v.to_owned())),
            }
        };
    let dns = clean("dns", &s.dns)?.map(|d| d.to_ascii_lowercase());
    if dns.as_deref().is_some_and(|d| d.contains('*')) {
        return Err((
            "dns",
            "wildcards are not matched; name the host exactly".into(),
        ));
    }
    let ip = match clean("ip", &s.ip)? {
        None => None,
        Some(v) => Some(
            v.parse::<IpAddr>()
                .map_err(|_| ("ip", format!("{v:?} is not an IP address")))?,
        ),
    };
    Ok(SanRule {
        uri: clean("uri", &s.uri)?,
        dns,
        email: clean("email", &s.email)?,
        ip,
    })
}

fn only(values: &[String]) -> Option<String> {
    match values {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// A subject as it may appear in a reason or log line: the host escapes control
/// characters, but a certificate can carry a very long subject.
fn loggable(subject: &str) -> String {
    const MAX: usize = 200;
    if subject.chars().count() > MAX {
        format!("{}...", subject.chars().take(MAX).collect::<String>())
    } else {
        subject.to_owned()
    }
}

/// Now, unix seconds. On wasm32-wasip2 this is `wasi:clocks/wall-clock`, the host's clock.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

nats_callout_sdk::export_plugin!(MtlsPlugin);

#[cfg(test)]
mod tests {
    use nats_callout_sdk::ClientTls;
    use nats_callout_sdk::testing::{RequestBuilder, TestHost, config};
    use serde_json::{Value, json};

    use super::*;

    const NOW: i64 = 1_750_000_000; // 2025-06-15T15:06:40Z
    const NOT_AFTER: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn cert(subject: &str) -> Certificate {
        let mut c = Certificate::default();
        c.pem = format!("-----BEGIN CERTIFICATE-----\n{subject}\n");
        c.subject = subject.into();
        c.common_names = dn::parse(subject)
            .unwrap()
            .common_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        c.not_before = 1_735_689_600;
        c.not_after = NOT_AFTER;
        c
    }

    fn chain(certs: Vec<Certificate>) -> ClientTls {
        let mut tls = ClientTls::default();
        tls.version = Some("1.3".into());
        tls.verified_chain = certs;
        tls
    }

    fn request(leaf: Certificate) -> AuthRequest {
        RequestBuilder::new("mtls")
            .certificate(chain(vec![leaf, cert("CN=Device CA,O=Acme")]))
            .build()
    }

    fn entry(identity: Value) -> Value {
        let mut e = json!({
            "account": "DEVICES",
            "permissions": {
                "pub": {"allow": ["sensors.>"]},
                "sub": {"allow": ["commands.>"]}
            }
        });
        for (k, v) in identity.as_object().unwrap() {
            e[k] = v.clone();
        }
        e
    }

    fn plugin(permissions: Value) -> MtlsPlugin {
        MtlsPlugin::init(config(permissions, Value::Null)).unwrap()
    }

    fn init_err(permissions: Value) -> String {
        MtlsPlugin::init(config(permissions, Value::Null))
            .unwrap_err()
            .to_string()
    }

    fn decide(p: &MtlsPlugin, leaf: Certificate) -> Decision {
        p.authenticate_at(&request(leaf), &TestHost::new(), NOW)
    }

    fn allowed(d: Decision) -> nats_callout_sdk::Grant {
        match d {
            Decision::Allow(g) => g,
            other => panic!("expected allow, got {other:?}"),
        }
    }

    fn deny_reason(d: Decision) -> String {
        match d {
            Decision::Deny(reason) => reason,
            other => panic!("expected deny, got {other:?}"),
        }
    }

    /// An identity copied from `openssl -nameopt RFC2253` escapes `+` as `\+`: it must
    /// match the certificate whose CN has a `+`, and not one with a control character.
    #[test]
    fn the_grant_ends_with_the_first_certificate_of_the_chain_to_expire() {
        let p = plugin(json!({"gw": entry(json!({"identity": "CN=gw"}))}));
        let g = allowed(decide(&p, cert("CN=gw")));
        assert_eq!(g.expires_at, Some(NOT_AFTER));
        let mut ca = cert("CN=Device CA,O=Acme");
        ca.not_after = NOT_AFTER - 3600;
        let req = RequestBuilder::new("mtls")
            .certificate(chain(vec![cert("CN=gw"), ca]))
            .build();
        let g = allowed(p.authenticate_at(&req, &TestHost::new(), NOW));
        assert_eq!(g.expires_at, Some(NOT_AFTER - 3600));
    }

    #[test]
    fn an_escaped_plus_is_a_plus() {
        let p = plugin(json!({"rack": entry(json!({"identity": r"CN=rack\+1"}))}));
        let mut leaf = cert(r"CN=rack\+1");
        leaf.common_names = vec!["rack+1".into()];
        allowed(decide(&p, leaf));
        let mut control = cert(r"CN=rack\01");
        control.common_names = vec!["rack\u{1}".into()];
        deny_reason(decide(&p, control));
    }

    #[test]
    fn cn_identity_matches_the_cn_whatever_the_rest_of_the_subject() {
        let p = plugin(json!({"bms-gateway": entry(json!({"identity": "CN=bms.cpc-1"}))}));
        for subject in ["CN=bms.cpc-1", "CN=bms.cpc-1,OU=Plant 2,O=Acme,C=DE"] {
            let grant = allowed(decide(&p, cert(subject)));
            assert_eq!(grant.account, "DEVICES");
            assert_eq!(grant.name, "bms-gateway");
            assert_eq!(grant.publish.allow, ["sensors.>"]);
            assert_eq!(grant.subscribe.allow, ["commands.>"]);
            assert_eq!(grant.expires_at, Some(NOT_AFTER), "never outlives the cert");
        }
        for other in ["CN=bms.cpc-2", "CN=BMS.cpc-1", "CN=bms.cpc-1 x", "O=Acme"] {
            let reason = deny_reason(decide(&p, cert(other)));
            assert_eq!(
                reason,
                format!(
                    "unknown certificate identity \"{other}\" (no mtls entry matches its subject or SANs)"
                )
            );
        }
    }

    #[test]
    fn full_dn_identity_matches_the_whole_subject() {
        let p = plugin(json!({"gw": entry(json!({"identity": "CN=bms.cpc-1,O=Acme"}))}));
        allowed(decide(&p, cert("CN=bms.cpc-1,O=Acme")));
        // Spelling does not matter, structure does.
        allowed(decide(&p, cert("cn=bms.cpc-1, 2.5.4.10=Acme")));
        for other in [
            "CN=bms.cpc-1",
            "CN=bms.cpc-1,O=Other",
            "CN=bms.cpc-1,O=Acme,C=DE",
            "O=Acme,CN=bms.cpc-1",
            "CN=bms.cpc-1+OU=x,O=Acme",
        ] {
            assert!(
                deny_reason(decide(&p, cert(other))).starts_with("unknown certificate identity"),
                "{other}"
            );
        }
        // The same CN under two organisations: two distinct entries.
        let p = plugin(json!({
            "acme": entry(json!({"identity": "CN=gw,O=Acme"})),
            "other": entry(json!({"identity": "CN=gw,O=Other"})),
        }));
        assert_eq!(allowed(decide(&p, cert("CN=gw,O=Other"))).name, "other");
    }

    #[test]
    fn san_conditions() {
        let mut spiffe = cert("CN=cpc-1,O=Acme");
        spiffe.uri_sans = vec!["spiffe://example.org/bms/cpc-1".into()];
        spiffe.dns_sans = vec!["CPC-1.bms.example.org".into()];
        spiffe.ip_sans = vec!["fd00::7".into()];
        let p = plugin(json!({
            "by-uri": entry(json!({"san": {"uri": "spiffe://example.org/bms/cpc-1"}})),
            "by-dns-and-cn": entry(json!({"identity": "CN=cpc-2", "san": {"dns": "cpc-2.bms.example.org"}})),
            "by-ip": entry(json!({"san": {"ip": "fd00:0::8"}})),
        }));
        assert_eq!(allowed(decide(&p, spiffe.clone())).name, "by-uri");

        let mut second = cert("CN=cpc-2");
        second.dns_sans = vec!["CPC-2.bms.example.org".into()];
        assert_eq!(allowed(decide(&p, second.clone())).name, "by-dns-and-cn");
        // Identity and SAN must both match.
        let mut wrong_cn = second.clone();
        wrong_cn.subject = "CN=cpc-3".into();
        wrong_cn.common_names = vec!["cpc-3".into()];
        assert!(deny_reason(decide(&p, wrong_cn)).starts_with("unknown certificate identity"));
        second.dns_sans = vec!["cpc-2.other.example.org".into()];
        assert!(deny_reason(decide(&p, second)).starts_with("unknown certificate identity"));

        let mut ip = cert("O=Acme");
        ip.ip_sans = vec!["fd00::8".into()];
        assert_eq!(allowed(decide(&p, ip)).name, "by-ip");
    }

    #[test]
    fn several_common_names_are_denied() {
        let p = plugin(json!({"gw": entry(json!({"identity": "CN=bms.cpc-1"}))}));
        let mut two = cert("CN=admin,CN=bms.cpc-1");
        assert_eq!(two.common_names.len(), 2);
        assert_eq!(
            deny_reason(decide(&p, two.clone())),
            "client certificate \"CN=admin,CN=bms.cpc-1\" has 2 common names (CN); at most one is allowed"
        );
        // Even when an entry would match the whole DN exactly.
        two.subject = "CN=bms.cpc-1".into();
        assert!(deny_reason(decide(&p, two)).contains("2 common names"));
    }

    #[test]
    fn validity_window_is_checked_here_too() {
        let p = plugin(json!({"gw": entry(json!({"identity": "CN=bms.cpc-1"}))}));
        let leaf = cert("CN=bms.cpc-1");
        let r = request(leaf.clone());
        let host = TestHost::new();
        assert_eq!(
            deny_reason(p.authenticate_at(&r, &host, NOT_AFTER + 1)),
            "client certificate \"CN=bms.cpc-1\" expired at 2026-01-01T00:00:00Z"
        );
        assert_eq!(
            deny_reason(p.authenticate_at(&r, &host, leaf.not_before - 1)),
            "client certificate \"CN=bms.cpc-1\" is not valid before 2025-01-01T00:00:00Z"
        );
        allowed(p.authenticate_at(&r, &host, NOT_AFTER));
        allowed(p.authenticate_at(&r, &host, leaf.not_before));
    }

    #[test]
    fn ambiguous_matches_are_denied() {
        let p = plugin(json!({
            "by-cn": entry(json!({"identity": "CN=cpc-1"})),
            "by-uri": entry(json!({"san": {"uri": "urn:dev:cpc-1"}})),
        }));
        let mut both = cert("CN=cpc-1");
        both.uri_sans = vec!["urn:dev:cpc-1".into()];
        assert_eq!(
            deny_reason(decide(&p, both)),
            "certificate \"CN=cpc-1\" matches several mtls entries (by-cn, by-uri); identities must be unambiguous"
        );
    }

    #[test]
    fn templates_fill_from_the_certificate_and_are_sanitised() {
        let p = plugin(json!({
            "fleet": {
                "san": {"dns": "fleet.example.org"},
                "account": "DEVICES",
                "permissions": {
                    "pub": {"allow": ["sensors.{{cert.cn}}.>", "by-uri.{{cert.san.uri}}"]},
                    "sub": {"allow": ["commands.{{cert.cn}}", "entries.{{name}}"]}
                }
            }
        }));
        let mut leaf = cert("CN=cpc-7,O=Acme");
        leaf.dns_sans = vec!["Fleet.Example.Org".into()];
        leaf.uri_sans = vec!["urn:dev:cpc-7".into()];
        let g = allowed(decide(&p, leaf.clone()));
        assert_eq!(g.publish.allow, ["sensors.cpc-7.>", "by-uri.urn:dev:cpc-7"]);
        assert_eq!(g.subscribe.allow, ["commands.cpc-7", "entries.fleet"]);
        // Two URI SANs and none named by the entry: which one would be a guess.
        leaf.uri_sans.push("urn:dev:other".into());
        assert!(deny_reason(decide(&p, leaf)).contains("{{cert.san.uri}}"));
    }

    #[test]
    fn template_values_that_would_widen_a_subject_are_denied() {
        let p = plugin(json!({
            "fleet": {
                "san": {"uri": "urn:fleet"},
                "account": "DEVICES",
                "permissions": {"pub": {"allow": ["sensors.{{cert.cn}}.>"]}}
            }
        }));
        for (cn, why) in [
            ("a.b", "contains `.`"),
            ("*", "contains `*`"),
            ("a b", "whitespace"),
        ] {
            let mut leaf = cert("O=Acme");
            leaf.subject = format!("CN={cn}");
            leaf.common_names = vec![cn.into()];
            leaf.uri_sans = vec!["urn:fleet".into()];
            let reason = deny_reason(decide(&p, leaf));
            assert!(
                reason.starts_with("mtls entry \"fleet\": placeholder {{cert.cn}}")
                    && reason.contains(why),
                "{reason}"
            );
        }
        let mut no_cn = cert("O=Acme");
        no_cn.uri_sans = vec!["urn:fleet".into()];
        assert!(deny_reason(decide(&p, no_cn)).contains("has no value"));
    }

    #[test]
    fn no_chain_and_other_modes() {
        let p = plugin(json!({"gw": entry(json!({"identity": "CN=x"}))}));
        assert_eq!(p.credentials(), [CredentialKind::Certificate]);
        let bare = RequestBuilder::new("mtls")
            .credential(Credential::Certificate)
            .build();
        assert_eq!(
            deny_reason(p.authenticate_at(&bare, &TestHost::new(), NOW)),
            "no verified client certificate (nats-server verified no chain)"
        );
        // Another credential on a verified connection (a token over mTLS) is not ours.
        for other in [Credential::None, Credential::Nkey("UABC".into())] {
            let mut r = request(cert("CN=x"));
            r.credential = other;
            assert_eq!(
                p.authenticate_at(&r, &TestHost::new(), NOW),
                Decision::Abstain
            );
        }
    }

    #[test]
    fn config_errors_name_the_entry() {
        assert_eq!(
            init_err(Value::Null),
            "mtls mode needs a permissions.mtls section with at least one entry"
        );
        assert_eq!(
            init_err(json!({})),
            "permissions: no mtls entries configured"
        );
        let cases = [
            (
                json!({"identity": "bms.cpc-1"}),
                "permissions.e.identity: \"bms.cpc-1\" is not a valid DN: expected `=`",
            ),
            (
                json!({"identity": "CN=a;O=b"}),
                "permissions.e.identity: \"CN=a;O=b\" is not a valid DN: CN: unescaped `;`",
            ),
            (
                json!({"identity": "CN=a,CN=b"}),
                "permissions.e.identity: names more than one CN",
            ),
            (
                json!({"identity": "CN="}),
                "permissions.e.identity: the CN is empty",
            ),
            (json!({}), "permissions.e: needs an identity"),
            (
                json!({"san": {}}),
                "permissions.e.san: name at least one of uri, dns, email, ip",
            ),
            (
                json!({"san": {"ip": "10.0.0"}}),
                "permissions.e.san.ip: \"10.0.0\" is not an IP address",
            ),
            (
                json!({"san": {"dns": "*.example.org"}}),
                "permissions.e.san.dns: wildcards are not matched",
            ),
            (
                json!({"san": {"uri": " "}}),
                "permissions.e.san.uri: must not be empty",
            ),
            (
                json!({"san": {"url": "x"}}),
                "permissions.e: unknown field `url`",
            ),
        ];
        for (identity, want) in cases {
            let e = init_err(json!({"e": entry(identity.clone())}));
            assert!(e.starts_with(want), "{identity}: {e}");
        }
        // A CN that can never fill {{cert.cn}} fails at load time, not on every connect.
        let e = init_err(json!({"e": {
            "identity": "CN=bms.cpc-1", "account": "A",
            "permissions": {"pub": {"allow": ["s.{{cert.cn}}"]}}
        }}));
        assert_eq!(
            e,
            "permissions.e: placeholder {{cert.cn}} in \"s.{{cert.cn}}\" contains `.`, which would change the subject's shape"
        );
        let e = init_err(json!({"e": {
            "identity": "CN=x", "account": "A",
            "permissions": {"pub": {"allow": ["s.{{claims.sub}}"]}}
        }}));
        assert!(e.contains("unknown placeholder {{claims.sub}}"), "{e}");
        // So does a SPIFFE ID (dotted trust domain) in {{cert.san.uri}}.
        let e = init_err(json!({"e": {
            "san": {"uri": "spiffe://example.org/bms/cpc-1"}, "account": "A",
            "permissions": {"pub": {"allow": ["s.{{cert.san.uri}}"]}}
        }}));
        assert!(
            e.contains("{{cert.san.uri}}") && e.contains("contains `.`"),
            "{e}"
        );
        let e = MtlsPlugin::init(config(
            json!({"e": entry(json!({"identity": "CN=x"}))}),
            json!({"x": 1}),
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(e, "settings: the mtls plugin takes no settings");
    }

    #[test]
    fn overlapping_entries_are_load_errors() {
        for (a, b) in [
            (json!({"identity": "CN=gw"}), json!({"identity": "cn = gw"})),
            (
                json!({"identity": "CN=gw"}),
                json!({"identity": "CN=gw,O=Acme"}),
            ),
            (
                json!({"identity": "CN=gw,O=Acme"}),
                json!({"identity": "CN=gw,O=Acme"}),
            ),
            (
                json!({"san": {"uri": "urn:a"}}),
                json!({"san": {"uri": "urn:a"}}),
            ),
            (
                json!({"identity": "CN=gw", "san": {"dns": "GW.example.org"}}),
                json!({"identity": "CN=gw,O=Acme", "san": {"dns": "gw.example.org"}}),
            ),
        ] {
            let e = init_err(json!({"a": entry(a.clone()), "b": entry(b.clone())}));
            assert_eq!(
                e,
                "permissions.b: matches the same certificates as entry \"a\"; each certificate must map to one entry",
                "{a} / {b}"
            );
        }
        // Distinguishable: accepted.
        plugin(json!({
            "a": entry(json!({"identity": "CN=gw", "san": {"uri": "urn:a"}})),
            "b": entry(json!({"identity": "CN=gw", "san": {"uri": "urn:b"}})),
            "c": entry(json!({"identity": "CN=gw,O=Acme", "san": {"uri": "urn:c"}})),
        }));
    }
}
