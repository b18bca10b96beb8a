//! The deployment assets under `deploy/` and `docs/runbooks.md`, checked with the real tools:
//! promtool (rules, their unit tests, the scrape config, every dashboard expression), kustomize
//! (`kustomize build` or `kubectl kustomize`) and the offline Kubernetes JSON schemas of the
//! PyPI package `kubernetes-validate`, docker-compose's own `config` check, plus structural
//! assertions on what the tools cannot know (least privilege of the agent, label conventions,
//! files that must stay in step).
//!
//! A test whose tool is missing prints why and passes, except under `CI=true`, where a missing
//! tool fails the test: `cargo xtask setup` installs them (xtask/src/setup_deploy.rs).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail, ensure};
use serde_yaml_ng::Value;

/// Where every alert's `runbook_url` must point, followed by `#anchor`.
const RUNBOOK_BASE: &str = "https://example.invalid/etcd-monitor/blob/main/docs/runbooks.md#";

/// Alerts the rules must define: the etcd mixin's, docs/contracts.md's and the kernel-side ones.
const REQUIRED_ALERTS: &[&str] = &[
    "etcdMembersDown",
    "etcdInsufficientMembers",
    "etcdNoLeader",
    "etcdHighNumberOfLeaderChanges",
    "etcdHighNumberOfFailedGRPCRequests",
    "etcdMemberCommunicationSlow",
    "etcdHighNumberOfFailedProposals",
    "etcdHighFsyncDurations",
    "etcdHighCommitDurations",
    "etcdDatabaseQuotaLowSpace",
    "etcdExcessiveDatabaseGrowth",
    "etcdDatabaseHighFragmentationRatio",
    "NoLeader",
    "HighLeaderChangeRate",
    "SlowWalFsync",
    "DatabaseQuotaNearlyFull",
    "MemberUnavailable",
    "SplitBrain",
    "HighProposalFailureRate",
    "HighPendingProposals",
    "RequestLatencyDegraded",
    "SlowBackendCommit",
    "PeerTcpRetransmits",
    "KernelSlowWalFsync",
    "FsyncSlowButKernelFast",
    "AgentLosingEvents",
    "AgentNotUsingEbpf",
];

/// (alert, severity, how its expression must end): the etcd mixin's thresholds, and the
/// design's, kept exactly.
const THRESHOLDS: &[(&str, &str, &str)] = &[
    ("etcdHighNumberOfFailedGRPCRequests", "warning", "> 1"),
    ("etcdHighNumberOfFailedGRPCRequests", "critical", "> 5"),
    ("etcdHighFsyncDurations", "warning", "> 0.5"),
    ("etcdHighFsyncDurations", "critical", "> 1"),
    ("etcdHighCommitDurations", "warning", "> 0.25"),
    ("etcdDatabaseQuotaLowSpace", "critical", "> 95"),
    ("etcdHighNumberOfLeaderChanges", "warning", ">= 4"),
    ("etcdHighNumberOfFailedProposals", "warning", "> 5"),
    ("etcdMemberCommunicationSlow", "warning", "> 0.15"),
    ("HighLeaderChangeRate", "critical", "> 3"),
    ("SlowWalFsync", "critical", "> 0.01"),
    ("KernelSlowWalFsync", "critical", "> 0.01"),
    ("DatabaseQuotaNearlyFull", "critical", "> 0.8"),
    ("SlowBackendCommit", "warning", "> 0.025"),
];

/// Series of the collector's contract (docs/contracts.md) the dashboard must show.
const CONTRACT_SERIES: &[&str] = &[
    "etcd_cluster_healthy",
    "etcd_cluster_has_leader",
    "etcd_cluster_member_count",
    "etcd_cluster_quorum_size",
    "etcd_cluster_leader_changes_total",
    "etcd_request_read_latency_p50_milliseconds",
    "etcd_request_read_latency_p95_milliseconds",
    "etcd_request_read_latency_p99_milliseconds",
    "etcd_request_write_latency_p50_milliseconds",
    "etcd_request_write_latency_p95_milliseconds",
    "etcd_request_write_latency_p99_milliseconds",
    "etcd_request_rate_per_second",
    "etcd_mvcc_db_total_size_bytes",
    "etcd_mvcc_db_total_size_in_use_bytes",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_proposals_failed_total",
    "etcd_server_proposals_pending",
    "etcd_disk_wal_fsync_duration_p95_milliseconds",
    "etcd_disk_backend_commit_duration_p95_milliseconds",
    // kernel side
    "etcdmon_fsync_duration_seconds_bucket",
    "etcdmon_write_bytes_total",
    "etcdmon_peer_rtt_seconds",
    "etcdmon_peer_retransmits_total",
    "etcdmon_events_dropped_total",
];

/// The agent's capabilities, exactly.
const AGENT_CAPS: &[&str] = &["BPF", "PERFMON", "SYS_PTRACE", "SYS_RESOURCE"];

// --- helpers -------------------------------------------------------------------------------

fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn deploy(rel: &str) -> PathBuf {
    root().join("deploy").join(rel)
}

/// The path of `program` on PATH.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// `Some(())` when `available`; otherwise prints why the test skips, or panics under CI.
fn tool_or_skip(available: bool, what: &str) -> Option<()> {
    // The test's name is the thread's name under the default test harness.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("deploy_assets");
    match etcd_monitor_tests::require(
        test,
        available,
        &format!("{what} is missing (cargo xtask setup installs it; xtask/src/setup_deploy.rs)"),
    ) {
        Ok(true) => Some(()),
        Ok(false) => None,
        Err(e) => panic!("{e}"),
    }
}

fn require(program: &str) -> Option<PathBuf> {
    let found = which(program);
    tool_or_skip(found.is_some(), program)?;
    found
}

/// Runs `cmd`, returning stdout; fails with both streams when it exits non-zero.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let line = format!("{cmd:?}");
    let out = cmd
        .current_dir(root())
        .output()
        .with_context(|| format!("failed to start {line}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!(
            "{line} failed with {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        );
    }
    Ok(stdout)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))
}

fn yaml(path: &Path) -> anyhow::Result<Value> {
    serde_yaml_ng::from_str(&read(path)?).with_context(|| format!("{} is not YAML", path.display()))
}

fn yaml_docs(text: &str) -> anyhow::Result<Vec<Value>> {
    use serde::Deserialize as _;
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(doc)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn seq<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Follows `path` (mapping keys) from `v`.
fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    static NULL: Value = Value::Null;
    path.iter().fold(v, |v, k| v.get(*k).unwrap_or(&NULL))
}

/// GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to dashes.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every alerting rule of the rules file, as (group, rule).
fn alerting_rules(rules: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for group in seq(rules, "groups") {
        for rule in seq(group, "rules") {
            if rule.get("alert").is_some() {
                out.push((s(group, "name").to_string(), rule.clone()));
            }
        }
    }
    out
}

fn promtool_check_rules(promtool: &Path, file: &Path) -> anyhow::Result<String> {
    run(Command::new(promtool).arg("check").arg("rules").arg(file))
}

// --- (1) promtool -------------------------------------------------------------------------

