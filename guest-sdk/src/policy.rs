//! Permission entries in the shape operators write in Helm values, and their conversion
//! into a [`Grant`] with subject templates.
//!
//! ```yaml
//! sensor-test-01:                      # entry name (a map key; not part of the entry)
//!   public_key: UDXU...                # identifier fields: each plugin its own
//!   account: DEVICES
//!   permissions:
//!     pub: { allow: ["device-state.{{name}}", "_INBOX.>"], deny: [] }
//!     sub: { allow: ["device-commands.{{name}}", "_INBOX.>"] }
//!     resp: { max: 1, ttl: 5s }
//! ```
//!
//! A plugin deserializes its section into `BTreeMap<String, PermissionEntry<MyIdentity>>`
//! (identifier fields are `#[serde(flatten)]`ed in, unknown keys are rejected), then
//! [`PermissionEntry::compile`]s each entry once at `init`, which checks every subject and
//! every placeholder, so that a bad config fails at load time and not on some client's
//! connect. Per request, [`CompiledEntry::grant`] fills the placeholders and checks every
//! filled value, so an identity can never widen its own permissions by carrying `.`, `*`
//! or `>` into a subject.
//!
//! Semantics differ from raw NATS permissions in one deliberate way: an empty or missing
//! `allow` list allows *nothing* in that direction (the grant gets `deny: [">"]`), because
//! NATS reads "no allow list" as "everything", and an operator who wrote only `sub:` did
//! not mean "and publish anywhere". Write `allow: [">"]` to allow everything.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::types::{
    ConnectionType, Grant, Permission, RequestParts, ResponsePermission, TimeRange,
};

/// One named permissions entry. `I` holds the plugin's identifier fields (e.g. nkey's
/// `public_key`), flattened into the same YAML mapping; `()` for none (noauth).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionEntry<I = ()> {
    #[serde(flatten)]
    pub identity: I,
    /// NATS account the client is placed into.
    pub account: String,
    pub permissions: Permissions,
    /// How the client may connect (`standard`, `websocket`, `mqtt`, `leafnode`; the
    /// upper-case spellings of nats-server's `allowed_connection_types` too); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_connection_types: Vec<ConnectionType>,
    /// CIDRs the client's address must be in; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_networks: Vec<String>,
    /// Daily windows (`{start: "08:00:00", end: "18:00:00"}`) in which it may connect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub times: Vec<TimeRange>,
    /// IANA time zone of `times`; default nats-server's local zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

/// The `permissions` mapping of an entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    /// `pub`: subjects the client may publish to.
    #[serde(rename = "pub", default)]
    pub publish: SubjectRules,
    /// `sub`: subjects the client may subscribe to.
    #[serde(rename = "sub", default)]
    pub subscribe: SubjectRules,
    /// `resp`: optional request-reply permission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resp: Option<ResponseRule>,
}

/// `allow` / `deny` subject lists; entries may contain `{{placeholder}}` templates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubjectRules {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// `resp: { max, ttl }`. Defaults are nats-server's: one response within two minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseRule {
    /// Responses allowed per request; -1 is unlimited.
    #[serde(default = "ResponseRule::default_max")]
    pub max: i32,
    /// How long the reply subject stays writable: `"5s"`, `"250ms"`, `"1m"`, `"1m30s"`,
    /// or an integer number of milliseconds.
    #[serde(
        default = "ResponseRule::default_ttl",
        with = "crate::format::duration"
    )]
    pub ttl: Duration,
}

impl ResponseRule {
    fn default_max() -> i32 {
        1
    }
    fn default_ttl() -> Duration {
        Duration::from_secs(120)
    }
}

impl Default for ResponseRule {
    fn default() -> Self {
        Self {
            max: Self::default_max(),
            ttl: Self::default_ttl(),
        }
    }
}

/// The placeholders a plugin offers to templates, and the limit on filled values.
///
/// A name ending in `.*` admits a family: `claims.*` accepts `{{claims.device_id}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholders {
    names: Vec<String>,
    max_value_len: usize,
}

impl Placeholders {
    /// Default upper bound, in characters, of a filled placeholder value.
    pub const DEFAULT_MAX_VALUE_LEN: usize = 64;

