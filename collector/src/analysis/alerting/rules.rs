//! Alert rules: name, severity, an expression over named [`Signal`]s, a `for` duration, labels
//! and templated annotations. [`defaults`] builds the built-in set (docs/contracts.md, the etcd
//! mixin's alerts with its thresholds, and the kernel-side rules) from the seed flags;
//! [`load`] reads a YAML rules file and merges it over the defaults.
//!
//! Expressions are `signal[window] OP number`, joined with `and`:
//! `wal_fsync_p99_seconds[5m] > 0.01 and wal_fsync_server_kernel_ratio[5m] > 2`. Errors in a
//! file name the line and column (serde_yaml_ng locations) and the reason.

use std::{collections::BTreeMap, fmt, path::Path, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::signals::Signal;
use crate::model::config::Thresholds;

/// Window a windowed signal uses when the expression gives none.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

/// A rules file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read.
    #[error("--rules {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The YAML is malformed or a value is invalid (with line and column when known).
    #[error("--rules {path}: {message}")]
    Invalid {
        /// File.
        path: String,
        /// `line L column C: reason`.
        message: String,
    },
}

/// How bad an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Page someone.
    Critical,
    /// Look at it soon.
    Warning,
    /// For the record.
    Info,
}

impl Severity {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum Op {
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `==`
    #[serde(rename = "==")]
    Eq,
    /// `!=`
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    /// Whether `value OP threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

/// `signal[window] OP threshold`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// Signal.
    pub signal: Signal,
    /// Window of a windowed signal.
    pub window: Duration,
    /// Comparison.
    pub op: Op,
    /// Threshold.
    pub threshold: f64,
}

/// Conditions that must all hold for the same member (the first one gives the value).
#[derive(Debug, Clone, PartialEq)]
pub struct Expr(pub Vec<Condition>);

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            if c.signal.windowed() {
                write!(
                    f,
                    "{}[{}] {} {}",
                    c.signal,
                    humantime::format_duration(c.window),
                    c.op.as_str(),
                    c.threshold
                )?;
            } else {
                write!(f, "{} {} {}", c.signal, c.op.as_str(), c.threshold)?;
            }
        }
        Ok(())
    }
}

fn parse_condition(text: &str) -> Result<Condition, String> {
    let text = text.trim();
    let ops = [">=", "<=", "==", "!=", ">", "<"];
    let (pos, op_text) = ops
        .iter()
        .filter_map(|o| text.find(o).map(|p| (p, *o)))
        .min_by_key(|(p, o)| (*p, std::cmp::Reverse(o.len())))
        .ok_or_else(|| {
            format!("{text:?}: expected `signal OP number` (OP one of > >= < <= == !=)")
        })?;
    let op = match op_text {
        ">=" => Op::Ge,
        "<=" => Op::Le,
        "==" => Op::Eq,
        "!=" => Op::Ne,
        ">" => Op::Gt,
        _ => Op::Lt,
    };
    let left = text[..pos].trim();
    let right = text[pos + op_text.len()..].trim();
    let threshold: f64 = right
        .parse()
        .map_err(|_| format!("{right:?} is not a number"))?;
    if !threshold.is_finite() {
        return Err(format!("{right:?} is not a finite number"));
    }
    let (name, window) = match left.split_once('[') {
        Some((name, rest)) => {
            let w = rest
                .strip_suffix(']')
                .ok_or_else(|| format!("{left:?}: missing `]`"))?;
            let d = crate::model::time::parse_duration(w).map_err(|e| format!("window {e}"))?;
            (name.trim(), Some(d))
        }
        None => (left, None),
    };
    let signal: Signal = name.parse()?;
    if window.is_some() && !signal.windowed() {
        return Err(format!(
            "{signal} is not computed over a window; drop the [..]"
        ));
    }
    Ok(Condition {
        signal,
        window: window.unwrap_or(DEFAULT_WINDOW),
        op,
        threshold,
    })
}

impl FromStr for Expr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let conds: Result<Vec<Condition>, String> = s.split(" and ").map(parse_condition).collect();
        let conds = conds?;
        if conds.is_empty() {
            return Err("empty expression".to_string());
        }
        Ok(Expr(conds))
    }
}

impl<'de> Deserialize<'de> for Expr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Variables templates may use besides `labels.NAME`.
pub const TEMPLATE_VARS: [&str; 29] = [
    "alertname",
    "severity",
    "cluster",
    "member",
    "peer",
    "alarm",
    "request",
    "value",
    "value_ms",
    "value_percent",
    "threshold",
    "for",
    "alarms",
    "kernel_p99_ms",
    "server_p99_ms",
    "quota_bytes",
    "unreachable_members",
    "reasons",
    "method",
    "agent_mode",
    "diagnosis",
    "kind",
    "subject",
    "expires_in",
    "used_bytes",
    "limit_bytes",
    "limit_source",
    "growth_bytes_per_hour",
    "certificate_source",
];

