//! Parts 2–4 over real sockets: connects through nats-server with a raw client
//! (static users, the null callout, nats-callout per mode), the reconnect storm, and
//! the decision cache's effect on a client reconnecting with the same token.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::fixture::{Alg, Fixture, NULL, Target, VERIFYING_NULL};
use crate::procs;
use crate::rawclient::{self, Client, Credential, Outcome, Tally};

/// nats-server's default `authorization.timeout`. It bounds two waits: for the client's
/// CONNECT (`Authentication Timeout`), and, from the moment nats-server publishes the
/// auth request, for the callout's answer (`processClientOrLeafCallout`; a late answer
/// is dropped and the client refused with `Authorization Violation`).
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Iteration counts of part 2.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Connects per scenario, one at a time.
    pub sequential: usize,
    /// Connects per scenario by `concurrency` clients at once.
    pub concurrent: usize,
    pub concurrency: usize,
    /// Every scenario's connects are split into this many rounds, and the rounds of all
    /// scenarios interleave: a slow minute on a shared machine hits every scenario alike
    /// instead of whichever ran then.
    pub rounds: usize,
    /// Unmeasured connects per scenario first (warm plugin instances, JWKS, buffers).
    pub warmup: usize,
}

/// CPU seconds spent during one measurement.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cpu {
    pub server: f64,
    pub responder: f64,
    /// The load generator (this process).
    pub client: f64,
}

impl Cpu {
    pub fn add(&mut self, o: Cpu) {
        self.server += o.server;
        self.responder += o.responder;
        self.client += o.client;
    }
}

/// Connects of one scenario at one concurrency, with the CPU they cost.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    /// What the client presents in CONNECT; the null callout is measured with each, so
    /// that nats-callout is compared with a baseline that put nats-server through the
    /// same connect (an 800-byte token costs nats-server work of its own).
    pub client: &'static str,
    pub concurrency: usize,
    pub tally: Tally,
    pub cpu: Cpu,
    /// Each round's figures, in round order: pairs of rows compare round by round.
    pub rounds: Vec<Round>,
}

/// One round of a row. Rounds of different scenarios with the same index ran seconds
/// apart, so the spread of their per-round ratios shows how much of a ratio is this
/// shared machine's load of the moment rather than the software.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub p50: Duration,
    pub per_sec: f64,
    /// CPU of the process answering the callout, µs per connect.
    pub callout_us: f64,
}

impl Row {
    pub fn connects_per_sec(&self) -> f64 {
        self.tally.admitted as f64 / self.tally.wall.as_secs_f64()
    }

    /// One round's connects and CPU.
    pub fn add_round(&mut self, tally: &Tally, cpu: Cpu) {
        self.rounds.push(Round {
            p50: tally.latencies.percentile(50.0),
            per_sec: tally.admitted as f64 / tally.wall.as_secs_f64(),
            callout_us: cpu.responder * 1e6 / tally.total().max(1) as f64,
        });
        self.tally.merge(tally);
        self.cpu.add(cpu);
    }

    /// CPU microseconds per connect of nats-server, of the callout, of the client.
    pub fn cpu_us(&self) -> (f64, f64, f64) {
        let n = self.tally.total().max(1) as f64;
        (
            self.cpu.server * 1e6 / n,
            self.cpu.responder * 1e6 / n,
            self.cpu.client * 1e6 / n,
        )
    }
}

/// `n` connects by `concurrency` clients against `target`, and the CPU they cost.
pub async fn measure(
    target: &mut Target,
    client: &Arc<Client>,
    n: usize,
    concurrency: usize,
) -> Result<(Tally, Cpu)> {
    let (s0, r0) = target.cpu()?;
    let c0 = procs::self_cpu_seconds();
    let tally = rawclient::closed_loop(client.clone(), n, concurrency).await;
    let (s1, r1) = target.cpu()?;
    let c1 = procs::self_cpu_seconds();
    target.check_alive()?;
    Ok((
        tally,
        Cpu {
            server: s1 - s0,
            responder: r1 - r0,
            client: c1 - c0,
        },
    ))
}