#[test]
fn promtool_checks_the_rules_file() -> anyhow::Result<()> {
    let Some(promtool) = require("promtool") else {
        return Ok(());
    };
    let out = promtool_check_rules(&promtool, &deploy("prometheus/etcd-monitor.rules.yml"))?;
    ensure!(out.contains("SUCCESS"), "promtool said: {out}");
    Ok(())
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() -> anyhow::Result<()> {
    let Some(promtool) = require("promtool") else {
        return Ok(());
    };
    let out = run(Command::new(promtool).args([
        "test",
        "rules",
        "deploy/prometheus/etcd-monitor.rules.test.yml",
    ]))?;
    ensure!(out.contains("SUCCESS"), "promtool said: {out}");
    Ok(())
}

#[test]
fn promtool_checks_the_scrape_config() -> anyhow::Result<()> {
    let Some(promtool) = require("promtool") else {
        return Ok(());
    };
    let out =
        run(Command::new(promtool).args(["check", "config", "deploy/prometheus/prometheus.yml"]))?;
    ensure!(out.contains("SUCCESS"), "promtool said: {out}");
    // It must load the rules and scrape the three kinds of targets on their ports.
    let config = yaml(&deploy("prometheus/prometheus.yml"))?;
    let rule_files: Vec<&str> = seq(&config, "rule_files")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    ensure!(
        rule_files == ["etcd-monitor.rules.yml"],
        "rule_files: {rule_files:?}"
    );
    let targets = scrape_targets(&config);
    for (job, port) in [
        ("etcd", ":2379"),
        ("etcd-monitor", ":8080"),
        ("etcd-monitor-agent", ":9465"),
    ] {
        let t = targets.get(job).map(Vec::as_slice).unwrap_or_default();
        ensure!(
            !t.is_empty() && t.iter().all(|(target, _)| target.ends_with(port)),
            "job {job} must scrape targets on {port}: {t:?}"
        );
    }
    // etcd's series need `member` = the member's --name for the kernel-side joins.
    for (target, labels) in &targets["etcd"] {
        let host = target.split(':').next().unwrap_or_default();
        ensure!(
            labels.get("member").map(String::as_str) == Some(host),
            "etcd target {target} needs the label member={host}: {labels:?}"
        );
    }
    Ok(())
}

type Targets = BTreeMap<String, Vec<(String, BTreeMap<String, String>)>>;

/// job → [(target, labels)] of every static_config.
fn scrape_targets(config: &Value) -> Targets {
    let mut out = Targets::new();
    for job in seq(config, "scrape_configs") {
        let entry = out.entry(s(job, "job_name").to_string()).or_default();
        for sc in seq(job, "static_configs") {
            let labels: BTreeMap<String, String> = sc
                .get("labels")
                .and_then(Value::as_mapping)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.into())))
                        .collect()
                })
                .unwrap_or_default();
            for t in seq(sc, "targets") {
                entry.push((t.as_str().unwrap_or_default().to_string(), labels.clone()));
            }
        }
    }
    out
}

// --- rules: coverage, labels, runbooks, thresholds ---------------------------------------

#[test]
fn every_alert_has_severity_annotations_runbook_and_unit_tests() -> anyhow::Result<()> {
    let rules = yaml(&deploy("prometheus/etcd-monitor.rules.yml"))?;
    let runbooks = read(&root().join("docs/runbooks.md"))?;
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();

    let alerts = alerting_rules(&rules);
    let names: BTreeSet<&str> = alerts.iter().map(|(_, r)| s(r, "alert")).collect();
    for required in REQUIRED_ALERTS {
        ensure!(names.contains(required), "no alert named {required}");
    }
    let mut problems = Vec::new();
    for (group, rule) in &alerts {
        let name = s(rule, "alert");
        let severity = s(at(rule, &["labels"]), "severity");
        if !matches!(severity, "critical" | "warning" | "info") {
            problems.push(format!("{group}/{name}: severity {severity:?}"));
        }
        let ann = at(rule, &["annotations"]);
        for key in ["summary", "description"] {
            if s(ann, key).trim().is_empty() {
                problems.push(format!("{group}/{name}: no {key}"));
            }
        }
        let url = s(ann, "runbook_url");
        match url.strip_prefix(RUNBOOK_BASE) {
            Some(a) if anchors.contains(a) => {}
            Some(a) => problems.push(format!(
                "{group}/{name}: runbook anchor #{a} is not a heading of docs/runbooks.md"
            )),
            None => problems.push(format!(
                "{group}/{name}: runbook_url {url:?} is not under {RUNBOOK_BASE}"
            )),
        }
    }
    for (alert, severity, tail) in THRESHOLDS {
        let found = alerts.iter().any(|(_, r)| {
            s(r, "alert") == *alert
                && s(at(r, &["labels"]), "severity") == *severity
                && s(r, "expr").trim_end().ends_with(tail)
        });
        if !found {
            problems.push(format!(
                "{alert} ({severity}) must end in `{tail}` (the agreed threshold)"
            ));
        }
    }

    // Unit tests: every alert fires in at least one case, and enough cases stay quiet.
    let tests = yaml(&deploy("prometheus/etcd-monitor.rules.test.yml"))?;
    let mut fired = BTreeSet::new();
    let mut quiet = 0;
    for case in seq(&tests, "tests") {
        for t in seq(case, "alert_rule_test") {
            if seq(t, "exp_alerts").is_empty() {
                quiet += 1;
            } else {
                fired.insert(s(t, "alertname").to_string());
            }
        }
    }
    for name in &names {
        if !fired.contains(*name) {
            problems.push(format!("{name}: no unit test in which it fires"));
        }
    }
    if quiet < 10 {
        problems.push(format!(
            "only {quiet} unit tests where an alert must stay quiet"
        ));
    }
    ensure!(problems.is_empty(), "rules:\n  {}", problems.join("\n  "));
    Ok(())
}

// --- (5) PrometheusRule and ConfigMap in step with the rules file -------------------------

#[test]
fn kubernetes_copies_of_the_rules_match_the_rules_file() -> anyhow::Result<()> {
    let rules_text = read(&deploy("prometheus/etcd-monitor.rules.yml"))?;
    let rules: Value = serde_yaml_ng::from_str(&rules_text)?;
    let pr = yaml(&deploy("kubernetes/base/prometheusrule.yaml"))?;
    ensure!(
        s(&pr, "apiVersion") == "monitoring.coreos.com/v1" && s(&pr, "kind") == "PrometheusRule"
    );
    ensure!(
        at(&pr, &["spec", "groups"]) == &rules["groups"],
        "deploy/kubernetes/base/prometheusrule.yaml differs from the rules file: \
         run python3 deploy/kubernetes/sync-rules.py"
    );
    let cm = yaml(&deploy("kubernetes/base/prometheus-rules-configmap.yaml"))?;
    ensure!(
        s(at(&cm, &["data"]), "etcd-monitor.rules.yml") == rules_text,
        "deploy/kubernetes/base/prometheus-rules-configmap.yaml differs from the rules file: \
         run python3 deploy/kubernetes/sync-rules.py"
    );
    // The generator's own check agrees.
    if tool_or_skip(which("python3").is_some(), "python3").is_some() {
        run(Command::new("python3").args(["deploy/kubernetes/sync-rules.py", "--check"]))?;
    }
    Ok(())
}

// --- (2) Kubernetes: kustomize, schemas, least privilege -----------------------------------

/// How to render a kustomization: `kustomize build` or `kubectl kustomize`.
fn kustomize() -> Option<Vec<String>> {
    if which("kustomize").is_some() {
        return Some(vec!["kustomize".into(), "build".into()]);
    }
    // kubectl embeds kustomize since 1.14, a usable one (directories in `resources`,
    // `patches`, `labels`) since 1.21.
    let version = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&version.stdout);
    let kustomize_v = text
        .lines()
        .find_map(|l| l.strip_prefix("Kustomize Version: v"))?;
    let major: u32 = kustomize_v.split('.').next()?.parse().ok()?;
    (major >= 4).then(|| vec!["kubectl".into(), "kustomize".into()])
}

