//! The benchmark's in-process part and its connect part run and produce numbers. No
//! timing is asserted: tests run in debug builds on shared machines, where timings mean
//! nothing.

use anyhow::Result;
use nats_callout_bench::fixture::Fixture;
use nats_callout_bench::pipeline::{self, Options};
use nats_callout_bench::report::Results;

#[tokio::test]
async fn pipeline_part_produces_numbers() -> Result<()> {
    let fx = Fixture::start()?;
    let opts = Options {
        batches: 1,
        per_batch: 3,
        // Exercises `--evict-mib`'s path; small, so the test stays quick.
        evict_bytes: 1 << 20,
    };
    let report = pipeline::run(&fx, opts).await?;
    assert_eq!(report.pipeline.len(), pipeline::Case::ALL.len());
    assert_eq!(report.plugin_call.len(), pipeline::Case::ALL.len());
    for pair in report.pipeline.iter().chain(&report.plugin_call) {
        assert!(
            pair.wasm_ns.is_finite() && pair.wasm_ns > 0.0,
            "{}: {pair:?}",
            pair.case
        );
        assert!(
            pair.native_ns.is_finite() && pair.native_ns > 0.0,
            "{}: {pair:?}",
            pair.case
        );
    }

    let markdown = Results {
        pipeline: Some((report, opts)),
        ..Default::default()
    }
    .markdown();
    for case in ["noauth", "nkey", "oauth2 RS256", "oauth2 ES256"] {
        assert!(markdown.contains(&format!("| {case} |")), "{markdown}");
    }
    Ok(())
}

/// Part 2 in quick mode, through the benchmark binary (its targets are child processes
/// it re-executes itself as): every scenario admits its clients, the native-plugin run
/// included, and is reported.
#[test]
fn connect_part_runs_every_scenario() -> Result<()> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nats-callout-bench"))
        // 8 clients, not the benchmark's 32: debug builds on a shared machine, and this
        // checks that every scenario runs and admits, not how fast.
        .args(["--quick", "--only", "connect", "--concurrency", "8"])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for scenario in [
        "| null callout | RS256 token | 1 |",
        "| nats-callout oauth2 RS256 | RS256 token | 1 |",
        "| nats-callout oauth2 RS256, native plugin | RS256 token | 1 |",
        "| nats-callout oauth2 RS256, cache on | RS256 token | 8 |",
    ] {
        assert!(stdout.contains(scenario), "{scenario} missing:\n{stdout}");
    }
    // The results table's callout rows (four null runs and six nats-callout ones, each
    // sequential and concurrent): every one admitted all its clients.
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| null callout |") || l.starts_with("| nats-callout"))
        .filter(|l| l.split('|').count() == 12)
        .collect();
    assert_eq!(rows.len(), 20, "{stdout}");
    for row in rows {
        assert!(row.ends_with("| 0 |"), "not all admitted: {row}");
    }
    assert!(stdout.contains("| p50 WASM / native |"), "{stdout}");
    Ok(())
}
