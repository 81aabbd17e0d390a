//! Markdown tables of a run, the targets of issue #5 checked against them, the facts of
//! the machine, and splicing the result into BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::connect::{AUTH_TIMEOUT, CacheRow, NATIVE_SUFFIX, Round, Row, StormRow};
use crate::fixture::{NULL, VERIFYING_NULL};
use crate::pipeline;

/// Markers around the generated part of BENCHMARKS.md; text outside them is kept.
pub const BEGIN: &str = "<!-- BEGIN GENERATED RESULTS: written by `nats-callout-bench --write`; edits here are overwritten -->";
pub const END: &str = "<!-- END GENERATED RESULTS -->";

/// Targets of the issue.
const PIPELINE_MAX_RATIO: f64 = 1.10;
const PIPELINE_MAX_ADDED_US: f64 = 5.0;
const P50_MAX_RATIO: f64 = 1.10;
const P99_MAX_RATIO: f64 = 1.25;
const THROUGHPUT_MIN_RATIO: f64 = 0.9;
const CPU_MAX_SHARE: f64 = 0.35;

/// Where and how the numbers were taken.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpus: usize,
    pub model: String,
    pub mem_gib: f64,
    pub kernel: String,
    pub date: String,
    pub commit: String,
    pub nats_server: String,
    pub rustc: String,
    /// [`speed_probe_us`] at the start of the run.
    pub speed_before: f64,
    /// CPU time the hypervisor gave to others so far (`steal` in /proc/stat), seconds.
    pub steal_before: f64,
    /// Busy CPU seconds of the whole machine so far (/proc/stat), to tell how much of
    /// it other processes (other containers on the same kernel) used during the run.
    pub busy_before: f64,
}

fn cmd_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Fields of the aggregate `cpu` line of /proc/stat, in seconds: user, nice, system,
/// idle, iowait, irq, softirq, steal, ...
fn proc_stat_cpu() -> Vec<f64> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    stat.lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse::<f64>().ok())
                .map(|t| t / hz)
                .collect()
        })
        .unwrap_or_default()
}

/// Total steal time of all CPUs so far, in seconds (0 where not reported).
fn steal_seconds() -> f64 {
    proc_stat_cpu().get(7).copied().unwrap_or(0.0)
}

/// Busy CPU seconds of all CPUs so far: user, nice, system, irq, softirq.
fn busy_seconds() -> f64 {
    let f = proc_stat_cpu();
    [0, 1, 2, 5, 6].iter().filter_map(|&i| f.get(i)).sum()
}

/// CPU seconds of this process and of its children that have been waited for (all the
/// benchmark's children are, once their handles drop).
fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut children: libc::rusage = unsafe { std::mem::zeroed() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let waited = if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut children) } == 0 {
        secs(children.ru_utime) + secs(children.ru_stime)
    } else {
        0.0
    };
    crate::procs::self_cpu_seconds() + waited
}

/// A fixed CPU-bound workload (an ed25519 verification), µs per run, median of a few
/// batches. Taken at the start and the end of a run: on a virtual machine whose physical
/// cores are shared with other guests it shows how much slower a core got, which
/// neither the load average nor steal time reveals.
pub fn speed_probe_us() -> f64 {
    let kp = nkeys::KeyPair::new_account();
    let msg = [7u8; 600];
    let Ok(sig) = kp.sign(&msg) else {
        return f64::NAN;
    };
    let mut batches = Vec::new();
    for _ in 0..7 {
        let started = std::time::Instant::now();
        for _ in 0..200 {
            let _ = std::hint::black_box(kp.verify(&msg, &sig));
        }
        batches.push(started.elapsed().as_secs_f64() * 1e6 / 200.0);
    }
    crate::stats::median(&batches)
}

