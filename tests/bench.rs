//! `mayfly bench churn`, driven through the binary. Speed is reported, not
//! asserted: this only checks that the benchmark runs and reports.

mod common;

use common::*;

#[test]
fn churn_reports_instances_and_percentiles_as_json() {
    build_examples();
    let component = component("hello");
    for (allocator, concurrency) in [("pooling", "1"), ("on-demand", "2")] {
        let (output, stderr) = run_output(
            mayfly()
                .args(["bench", "churn"])
                .arg(&component)
                .args(["--duration", "500ms", "--concurrency", concurrency])
                .args(["--allocator", allocator, "--json"])
                .env("MAYFLY_CACHE_DIR", shared_cache()),
        );
        assert!(output.status.success(), "{stderr}");
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["allocator"], allocator);
        assert_eq!(report["concurrency"].to_string(), concurrency);
        assert_eq!(report["errors"], 0, "{report}");
        assert!(report["instances"].as_u64().unwrap() > 0, "{report}");
        let p50 = report["p50_us"].as_f64().unwrap();
        let p99 = report["p99_us"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= p99, "{report}");
    }
}

#[test]
fn bench_jobs_drains_a_queue_with_worker_processes_and_reports() {
    build_examples();
    let (output, stderr) = run_output(
        mayfly()
            .args(["bench", "jobs", "--manifest"])
            .arg(example("noop"))
            .args(["--jobs", "300", "--workers", "2", "--json"])
            .env("MAYFLY_CACHE_DIR", shared_cache()),
    );
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["jobs"], 300, "{report}");
    assert_eq!(report["workers"], 2, "{report}");
    assert!(report["jobs_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    assert!(
        report["latency_p99_ms"].as_f64().unwrap() >= report["latency_p50_ms"].as_f64().unwrap()
    );
    // The bench cleans up its state file.
    let leftovers: Vec<_> = std::fs::read_dir(repo().join("examples/noop/.mayfly"))
        .map(|dir| {
            dir.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("bench-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
