//! `nats-callout-bench`: runs the benchmark suite of issue #5 and prints (or writes into
//! BENCHMARKS.md) markdown tables. Run after `scripts/setup`:
//!
//! ```sh
//! cargo run --release -p nats-callout-bench -- --write BENCHMARKS.md
//! cargo run --release -p nats-callout-bench -- --quick --only pipeline
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use nats_callout_bench::connect::{self, Kind, Targets};
use nats_callout_bench::fixture::{Fixture, plugin_path};
use nats_callout_bench::report::{CacheResults, Machine, Results, splice_into};
use nats_callout_bench::{children, cluster, crypto, languages, outbound, pipeline, procs, soak};

#[derive(Parser)]
#[command(
    name = "nats-callout-bench",
    about = "Benchmarks of nats-callout: decision pipeline (WASM vs native), end-to-end connects, reconnect storm, decision cache, plugins that reach out, plugins in Python and JavaScript, a cluster under faults, a soak"
)]
struct Cli {
    #[command(subcommand)]
    child: Option<ChildCommand>,
    /// Tiny iteration counts: checks that everything runs, in seconds. Numbers are noise.
    #[arg(long)]
    quick: bool,
    /// Run only these parts (repeat or comma-separate); default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Also write the results into this markdown file, between its generated-results
    /// markers (text around them is kept; the file is created if missing).
    #[arg(long)]
    write: Option<PathBuf>,
    /// Part 1: timed batches per case (median reported).
    #[arg(long)]
    batches: Option<usize>,
    /// Part 1: decisions per batch.
    #[arg(long)]
    per_batch: Option<usize>,
    /// Part 1: read this many MiB of unrelated memory before every timed call, so that
    /// each starts with cold caches as a connect's decision does in the service (try 8).
    #[arg(long, default_value_t = 0)]
    evict_mib: usize,
    /// Part 2: connects per scenario, one at a time.
    #[arg(long)]
    sequential: Option<usize>,
    /// Part 2: connects per scenario by `--concurrency` clients.
    #[arg(long)]
    concurrent: Option<usize>,
    /// Part 2: concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Part 2: only this scenario, named as in the report (repeat for more). For
    /// `scripts/wasm-profile connect`: each target then serves only these, so its CPU
    /// divides by their connects.
    #[arg(long)]
    scenario: Vec<String>,
    /// Part 2 and 4: interleaved rounds.
    #[arg(long)]
    rounds: Option<usize>,
    /// Part 3: clients in the storm.
    #[arg(long)]
    storm_clients: Option<usize>,
    /// Part 3: storms per target (each reported).
    #[arg(long)]
    storm_runs: Option<usize>,
    /// Part 4: reconnects with one token, per cache setting.
    #[arg(long)]
    cache_connects: Option<usize>,
    /// Part 5: NKey devices in the registry storm.
    #[arg(long)]
    registry_devices: Option<usize>,
    /// Part 7: clients in each storm of the cluster.
    #[arg(long)]
    cluster_clients: Option<usize>,
    /// Part 8 (the soak, only with `--only soak`): how long, seconds.
    #[arg(long)]
    soak_secs: Option<u64>,
    /// Parts 2–4: the null callout spins this many µs on each request before answering.
    /// A diagnostic, not a baseline: set to the CPU nats-callout spends per decision
    /// beyond the null callout, it shows whether that CPU is the whole gap.
    #[arg(long, default_value_t = 0)]
    null_busy_us: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    Pipeline,
    Connect,
    Storm,
    Cache,
    Outbound,
    Languages,
    Cluster,
    /// Not in the default set: about 10 minutes.
    Soak,
}

/// The benchmark's own child processes (it re-executes itself).
#[derive(Subcommand)]
enum ChildCommand {
    /// Serve auth requests as `nats-callout run --config` does.
    #[command(hide = true)]
    ServeCallout {
        #[arg(long)]
        config: PathBuf,
        /// Run the built-in plugins natively instead of as WebAssembly.
        #[arg(long)]
        native: bool,
    },
    /// The null callout responder (baseline).
    #[command(hide = true)]
    NullResponder {
        #[arg(long)]
        url: String,
        #[arg(long)]
        nkey_seed: PathBuf,
        #[arg(long)]
        issuer_seed: PathBuf,
        #[arg(long)]
        account: String,
        #[arg(long, default_value_t = 0)]
        busy_us: u64,
        /// Verify each request as every correct callout must (the verifying null).
        #[arg(long)]
        verify: bool,
    },
}