impl Machine {
    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let commit = cmd_output("git", &["rev-parse", "--short=12", "HEAD"]).unwrap_or_default();
        // BENCHMARKS.md is the file this run rewrites; its old text changes no measurement.
        let dirty = cmd_output(
            "git",
            &[
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!BENCHMARKS.md",
            ],
        )
        .is_some_and(|s| !s.is_empty());
        Self {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            model,
            mem_gib: mem_kib / (1024.0 * 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            date: cmd_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
            commit: if dirty {
                format!("{commit} (with uncommitted changes)")
            } else {
                commit
            },
            nats_server: cmd_output(
                &nats_callout_tests::nats_server_bin().display().to_string(),
                &["--version"],
            )
            .unwrap_or_default(),
            rustc: cmd_output("rustc", &["--version"]).unwrap_or_default(),
            speed_before: speed_probe_us(),
            steal_before: steal_seconds(),
            busy_before: busy_seconds() - own_cpu_seconds(),
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Results {
    pub machine: Option<Machine>,
    pub command: String,
    pub wall: Duration,
    pub debug_build: bool,
    pub pipeline: Option<(pipeline::Report, pipeline::Options)>,
    /// Signature primitives (part 1's "where the time goes").
    pub primitives: Vec<crate::crypto::Primitive>,
    pub connect: Option<(Vec<Row>, crate::connect::Options)>,
    pub storm: Vec<StormRow>,
    pub cache: Option<CacheResults>,
    /// What the null responder burned per request (`--null-busy-us`; normally zero).
    pub null_busy: Duration,
    /// Part 5: introspection and the registry storm.
    pub outbound: Option<crate::outbound::Report>,
    /// Part 6: one plugin in Rust, Python and JavaScript.
    pub languages: Option<crate::languages::Report>,
    /// Part 7: the cluster under faults.
    pub cluster: Option<Vec<crate::cluster::Row>>,
    /// Part 8: the soak.
    pub soak: Option<crate::soak::Report>,
}

/// Part 4: end to end, and in process.
#[derive(Debug)]
pub struct CacheResults {
    pub rows: [CacheRow; 2],
    /// ns per decision, cache off and on.
    pub in_process: (f64, f64),
    /// ns per decision (cache off), without and with a revocation list and audit recording.
    pub revocation: (f64, f64),
}

fn us(ns: f64) -> String {
    format!("{:.1}", ns / 1000.0)
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn ms_f(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn yes(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**missed**" }
}

/// A check of one target.
struct Check {
    target: String,
    measured: String,
    ok: bool,
}

impl Results {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let mut checks: Vec<Check> = Vec::new();
        let w = &mut out;
        if self.debug_build {
            let _ = writeln!(
                w,
                "> **Debug build: these numbers mean nothing. Run with `--release`.**\n"
            );
        }
        if let Some(m) = &self.machine {
            let _ = writeln!(w, "### Run\n\n| | |\n|---|---|");
            let _ = writeln!(w, "| date | {} |", m.date);
            let _ = writeln!(w, "| commit | {} |", m.commit);
            let _ = writeln!(w, "| command | `{}` |", self.command);
            if !self.null_busy.is_zero() {
                let _ = writeln!(
                    w,
                    "| **null callout** | **spins {} µs per request before answering \
                     (`--null-busy-us`): a diagnostic, not the floor; its ratios below are \
                     not the targets' ratios** |",
                    self.null_busy.as_micros()
                );
            }
            let _ = writeln!(
                w,
                "| machine | {} CPUs ({}), {:.1} GiB RAM, Linux {} |",
                m.cpus, m.model, m.mem_gib, m.kernel
            );
            let _ = writeln!(w, "| software | {}, {} |", m.nats_server, m.rustc);
            let _ = writeln!(
                w,
                "| CPU speed probe (one ed25519 verify) | {:.1} µs at the start, {:.1} µs at the end \
                 (higher = a slower core, e.g. other guests busy on the same physical cores) |",
                m.speed_before,
                speed_probe_us()
            );
            let others = busy_seconds() - own_cpu_seconds() - m.busy_before;
            let capacity = self.wall.as_secs_f64() * m.cpus.max(1) as f64;
            let _ = writeln!(
                w,
                "| CPU used by other processes during the run | {:.0} s of {:.0} s available ({:.0}%; \
                 from /proc/stat), plus {:.1} s stolen by the hypervisor |",
                others.max(0.0),
                capacity,
                100.0 * others.max(0.0) / capacity,
                steal_seconds() - m.steal_before
            );
            let _ = writeln!(w, "| wall time | {:.0} s |\n", self.wall.as_secs_f64());
        }

        if let Some((p, opts)) = &self.pipeline {
            let (caches, cold) = if opts.evict_bytes == 0 {
                (String::new(), "")
            } else {
                (
                    format!(
                        " **Before every call, untimed, {} MiB of unrelated memory is read, so \
                         that the call starts with cold caches (`--evict-mib`).**",
                        opts.evict_bytes >> 20
                    ),
                    ", caches evicted",
                )
            };
            let _ = writeln!(
                w,
                "### 1. Decision pipeline, in process: WASM vs native\n\n\
                 `Authorizer::handle` on forged authorization requests (verify the request JWT, \
                 route, run the plugin, check the grant, sign the user JWT and the response JWT), \
                 decision cache off. Native: the same plugin crates compiled into the host \
                 (`NativePlugin`). {} batches of {} decisions per side, WASM and native calls \
                 interleaved one by one, the first side swapping every call; warm instances.{caches} \
                 Columns 2–3: medians of the batches' means; columns 4–5: medians over the \
                 batches of the ratio and the difference of the two sides' means.\n",
                opts.batches, opts.per_batch
            );
            let _ = writeln!(
                w,
                "| mode | WASM µs/decision | native µs/decision | WASM / native | WASM − native µs |\n|---|---:|---:|---:|---:|"
            );
            for r in &p.pipeline {
                pair_row(w, r);
                if !r.targeted {
                    continue;
                }
                checks.push(Check {
                    target: format!("1. {}{cold}: WASM ≤ {PIPELINE_MAX_RATIO}× native", r.case),
                    measured: format!("{:.3}×", r.ratio()),
                    ok: r.ratio() <= PIPELINE_MAX_RATIO,
                });
                checks.push(Check {
                    target: format!(
                        "1. {}{cold}: WASM adds ≤ {PIPELINE_MAX_ADDED_US} µs",
                        r.case
                    ),
                    measured: format!("{:+.1} µs", r.added_us()),
                    ok: r.added_us() <= PIPELINE_MAX_ADDED_US,
                });
            }
            let _ = writeln!(
                w,
                "\nThe plugin call alone (`Runner::authenticate` on a decoded request: for WASM, \
                 taking a pooled instance, lowering the request into the component, the call \
                 on a fiber, the host capability it makes):\n"
            );
            let _ = writeln!(
                w,
                "| mode | WASM µs/call | native µs/call | WASM − native µs |\n|---|---:|---:|---:|"
            );
            for r in &p.plugin_call {
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {:+.1} |",
                    r.case,
                    us(r.wasm_ns),
                    us(r.native_ns),
                    r.added_us()
                );
            }
            let _ = writeln!(
                w,
                "\nContract versions: `Authorizer::handle` with the same two plugins built against \
                 contract 0.3.0 (this tree) and against an older one (`tests/fixtures/v0.2.0` and \
                 `v0.1.0`, built from the last tree of each), interleaved as above. 0.3.0 plugins \
                 get only the parts of a request they read (noauth: the TLS state; apikey: its \
                 credential), 0.2.0 plugins every part, 0.1.0 plugins the raw CONNECT fields, \
                 which the host keeps for routes with such plugins; the difference also holds \
                 the plugins' own changes between the trees (the SDK's request types).\n"
            );
            let _ = writeln!(
                w,
                "| plugin, against | 0.3.0 µs/decision | older µs/decision | 0.3.0 / older | 0.3.0 − older µs |\n|---|---:|---:|---:|---:|"
            );
            for r in &p.contracts {
                pair_row(w, r);
            }
            let _ = writeln!(w);
        }
        if !self.primitives.is_empty() {
            let _ = writeln!(
                w,
                "Signature primitives, one at a time on one thread (median of batches):\n\n\
                 | operation | in a decision | µs |\n|---|---|---:|"
            );
            for p in &self.primitives {
                let _ = writeln!(w, "| {} | {} | {} |", p.operation, p.used_for, us(p.ns));
            }
            let _ = writeln!(w);
        }

        if let Some((rows, opts)) = &self.connect {
            let _ = writeln!(
                w,
                "### 2. End-to-end connects on loopback\n\n\
                 Raw NATS client: TCP connect, INFO, `CONNECT`+`PING`, PONG, close. Per scenario \
                 {} connects one at a time and {} by {} concurrent clients (closed loop), in {} \
                 interleaved rounds; latency from TCP connect to PONG. CPU: user+system time \
                 from the kernel's CPU clock (nanoseconds) of nats-server, of the process \
                 answering the callout (null responder or nats-callout, each its own \
                 process) and of the load generator, per connect. \
                 nats-callout runs without the decision cache except in the \"cache on\" scenario.\n",
                opts.sequential, opts.concurrent, opts.concurrency, opts.rounds
            );
            let _ = writeln!(
                w,
                "| scenario | client sends | clients | connects/s | p50 ms | p99 ms | nats-server CPU µs | callout CPU µs | client CPU µs | not admitted |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
            );
            for r in rows {
                let (s, c, cl) = r.cpu_us();
                let callout = if r.scenario.starts_with("nats-server") {
                    "–".to_owned()
                } else {
                    format!("{c:.0}")
                };
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {:.0} | {} | {} | {:.0} | {} | {:.0} | {} |",
                    r.scenario,
                    r.client,
                    r.concurrency,
                    r.connects_per_sec(),
                    ms(r.tally.latencies.percentile(50.0)),
                    ms(r.tally.latencies.percentile(99.0)),
                    s,
                    callout,
                    cl,
                    problems_cell(&r.tally)
                );
            }
            let _ = writeln!(
                w,
                "\nRelative to the null callout with the same client credential at the same \
                 concurrency (so nats-server did the same work on the CONNECT), and the \
                 callout's CPU as a share of nats-server's for the same connects. In \
                 brackets: the lowest and highest ratio of single rounds (the two runs of a \
                 round are seconds apart), how far this machine's load moves a ratio:\n"
            );
            let _ = writeln!(
                w,
                "| scenario | client sends | clients | p50 × null | p99 × null | connects/s × null | callout CPU / nats-server CPU |\n|---|---|---:|---:|---:|---:|---:|"
            );
            for r in rows
                .iter()
                .filter(|r| r.scenario.starts_with("nats-callout"))
            {
                let Some(null) = reference(rows, NULL, r) else {
                    continue;
                };
                let versus = Versus::of(r, null);
                let (s, c, _) = r.cpu_us();
                let share = c / s;
                let _ = writeln!(
                    w,
                    "| {} | {} | {} | {} | {share:.2} |",
                    r.scenario,
                    r.client,
                    r.concurrency,
                    versus.cells()
                );
                let Versus {
                    p50,
                    p99,
                    tput,
                    p50_rounds,
                    tput_rounds,
                } = versus;
                if r.scenario == "nats-callout oauth2 RS256" {
                    let callout_us = c;
                    let c = if r.concurrency == 1 {
                        "sequential".to_owned()
                    } else {
                        format!("{} concurrent", r.concurrency)
                    };
                    // Against a padded null callout these are not the targets' ratios.
                    if self.null_busy.is_zero() {
                        checks.push(Check {
                            target: format!("2. oauth2 p50 ≤ {P50_MAX_RATIO}× null callout, {c}"),
                            measured: format!("{p50:.2}×{p50_rounds}"),
                            ok: p50 <= P50_MAX_RATIO,
                        });
                        checks.push(Check {
                            target: format!("2. oauth2 p99 ≤ {P99_MAX_RATIO}× null callout, {c}"),
                            measured: format!("{p99:.2}×"),
                            ok: p99 <= P99_MAX_RATIO,
                        });
                        checks.push(Check {
                            target: format!(
                                "2. oauth2 throughput ≥ {THROUGHPUT_MIN_RATIO}× null callout, {c}"
                            ),
                            measured: format!("{tput:.2}×{tput_rounds}"),
                            ok: tput >= THROUGHPUT_MIN_RATIO,
                        });
                    }
                    checks.push(Check {
                        target: format!(
                            "2. oauth2 callout CPU ≤ {CPU_MAX_SHARE}× nats-server CPU per connect, {c}"
                        ),
                        measured: format!("{share:.2}× ({callout_us:.0} vs {s:.0} µs)"),
                        ok: share <= CPU_MAX_SHARE,
                    });
                }
            }
            verifying_null(w, rows);
            wasm_vs_native(w, rows);
            let _ = writeln!(w);
        }

        if !self.storm.is_empty() {
            let _ = writeln!(
                w,
                "### 3. Reconnect storm\n\n\
                 All clients connect at once (one task each, started together) with oauth2 tokens \
                 of {} OIDC clients (RS256 and ES256), against one nats-server and its callout; \
                 the null callout's rows are the reference (what nats-server itself makes of the \
                 storm on this machine). nats-server waits its auth timeout ({} s) for the \
                 callout's answer from the moment it publishes the request, and refuses the \
                 client (`Authorization Violation`) if none came; every token here is valid, so \
                 any refusal is such a timeout. Two latencies per client: from the start of the \
                 storm to its PONG (includes the wait in the listen backlog before nats-server \
                 accepts it), and from sending CONNECT to PONG, an upper bound of nats-server's \
                 wait for the callout (it also holds nats-server's own work on the connect before \
                 and after). Target: p99 of that under {} ms.\n",
                crate::fixture::STORM_CLIENTS,
                AUTH_TIMEOUT.as_secs(),
                AUTH_TIMEOUT.as_millis() / 2
            );
            let _ = writeln!(
                w,
                "| callout | clients | admitted | refused / failed | completion s | p50 / p99 / max ms from storm start | p50 / p99 / max ms CONNECT→PONG | nats-server CPU s | callout CPU s | callout CPU µs/connect | cache hits / misses |\n|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"
            );
            for r in &self.storm {
                let p99 = r.tally.since_connect.percentile(99.0);
                let _ = writeln!(
                    w,
                    "{} | {:.0} / {:.0} |",
                    storm_cells(r),
                    r.cache_hits,
                    r.cache_misses
                );
                if !r.target.starts_with("nats-callout") {
                    continue; // the null callout is the reference, not under test
                }
                checks.push(Check {
                    target: format!("3. storm, {}: zero auth timeouts (all admitted)", r.target),
                    measured: format!("{} of {} admitted", r.tally.admitted, r.clients),
                    ok: r.tally.admitted == r.clients,
                });
                checks.push(Check {
                    target: format!(
                        "3. storm, {}: p99 CONNECT→PONG < {} ms",
                        r.target,
                        AUTH_TIMEOUT.as_millis() / 2
                    ),
                    measured: format!("{} ms", ms(p99)),
                    ok: p99 < AUTH_TIMEOUT / 2,
                });
            }
            let _ = writeln!(w);
        }

        if let Some(CacheResults {
            rows,
            in_process: (off_ns, on_ns),
            revocation: (plain_ns, revoking_ns),
        }) = &self.cache
        {
            let n = rows[0].tally.total();
            let _ = writeln!(
                w,
                "### 4. Decision cache: one token reconnecting\n\n\
                 The same oauth2 RS256 token connects {n} times, one at a time, against \
                 nats-callout with the cache off (`decision_cache: {{ ttl: 0s }}`) and on (the \
                 default, 60 s); the two alternate in chunks.\n"
            );
            let _ = writeln!(
                w,
                "| cache | connects | connects/s | p50 ms | p99 ms | callout CPU µs/connect | nats-server CPU µs/connect | cache hits / misses |\n|---|---:|---:|---:|---:|---:|---:|---|"
            );
            for r in rows {
                let lat = &r.tally.latencies;
                let total = r.tally.total().max(1) as f64;
                let _ = writeln!(
                    w,
                    "| {} | {} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} / {:.0} |",
                    if r.cache { "on" } else { "off" },
                    r.tally.total(),
                    r.tally.admitted as f64 / r.tally.wall.as_secs_f64(),
                    ms(lat.percentile(50.0)),
                    ms(lat.percentile(99.0)),
                    r.cpu.responder * 1e6 / total,
                    r.cpu.server * 1e6 / total,
                    r.cache_hits,
                    r.cache_misses
                );
            }
            let _ = writeln!(
                w,
                "\nIn process (`Authorizer::handle`, same token every time): {} µs/decision with \
                 the cache off, {} µs with it on ({:.1}× faster).\n",
                us(*off_ns),
                us(*on_ns),
                off_ns / on_ns
            );
            let _ = writeln!(
                w,
                "With a revocation list of 10,000 identities and every decision recorded for \
                 audit events and kicking (`revocation.file`, `nats[].audit_subject`), cache \
                 off: {} µs/decision against {} µs without ({:+.1} µs: the token's identity \
                 read, looked up, the record copied; the event is serialised and published \
                 after the answer, outside this figure).\n",
                us(*revoking_ns),
                us(*plain_ns),
                (revoking_ns - plain_ns) / 1000.0
            );
        }

        if let Some(report) = &self.outbound {
            outbound(w, report, &mut checks);
        }

        if let Some(report) = &self.languages {
            languages(w, report);
        }

        if let Some(rows) = &self.cluster {
            cluster(w, rows, &mut checks);
        }

        if let Some(report) = &self.soak {
            soak(w, report, &mut checks);
        }

        if !checks.is_empty() {
            let _ = writeln!(
                w,
                "### Targets (issues #5, #18 and #20)\n\n| target | measured | |\n|---|---|---|"
            );
            for c in &checks {
                let _ = writeln!(w, "| {} | {} | {} |", c.target, c.measured, yes(c.ok));
            }
            let _ = writeln!(w);
        }
        out
    }
}

/// `reason ×count, …` of a tally of reasons, or "0" when it is empty.
fn counts(m: &std::collections::BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "0".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Clients not admitted: "0", or how many of each kind of refusal or failure.
fn problems_cell(tally: &crate::rawclient::Tally) -> String {
    match tally.problems() {
        p if p.is_empty() => "0".to_owned(),
        p => p,
    }
}

/// A row of part 1's tables: case, both sides' µs, their ratio and difference.
fn pair_row(w: &mut String, r: &pipeline::Pair) {
    let _ = writeln!(
        w,
        "| {} | {} | {} | {:.3}× | {:+.1} |",
        r.case,
        us(r.wasm_ns),
        us(r.native_ns),
        r.ratio(),
        r.added_us()
    );
}

/// The cells of a storm row up to the callout's CPU per connect: target, clients,
/// admitted, problems, completion, latencies from the storm's start and from CONNECT,
/// CPU of nats-server and of the callout.
fn storm_cells(r: &StormRow) -> String {
    let lat = &r.tally.latencies;
    let auth = &r.tally.since_connect;
    let problems = problems_cell(&r.tally);
    format!(
        "| {} | {} | {} | {} | {:.2} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {:.2} | {:.2} | {:.0}",
        r.target,
        r.clients,
        r.tally.admitted,
        problems,
        r.tally.wall.as_secs_f64(),
        ms_f(lat.percentile(50.0)),
        ms_f(lat.percentile(99.0)),
        ms_f(lat.max()),
        ms_f(auth.percentile(50.0)),
        ms_f(auth.percentile(99.0)),
        ms_f(auth.max()),
        r.cpu.server,
        r.cpu.responder,
        r.cpu.responder * 1e6 / r.clients.max(1) as f64,
    )
}

/// Part 7: one row per fault, and the checks each must pass.
fn cluster(w: &mut String, rows: &[crate::cluster::Row], checks: &mut Vec<Check>) {
    use crate::cluster::NODES;
    let _ = writeln!(
        w,
        "### 7. Cluster resilience\n\n\
         {NODES} nats-server nodes clustered on loopback and {NODES} nats-callout replicas in \
         one queue group (decision cache on), in two topologies: each replica logs in to \
         its own node, or to every node (one `nats:` entry per node, so every node has a \
         member of every replica). In each scenario the clients connect at once with \
         fresh oauth2 tokens of {clients} OIDC clients, client *i* on node *i* mod {NODES}; \
         the fault strikes when a quarter of them are in. A client not admitted tries once \
         more, on the next node (a refused TCP connect, to a node that is down, moves on \
         without counting as a try). Requests and responses are counted by a subscriber in \
         the callout account on node 1, which no fault touches. Latencies from the start of \
         the storm.\n\n\
         | replicas log in to | fault | clients | admitted first try | admitted on retry | not admitted | first tries lost | retried: p50 / max ms | all: p50 / p99 ms | completion s | requests | answered twice | unanswered | after |\n\
         |---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
        clients = crate::fixture::STORM_CLIENTS,
    );
    for r in rows {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} / {:.0} | {:.0} / {:.0} | {:.2} | {} | {} | {} | {} |",
            r.topology.describe(),
            r.fault.describe(),
            r.clients,
            r.first_try,
            r.on_retry,
            r.not_admitted,
            counts(&r.lost),
            ms_f(r.retried.percentile(50.0)),
            ms_f(r.retried.max()),
            ms_f(r.all.percentile(50.0)),
            ms_f(r.all.percentile(99.0)),
            r.wall.as_secs_f64(),
            r.requests,
            r.answered_twice,
            r.unanswered,
            r.after.trim_end_matches("; "),
        );
        if r.not_admitted > 0 {
            let _ = writeln!(w, "|  | *retries lost: {}* |", counts(&r.lost_again));
        }
        let name = format!(
            "replicas on {}, {}",
            r.topology.describe(),
            r.fault.describe()
        );
        checks.push(Check {
            target: format!("7. {name}: every client admitted, none needing a third try"),
            measured: format!("{} not admitted", r.not_admitted),
            ok: r.not_admitted == 0,
        });
        checks.push(Check {
            target: format!("7. {name}: no request answered twice"),
            measured: format!("{} of {}", r.answered_twice, r.requests),
            ok: r.answered_twice == 0,
        });
        if !r.fault.may_lose_first_tries() {
            checks.push(Check {
                target: format!("7. {name}: no first try lost"),
                measured: format!("{} retried, {} unanswered", r.on_retry, r.unanswered),
                ok: r.on_retry == 0 && r.unanswered == 0,
            });
        }
    }
    let _ = writeln!(w);
}

/// Part 8: outcomes by kind of client, the process's growth, and what the watchers saw.
fn soak(w: &mut String, r: &crate::soak::Report, checks: &mut Vec<Check>) {
    use crate::soak::{Kind, MAX_GROWTH};
    let _ = writeln!(
        w,
        "### 8. Soak\n\n\
         One nats-callout process serving two nats-servers (one plain, one verifying client \
         certificates) with every mode for {:.0} s: {} clients connecting in a closed loop \
         through every mode (anonymous, NKey, username and password, oauth2 RS256 and \
         ES256, client certificate), one connect in 20 with a hostile token (not a JWT, a \
         changed signature, `alg: none`, expired, an unknown `crit` header, another \
         audience, JWT-shaped garbage) and one in 1,000 routed to a plugin that traps; \
         decision cache off; the config file rewritten every {:.0} s (every sixth version \
         broken). Memory and descriptors of the callout process from `/proc`, growth \
         measured from the end of a {:.0} s warm-up.\n\n\
         | client | connects | admitted | refused | failed | not as expected |\n\
         |---|---:|---:|---:|---:|---|",
        r.duration.as_secs_f64(),
        r.concurrency,
        r.reload_every.as_secs_f64(),
        r.warm_up.as_secs_f64(),
    );
    for (kind, t) in &r.by_kind {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            kind.describe(),
            t.admitted + t.refused + t.failed,
            t.admitted,
            t.refused,
            t.failed,
            counts(&t.unexpected),
        );
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let _ = writeln!(
        w,
        "\n| callout process | at start | after warm-up | at the end | growth | peak |\n\
         |---|---:|---:|---:|---:|---:|\n\
         | RSS MiB | {:.1} | {:.1} | {:.1} | {:+.1}% | {:.1} |\n\
         | of it anonymous, MiB | {:.1} | {:.1} | {:.1} | {:+.1}% | {:.1} |\n\
         | open descriptors | {} | {} | {} | {:+.1}% | {} |\n\
         | threads | {} | {} | {} | | {} |\n",
        mib(r.first.rss),
        mib(r.start.rss),
        mib(r.end.rss),
        100.0 * r.rss_growth(),
        mib(r.peak.rss),
        mib(r.first.anon),
        mib(r.start.anon),
        mib(r.end.anon),
        100.0 * r.anon_growth(),
        mib(r.peak.anon),
        r.first.fds,
        r.start.fds,
        r.end.fds,
        100.0 * r.fd_growth(),
        r.peak.fds,
        r.first.threads,
        r.start.threads,
        r.end.threads,
        r.peak.threads,
    );
    let series = |bytes: fn(&crate::soak::Sample) -> u64| {
        let v: Vec<String> = r
            .series
            .iter()
            .map(|s| format!("{:.1}", mib(bytes(s))))
            .collect();
        v.join(", ")
    };
    let _ = writeln!(
        w,
        "RSS every tenth of the run, MiB: {} (of it anonymous: {}).\n",
        series(|s| s.rss),
        series(|s| s.anon),
    );
    let traps = r.by_kind.get(&Kind::Trap).map_or(0, |t| t.refused);
    let _ = writeln!(
        w,
        "Decisions: {:.0} per second. Config reloads: {} taken, {} refused (the broken \
         versions). Plugin traps counted: {}. Requests nats-server published: {}, answered \
         twice: {}, unanswered: {}.\n",
        r.decisions_per_sec,
        r.reloads_ok,
        r.reloads_refused,
        r.traps,
        r.requests.requests,
        r.requests.answered_twice,
        r.requests.unanswered,
    );
    let pct = MAX_GROWTH * 100.0;
    for (what, growth) in [
        (
            format!("RSS grows under {pct:.0}% (from the warm-up's end)"),
            r.rss_growth(),
        ),
        (
            format!("RSS grows under {pct:.0}% over the second half"),
            r.late_rss_growth(),
        ),
        (
            format!("open descriptors grow under {pct:.0}%"),
            r.fd_growth(),
        ),
    ] {
        checks.push(Check {
            target: format!("8. soak: {what}"),
            measured: format!("{:+.1}%", 100.0 * growth),
            ok: growth < MAX_GROWTH,
        });
    }
    checks.push(Check {
        target: "8. soak: every client decided as expected".into(),
        measured: format!("{} not", r.unexpected()),
        ok: r.unexpected() == 0,
    });
    checks.push(Check {
        target: "8. soak: every request answered, once".into(),
        measured: format!(
            "{} unanswered, {} twice",
            r.requests.unanswered, r.requests.answered_twice
        ),
        ok: r.requests.unanswered == 0 && r.requests.answered_twice == 0,
    });
    checks.push(Check {
        target: "8. soak: every trap contained and counted".into(),
        measured: format!("{} traps, {traps} trap clients refused", r.traps),
        ok: r.traps as usize == traps,
    });
}

/// Part 5: introspection against oauth2 in the same rounds, and the registry storm.
fn outbound(w: &mut String, report: &crate::outbound::Report, checks: &mut Vec<Check>) {
    use crate::outbound::{REGISTRY_INSTANCES, REGISTRY_LATENCY};
    let _ = writeln!(
        w,
        "### 5. Plugins that reach out\n\n\
         **Introspection.** Opaque access tokens, which nats-callout's introspection plugin \
         asks the OpenID provider about (RFC 7662, over outbound HTTP to the provider on \
         loopback: `oidc-provider` on node, one thread), with the plugin cache on (one \
         introspection per token per minute) and off (one per connect), against the oauth2 \
         plugin verifying a JWT locally; decision cache off everywhere, so that every \
         connect reaches the plugin; the three scenarios interleave round by round as in \
         part 2.\n\n\
         | scenario | client sends | clients | connects/s | p50 ms | p99 ms | callout CPU µs | introspections / connect | not admitted |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---|"
    );
    for (r, asked) in &report.introspection {
        let (_, c, _) = r.cpu_us();
        let problems = problems_cell(&r.tally);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.0} | {} | {} | {c:.0} | {:.3} | {} |",
            r.scenario,
            r.client,
            r.concurrency,
            r.connects_per_sec(),
            ms(r.tally.latencies.percentile(50.0)),
            ms(r.tally.latencies.percentile(99.0)),
            *asked as f64 / r.tally.total().max(1) as f64,
            if problems.is_empty() {
                "0".into()
            } else {
                problems
            },
        );
    }
    let _ = writeln!(
        w,
        "\nRelative to oauth2 with a JWT at the same concurrency (in brackets: the range \
         over single rounds):\n\n\
         | scenario | clients | p50 × oauth2 JWT | p99 × oauth2 JWT | connects/s × oauth2 JWT |\n\
         |---|---:|---:|---:|---:|"
    );
    for (r, _) in &report.introspection {
        let Some((base, _)) = report
            .introspection
            .iter()
            .find(|(b, _)| b.scenario.ends_with("oauth2 JWT") && b.concurrency == r.concurrency)
        else {
            continue;
        };
        if std::ptr::eq(base, r) {
            continue;
        }
        let _ = writeln!(
            w,
            "| {} | {} | {} |",
            r.scenario,
            r.concurrency,
            Versus::of(r, base).cells()
        );
    }
    let _ = writeln!(
        w,
        "\n**Registry storm.** Every NKey device connects at once, each with its own key, \
         through `examples/registry-plugin`, which asks a device registry (an HTTP server on \
         loopback answering after {} ms) about each, with {REGISTRY_INSTANCES} warm \
         instances (a call waiting on the network holds its instance, not a thread). The \
         null callout's storm of the same devices is the reference; then the same devices \
         storm again within the plugin cache's TTL. An auth timeout is a client refused \
         (`Authorization Violation`) or failed: every device here is active.\n\n\
         | callout | clients | admitted | refused / failed | completion s | p50 / p99 / max ms from storm start | p50 / p99 / max ms CONNECT→PONG | nats-server CPU s | callout CPU s | callout CPU µs/connect | registry calls | completion × null |\n\
         |---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        REGISTRY_LATENCY.as_millis()
    );
    let null_wall = report
        .storms
        .first()
        .map_or(f64::NAN, |(r, _)| r.tally.wall.as_secs_f64());
    for (i, (r, calls)) in report.storms.iter().enumerate() {
        let ratio = r.tally.wall.as_secs_f64() / null_wall;
        let _ = writeln!(w, "{} | {calls} | {ratio:.2}× |", storm_cells(r));
        if i > 0 {
            checks.push(Check {
                target: format!("5. {}: zero auth timeouts", r.target),
                measured: format!(
                    "{} of {} admitted in {:.2} s, {calls} registry calls",
                    r.tally.admitted,
                    r.clients,
                    r.tally.wall.as_secs_f64()
                ),
                ok: r.tally.admitted == r.clients,
            });
        }
    }
    let _ = writeln!(w);
}

