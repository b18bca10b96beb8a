//! The degradation ladder: full eBPF → eBPF with some optional probes missing → client-only.

/// What the agent is running as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentMode {
    /// Every probe attached.
    Ebpf,
    /// Every required probe attached; some optional ones did not (listed in `/healthz`).
    EbpfPartial,
    /// No eBPF: etcd processes are still discovered and reported, kernel series are absent.
    ClientOnly,
}

impl AgentMode {
    /// Every mode, for the gauge.
    pub const ALL: [AgentMode; 3] = [
        AgentMode::Ebpf,
        AgentMode::EbpfPartial,
        AgentMode::ClientOnly,
    ];

    /// The `mode` label value.
    pub const fn label(self) -> &'static str {
        match self {
            AgentMode::Ebpf => "ebpf",
            AgentMode::EbpfPartial => "ebpf-partial",
            AgentMode::ClientOnly => "client-only",
        }
    }
}
