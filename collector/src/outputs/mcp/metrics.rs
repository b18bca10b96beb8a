//! `etcdmon_mcp_tool_calls_total{tool, outcome}`: every tool call by how it ended. The labels
//! are bounded: `tool` is one of the served tools' names or `unknown`, `outcome` one of
//! [`Outcome`]. Refusals by the access policy are also counted by REST
//! (`etcdmon_api_auth_refusals_total`), since every tool answers through it.

use std::{
    collections::BTreeMap,
    sync::{LazyLock, Mutex},
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
}

/// The count of `tool` ending with `outcome` (for tests).
pub fn count(tool: &str, outcome: Outcome) -> u64 {
    crate::model::sync::lock(&CALLS)
        .get(&(tool_label(tool), outcome))
        .copied()
        .unwrap_or(0)
}