fn kubernetes_validate_available() -> bool {
    Command::new("python3")
        .args(["-c", "import kubernetes_validate"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Kustomization directories: the base and every overlay.
fn kustomizations() -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs = vec![deploy("kubernetes/base")];
    for entry in std::fs::read_dir(deploy("kubernetes/overlays"))? {
        let dir = entry?.path();
        if dir.join("kustomization.yaml").is_file() {
            dirs.push(dir);
        }
    }
    dirs.sort();
    ensure!(
        dirs.len() >= 2,
        "no overlays under deploy/kubernetes/overlays"
    );
    Ok(dirs)
}

fn render(kustomize: &[String], dir: &Path) -> anyhow::Result<Vec<Value>> {
    let out = run(Command::new(&kustomize[0]).args(&kustomize[1..]).arg(dir))?;
    yaml_docs(&out)
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> anyhow::Result<&'a Value> {
    objects
        .iter()
        .find(|o| s(o, "kind") == kind && s(at(o, &["metadata"]), "name") == name)
        .with_context(|| format!("no {kind} {name}"))
}

#[test]
fn kubernetes_manifests_render_and_validate_offline() -> anyhow::Result<()> {
    let kustomize = kustomize();
    if tool_or_skip(
        kustomize.is_some(),
        "kustomize (or kubectl >= 1.21 with kustomize v4+)",
    )
    .is_none()
    {
        return Ok(());
    }
    let kustomize = kustomize.unwrap_or_default();
    let validate = tool_or_skip(
        kubernetes_validate_available(),
        "the PyPI package kubernetes-validate",
    )
    .is_some();

    // Every manifest in the base is listed in its kustomization, so none is silently left out.
    let base = yaml(&deploy("kubernetes/base/kustomization.yaml"))?;
    let listed: BTreeSet<&str> = seq(&base, "resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for entry in std::fs::read_dir(deploy("kubernetes/base"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            ensure!(
                listed.contains(name.as_str()),
                "base/{name} is not in base/kustomization.yaml"
            );
        }
    }

    let dir = tempfile::tempdir()?;
    for kdir in kustomizations()? {
        let label = kdir
            .strip_prefix(deploy("kubernetes"))
            .unwrap_or(&kdir)
            .display()
            .to_string();
        let objects = render(&kustomize, &kdir).with_context(|| label.clone())?;
        ensure!(
            objects.len() >= 10,
            "{label}: only {} objects",
            objects.len()
        );
        for o in &objects {
            let kind = s(o, "kind");
            if kind != "Namespace" {
                ensure!(
                    !s(at(o, &["metadata"]), "namespace").is_empty(),
                    "{label}: {kind} {} has no namespace",
                    s(at(o, &["metadata"]), "name")
                );
            }
        }
        check_operator_objects(&label, &objects)?;
        check_agent(&label, &objects)?;
        check_collector(&label, &objects)?;
        check_network_policies(&label, &objects)?;
        ensure!(
            !objects.iter().any(|o| s(o, "kind") == "Secret"),
            "{label}: no Secret is shipped (tokens and keys are created by the operator)"
        );
        if label.contains("kubeadm") {
            check_kubeadm(&objects)?;
        }

        if validate {
            let file = dir.path().join(format!("{}.yaml", label.replace('/', "-")));
            let text = objects
                .iter()
                .map(serde_yaml_ng::to_string)
                .collect::<Result<Vec<_>, _>>()?
                .join("---\n");
            std::fs::write(&file, text)?;
            let out = run(Command::new("python3")
                .args(["-m", "kubernetes_validate", "--strict"])
                .arg(&file))
            .with_context(|| format!("{label}: schema validation"))?;
            // Every built-in kind passed; only the operator's CRDs have no schema offline
            // (check_operator_objects covers them).
            let passed = out.lines().filter(|l| l.contains(" passed ")).count();
            let crds = objects
                .iter()
                .filter(|o| s(o, "apiVersion").starts_with("monitoring.coreos.com/"))
                .count();
            ensure!(
                passed + crds == objects.len(),
                "{label}: {passed} objects passed, {crds} CRDs, of {}:\n{out}",
                objects.len()
            );
        }
    }
    Ok(())
}

/// ServiceMonitor and PrometheusRule have no schema offline: the fields the operator needs.
fn check_operator_objects(label: &str, objects: &[Value]) -> anyhow::Result<()> {
    let mut monitors = 0;
    for o in objects {
        match s(o, "kind") {
            "ServiceMonitor" => {
                monitors += 1;
                ensure!(
                    at(o, &["spec", "selector", "matchLabels"]).is_mapping(),
                    "{label}: ServiceMonitor without spec.selector.matchLabels"
                );
                let endpoints = seq(at(o, &["spec"]), "endpoints");
                ensure!(
                    !endpoints.is_empty() && endpoints.iter().all(|e| !s(e, "port").is_empty()),
                    "{label}: ServiceMonitor endpoints need a named port"
                );
                // The selector must match a Service of the same namespace with that port.
                let ns = s(at(o, &["metadata"]), "namespace");
                let want = at(o, &["spec", "selector", "matchLabels"]);
                let svc = objects.iter().find(|svc| {
                    s(svc, "kind") == "Service"
                        && s(at(svc, &["metadata"]), "namespace") == ns
                        && want.as_mapping().is_some_and(|m| {
                            m.iter()
                                .all(|(k, v)| at(svc, &["metadata", "labels"]).get(k) == Some(v))
                        })
                });
                let svc = svc.with_context(|| {
                    format!(
                        "{label}: ServiceMonitor {} selects no Service",
                        s(at(o, &["metadata"]), "name")
                    )
                })?;
                for e in endpoints {
                    ensure!(
                        seq(at(svc, &["spec"]), "ports")
                            .iter()
                            .any(|p| s(p, "name") == s(e, "port")),
                        "{label}: Service has no port named {}",
                        s(e, "port")
                    );
                }
            }
            "PrometheusRule" => {
                let groups = seq(at(o, &["spec"]), "groups");
                ensure!(!groups.is_empty(), "{label}: PrometheusRule without groups");
                for g in groups {
                    ensure!(!s(g, "name").is_empty() && !seq(g, "rules").is_empty());
                }
            }
            _ => {}
        }
    }
    ensure!(
        monitors >= 2,
        "{label}: ServiceMonitors for the collector and the agents"
    );
    Ok(())
}

/// Walks every value under `v`, calling `f(key, value)` for each mapping entry.
fn walk(v: &Value, f: &mut dyn FnMut(&str, &Value)) {
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                f(k.as_str().unwrap_or_default(), v);
                walk(v, f);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|i| walk(i, f)),
        _ => {}
    }
}

