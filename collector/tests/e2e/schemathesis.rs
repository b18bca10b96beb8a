//! Schemathesis (PyPI; installed by `cargo xtask setup`) against the live OpenAPI document of a
//! real collector watching a real etcd member: generated requests, valid and invalid, must
//! cause no server error, and no request the document calls valid may be rejected (400/422).
//! Schemathesis sends the admin token, so silences are really created and deleted.

use std::process::Command;

use crate::common::start_collector;
use anyhow::Context;
use etcd_monitor_tests::{ClusterOptions, EtcdCluster};

const ADMIN: &str = "schemathesis-admin-0123456789";

fn schemathesis_version() -> Option<String> {
    let out = Command::new("schemathesis")
        .arg("--version")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn no_server_errors_and_no_valid_request_rejected() -> anyhow::Result<()> {
    let Some(version) = schemathesis_version() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and schemathesis is missing: run `cargo xtask setup`"
        );
        eprintln!("SKIPPED: schemathesis is not installed (cargo xtask setup installs it)");
        return Ok(());
    };
    eprintln!("{version}");
    let cluster = EtcdCluster::start(ClusterOptions {
        members: 1,
        name_prefix: "schema".into(),
        ..ClusterOptions::default()
    })?;
    let dir = tempfile::tempdir()?;
    let token = dir.path().join("admin.token");
    std::fs::write(&token, ADMIN)?;
    let collector = start_collector(
        dir.path(),
        &[
            &format!("--endpoints={}", cluster.endpoints()),
            &format!("--admin-token-file=schemathesis={}", token.display()),
            "--health-check-interval=1s",
            "--metrics-interval=1s",
            "--probe-write=false",
        ],
    )?;
    // The benchmark API stays disabled (403, declared): valid bodies would start real runs.
    let report = dir.path().join("report");
    let out = Command::new("schemathesis")
        .current_dir(dir.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .args([
            "run",
            &format!("{}/api/v1/openapi.json", collector.url),
            "--checks",
            "not_a_server_error,positive_data_acceptance",
            "--mode",
            "all",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "30",
            "--workers",
            "2",
            "--seed",
            "12",
            "--request-timeout",
            "20",
            "--no-color",
            "--report",
            "json",
            "--report-dir",
        ])
        .arg(&report)
        .args(["-H", &format!("Authorization: Bearer {ADMIN}")])
        .output()
        .context("run schemathesis")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis found failures ({}):\n{stdout}\n{stderr}\ncollector log tail:\n{}",
        out.status,
        crate::common::tail(&collector.log_text(), 40)
    );
    // Success means zero failures of either check; make sure it really tested the API: every
    // operation, and hundreds of generated requests, all passing.
    let count = |line: &str, word: &str| -> Option<u64> {
        let before = line.split(word).next()?;
        before
            .split_whitespace()
            .last()?
            .trim_matches(',')
            .parse()
            .ok()
    };
    let cases = stdout
        .lines()
        .find(|l| l.contains(" generated, "))
        .with_context(|| format!("no test-case summary:\n{stdout}"))?;
    let generated = count(cases, "generated").unwrap_or(0);
    assert!(generated >= 200, "only {generated} cases: {cases}");
    assert_eq!(count(cases, "passed"), Some(generated), "{cases}");
    let paths = collector.get_json("/api/v1/openapi.json")?.1["paths"]
        .as_object()
        .map_or(0, |p| {
            p.values()
                .map(|ops| ops.as_object().map_or(0, |o| o.len()))
                .sum()
        });
    assert!(
        stdout.contains(&format!("Tested: {paths}")),
        "not all {paths} operations were tested:\n{stdout}"
    );
    // The collector stayed healthy and the silences schemathesis created are bounded.
    let (code, body) = collector.get_json("/api/v1/alerts/silences")?;
    assert_eq!(code, 200, "{body}");
    let (code, body) = collector.get_json("/health")?;
    assert_eq!(code, 200, "{body}");
    Ok(())
}