/// Part 6: the apikey plugin in three languages.
fn languages(w: &mut String, report: &crate::languages::Report) {
    let mib = |b: f64| b / f64::from(1 << 20);
    let _ = writeln!(
        w,
        "### 6. One plugin in Rust, Python and JavaScript\n\n\
         The apikey plugin (API keys by SHA-256) as `examples/apikey-plugin` (Rust), \
         `examples/python-plugin` (componentize-py) and `examples/js-plugin` (ComponentizeJS). \
         Load: compile with Cranelift, write the precompiled cache, create the first instance and \
         run `init` (cold), or the same from the precompiled cache; memory per instance: this \
         process's RSS growth per further warm instance (instantiated, `init` run); service RSS: the \
         nats-callout process serving it after the connects below.\n\n\
         | language | component MB | initial memory MiB | load cold s | load from cache ms | RSS per instance MiB | service RSS MiB |\n\
         |---|---:|---:|---:|---:|---:|---:|"
    );
    for l in &report.loads {
        let _ = writeln!(
            w,
            "| {} | {:.1} | {:.1} | {:.2} | {:.0} | {:.1} | {:.0} |",
            l.language,
            l.component_bytes as f64 / 1e6,
            mib(l.initial_memory as f64),
            l.cold.as_secs_f64(),
            ms_f(l.cached),
            mib(l.instance_rss),
            mib(l.service_rss as f64),
        );
    }
    let _ = writeln!(
        w,
        "\nIn process (`Authorizer::handle`, decision cache off), against the Rust plugin, calls \
         interleaved as in part 1:\n\n\
         | language | µs/decision | Rust µs/decision | × Rust | − Rust µs |\n|---|---:|---:|---:|---:|"
    );
    for p in &report.decisions {
        pair_row(w, p);
    }
    let _ = writeln!(
        w,
        "\nEnd to end, the three in the same rounds (decision cache off):\n\n\
         | scenario | clients | connects/s | p50 ms | p99 ms | callout CPU µs | p50 × Rust | connects/s × Rust | not admitted |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in &report.connects {
        let Some(rust) = report
            .connects
            .iter()
            .find(|b| b.scenario.ends_with("Rust") && b.concurrency == r.concurrency)
        else {
            continue;
        };
        let v = Versus::of(r, rust);
        let _ = writeln!(
            w,
            "| {} | {} | {:.0} | {} | {} | {:.0} | {:.2}×{} | {:.2}×{} | {} |",
            r.scenario,
            r.concurrency,
            r.connects_per_sec(),
            ms(r.tally.latencies.percentile(50.0)),
            ms(r.tally.latencies.percentile(99.0)),
            r.cpu_us().1,
            v.p50,
            v.p50_rounds,
            v.tput,
            v.tput_rounds,
            problems_cell(&r.tally),
        );
    }
    let _ = writeln!(w);
}