fn check_agent(label: &str, objects: &[Value]) -> anyhow::Result<()> {
    let ds = find(objects, "DaemonSet", "etcd-monitor-agent")?;
    let ns = s(at(ds, &["metadata"]), "namespace");
    let pod = at(ds, &["spec", "template", "spec"]);
    ensure!(
        pod.get("hostPID") == Some(&Value::Bool(true)),
        "{label}: agent needs hostPID"
    );
    let mut privileged = false;
    walk(pod, &mut |k, v| {
        privileged |= k == "privileged" && v == &Value::Bool(true);
    });
    ensure!(!privileged, "{label}: agent must not be privileged");
    for flag in ["hostNetwork", "hostIPC"] {
        ensure!(
            pod.get(flag) != Some(&Value::Bool(true)),
            "{label}: agent does not need {flag}"
        );
    }

    let containers = seq(pod, "containers");
    ensure!(containers.len() == 1, "{label}: one agent container");
    let c = &containers[0];
    let sc = at(c, &["securityContext"]);
    let caps: BTreeSet<&str> = seq(at(sc, &["capabilities"]), "add")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    ensure!(
        caps == AGENT_CAPS.iter().copied().collect(),
        "{label}: agent capabilities {caps:?}, want exactly {AGENT_CAPS:?}"
    );
    ensure!(
        seq(at(sc, &["capabilities"]), "drop")
            .iter()
            .any(|d| d.as_str() == Some("ALL")),
        "{label}: agent must drop ALL other capabilities"
    );
    ensure!(
        sc.get("readOnlyRootFilesystem") == Some(&Value::Bool(true))
            && sc.get("allowPrivilegeEscalation") == Some(&Value::Bool(false)),
        "{label}: agent needs a read-only root and no privilege escalation"
    );
    ensure!(
        seq(c, "args")
            .iter()
            .any(|a| a.as_str() == Some("--proc-root=/host/proc")),
        "{label}: agent needs --proc-root=/host/proc"
    );

    // Host paths, each mounted read-only.
    let host_paths: BTreeMap<&str, &str> = seq(pod, "volumes")
        .iter()
        .filter_map(|v| Some((s(v, "name"), at(v, &["hostPath", "path"]).as_str()?)))
        .collect();
    let mut mounted = BTreeMap::new();
    for m in seq(c, "volumeMounts") {
        let name = s(m, "name");
        ensure!(
            m.get("readOnly") == Some(&Value::Bool(true)),
            "{label}: agent mount {name} must be read-only"
        );
        if let Some(host) = host_paths.get(name) {
            mounted.insert(*host, s(m, "mountPath"));
        }
    }
    for (host, inside) in [
        ("/proc", "/host/proc"),
        ("/sys/kernel/tracing", "/sys/kernel/tracing"),
        ("/sys/kernel/btf", "/sys/kernel/btf"),
    ] {
        ensure!(
            mounted.get(host) == Some(&inside),
            "{label}: agent must mount {host} read-only at {inside}: {mounted:?}"
        );
    }
    ensure!(
        host_paths.contains_key("etcd-data") && mounted.values().any(|m| m.contains("etcd")),
        "{label}: agent must mount the etcd data dir read-only"
    );

    for probe in ["livenessProbe", "readinessProbe"] {
        let get = at(c, &[probe, "httpGet"]);
        ensure!(
            s(get, "path") == "/healthz" && get.get("port") == Some(&Value::from(9465)),
            "{label}: agent {probe} must GET /healthz on 9465"
        );
    }
    for kind in ["requests", "limits"] {
        let r = at(c, &["resources", kind]);
        ensure!(
            r.get("cpu").is_some() && r.get("memory").is_some(),
            "{label}: agent resources.{kind}"
        );
    }
    let env: BTreeMap<&str, &Value> = seq(c, "env").iter().map(|e| (s(e, "name"), e)).collect();
    ensure!(
        s(
            at(
                env.get("NODE_NAME").copied().unwrap_or(&Value::Null),
                &["valueFrom", "fieldRef"]
            ),
            "fieldPath"
        ) == "spec.nodeName",
        "{label}: NODE_NAME from spec.nodeName"
    );
    // Every collector replica: the headless ingest Service (see check_collector).
    let want = format!("http://etcd-monitor-ingest.{ns}.svc:9464");
    ensure!(
        env.get("COLLECTOR").map(|e| s(e, "value")) == Some(want.as_str()),
        "{label}: COLLECTOR must be {want}"
    );
    let token = env
        .get("COLLECTOR_TOKEN_FILE")
        .map(|e| s(e, "value"))
        .unwrap_or_default();
    let keys = secret_file_keys(pod, c, token)
        .with_context(|| format!("{label}: agent COLLECTOR_TOKEN_FILE"))?;
    ensure!(
        keys == ["ingest"],
        "{label}: the agent mounts the ingest token and no other key: {keys:?}"
    );
    Ok(())
}

/// The volume a file path is under: (volume, its mount path).
fn volume_of<'a>(pod: &'a Value, container: &'a Value, path: &str) -> Option<(&'a Value, &'a str)> {
    let (name, dir) = seq(container, "volumeMounts")
        .iter()
        .map(|m| (s(m, "name"), s(m, "mountPath")))
        .filter(|(_, dir)| !dir.is_empty() && path.starts_with(&format!("{dir}/")))
        .max_by_key(|(_, dir)| dir.len())?;
    let volume = seq(pod, "volumes").iter().find(|v| s(v, "name") == name)?;
    Some((volume, dir))
}

/// For a file `path` that must come from a Secret mounted key by key: the Secret's keys the
/// container sees there. Fails when the path is not under a Secret volume, when the volume
/// mounts the whole Secret (no `items`), or when the file is none of its items.
fn secret_file_keys<'a>(
    pod: &'a Value,
    container: &'a Value,
    path: &str,
) -> anyhow::Result<Vec<&'a str>> {
    let (volume, dir) = volume_of(pod, container, path)
        .with_context(|| format!("{path:?} is not under a mounted volume"))?;
    let secret = at(volume, &["secret"]);
    ensure!(
        !s(secret, "secretName").is_empty(),
        "{path} must come from a Secret: {volume:?}"
    );
    let items = seq(secret, "items");
    ensure!(
        !items.is_empty(),
        "the Secret behind {path} must be mounted key by key (items), not whole"
    );
    let file = &path[dir.len() + 1..];
    ensure!(
        items.iter().any(|i| s(i, "path") == file),
        "{path}: no item {file} in {items:?}"
    );
    let mode = secret
        .get("defaultMode")
        .and_then(Value::as_u64)
        .unwrap_or(0o644);
    ensure!(
        mode & 0o007 == 0,
        "{path}: the Secret's files must not be world-readable (defaultMode {mode:o})"
    );
    Ok(items.iter().map(|i| s(i, "key")).collect())
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_mapping()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The ingress rules of every NetworkPolicy selecting the pods of `workload`.
fn policies_for<'a>(objects: &'a [Value], workload: &Value) -> Vec<&'a Value> {
    let labels = at(workload, &["spec", "template", "metadata", "labels"]);
    let ns = s(at(workload, &["metadata"]), "namespace");
    objects
        .iter()
        .filter(|o| {
            s(o, "kind") == "NetworkPolicy"
                && s(at(o, &["metadata"]), "namespace") == ns
                && labels_match(at(o, &["spec", "podSelector", "matchLabels"]), labels)
        })
        .collect()
}

/// (port, peers) of every ingress rule; a rule without ports opens every port (port 0).
fn ingress_rules(policy: &Value) -> Vec<(u64, &[Value])> {
    let mut out = Vec::new();
    for rule in seq(at(policy, &["spec"]), "ingress") {
        let peers = seq(rule, "from");
        let ports = seq(rule, "ports");
        if ports.is_empty() {
            out.push((0, peers));
        }
        for p in ports {
            out.push((p.get("port").and_then(Value::as_u64).unwrap_or(0), peers));
        }
    }
    out
}

