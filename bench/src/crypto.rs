//! Where a decision's time goes: the signature primitives one decision runs, as the
//! host runs them (aws-lc-rs for all of them: ed25519 to verify the request and sign the
//! user and response JWTs, RSA and ECDSA with keys parsed once for access tokens), and the
//! alternatives already in the dependency tree (ring via rustls, and each ed25519
//! implementation for both operations), for comparison.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::fixture::{Alg, Fixture};
use crate::stats::median;

/// One primitive's cost.
#[derive(Debug, Clone)]
pub struct Primitive {
    pub operation: String,
    pub used_for: String,
    pub ns: f64,
}

/// Median over `batches` of the mean ns of `f` run `n` times; `f` must succeed.
fn time(batches: usize, n: usize, mut f: impl FnMut() -> bool) -> Result<f64> {
    let mut means = Vec::with_capacity(batches);
    for _ in 0..batches {
        let started = Instant::now();
        for _ in 0..n {
            if !std::hint::black_box(f()) {
                bail!("a primitive failed to verify");
            }
        }
        means.push(started.elapsed().as_nanos() as f64 / n as f64);
    }
    Ok(median(&means))
}

fn key_of(set: &JwkSet, alg: Alg) -> Result<&Jwk> {
    set.keys
        .iter()
        .find(|k| {
            matches!(
                (&k.algorithm, alg),
                (AlgorithmParameters::RSA(_), Alg::Rs256)
                    | (AlgorithmParameters::EllipticCurve(_), Alg::Es256)
            )
        })
        .with_context(|| format!("no {} key in the JWKS", alg.as_str()))
}

/// A call that verifies one signature.
type Verify<'a> = &'a mut dyn FnMut() -> bool;

/// Runs `f` with its stack frame `PAD` bytes deeper than a direct call would put it.
#[inline(never)]
fn with_stack_moved<const PAD: usize>(f: Verify<'_>) -> bool {
    let pad = std::hint::black_box([0u8; PAD]);
    let ok = f();
    std::hint::black_box(&pad);
    ok
}