/// Iteration counts of a full run. Chosen so that a full run takes about 3 minutes on
/// 2 cores, a p99 rests on at least 40 samples above it, and a storm that ends near the
/// auth timeout is seen more than once.
mod full {
    pub const BATCHES: usize = 41;
    pub const PER_BATCH: usize = 200;
    pub const SEQUENTIAL: usize = 4000;
    pub const CONCURRENT: usize = 10000;
    pub const ROUNDS: usize = 10;
    pub const WARMUP: usize = 100;
    pub const STORM: usize = 4000;
    pub const STORM_RUNS: usize = 3;
    pub const CACHE: usize = 1000;
    /// Parts 5 and 6: fewer than part 2, as a provider (node, one thread) answers each
    /// uncached introspection, a millisecond or more, and interpreters decide slower.
    pub const FEW_SEQUENTIAL: usize = 1000;
    pub const FEW_CONCURRENT: usize = 3000;
    pub const REGISTRY_DEVICES: usize = 4000;
    /// Part 7: the size of part 3's storm, spread over three nodes.
    pub const CLUSTER: usize = 4000;
    /// Part 8: long enough for 60 config rewrites and a few hundred thousand connects.
    pub const SOAK_SECS: u64 = 600;
}

/// Iteration counts of `--quick`: a smoke run.
mod quick {
    pub const BATCHES: usize = 3;
    pub const PER_BATCH: usize = 20;
    pub const SEQUENTIAL: usize = 40;
    pub const CONCURRENT: usize = 200;
    pub const ROUNDS: usize = 1;
    pub const WARMUP: usize = 5;
    pub const STORM: usize = 200;
    pub const STORM_RUNS: usize = 1;
    pub const CACHE: usize = 50;
    pub const FEW_SEQUENTIAL: usize = 20;
    pub const FEW_CONCURRENT: usize = 100;
    pub const REGISTRY_DEVICES: usize = 200;
    pub const CLUSTER: usize = 300;
    pub const SOAK_SECS: u64 = 20;
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn multi_thread_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.child {
        Some(ChildCommand::ServeCallout { ref config, native }) => {
            // As `nats-callout run`: logs at info (env AUTH_CALLOUT_LOG to change).
            nats_callout::ops::memory::limit_malloc_arenas();
            init_logging(&std::env::var("AUTH_CALLOUT_LOG").unwrap_or_else(|_| "info".into()));
            multi_thread_runtime()?.block_on(children::serve_callout(config, native))
        }
        Some(ChildCommand::NullResponder {
            ref url,
            ref nkey_seed,
            ref issuer_seed,
            ref account,
            busy_us,
            verify,
        }) => {
            init_logging("warn");
            multi_thread_runtime()?.block_on(children::null_responder(
                url,
                nkey_seed,
                issuer_seed,
                account,
                Duration::from_micros(busy_us),
                verify,
            ))
        }
        None => bench(&cli),
    }
}

