//! The YAML configuration. The `permissions` section keeps the shape operators already
//! write in Helm values (`oauth2`/`mtls`/`nkey` maps of named entries, a `noauth` entry),
//! so a chart can render it straight into a ConfigMap; each section is handed verbatim to
//! the plugin that reads it, which validates it at load time. `plugins` and `routes`
//! say which plugins decide which requests; without `routes`, one default route per
//! mode reproduces the fixed routing of contract 0.1.0.
//!
//! Secrets never live here: only paths to seed files (or environment variables).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::identity::oauth::JwksConfig;
pub use crate::runtime::capabilities::http::{AllowedHost, OutboundConfig};

use crate::pipeline::routing::{Mode, RouteConfig, RouteMatch};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config {path}: {key}: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

/// Environment variable that overrides where the built-in plugins live.
pub const PLUGIN_DIR_ENV: &str = "AUTH_CALLOUT_PLUGIN_DIR";
/// Environment variable that overrides `mtls.ca_file`.
pub const MTLS_CA_ENV: &str = "AUTH_CALLOUT_MTLS_CA_PATH";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// NATS servers (clusters) to serve; each gets its own connection and subscription.
    pub nats: Vec<NatsConfig>,
    /// Issuer account seed (`SA...`) that signs user and response JWTs. Its public key
    /// is `auth_callout.issuer` in nats-server's config.
    #[serde(default)]
    pub issuer_seed_file: Option<PathBuf>,
    /// Optional curve seed (`SX...`); its public key is `auth_callout.xkey`.
    #[serde(default)]
    pub xkey_seed_file: Option<PathBuf>,
    /// Operator mode: nats-server trusts an operator, accounts are JWTs, and each user
    /// JWT is signed by the key of the account it places the user in. Absent: config
    /// mode (`authorization { auth_callout { ... } }` in nats-server's config).
    #[serde(default)]
    pub operator: Option<OperatorConfig>,
    /// Directory of the built-in `<name>.wasm` plugins; relative to the config file.
    #[serde(default)]
    pub plugin_dir: Option<PathBuf>,
    /// The plugins. Default: the built-in plugin of every mode that has a `permissions`
    /// section.
    #[serde(default)]
    pub plugins: Option<Vec<PluginConfig>>,
    /// Which plugin chain decides which request, first match wins. Default: one route
    /// per mode (`oauth2`, `mtls`, `nkey`, `password`, `noauth`) with its plugins.
    #[serde(default)]
    pub routes: Option<Vec<RouteConfig>>,
    /// OAuth2 token validation (the `verify-jwt` capability). Needed by the oauth2 mode.
    #[serde(default)]
    pub jwks: Option<JwksConfig>,
    /// Client-certificate verification (the `verify-certificate-chain` capability).
    #[serde(default)]
    pub mtls: Option<MtlsConfig>,
    /// Plugins' outbound HTTP (to the hosts each plugin's `allowed_outbound_hosts` lists).
    #[serde(default)]
    pub outbound_http: OutboundConfig,
    #[serde(default)]
    pub permissions: Permissions,
    #[serde(default)]
    pub limits: Limits,
    /// Repeat connects with the same credential skip the plugin (see `cache.rs`).
    #[serde(default)]
    pub decision_cache: DecisionCacheConfig,
    /// Identities to refuse from now on, and closing their live connections.
    #[serde(default)]
    pub revocation: Option<RevocationConfig>,
    /// Operations listener: `/metrics`, `/healthz`, `/readyz`.
    #[serde(default = "default_http_listen")]
    pub http_listen: String,
    /// How often the config and plugin files are checked for changes (hot reload).
    /// Polling, not inotify: Kubernetes updates a mounted ConfigMap by swapping a
    /// symlink, which file-event watchers routinely miss.
    #[serde(
        default = "default_reload_interval",
        with = "nats_callout_sdk::format::duration"
    )]
    pub reload_interval: Duration,
    /// Where to find the config's relative paths; set by [`Config::load`].
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The plugins to load and the routes through them, worked out by [`Config::parse`].
    #[serde(skip)]
    topology: Topology,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Name used in logs and metrics.
    #[serde(default = "default_name")]
    pub name: String,
    /// Server URL(s), comma-separated for a cluster.
    pub url: String,
    /// NATS credential seed (`SU...`) of the callout's own user (listed in `auth_users`).
    #[serde(default)]
    pub nkey_seed_file: Option<PathBuf>,
    #[serde(default)]
    pub user: Option<String>,
    /// File holding the password of `user` (environment: `AUTH_CALLOUT_NATS_PASSWORD`).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Operator mode: a `.creds` file (user JWT and seed) of the callout's user, one
    /// of the callout account's `auth_users`.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    #[serde(default = "default_queue_group")]
    pub queue_group: String,
    #[serde(default = "default_subject")]
    pub subject: String,
    /// TLS to this server; required when its client port demands TLS, as the client port
    /// of a dedicated mTLS cluster does (`tls { verify: true }`: the callout's own
    /// connection must then present a certificate too).
    #[serde(default)]
    pub tls: Option<NatsTlsConfig>,
    /// A user of nats-server's system account, to close the live connections of revoked
    /// identities (`$SYS.REQ.SERVER.<id>.KICK`). Without it, a revoked identity is
    /// refused at its next connect only.
    #[serde(default)]
    pub system_user: Option<SystemUserConfig>,
    /// Publish every decision on this subject as a JSON event (see `nats/audit.rs`);
    /// the callout's user must be allowed to publish there.
    #[serde(default)]
    pub audit_subject: Option<String>,
}

/// The `operator` section (see `pipeline/accounts.rs`). Facts about accounts come from
/// their JWTs, as the operator's tooling exports them (`nsc describe account NAME
/// --raw`, or what `nats-callout operator init` writes); seeds come from files or the
/// environment, never from here.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// The callout account's JWT: its `authorization` block (`auth_users`,
    /// `allowed_accounts`, `xkey`) and signing keys. `issuer_seed_file` is this
    /// account's key or one of its signing keys.
    pub callout_account_jwt_file: PathBuf,
    /// The accounts grants may place users in, by the name plugins and `permissions`
    /// use in `account:`.
    #[serde(default)]
    pub accounts: BTreeMap<String, TargetAccountConfig>,
}

/// One account users are placed in.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetAccountConfig {
    /// The account's JWT: its public key and signing keys (a scoped one supplies the
    /// permissions of the users it signs).
    pub jwt_file: PathBuf,
    /// The seed (`SA...`) of the key that signs its users: one of its signing keys (or
    /// its own key). The environment variable `signing_key_env` wins over the file.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    #[serde(default)]
    pub signing_key_env: Option<String>,
}

