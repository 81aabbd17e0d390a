//! Every fuzz target as a property test, on stable: arbitrary bytes, and the seed corpus
//! (`fuzz/corpus/<target>/`) with bytes overwritten, inserted and cut, so that the
//! structured paths (signed claims, sealed requests) are reached too. Then every
//! recorded failure in `fuzz/regressions/<target>/`.

use std::path::PathBuf;

use proptest::prelude::*;

use super::TARGETS;

/// Cases per strategy and target. Each case takes microseconds to a millisecond: 4,000
/// random and 4,000 mutated inputs per target run in about 15 s on the CI machine, a
/// smoke test beside cargo-fuzz's millions (FUZZING.md), which finds what this misses.
const CASES: u32 = 4_000;

/// cargo-fuzz's folder, with the seed corpus and the regressions.
fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, if any.
fn files(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("a readable corpus file");
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

/// One edit of a seed: overwrite, insert or cut at a position.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Cut(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Set(at, b)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        (any::<usize>(), 1..32usize).prop_map(|(at, n)| Edit::Cut(at, n)),
    ]
}

fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for e in edits {
        let at = |i: usize| {
            if data.is_empty() {
                0
            } else {
                i % (data.len() + 1)
            }
        };
        match e {
            Edit::Set(i, b) => {
                if !data.is_empty() {
                    let i = i % data.len();
                    data[i] = *b;
                }
            }
            Edit::Insert(i, bytes) => {
                let i = at(*i);
                data.splice(i..i, bytes.iter().copied());
            }
            Edit::Cut(i, n) => {
                let i = at(*i);
                let end = (i + n).min(data.len());
                data.drain(i..end);
            }
        }
    }
    data
}

fn run(name: &str, target: fn(&[u8])) {
    let config = ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config.clone());
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..2048), |data| {
            target(&data);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let seeds: Vec<Vec<u8>> = files("corpus", name).into_iter().map(|(_, b)| b).collect();
    assert!(!seeds.is_empty(), "fuzz/corpus/{name}/ has no seed");
    let mut runner = proptest::test_runner::TestRunner::new(config);
    runner
        .run(
            &(0..seeds.len(), proptest::collection::vec(edit(), 0..8)),
            |(i, edits)| {
                target(&apply(&seeds[i], &edits));
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{name} (mutated seeds): {e}"));
}

macro_rules! properties {
    ($($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                run(stringify!($name), super::$name);
            }
        )*

        /// Every target of [`TARGETS`] has a property test here.
        #[test]
        fn every_target_is_tested() {
            let tested = [$(stringify!($name)),*];
            for (name, _) in TARGETS {
                assert!(tested.contains(&name), "{name} has no property test");
            }
        }
    };
}

properties!(
    request,
    access_token,
    jwks,
    dn,
    x509,
    subject_template,
    config,
    operator_jwt
);

/// Each input a fuzzer once crashed a target with, replayed.
#[test]
fn regressions_stay_fixed() {
    for (name, target) in TARGETS {
        for (path, bytes) in files("regressions", name) {
            let result = std::panic::catch_unwind(|| target(&bytes));
            assert!(result.is_ok(), "{name}: {} panics again", path.display());
        }
    }
}

/// The seeds reach past the first check: the structured paths are exercised at all.
#[test]
fn seeds_are_accepted_where_they_should_be() {
    for (_, bytes) in files("corpus", "request") {
        let token = super::signed_request(&bytes[1..]).expect("the request seed is JSON");
        super::verifier(false)
            .verify(token.as_bytes(), None)
            .expect("the request seed verifies once signed");
    }
    for (_, bytes) in files("corpus", "jwks") {
        assert!(nats_callout::identity::oauth::jwks::parse_keys(&bytes, 16).is_ok());
    }
    for (_, bytes) in files("corpus", "dn") {
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        assert!(nats_callout_plugin_mtls::dn::parse(text).is_ok());
    }
    for (_, bytes) in files("corpus", "x509") {
        let pem = String::from_utf8(bytes).expect("utf-8");
        assert!(nats_callout::identity::x509::parse_chain(&[pem]).is_ok());
    }
    for (_, bytes) in files("corpus", "config") {
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        nats_callout::ops::config::Config::parse(text, std::path::Path::new("fuzz.yaml"))
            .expect("the config seed parses");
    }
}
