//! The collector over TLS: a cluster serving clients with certificates made in the test
//! (client certificates required) is monitored; a wrong CA fails with a message that says so;
//! `--insecure-skip-tls` connects without a CA.

use std::time::Duration;

use crate::common::{endpoint_status, make_tls, member_json, metric, start_collector, wait_status};
use etcd_monitor_tests::{ClusterOptions, EtcdCluster};

#[test]
fn monitors_a_tls_cluster_and_explains_a_wrong_ca() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tls = make_tls(dir.path(), "good")?;
    let other = make_tls(dir.path(), "other")?;
    let cluster = EtcdCluster::start(ClusterOptions {
        tls: Some(tls.clone()),
        name_prefix: "tls".to_string(),
        ..ClusterOptions::default()
    })?;
    assert!(cluster.endpoints().starts_with("https://"));
    let endpoints = format!("--endpoints={}", cluster.endpoints());
    let cert = format!("--cert-file={}", tls.client_cert_file.display());
    let key = format!("--key-file={}", tls.client_key_file.display());
    let common_args = [
        "--health-check-interval=1s",
        "--metrics-interval=1s",
        "--dial-timeout=2s",
    ];

    let mut args = vec![endpoints.as_str(), &cert, &key];
    args.extend(common_args);
    let ca = format!("--ca-file={}", tls.ca_file.display());
    let good_dir = dir.path().join("good");
    std::fs::create_dir_all(&good_dir)?;
    let good = start_collector(&good_dir, &[args.as_slice(), &[ca.as_str()]].concat())?;

    let wrong_ca = format!("--ca-file={}", other.ca_file.display());
    let wrong_dir = dir.path().join("wrong");
    std::fs::create_dir_all(&wrong_dir)?;
    let wrong = start_collector(
        &wrong_dir,
        &[args.as_slice(), &[wrong_ca.as_str()]].concat(),
    )?;

    let insecure_dir = dir.path().join("insecure");
    std::fs::create_dir_all(&insecure_dir)?;
    let insecure = start_collector(
        &insecure_dir,
        &[args.as_slice(), &["--insecure-skip-tls"]].concat(),
    )?;

    // Verified TLS: healthy, and the scraped figures match etcd's own over TLS.
    let s = wait_status(
        &good,
        "healthy over TLS with scraped metrics",
        Duration::from_secs(30),
        |s| {
            s["healthy"] == true
                && s["available_members"] == 3
                && s["members"]
                    .as_array()
                    .is_some_and(|ms| ms.iter().all(|m| m["server"].is_object()))
        },
    )?;
    for m in &cluster.members {
        let truth = endpoint_status(m, Some(&tls))?;
        let cm = member_json(&s, &m.name).ok_or_else(|| anyhow::anyhow!("{} missing", m.name))?;
        assert_eq!(cm["status"]["version"], truth["version"]);
        assert_eq!(cm["client_urls"][0], m.client_url.as_str());
        assert!(cm["scrape_error"].is_null(), "{cm}");
    }
    let labels = [
        ("cluster", "default"),
        ("member", cluster.members[0].name.as_str()),
    ];
    assert!(metric(&good, "etcd_mvcc_db_total_size_bytes", &labels).is_some_and(|v| v > 0.0));

    // Wrong CA: nothing reachable, and the error says the certificate is not signed by the CA.
    let s = wait_status(&wrong, "wrong CA reported", Duration::from_secs(30), |s| {
        s["updated_at_ms"].as_u64().unwrap_or(0) > 0
            && s["endpoints"].as_array().is_some_and(|e| {
                !e.is_empty()
                    && e.iter()
                        .all(|e| e["reachable"] == false && !e["error"].is_null())
            })
    })?;
    assert_eq!(s["healthy"], false);
    assert_eq!(s["available_members"], 0);
    let error = s["endpoints"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("not signed by the trusted CA"), "{error}");
    assert!(
        error.contains(&other.ca_file.display().to_string()),
        "{error}"
    );
    assert_eq!(
        metric(&wrong, "etcd_cluster_healthy", &[("cluster", "default")]),
        Some(0.0)
    );

    // --insecure-skip-tls: no CA, still connected (the client certificate is still presented).
    wait_status(
        &insecure,
        "healthy with --insecure-skip-tls",
        Duration::from_secs(30),
        |s| {
            s["healthy"] == true
                && s["available_members"] == 3
                && s["members"]
                    .as_array()
                    .is_some_and(|ms| ms.iter().all(|m| m["server"].is_object()))
        },
    )?;
    Ok(())
}