    /// The placeholders this plugin can fill, e.g. `["nkey", "name", "client.name"]`.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        Self {
            names: names.into_iter().map(Into::into).collect(),
            max_value_len: Self::DEFAULT_MAX_VALUE_LEN,
        }
    }

    /// Changes the value length limit (characters).
    pub fn max_value_len(mut self, max: usize) -> Self {
        self.max_value_len = max;
        self
    }

    /// Whether `name` is one of these placeholders (or in one of their families).
    pub fn knows(&self, name: &str) -> bool {
        self.names
            .iter()
            .any(|known| match known.strip_suffix('*') {
                Some(prefix) => name.len() > prefix.len() && name.starts_with(prefix),
                None => known == name,
            })
    }

    fn list(&self) -> String {
        if self.names.is_empty() {
            return "none".into();
        }
        self.names
            .iter()
            .map(|n| format!("{{{{{n}}}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a permissions entry could not be compiled, or a grant could not be filled.
///
/// Messages name the subject template and placeholder, never a filled value: values come
/// from client credentials and may be secret.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    #[error("account must be a non-empty name without whitespace, `.`, `*` or `>`")]
    InvalidAccount,
    #[error("subject {subject:?} {reason}")]
    InvalidSubject { subject: String, reason: String },
    #[error(
        "subject {subject:?} uses unknown placeholder {{{{{name}}}}} (this plugin offers: {known})"
    )]
    UnknownPlaceholder {
        subject: String,
        name: String,
        known: String,
    },
    #[error("resp.max must be -1 (unlimited) or more, not {0}")]
    InvalidResponseMax(i32),
    #[error("source network {0:?} is not a CIDR such as 10.0.0.0/8 or 2001:db8::/32")]
    InvalidNetwork(String),
    #[error("time range {start:?}-{end:?}: {reason}")]
    InvalidTimeRange {
        start: String,
        end: String,
        reason: &'static str,
    },
    #[error("locale {0:?} is not an IANA time zone name such as Europe/Berlin or UTC")]
    InvalidLocale(String),
    #[error("placeholder {{{{{name}}}}} in {subject:?} {problem}")]
    BadValue {
        subject: String,
        name: String,
        problem: ValueProblem,
    },
}

/// What is wrong with a filled placeholder value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ValueProblem {
    #[error("has no value for this client")]
    Missing,
    #[error("is empty")]
    Empty,
    #[error("is longer than {0} characters")]
    TooLong(usize),
    #[error("contains `{0}`, which would change the subject's shape")]
    Forbidden(char),
    #[error("contains whitespace, a control character or an invisible formatting character")]
    Whitespace,
}

/// Whether a subject may carry a queue group (`"subject queue"`), as NATS subscribe
/// permissions may; publish subjects may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    Publish,
    Subscribe,
}

/// Checks that `account` is a usable account name: non-empty, no whitespace, control
/// characters, `.`, `*` or `>`. The host applies the same check to every grant.
pub fn validate_account(account: &str) -> Result<(), PolicyError> {
    if account.is_empty()
        || account
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>'))
    {
        return Err(PolicyError::InvalidAccount);
    }
    Ok(())
}

/// Checks that `cidr` is a network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`,
/// or a bare address for one host), and returns it.
pub fn parse_network(cidr: &str) -> Result<ipnet::IpNet, PolicyError> {
    let bad = || PolicyError::InvalidNetwork(cidr.to_string());
    let text = cidr.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| bad())
}

/// Checks a daily window as nats-server parses it (Go layout `15:04:05`): two-digit
/// hours, minutes and seconds, and a start that is not its end (an empty window).
pub fn validate_time_range(range: &TimeRange) -> Result<(), PolicyError> {
    let bad = |reason| PolicyError::InvalidTimeRange {
        start: range.start.clone(),
        end: range.end.clone(),
        reason,
    };
    let seconds = |t: &str| -> Option<u32> {
        let b = t.as_bytes();
        if b.len() != 8 || b[2] != b':' || b[5] != b':' {
            return None;
        }
        let two = |i: usize| -> Option<u32> {
            let (h, l) = (b[i], b[i + 1]);
            (h.is_ascii_digit() && l.is_ascii_digit())
                .then(|| u32::from(h - b'0') * 10 + u32::from(l - b'0'))
        };
        let (h, m, s) = (two(0)?, two(3)?, two(6)?);
        (h < 24 && m < 60 && s < 60).then_some(h * 3600 + m * 60 + s)
    };
    let (Some(start), Some(end)) = (seconds(&range.start), seconds(&range.end)) else {
        return Err(bad("start and end are times of day, HH:MM:SS"));
    };
    if start == end {
        return Err(bad("start and end are the same time: the window is empty"));
    }
    Ok(())
}

