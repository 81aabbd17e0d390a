//! Password hashes the host verifies for plugins ([`crate::Host::verify_password_hash`]):
//! which formats, and how costly a hash may be. One copy of the rules, read by the host
//! (which refuses any other hash before spending a cycle on it) and by plugins (which
//! check their configuration at `init`, so that a hash the host would refuse fails at
//! load, not on a client's connect).
//!
//! Formats: bcrypt (`$2a$`, `$2b$`, `$2y$`: what nats-server's own config takes, and
//! `htpasswd -B` writes) and argon2id in the PHC string format (`$argon2id$v=19$m=..,t=..,
//! p=..$salt$hash`). Verification itself (feature `password`) is native code in the host
//! and in [`crate::testing::TestHost`], never in a plugin: a hash costs tens of
//! milliseconds natively, several times that inside WebAssembly.

use std::fmt;

/// Longest password the host verifies. A CONNECT line is 4 KiB by default
/// (`max_control_line`); a longer "password" is an attack on the hash's CPU cost, not a
/// credential.
pub const MAX_PASSWORD_BYTES: usize = 4096;
/// bcrypt reads only the first 72 bytes of a password; a longer one is refused instead
/// of silently matching every password that shares its first 72 bytes.
pub const BCRYPT_MAX_PASSWORD_BYTES: usize = 72;
/// Highest bcrypt cost verified: cost 13 takes about 0.5 s on one core here (BENCHMARKS),
/// a quarter of nats-server's whole 2 s auth timeout, and every step up doubles it.
pub const MAX_BCRYPT_COST: u32 = 13;
/// argon2id bounds: 64 MiB of memory per verification in flight (RFC 9106's second
/// recommendation is m=64 MiB, t=3, p=4), at most 8 passes and 8 lanes: about the same
/// half second as bcrypt's bound at its most costly.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 64 * 1024;
pub const MAX_ARGON2_ITERATIONS: u32 = 8;
pub const MAX_ARGON2_LANES: u32 = 8;

/// A hash format the host verifies, with its cost parameters.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bcrypt {
        cost: u32,
    },
    Argon2id {
        memory_kib: u32,
        iterations: u32,
        lanes: u32,
    },
}

impl Scheme {
    /// A rough measure of the work one verification takes, to pick the costliest of
    /// several hashes: bcrypt's 2^cost rounds; argon2's memory times passes, scaled by
    /// what this machine measured (2^10 bcrypt rounds 68 ms, 19456 KiB x 2 passes of
    /// argon2id 27 ms: one round is about 96 KiB-passes).
    pub fn work(self) -> u64 {
        match self {
            Scheme::Bcrypt { cost } => 1u64 << cost,
            Scheme::Argon2id {
                memory_kib,
                iterations,
                ..
            } => u64::from(memory_kib) * u64::from(iterations) / 96,
        }
    }
}

/// Why a hash or a password is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashError {
    /// Not one of the formats; names what it looks like, never the text.
    Unsupported,
    /// The right format, but not well formed.
    Malformed(&'static str),
    /// Costlier than the host verifies.
    TooCostly(String),
    /// The password is longer than the scheme (or the host) takes.
    PasswordTooLong(usize),
}

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashError::Unsupported => f.write_str(
                "not a bcrypt ($2a$, $2b$, $2y$) or argon2id ($argon2id$) hash; plain-text \
                 passwords are not accepted (`nats-callout password hash` makes one)",
            ),
            HashError::Malformed(what) => write!(f, "malformed hash: {what}"),
            HashError::TooCostly(what) => write!(f, "hash too costly to verify: {what}"),
            HashError::PasswordTooLong(max) => write!(f, "password longer than {max} bytes"),
        }
    }
}

impl std::error::Error for HashError {}

/// The scheme of `hash`, if the host verifies it: format and cost bounds.
pub fn scheme(hash: &str) -> Result<Scheme, HashError> {
    if let Some(rest) = ["$2a$", "$2b$", "$2y$"]
        .iter()
        .find_map(|p| hash.strip_prefix(p))
    {
        // `$2b$10$` + 22 characters of salt + 31 of hash, bcrypt's base64 alphabet.
        let (cost, body) = rest
            .split_once('$')
            .ok_or(HashError::Malformed("bcrypt hash without a cost"))?;
        let cost: u32 = (cost.len() == 2)
            .then(|| cost.parse().ok())
            .flatten()
            .filter(|c| (4..=31).contains(c))
            .ok_or(HashError::Malformed("bcrypt cost is not 04 to 31"))?;
        if body.len() != 53
            || !body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
        {
            return Err(HashError::Malformed(
                "bcrypt salt and hash are not 53 characters",
            ));
        }
        if cost > MAX_BCRYPT_COST {
            return Err(HashError::TooCostly(format!(
                "bcrypt cost {cost}, over {MAX_BCRYPT_COST}"
            )));
        }
        return Ok(Scheme::Bcrypt { cost });
    }
    let Some(rest) = hash.strip_prefix("$argon2id$") else {
        return Err(HashError::Unsupported);
    };
    let mut parts = rest.split('$');
    let (Some(version), Some(params), Some(salt), Some(digest), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(HashError::Malformed(
            "argon2id hash is not $argon2id$v=19$m=..,t=..,p=..$salt$hash",
        ));
    };
    if version != "v=19" {
        return Err(HashError::Malformed("argon2id version is not v=19"));
    }
    let b64 = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    };
    if !b64(salt) || !b64(digest) {
        return Err(HashError::Malformed("argon2id salt or hash is not base64"));
    }
    let (mut m, mut t, mut p) = (None, None, None);
    for kv in params.split(',') {
        let (k, v) = kv.split_once('=').ok_or(HashError::Malformed(
            "argon2id parameters are not m=..,t=..,p=..",
        ))?;
        let v: u32 = v
            .parse()
            .map_err(|_| HashError::Malformed("argon2id parameter is not a number"))?;
        match k {
            "m" => m = Some(v),
            "t" => t = Some(v),
            "p" => p = Some(v),
            _ => {
                return Err(HashError::Malformed(
                    "argon2id parameter other than m, t, p",
                ));
            }
        }
    }
    let (Some(memory_kib), Some(iterations), Some(lanes)) = (m, t, p) else {
        return Err(HashError::Malformed("argon2id hash lacks m, t or p"));
    };
    for (value, max, what) in [
        (memory_kib, MAX_ARGON2_MEMORY_KIB, "memory (KiB)"),
        (iterations, MAX_ARGON2_ITERATIONS, "iterations"),
        (lanes, MAX_ARGON2_LANES, "lanes"),
    ] {
        if value > max {
            return Err(HashError::TooCostly(format!(
                "argon2id {what} {value}, over {max}"
            )));
        }
    }
    Ok(Scheme::Argon2id {
        memory_kib,
        iterations,
        lanes,
    })
}

