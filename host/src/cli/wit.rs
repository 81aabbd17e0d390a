//! `nats-callout wit --out DIR`: the plugin contracts this host loads, as WIT packages a
//! plugin author in any language generates bindings from (componentize-py, jco, wit-bindgen)
//! without a checkout of this repository: `DIR/v0.3.0/plugin.wit` and one folder per
//! older version.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use nats_callout::runtime::contract::Version;

/// Writes every contract version into `out`; returns the files written, newest first.
pub fn write(out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for version in Version::ALL.into_iter().rev() {
        let dir = out.join(format!("v{}", version.as_str()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let file = dir.join("plugin.wit");
        std::fs::write(&file, version.wit())
            .with_context(|| format!("cannot write {}", file.display()))?;
        written.push(file);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_each_version_as_the_sdk_ships_it() {
        let dir = tempfile::tempdir().unwrap();
        let files = write(dir.path()).unwrap();
        assert_eq!(files.len(), Version::ALL.len());
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/wit");
        for version in Version::ALL {
            let name = format!("v{}/plugin.wit", version.as_str());
            assert_eq!(
                std::fs::read(dir.path().join(&name)).unwrap(),
                std::fs::read(sdk.join(&name)).unwrap(),
                "{name}"
            );
        }
    }
}