/// The system-account login of one NATS server entry: `user` with `password_file`, or
/// `nkey_seed_file`. Relative paths are relative to the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemUserConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub nkey_seed_file: Option<PathBuf>,
    /// Operator mode: a `.creds` file of a system-account user.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

/// The `revocation` section (see `pipeline/revocation.rs`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationConfig {
    /// A revocation list, re-read when it changes (checked every `reload_interval`).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// A NATS KV bucket of revocation documents, watched through the first `nats` entry.
    #[serde(default)]
    pub kv_bucket: Option<String>,
    /// Admitted connections remembered per NATS server entry, to close them when their
    /// identity is revoked; the least recently admitted are forgotten first. 100,000
    /// entries of about 300 bytes: 30 MiB at most.
    #[serde(default = "RevocationConfig::default_tracked")]
    pub max_tracked_connections: usize,
}

impl RevocationConfig {
    pub const DEFAULT_TRACKED: usize = 100_000;

    fn default_tracked() -> usize {
        Self::DEFAULT_TRACKED
    }
}

/// TLS settings of one NATS connection. Relative paths are relative to the config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsTlsConfig {
    /// CA bundle that issued the server's certificate; default: the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for servers that verify clients; with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// The `mtls` section. nats-server has verified a client's chain before the callout sees
/// it (`verify: true`); this bundle makes the callout check it again, against the CAs the
/// operator means for device identities, as defence in depth: a server whose `ca_file`
/// trusts more (another CA for other listeners, a misconfiguration) admits no one here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsConfig {
    /// PEM file of the CAs that issue client certificates (environment:
    /// `AUTH_CALLOUT_MTLS_CA_PATH`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// One entry of `plugins:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// How routes, logs and metrics name it. Default: `<mode>/<file name>` with `mode`,
    /// else the file name without `.wasm` (or the built-in's name).
    #[serde(default)]
    pub name: Option<String>,
    /// A `.wasm` component; a relative path is relative to the config file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A built-in plugin: `<plugin_dir>/<builtin>.wasm` ([`BUILTINS`]).
    #[serde(default)]
    pub builtin: Option<String>,
    /// Without `routes`: the default route this plugin joins, after the plugins listed
    /// before it.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// The `permissions` section its `init` gets. Default: the one of its `mode`, or of
    /// the built-in's name.
    #[serde(default)]
    pub permissions: Option<String>,
    /// Free-form settings handed to the plugin's `init` as `settings`.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// Overrides of the global `limits` for this plugin.
    #[serde(default)]
    pub limits: PluginLimits,
    /// Where the plugin may send HTTP requests (`https://registry.example.com`); none:
    /// every request is denied.
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<AllowedHost>,
    /// Secrets its `init` gets (`client_secret: {env: IDP_SECRET}`), read at every load.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
}

/// Where one of a plugin's secrets comes from: a file (a mounted Kubernetes Secret) or an
/// environment variable (a `secretKeyRef`), never the YAML itself, which is a ConfigMap
/// that whoever may read the namespace reads. Set exactly one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// A relative path is relative to the config file. Trailing whitespace is dropped
    /// (`echo secret > file` leaves a newline).
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default)]
    pub env: Option<String>,
}

/// Where a plugin's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A path as written in the config.
    Path(PathBuf),
    /// `<plugin_dir>/<name>.wasm`.
    Builtin(String),
}

/// A plugin to load, with everything its entry leaves to defaults worked out.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    pub name: String,
    pub source: Source,
    /// The name of the `permissions` section its `init` gets, if any.
    pub permissions: Option<String>,
    pub settings: serde_json::Value,
    pub limits: PluginLimits,
    pub allowed_outbound_hosts: Vec<AllowedHost>,
    pub secrets: BTreeMap<String, SecretSource>,
    /// Where the config declares it, for messages: `plugins[2]`, or the `permissions`
    /// section or route that implies a built-in.
    pub origin: String,
}

/// A route, its plugins resolved to indices into [`Config::plugin_specs`].
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub name: String,
    pub matches: RouteMatch,
    pub plugins: Vec<usize>,
    /// `routes[1]`, or `default route nkey`, for messages.
    pub origin: String,
}

#[derive(Debug, Clone, Default)]
struct Topology {
    plugins: Vec<PluginSpec>,
    routes: Vec<RouteSpec>,
}

/// Per-plugin limits; unset fields take the global `limits`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    #[serde(default, with = "nats_callout_sdk::format::duration::option")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub memory_bytes: Option<usize>,
    #[serde(default)]
    pub instances: Option<usize>,
    /// Instruction budget of one call (wasmtime fuel): a deterministic bound, unlike
    /// the wall-clock timeout. Unset: unmetered.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Bytes of the plugin's cache (`cache-set`); 0 turns it off.
    #[serde(default)]
    pub cache_bytes: Option<usize>,
    /// The longest an entry of the plugin's cache lives, whatever the plugin asks.
    #[serde(default, with = "nats_callout_sdk::format::duration::option")]
    pub cache_ttl: Option<Duration>,
}

/// The decision cache (see `cache.rs`): `ttl: 0` turns it off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionCacheConfig {
    /// Upper bound of an entry's life; the credential's own expiry bounds it further.
    /// A minute absorbs reconnect storms while a revoked token (that still verifies)
    /// is honoured at most this long after revocation at the provider.
    #[serde(with = "nats_callout_sdk::format::duration")]
    pub ttl: Duration,
    /// Entries kept (least recently used evicted): ~1 KiB each.
    pub max_entries: usize,
}

impl Default for DecisionCacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60),
            max_entries: 100_000,
        }
    }
}

/// A subject one can publish on: non-empty tokens, no wildcards, no whitespace.
fn is_publish_subject(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|t| !t.is_empty() && t != "*" && t != ">" && !t.chars().any(char::is_whitespace))
}

/// `user[:password]@` in a URL's authority.
fn url_has_userinfo(url: &str) -> bool {
    let rest = url.trim().split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .contains('@')
}

/// The `permissions` sections by name (`oauth2`, `mtls`, `nkey`, `password`, `noauth`,
/// or any a plugin names): each opaque to the host, the plugin that reads it owns its
/// schema.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Permissions(pub std::collections::BTreeMap<String, serde_json::Value>);

