//! `sock:inet_sock_set_state`, `tcp:tcp_retransmit_skb`, `tcp:tcp_probe`: the network view.
//! Optional: without them the disk path is still traced; only peer/client figures are missing.

use super::{Probe, ProbeGroup};

/// The TCP probes.
pub const PROBES: &[Probe] = &[
    Probe {
        program: "inet_sock_set_state",
        category: "sock",
        name: "inet_sock_set_state",
        required: false,
        group: ProbeGroup::Net,
    },
    Probe {
        program: "tcp_retransmit_skb",
        category: "tcp",
        name: "tcp_retransmit_skb",
        required: false,
        group: ProbeGroup::Net,
    },
    Probe {
        program: "tcp_probe",
        category: "tcp",
        name: "tcp_probe",
        required: false,
        group: ProbeGroup::Net,
    },
];