/// Checks that `locale` looks like an IANA time zone name (`UTC`, `Europe/Berlin`,
/// `America/Argentina/Buenos_Aires`, `Etc/GMT+2`). Whether the zone exists is
/// nats-server's to know (its time zone database); it refuses the client otherwise.
pub fn validate_locale(locale: &str) -> Result<(), PolicyError> {
    let ok = !locale.is_empty()
        && locale.len() <= 64
        && !locale.starts_with('/')
        && !locale.ends_with('/')
        && !locale.contains("..")
        && locale
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(PolicyError::InvalidLocale(locale.to_string()))
    }
}

/// Checks that `subject` is a well-formed NATS subject or wildcard pattern: non-empty
/// `.`-separated tokens, no whitespace or control characters, `*` and `>` only as whole
/// tokens, `>` only last. For [`SubjectKind::Subscribe`], one space may separate the
/// subject from a queue group name. The same rules as the host's own grant check, so a
/// grant built from a compiled entry is never refused there.
pub fn validate_subject(subject: &str, kind: SubjectKind) -> Result<(), PolicyError> {
    if plainly_valid(subject, kind) {
        Ok(())
    } else {
        subject_problem(subject, kind)
    }
}

/// [`validate_subject`] char by char: any subject, and the reason it is refused.
fn subject_problem(subject: &str, kind: SubjectKind) -> Result<(), PolicyError> {
    let invalid = |reason: &str| PolicyError::InvalidSubject {
        subject: subject.to_string(),
        reason: reason.to_string(),
    };
    let (subject_part, queue) = match subject.split_once(' ') {
        Some((s, q)) if kind == SubjectKind::Subscribe => (s, Some(q)),
        _ => (subject, None),
    };
    // nats-server validates the queue group like a subject (no empty `.` tokens) and
    // refuses the whole user JWT otherwise.
    if let Some(queue) = queue
        && (queue.split('.').any(str::is_empty)
            || queue.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(invalid(
            "has a malformed queue group (one space, then a name without whitespace or empty `.` tokens)",
        ));
    }
    if subject_part.is_empty() {
        return Err(invalid("is empty"));
    }
    if subject_part
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid("contains whitespace or a control character"));
    }
    let mut tokens = subject_part.split('.').peekable();
    while let Some(token) = tokens.next() {
        if token.is_empty() {
            return Err(invalid(
                "has an empty token (leading, trailing or double `.`)",
            ));
        }
        if token.len() > 1 && token.contains(['*', '>']) {
            return Err(invalid(
                "uses `*` or `>` inside a token; wildcards must be whole tokens",
            ));
        }
        if token == ">" && tokens.peek().is_some() {
            return Err(invalid("uses `>` before the last token"));
        }
    }
    Ok(())
}

/// Whether `subject` is an ASCII subject that passes every rule of [`validate_subject`],
/// checked in one pass over its bytes. Every granted subject is checked, in the plugin
/// and again in the host, on every decision; decoding each char and scanning each token
/// several times made that a tenth of the oauth2 plugin's time inside WebAssembly.
/// Anything else (non-ASCII, or invalid) takes the char-by-char path, which says why.
fn plainly_valid(subject: &str, kind: SubjectKind) -> bool {
    // Non-empty `.`-separated tokens of printable ASCII; in a subject (not a queue
    // group), `*` and `>` only as whole tokens and `>` only last.
    fn tokens(s: &[u8], wildcards: bool) -> bool {
        let mut tokens = s.split(|&c| c == b'.').peekable();
        while let Some(t) = tokens.next() {
            if t.is_empty() || t.iter().any(|&c| !c.is_ascii_graphic()) {
                return false;
            }
            if wildcards
                && ((t.len() > 1 && t.iter().any(|&c| c == b'*' || c == b'>'))
                    || (t == b">" && tokens.peek().is_some()))
            {
                return false;
            }
        }
        true
    }
    let bytes = subject.as_bytes();
    match bytes.iter().position(|&c| c == b' ') {
        Some(space) if kind == SubjectKind::Subscribe => {
            tokens(&bytes[..space], true) && tokens(&bytes[space + 1..], false)
        }
        _ => tokens(bytes, true),
    }
}