/// An annotation with `{{ var }}` placeholders, checked when parsed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(transparent)]
pub struct Template(pub String);

impl Template {
    /// Checks every placeholder.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("{text:?}: `{{{{` without `}}}}`"))?;
            let var = after[..end].trim();
            if !(TEMPLATE_VARS.contains(&var)
                || var.strip_prefix("labels.").is_some_and(|l| !l.is_empty()))
            {
                return Err(format!(
                    "unknown template variable {var:?}; use labels.NAME or one of {}",
                    TEMPLATE_VARS.join(", ")
                ));
            }
            rest = &after[end + 2..];
        }
        Ok(Self(text.to_string()))
    }

    /// Fills the placeholders from `vars` (labels under `labels.NAME`); a variable without a
    /// value becomes empty.
    pub fn render(&self, vars: &BTreeMap<String, String>) -> String {
        let mut out = String::with_capacity(self.0.len());
        let mut rest = self.0.as_str();
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                out.push_str(&rest[start..]);
                return out;
            };
            let var = after[..end].trim();
            if let Some(v) = vars.get(var) {
                out.push_str(v);
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        out
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Template::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim() == "0" || s.trim() == "0s" {
        return Ok(Some(Duration::ZERO));
    }
    crate::model::time::parse_duration(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A rule ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Alert name.
    pub name: String,
    /// Severity.
    pub severity: Severity,
    /// Condition.
    pub expr: Expr,
    /// How long the condition must hold before the alert fires.
    pub for_: Duration,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
    /// `summary`, `description`, `runbook_url`, …
    pub annotations: BTreeMap<String, Template>,
}

/// A rule as `/api/v1/alerts/rules` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleView {
    /// Alert name.
    pub name: String,
    /// Severity.
    pub severity: Severity,
    /// Expression.
    pub expr: String,
    /// `for`, seconds.
    pub for_seconds: f64,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotation templates.
    pub annotations: BTreeMap<String, String>,
}

impl From<&Rule> for RuleView {
    fn from(r: &Rule) -> Self {
        Self {
            name: r.name.clone(),
            severity: r.severity,
            expr: r.expr.to_string(),
            for_seconds: r.for_.as_secs_f64(),
            labels: r.labels.clone(),
            annotations: r
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
        }
    }
}

/// One rule in a rules file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRule {
    /// Alert name (replaces every built-in rule of that name).
    pub name: String,
    /// `false` removes the built-in rule of that name.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Severity (required when enabled).
    #[serde(default)]
    pub severity: Option<Severity>,
    /// Expression (required when enabled).
    #[serde(default)]
    pub expr: Option<Expr>,
    /// `for` duration (default 0s).
    #[serde(default, rename = "for", deserialize_with = "de_duration")]
    pub for_: Option<Duration>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, Template>,
}

fn yes() -> bool {
    true
}

/// A rules file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// Keep the built-in rules (default true); file rules replace built-ins by name.
    #[serde(default = "yes")]
    pub include_defaults: bool,
    /// Rules.
    #[serde(default)]
    pub rules: Vec<FileRule>,
}

/// Parses a rules file's text and merges it over `defaults`.
pub fn parse(text: &str, defaults: Vec<Rule>) -> Result<Vec<Rule>, String> {
    let file: RulesFile = serde_yaml_ng::from_str(text).map_err(|e| match e.location() {
        Some(loc) => {
            let message = strip_location(&e.to_string());
            let (line, column) = refine(text, loc.line(), loc.column(), &message);
            format!("line {line} column {column}: {message}")
        }
        None => e.to_string(),
    })?;
    let mut rules = if file.include_defaults {
        defaults
    } else {
        Vec::new()
    };
    let mut seen: Vec<&str> = Vec::new();
    for (i, r) in file.rules.iter().enumerate() {
        let at = format!("rules[{i}] ({})", r.name);
        if r.name.trim().is_empty()
            || !r
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!("{at}: name must be letters, digits or '_'"));
        }
        // Several entries of one name are allowed (like the mixin's warning and critical
        // variants); the first replaces the built-ins of that name.
        if !seen.contains(&r.name.as_str()) {
            rules.retain(|d| d.name != r.name);
            seen.push(&r.name);
        }
        if !r.enabled {
            continue;
        }
        let severity = r
            .severity
            .ok_or_else(|| format!("{at}: severity is required (critical, warning or info)"))?;
        let expr = r
            .expr
            .clone()
            .ok_or_else(|| format!("{at}: expr is required"))?;
        for k in r.labels.keys() {
            if matches!(
                k.as_str(),
                "alertname" | "severity" | "cluster" | "member" | "alertstate"
            ) {
                return Err(format!("{at}: label {k:?} is set by the engine"));
            }
            let valid = k
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "{at}: label {k:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
                ));
            }
        }
        rules.push(Rule {
            name: r.name.clone(),
            severity,
            expr,
            for_: r.for_.unwrap_or(Duration::ZERO),
            labels: r.labels.clone(),
            annotations: r.annotations.clone(),
        });
    }
    Ok(rules)
}