impl Permissions {
    /// A section, unless absent or `null`.
    pub fn section(&self, name: &str) -> Option<&serde_json::Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Requests decided at once per NATS connection. Decisions are microseconds of CPU,
    /// so this only bounds bursts (a cluster restart reconnects every client at once):
    /// past it, messages wait in the subscription buffer instead of piling up tasks.
    pub max_concurrent: usize,
    /// Warm instances kept per plugin. Instances are single-threaded; more than the
    /// number of cores buys little, fewer makes concurrent requests instantiate anew.
    pub instances_per_plugin: usize,
    /// Wall-clock budget of one plugin call. nats-server gives the whole exchange 2 s
    /// by default; a plugin that needs more than a fraction of it is broken.
    #[serde(with = "nats_callout_sdk::format::duration")]
    pub plugin_timeout: Duration,
    /// Linear memory a plugin instance may grow to. The built-in plugins need under
    /// 2 MiB; 64 MiB leaves room for large policies while bounding a runaway plugin.
    pub plugin_memory_bytes: usize,
    /// Accepted clock skew between nats-server and this host on the request's `exp`.
    #[serde(with = "nats_callout_sdk::format::duration")]
    pub request_leeway: Duration,
    /// Bytes of each plugin's cache: 4 MiB holds tens of thousands of lookups of a few
    /// dozen bytes, a fleet's worth, at a bounded cost per plugin.
    pub plugin_cache_bytes: usize,
    /// The longest a plugin's cache keeps an entry: a device disabled in a registry is
    /// refused again within this, however long the plugin asked to keep it.
    #[serde(with = "nats_callout_sdk::format::duration")]
    pub plugin_cache_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrent: 256,
            instances_per_plugin: 4,
            plugin_timeout: Duration::from_millis(250),
            plugin_memory_bytes: 64 << 20,
            request_leeway: Duration::from_secs(2),
            plugin_cache_bytes: 4 << 20,
            plugin_cache_ttl: Duration::from_secs(300),
        }
    }
}

/// The plugins that ship with the service (`scripts/setup` builds them, the image copies
/// them to its plugin dir): `builtin: NAME` in a plugin entry. The modes' own plugins and
/// `introspection`, which joins no default route: routes name it.
pub const BUILTINS: [&str; 7] = [
    "oauth2",
    "mtls",
    "nkey",
    "password",
    "jwt",
    "noauth",
    "introspection",
];

fn default_http_listen() -> String {
    "0.0.0.0:9090".into()
}
fn default_reload_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_name() -> String {
    "main".into()
}
fn default_queue_group() -> String {
    "nats-callout".into()
}
fn default_subject() -> String {
    "$SYS.REQ.USER.AUTH".into()
}

/// What a plugin or route name may be: it names metric series and log fields.
const NAME_RULE: &str = "must be 1 to 64 letters, digits, `_`, `-`, `/` or `#`";

fn is_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '#'))
}