/// Connect until admitted (up to a few seconds), then `n` more: the target serves
/// and the credential is good. A refusal here is a broken setup, not a result.
pub async fn warm_up(target: &Target, client: &Arc<Client>, n: usize) -> Result<()> {
    let mut last = Outcome::Failed("not tried".into());
    for _ in 0..50 {
        last = client.connect_once().await.outcome;
        if last == Outcome::Admitted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if last != Outcome::Admitted {
        bail!(
            "{}: warm-up connect not admitted: {last:?} (logs in {})",
            target.name,
            target.dir().display()
        );
    }
    let t = rawclient::closed_loop(client.clone(), n, 4).await;
    if t.admitted != t.total() {
        bail!(
            "{}: warm-up connects refused: {}",
            target.name,
            t.problems()
        );
    }
    Ok(())
}

/// The targets of parts 2–4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    StaticUsers,
    Null,
    /// The null callout that verifies each request: the work every correct callout does.
    VerifyingNull,
    /// nats-callout with the decision cache off.
    Callout,
    /// nats-callout with the default decision cache.
    CalloutCached,
    /// nats-callout with the decision cache off and the built-in plugins compiled
    /// natively: what WebAssembly costs in the running service.
    CalloutNative,
}

/// Targets of parts 2–4, each started when a part first needs it and kept for the
/// others (idle, they cost nothing measurable).
pub struct Targets {
    slots: [Option<Target>; 6],
    /// What the null responder burns per request (`--null-busy-us`).
    null_busy: Duration,
}

impl Targets {
    pub fn new(null_busy: Duration) -> Self {
        Self {
            slots: Default::default(),
            null_busy,
        }
    }

    pub fn get(&mut self, fx: &Fixture, kind: Kind) -> Result<&mut Target> {
        let slot = &mut self.slots[kind as usize];
        if slot.is_none() {
            *slot = Some(match kind {
                Kind::StaticUsers => Target::static_users()?,
                Kind::Null => Target::null_callout(self.null_busy, false)?,
                Kind::VerifyingNull => Target::null_callout(self.null_busy, true)?,
                Kind::Callout => Target::nats_callout(fx, false, false)?,
                Kind::CalloutCached => Target::nats_callout(fx, true, false)?,
                Kind::CalloutNative => Target::nats_callout(fx, false, true)?,
            });
        }
        slot.as_mut().context("target just started")
    }
}

/// Suffix of a part-2 scenario whose nats-callout runs the built-in plugins natively;
/// the scenario without it is the same service with the WebAssembly builds.
pub const NATIVE_SUFFIX: &str = ", native plugin";