/// Errors raised while parsing a value (an expression, a template) are located by the YAML
/// parser at the enclosing mapping; when the message quotes the offending text, point at the
/// first line from there on that contains it.
fn refine(text: &str, line: usize, column: usize, message: &str) -> (usize, usize) {
    let quoted = message
        .split_once('"')
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(q, _)| q)
        .filter(|q| !q.is_empty());
    if let Some(q) = quoted {
        for (i, l) in text.lines().enumerate().skip(line.saturating_sub(1)) {
            if let Some(c) = l.find(q) {
                return (i + 1, c + 1);
            }
        }
    }
    (line, column)
}

/// serde_yaml_ng appends " at line L column C"; the message puts the location first instead.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(p) => msg[..p].to_string(),
        None => msg.to_string(),
    }
}

/// Reads `path` and merges it over the defaults built from `thresholds`.
pub fn load(path: &Path, thresholds: &Thresholds) -> Result<Vec<Rule>, RulesError> {
    let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, defaults(thresholds)).map_err(|message| RulesError::Invalid {
        path: path.display().to_string(),
        message,
    })
}

const RUNBOOKS: &str = "https://example.invalid/etcd-monitor/blob/main/docs/runbooks.md#";

fn rule(
    name: &str,
    severity: Severity,
    expr: &str,
    for_secs: u64,
    summary: &str,
    description: &str,
) -> Rule {
    let mut annotations = BTreeMap::new();
    annotations.insert("summary".to_string(), Template(summary.to_string()));
    annotations.insert("description".to_string(), Template(description.to_string()));
    annotations.insert(
        "runbook_url".to_string(),
        Template(format!("{RUNBOOKS}{}", name.to_ascii_lowercase())),
    );
    Rule {
        name: name.to_string(),
        severity,
        // The built-in expressions are constants; the unit tests parse every one.
        expr: expr.parse().unwrap_or_else(|e| {
            panic!("built-in rule {name}: {e}");
        }),
        for_: Duration::from_secs(for_secs),
        labels: BTreeMap::new(),
        annotations,
    }
}

impl Rule {
    /// The rule with one more label (tells apart rules of one name and severity).
    fn labelled(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }
}

/// The built-in rules, thresholds from the seed flags.
pub fn defaults(t: &Thresholds) -> Vec<Rule> {
    let mut rules = design_critical(t);
    rules.extend(design_warning(t));
    rules.extend(kernel_joins());
    rules.extend(mixin_cluster());
    rules.extend(mixin_disk());
    rules.extend(operational());
    rules
}