/// `limits.max_concurrent` at most: past a few thousand requests in flight per
/// connection, more only moves the queue from the subscription buffer into tasks.
const MAX_CONCURRENT: usize = 65_536;
/// `decision_cache.max_entries` at most: entries take ~1 KiB, and the cache's index is
/// allocated up front, so a typo must not reserve gigabytes on a hot reload.
const MAX_CACHE_ENTRIES: usize = 1_000_000;
/// A plugin's linear memory: enough to run at all, and at most what 32-bit wasm can
/// address.
const MIN_PLUGIN_MEMORY: usize = 1 << 20;
const MAX_PLUGIN_MEMORY: usize = 4 << 30;
/// nats-server waits 2 s for the whole exchange by default; a call allowed a minute is
/// a configuration mistake.
const MAX_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// A plugin's cache at most: its bytes are the host's memory, per plugin.
const MAX_PLUGIN_CACHE_BYTES: usize = 256 << 20;
/// A plugin's cache entry lives at most a day: what it caches came from elsewhere and
/// goes stale there.
const MAX_PLUGIN_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);
/// File polling below this is busy work (and zero would stop the reload task).
const MIN_RELOAD_INTERVAL: Duration = Duration::from_millis(100);

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut cfg = Self::parse(&text, path)?;
        cfg.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(cfg)
    }

    /// Parse and validate; `origin` only labels errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let path = origin.display().to_string();
        let cfg: Config = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut cfg = cfg;
        cfg.topology = cfg
            .topology()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: path.clone(),
                key,
                message,
            })?;
        cfg.validate(&path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let invalid = |key: String, message: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message: message.to_owned(),
        };
        if self.nats.is_empty() {
            return Err(invalid("nats".into(), "at least one NATS server is needed"));
        }
        for (i, n) in self.nats.iter().enumerate() {
            if n.url.trim().is_empty() {
                return Err(invalid(format!("nats[{i}].url"), "must not be empty"));
            }
            // async-nats logs server addresses (at debug), userinfo included.
            if n.url.split(',').any(url_has_userinfo) {
                return Err(invalid(
                    format!("nats[{i}].url"),
                    "must not carry credentials (they would be logged): use user and \
                     password_file, or nkey_seed_file",
                ));
            }
            if n.nkey_seed_file.is_some() && n.user.is_some() {
                return Err(invalid(
                    format!("nats[{i}]"),
                    "set either nkey_seed_file or user/password_file, not both",
                ));
            }
            if let Some(t) = &n.tls
                && t.cert_file.is_some() != t.key_file.is_some()
            {
                return Err(invalid(
                    format!("nats[{i}].tls"),
                    "cert_file and key_file go together",
                ));
            }
            if let Some(u) = &n.system_user
                && (u.nkey_seed_file.is_some() == u.user.is_some()
                    || (u.password_file.is_some() && u.user.is_none()))
            {
                return Err(invalid(
                    format!("nats[{i}].system_user"),
                    "set either user (with password_file, or the password in \
                     AUTH_CALLOUT_SYSTEM_PASSWORD), or nkey_seed_file",
                ));
            }
            if let Some(subject) = &n.audit_subject
                && !is_publish_subject(subject)
            {
                return Err(invalid(
                    format!("nats[{i}].audit_subject"),
                    "must be a subject to publish on: dot-separated tokens, no wildcards \
                     or spaces",
                ));
            }
            if self.nats[..i].iter().any(|o| o.name == n.name) {
                return Err(invalid(
                    format!("nats[{i}].name"),
                    "duplicate name; give each server its own",
                ));
            }
        }
        if let Some(j) = &self.jwks {
            j.validate()
                .map_err(|(key, message)| ConfigError::Invalid {
                    path: path.to_owned(),
                    key,
                    message,
                })?;
        }
        let l = &self.limits;
        let count = |key: String, v: usize, max: usize| {
            if (1..=max).contains(&v) {
                Ok(())
            } else {
                Err(invalid(key, &format!("must be between 1 and {max}")))
            }
        };
        let memory = |key: String, v: usize| {
            if (MIN_PLUGIN_MEMORY..=MAX_PLUGIN_MEMORY).contains(&v) {
                Ok(())
            } else {
                Err(invalid(key, "must be between 1 MiB and 4 GiB"))
            }
        };
        let timeout = |key: String, v: Duration| {
            if !v.is_zero() && v <= MAX_PLUGIN_TIMEOUT {
                Ok(())
            } else {
                Err(invalid(key, "must be greater than zero and at most 60s"))
            }
        };
        count(
            "limits.max_concurrent".into(),
            l.max_concurrent,
            MAX_CONCURRENT,
        )?;
        count(
            "limits.instances_per_plugin".into(),
            l.instances_per_plugin,
            crate::runtime::MAX_INSTANCES,
        )?;
        timeout("limits.plugin_timeout".into(), l.plugin_timeout)?;
        memory("limits.plugin_memory_bytes".into(), l.plugin_memory_bytes)?;
        if let Some(r) = &self.revocation {
            if let Some(b) = &r.kv_bucket
                && (b.is_empty()
                    || !b
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            {
                return Err(invalid(
                    "revocation.kv_bucket".into(),
                    "a KV bucket name: letters, digits, - and _",
                ));
            }
            count(
                "revocation.max_tracked_connections".into(),
                r.max_tracked_connections,
                MAX_CACHE_ENTRIES,
            )?;
        }
        let mut instances = 0;
        for p in self.plugin_specs() {
            let key = |k: &str| format!("{}.limits.{k}", p.origin);
            let pl = &p.limits;
            if let Some(n) = pl.instances {
                count(key("instances"), n, crate::runtime::MAX_INSTANCES)?;
            }
            if let Some(m) = pl.memory_bytes {
                memory(key("memory_bytes"), m)?;
            }
            if let Some(t) = pl.timeout {
                timeout(key("timeout"), t)?;
            }
            if pl.fuel == Some(0) {
                return Err(invalid(key("fuel"), "must be at least 1"));
            }
            if pl.cache_bytes.is_some_and(|b| b > MAX_PLUGIN_CACHE_BYTES) {
                return Err(invalid(key("cache_bytes"), "must be at most 256 MiB"));
            }
            if pl.cache_ttl.is_some_and(|t| t > MAX_PLUGIN_CACHE_TTL) {
                return Err(invalid(key("cache_ttl"), "must be at most 24h"));
            }
            instances += pl.instances.unwrap_or(l.instances_per_plugin);
        }
        // The oauth2 plugin verifies every token against the JWKS; without one it could only
        // deny. (The introspection plugin reads the same permissions without a JWKS.)
        if self.jwks.is_none()
            && let Some(p) = self
                .plugin_specs()
                .iter()
                .find(|p| p.source == Source::Builtin("oauth2".into()))
        {
            return Err(invalid(
                "jwks".into(),
                &format!(
                    "the oauth2 plugin ({}) needs a jwks section (issuer, audience, optionally url)",
                    p.origin
                ),
            ));
        }
        if instances > crate::runtime::MAX_INSTANCES {
            return Err(invalid(
                "limits".into(),
                &format!(
                    "{instances} warm instances over all plugins, more than the {} the \
                     runtime has room for: lower instances_per_plugin or plugins[].limits.instances",
                    crate::runtime::MAX_INSTANCES
                ),
            ));
        }
        count(
            "decision_cache.max_entries".into(),
            self.decision_cache.max_entries,
            MAX_CACHE_ENTRIES,
        )?;
        if l.plugin_cache_bytes > MAX_PLUGIN_CACHE_BYTES {
            return Err(invalid(
                "limits.plugin_cache_bytes".into(),
                "must be at most 256 MiB",
            ));
        }
        if l.plugin_cache_ttl > MAX_PLUGIN_CACHE_TTL {
            return Err(invalid(
                "limits.plugin_cache_ttl".into(),
                "must be at most 24h",
            ));
        }
        let o = &self.outbound_http;
        count(
            "outbound_http.max_request_bytes".into(),
            o.max_request_bytes,
            16 << 20,
        )?;
        count(
            "outbound_http.max_response_bytes".into(),
            o.max_response_bytes,
            64 << 20,
        )?;
        if o.max_redirects > 10 {
            return Err(invalid(
                "outbound_http.max_redirects".into(),
                "must be at most 10",
            ));
        }
        if self.reload_interval < MIN_RELOAD_INTERVAL {
            return Err(invalid("reload_interval".into(), "must be at least 100ms"));
        }
        Ok(())
    }

    /// The plugins to load, each once, in the order the config names them.
    pub fn plugin_specs(&self) -> &[PluginSpec] {
        &self.topology.plugins
    }

    /// The routes, in order; none are empty.
    pub fn route_specs(&self) -> &[RouteSpec] {
        &self.topology.routes
    }

    /// Whether some route may take credentials of `kind`, as far as the config says
    /// without loading plugins: a route that names it, or one that names no kinds.
    pub fn may_route(&self, kind: nats_callout_sdk::CredentialKind) -> bool {
        self.topology
            .routes
            .iter()
            .any(|r| r.matches.credentials.is_empty() || r.matches.credentials.contains(&kind))
    }

    /// Where a plugin's component is: a relative `path` against the config file, a
    /// built-in in [`Config::plugin_dir`].
    pub fn plugin_path(&self, spec: &PluginSpec) -> PathBuf {
        match &spec.source {
            Source::Path(p) => self.resolve(p),
            Source::Builtin(name) => self.plugin_dir().join(format!("{name}.wasm")),
        }
    }

    /// The values of a plugin's secrets, read now: a reload reads them again, so a
    /// rotated secret takes effect with the next reload. Errors name the key and never
    /// hold the value.
    pub fn read_secrets(
        &self,
        spec: &PluginSpec,
    ) -> Result<BTreeMap<String, nats_callout_sdk::Secret>, (String, String)> {
        let mut values = BTreeMap::new();
        for (name, source) in &spec.secrets {
            let at = format!("{}.secrets.{name}", spec.origin);
            let value = match (&source.file, &source.env) {
                (Some(file), _) => {
                    let path = self.resolve(file);
                    std::fs::read_to_string(&path)
                        .map_err(|e| (at.clone(), format!("cannot read {}: {e}", path.display())))?
                        .trim_end()
                        .to_owned()
                }
                (None, Some(var)) => std::env::var(var).map_err(|_| {
                    (
                        at.clone(),
                        format!("the environment variable {var} is not set (or not UTF-8)"),
                    )
                })?,
                (None, None) => String::new(),
            };
            if value.is_empty() {
                return Err((at, "is empty".into()));
            }
            values.insert(name.clone(), nats_callout_sdk::Secret::new(value));
        }
        Ok(values)
    }

    /// Works out the plugins and routes from `plugins`, `routes` and `permissions`, or
    /// names the key that makes no sense.
    fn topology(&self) -> Result<Topology, (String, String)> {
        let builtin_names = || BUILTINS.join(", ");
        let with_routes = self.routes.is_some();
        let mut plugins: Vec<PluginSpec> = Vec::new();
        let mut defaulted = Vec::new();
        for (i, p) in self.plugins.iter().flatten().enumerate() {
            let origin = format!("plugins[{i}]");
            let source = match (&p.path, &p.builtin) {
                (Some(path), None) if !path.as_os_str().is_empty() => Source::Path(path.clone()),
                (None, Some(b)) if is_name(b) => Source::Builtin(b.clone()),
                (None, Some(_)) => {
                    return Err((
                        format!("{origin}.builtin"),
                        format!("must be a plugin name such as {}", builtin_names()),
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err((origin, "set either path or builtin, not both".into()));
                }
                _ => {
                    return Err((
                        origin,
                        format!(
                            "needs a path (a .wasm component) or builtin ({})",
                            builtin_names()
                        ),
                    ));
                }
            };
            for (key, source) in &p.secrets {
                let at = format!("{origin}.secrets.{key}");
                if !is_name(key) || key.contains(['/', '#']) {
                    return Err((
                        at,
                        "a secret's name must be 1 to 64 letters, digits, `_` or `-`".into(),
                    ));
                }
                match (&source.file, &source.env) {
                    (Some(f), None) if !f.as_os_str().is_empty() => {}
                    (None, Some(e)) if !e.is_empty() => {}
                    _ => return Err((at, "set either file or env (not both)".into())),
                }
            }
            if with_routes && p.mode.is_some() {
                return Err((
                    format!("{origin}.mode"),
                    "only without routes: list the plugin in a route's plugins instead".into(),
                ));
            }
            let stem = match &source {
                Source::Path(path) => path
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                Source::Builtin(b) => b.clone(),
            };
            let name = match (&p.name, p.mode) {
                (Some(n), _) => {
                    if !is_name(n) {
                        return Err((format!("{origin}.name"), NAME_RULE.into()));
                    }
                    n.clone()
                }
                (None, Some(mode)) => format!("{mode}/{stem}"),
                (None, None) => stem,
            };
            if let Some(other) = plugins.iter().find(|o| o.name == name)
                && (p.name.is_some() || !defaulted.contains(&other.name))
            {
                return Err((
                    format!("{origin}.name"),
                    format!("{name:?} is the name of {} too", other.origin),
                ));
            }
            let name = if plugins.iter().any(|o| o.name == name) {
                format!("{name}#{i}")
            } else {
                name
            };
            if p.name.is_none() {
                defaulted.push(name.clone());
            }
            let permissions = match (&p.permissions, p.mode, &source) {
                (Some(section), _, _) => {
                    if self.permissions.section(section).is_none() {
                        return Err((
                            format!("{origin}.permissions"),
                            format!("there is no permissions.{section} section"),
                        ));
                    }
                    Some(section.clone())
                }
                (None, Some(mode), _) => Some(mode.as_str().to_owned()),
                (None, None, Source::Builtin(b)) => Some(b.clone()),
                (None, None, Source::Path(_)) => None,
            };
            plugins.push(PluginSpec {
                name,
                source,
                permissions,
                settings: p.settings.clone(),
                limits: p.limits.clone(),
                allowed_outbound_hosts: p.allowed_outbound_hosts.clone(),
                secrets: p.secrets.clone(),
                origin,
            });
        }
        let implied = |mode: Mode, origin: String| PluginSpec {
            name: format!("{mode}/{mode}"),
            source: Source::Builtin(mode.as_str().to_owned()),
            permissions: Some(mode.as_str().to_owned()),
            settings: serde_json::Value::Null,
            limits: PluginLimits::default(),
            allowed_outbound_hosts: Vec::new(),
            secrets: BTreeMap::new(),
            origin,
        };
        let mut routes = Vec::new();
        match &self.routes {
            Some(list) => {
                for (i, r) in list.iter().enumerate() {
                    let origin = format!("routes[{i}]");
                    if !is_name(&r.name) {
                        return Err((format!("{origin}.name"), NAME_RULE.into()));
                    }
                    if let Some(j) = list[..i].iter().position(|o| o.name == r.name) {
                        return Err((
                            format!("{origin}.name"),
                            format!("{:?} is the name of routes[{j}] too", r.name),
                        ));
                    }
                    if r.plugins.is_empty() {
                        return Err((
                            format!("{origin}.plugins"),
                            "names no plugin: a route needs at least one".into(),
                        ));
                    }
                    let mut chain = Vec::new();
                    for (j, name) in r.plugins.iter().enumerate() {
                        let at = plugins.iter().position(|p| &p.name == name).or_else(|| {
                            let mode = Mode::ALL.into_iter().find(|m| m.as_str() == name)?;
                            plugins.push(PluginSpec {
                                name: name.clone(),
                                ..implied(mode, format!("{origin}.plugins[{j}]"))
                            });
                            Some(plugins.len() - 1)
                        });
                        let Some(at) = at else {
                            return Err((
                                format!("{origin}.plugins[{j}]"),
                                format!(
                                    "no plugin is named {name:?}: declare it under plugins,                                      or use a built-in ({})",
                                    builtin_names()
                                ),
                            ));
                        };
                        if chain.contains(&at) {
                            return Err((
                                format!("{origin}.plugins[{j}]"),
                                format!("{name:?} is in this chain already"),
                            ));
                        }
                        chain.push(at);
                    }
                    routes.push(RouteSpec {
                        name: r.name.clone(),
                        matches: r.matches.clone(),
                        plugins: chain,
                        origin,
                    });
                }
                if let Some(unused) = plugins.iter().find(|p| {
                    !routes
                        .iter()
                        .any(|r| r.plugins.iter().any(|&i| plugins[i].name == p.name))
                }) {
                    return Err((
                        unused.origin.clone(),
                        format!("plugin {:?} is in no route", unused.name),
                    ));
                }
            }
            None => {
                if self.plugins.is_none() {
                    for mode in Mode::ALL {
                        if self.permissions.section(mode.as_str()).is_some() {
                            plugins.push(implied(mode, format!("permissions.{mode}")));
                        }
                    }
                }
                let mode_of = |i: usize| match &self.plugins {
                    Some(list) => list[i].mode,
                    None => Mode::ALL
                        .into_iter()
                        .find(|m| plugins[i].permissions.as_deref() == Some(m.as_str())),
                };
                for mode in Mode::ALL {
                    let chain: Vec<usize> = (0..plugins.len())
                        .filter(|&i| mode_of(i) == Some(mode))
                        .collect();
                    if chain.is_empty() {
                        continue;
                    }
                    routes.push(RouteSpec {
                        name: mode.as_str().to_owned(),
                        matches: RouteMatch {
                            credentials: vec![mode.credential()],
                            ..RouteMatch::default()
                        },
                        plugins: chain,
                        origin: format!("default route {mode}"),
                    });
                }
                if let Some(p) = self.plugins.iter().flatten().position(|p| p.mode.is_none()) {
                    return Err((
                        format!("plugins[{p}]"),
                        format!(
                            "without routes, each plugin needs a mode ({}): the default \
                             route it joins",
                            builtin_names()
                        ),
                    ));
                }
            }
        }
        for name in self.permissions.0.keys() {
            let read = plugins
                .iter()
                .any(|p| p.permissions.as_deref() == Some(name.as_str()));
            if !read && !Mode::ALL.iter().any(|m| m.as_str() == name) {
                return Err((
                    format!("permissions.{name}"),
                    "no plugin reads this section (a plugin reads the section of its mode \
                     or built-in name, or the one its `permissions` names)"
                        .into(),
                ));
            }
        }
        if routes.is_empty() {
            return Err((
                "permissions".into(),
                "no mode is enabled: add a permissions section (nkey, noauth, ...), a \
                 plugins list or routes"
                    .into(),
            ));
        }
        Ok(Topology { plugins, routes })
    }

    /// The settings that differ from `old` and take effect only on a restart: the
    /// connections, the listener and the reload loop are set up once.
    pub fn restart_only_changes(&self, old: &Config) -> Vec<&'static str> {
        [
            ("nats", self.nats != old.nats),
            ("http_listen", self.http_listen != old.http_listen),
            ("revocation", self.revocation != old.revocation),
            (
                "limits.max_concurrent",
                self.limits.max_concurrent != old.limits.max_concurrent,
            ),
            (
                "reload_interval",
                self.reload_interval != old.reload_interval,
            ),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }

    /// Whether the connections admitted through server entry `n` are closed when their
    /// identity is revoked: it has a system user, and there is something to revoke.
    pub fn closes_revoked(&self, n: &NatsConfig) -> bool {
        n.system_user.is_some() && self.revocation.is_some()
    }

    /// Absolute-or-config-relative directory of plugins.
    pub fn plugin_dir(&self) -> PathBuf {
        if let Ok(dir) = std::env::var(PLUGIN_DIR_ENV)
            && !dir.is_empty()
        {
            return PathBuf::from(dir);
        }
        let dir = self
            .plugin_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("plugins"));
        self.resolve(&dir)
    }

    /// The CA bundle for client certificates: `AUTH_CALLOUT_MTLS_CA_PATH` (as given), else
    /// `mtls.ca_file` relative to the config file; `None` when neither is set.
    pub fn mtls_ca_file(&self) -> Option<PathBuf> {
        if let Ok(path) = std::env::var(MTLS_CA_ENV)
            && !path.is_empty()
        {
            return Some(PathBuf::from(path));
        }
        self.mtls
            .as_ref()
            .and_then(|m| m.ca_file.as_deref())
            .map(|p| self.resolve(p))
    }

    /// Resolve a path from the config against the config file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Config, ConfigError> {
        Config::parse(yaml, Path::new("test.yaml"))
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("nats: []\npermissions: {noauth: {account: A}}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nats: at least one"), "{e}");
        let e =
            parse("nats: [{url: x}]\nlimits: {plugin_timeout: soon}\npermissions: {noauth: {}}")
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("limits") && e.contains("invalid duration"),
            "{e}"
        );
        let e = parse("nats: [{url: x}]\npermisions: {}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("permisions"), "{e}");
        let e = parse("nats: [{url: x}]").unwrap_err().to_string();
        assert!(e.contains("no mode is enabled"), "{e}");
    }

    #[test]
    fn revocation_kick_and_audit_settings_name_the_key() {
        let base = "permissions: {noauth: {}}\n";
        let err = |yaml: &str| parse(&format!("{base}{yaml}")).unwrap_err().to_string();
        let e = err("nats: [{url: x, system_user: {password_file: p}, audit_subject: a}]\n");
        assert!(e.contains("nats[0].system_user"), "{e}");
        let e = err("nats: [{url: x, system_user: {}}]\n");
        assert!(e.contains("nats[0].system_user"), "{e}");
        let e =
            err("nats: [{url: x, system_user: {user: s, password_file: p, nkey_seed_file: n}}]");
        assert!(e.contains("nats[0].system_user"), "{e}");
        for subject in ["audit.>", "audit..x", "a b", ""] {
            let e = err(&format!("nats: [{{url: x, audit_subject: \"{subject}\"}}]"));
            assert!(e.contains("nats[0].audit_subject"), "{subject}: {e}");
        }
        let e = err("nats: [{url: x}]\nrevocation: {kv_bucket: \"a.b\"}");
        assert!(e.contains("revocation.kv_bucket"), "{e}");
        let e = err("nats: [{url: x}]\nrevocation: {max_tracked_connections: 0}");
        assert!(e.contains("revocation.max_tracked_connections"), "{e}");
        let e = err("nats: [{url: x}]\nrevocation: {files: r.yaml}");
        assert!(e.contains("unknown field `files`"), "{e}");
        let c = parse(&format!(
            "{base}nats: [{{url: x, system_user: {{user: sys, password_file: p}}, \
             audit_subject: callout.audit}}]\nrevocation: {{file: r.yaml, kv_bucket: REVOKED}}"
        ))
        .unwrap();
        let r = c.revocation.as_ref().unwrap();
        assert_eq!(r.max_tracked_connections, 100_000);
        let old = parse(&format!("{base}nats: [{{url: x}}]")).unwrap();
        assert_eq!(c.restart_only_changes(&old), ["nats", "revocation"]);
    }

    /// The oauth2 plugin needs a JWKS; the introspection plugin reads the same entries
    /// without one.
    #[test]
    fn jwks_is_needed_by_the_oauth2_plugin_not_its_permissions() {
        let section = "permissions: {oauth2: {any: {subject: '*', account: A}}}";
        let e = parse(&format!("nats: [{{url: x}}]\n{section}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("jwks: the oauth2 plugin (permissions.oauth2) needs a jwks section"),
            "{e}"
        );
        let yaml = format!(
            "nats: [{{url: x}}]\n{section}\nplugins: [{{name: opaque, builtin: introspection, \
             permissions: oauth2, secrets: {{client_secret: {{env: S}}}}}}]\n\
             routes: [{{name: tokens, plugins: [opaque]}}]"
        );
        let cfg = parse(&yaml).unwrap();
        assert_eq!(
            cfg.plugin_specs()[0].secrets["client_secret"]
                .env
                .as_deref(),
            Some("S")
        );
        let e = parse(&yaml.replace("{env: S}", "{env: S, file: f}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("plugins[0].secrets.client_secret: set either file or env"),
            "{e}"
        );
        let e = parse(&yaml.replace("client_secret:", "'a b':"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("plugins[0].secrets.a b: a secret's name"), "{e}");
    }

    /// Values that would abort or wedge the process on a hot reload are refused with
    /// the key named, so the running config keeps serving.
    #[test]
    fn limits_are_bounded() {
        let base = "nats: [{url: x}]\npermissions: {noauth: {}}\n";
        for (extra, key) in [
            (
                "limits: {instances_per_plugin: 1000000000000}",
                "limits.instances_per_plugin",
            ),
            ("limits: {max_concurrent: 0}", "limits.max_concurrent"),
            (
                "limits: {max_concurrent: 100000000}",
                "limits.max_concurrent",
            ),
            (
                "limits: {plugin_memory_bytes: 1099511627776}",
                "limits.plugin_memory_bytes",
            ),
            ("limits: {plugin_timeout: 0}", "limits.plugin_timeout"),
            (
                "decision_cache: {max_entries: 10000000000}",
                "decision_cache.max_entries",
            ),
            ("reload_interval: 0", "reload_interval"),
            (
                "plugins: [{mode: noauth, path: n.wasm, limits: {instances: 0}}]",
                "plugins[0].limits.instances",
            ),
            (
                "plugins: [{mode: noauth, path: n.wasm, limits: {memory_bytes: 0}}]",
                "plugins[0].limits.memory_bytes",
            ),
            (
                "plugins: [{mode: noauth, path: n.wasm, limits: {timeout: 0}}]",
                "plugins[0].limits.timeout",
            ),
            (
                "plugins: [{mode: noauth, path: n.wasm, limits: {fuel: 0}}]",
                "plugins[0].limits.fuel",
            ),
            (
                "limits: {instances_per_plugin: 300}\n\
                 plugins: [{mode: noauth, path: a.wasm}, {mode: noauth, path: b.wasm}]",
                "limits: 600 warm instances",
            ),
        ] {
            let e = parse(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
        let c = parse(&format!(
            "{base}limits: {{instances_per_plugin: 512, max_concurrent: 65536}}\n\
             decision_cache: {{max_entries: 1000000}}\nreload_interval: 100ms"
        ))
        .unwrap();
        assert_eq!(c.limits.instances_per_plugin, 512);
    }

    /// Whoever answers the key fetch can sign any token: keys come over TLS, or plain
    /// HTTP on loopback, and the URLs carry no credentials (they are logged).
    #[test]
    fn key_urls_are_tls_or_loopback_and_carry_no_credentials() {
        let jwks = |url: &str| {
            parse(&format!(
                "nats: [{{url: x}}]\njwks: {{issuer: \"https://idp\", audience: nats, url: \"{url}\"}}\n\
                 permissions: {{oauth2: {{}}}}"
            ))
        };
        for ok in [
            "https://idp.example/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://127.0.0.2/jwks",
            "http://localhost:1/jwks",
            "http://[::1]:1/jwks",
        ] {
            assert!(jwks(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("http://idp.example/jwks", "must be https"),
            ("http://127.0.0.1@idp.example/jwks", "must be https"),
            ("http://localhost.idp.example/jwks", "must be https"),
            ("ftp://idp.example/jwks", "must be https"),
            ("https://user:secret@idp.example/jwks", "credentials"),
            ("http://admin@127.0.0.1/jwks", "credentials"),
            ("not a url", "not a URL"),
        ] {
            let e = jwks(bad).unwrap_err().to_string();
            assert!(e.contains("jwks.url") && e.contains(why), "{bad}: {e}");
        }
        let e = parse(
            "nats: [{url: x}]\njwks: {issuer: \"https://u:p@idp\", audience: nats}\n\
             permissions: {oauth2: {}}",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("jwks.issuer") && e.contains("credentials"),
            "{e}"
        );
    }

    #[test]
    fn mtls_and_nats_tls_sections() {
        let c = parse(
            "nats: [{url: x, tls: {ca_file: ca.pem, cert_file: c.pem, key_file: k.pem}}]\n\
             mtls: {ca_file: clients.pem}\npermissions: {mtls: {}}",
        )
        .unwrap();
        assert_eq!(
            c.mtls.and_then(|m| m.ca_file),
            Some(PathBuf::from("clients.pem"))
        );
        let e = parse("nats: [{url: x, tls: {cert_file: c.pem}}]\npermissions: {mtls: {}}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nats[0].tls: cert_file and key_file go together"),
            "{e}"
        );
        let e = parse("nats: [{url: x}]\nmtls: {ca: x}\npermissions: {mtls: {}}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `ca`"), "{e}");
    }

    #[test]
    fn restart_only_changes_are_named() {
        let base = "nats: [{url: x}]\npermissions: {noauth: {}}\n";
        let old = parse(base).unwrap();
        assert!(parse(base).unwrap().restart_only_changes(&old).is_empty());
        let new = parse(&format!(
            "{base}limits: {{max_concurrent: 8, plugin_timeout: 1s}}\nreload_interval: 5s"
        ))
        .unwrap();
        assert_eq!(
            new.restart_only_changes(&old),
            ["limits.max_concurrent", "reload_interval"],
            "plugin_timeout applies on reload"
        );
        let new = parse(&base.replace("{url: x}", "{url: x, user: u}")).unwrap();
        assert_eq!(new.restart_only_changes(&old), ["nats"]);
    }

    #[test]
    fn nats_urls_never_carry_credentials() {
        let e = parse(
            "nats: [{url: \"nats://a:4222,nats://u:secret@b:4222\"}]\npermissions: {noauth: {}}",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("nats[0].url: must not carry credentials"), "{e}");
        parse("nats: [{url: \"tls://nats:4222/path@x\"}]\npermissions: {noauth: {}}").unwrap();
    }

    fn names(c: &Config) -> (Vec<&str>, Vec<(&str, Vec<&str>)>) {
        let plugins = c.plugin_specs().iter().map(|p| p.name.as_str()).collect();
        let routes = c
            .route_specs()
            .iter()
            .map(|r| {
                let chain = r
                    .plugins
                    .iter()
                    .map(|&i| c.plugin_specs()[i].name.as_str())
                    .collect();
                (r.name.as_str(), chain)
            })
            .collect();
        (plugins, routes)
    }

    #[test]
    fn default_routes_follow_permissions() {
        let c = parse("nats: [{url: x}]\npermissions: {nkey: {}, noauth: {account: A}}").unwrap();
        assert_eq!(
            names(&c),
            (
                vec!["nkey/nkey", "noauth/noauth"],
                vec![
                    ("nkey", vec!["nkey/nkey"]),
                    ("noauth", vec!["noauth/noauth"])
                ]
            )
        );
        assert_eq!(
            c.route_specs()[0].matches.credentials,
            [nats_callout_sdk::CredentialKind::Nkey]
        );
        assert_eq!(c.plugin_specs()[0].source, Source::Builtin("nkey".into()));
        assert_eq!(c.plugin_specs()[0].permissions.as_deref(), Some("nkey"));
        assert_eq!(c.limits.plugin_timeout, Duration::from_millis(250));
    }

    /// A `plugins` list without routes chains by `mode` as before; a partner plugin
    /// before a built-in one keeps both in that order.
    #[test]
    fn plugins_with_modes_join_the_default_routes() {
        let c = parse(
            "nats: [{url: x}]\njwks: {issuer: \"https://idp\", audience: nats}\n\
             permissions: {oauth2: {}}\nplugins:\n\
             - {mode: oauth2, path: /partner/apikey.wasm}\n\
             - {mode: oauth2, builtin: oauth2}\n\
             - {mode: noauth, path: noauth.wasm, permissions: oauth2}",
        )
        .unwrap();
        assert_eq!(
            names(&c),
            (
                vec!["oauth2/apikey", "oauth2/oauth2", "noauth/noauth"],
                vec![
                    ("oauth2", vec!["oauth2/apikey", "oauth2/oauth2"]),
                    ("noauth", vec!["noauth/noauth"])
                ]
            )
        );
        // Relative paths are relative to the config file, built-ins in plugin_dir.
        let mut c = c;
        c.base_dir = PathBuf::from("/etc/callout");
        c.plugin_dir = Some(PathBuf::from("/plugins"));
        let paths: Vec<_> = c.plugin_specs().iter().map(|p| c.plugin_path(p)).collect();
        if std::env::var_os(PLUGIN_DIR_ENV).is_none() {
            assert_eq!(
                paths,
                [
                    PathBuf::from("/partner/apikey.wasm"),
                    PathBuf::from("/plugins/oauth2.wasm"),
                    PathBuf::from("/etc/callout/noauth.wasm")
                ]
            );
        }
        let e = parse("nats: [{url: x}]\nplugins: [{path: a.wasm}]")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("plugins[0]: without routes, each plugin needs a mode"),
            "{e}"
        );
    }

    #[test]
    fn routes_name_their_chains() {
        let c = parse(
            "nats: [{url: x}]\npermissions: {password: {}, devices: {}}\nplugins:\n\
             - {name: fleet, path: fleet.wasm, permissions: devices, settings: {region: eu}}\n\
             routes:\n\
             - {name: mqtt-devices, match: {credentials: [user-password], client_types: mqtt}, plugins: [fleet, password]}\n\
             - {name: people, match: {credentials: user-password}, plugins: [password]}",
        )
        .unwrap();
        assert_eq!(
            names(&c),
            (
                vec!["fleet", "password"],
                vec![
                    ("mqtt-devices", vec!["fleet", "password"]),
                    ("people", vec!["password"])
                ]
            )
        );
        assert_eq!(c.plugin_specs()[0].permissions.as_deref(), Some("devices"));
        assert_eq!(
            c.plugin_specs()[1].origin,
            "routes[0].plugins[1]",
            "a built-in named by a route"
        );
    }

    #[test]
    fn route_errors_name_the_key() {
        let base = "nats: [{url: x}]\npermissions: {password: {}}\n";
        for (extra, key) in [
            (
                "routes: [{name: r, plugins: [fleet]}]",
                "routes[0].plugins[0]: no plugin is named \"fleet\"",
            ),
            (
                "routes: [{name: r, plugins: []}]",
                "routes[0].plugins: names no plugin",
            ),
            (
                "routes: [{name: r, plugins: [password]}, {name: r, plugins: [password]}]",
                "routes[1].name: \"r\" is the name of routes[0] too",
            ),
            (
                "routes: [{name: 'a b', plugins: [password]}]",
                "routes[0].name: must be",
            ),
            (
                "routes: [{name: r, plugins: [password, password]}]",
                "routes[0].plugins[1]: \"password\" is in this chain already",
            ),
            (
                "plugins: [{path: f.wasm, mode: nkey}]\nroutes: [{name: r, plugins: [password]}]",
                "plugins[0].mode: only without routes",
            ),
            (
                "plugins: [{name: f, path: f.wasm}]\nroutes: [{name: r, plugins: [password]}]",
                "plugins[0]: plugin \"f\" is in no route",
            ),
            (
                "plugins: [{name: f, path: f.wasm, builtin: nkey}]\nroutes: [{name: r, plugins: [f]}]",
                "plugins[0]: set either path or builtin",
            ),
            (
                "plugins: [{name: f, path: f.wasm, permissions: fleet}]\nroutes: [{name: r, plugins: [f]}]",
                "plugins[0].permissions: there is no permissions.fleet section",
            ),
            (
                "plugins: [{name: a, path: a.wasm}, {name: a, path: b.wasm}]\nroutes: [{name: r, plugins: [a]}]",
                "plugins[1].name: \"a\" is the name of plugins[0] too",
            ),
            (
                "routes: [{name: r, match: {credentials: [passwd]}, plugins: [password]}]",
                "unknown credential kind \"passwd\": expected one of none, bearer-token",
            ),
        ] {
            let e = parse(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(e.contains(key), "{extra}: {e}");
        }
        // A typo'd permissions section is named, not ignored.
        let e = parse("nats: [{url: x}]\npermissions: {nkye: {}, noauth: {}}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("permissions.nkye: no plugin reads this section"),
            "{e}"
        );
    }
}
