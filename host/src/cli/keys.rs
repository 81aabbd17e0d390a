//! `nats-callout keys ...` and `server-config`: the three seeds of a deployment, written
//! owner-only, and the nats-server block that matches them.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};

const SEEDS: [(&str, &str); 3] = [
    ("nkey-seed", "SU"),
    ("issuer-seed", "SA"),
    ("xkey-seed", "SX"),
];

pub fn generate(dir: &Path, force: bool) -> Result<()> {
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
pub fn write_new_secret(path: &Path, seed: &str) -> Result<()> {
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

pub fn read_seed(path: &Path) -> Result<String> {
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

pub fn server_config(dir: &Path, account: &str, extra: &[String], no_xkey: bool) -> Result<()> {
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