/// Collector: REST (8080) from any namespace, gRPC (9464) from the agents only, nothing else.
/// Agent: its /metrics port (9465) only.
fn check_network_policies(label: &str, objects: &[Value]) -> anyhow::Result<()> {
    let dep = find(objects, "Deployment", "etcd-monitor")?;
    let ds = find(objects, "DaemonSet", "etcd-monitor-agent")?;
    let agent_labels = at(ds, &["spec", "template", "metadata", "labels"]);
    for (workload, what) in [(dep, "collector"), (ds, "agent")] {
        ensure!(
            at(workload, &["spec", "template", "spec"]).get("hostNetwork")
                != Some(&Value::Bool(true)),
            "{label}: the {what} is on the host network, where NetworkPolicies do not apply"
        );
        let policies = policies_for(objects, workload);
        ensure!(
            !policies.is_empty(),
            "{label}: no NetworkPolicy selects the {what}"
        );
        for p in &policies {
            ensure!(
                seq(at(p, &["spec"]), "policyTypes")
                    .iter()
                    .any(|t| t.as_str() == Some("Ingress")),
                "{label}: the {what}'s NetworkPolicy must restrict Ingress"
            );
        }
        let rules: Vec<(u64, &[Value])> = policies.iter().flat_map(|p| ingress_rules(p)).collect();
        let allowed: BTreeSet<u64> = rules.iter().map(|(port, _)| *port).collect();
        let want: BTreeSet<u64> = if what == "collector" {
            [8080, 9464].into()
        } else {
            [9465].into()
        };
        ensure!(
            allowed == want,
            "{label}: the {what} admits ports {allowed:?}, want exactly {want:?} (0 = every port)"
        );
        for (port, peers) in rules {
            ensure!(
                !peers.is_empty(),
                "{label}: {what} port {port} is open to every source"
            );
            for peer in peers {
                ensure!(
                    peer.get("ipBlock").is_none(),
                    "{label}: {what} port {port} admits an ipBlock"
                );
                if port == 9464 {
                    ensure!(
                        peer.get("namespaceSelector").is_none()
                            && labels_match(
                                at(peer, &["podSelector", "matchLabels"]),
                                agent_labels
                            ),
                        "{label}: the collector's gRPC port admits more than the agents: {peer:?}"
                    );
                }
            }
        }
    }
    Ok(())
}

fn check_collector(label: &str, objects: &[Value]) -> anyhow::Result<()> {
    let svc = find(objects, "Service", "etcd-monitor")?;
    let ports: BTreeMap<&str, &Value> = seq(at(svc, &["spec"]), "ports")
        .iter()
        .map(|p| (s(p, "name"), &p["port"]))
        .collect();
    ensure!(
        ports.get("http") == Some(&&Value::from(8080))
            && ports.get("grpc") == Some(&&Value::from(9464)),
        "{label}: collector Service ports {ports:?}"
    );
    // The agents ship to every replica through a headless Service over the same pods.
    let ingest = find(objects, "Service", "etcd-monitor-ingest")?;
    let ingest_spec = at(ingest, &["spec"]);
    ensure!(
        s(ingest_spec, "clusterIP") == "None"
            && at(ingest_spec, &["selector"]) == at(svc, &["spec", "selector"])
            && seq(ingest_spec, "ports")
                .iter()
                .any(|p| s(p, "name") == "grpc" && p["port"] == 9464),
        "{label}: etcd-monitor-ingest must be headless (clusterIP: None), select the collector pods and expose grpc 9464"
    );
    let dep = find(objects, "Deployment", "etcd-monitor")?;
    let pod = at(dep, &["spec", "template", "spec"]);
    let c = seq(pod, "containers")
        .first()
        .context("collector container")?;
    // Collector HA: two replicas, the leader election on, each named by its pod.
    let ha_env: BTreeMap<&str, &Value> = seq(c, "env").iter().map(|e| (s(e, "name"), e)).collect();
    ensure!(
        at(dep, &["spec"])["replicas"] == 2
            && ha_env
                .get("ETCD_MONITOR_HA_ELECTION")
                .map(|e| s(e, "value"))
                == Some("true")
            && ha_env
                .get("ETCD_MONITOR_HA_ID")
                .map(|e| s(at(e, &["valueFrom", "fieldRef"]), "fieldPath"))
                == Some("metadata.name"),
        "{label}: the collector runs 2 replicas with --ha-election and --ha-id from the pod name"
    );
    let mounts: Vec<(&str, &str)> = seq(c, "volumeMounts")
        .iter()
        .map(|m| (s(m, "name"), s(m, "mountPath")))
        .collect();
    let env: BTreeMap<&str, &str> = seq(c, "env")
        .iter()
        .map(|e| (s(e, "name"), s(e, "value")))
        .collect();
    let init_mounts: BTreeSet<&str> = seq(pod, "initContainers")
        .iter()
        .flat_map(|i| seq(i, "volumeMounts"))
        .map(|m| s(m, "name"))
        .collect();
    for var in ["CERT_FILE", "KEY_FILE", "CA_FILE"] {
        let path = env.get(var).copied().unwrap_or_default();
        let (source, _) = volume_of(pod, c, path)
            .with_context(|| format!("{label}: {var}={path:?} is not under a mounted volume"))?;
        if source.get("secret").is_some() {
            secret_file_keys(pod, c, path).with_context(|| format!("{label}: {var}"))?;
        } else {
            // Copies an init container made from the host's PKI (the kubeadm overlay).
            ensure!(
                source.get("emptyDir").is_some() && init_mounts.contains(s(source, "name")),
                "{label}: {var} must come from a Secret or from an init container's copy"
            );
        }
        ensure!(
            !mounts.iter().any(|(name, _)| {
                seq(pod, "volumes")
                    .iter()
                    .any(|v| s(v, "name") == *name && v.get("hostPath").is_some())
            }),
            "{label}: the collector container mounts no host path"
        );
    }
    // Bound to the pod's address, REST and gRPC, from the downward API.
    let from_field = |var: &str| -> &str {
        seq(c, "env")
            .iter()
            .find(|e| s(e, "name") == var)
            .map(|e| s(at(e, &["valueFrom", "fieldRef"]), "fieldPath"))
            .unwrap_or_default()
    };
    for var in ["API_HOST", "GRPC_HOST"] {
        let value = env.get(var).copied().unwrap_or_default();
        let source = value
            .strip_prefix("$(")
            .and_then(|v| v.strip_suffix(')'))
            .map(from_field)
            .unwrap_or_else(|| from_field(var));
        ensure!(
            source == "status.podIP",
            "{label}: {var}={value:?} must be the pod's address (status.podIP)"
        );
    }
    // Tokens: the admin token for REST and the ingest token for gRPC, one Secret key each.
    for (var, key) in [
        ("ADMIN_TOKEN_FILE", "admin"),
        ("GRPC_INGEST_TOKEN_FILE", "ingest"),
    ] {
        let path = env.get(var).copied().unwrap_or_default();
        let keys = secret_file_keys(pod, c, path).with_context(|| format!("{label}: {var}"))?;
        ensure!(
            keys.contains(&key) && path.ends_with(&format!("/{key}")),
            "{label}: {var}={path:?} must be the Secret key {key}"
        );
    }
    let pod_sc = at(pod, &["securityContext"]);
    ensure!(
        pod_sc.get("runAsNonRoot") == Some(&Value::Bool(true))
            && at(c, &["securityContext"]).get("runAsUser").is_none()
            && pod_sc.get("runAsUser").and_then(Value::as_u64).unwrap_or(0) != 0,
        "{label}: the collector runs as a non-root user"
    );
    ensure!(
        objects.iter().any(|o| s(o, "kind") == "ServiceAccount"),
        "{label}: service accounts"
    );
    // Nothing here calls the Kubernetes API, so no RBAC at all.
    ensure!(
        !objects
            .iter()
            .any(|o| s(o, "apiVersion").starts_with("rbac.authorization.k8s.io/")),
        "{label}: unexpected RBAC objects"
    );
    Ok(())
}