/// Checks one filled placeholder value.
fn check_value(value: &str, max_len: usize) -> Result<(), ValueProblem> {
    if plain_value(value, max_len) {
        Ok(())
    } else {
        value_problem(value, max_len)
    }
}

/// The common case of [`check_value`] on bytes, as [`plainly_valid`]: a non-empty value of
/// printable ASCII without `.`, `*` or `>`, short enough.
fn plain_value(value: &str, max_len: usize) -> bool {
    !value.is_empty()
        && value.len() <= max_len
        && value
            .bytes()
            .all(|c| c.is_ascii_graphic() && !matches!(c, b'.' | b'*' | b'>'))
}

/// [`check_value`] char by char: any value, and what is wrong with it.
fn value_problem(value: &str, max_len: usize) -> Result<(), ValueProblem> {
    if value.is_empty() {
        return Err(ValueProblem::Empty);
    }
    if value.chars().count() > max_len {
        return Err(ValueProblem::TooLong(max_len));
    }
    if let Some(c) = value.chars().find(|c| matches!(c, '.' | '*' | '>')) {
        return Err(ValueProblem::Forbidden(c));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || is_format(c))
    {
        return Err(ValueProblem::Whitespace);
    }
    Ok(())
}

/// Unicode's invisible formatting characters (general category Cf, Unicode 15.1): NATS
/// treats them as ordinary bytes, but `sensor-a` and `sensor-a` + U+200B would be two
/// subjects that look the same in every log and tool. Listed here rather than pulled in
/// with a Unicode-tables crate: the guest SDK stays small, and the category is stable.
fn is_format(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
        | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Placeholder(String),
}

/// A subject with `{{placeholder}}`s, parsed and checked once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTemplate {
    source: String,
    kind: SubjectKind,
    parts: Vec<Part>,
}

impl SubjectTemplate {
    /// Parses `subject`, checking its placeholders against `placeholders` and its shape
    /// (with every placeholder standing for one plain token fragment) as a NATS subject.
    pub fn parse(
        subject: &str,
        kind: SubjectKind,
        placeholders: &Placeholders,
    ) -> Result<Self, PolicyError> {
        let invalid = |reason: &str| PolicyError::InvalidSubject {
            subject: subject.to_string(),
            reason: reason.to_string(),
        };
        let mut parts = Vec::new();
        let mut rest = subject;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| invalid("has `{{` without a closing `}}`"))?;
            let name = after[..close].trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(invalid(
                    "has a malformed placeholder; names use letters, digits, `_`, `-` and `.`",
                ));
            }
            if !placeholders.knows(name) {
                return Err(PolicyError::UnknownPlaceholder {
                    subject: subject.to_string(),
                    name: name.to_string(),
                    known: placeholders.list(),
                });
            }
            parts.push(Part::Placeholder(name.to_string()));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        let template = Self {
            source: subject.to_string(),
            kind,
            parts,
        };
        // A stand-in value that passes `check_value` shows the subject's static shape.
        let shape = template.fill_unchecked(|_| Some("x".to_string()));
        validate_subject(&shape, kind).map_err(|e| match e {
            PolicyError::InvalidSubject { reason, .. } => invalid(&reason),
            other => other,
        })?;
        Ok(template)
    }

    /// The subject as written in the config.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the subject has no placeholder.
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// Fills the placeholders with `fill`, checking every value.
    pub fn render(
        &self,
        fill: &dyn Fn(&str) -> Option<String>,
        max_value_len: usize,
    ) -> Result<String, PolicyError> {
        let mut out = String::with_capacity(self.source.len());
        let mut filled = false;
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Placeholder(name) => {
                    filled = true;
                    let bad = |problem| PolicyError::BadValue {
                        subject: self.source.clone(),
                        name: name.clone(),
                        problem,
                    };
                    let value = fill(name).ok_or_else(|| bad(ValueProblem::Missing))?;
                    check_value(&value, max_value_len).map_err(bad)?;
                    out.push_str(&value);
                }
            }
        }
        // Defence in depth: the checked values cannot break the shape validated at parse
        // time, but a wrong grant is worse than a denied client. A subject without
        // placeholders is the one validated at parse time, byte for byte.
        if filled {
            validate_subject(&out, self.kind)?;
        }
        Ok(out)
    }

    fn fill_unchecked(&self, fill: impl Fn(&str) -> Option<String>) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Literal(text) => text.clone(),
                Part::Placeholder(name) => fill(name).unwrap_or_default(),
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CompiledRules {
    allow: Vec<SubjectTemplate>,
    deny: Vec<SubjectTemplate>,
}

