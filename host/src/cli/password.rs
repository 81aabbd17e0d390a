//! `nats-callout password hash`: the hashes the password plugin's entries hold.

use anyhow::{Context, Result, bail};

pub fn hash(cost: u32, argon2id: bool) -> Result<()> {
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