/// The original design's list (docs/contracts.md), critical.
fn design_critical(t: &Thresholds) -> Vec<Rule> {
    use Severity::Critical;
    vec![
        rule(
            "NoLeader",
            Critical,
            "cluster_has_leader == 0",
            60,
            "etcd cluster {{ cluster }} has no leader.",
            "Cluster {{ cluster }}: no reachable member claims leadership; the cluster accepts no writes.",
        ),
        rule(
            "HighLeaderChangeRate",
            Critical,
            &format!("leader_changes[1h] > {}", t.max_leader_changes),
            0,
            "etcd leader changed {{ value }} times in the last hour.",
            "Cluster {{ cluster }}: {{ value }} leader changes in the last hour (threshold {{ threshold }}, --max-leader-changes).",
        ),
        rule(
            "SlowWalFsync",
            Critical,
            "wal_fsync_p99_seconds[5m] > 0.01",
            300,
            "WAL fsync p99 on {{ member }} is {{ value_ms }} ms (server-measured).",
            "Cluster {{ cluster }}: etcd on {{ member }} measures a p99 WAL fsync of {{ value_ms }} ms over 5 minutes (threshold 10 ms).",
        ),
        rule(
            "KernelSlowWalFsync",
            Critical,
            "kernel_wal_fsync_p99_seconds[5m] > 0.01",
            300,
            "WAL fdatasync p99 on {{ member }} is {{ kernel_p99_ms }} ms (kernel-measured).",
            "Cluster {{ cluster }}: the fdatasync syscalls on the WAL of {{ member }} take {{ kernel_p99_ms }} ms at p99 (kernel tracepoints, threshold 10 ms): the disk or the block layer is slow.",
        ),
        rule(
            "DatabaseQuotaNearlyFull",
            Critical,
            "db_quota_ratio > 0.8",
            0,
            "etcd database on {{ member }} at {{ value_percent }}% of its quota.",
            "Cluster {{ cluster }}: the database of {{ member }} uses {{ value_percent }}% of --quota-backend-bytes ({{ quota_bytes }} bytes). Active alarms: {{ alarms }}.",
        ),
        rule(
            "EtcdAlarm",
            Critical,
            "member_alarm == 1",
            0,
            "etcd alarm {{ alarm }} raised on {{ member }}.",
            "Cluster {{ cluster }}: member {{ member }} has the {{ alarm }} alarm raised (NOSPACE: the database reached its quota and writes are refused).",
        ),
        rule(
            "MemberUnavailable",
            Critical,
            "member_up == 0",
            0,
            "etcd member {{ member }} does not answer.",
            "Cluster {{ cluster }}: member {{ member }} did not answer the collector's last health check.",
        ),
        rule(
            "InsufficientAvailableMembers",
            Critical,
            &format!("cluster_available_members < {}", t.min_available_nodes),
            0,
            "Only {{ value }} etcd members answer.",
            "Cluster {{ cluster }}: {{ value }} members answer, fewer than --min-available-nodes ({{ threshold }}). Unreachable: {{ unreachable_members }}.",
        ),
        rule(
            "SplitBrain",
            Critical,
            "cluster_split_brain == 1",
            0,
            "etcd members disagree on the leader or the cluster.",
            "Cluster {{ cluster }}: {{ reasons }}.",
        ),
    ]
}

/// The original design's list (docs/contracts.md), warning; DiskUsageHigh and MemoryUsageHigh
/// on the agent's filesystem and memory percentages.
fn design_warning(t: &Thresholds) -> Vec<Rule> {
    use Severity::Warning;
    vec![
        rule(
            "HighProposalFailureRate",
            Warning,
            "proposals_failed_per_second[5m] > 0.016667",
            300,
            "etcd proposals fail on {{ member }}.",
            "Cluster {{ cluster }}: member {{ member }} fails {{ value }} proposals a second (more than one a minute).",
        ),
        rule(
            "HighPendingProposals",
            Warning,
            "proposals_pending > 5",
            300,
            "etcd has a backlog of pending proposals on {{ member }}.",
            "Cluster {{ cluster }}: member {{ member }} has {{ value }} proposals pending.",
        ),
        rule(
            "DiskUsageHigh",
            Warning,
            "disk_used_ratio > 0.8",
            0,
            "The data-dir filesystem of {{ member }} is {{ value_percent }}% full.",
            "Cluster {{ cluster }}: the filesystem holding the data dir of {{ member }} is {{ value_percent }}% used ({{ used_bytes }} bytes, as df counts it; measured by the member's agent). etcd stops when it cannot write its WAL.",
        ),
        rule(
            "MemoryUsageHigh",
            Warning,
            "memory_used_ratio > 0.8",
            300,
            "etcd on {{ member }} uses {{ value_percent }}% of its memory limit.",
            "Cluster {{ cluster }}: the resident set of etcd on {{ member }} is {{ value_percent }}% of its {{ limit_source }} ({{ limit_bytes }} bytes; measured by the member's agent). Past the limit the kernel kills it.",
        ),
        rule(
            "RequestLatencyDegraded",
            Warning,
            &format!("request_latency_p99_ms > {}", t.max_latency_ms),
            0,
            "etcd {{ request }} latency p99 on {{ member }} is {{ value }} ms.",
            "Cluster {{ cluster }}: the collector's {{ request }} probe p99 against {{ member }} is {{ value }} ms (threshold {{ threshold }} ms, --max-latency-ms).",
        ),
        rule(
            "SlowBackendCommit",
            Warning,
            "backend_commit_p99_seconds[5m] > 0.025",
            300,
            "Backend commit p99 on {{ member }} is {{ value_ms }} ms.",
            "Cluster {{ cluster }}: p99 backend commit of {{ member }} is {{ value_ms }} ms over 5 minutes (threshold 25 ms).",
        ),
        rule(
            "PeerTcpRetransmits",
            Warning,
            "peer_retransmits_per_second[5m] > 1",
            600,
            "TCP retransmits from {{ member }} to {{ peer }}.",
            "Cluster {{ cluster }}: member {{ member }} retransmits {{ value }} TCP segments a second to peer {{ peer }} (kernel-measured).",
        ),
    ]
}