/// Part 2's WASM plugins against the native ones in the running service, where (unlike
/// part 1's loop) caches are cold: nats-server and the kernel run between two decisions.
fn wasm_vs_native(w: &mut String, rows: &[Row]) {
    let pairs: Vec<(&Row, &Row)> = rows
        .iter()
        .filter_map(|native| {
            let scenario = native.scenario.strip_suffix(NATIVE_SUFFIX)?;
            let wasm = rows
                .iter()
                .find(|r| r.scenario == scenario && r.concurrency == native.concurrency)?;
            Some((wasm, native))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "\nThe same service with the built-in plugins compiled natively (as part 1's native \
         side) against their WebAssembly builds, the scenarios run in the same rounds: what \
         WebAssembly costs a connect. In brackets, as above, the range over single rounds \
         (for the CPU, of the difference of the two rows' CPU per connect in each round):\n\n\
         | scenario | clients | p50 WASM / native | connects/s WASM / native | callout CPU µs WASM − native |\n|---|---:|---:|---:|---:|"
    );
    for (wasm, native) in pairs {
        let Versus {
            p50,
            tput,
            p50_rounds,
            tput_rounds,
            ..
        } = Versus::of(wasm, native);
        let cpu = wasm.cpu_us().1 - native.cpu_us().1;
        let cpu_rounds = round_difference_range(wasm, native, |x| x.callout_us);
        let _ = writeln!(
            w,
            "| {} | {} | {p50:.2}×{p50_rounds} | {tput:.2}×{tput_rounds} | {cpu:+.1}{cpu_rounds} |",
            wasm.scenario, wasm.concurrency,
        );
    }
}

/// The row of baseline `name` with `r`'s client credential and concurrency.
fn reference<'a>(rows: &'a [Row], name: &str, r: &Row) -> Option<&'a Row> {
    rows.iter()
        .find(|n| n.scenario == name && n.concurrency == r.concurrency && n.client == r.client)
}