fn check_kubeadm(objects: &[Value]) -> anyhow::Result<()> {
    let ds = find(objects, "DaemonSet", "etcd-monitor-agent")?;
    let pod = at(ds, &["spec", "template", "spec"]);
    ensure!(
        seq(pod, "tolerations")
            .iter()
            .any(|t| s(t, "key") == "node-role.kubernetes.io/control-plane"),
        "kubeadm: agent must tolerate the control-plane taint"
    );
    ensure!(
        at(pod, &["nodeSelector"])
            .get("node-role.kubernetes.io/control-plane")
            .is_some(),
        "kubeadm: agent runs on control-plane nodes"
    );
    let data = seq(pod, "volumes")
        .iter()
        .find(|v| s(v, "name") == "etcd-data")
        .context("kubeadm: etcd-data volume")?;
    ensure!(s(at(data, &["hostPath"]), "path") == "/var/lib/etcd");
    // Only the client certificate, its key and the CA, each a single host file, and only into
    // the init container that copies them for the non-root collector.
    let dep = find(objects, "Deployment", "etcd-monitor")?;
    let pod = at(dep, &["spec", "template", "spec"]);
    let host: BTreeMap<&str, &Value> = seq(pod, "volumes")
        .iter()
        .filter(|v| v.get("hostPath").is_some())
        .map(|v| (s(v, "name"), at(v, &["hostPath"])))
        .collect();
    let files: BTreeSet<&str> = host.values().map(|h| s(h, "path")).collect();
    let want: BTreeSet<&str> = [
        "/etc/kubernetes/pki/etcd/ca.crt",
        "/etc/kubernetes/pki/etcd/healthcheck-client.crt",
        "/etc/kubernetes/pki/etcd/healthcheck-client.key",
    ]
    .into();
    ensure!(
        files == want,
        "kubeadm: the collector's host paths are {files:?}, want exactly {want:?}"
    );
    ensure!(
        host.values().all(|h| s(h, "type") == "File"),
        "kubeadm: each host path is a single file (type File): {host:?}"
    );
    let inits = seq(pod, "initContainers");
    ensure!(
        inits.len() == 1,
        "kubeadm: one init container copies the certificates"
    );
    let init = &inits[0];
    let init_mounts: BTreeSet<&str> = seq(init, "volumeMounts")
        .iter()
        .map(|m| s(m, "name"))
        .collect();
    ensure!(
        host.keys().all(|name| init_mounts.contains(name)),
        "kubeadm: the init container reads the host files"
    );
    let sc = at(init, &["securityContext"]);
    let caps: Vec<&str> = seq(at(sc, &["capabilities"]), "add")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    ensure!(
        caps == ["CHOWN"]
            && seq(at(sc, &["capabilities"]), "drop")
                .iter()
                .any(|d| d.as_str() == Some("ALL"))
            && sc.get("allowPrivilegeEscalation") == Some(&Value::Bool(false)),
        "kubeadm: the init container keeps only CAP_CHOWN: {sc:?}"
    );
    let script = seq(init, "command")
        .iter()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    let uid = at(pod, &["securityContext", "runAsUser"])
        .as_u64()
        .context("kubeadm: pod runAsUser")?;
    ensure!(
        script.contains(&format!("chown {uid}:")) && script.contains("chmod 0400"),
        "kubeadm: the copies belong to the collector's uid {uid}, mode 0400: {script}"
    );
    Ok(())
}

#[test]
fn the_checks_catch_open_ports_and_whole_pki_mounts() -> anyhow::Result<()> {
    // The manifest checks above can fail: break a rendered copy in the ways they guard against.
    let Some(kustomize) = kustomize() else {
        tool_or_skip(false, "kustomize (or kubectl >= 1.21 with kustomize v4+)");
        return Ok(());
    };
    let objects = render(&kustomize, &deploy("kubernetes/overlays/kubeadm"))?;
    check_network_policies("kubeadm", &objects)?;
    check_kubeadm(&objects)?;
    check_collector("kubeadm", &objects)?;

    let policy = |objects: &mut Vec<Value>| -> anyhow::Result<usize> {
        objects
            .iter()
            .position(|o| {
                s(o, "kind") == "NetworkPolicy"
                    && s(at(o, &["metadata"]), "name") == "etcd-monitor-collector"
            })
            .context("collector policy")
    };
    // gRPC opened to every namespace.
    let mut open = objects.clone();
    let i = policy(&mut open)?;
    open[i]["spec"]["ingress"][1]["from"] = serde_yaml_ng::from_str("[{namespaceSelector: {}}]")?;
    ensure!(check_network_policies("kubeadm", &open).is_err());
    // A rule without ports.
    let mut any_port = objects.clone();
    let i = policy(&mut any_port)?;
    any_port[i]["spec"]["ingress"][0] =
        serde_yaml_ng::from_str("{from: [{namespaceSelector: {}}]}")?;
    ensure!(check_network_policies("kubeadm", &any_port).is_err());
    // The whole PKI directory.
    let mut whole = objects.clone();
    let d = whole
        .iter()
        .position(|o| s(o, "kind") == "Deployment")
        .context("deployment")?;
    for v in whole[d]["spec"]["template"]["spec"]["volumes"]
        .as_sequence_mut()
        .context("volumes")?
    {
        if s(v, "name") == "kubeadm-etcd-ca" {
            *v = serde_yaml_ng::from_str(
                "{name: kubeadm-etcd-ca, hostPath: {path: /etc/kubernetes/pki/etcd, type: Directory}}",
            )?;
        }
    }
    ensure!(check_kubeadm(&whole).is_err());
    // The collector bound to every interface, or a whole Secret mounted.
    let mut wide = objects.clone();
    for e in wide[d]["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence_mut()
        .context("env")?
    {
        if s(e, "name") == "API_HOST" {
            e["value"] = Value::from("0.0.0.0");
        }
    }
    ensure!(check_collector("kubeadm", &wide).is_err());
    let mut whole_secret = objects.clone();
    for v in whole_secret[d]["spec"]["template"]["spec"]["volumes"]
        .as_sequence_mut()
        .context("volumes")?
    {
        if s(v, "name") == "tokens" {
            v["secret"] =
                serde_yaml_ng::from_str("{secretName: etcd-monitor-tokens, defaultMode: 0440}")?;
        }
    }
    ensure!(check_collector("kubeadm", &whole_secret).is_err());
    Ok(())
}

// --- (3) compose ---------------------------------------------------------------------------

#[test]
fn compose_file_is_valid_and_complete() -> anyhow::Result<()> {
    let file = deploy("docker/docker-compose-full.yml");
    // The compose tool's own validation; `config` needs no engine.
    let compose: Option<Vec<&str>> = if which("docker-compose").is_some() {
        Some(vec!["docker-compose"])
    } else if Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        Some(vec!["docker", "compose"])
    } else {
        None
    };
    if tool_or_skip(
        compose.is_some(),
        "docker-compose (or the docker compose plugin)",
    )
    .is_some()
    {
        let compose = compose.unwrap_or_default();
        run(Command::new(compose[0])
            .args(&compose[1..])
            .arg("-f")
            .arg(&file)
            .args(["config", "-q"]))?;
    }

    // Structure, with or without the tool.
    let doc = yaml(&file)?;
    let services = at(&doc, &["services"]);
    let dir = file.parent().context("compose dir")?;
    let ports = |svc: &str| -> Vec<String> {
        seq(&services[svc], "ports")
            .iter()
            .filter_map(|p| p.as_str().map(String::from))
            .collect()
    };
    for (svc, port) in [
        ("etcd1", "2379:2379"),
        ("etcd2", "22379:2379"),
        ("etcd3", "32379:2379"),
        ("etcd-monitor", "8080:8080"),
        ("etcd-monitor", "9464:9464"),
        ("agent", "9465:9465"),
        ("prometheus", "9090:9090"),
        ("grafana", "3000:3000"),
    ] {
        ensure!(
            ports(svc).iter().any(|p| p == port),
            "service {svc} must publish {port}: {:?}",
            ports(svc)
        );
    }
    let agent = &services["agent"];
    ensure!(s(agent, "pid") == "host", "agent needs pid: host");
    ensure!(
        agent.get("privileged") != Some(&Value::Bool(true)),
        "agent must not be privileged"
    );
    let caps: BTreeSet<&str> = seq(agent, "cap_add")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    ensure!(
        caps == AGENT_CAPS.iter().copied().collect(),
        "agent cap_add {caps:?}"
    );

    // Every bind mount source and build file exists; the agent's host paths are read-only.
    for (name, svc) in services.as_mapping().context("services")? {
        let name = name.as_str().unwrap_or_default();
        for v in seq(svc, "volumes") {
            let v = v.as_str().unwrap_or_default();
            let source = v.split(':').next().unwrap_or_default();
            if source.starts_with('.') {
                ensure!(dir.join(source).exists(), "{name}: {source} does not exist");
            }
            if name == "agent" {
                ensure!(v.ends_with(":ro"), "agent: {v} must be read-only");
            }
        }
        if let Some(build) = svc.get("build") {
            let context = dir.join(s(build, "context"));
            ensure!(
                context.join(s(build, "dockerfile")).is_file(),
                "{name}: no Dockerfile {}",
                s(build, "dockerfile")
            );
        }
    }
    // Prometheus scrapes compose services by name.
    let prom = yaml(&deploy("prometheus/prometheus.yml"))?;
    for (job, targets) in scrape_targets(&prom) {
        for (target, _) in targets {
            let host = target.split(':').next().unwrap_or_default();
            ensure!(
                host == "localhost" || services.get(host).is_some(),
                "job {job} scrapes {target}, which is no compose service"
            );
        }
    }
    // Grafana's provisioning points at the dashboard where compose mounts it.
    let provider = yaml(&deploy("grafana/provisioning/dashboards/etcd-monitor.yml"))?;
    let path = s(at(&seq(&provider, "providers")[0], &["options"]), "path").to_string();
    ensure!(
        seq(&services["grafana"], "volumes")
            .iter()
            .filter_map(Value::as_str)
            .any(|v| v.contains(&format!("{path}/etcd-monitor.json"))),
        "grafana must mount the dashboard under {path}"
    );
    Ok(())
}