/// The same call with its stack moved through one 4 KiB page in 512 B steps; the first
/// is the plain call.
const SHIFTS: [fn(Verify<'_>) -> bool; 8] = [
    with_stack_moved::<0>,
    with_stack_moved::<512>,
    with_stack_moved::<1024>,
    with_stack_moved::<1536>,
    with_stack_moved::<2048>,
    with_stack_moved::<2560>,
    with_stack_moved::<3072>,
    with_stack_moved::<3584>,
];

/// ed25519 verification by each backend at eight stack addresses: per backend, (plain,
/// fastest, slowest) medians in ns. curve25519-dalek's AVX2 verification
/// (nkeys) runs measurably slower at some stack addresses than at others (a memory-alias
/// effect of the CPU, not of the code), and where the stack sits is an accident of the
/// caller: ASLR for the main thread, the call depth on a wasmtime fiber. This shows how
/// large that accident is on the machine of the run.
///
/// One batch of every backend and shift takes its turn before the next round, so a
/// burst of load on this shared machine lands on all of them alike, not on whichever one
/// it happened to coincide with (sequential blocks differed by up to 1.5× for that alone).
fn verify_by_backend_and_stack(
    batches: usize,
    n: usize,
    backends: &mut [Verify<'_>],
) -> Result<Vec<(f64, f64, f64)>> {
    let mut means = vec![vec![Vec::with_capacity(batches); SHIFTS.len()]; backends.len()];
    for _ in 0..batches {
        for (verify, per_shift) in backends.iter_mut().zip(&mut means) {
            for (shifted, m) in SHIFTS.iter().zip(per_shift.iter_mut()) {
                m.push(time(1, n, || shifted(&mut **verify))?);
            }
        }
    }
    Ok(means
        .iter()
        .map(|per_shift| {
            let medians: Vec<f64> = per_shift.iter().map(|m| median(m)).collect();
            (
                medians[0],
                medians.iter().copied().fold(f64::INFINITY, f64::min),
                medians.iter().copied().fold(0.0, f64::max),
            )
        })
        .collect())
}

/// Measure the primitives.
pub async fn run(fx: &Fixture, batches: usize, n: usize) -> Result<Vec<Primitive>> {
    let mut out = Vec::new();
    let kp = nkeys::KeyPair::new_account();
    let msg = vec![b'x'; 600]; // about the size of a signed request/response JWT body
    let sig = kp.sign(&msg)?;
    // The key exactly as the host parses and caches it.
    let host_key = nats_callout::nats::keys::PublicKey::parse(&kp.public_key())?;
    let backends = [
        (
            "aws-lc-rs, key parsed once",
            "request JWT; nkey mode: the nonce signature (what the host uses)",
        ),
        ("nkeys", "for comparison"),
    ];
    let timed = verify_by_backend_and_stack(
        batches,
        n,
        &mut [&mut || host_key.verify(&msg, &sig).is_ok(), &mut || {
            kp.verify(&msg, &sig).is_ok()
        }],
    )?;
    for ((backend, used_for), (plain, fastest, slowest)) in backends.into_iter().zip(timed) {
        out.push(Primitive {
            operation: format!("ed25519 verify ({backend})"),
            used_for: used_for.into(),
            ns: plain,
        });
        for (extreme, ns) in [("fastest", fastest), ("slowest", slowest)] {
            out.push(Primitive {
                operation: format!("ed25519 verify ({backend}), {extreme} of 8 stack addresses"),
                used_for: "the same call with its stack moved through one page in 512 B steps"
                    .into(),
                ns,
            });
        }
    }
    // nats-server sends a fresh `user_nkey` with every request; the host checks its type.
    let user = nkeys::KeyPair::new_user().public_key();
    for (operation, used_for, ns) in [
        (
            "NKey public key parse (aws-lc-rs)",
            "a client's NKey or a server id, once: the host caches them",
            time(batches, n, || {
                nats_callout::nats::keys::PublicKey::parse(&user).is_ok()
            })?,
        ),
        (
            "NKey public key parse (nkeys: decompresses the point)",
            "for comparison: how the host checked the fresh user_nkey of every request before",
            time(batches, n, || {
                nkeys::KeyPair::from_public_key(&user).is_ok()
            })?,
        ),
        (
            "NKey type check (base32, CRC, prefix)",
            "the fresh user_nkey of every request (what the host does now)",
            time(batches, n, || {
                nats_callout::nats::keys::is_public_key_of(&user, nkeys::KeyPairType::User)
            })?,
        ),
    ] {
        out.push(Primitive {
            operation: operation.into(),
            used_for: used_for.into(),
            ns,
        });
    }
    // The same key in the other two ed25519 implementations in the tree.
    let (_, seed) = nkeys::decode_seed(&kp.seed()?)?;
    let lc = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|e| anyhow::anyhow!("aws-lc-rs key: {e}"))?;
    let rg = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
        .map_err(|e| anyhow::anyhow!("ring key: {e}"))?;
    let public = aws_lc_rs::signature::KeyPair::public_key(&lc)
        .as_ref()
        .to_vec();
    let rg_pub = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public);
    for (operation, used_for, ns) in [
        (
            "ed25519 sign (aws-lc-rs)",
            "user JWT and response JWT (what the host uses)",
            time(batches, n, || !lc.sign(&msg).as_ref().is_empty())?,
        ),
        (
            "ed25519 sign (nkeys)",
            "for comparison",
            time(batches, n, || kp.sign(&msg).is_ok())?,
        ),
        (
            "ed25519 sign (ring)",
            "for comparison",
            time(batches, n, || !rg.sign(&msg).as_ref().is_empty())?,
        ),
        (
            "ed25519 verify (ring)",
            "for comparison",
            time(batches, n, || rg_pub.verify(&msg, &sig).is_ok())?,
        ),
    ] {
        out.push(Primitive {
            operation: operation.into(),
            used_for: used_for.into(),
            ns,
        });
    }

    let jwks: JwkSet = serde_json::from_str(&crate::fixture::http_get(fx.oidc.port, "/jwks")?)
        .context("provider JWKS")?;
    for alg in [Alg::Rs256, Alg::Es256] {
        let token = fx.token(alg).await?;
        let (message, sig_b64) = token.rsplit_once('.').context("token is not a JWS")?;
        let sig = URL_SAFE_NO_PAD.decode(sig_b64)?;
        let jwk = key_of(&jwks, alg)?;
        let key = DecodingKey::from_jwk(jwk)?;
        let jalg = match alg {
            Alg::Rs256 => Algorithm::RS256,
            Alg::Es256 => Algorithm::ES256,
        };
        out.push(Primitive {
            operation: format!("{} verify (jsonwebtoken, aws-lc-rs)", alg.as_str()),
            used_for: "for comparison: parses the key on every token".into(),
            ns: time(batches, n, || {
                jsonwebtoken::crypto::verify(sig_b64, message.as_bytes(), &key, jalg)
                    .unwrap_or(false)
            })?,
        });
        // The key exactly as the host's JWKS loader builds it.
        let parsed =
            nats_callout::identity::oauth::jwks::usable_key(jwk).context("JWK not usable")?;
        out.push(Primitive {
            operation: format!("{} verify (aws-lc-rs, key parsed once)", alg.as_str()),
            used_for: "oauth2 access token (what the host uses)".into(),
            ns: time(batches, n, || {
                parsed.key.verify_sig(message.as_bytes(), &sig).is_ok()
            })?,
        });
        let ring_ns = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                let n_bytes = URL_SAFE_NO_PAD.decode(&rsa.n)?;
                let e_bytes = URL_SAFE_NO_PAD.decode(&rsa.e)?;
                let public = ring::signature::RsaPublicKeyComponents {
                    n: n_bytes,
                    e: e_bytes,
                };
                time(batches, n, || {
                    public
                        .verify(
                            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                            message.as_bytes(),
                            &sig,
                        )
                        .is_ok()
                })?
            }
            AlgorithmParameters::EllipticCurve(ec) => {
                let mut point = vec![0x04];
                point.extend(URL_SAFE_NO_PAD.decode(&ec.x)?);
                point.extend(URL_SAFE_NO_PAD.decode(&ec.y)?);
                let public = ring::signature::UnparsedPublicKey::new(
                    &ring::signature::ECDSA_P256_SHA256_FIXED,
                    point,
                );
                time(batches, n, || {
                    public.verify(message.as_bytes(), &sig).is_ok()
                })?
            }
            _ => bail!("unexpected key type"),
        };
        out.push(Primitive {
            operation: format!("{} verify (ring)", alg.as_str()),
            used_for: "for comparison: already in the tree via rustls".into(),
            ns: ring_ns,
        });
    }
    Ok(out)
}