/// Part 2 against the verifying null: what nats-callout costs beyond the work every
/// correct callout must do (verify the request, sign two JWTs).
fn verifying_null(w: &mut String, rows: &[Row]) {
    if !rows.iter().any(|r| r.scenario == VERIFYING_NULL) {
        return;
    }
    let _ = writeln!(
        w,
        "\nRelative to the verifying null callout with the same client credential at the same \
         concurrency: the null callout plus the work every correct callout must do (the \
         request's signature and claims verified, with nats-callout's own verifier, before the \
         user and response JWTs are signed). Against it, what is left is nats-callout's own: \
         credential and route, the plugin, the grant's checks, the service around them. The \
         first row of each credential is the verifying null against the plain one, the price \
         of verifying a request:\n"
    );
    let _ = writeln!(
        w,
        "| scenario | client sends | clients | p50 × verifying null | p99 × verifying null | connects/s × verifying null | callout CPU − verifying null's, µs/connect |\n|---|---|---:|---:|---:|---:|---:|"
    );
    for r in rows
        .iter()
        .filter(|r| r.scenario.starts_with("nats-callout") || r.scenario == VERIFYING_NULL)
    {
        let base = if r.scenario == VERIFYING_NULL {
            NULL
        } else {
            VERIFYING_NULL
        };
        let Some(reference) = reference(rows, base, r) else {
            continue;
        };
        let cells = Versus::of(r, reference).cells();
        let extra = r.cpu_us().1 - reference.cpu_us().1;
        let label = if r.scenario == VERIFYING_NULL {
            format!("{VERIFYING_NULL} (× {NULL})")
        } else {
            r.scenario.clone()
        };
        let _ = writeln!(
            w,
            "| {label} | {} | {} | {cells} | {extra:+.1} |",
            r.client, r.concurrency
        );
    }
}