/// Part 2. Scenarios: static users; the null callout with each kind of client; nats-callout
/// with noauth, nkey, oauth2 RS256 and ES256 (cache off: every connect runs the plugin and
/// verifies the token); oauth2 RS256 with the plugin compiled natively (what WebAssembly
/// costs a connect); and oauth2 RS256 with the default cache (repeat connects with one
/// token). With `only` not empty, just the scenarios it names.
pub async fn run(
    fx: &Fixture,
    t: &mut Targets,
    opts: Options,
    only: &[String],
) -> Result<Vec<Row>> {
    let rs = Credential::Token(fx.token(Alg::Rs256).await?);
    let es = Credential::Token(fx.token(Alg::Es256).await?);
    let device = Credential::Nkey(fx.device.clone());
    let anonymous = Credential::Anonymous;
    let user = Credential::UserPass("bench".into(), "bench".into());
    let native_rs = format!("nats-callout oauth2 RS256{NATIVE_SUFFIX}");
    // Grouped by credential, each null run first (the plain one, then the verifying
    // one): within a round the runs a ratio compares follow each other, seconds closer
    // than they would otherwise be.
    let specs: Vec<(&str, Kind, &'static str, &Credential)> = vec![
        (
            "nats-server static users",
            Kind::StaticUsers,
            "user/password",
            &user,
        ),
        (NULL, Kind::Null, "anonymous", &anonymous),
        (VERIFYING_NULL, Kind::VerifyingNull, "anonymous", &anonymous),
        (
            "nats-callout noauth",
            Kind::Callout,
            "anonymous",
            &anonymous,
        ),
        (NULL, Kind::Null, "nkey", &device),
        (VERIFYING_NULL, Kind::VerifyingNull, "nkey", &device),
        ("nats-callout nkey", Kind::Callout, "nkey", &device),
        (NULL, Kind::Null, "RS256 token", &rs),
        (VERIFYING_NULL, Kind::VerifyingNull, "RS256 token", &rs),
        (
            "nats-callout oauth2 RS256",
            Kind::Callout,
            "RS256 token",
            &rs,
        ),
        (native_rs.as_str(), Kind::CalloutNative, "RS256 token", &rs),
        (
            "nats-callout oauth2 RS256, cache on",
            Kind::CalloutCached,
            "RS256 token",
            &rs,
        ),
        (NULL, Kind::Null, "ES256 token", &es),
        (VERIFYING_NULL, Kind::VerifyingNull, "ES256 token", &es),
        (
            "nats-callout oauth2 ES256",
            Kind::Callout,
            "ES256 token",
            &es,
        ),
    ];
    let mut scenarios: Vec<(String, &'static str, Kind, Arc<Client>)> = Vec::new();
    check_named(only, &specs.iter().map(|s| s.0).collect::<Vec<_>>())?;
    let wanted = |label: &str| only.is_empty() || only.iter().any(|o| o == label);
    for (label, kind, client_label, cred) in specs.into_iter().filter(|s| wanted(s.0)) {
        let target = t.get(fx, kind)?;
        let client = Arc::new(Client::new(target.port(), cred.clone()));
        warm_up(target, &client, opts.warmup).await?;
        scenarios.push((label.to_owned(), client_label, kind, client));
    }

    let rounds = opts.rounds.max(1);
    let mut rows: Vec<Row> = Vec::new();
    for (label, client, _, _) in &scenarios {
        for concurrency in [1, opts.concurrency] {
            rows.push(Row {
                scenario: label.clone(),
                client,
                concurrency,
                tally: Tally::default(),
                cpu: Cpu::default(),
                rounds: Vec::with_capacity(rounds),
            });
        }
    }
    for round in 0..rounds {
        // All scenarios at one concurrency, then at the other: a callout run follows its
        // null run directly.
        for (ci, (concurrency, total)) in
            [(1, opts.sequential), (opts.concurrency, opts.concurrent)]
                .into_iter()
                .enumerate()
        {
            for (si, (_, _, kind, client)) in scenarios.iter().enumerate() {
                // Spread `total` over the rounds (the first rounds take the remainder).
                let n = total / rounds + usize::from(round < total % rounds);
                if n == 0 {
                    continue;
                }
                let target = t.get(fx, *kind)?;
                let (tally, cpu) = measure(target, client, n, concurrency).await?;
                rows[si * 2 + ci].add_round(&tally, cpu);
            }
        }
    }
    // `--sequential 0` or `--concurrent 0` (a profile of one concurrency): no row.
    rows.retain(|r| !r.rounds.is_empty());
    Ok(rows)
}

/// Fails on a name in `only` that no scenario has, with the names there are.
fn check_named(only: &[String], names: &[&str]) -> Result<()> {
    let Some(unknown) = only.iter().find(|o| !names.contains(&o.as_str())) else {
        return Ok(());
    };
    let mut known: Vec<String> = Vec::new();
    for name in names.iter().map(|n| format!("{n:?}")) {
        if !known.contains(&name) {
            known.push(name);
        }
    }
    bail!(
        "no part-2 scenario is named {unknown:?}; the scenarios are {}",
        known.join(", ")
    )
}

/// How many connects [`rounds`] makes per scenario.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Connects one at a time, and by `concurrency` clients, over all rounds.
    pub sequential: usize,
    pub concurrent: usize,
    pub concurrency: usize,
    pub rounds: usize,
    /// Unmeasured connects per scenario first.
    pub warmup: usize,
}

