//! Precompiled components on disk, so a restart (or a reload, or every replica start)
//! does not recompile. Compiling a plugin with Cranelift takes 100s of milliseconds;
//! loading a precompiled one is a file map.
//!
//! Keyed by the component's SHA-256 and the engine's compatibility hash (wasmtime
//! version, target, and every codegen-affecting setting), so a stale artifact is never
//! loaded. Deserialising native code is only as safe as the bytes: the cache is used
//! only if the directory is ours and not writable by anyone else, each file ends in
//! the SHA-256 of the artifact before it (a torn or corrupted file is recompiled, not
//! executed), and files are written to a unique temporary name, synced, then renamed.

use std::hash::{Hash, Hasher};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Environment variable naming the cache directory; empty disables the cache.
pub const CACHE_DIR_ENV: &str = "AUTH_CALLOUT_CACHE_DIR";

/// The default: `$AUTH_CALLOUT_CACHE_DIR`, else `<tmp>/nats-callout-<uid>` (writable in
/// a read-only container with an emptyDir or tmpfs on /tmp).
pub fn default_dir() -> Option<PathBuf> {
    match std::env::var(CACHE_DIR_ENV) {
        Ok(d) if d.is_empty() => None,
        Ok(d) => Some(PathBuf::from(d)),
        Err(_) => Some(std::env::temp_dir().join(format!("nats-callout-{}", uid()))),
    }
}

#[cfg(unix)]
fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

#[cfg(not(unix))]
fn uid() -> u32 {
    0
}

/// Is `dir` safe to load native code from: ours, and writable by nobody else?
#[cfg(unix)]
fn trusted(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid() && m.mode() & 0o022 == 0)
}

#[cfg(not(unix))]
fn trusted(_dir: &Path) -> bool {
    false
}

fn ensure_dir(dir: &Path) -> bool {
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        if builder.create(dir).is_err() {
            return false;
        }
    }
    trusted(dir)
}

/// Load the component in `bytes`, from the cache when possible. Returns whether it came
/// from the cache.
pub fn load(
    engine: &Engine,
    bytes: &[u8],
    dir: Option<&Path>,
) -> wasmtime::Result<(Component, bool)> {
    let Some(dir) = dir.filter(|d| ensure_dir(d)) else {
        return Ok((Component::new(engine, bytes)?, false));
    };
    let mut engine_hash = std::hash::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let key = format!(
        "{:x}-{:016x}.cwasm",
        Sha256::digest(bytes),
        engine_hash.finish()
    );
    let path = dir.join(key);
    if path.exists() {
        if intact(&path) {
            match map(engine, &path) {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring a precompiled plugin wasmtime refuses")
                }
            }
        } else {
            tracing::warn!(path = %path.display(), "ignoring a damaged precompiled plugin")
        }
    }
    let component = Component::new(engine, bytes)?;
    if let Err(e) = store(dir, &path, &component) {
        tracing::debug!(error = %e, "could not cache a precompiled plugin");
        return Ok((component, false));
    }
    // Use the stored copy rather than the one in memory: see [`map`].
    Ok((map(engine, &path).unwrap_or(component), false))
}

/// Map a cache file, which the caller found intact.
///
/// Why a file map and not the bytes: a component deserialised from memory gets each
/// linear memory's initial image copied into a sealed memfd, and sealing can fail (seen
/// in CI: "cannot add seals to the memfd" loading the 18 MB Python plugin while other
/// tests ran; the kernel refuses `F_SEAL_WRITE` while a page is still referenced).
/// Mapped from the file, the images are mapped copy-on-write straight from it: no copy,
/// no seal, and replicas on one node share the page cache.
fn map(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was written by `Component::serialize` of an engine with this
    // compatibility hash (its name says so), into a directory only this user can
    // write (checked by `ensure_dir`), and is intact (its digest matched). Files are
    // only ever replaced by rename, never rewritten in place, so the mapping cannot
    // change under us. wasmtime ignores the digest after the artifact's last section.
    unsafe { Component::deserialize_file(engine, path) }
}

/// Does the cache file at `path` end in the SHA-256 of the artifact before it? Hashed
/// as it is read, not read whole: an artifact can be tens of MB (the Python plugin's),
/// every load and reload checks it, and wasmtime then maps the file itself.
fn intact(path: &Path) -> bool {
    let check = || -> std::io::Result<bool> {
        let mut file = std::fs::File::open(path)?;
        let Some(len) = file.metadata()?.len().checked_sub(32) else {
            return Ok(false);
        };
        let mut hasher = Sha256::new();
        std::io::copy(&mut (&mut file).take(len), &mut hasher)?;
        let mut digest = [0u8; 32];
        file.read_exact(&mut digest)?;
        Ok(hasher.finalize().as_slice() == digest)
    };
    check().unwrap_or(false)
}

/// Write-then-rename, synced: replicas sharing the directory never see half a file,
/// and a crash cannot leave one under the final name.
fn store(dir: &Path, path: &Path, component: &Component) -> Result<(), String> {
    let artifact = component.serialize().map_err(|e| e.to_string())?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
    tmp.write_all(&artifact)
        .and_then(|()| tmp.write_all(&Sha256::digest(&artifact)))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| e.to_string())?;
    tmp.persist(path).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real component: the noauth plugin as `scripts/setup` (run by `scripts/test`)
    /// builds it.
    fn component_bytes() -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/noauth.wasm");
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup first", path.display()))
    }

    #[test]
    fn second_load_comes_from_the_cache_and_only_from_a_private_dir() {
        let engine = Engine::default();
        let bytes = component_bytes();
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let (first, cached) = load(&engine, &bytes, Some(&cache)).unwrap();
        assert!(!cached);
        let (second, cached) = load(&engine, &bytes, Some(&cache)).unwrap();
        assert!(cached, "the second load must not recompile");
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
        // Both run from the cache file, mapped: not from a copy in memory (see `map`).
        #[cfg(target_os = "linux")]
        {
            let file = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap();
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            let mapped = |c: &Component| {
                let start = format!("{:x}-", c.image_range().start as usize);
                maps.lines()
                    .any(|l| l.starts_with(&start) && l.ends_with(&*file.path().to_string_lossy()))
            };
            assert!(mapped(&first) && mapped(&second), "{maps}");
        }

        // A damaged file (one byte flipped mid-way, or cut short) is recompiled and
        // replaced, never executed.
        let file = std::fs::read_dir(&cache)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let good = std::fs::read(&file).unwrap();
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x40;
        for damaged in [flipped, good[..good.len() - 100].to_vec()] {
            std::fs::write(&file, damaged).unwrap();
            let (_, cached) = load(&engine, &bytes, Some(&cache)).unwrap();
            assert!(!cached, "a damaged artifact was loaded");
            assert_eq!(std::fs::read(&file).unwrap(), good, "and rewritten");
        }

        // A directory others can write to is never trusted with native code.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
            let (_, cached) = load(&engine, &bytes, Some(&cache)).unwrap();
            assert!(!cached);
        }
    }
}
