//! The `nats-callout` command.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use nats_callout::nats::service::Service;
use nats_callout::ops::app::App;
use nats_callout::ops::config::Config;
use nats_callout::ops::metrics::Metrics;
use nats_callout::pipeline::authorizer::Authorizer;

#[derive(Parser)]
#[command(
    name = "nats-callout",
    version,
    about = "NATS auth callout with WebAssembly plugins"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "AUTH_CALLOUT_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `nats_callout=debug`.
    #[arg(long, global = true, default_value = "info", env = "AUTH_CALLOUT_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve auth requests.
    Run {
        #[arg(long, short, env = "AUTH_CALLOUT_CONFIG")]
        config: PathBuf,
    },
    /// Validate the config and load every plugin, then exit.
    Check {
        #[arg(long, short, env = "AUTH_CALLOUT_CONFIG")]
        config: PathBuf,
    },
    /// Key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Password hashes for `permissions.password` entries.
    Password {
        #[command(subcommand)]
        command: PasswordCommand,
    },
    /// Print the nats-server `authorization { auth_callout { ... } }` block for the keys.
    ServerConfig {
        /// Directory written by `keys generate`.
        #[arg(long, default_value = "keys")]
        keys: PathBuf,
        /// Account the callout's own user lives in.
        #[arg(long, default_value = "AUTH")]
        account: String,
        /// Extra users (in any account) that bypass the callout, e.g. a platform service.
        #[arg(long = "auth-user")]
        auth_users: Vec<String>,
        /// Leave out the xkey even if an xkey seed exists.
        #[arg(long)]
        no_xkey: bool,
    },
}

#[derive(Subcommand)]
enum PasswordCommand {
    /// Read a password from stdin (one line; never an argument, which `ps` would show)
    /// and print its hash for a `password_hash` field.
    Hash {
        /// bcrypt cost (4 to 13): each step doubles the time of every login. 10 takes
        /// about 70 ms here; 12 needs a plugin timeout above the default 250 ms.
        #[arg(long, default_value_t = 10)]
        cost: u32,
        /// argon2id (m=19 MiB, t=2, p=1: OWASP's first recommendation) instead of bcrypt.
        #[arg(long, conflicts_with = "cost")]
        argon2id: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write `nkey-seed` (SU, the callout's NATS user), `issuer-seed` (SA, signs user
    /// JWTs) and `xkey-seed` (SX, seals responses), each readable by the owner only.
    Generate {
        #[arg(long, default_value = "keys")]
        dir: PathBuf,
        /// Overwrite existing seeds.
        #[arg(long)]
        force: bool,
    },
    /// Write a new user NKey seed (SU...) for an NKey client, and print the public key
    /// to put in `permissions.nkey.<name>.public_key`.
    User {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key of a seed file (never the seed).
    Public {
        #[arg(long)]
        seed: PathBuf,
    },
}

fn init_logging(format: LogFormat, filter: &str) -> Result<()> {
    // A typo in the filter is an error, not a silent fall back to `info`.
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("--log {filter:?} is not a tracing filter"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log)?;
    match cli.command {
        Command::Run { config } => run(&config),
        Command::Check { config } => check(&config),
        Command::Keys {
            command: KeysCommand::Generate { dir, force },
        } => generate_keys(&dir, force),
        Command::Keys {
            command: KeysCommand::User { out },
        } => {
            let kp = nkeys::KeyPair::new_user();
            write_new_secret(&out, &kp.seed()?)?;
            println!("{}", kp.public_key());
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Public { seed },
        } => {
            let seed = read_seed(&seed)?;
            // An `SX` seed also parses as a KeyPair (type curve), but its ed25519-derived
            // public key is not the curve key nats-server needs as `auth_callout.xkey`.
            let public = if seed.starts_with("SX") {
                nkeys::XKey::from_seed(&seed)
                    .context("not a valid xkey seed")?
                    .public_key()
            } else {
                nkeys::KeyPair::from_seed(&seed)
                    .context("not a valid NKey seed")?
                    .public_key()
            };
            println!("{public}");
            Ok(())
        }
        Command::Password {
            command: PasswordCommand::Hash { cost, argon2id },
        } => hash_password(cost, argon2id),
        Command::ServerConfig {
            keys,
            account,
            auth_users,
            no_xkey,
        } => server_config(&keys, &account, &auth_users, no_xkey),
    }
}

fn check(config: &Path) -> Result<()> {
    let cfg = Config::load(config)?;
    let authorizer = Authorizer::from_config(&cfg, Metrics::new())?;
    Service::check(&cfg)?;
    println!(
        "ok: {} NATS server(s), routes [{}], issuer {}",
        cfg.nats.len(),
        authorizer.route_names().join(", "),
        authorizer.issuer_public_key()
    );
    Ok(())
}

fn run(config: &Path) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // SIGHUP's default action ends the process. Until the reloader takes it over,
        // one sent during start-up (plugins compiling) is ignored instead; the config
        // being loaded is the one on disk anyway.
        #[cfg(unix)]
        let early_hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let app = App::start(config).await?;
        #[cfg(unix)]
        drop(early_hup);
        shutdown_signal().await;
        tracing::info!("shutting down: draining (a second signal stops at once)");
        tokio::select! {
            _ = app.shutdown() => {}
            _ = shutdown_signal() => tracing::warn!("second signal: stopping without draining"),
        }
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn hash_password(cost: u32, argon2id: bool) -> Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        bail!("no password on stdin");
    }
    let hash = if argon2id {
        use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
        let params = argon2::Params::new(19 * 1024, 2, 1, None)
            .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
            .map_err(|e| anyhow::anyhow!("argon2id: {e}"))?
            .to_string()
    } else {
        if !(4..=nats_callout_sdk::password::MAX_BCRYPT_COST).contains(&cost) {
            bail!(
                "--cost {cost}: the host verifies bcrypt costs 4 to {}",
                nats_callout_sdk::password::MAX_BCRYPT_COST
            );
        }
        if password.len() > nats_callout_sdk::password::BCRYPT_MAX_PASSWORD_BYTES {
            bail!(
                "bcrypt takes passwords of at most {} bytes: use --argon2id",
                nats_callout_sdk::password::BCRYPT_MAX_PASSWORD_BYTES
            );
        }
        bcrypt::hash(password, cost).context("bcrypt")?
    };
    // The rules the host verifies by: a hash made here always passes them.
    let scheme = nats_callout_sdk::password::scheme(&hash).map_err(|e| anyhow::anyhow!("{e}"))?;
    nats_callout_sdk::password::check_password(password, scheme)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{hash}");
    Ok(())
}

const SEEDS: [(&str, &str); 3] = [
    ("nkey-seed", "SU"),
    ("issuer-seed", "SA"),
    ("xkey-seed", "SX"),
];

fn generate_keys(dir: &Path, force: bool) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let seeds = [
        nkeys::KeyPair::new_user().seed()?,
        nkeys::KeyPair::new_account().seed()?,
        nkeys::XKey::new().seed()?,
    ];
    if force {
        // All three written beside their targets first, then each renamed over its
        // old file: no mix of old and new keys unless a rename itself fails.
        let written = SEEDS
            .iter()
            .zip(&seeds)
            .map(|((file, _), seed)| Ok((secret_beside(dir, seed)?, dir.join(file))))
            .collect::<Result<Vec<_>>>()?;
        for (tmp, path) in written {
            tmp.persist(&path)
                .with_context(|| format!("cannot replace {}", path.display()))?;
        }
    } else {
        // All checked before any is written: a refusal leaves the folder as it was.
        for (file, _) in SEEDS {
            let path = dir.join(file);
            if std::fs::symlink_metadata(&path).is_ok() {
                bail!(
                    "{} exists; pass --force to replace the keys (the old ones stop working)",
                    path.display()
                );
            }
        }
        for ((file, _), seed) in SEEDS.iter().zip(&seeds) {
            write_new_secret(&dir.join(file), seed)?;
        }
    }
    let (user, issuer, xkey) = public_keys(dir)?;
    println!(
        "wrote {}/{{nkey-seed,issuer-seed,xkey-seed}}",
        dir.display()
    );
    println!("callout user: {user}\nissuer:       {issuer}\nxkey:         {xkey}");
    Ok(())
}