/// Kernel-side joins only this tool can make, and the agents' own health.
fn kernel_joins() -> Vec<Rule> {
    use Severity::Warning;
    vec![
        rule(
            "FsyncSlowButKernelFast",
            Warning,
            "wal_fsync_p99_seconds[5m] > 0.01 and wal_fsync_server_kernel_ratio[5m] > 2",
            600,
            "etcd on {{ member }} sees slow WAL fsyncs the kernel does not: the process is starved, not the disk.",
            "Cluster {{ cluster }}: etcd measures a p99 WAL fsync of {{ value_ms }} ms on {{ member }}, more than twice the kernel's fdatasync p99 ({{ kernel_p99_ms }} ms). Look at CPU throttling, scheduling and Go GC pauses of the etcd process.",
        ),
        rule(
            "AgentLosingEvents",
            Warning,
            "agent_lost_events[5m] > 0",
            0,
            "The agent of {{ member }} lost {{ value }} events.",
            "Cluster {{ cluster }}: the etcd-monitor agent tracing {{ member }} lost {{ value }} events in the last 5 minutes (kernel ring buffer, agent queue or in transit). Histograms stay exact; per-event detail is missing.",
        ),
        rule(
            "AgentNotUsingEbpf",
            Warning,
            "agent_ebpf == 0",
            900,
            "etcd-monitor-agent traces {{ member }} without eBPF.",
            "Cluster {{ cluster }}: the agent on the node of {{ member }} runs {{ agent_mode }}: no kernel-side fsync, write or TCP figures for it. Its /healthz says why.",
        ),
    ]
}

/// The etcd mixin (contrib/mixin), same thresholds and `for`: membership, leadership, gRPC,
/// peers, proposals.
fn mixin_cluster() -> Vec<Rule> {
    use Severity::{Critical, Warning};
    vec![
        rule(
            "etcdMembersDown",
            Warning,
            "cluster_unavailable_members > 0",
            1200,
            "etcd cluster members are down.",
            "etcd cluster {{ cluster }}: {{ value }} members are down ({{ unreachable_members }}).",
        ),
        rule(
            "etcdInsufficientMembers",
            Critical,
            "cluster_quorum_ok == 0",
            180,
            "etcd cluster has insufficient number of members.",
            "etcd cluster {{ cluster }}: fewer members answer than a quorum needs.",
        ),
        rule(
            "etcdNoLeader",
            Critical,
            "member_has_leader == 0",
            60,
            "etcd cluster has no leader.",
            "etcd cluster {{ cluster }}: member {{ member }} has no leader.",
        ),
        rule(
            "etcdHighNumberOfLeaderChanges",
            Warning,
            "leader_changes[15m] >= 4",
            300,
            "etcd cluster has high number of leader changes.",
            "etcd cluster {{ cluster }}: {{ value }} leader changes within the last 15 minutes.",
        ),
        rule(
            "etcdHighNumberOfFailedGRPCRequests",
            Warning,
            "grpc_failed_percent[5m] > 1",
            600,
            "etcd cluster has high number of failed grpc requests.",
            "etcd cluster {{ cluster }}: {{ value }}% of requests failed on {{ member }}.",
        ),
        rule(
            "etcdHighNumberOfFailedGRPCRequests",
            Critical,
            "grpc_failed_percent[5m] > 5",
            300,
            "etcd cluster has high number of failed grpc requests.",
            "etcd cluster {{ cluster }}: {{ value }}% of requests failed on {{ member }}.",
        ),
        rule(
            "etcdGRPCRequestsSlow",
            Critical,
            "grpc_request_p99_seconds[5m] > 0.15",
            600,
            "etcd grpc requests are slow.",
            "etcd cluster {{ cluster }}: p99 of {{ method }} requests is {{ value_ms }} ms on {{ member }}.",
        ),
        rule(
            "etcdMemberCommunicationSlow",
            Warning,
            "peer_round_trip_p99_seconds[5m] > 0.15",
            600,
            "etcd cluster member communication is slow.",
            "etcd cluster {{ cluster }}: p99 peer round trip from {{ member }} is {{ value_ms }} ms.",
        ),
        rule(
            "etcdHighNumberOfFailedProposals",
            Warning,
            "proposals_failed_per_second[15m] > 5",
            900,
            "etcd cluster has high number of proposal failures.",
            "etcd cluster {{ cluster }}: {{ value }} proposal failures per second over the last 15 minutes on {{ member }}.",
        ),
    ]
}