/// The compose healthchecks: what each checks, with a tool its image has, and dependents
/// waiting on them.
const COMPOSE_HEALTHCHECKS: &[(&str, &str)] = &[
    ("etcd1", "endpoint health"),
    ("etcd2", "endpoint health"),
    ("etcd3", "endpoint health"),
    ("etcd-monitor", "/dev/tcp/127.0.0.1/8080"),
    ("agent", "/dev/tcp/127.0.0.1/9465"),
    ("prometheus", "http://127.0.0.1:9090/-/ready"),
];

/// A healthcheck's `test` as argv (`["CMD", argv…]`).
fn healthcheck_argv(service: &Value) -> Vec<String> {
    let test = seq(&service["healthcheck"], "test");
    test.iter()
        .filter_map(Value::as_str)
        .skip_while(|w| *w == "CMD")
        .map(String::from)
        .collect()
}

/// Runs a compose healthcheck's argv on this host, with the container's address replaced.
fn run_healthcheck(argv: &[String], from: &str, to: &str) -> bool {
    let argv: Vec<String> = argv.iter().map(|a| a.replace(from, to)).collect();
    Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn compose_healthchecks_gate_the_dependents() -> anyhow::Result<()> {
    let file = deploy("docker/docker-compose-full.yml");
    let mut doc = yaml(&file)?;
    // The etcd services take their healthcheck from the `x-etcd` anchor (`<<: *etcd`).
    doc.apply_merge()?;
    let services = at(&doc, &["services"]);
    for (name, what) in COMPOSE_HEALTHCHECKS {
        let svc = &services[*name];
        let argv = healthcheck_argv(svc);
        ensure!(
            argv.join(" ").contains(what),
            "{name}: the healthcheck must check {what}: {argv:?}"
        );
        let hc = &svc["healthcheck"];
        for key in ["interval", "timeout", "retries"] {
            ensure!(hc.get(key).is_some(), "{name}: healthcheck without {key}");
        }
        // The program is in the image: etcdctl in etcd's (distroless, no shell), bash in the
        // Debian images built here (no curl, no wget), wget in Prometheus's busybox.
        let program = argv.first().map(String::as_str).unwrap_or_default();
        match svc.get("build") {
            Some(build) => {
                let dockerfile = read(
                    &file.with_file_name(
                        Path::new(s(build, "dockerfile"))
                            .file_name()
                            .context("dockerfile")?,
                    ),
                )?;
                let last_from = dockerfile
                    .lines()
                    .rfind(|l| l.starts_with("FROM "))
                    .unwrap_or_default();
                ensure!(
                    program == "bash" && last_from.contains("debian"),
                    "{name}: {program} in an image {last_from:?}"
                );
            }
            None => {
                let image = s(svc, "image");
                let expected = if image.starts_with("quay.io/coreos/etcd:") {
                    "/usr/local/bin/etcdctl"
                } else if image.starts_with("prom/prometheus:") {
                    "wget"
                } else {
                    bail!("{name}: no known tools in image {image}")
                };
                ensure!(program == expected, "{name}: {program} in {image}");
            }
        }
    }
    // Everything a service depends on that has a healthcheck is waited on until healthy.
    for (name, svc) in services.as_mapping().context("services")? {
        let name = name.as_str().unwrap_or_default();
        let Some(deps) = svc.get("depends_on") else {
            continue;
        };
        let deps = deps
            .as_mapping()
            .with_context(|| format!("{name}: depends_on must be a map with conditions"))?;
        for (dep, how) in deps {
            let dep = dep.as_str().unwrap_or_default();
            ensure!(
                services[dep].get("healthcheck").is_some(),
                "{name} depends on {dep}, which has no healthcheck"
            );
            ensure!(
                s(how, "condition") == "service_healthy",
                "{name} must wait until {dep} is healthy: {how:?}"
            );
        }
    }
    for (name, deps) in [
        ("etcd-monitor", &["etcd1", "etcd2", "etcd3"][..]),
        ("agent", &["etcd-monitor"]),
        ("prometheus", &["etcd-monitor", "agent"]),
        ("grafana", &["prometheus"]),
    ] {
        for dep in deps {
            ensure!(
                services[name]["depends_on"].get(*dep).is_some(),
                "{name} must depend on {dep}"
            );
        }
    }

    // The collector's, the agent's and etcd's checks succeed against the real binaries (on free
    // loopback ports instead of the containers' fixed ones) and fail when nothing answers.
    let dir = tempfile::tempdir()?;
    let cluster = etcd_monitor_tests::EtcdCluster::start(etcd_monitor_tests::ClusterOptions {
        members: 1,
        ..Default::default()
    })?;
    let member = cluster.members[0].client_url.clone();
    let collector = etcd_monitor_tests::CollectorProcess::start(
        &etcd_monitor_tests::binary("etcd-monitor")?,
        &[
            format!("--endpoints={member}"),
            format!("--data-dir={}", dir.path().join("data").display()),
        ],
        dir.path(),
    )?;
    let agent = etcd_monitor_tests::AgentProcess::start(
        &etcd_monitor_tests::binary("etcd-monitor-agent")?,
        &["--mode=client-only"],
        dir.path(),
        |_| {},
    )?;
    let port_of = |url: &str| url.rsplit(':').next().unwrap_or_default().to_string();
    let closed = etcd_monitor_tests::free_port()?.to_string();
    let etcd = healthcheck_argv(&services["etcd1"]);
    let etcdctl = which("etcdctl").context("etcdctl")?;
    let etcd: Vec<String> = std::iter::once(etcdctl.display().to_string())
        .chain(etcd.into_iter().skip(1))
        .collect();
    for (argv, from, port) in [
        (
            healthcheck_argv(&services["etcd-monitor"]),
            "/8080",
            port_of(&collector.url),
        ),
        (
            healthcheck_argv(&services["agent"]),
            "/9465",
            port_of(&agent.url),
        ),
        (etcd, ":2379", port_of(&member)),
    ] {
        ensure!(
            run_healthcheck(&argv, from, &format!("{}{port}", &from[..1])),
            "{argv:?} failed against the real process on port {port}"
        );
        ensure!(
            !run_healthcheck(&argv, from, &format!("{}{closed}", &from[..1])),
            "{argv:?} succeeded with nothing listening on {closed}"
        );
    }
    Ok(())
}

// --- (4) Grafana dashboard -----------------------------------------------------------------

fn dashboard() -> anyhow::Result<serde_json::Value> {
    etcd_monitor_tests::grafana::dashboard(&root())
}

fn panels(d: &serde_json::Value) -> Vec<&serde_json::Value> {
    etcd_monitor_tests::grafana::panels(d)
}

fn dashboard_exprs(d: &serde_json::Value) -> Vec<String> {
    etcd_monitor_tests::grafana::exprs(d)
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

#[test]
fn grafana_dashboard_is_well_formed() -> anyhow::Result<()> {
    let d = dashboard()?;
    let vars = d["templating"]["list"].as_array().context("templating")?;
    let var = |name: &str| vars.iter().find(|v| v["name"] == name);
    let ds = var("datasource").context("no datasource variable")?;
    ensure!(ds["type"] == "datasource" && ds["query"] == "prometheus");
    for name in ["cluster", "member"] {
        let v = var(name).with_context(|| format!("no {name} variable"))?;
        ensure!(
            v["datasource"]["uid"] == "${datasource}",
            "{name} variable's datasource"
        );
    }

    let mut ids = BTreeSet::new();
    let mut problems = Vec::new();
    let mut kinds = BTreeMap::<String, usize>::new();
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or_default();
        if !ids.insert(p["id"].as_i64().unwrap_or(-1)) {
            problems.push(format!("{title}: duplicate id"));
        }
        if p["gridPos"]["w"].as_i64().is_none() {
            problems.push(format!("{title}: no gridPos"));
        }
        if p["type"] == "row" {
            continue;
        }
        *kinds
            .entry(p["type"].as_str().unwrap_or_default().into())
            .or_default() += 1;
        if p["datasource"]["uid"] != "${datasource}" {
            problems.push(format!("{title}: datasource must be ${{datasource}}"));
        }
        let targets = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{title}: no targets"));
        }
        for t in targets {
            if t["expr"].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{title}: target without expr"));
            }
            if t["datasource"]["uid"] != "${datasource}" {
                problems.push(format!(
                    "{title}: target datasource must be ${{datasource}}"
                ));
            }
        }
    }
    let all_exprs = dashboard_exprs(&d).join("\n");
    for series in CONTRACT_SERIES {
        if !all_exprs.contains(series) {
            problems.push(format!("no panel shows {series}"));
        }
    }
    if !panels(&d).iter().any(|p| {
        p["type"] == "heatmap"
            && p["targets"][0]["expr"]
                .as_str()
                .is_some_and(|e| e.contains("etcdmon_fsync_duration_seconds_bucket"))
    }) {
        problems.push("no heatmap of etcdmon_fsync_duration_seconds_bucket".into());
    }
    ensure!(
        problems.is_empty(),
        "dashboard:\n  {}",
        problems.join("\n  ")
    );
    ensure!(
        kinds.get("stat").copied().unwrap_or(0) >= 4,
        "overview stats: {kinds:?}"
    );
    Ok(())
}