fn bench(cli: &Cli) -> Result<()> {
    init_logging("warn");
    let started = Instant::now();
    check_prerequisites()?;
    let parts = if cli.only.is_empty() {
        vec![
            Part::Pipeline,
            Part::Connect,
            Part::Storm,
            Part::Cache,
            Part::Outbound,
            Part::Languages,
            Part::Cluster,
        ]
    } else {
        cli.only.clone()
    };
    let q = cli.quick;
    let pick =
        |v: Option<usize>, full: usize, quick: usize| v.unwrap_or(if q { quick } else { full });
    let pipe_opts = pipeline::Options {
        batches: pick(cli.batches, full::BATCHES, quick::BATCHES).max(1),
        per_batch: pick(cli.per_batch, full::PER_BATCH, quick::PER_BATCH).max(1),
        evict_bytes: cli.evict_mib << 20,
    };
    let conn_opts = connect::Options {
        sequential: pick(cli.sequential, full::SEQUENTIAL, quick::SEQUENTIAL),
        concurrent: pick(cli.concurrent, full::CONCURRENT, quick::CONCURRENT),
        concurrency: cli.concurrency.max(1),
        rounds: pick(cli.rounds, full::ROUNDS, quick::ROUNDS).max(1),
        warmup: if q { quick::WARMUP } else { full::WARMUP },
    };
    let storm_clients = pick(cli.storm_clients, full::STORM, quick::STORM);
    let storm_runs = pick(cli.storm_runs, full::STORM_RUNS, quick::STORM_RUNS).max(1);
    let cache_connects = pick(cli.cache_connects, full::CACHE, quick::CACHE).max(1);
    // Parts 5 and 6 measure plugins that wait on a provider or run an interpreter: fewer
    // connects than part 2, in as many rounds.
    let few = connect::Sizes {
        sequential: pick(None, full::FEW_SEQUENTIAL, quick::FEW_SEQUENTIAL),
        concurrent: pick(None, full::FEW_CONCURRENT, quick::FEW_CONCURRENT),
        concurrency: conn_opts.concurrency,
        rounds: conn_opts.rounds,
        warmup: conn_opts.warmup,
    };
    let outbound_opts = outbound::Options {
        sizes: few,
        devices: pick(
            cli.registry_devices,
            full::REGISTRY_DEVICES,
            quick::REGISTRY_DEVICES,
        )
        .max(1),
    };
    let soak_opts = soak::Options {
        duration: Duration::from_secs(
            cli.soak_secs
                .unwrap_or(if q { quick::SOAK_SECS } else { full::SOAK_SECS })
                .max(5),
        ),
        concurrency: cli.concurrency.max(1),
    };
    let cluster_opts = cluster::Options {
        clients: pick(cli.cluster_clients, full::CLUSTER, quick::CLUSTER).max(1),
    };
    // Each storm client holds a socket here and one in nats-server (which inherits
    // this limit), plus the other targets' and the runtime's descriptors.
    let largest = storm_clients
        .max(outbound_opts.devices)
        .max(cluster_opts.clients) as u64;
    let nofile = procs::raise_nofile(2 * largest + 1024)?;
    let storms = [Part::Storm, Part::Outbound, Part::Cluster];
    if parts.iter().any(|p| storms.contains(p)) && nofile < largest + 256 {
        bail!("open-files limit {nofile} is too low for a storm of {largest} clients");
    }

    let mut results = Results {
        machine: Some(Machine::probe()),
        command: command_line(),
        debug_build: cfg!(debug_assertions),
        null_busy: Duration::from_micros(cli.null_busy_us),
        ..Default::default()
    };

    // One thread drives everything: the load generator should not compete with the
    // processes it measures for more than one core.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let fx = Fixture::start()?;
        let mut targets = Targets::new(results.null_busy);
        for part in &parts {
            let t = Instant::now();
            match part {
                Part::Pipeline => {
                    eprintln!("[bench] part 1: decision pipeline in process…");
                    let report = pipeline::run(&fx, pipe_opts).await?;
                    results.pipeline = Some((report, pipe_opts));
                    results.primitives =
                        crypto::run(&fx, pipe_opts.batches, pipe_opts.per_batch).await?;
                }
                Part::Connect => {
                    eprintln!("[bench] part 2: end-to-end connects…");
                    let rows = connect::run(&fx, &mut targets, conn_opts, &cli.scenario).await?;
                    results.connect = Some((rows, conn_opts));
                }
                Part::Storm => {
                    // The null callout first: what nats-server alone makes of the storm here.
                    for kind in [Kind::Null, Kind::Callout, Kind::CalloutCached] {
                        for run in 1..=storm_runs {
                            eprintln!(
                                "[bench] part 3: storm of {storm_clients} clients ({kind:?}, run {run})…"
                            );
                            let target = targets.get(&fx, kind)?;
                            let mut row = connect::storm(&fx, target, storm_clients).await?;
                            if storm_runs > 1 {
                                row.target = format!("{}, run {run}", row.target);
                            }
                            results.storm.push(row);
                        }
                    }
                }
                Part::Cache => {
                    eprintln!("[bench] part 4: decision cache…");
                    let e2e =
                        connect::cache_effect(&fx, &mut targets, cache_connects, conn_opts.rounds)
                            .await?;
                    let in_process = pipeline::cache_in_process(&fx, pipe_opts).await?;
                    let revocation = pipeline::revocation_in_process(&fx, pipe_opts).await?;
                    results.cache = Some(CacheResults {
                        rows: e2e,
                        in_process,
                        revocation,
                    });
                }
                Part::Languages => {
                    eprintln!("[bench] part 6: one plugin in Rust, Python and JavaScript…");
                    let opts = languages::Options {
                        sizes: few,
                        pipeline: pipe_opts,
                    };
                    results.languages = Some(languages::run(opts).await?);
                }
                Part::Outbound => {
                    eprintln!("[bench] part 5: plugins that reach out…");
                    results.outbound = Some(outbound::run(&fx, &mut targets, outbound_opts).await?);
                }
                Part::Cluster => {
                    results.cluster = Some(cluster::run(&cluster_opts).await?);
                }
                Part::Soak => {
                    eprintln!(
                        "[bench] part 8: soak for {} s…",
                        soak_opts.duration.as_secs()
                    );
                    results.soak = Some(soak::run(&soak_opts).await?);
                }
            }
            eprintln!("[bench]   done in {:.1} s", t.elapsed().as_secs_f64());
        }
        anyhow::Ok(())
    })?;
    results.wall = started.elapsed();

    let markdown = results.markdown();
    println!("{markdown}");
    if let Some(path) = &cli.write {
        splice_into(path, &markdown)?;
        eprintln!("[bench] results written to {}", path.display());
    }
    Ok(())
}

/// The command that reproduces this run.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let release = if cfg!(debug_assertions) {
        ""
    } else {
        " --release"
    };
    let mut cmd = format!("cargo run{release} -p nats-callout-bench");
    if !args.is_empty() {
        cmd.push_str(" -- ");
        cmd.push_str(&args.join(" "));
    }
    cmd
}

fn check_prerequisites() -> Result<()> {
    let server = nats_callout_tests::nats_server_bin();
    if !server.exists() {
        bail!(
            "nats-server not found at {}: run scripts/setup first",
            server.display()
        );
    }
    for mode in ["noauth", "nkey", "oauth2", "introspection", "registry"] {
        let p = plugin_path(mode);
        if !p.exists() {
            bail!("plugin {} not built: run scripts/setup first", p.display());
        }
    }
    Ok(())
}
