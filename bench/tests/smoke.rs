//! The benchmark's in-process part runs and produces numbers. No timing is asserted:
//! tests run in debug builds on shared machines, where timings mean nothing.

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