/// The etcd mixin's disk and database rules, same thresholds and `for`.
fn mixin_disk() -> Vec<Rule> {
    use Severity::{Critical, Warning};
    vec![
        rule(
            "etcdHighFsyncDurations",
            Warning,
            "wal_fsync_p99_seconds[5m] > 0.5",
            600,
            "etcd cluster 99th percentile fsync durations are too high.",
            "etcd cluster {{ cluster }}: p99 WAL fsync is {{ value_ms }} ms on {{ member }}.",
        ),
        rule(
            "etcdHighFsyncDurations",
            Critical,
            "wal_fsync_p99_seconds[5m] > 1",
            600,
            "etcd cluster 99th percentile fsync durations are too high.",
            "etcd cluster {{ cluster }}: p99 WAL fsync is {{ value_ms }} ms on {{ member }}.",
        ),
        rule(
            "etcdHighCommitDurations",
            Warning,
            "backend_commit_p99_seconds[5m] > 0.25",
            600,
            "etcd cluster 99th percentile commit durations are too high.",
            "etcd cluster {{ cluster }}: p99 backend commit is {{ value_ms }} ms on {{ member }}.",
        ),
        rule(
            "etcdDatabaseQuotaLowSpace",
            Critical,
            "db_quota_ratio > 0.95",
            600,
            "etcd cluster database is running full.",
            "etcd cluster {{ cluster }}: the database on {{ member }} uses {{ value_percent }}% of its quota ({{ quota_bytes }} bytes); writes stop (NOSPACE alarm) when it is full.",
        )
        .labelled("quota_tier", "95"),
        rule(
            "etcdExcessiveDatabaseGrowth",
            Warning,
            "db_predicted_quota_ratio[4h] > 1",
            600,
            "etcd cluster database growing very fast.",
            "etcd cluster {{ cluster }}: at the growth of the last four hours, the database on {{ member }} reaches its quota within the next four hours.",
        ),
        rule(
            "etcdDatabaseHighFragmentationRatio",
            Warning,
            "db_in_use_ratio < 0.5 and db_in_use_bytes > 104857600",
            600,
            "etcd database size in use is less than 50% of the actual allocated storage.",
            "etcd cluster {{ cluster }}: only {{ value_percent }}% of the database file on {{ member }} is in use; defragment it.",
        ),
    ]
}