impl CompiledRules {
    fn compile(
        rules: &SubjectRules,
        kind: SubjectKind,
        placeholders: &Placeholders,
    ) -> Result<Self, PolicyError> {
        let parse = |list: &[String]| {
            list.iter()
                .map(|s| SubjectTemplate::parse(s, kind, placeholders))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            allow: parse(&rules.allow)?,
            deny: parse(&rules.deny)?,
        })
    }

    fn render(
        &self,
        fill: &dyn Fn(&str) -> Option<String>,
        max_value_len: usize,
    ) -> Result<Permission, PolicyError> {
        let render = |list: &[SubjectTemplate]| {
            list.iter()
                .map(|t| t.render(fill, max_value_len))
                .collect::<Result<Vec<_>, _>>()
        };
        if self.allow.is_empty() {
            // Nothing allowed: say so explicitly, as NATS would read empty lists as "all".
            return Ok(Permission {
                allow: Vec::new(),
                deny: vec![">".to_string()],
            });
        }
        Ok(Permission {
            allow: render(&self.allow)?,
            deny: render(&self.deny)?,
        })
    }
}

/// A permissions entry checked at `init`, ready to produce a [`Grant`] per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledEntry {
    account: String,
    publish: CompiledRules,
    subscribe: CompiledRules,
    allowed_connection_types: Vec<ConnectionType>,
    source_networks: Vec<String>,
    times: Vec<TimeRange>,
    locale: Option<String>,
    response: Option<ResponsePermission>,
    max_value_len: usize,
}

/// The placeholder a plugin fills with [`crate::AuthRequest::client_name`], by the
/// convention of the built-in plugins.
pub const CLIENT_NAME: &str = "client.name";

/// The parts of a request the subjects of `entries` read: the client's name
/// ([`RequestParts::CLIENT_NAME`]) when one of them uses `{{client.name}}`, else none. What
/// a plugin whose only reads are its entries' placeholders returns from
/// [`crate::Plugin::reads`].
pub fn request_parts<'a>(entries: impl IntoIterator<Item = &'a CompiledEntry>) -> RequestParts {
    let named = entries
        .into_iter()
        .flat_map(CompiledEntry::placeholders)
        .any(|p| p == CLIENT_NAME);
    if named {
        RequestParts::CLIENT_NAME
    } else {
        RequestParts::NONE
    }
}

impl<I> PermissionEntry<I> {
    /// Checks the account, every subject and every placeholder (against the ones the
    /// plugin offers), and the response permission. Call once at `init`.
    pub fn compile(&self, placeholders: &Placeholders) -> Result<CompiledEntry, PolicyError> {
        validate_account(&self.account)?;
        let response = match self.permissions.resp {
            None => None,
            Some(rule) if rule.max < -1 => return Err(PolicyError::InvalidResponseMax(rule.max)),
            Some(rule) => Some(ResponsePermission {
                max_msgs: rule.max,
                ttl_millis: u64::try_from(rule.ttl.as_millis()).unwrap_or(u64::MAX),
            }),
        };
        Ok(CompiledEntry {
            account: self.account.clone(),
            publish: CompiledRules::compile(
                &self.permissions.publish,
                SubjectKind::Publish,
                placeholders,
            )?,
            subscribe: CompiledRules::compile(
                &self.permissions.subscribe,
                SubjectKind::Subscribe,
                placeholders,
            )?,
            response,
            allowed_connection_types: self.allowed_connection_types.clone(),
            source_networks: self
                .source_networks
                .iter()
                .map(|n| parse_network(n).map(|net| net.to_string()))
                .collect::<Result<_, _>>()?,
            times: self
                .times
                .iter()
                .map(|t| validate_time_range(t).map(|()| t.clone()))
                .collect::<Result<_, _>>()?,
            locale: match &self.locale {
                Some(l) => {
                    validate_locale(l)?;
                    Some(l.clone())
                }
                None => None,
            },
            max_value_len: placeholders.max_value_len,
        })
    }
}

impl CompiledEntry {
    /// The target account.
    pub fn account(&self) -> &str {
        &self.account
    }