#[test]
fn every_dashboard_expression_parses() -> anyhow::Result<()> {
    let Some(promtool) = require("promtool") else {
        return Ok(());
    };
    let exprs = dashboard_exprs(&dashboard()?);
    ensure!(exprs.len() >= 20, "only {} expressions", exprs.len());
    // One recording rule per expression: `promtool check rules` parses each.
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"record": format!("dashboard:expr_{i}"), "expr": e}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("dashboard-exprs.rules.yml");
    std::fs::write(&path, serde_yaml_ng::to_string(&file)?)?;
    let out = promtool_check_rules(&promtool, &path)?;
    ensure!(
        out.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "promtool said: {out}"
    );
    Ok(())
}

#[test]
fn a_broken_expression_is_caught() -> anyhow::Result<()> {
    // The expression check above can fail: promtool rejects a malformed query.
    let Some(promtool) = require("promtool") else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.rules.yml");
    std::fs::write(
        &path,
        "groups:\n  - name: bad\n    rules:\n      - record: bad:expr\n        expr: sum(rate(x[5m])\n",
    )?;
    ensure!(promtool_check_rules(&promtool, &path).is_err());
    Ok(())
}

// --- Dockerfiles (no engine here: their structure only) -----------------------------------

#[test]
fn dockerfiles_are_multi_stage_with_the_right_toolchains() -> anyhow::Result<()> {
    for (file, binary, needs) in [
        (
            "docker/Dockerfile.collector",
            "etcd-monitor",
            &["protobuf-compiler"][..],
        ),
        (
            "docker/Dockerfile.agent",
            "etcd-monitor-agent",
            &[
                "nightly",
                "rust-src",
                "bpf-linker",
                "llvm-22-dev",
                "LLVM_PREFIX=/usr/lib/llvm-22",
                "protobuf-compiler",
            ][..],
        ),
    ] {
        let text = read(&deploy(file))?;
        let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
        ensure!(
            froms.len() == 2
                && froms[0].contains(" AS builder")
                && froms[1] == "FROM debian:bookworm-slim",
            "{file}: a builder stage and a debian:bookworm-slim runtime: {froms:?}"
        );
        for needed in needs {
            ensure!(text.contains(needed), "{file}: no {needed}");
        }
        ensure!(
            text.contains(&format!("cargo build --release --locked -p {binary}"))
                && text.contains(&format!("ENTRYPOINT [\"/usr/local/bin/{binary}\"]")),
            "{file}: must build and run {binary}"
        );
        let ignore = deploy(&format!("{file}.dockerignore"));
        ensure!(
            read(&ignore)?.lines().any(|l| l.trim() == "target"),
            "{}: keep target/ out of the build context",
            ignore.display()
        );
    }
    Ok(())
}