/// One part-2 row against another (a nats-callout run against the null run, or against
/// its native-plugin run): p50, p99 and throughput ratios, the first and last with their
/// range over single rounds.
struct Versus {
    p50: f64,
    p99: f64,
    tput: f64,
    p50_rounds: String,
    tput_rounds: String,
}

impl Versus {
    /// The three ratio cells of a table row: p50 and throughput with their ranges.
    fn cells(&self) -> String {
        format!(
            "{:.2}×{} | {:.2}× | {:.2}×{}",
            self.p50, self.p50_rounds, self.p99, self.tput, self.tput_rounds
        )
    }

    fn of(row: &Row, base: &Row) -> Self {
        let ratio = |p: f64| {
            row.tally.latencies.percentile(p).as_secs_f64()
                / base.tally.latencies.percentile(p).as_secs_f64()
        };
        Self {
            p50: ratio(50.0),
            p99: ratio(99.0),
            tput: row.connects_per_sec() / base.connects_per_sec(),
            p50_rounds: round_range(row, base, |x| x.p50.as_secs_f64()),
            tput_rounds: round_range(row, base, |x| x.per_sec),
        }
    }
}

/// " (lo–hi×)": the range of `f(row) / f(null)` over the rounds the two rows share,
/// round by round; empty with fewer than two rounds.
fn round_range(row: &Row, null: &Row, f: impl Fn(&Round) -> f64) -> String {
    per_round(row, null, |a, b| f(a) / f(b))
        .map_or_else(String::new, |(lo, hi)| format!(" ({lo:.2}–{hi:.2}×)"))
}