/// The operational rules of issue 14: quota tiers below the mixin's 95 % (OpenShift's 65/75/85
/// %), heartbeats and applies that fall behind, and certificates that expire.
fn operational() -> Vec<Rule> {
    use Severity::{Critical, Info, Warning};
    let tier = |severity: Severity, percent: u32| {
        rule(
            "etcdDatabaseQuotaLowSpace",
            severity,
            &format!("db_quota_ratio > {}", f64::from(percent) / 100.0),
            600,
            "etcd cluster database is running full.",
            "etcd cluster {{ cluster }}: the database on {{ member }} uses {{ value_percent }}% of its quota ({{ quota_bytes }} bytes); writes stop (NOSPACE alarm) when it is full.",
        )
        .labelled("quota_tier", &percent.to_string())
    };
    vec![
        tier(Info, 65),
        tier(Warning, 75),
        tier(Critical, 85),
        rule(
            "etcdHeartbeatSendFailures",
            Warning,
            "heartbeat_send_failures[15m] > 5",
            300,
            "etcd leader {{ member }} fails to send heartbeats on time.",
            "etcd cluster {{ cluster }}: {{ member }} failed to send {{ value }} heartbeats on time in the last 15 minutes; followers may start elections. The leader is starved (CPU, slow disk) or its network to the peers is slow.",
        ),
        rule(
            "etcdSlowApplies",
            Warning,
            "slow_applies[15m] > 5",
            300,
            "etcd on {{ member }} applies requests slowly.",
            "etcd cluster {{ cluster }}: {{ value }} applies took more than 100 ms on {{ member }} in the last 15 minutes (etcd_server_slow_apply_total): expensive requests, a slow backend disk or a starved process.",
        ),
        rule(
            "CertificateExpiringSoon",
            Warning,
            "certificate_expiry_seconds < 2592000",
            0,
            "A {{ kind }} certificate expires in {{ expires_in }}.",
            "Cluster {{ cluster }}: the {{ kind }} certificate \"{{ subject }}\" ({{ certificate_source }}) expires in {{ expires_in }} (under 30 days). Renew it before etcd or the collector stops accepting it.",
        ),
        rule(
            "CertificateExpiringSoon",
            Critical,
            "certificate_expiry_seconds < 604800",
            0,
            "A {{ kind }} certificate expires in {{ expires_in }}.",
            "Cluster {{ cluster }}: the {{ kind }} certificate \"{{ subject }}\" ({{ certificate_source }}) expires in {{ expires_in }} (under 7 days). Renew it now: when it expires, clients and peers refuse the handshake.",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> Thresholds {
        Thresholds {
            max_latency_ms: 100,
            max_db_size_mb: 8192,
            min_available_nodes: 2,
            max_leader_changes: 3,
        }
    }

    #[test]
    fn defaults_cover_design_and_mixin_and_follow_seed_flags() {
        let rules = defaults(&Thresholds {
            max_latency_ms: 250,
            max_leader_changes: 7,
            ..thresholds()
        });
        for name in [
            "NoLeader",
            "HighLeaderChangeRate",
            "SlowWalFsync",
            "DatabaseQuotaNearlyFull",
            "MemberUnavailable",
            "SplitBrain",
            "HighProposalFailureRate",
            "HighPendingProposals",
            "DiskUsageHigh",
            "MemoryUsageHigh",
            "RequestLatencyDegraded",
            "SlowBackendCommit",
            "PeerTcpRetransmits",
            "KernelSlowWalFsync",
            "FsyncSlowButKernelFast",
            "AgentLosingEvents",
            "etcdMembersDown",
            "etcdInsufficientMembers",
            "etcdNoLeader",
            "etcdHighNumberOfLeaderChanges",
            "etcdHighNumberOfFailedGRPCRequests",
            "etcdMemberCommunicationSlow",
            "etcdHighNumberOfFailedProposals",
            "etcdGRPCRequestsSlow",
            "AgentNotUsingEbpf",
            "etcdHighFsyncDurations",
            "etcdHighCommitDurations",
            "etcdDatabaseQuotaLowSpace",
            "etcdExcessiveDatabaseGrowth",
            "etcdDatabaseHighFragmentationRatio",
            "etcdHeartbeatSendFailures",
            "etcdSlowApplies",
            "CertificateExpiringSoon",
        ] {
            assert!(rules.iter().any(|r| r.name == name), "{name} missing");
        }
        let find = |n: &str| {
            rules
                .iter()
                .find(|r| r.name == n)
                .map(|r| r.expr.0[0].clone())
        };
        assert_eq!(find("HighLeaderChangeRate").map(|c| c.threshold), Some(7.0));
        assert_eq!(
            find("HighLeaderChangeRate").map(|c| c.window),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            find("RequestLatencyDegraded").map(|c| c.threshold),
            Some(250.0)
        );
        assert_eq!(find("KernelSlowWalFsync").map(|c| c.threshold), Some(0.01));
        // Disk and memory on the agent's real percentages.
        let disk = find("DiskUsageHigh").map(|c| (c.signal, c.threshold));
        assert_eq!(disk, Some((Signal::DiskUsedRatio, 0.8)));
        let memory = find("MemoryUsageHigh").map(|c| (c.signal, c.threshold));
        assert_eq!(memory, Some((Signal::MemoryUsedRatio, 0.8)));
        // Quota tiers: one rule per tier, told apart by `quota_tier`.
        let tiers: Vec<(Severity, f64, String)> = rules
            .iter()
            .filter(|r| r.name == "etcdDatabaseQuotaLowSpace")
            .map(|r| {
                (
                    r.severity,
                    r.expr.0[0].threshold,
                    r.labels["quota_tier"].clone(),
                )
            })
            .collect();
        assert_eq!(tiers.len(), 4, "{tiers:?}");
        for (severity, ratio, tier) in [
            (Severity::Info, 0.65, "65"),
            (Severity::Warning, 0.75, "75"),
            (Severity::Critical, 0.85, "85"),
            (Severity::Critical, 0.95, "95"),
        ] {
            assert!(
                tiers.contains(&(severity, ratio, tier.to_string())),
                "{tier}: {tiers:?}"
            );
        }
        let certs: Vec<(Severity, f64)> = rules
            .iter()
            .filter(|r| r.name == "CertificateExpiringSoon")
            .map(|r| (r.severity, r.expr.0[0].threshold))
            .collect();
        assert_eq!(
            certs,
            [
                (Severity::Warning, 30.0 * 86_400.0),
                (Severity::Critical, 7.0 * 86_400.0)
            ]
        );
    }

    #[test]
    fn names_match_the_prometheus_rules_file() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/prometheus/etcd-monitor.rules.yml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let ours: Vec<String> = defaults(&thresholds())
            .into_iter()
            .map(|r| r.name)
            .collect();
        let mut checked = 0;
        for group in doc["groups"].as_sequence().unwrap() {
            for r in group["rules"].as_sequence().unwrap() {
                let Some(name) = r["alert"].as_str() else {
                    continue;
                };
                // The collector cannot alert on its own absence; Prometheus does.
                if name == "EtcdMonitorDown" {
                    continue;
                }
                assert!(
                    ours.iter().any(|n| n == name),
                    "{name} is in {path} but not built in"
                );
                checked += 1;
            }
        }
        assert!(checked > 20, "{checked}");
    }

    #[test]
    fn every_built_in_rule_has_a_runbook_section() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/runbooks.md");
        let text = std::fs::read_to_string(path).unwrap();
        let anchors: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("### "))
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        for r in defaults(&thresholds()) {
            let url = &r.annotations["runbook_url"].0;
            let anchor = url.rsplit('#').next().unwrap_or_default();
            assert!(
                anchors.iter().any(|a| a == anchor),
                "{}: no ### heading for #{anchor} in {path}",
                r.name
            );
        }
    }

    #[test]
    fn expressions_parse_and_reject_nonsense() {
        let e: Expr = "wal_fsync_p99_seconds[2m] > 0.01 and wal_fsync_server_kernel_ratio >= 2"
            .parse()
            .unwrap();
        assert_eq!(e.0.len(), 2);
        assert_eq!(e.0[0].window, Duration::from_secs(120));
        assert_eq!(e.0[1].op, Op::Ge);
        assert_eq!(e.0[1].window, DEFAULT_WINDOW);
        for bad in [
            "member_up",
            "nope > 1",
            "member_up == x",
            "member_up[5m] == 0",
            "leader_changes[soon] > 1",
        ] {
            assert!(bad.parse::<Expr>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn file_errors_name_line_and_reason() {
        let text = "rules:\n  - name: A\n    severity: critical\n    expr: member_up == 0\n  - name: B\n    severity: warning\n    expr: bogus_signal > 1\n";
        let err = parse(text, vec![]).unwrap_err();
        assert!(err.starts_with("line 7 "), "{err}");
        assert!(err.contains("unknown signal \"bogus_signal\""), "{err}");

        let err = parse("rules:\n  - name: A\n    severity: loud\n", vec![]).unwrap_err();
        assert!(err.starts_with("line 3 ") && err.contains("loud"), "{err}");

        let err = parse("rules:\n - name: A\n   severity: critical\n   expr: member_up == 0\n   annotations:\n     summary: '{{ nope }}'\n", vec![]).unwrap_err();
        assert!(err.starts_with("line 6 ") && err.contains("nope"), "{err}");

        let err = parse("rules: [\n", vec![]).unwrap_err();
        assert!(err.contains("line"), "{err}");

        let err = parse("rules:\n  - name: A\n    severity: critical\n", vec![]).unwrap_err();
        assert!(err.contains("rules[0] (A): expr is required"), "{err}");

        let err = parse("rules:\n  - name: A\n    severity: critical\n    expr: member_up == 0\n    labels: {team-x: db}\n", vec![]).unwrap_err();
        assert!(
            err.contains("team-x") && err.contains("label name"),
            "{err}"
        );
    }

    #[test]
    fn file_rules_replace_disable_and_add() {
        let d = defaults(&thresholds());
        let n = d.len();
        let text = "rules:\n  - name: MemberUnavailable\n    severity: warning\n    expr: member_up == 0\n    for: 10s\n    labels: {team: db}\n  - name: SplitBrain\n    enabled: false\n  - name: Custom\n    severity: info\n    expr: proposals_pending > 100\n";
        let rules = parse(text, d).unwrap();
        assert_eq!(rules.len(), n);
        let mu = rules
            .iter()
            .find(|r| r.name == "MemberUnavailable")
            .unwrap();
        assert_eq!(mu.severity, Severity::Warning);
        assert_eq!(mu.for_, Duration::from_secs(10));
        assert_eq!(mu.labels.get("team").map(String::as_str), Some("db"));
        assert!(!rules.iter().any(|r| r.name == "SplitBrain"));
        assert!(rules.iter().any(|r| r.name == "Custom"));
        let only = parse(
            "include_defaults: false\nrules: []\n",
            defaults(&thresholds()),
        )
        .unwrap();
        assert!(only.is_empty());
    }

    #[test]
    fn templates_render() {
        let t = Template::parse("{{ member }} at {{value_ms}} ms ({{ labels.team }})").unwrap();
        let mut vars = BTreeMap::new();
        vars.insert("member".to_string(), "m1".to_string());
        vars.insert("value_ms".to_string(), "12.5".to_string());
        vars.insert("labels.team".to_string(), "db".to_string());
        assert_eq!(t.render(&vars), "m1 at 12.5 ms (db)");
    }
}
