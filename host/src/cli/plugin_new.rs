//! `nats-callout plugin new NAME`: a partner's plugin crate, outside any checkout of this
//! repository. The template is the repository's own example plugin
//! (`examples/apikey-plugin`), which the tests build and load, so what this writes is
//! what they prove: only its name, and where the SDK comes from, change.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

const CARGO_TOML: &str = include_str!("../../../examples/apikey-plugin/Cargo.toml");
const LIB_RS: &str = include_str!("../../../examples/apikey-plugin/src/lib.rs");
const README: &str = include_str!("../../../examples/apikey-plugin/README.md");

/// The template's crate name, replaced by the new one.
const TEMPLATE_NAME: &str = "nats-callout-plugin-apikey";
/// The template's last lines: the in-repository SDK, replaced by crates.io's.
const IN_REPO_PATCH: &str =
    "[patch.crates-io]\nnats-callout-sdk = { path = \"../../guest-sdk\" }\n";

/// Writes the crate `name` into `dir/name`. `sdk`: a local SDK checkout (or unpacked
/// crate) to build against instead of crates.io's.
pub fn run(name: &str, dir: &Path, sdk: Option<&Path>) -> Result<PathBuf> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!(
            "{name:?} is not a crate name for a plugin: lower-case letters, digits, `-` and \
             `_`, starting with a letter"
        );
    }
    let root = dir.join(name);
    if root.exists() {
        bail!("{} exists already", root.display());
    }
    let patch = match sdk {
        Some(path) => {
            let path = path
                .canonicalize()
                .with_context(|| format!("--sdk {}", path.display()))?;
            if !path.join("Cargo.toml").is_file() {
                bail!("--sdk {}: no Cargo.toml there", path.display());
            }
            let path = serde_json::Value::from(path.to_string_lossy().into_owned());
            format!("[patch.crates-io]\nnats-callout-sdk = {{ path = {path} }}\n")
        }
        None => "# [patch.crates-io]\n# nats-callout-sdk = { path = \"/path/to/nats-callout/guest-sdk\" }\n"
            .to_owned(),
    };
    let cargo_toml = CARGO_TOML
        .strip_suffix(IN_REPO_PATCH)
        .context("the template's Cargo.toml no longer ends with its SDK patch")?
        .replace(
            &format!("name = \"{TEMPLATE_NAME}\""),
            &format!("name = \"{name}\""),
        )
        + &patch;
    let artifact = TEMPLATE_NAME.replace('-', "_");
    let readme = README
        .replace(&artifact, &name.replace('-', "_"))
        .replace(TEMPLATE_NAME, name);
    std::fs::create_dir_all(root.join("src"))
        .with_context(|| format!("cannot create {}", root.display()))?;
    for (file, text) in [
        ("Cargo.toml", cargo_toml.as_str()),
        ("src/lib.rs", LIB_RS),
        ("README.md", readme.as_str()),
        (".gitignore", "/target\n"),
    ] {
        std::fs::write(root.join(file), text)
            .with_context(|| format!("cannot write {}", root.join(file).display()))?;
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_the_example_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let root = run("fleet-auth", dir.path(), None).unwrap();
        let toml = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(toml.contains("name = \"fleet-auth\""), "{toml}");
        assert!(toml.contains("nats-callout-sdk = \"0.3\""), "{toml}");
        assert!(!toml.contains("../../guest-sdk") && toml.contains("# [patch.crates-io]"));
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        assert!(readme.contains("fleet_auth.wasm") && !readme.contains("apikey.wasm"));
        assert_eq!(
            std::fs::read_to_string(root.join("src/lib.rs")).unwrap(),
            LIB_RS
        );
        assert!(
            run("fleet-auth", dir.path(), None).is_err(),
            "exists already"
        );
        for bad in ["Fleet", "9lives", "a b", "../x", ""] {
            assert!(run(bad, dir.path(), None).is_err(), "{bad}");
        }
        let root = run("with-sdk", dir.path(), Some(Path::new("../guest-sdk"))).unwrap();
        let toml = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(
            toml.contains("\n[patch.crates-io]\nnats-callout-sdk = { path = \""),
            "{toml}"
        );
    }
}