/// " (lo to hi)": the range of `f(row) - f(base)` over the rounds the two rows share,
/// round by round; empty with fewer than two rounds.
fn round_difference_range(row: &Row, base: &Row, f: impl Fn(&Round) -> f64) -> String {
    per_round(row, base, |a, b| f(a) - f(b))
        .map_or_else(String::new, |(lo, hi)| format!(" ({lo:+.1} to {hi:+.1})"))
}

/// The lowest and highest finite `compare(round of row, round of base)` over the rounds
/// the two rows share; `None` with fewer than two.
fn per_round(row: &Row, base: &Row, compare: impl Fn(&Round, &Round) -> f64) -> Option<(f64, f64)> {
    let values: Vec<f64> = row
        .rounds
        .iter()
        .zip(&base.rounds)
        .map(|(a, b)| compare(a, b))
        .filter(|v| v.is_finite())
        .collect();
    (values.len() >= 2).then(|| {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo, hi)
    })
}

/// Put `generated` between the markers of the file at `path` (created if missing), and
/// keep everything outside them.
pub fn splice_into(path: &Path, generated: &str) -> Result<()> {
    let block = format!("{BEGIN}\n\n{}\n{END}\n", generated.trim_end());
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n\n".to_owned(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if a < b => {
            let after = &old[b + END.len()..];
            format!("{}{block}{}", &old[..a], after.trim_start_matches('\n'))
        }
        _ => format!("{}\n{block}", old.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::Cpu;
    use crate::rawclient::Tally;

    /// A part-2 row whose every connect took `ms`: 100 connects in one second.
    fn row(scenario: &str, client: &'static str, ms: u64) -> Row {
        let mut tally = Tally {
            admitted: 100,
            wall: Duration::from_secs(1),
            ..Tally::default()
        };
        for _ in 0..100 {
            tally.latencies.push(Duration::from_millis(ms));
        }
        Row {
            scenario: scenario.into(),
            client,
            concurrency: 1,
            tally,
            cpu: Cpu {
                server: 0.1,
                responder: 0.02,
                client: 0.01,
            },
            rounds: vec![],
        }
    }

    /// Rounds with these p50s (ms), each at 100 connects/s.
    fn with_rounds(mut r: Row, p50s: &[u64]) -> Row {
        r.rounds = p50s
            .iter()
            .map(|&ms| Round {
                p50: Duration::from_millis(ms),
                per_sec: 100.0,
                callout_us: 200.0,
            })
            .collect();
        r
    }

    /// The markdown of a run with only part 2's `rows`, sequential, in `rounds` rounds,
    /// against a null callout that burned `null_busy` per request.
    fn part2(rows: Vec<Row>, rounds: usize, null_busy: Duration) -> String {
        let opts = crate::connect::Options {
            sequential: 100,
            concurrent: 0,
            concurrency: 32,
            rounds,
            warmup: 0,
        };
        Results {
            connect: Some((rows, opts)),
            null_busy,
            ..Results::default()
        }
        .markdown()
    }

    /// Null runs of two credentials (1 and 2 ms) and an oauth2 run (3 ms).
    fn null_runs_and_oauth2() -> Vec<Row> {
        vec![
            row("null callout", "anonymous", 1),
            row("null callout", "RS256 token", 2),
            row("nats-callout oauth2 RS256", "RS256 token", 3),
        ]
    }

    #[test]
    fn each_mode_is_compared_with_the_null_run_of_its_own_credential() {
        let md = part2(null_runs_and_oauth2(), 1, Duration::ZERO);
        // 3 ms against the token run's 2 ms, not against the anonymous run's 1 ms.
        assert!(
            md.contains("| nats-callout oauth2 RS256 | RS256 token | 1 | 1.50× | 1.50× |"),
            "{md}"
        );
        assert!(
            md.contains("| 2. oauth2 p50 ≤ 1.1× null callout, sequential | 1.50× | **missed** |"),
            "{md}"
        );
    }

    #[test]
    fn ratios_show_their_spread_over_rounds_paired_by_index() {
        let rows = vec![
            with_rounds(row("null callout", "RS256 token", 2), &[2, 4, 2]),
            with_rounds(
                row("nats-callout oauth2 RS256", "RS256 token", 3),
                &[3, 4, 2],
            ),
        ];
        let md = part2(rows, 3, Duration::ZERO);
        // Round by round 3/2, 4/4, 2/2; throughput equal in every round.
        assert!(
            md.contains(
                "| nats-callout oauth2 RS256 | RS256 token | 1 | 1.50× (1.00–1.50×) | 1.50× | 1.00× (1.00–1.00×) |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 2. oauth2 p50 ≤ 1.1× null callout, sequential | 1.50× (1.00–1.50×) | **missed** |"),
            "{md}"
        );
    }

    #[test]
    fn a_padded_null_callout_is_not_checked_against_the_targets() {
        let md = part2(null_runs_and_oauth2(), 1, Duration::from_micros(150));
        // The ratios are reported; only the CPU share, which needs no null run, is checked.
        assert!(
            md.contains("| nats-callout oauth2 RS256 | RS256 token | 1 | 1.50× | 1.50× |"),
            "{md}"
        );
        assert!(!md.contains("null callout, sequential"), "{md}");
        assert!(md.contains("| 2. oauth2 callout CPU"), "{md}");
    }

    /// The verifying null sits between the two: compared with the plain null itself,
    /// and the reference of nats-callout's own overhead; the targets stay on the plain null.
    #[test]
    fn the_verifying_null_separates_required_work_from_our_own() {
        let mut rows = null_runs_and_oauth2();
        let mut verifying = row(VERIFYING_NULL, "RS256 token", 2);
        rows[1].cpu.responder = 0.010;
        verifying.cpu.responder = 0.012;
        rows.push(verifying);
        let md = part2(rows, 1, Duration::ZERO);
        assert!(
            md.contains(&format!(
                "| {VERIFYING_NULL} (× null callout) | RS256 token | 1 | 1.00× | 1.00× | 1.00× | +20.0 |"
            )),
            "{md}"
        );
        // 3 ms against its 2 ms; 200 against 120 µs of callout CPU per connect.
        assert!(
            md.contains(
                "| nats-callout oauth2 RS256 | RS256 token | 1 | 1.50× | 1.50× | 1.00× | +80.0 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 2. oauth2 p50 ≤ 1.1× null callout, sequential | 1.50× | **missed** |"),
            "{md}"
        );
    }

    #[test]
    fn the_native_plugin_run_is_compared_with_its_wasm_run_and_not_taken_for_it() {
        let mut rows = null_runs_and_oauth2();
        let mut native = row("nats-callout oauth2 RS256, native plugin", "RS256 token", 2);
        native.cpu.responder = 0.015;
        rows.push(native);
        let md = part2(rows, 1, Duration::ZERO);
        // 3 ms against 2 ms; 200 against 150 µs of callout CPU per connect.
        assert!(
            md.contains("| nats-callout oauth2 RS256 | 1 | 1.50× | 1.00× | +50.0 |"),
            "{md}"
        );
        // The targets are checked on the WASM run only: once, at its 1.50×.
        let p50_checks: Vec<&str> = md
            .lines()
            .filter(|l| l.starts_with("| 2. oauth2 p50"))
            .collect();
        assert_eq!(
            p50_checks,
            ["| 2. oauth2 p50 ≤ 1.1× null callout, sequential | 1.50× | **missed** |"],
            "{md}"
        );
    }

    #[test]
    fn the_wasm_cost_of_a_connect_shows_its_range_over_rounds() {
        let mut rows = null_runs_and_oauth2();
        let mut native = with_rounds(
            row("nats-callout oauth2 RS256, native plugin", "RS256 token", 2),
            &[2, 2],
        );
        native.cpu.responder = 0.015;
        rows.push(native);
        let wasm = rows
            .iter_mut()
            .find(|r| r.scenario == "nats-callout oauth2 RS256");
        let wasm = wasm.expect("the oauth2 row");
        *wasm = with_rounds(wasm.clone(), &[3, 3]);
        wasm.rounds[0].callout_us = 190.0;
        wasm.rounds[1].callout_us = 235.5;
        let md = part2(rows, 2, Duration::ZERO);
        // Round by round: 190 − 200 and 235.5 − 200 µs.
        assert!(
            md.contains("| 1.00× (1.00–1.00×) | +50.0 (-10.0 to +35.5) |"),
            "{md}"
        );
    }

    #[test]
    fn splice_keeps_the_text_around_the_markers() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("B.md");
        splice_into(&p, "one")?;
        let first = std::fs::read_to_string(&p)?;
        assert!(first.starts_with("# Benchmarks"));
        assert!(first.contains("one"));
        std::fs::write(&p, format!("intro\n{first}\nanalysis\n"))?;
        splice_into(&p, "two")?;
        let second = std::fs::read_to_string(&p)?;
        assert!(second.starts_with("intro\n"));
        assert!(second.contains("two") && !second.contains("one"));
        assert!(second.trim_end().ends_with("analysis"));
        Ok(())
    }
}
