//! `etcdmon_mcp_tool_calls_total{tool, outcome}`: every tool call by how it ended. The labels
//! are bounded: `tool` is one of the served tools' names or `unknown`, `outcome` one of
//! [`Outcome`]. Refusals by the access policy are also counted by REST
//! (`etcdmon_api_auth_refusals_total`), since every tool answers through it.
//! `etcdmon_mcp_requests_refused_total{reason}`: `/mcp` requests the transport refused before
//! any tool ran ([`RequestRefusal`]).

use std::{
    collections::BTreeMap,
    sync::{
        LazyLock, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::model::exposition::Exposition;

/// How a tool call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The REST API answered 2xx.
    Ok,
    /// An argument broke a bound (too long, out of range, not the tool's schema).
    InvalidArguments,
    /// The REST API refused the caller (401/403): token missing, invalid, or not admin.
    Refused,
    /// The REST API answered another error, or could not be reached.
    Error,
    /// No tool of that name.
    UnknownTool,
}

impl Outcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::InvalidArguments => "invalid_arguments",
            Self::Refused => "refused",
            Self::Error => "error",
            Self::UnknownTool => "unknown_tool",
        }
    }
}

/// Where a tool leaves its outcome for the call's count (in the call's context extensions).
#[derive(Debug, Clone, Default)]
pub struct OutcomeSlot(std::sync::Arc<Mutex<Option<Outcome>>>);

impl OutcomeSlot {
    /// Records how the call ended (the last word wins).
    pub fn set(&self, outcome: Outcome) {
        *crate::model::sync::lock(&self.0) = Some(outcome);
    }

    /// What the tool recorded, if anything.
    pub fn get(&self) -> Option<Outcome> {
        *crate::model::sync::lock(&self.0)
    }
}

/// Why the `/mcp` transport refused a request (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestRefusal {
    /// A body over [`super::MAX_MESSAGE_BYTES`] (413).
    TooLarge,
    /// Not JSON-RPC, or not a message the server takes (400, 404).
    Malformed,
    /// The wrong method, `Accept` or `Content-Type` for streamable HTTP (405, 406, 415).
    Protocol,
    /// Any other 4xx.
    Other,
}

impl RequestRefusal {
    const ALL: [Self; 4] = [Self::TooLarge, Self::Malformed, Self::Protocol, Self::Other];

    /// The refusal an HTTP status means, or None for a status that is not a refusal.
    pub fn of(status: u16) -> Option<Self> {
        match status {
            413 => Some(Self::TooLarge),
            400 | 404 => Some(Self::Malformed),
            405 | 406 | 415 => Some(Self::Protocol),
            // 401/403 from the access policy are counted by REST before the transport runs.
            401 => None,
            402..=499 => Some(Self::Other),
            _ => None,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::Protocol => "protocol",
            Self::Other => "other",
        }
    }
}

static REQUESTS_REFUSED: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// Counts one `/mcp` request refused with `status`, if that status is a refusal.
pub fn record_response(status: u16) {
    if let Some(r) = RequestRefusal::of(status) {
        let i = RequestRefusal::ALL
            .iter()
            .position(|x| *x == r)
            .unwrap_or(3);
        REQUESTS_REFUSED[i].fetch_add(1, Ordering::Relaxed);
        tracing::info!(status, reason = r.label(), "MCP request refused.");
    }
}

static CALLS: LazyLock<Mutex<BTreeMap<(&'static str, Outcome), u64>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

/// Counts one call of `tool` (a served tool's name, or `unknown`).
pub fn record(tool: &str, outcome: Outcome) {
    let tool = tool_label(tool);
    let mut calls = crate::model::sync::lock(&CALLS);
    *calls.entry((tool, outcome)).or_default() += 1;
}

/// The tools served (the `tool` label's values besides `unknown`); a unit test keeps it equal
/// to the tool router's list.
pub const TOOLS: &[&str] = &[
    "alerts",
    "benchmark_status",
    "cluster_members",
    "cluster_status",
    "diagnosis",
    "list_clusters",
    "metrics_history",
    "report",
    "run_benchmark",
];

/// The tool label of `name`: itself when served, else `unknown` (the label set stays bounded).
pub fn tool_label(name: &str) -> &'static str {
    TOOLS
        .iter()
        .find(|t| **t == name)
        .copied()
        .unwrap_or("unknown")
}

/// The calls counted so far; every served tool's `ok` and `refused` series from the start.
pub fn render(out: &mut Exposition) {
    let mut calls = crate::model::sync::lock(&CALLS).clone();
    for tool in TOOLS {
        for outcome in [Outcome::Ok, Outcome::Refused] {
            calls.entry((tool, outcome)).or_default();
        }
    }
    for ((tool, outcome), n) in calls {
        out.counter(
            "etcdmon_mcp_tool_calls_total",
            "MCP tool calls over /mcp, by tool and outcome (refused: the REST access policy refused the caller).",
            &[("tool", tool), ("outcome", outcome.label())],
            n as f64,
        );
    }
    for (r, n) in RequestRefusal::ALL.iter().zip(&REQUESTS_REFUSED) {
        out.counter(
            "etcdmon_mcp_requests_refused_total",
            "Requests the /mcp transport refused before any tool ran, by reason.",
            &[("reason", r.label())],
            n.load(Ordering::Relaxed) as f64,
        );
    }
}

/// The count of `tool` ending with `outcome` (for tests).
pub fn count(tool: &str, outcome: Outcome) -> u64 {
    crate::model::sync::lock(&CALLS)
        .get(&(tool_label(tool), outcome))
        .copied()
        .unwrap_or(0)
}