/// Scenarios measured as part 2's: each a client (sending `sends`) against its target,
/// named `name`, all warmed up, then one at a time and `concurrency` at once in
/// interleaved rounds. `counted` reads a counter of outside work (a provider's
/// introspections) around each measurement; its growth is the row's second figure.
pub async fn rounds(
    scenarios: &mut [(String, &'static str, &mut Target, Arc<Client>)],
    sizes: Sizes,
    mut counted: impl AsyncFnMut() -> Result<u64>,
) -> Result<Vec<(Row, u64)>> {
    let mut rows = Vec::new();
    for (name, sends, target, client) in scenarios.iter_mut() {
        warm_up(target, client, sizes.warmup)
            .await
            .with_context(|| name.clone())?;
        for concurrency in [1, sizes.concurrency] {
            let row = Row {
                scenario: name.clone(),
                client: sends,
                concurrency,
                tally: Tally::default(),
                cpu: Cpu::default(),
                rounds: Vec::with_capacity(sizes.rounds),
            };
            rows.push((row, 0));
        }
    }
    let rounds = sizes.rounds.max(1);
    for round in 0..rounds {
        let each = [(1, sizes.sequential), (sizes.concurrency, sizes.concurrent)];
        for (ci, (concurrency, total)) in each.into_iter().enumerate() {
            let n = total / rounds + usize::from(round < total % rounds);
            if n == 0 {
                continue;
            }
            for (si, (_, _, target, client)) in scenarios.iter_mut().enumerate() {
                let before = counted().await?;
                let (tally, cpu) = measure(target, client, n, concurrency).await?;
                let (row, count) = &mut rows[si * 2 + ci];
                row.add_round(&tally, cpu);
                *count += counted().await? - before;
            }
        }
    }
    Ok(rows)
}

/// A reconnect storm against one target.
#[derive(Debug, Clone)]
pub struct StormRow {
    pub target: String,
    pub clients: usize,
    pub tally: Tally,
    pub cpu: Cpu,
    /// Decisions served from / missing in the decision cache during the storm.
    pub cache_hits: f64,
    pub cache_misses: f64,
}

/// Part 3: `n` clients connect at once with the storm tokens (a handful of distinct
/// oauth2 tokens, RS256 and ES256).
pub async fn storm(fx: &Fixture, target: &mut Target, n: usize) -> Result<StormRow> {
    let tokens = fx.storm_tokens().await?;
    let clients: Vec<Arc<Client>> = tokens
        .into_iter()
        .map(|tok| Arc::new(Client::new(target.port(), Credential::Token(tok))))
        .collect();
    // Warm with another token, so that a cache (if on) does not hold the storm's.
    let warm = Arc::new(Client::new(
        target.port(),
        Credential::Token(fx.token(Alg::Rs256).await?),
    ));
    warm_up(target, &warm, 20).await?;
    let name = target.name.clone();
    burst(target, &clients, n, name).await
}

/// `n` clients connect at once, client `i` as `clients[i % len]`, against `target`, once
/// the sockets of what ran before have closed: the storm's tally, CPU and decision-cache
/// counters, reported as `name`.
pub async fn burst(
    target: &mut Target,
    clients: &[Arc<Client>],
    n: usize,
    name: String,
) -> Result<StormRow> {
    // Let earlier sockets close and nats-server settle before the burst.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (h0, m0) = cache_counters(target);
    let (s0, r0) = target.cpu()?;
    let c0 = procs::self_cpu_seconds();
    let tally = rawclient::storm(clients, n).await;
    let (s1, r1) = target.cpu()?;
    let c1 = procs::self_cpu_seconds();
    let (h1, m1) = cache_counters(target);
    target.check_alive()?;
    Ok(StormRow {
        target: name,
        clients: n,
        tally,
        cpu: Cpu {
            server: s1 - s0,
            responder: r1 - r0,
            client: c1 - c0,
        },
        cache_hits: h1 - h0,
        cache_misses: m1 - m0,
    })
}

fn cache_counters(target: &Target) -> (f64, f64) {
    (
        target.metric("decision_cache_hits_total").unwrap_or(0.0),
        target.metric("decision_cache_misses_total").unwrap_or(0.0),
    )
}

/// Part 4, end to end: one token reconnecting `n` times, one at a time.
#[derive(Debug, Clone)]
pub struct CacheRow {
    pub cache: bool,
    pub tally: Tally,
    pub cpu: Cpu,
    pub cache_hits: f64,
    pub cache_misses: f64,
}

/// The same (fresh) RS256 token reconnects `n` times against nats-callout with the
/// cache off and on; the two alternate in `rounds` chunks.
pub async fn cache_effect(
    fx: &Fixture,
    t: &mut Targets,
    n: usize,
    rounds: usize,
) -> Result<[CacheRow; 2]> {
    let token = fx.token(Alg::Rs256).await?;
    let mut rows = [false, true].map(|cache| CacheRow {
        cache,
        tally: Tally::default(),
        cpu: Cpu::default(),
        cache_hits: 0.0,
        cache_misses: 0.0,
    });
    let rounds = rounds.max(1);
    for round in 0..rounds {
        let chunk = n / rounds + usize::from(round < n % rounds);
        for row in rows.iter_mut() {
            let kind = if row.cache {
                Kind::CalloutCached
            } else {
                Kind::Callout
            };
            let target = t.get(fx, kind)?;
            let client = Arc::new(Client::new(target.port(), Credential::Token(token.clone())));
            let (h0, m0) = cache_counters(target);
            let (tally, cpu) = measure(target, &client, chunk, 1).await?;
            let (h1, m1) = cache_counters(target);
            row.tally.merge(&tally);
            row.cpu.add(cpu);
            row.cache_hits += h1 - h0;
            row.cache_misses += m1 - m0;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_that_does_not_exist_is_an_error_naming_those_that_do() {
        let names = ["null callout", "nats-callout nkey", "null callout", "a, b"];
        assert!(check_named(&[], &names).is_ok());
        assert!(check_named(&["a, b".into(), "null callout".into()], &names).is_ok());
        let err = check_named(&["nkey".into()], &names).expect_err("no such scenario");
        assert_eq!(
            err.to_string(),
            r#"no part-2 scenario is named "nkey"; the scenarios are "null callout", "nats-callout nkey", "a, b""#
        );
    }
}