    fn templates(&self) -> impl Iterator<Item = &SubjectTemplate> {
        [&self.publish, &self.subscribe]
            .into_iter()
            .flat_map(|r| r.allow.iter().chain(&r.deny))
    }

    /// Whether no subject has a placeholder (the grant is the same for every client).
    pub fn is_static(&self) -> bool {
        self.templates().all(SubjectTemplate::is_static)
    }

    /// Every placeholder its subjects use (repeats included): what a plugin must read to
    /// fill them ([`crate::Plugin::reads`], [`crate::Host::verify_jwt_claims`]).
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.templates().flat_map(|t| {
            t.parts.iter().filter_map(|p| match p {
                Part::Placeholder(name) => Some(name.as_str()),
                Part::Literal(_) => None,
            })
        })
    }

    /// Builds the grant, filling each `{{name}}` with `fill(name)`. Any missing or unsafe
    /// value fails the whole grant: a partial grant could allow more than intended (a
    /// dropped `deny`) or less than the client needs, and either is a silent surprise.
    ///
    /// The grant's `name`, `expires_at` and `proxy_required` are left for the plugin.
    pub fn grant(&self, fill: impl Fn(&str) -> Option<String>) -> Result<Grant, PolicyError> {
        Ok(Grant {
            account: self.account.clone(),
            publish: self.publish.render(&fill, self.max_value_len)?,
            subscribe: self.subscribe.render(&fill, self.max_value_len)?,
            response: self.response,
            allowed_connection_types: self.allowed_connection_types.clone(),
            source_networks: self.source_networks.clone(),
            times: self.times.clone(),
            locale: self.locale.clone(),
            ..Grant::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn placeholders() -> Placeholders {
        Placeholders::new(["name", "client.name", "claims.*"])
    }

    fn entry(value: serde_json::Value) -> PermissionEntry {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn entry_shape_and_defaults() {
        let e = entry(json!({
            "account": "DEVICES",
            "permissions": {
                "pub": {"allow": ["a.>"]},
                "resp": {"ttl": "5s"}
            }
        }));
        assert_eq!(e.permissions.resp.unwrap().max, 1);
        assert_eq!(e.permissions.resp.unwrap().ttl, Duration::from_secs(5));
        let e = entry(json!({"account": "A", "permissions": {"resp": {"max": 3, "ttl": 250}}}));
        assert_eq!(e.permissions.resp.unwrap().ttl, Duration::from_millis(250));
        assert_eq!(e.permissions.resp.unwrap().max, 3);
        assert_eq!(
            entry(json!({"account": "A", "permissions": {"resp": {}}}))
                .permissions
                .resp,
            Some(ResponseRule::default())
        );

        // Typos are errors, not silently ignored rules.
        for bad in [
            json!({"account": "A", "permissions": {"pub": {"alow": ["x"]}}}),
            json!({"account": "A", "permissions": {"publish": {"allow": ["x"]}}}),
            json!({"account": "A", "permisions": {}}),
            json!({"account": "A", "permissions": {"resp": {"ttl": "5 seconds"}}}),
            json!({"account": "A", "permissions": {"resp": {"ttl": true}}}),
        ] {
            assert!(
                serde_json::from_value::<PermissionEntry>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn flattened_identity_and_round_trip() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Id {
            public_key: String,
        }
        let map: BTreeMap<String, PermissionEntry<Id>> = serde_json::from_value(json!({
            "dev": {"public_key": "UABC", "account": "A", "permissions": {"pub": {"allow": ["x"]}}}
        }))
        .unwrap();
        assert_eq!(map["dev"].identity.public_key, "UABC");
        let back = serde_json::to_value(&map).unwrap();
        assert_eq!(back["dev"]["public_key"], "UABC");
        assert!(
            serde_json::from_value::<BTreeMap<String, PermissionEntry<Id>>>(json!({
                "dev": {"public_key": "U", "account": "A", "permissions": {}, "extra": 1}
            }))
            .is_err()
        );
    }

    #[test]
    fn subjects() {
        for ok in [
            "a",
            "a.b",
            "a.*.c",
            "a.>",
            ">",
            "*",
            "_INBOX.>",
            "$SYS.REQ.x",
            "a-b_c.d",
        ] {
            validate_subject(ok, SubjectKind::Publish).unwrap();
            validate_subject(ok, SubjectKind::Subscribe).unwrap();
        }
        for bad in [
            "", ".a", "a.", "a..b", "a\tb", "a.>.b", "a*", "a.b>", "a\u{7}", "a.> q x", "a ", " q",
            "a  q", "a q\n",
        ] {
            assert!(
                validate_subject(bad, SubjectKind::Subscribe).is_err(),
                "{bad:?}"
            );
            assert!(
                validate_subject(bad, SubjectKind::Publish).is_err(),
                "{bad:?}"
            );
        }
        // Queue groups only in subscribe permissions.
        validate_subject("jobs.> workers", SubjectKind::Subscribe).unwrap();
        validate_subject("jobs.> eu.workers", SubjectKind::Subscribe).unwrap();
        assert!(validate_subject("jobs.> workers", SubjectKind::Publish).is_err());
        // nats-server refuses the user JWT for these queue groups.
        for bad in [
            "jobs.> workers.",
            "jobs.> .workers",
            "jobs.> a..b",
            "jobs.> ",
        ] {
            assert!(
                validate_subject(bad, SubjectKind::Subscribe).is_err(),
                "{bad:?}"
            );
        }
    }

    /// The byte-wise fast paths accept exactly what the char-by-char checks accept, on
    /// every string of up to five characters from an alphabet of each kind of character
    /// the rules treat apart (non-ASCII only ever takes the slow path).
    #[test]
    fn fast_paths_agree_with_the_char_by_char_checks() {
        const ALPHABET: [char; 9] = ['a', '.', '*', '>', ' ', '\t', '\u{7f}', 'é', '\u{a0}'];
        let mut strings = vec![String::new()];
        let mut last = strings.clone();
        for _ in 0..5 {
            last = last
                .iter()
                .flat_map(|s| ALPHABET.iter().map(move |c| format!("{s}{c}")))
                .collect();
            strings.extend(last.iter().cloned());
        }
        assert_eq!(strings.len(), 66_430);
        for s in &strings {
            for kind in [SubjectKind::Publish, SubjectKind::Subscribe] {
                let slow = subject_problem(s, kind).is_ok();
                let fast = plainly_valid(s, kind);
                assert!(
                    !fast || slow,
                    "{s:?} {kind:?}: fast path accepts what is invalid"
                );
                if s.is_ascii() {
                    assert_eq!(fast, slow, "{s:?} {kind:?}");
                }
                assert_eq!(validate_subject(s, kind).is_ok(), slow, "{s:?} {kind:?}");
            }
            for max in [1, 3, 5] {
                let slow = value_problem(s, max).is_ok();
                let fast = plain_value(s, max);
                assert!(!fast || slow, "{s:?} max {max}");
                if s.is_ascii() {
                    assert_eq!(fast, slow, "{s:?} max {max}");
                }
                assert_eq!(
                    check_value(s, max),
                    value_problem(s, max),
                    "{s:?} max {max}"
                );
            }
        }
    }

    #[test]
    fn templates_are_checked_at_compile_time() {
        let p = placeholders();
        for ok in [
            "d.{{name}}",
            "d.{{ name }}.x",
            "d.dev-{{name}}",
            "{{claims.device_id}}.>",
        ] {
            SubjectTemplate::parse(ok, SubjectKind::Publish, &p).unwrap();
        }
        SubjectTemplate::parse("jobs.> {{name}}", SubjectKind::Subscribe, &p).unwrap();
        let err = SubjectTemplate::parse("d.{{nkey}}", SubjectKind::Publish, &p).unwrap_err();
        assert_eq!(
            err.to_string(),
            "subject \"d.{{nkey}}\" uses unknown placeholder {{nkey}} \
             (this plugin offers: {{name}}, {{client.name}}, {{claims.*}})"
        );
        assert!(matches!(
            SubjectTemplate::parse("d.{{claims.}}", SubjectKind::Publish, &p),
            Err(PolicyError::UnknownPlaceholder { .. })
        ));
        for bad in [
            "d.{{name",
            "d.{{}}",
            "d.{{na me}}",
            "d..{{name}}",
            "d.{{name}}*",
            "d.>.{{name}}",
            "d {{name}}",
        ] {
            assert!(
                matches!(
                    SubjectTemplate::parse(bad, SubjectKind::Publish, &p),
                    Err(PolicyError::InvalidSubject { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn grant_fills_and_sanitises() {
        let e = entry(json!({
            "account": "DEVICES",
            "permissions": {
                "pub": {"allow": ["state.{{claims.device_id}}", "_INBOX.>"], "deny": ["state.{{claims.device_id}}.secret"]},
                "sub": {"allow": ["cmd.{{name}}"]},
                "resp": {"max": 1, "ttl": "5s"}
            }
        }));
        let c = e.compile(&placeholders()).unwrap();
        assert!(!c.is_static());
        assert_eq!(
            c.placeholders().collect::<Vec<_>>(),
            ["claims.device_id", "claims.device_id", "name"]
        );
        assert_eq!(request_parts([&c]), RequestParts::NONE);
        let named = entry(
            json!({"account": "A", "permissions": {"sub": {"allow": ["x.{{client.name}}"]}}}),
        )
        .compile(&placeholders())
        .unwrap();
        assert_eq!(request_parts([&c, &named]), RequestParts::CLIENT_NAME);
        let grant = c
            .grant(|n| match n {
                "claims.device_id" => Some("dev-1".into()),
                "name" => Some("entry".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(grant.account, "DEVICES");
        assert_eq!(grant.publish.allow, ["state.dev-1", "_INBOX.>"]);
        assert_eq!(grant.publish.deny, ["state.dev-1.secret"]);
        assert_eq!(grant.subscribe.allow, ["cmd.entry"]);
        assert_eq!(
            grant.response,
            Some(ResponsePermission {
                max_msgs: 1,
                ttl_millis: 5000
            })
        );

        let long = "x".repeat(65);
        for (value, problem) in [
            ("", ValueProblem::Empty),
            ("a.b", ValueProblem::Forbidden('.')),
            ("*", ValueProblem::Forbidden('*')),
            ("a>", ValueProblem::Forbidden('>')),
            ("a b", ValueProblem::Whitespace),
            ("a\nb", ValueProblem::Whitespace),
            ("a\u{0}", ValueProblem::Whitespace),
            // Invisible: the same-looking subject as "sensor-a".
            ("sensor-a\u{200B}", ValueProblem::Whitespace),
            ("\u{FEFF}sensor-a", ValueProblem::Whitespace),
            ("sensor\u{00AD}-a", ValueProblem::Whitespace),
            ("a\u{E0041}", ValueProblem::Whitespace),
            (long.as_str(), ValueProblem::TooLong(64)),
        ] {
            let err = c
                .grant(|n| {
                    Some(if n == "name" {
                        "ok".into()
                    } else {
                        value.to_string()
                    })
                })
                .unwrap_err();
            assert_eq!(
                err,
                PolicyError::BadValue {
                    subject: "state.{{claims.device_id}}".into(),
                    name: "claims.device_id".into(),
                    problem
                },
                "{value:?}"
            );
            assert!(
                value.len() < 2 || !err.to_string().contains(value),
                "value leaked: {err}"
            );
        }
        let err = c.grant(|_| None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "placeholder {{claims.device_id}} in \"state.{{claims.device_id}}\" has no value for this client"
        );
        let short = e.compile(&placeholders().max_value_len(3)).unwrap();
        assert!(short.grant(|_| Some("abcd".into())).is_err());
    }

    #[test]
    fn empty_allow_means_nothing() {
        let c = entry(json!({"account": "A", "permissions": {"sub": {"allow": ["x"]}, "pub": {"deny": ["y"]}}}))
            .compile(&placeholders())
            .unwrap();
        assert!(c.is_static());
        let g = c.grant(|_| None).unwrap();
        assert_eq!(
            g.publish,
            Permission {
                allow: vec![],
                deny: vec![">".into()]
            }
        );
        assert_eq!(
            g.subscribe,
            Permission {
                allow: vec!["x".into()],
                deny: vec![]
            }
        );
        assert_eq!(g.response, None);
    }

    #[test]
    fn compile_rejects_bad_entries() {
        let p = placeholders();
        assert_eq!(
            entry(json!({"account": "", "permissions": {}})).compile(&p),
            Err(PolicyError::InvalidAccount)
        );
        assert_eq!(
            entry(json!({"account": "A", "permissions": {"resp": {"max": -2}}})).compile(&p),
            Err(PolicyError::InvalidResponseMax(-2))
        );
        assert!(
            entry(json!({"account": "A", "permissions": {"sub": {"deny": ["a..b"]}}}))
                .compile(&p)
                .is_err()
        );
    }
}