/// Create `path` for a seed, owner-only from the start (no window in which it is
/// readable), and only if nothing is there: not a file, not a symlink, dangling or not.
fn write_new_secret(path: &Path, seed: &str) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = match opts.open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{} exists; pass --force to replace it (the old key stops working)",
            path.display()
        ),
        other => other.with_context(|| format!("cannot write {}", path.display()))?,
    };
    writeln!(f, "{seed}")?;
    Ok(f.sync_all()?)
}

/// A seed in a new owner-only temporary file in `dir`, synced, to be renamed into place.
fn secret_beside(dir: &Path, seed: &str) -> Result<tempfile::NamedTempFile> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    writeln!(tmp, "{seed}")?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}

fn read_seed(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .trim()
        .to_owned())
}

fn public_keys(dir: &Path) -> Result<(String, String, String)> {
    let user = nkeys::KeyPair::from_seed(&read_seed(&dir.join("nkey-seed"))?)
        .context("nkey-seed is not a valid seed")?;
    let issuer = nkeys::KeyPair::from_seed(&read_seed(&dir.join("issuer-seed"))?)
        .context("issuer-seed is not a valid seed")?;
    let xkey = match read_seed(&dir.join("xkey-seed")) {
        Ok(s) => nkeys::XKey::from_seed(&s)
            .context("xkey-seed is not a valid seed")?
            .public_key(),
        Err(_) => String::new(),
    };
    Ok((user.public_key(), issuer.public_key(), xkey))
}

fn server_config(dir: &Path, account: &str, extra: &[String], no_xkey: bool) -> Result<()> {
    let (user, issuer, xkey) = public_keys(dir)?;
    let mut auth_users = vec![user.clone()];
    auth_users.extend(extra.iter().cloned());
    let xkey_line = if no_xkey || xkey.is_empty() {
        String::new()
    } else {
        format!("\n    xkey: {xkey}")
    };
    // Quoted: nats-server would read a bare `1234` or `true` as a number or a bool,
    // and a bare name with a space or a comma as something else.
    let quoted = |s: &str| serde_json::Value::from(s).to_string();
    let users: Vec<String> = auth_users.iter().map(|u| quoted(u)).collect();
    let account = quoted(account);
    println!(
        "# The callout's own user must exist in account {account}, e.g.\n\
         #   accounts {{ {account}: {{ users: [ {{ nkey: {user} }} ] }} }}\n\
         authorization {{\n  auth_callout {{\n    issuer: {issuer}\n    account: {account}\n    \
         auth_users: [ {} ]{xkey_line}\n  }}\n}}",
        users.join(", ")
    );
    Ok(())
}
