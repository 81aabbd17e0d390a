//! The `nats-callout` command.

mod cli;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
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
    /// Plugin authoring.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Write the plugin contracts this host loads (WIT packages, one folder per version),
    /// to generate a plugin's bindings in any language.
    Wit {
        /// Where: `DIR/v0.3.0/plugin.wit`, ...
        #[arg(long)]
        out: PathBuf,
    },
    /// Operator mode: nats-server trusts an operator and accounts are JWTs.
    Operator {
        #[command(subcommand)]
        command: OperatorCommand,
    },
    /// Password hashes for `permissions.password` entries.
    Password {
        #[command(subcommand)]
        command: PasswordCommand,
    },
    /// Probe a running deployment: the callout's own user bypasses the callout, an
    /// anonymous client gets exactly what the config grants it (or is refused when
    /// anonymous clients are not routed), a forged token is refused, and nats-server's
    /// auth_callout issuer and xkey match the callout's keys. One PASS/FAIL/SKIP line
    /// per check; exit status 1 if any check fails.
    Verify(cli::verify::Options),
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
enum OperatorCommand {
    /// Write an operator, its system account, the callout account (with its
    /// authorization block), target accounts with signing keys, creds files, the
    /// nats-server resolver block and the callout's operator config: a deployment to run
    /// without nsc.
    Init {
        /// Where (created owner-only; must not hold a deployment already).
        #[arg(long)]
        dir: PathBuf,
        /// An account users are placed in (repeat); default DEVICES and ANONYMOUS.
        #[arg(long = "account")]
        accounts: Vec<String>,
        /// No xkey: nats-server sends requests unsealed.
        #[arg(long)]
        no_xkey: bool,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Write a new plugin crate NAME (Cargo.toml with the SDK from crates.io, src/lib.rs
    /// with native tests, a README with the build command): a complete plugin to change.
    New {
        name: String,
        /// Where to create the crate's folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Build against this SDK checkout (`guest-sdk/`) instead of crates.io's.
        #[arg(long)]
        sdk: Option<PathBuf>,
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
    // Colours only on a terminal: a container's log, a file or a pipe gets plain text that
    // log collectors and `grep` read as written.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
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
        } => cli::keys::generate(&dir, force),
        Command::Keys {
            command: KeysCommand::User { out },
        } => {
            let kp = nkeys::KeyPair::new_user();
            cli::keys::write_new_secret(&out, &kp.seed()?)?;
            println!("{}", kp.public_key());
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Public { seed },
        } => {
            let seed = cli::keys::read_seed(&seed)?;
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
        } => cli::password::hash(cost, argon2id),
        Command::Plugin {
            command: PluginCommand::New { name, dir, sdk },
        } => {
            let root = cli::plugin_new::run(&name, &dir, sdk.as_deref())?;
            println!(
                "wrote {}: `cargo build --target wasm32-wasip2 --release` there builds the \
                 component (README.md says how to load it)",
                root.display()
            );
            Ok(())
        }
        Command::Wit { out } => {
            for file in cli::wit::write(&out)? {
                println!("wrote {}", file.display());
            }
            Ok(())
        }
        Command::Verify(options) => {
            if !cli::verify::run(&options)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Operator {
            command:
                OperatorCommand::Init {
                    dir,
                    accounts,
                    no_xkey,
                },
        } => {
            let accounts = if accounts.is_empty() {
                cli::operator::DEFAULT_TARGETS.map(str::to_owned).to_vec()
            } else {
                accounts
            };
            cli::operator::init(&dir, &accounts, !no_xkey)
        }
        Command::ServerConfig {
            keys,
            account,
            auth_users,
            no_xkey,
        } => cli::keys::server_config(&keys, &account, &auth_users, no_xkey),
    }
}

fn check(config: &Path) -> Result<()> {
    let cfg = Config::load(config)?;
    let authorizer = Authorizer::from_config(&cfg, Metrics::new())?;
    Service::check(&cfg)?;
    for note in authorizer.notes() {
        eprintln!("warning: {note}");
    }
    println!(
        "ok: {} NATS server(s), routes [{}], issuer {}",
        cfg.nats.len(),
        authorizer.route_names().join(", "),
        authorizer.issuer_public_key()
    );
    match authorizer.accounts() {
        None => println!(
            "mode: config (nats-server's authorization {{ auth_callout {{ issuer: {} }} }}; \
             grants name accounts of its config)",
            authorizer.issuer_public_key()
        ),
        Some(a) => {
            println!(
                "mode: operator (callout account {} {}; users placed in the accounts below, \
                 each signing its own)",
                a.callout.name, a.callout.sub
            );
            for (name, t) in a.describe() {
                println!(
                    "account {name}: {}{}",
                    t.public_key,
                    if t.scoped {
                        " (scoped signing key: its template sets permissions)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    if let Some(r) = &cfg.revocation {
        let mut sources = Vec::new();
        if let Some(file) = &r.file {
            sources.push(format!(
                "{} (revokes {} now)",
                file.display(),
                authorizer.revocations().current().len()
            ));
        }
        if let Some(bucket) = &r.kv_bucket {
            sources.push(format!("KV bucket {bucket} via nats {}", cfg.nats[0].name));
        }
        println!("revocation: {}", sources.join(", "));
    }
    for n in &cfg.nats {
        if cfg.closes_revoked(n) {
            println!(
                "nats {}: live connections of revoked identities are closed",
                n.name
            );
        } else if n.system_user.is_some() {
            println!(
                "nats {}: system_user is unused without a revocation section",
                n.name
            );
        } else if cfg.revocation.is_some() {
            println!(
                "nats {}: no system_user, so revoked identities are refused at their next \
                 connect, and their live connections stay open",
                n.name
            );
        }
        if let Some(subject) = &n.audit_subject {
            println!("nats {}: decisions published on {subject}", n.name);
        }
    }
    Ok(())
}

fn run(config: &Path) -> Result<()> {
    nats_callout::ops::memory::limit_malloc_arenas();
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