/// Whether `password` may be checked against a hash of `scheme` at all.
pub fn check_password(password: &str, scheme: Scheme) -> Result<(), HashError> {
    let max = match scheme {
        Scheme::Bcrypt { .. } => BCRYPT_MAX_PASSWORD_BYTES,
        _ => MAX_PASSWORD_BYTES,
    };
    if password.len() > max {
        return Err(HashError::PasswordTooLong(max));
    }
    Ok(())
}

/// Verifies `password` against `hash` natively (feature `password`): `Ok(false)` for a
/// wrong password, an error for a hash or password outside the rules above. Costs the
/// same for a right and a wrong password (the whole hash is computed, and compared in
/// constant time).
#[cfg(feature = "password")]
pub fn verify(password: &str, hash: &str) -> Result<bool, HashError> {
    let scheme = scheme(hash)?;
    check_password(password, scheme)?;
    match scheme {
        Scheme::Bcrypt { .. } => bcrypt::verify(password, hash)
            .map_err(|_| HashError::Malformed("bcrypt hash does not decode")),
        _ => {
            use argon2::PasswordVerifier as _;
            let parsed = argon2::PasswordHash::new(hash)
                .map_err(|_| HashError::Malformed("argon2id hash does not decode"))?;
            match argon2::Argon2::default().verify_password(password.as_bytes(), &parsed) {
                Ok(()) => Ok(true),
                Err(argon2::password_hash::Error::Password) => Ok(false),
                Err(_) => Err(HashError::Malformed("argon2id hash does not decode")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BCRYPT_10: &str = "$2b$10$.H98/KaOd4ZRHwvthzXTSui9RUOB5YDnwFGR9Yur85ToBskiqlcXy";
    const ARGON2: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$14ukWqiThj4Xz77NYv01V28GbBZHY9AaZwsFswQFO0U";

    #[test]
    fn schemes_and_bounds() {
        assert_eq!(scheme(BCRYPT_10), Ok(Scheme::Bcrypt { cost: 10 }));
        assert_eq!(
            scheme(&BCRYPT_10.replace("$2b$", "$2y$")),
            Ok(Scheme::Bcrypt { cost: 10 })
        );
        assert_eq!(
            scheme(ARGON2),
            Ok(Scheme::Argon2id {
                memory_kib: 19456,
                iterations: 2,
                lanes: 1
            })
        );
        assert!(matches!(
            scheme(&BCRYPT_10.replace("$10$", "$14$")),
            Err(HashError::TooCostly(_))
        ));
        assert!(matches!(
            scheme(&ARGON2.replace("m=19456", "m=1048576")),
            Err(HashError::TooCostly(_))
        ));
        for bad in [
            "secret",
            "$1$abc",
            "$argon2i$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA",
            "$2b$1$abc",
            "$2b$10$short",
            "$argon2id$v=16$m=8,t=1,p=1$c2FsdA$aGFzaA",
            "$argon2id$v=19$m=8,t=1$c2FsdA$aGFzaA",
            "$argon2id$v=19$m=8,t=1,p=1,x=2$c2FsdA$aGFzaA",
        ] {
            assert!(scheme(bad).is_err(), "{bad}");
        }
        let e = scheme("hunter2").unwrap_err().to_string();
        assert!(e.contains("plain-text") && !e.contains("hunter2"), "{e}");
        assert!(Scheme::Bcrypt { cost: 13 }.work() > Scheme::Bcrypt { cost: 10 }.work());
    }

    #[test]
    fn password_lengths() {
        let bcrypt = Scheme::Bcrypt { cost: 10 };
        assert_eq!(check_password(&"x".repeat(72), bcrypt), Ok(()));
        assert_eq!(
            check_password(&"x".repeat(73), bcrypt),
            Err(HashError::PasswordTooLong(72))
        );
        let argon = scheme(ARGON2).unwrap();
        assert_eq!(check_password(&"x".repeat(4096), argon), Ok(()));
        assert_eq!(
            check_password(&"x".repeat(1 << 20), argon),
            Err(HashError::PasswordTooLong(4096))
        );
    }

    #[cfg(feature = "password")]
    #[test]
    fn verifies_both_schemes() {
        assert_eq!(verify("secret", BCRYPT_10), Ok(true));
        assert_eq!(verify("Secret", BCRYPT_10), Ok(false));
        assert_eq!(verify("secret", ARGON2), Ok(true));
        assert_eq!(verify("secreT", ARGON2), Ok(false));
        assert!(verify("secret", "secret").is_err());
    }
}
