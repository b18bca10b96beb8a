//! `sock:inet_sock_set_state`, `tcp:tcp_retransmit_skb`, `tcp:tcp_probe`: etcd's TCP
//! connections, selected in the kernel by port (the members' client and peer ports).
//!
//! Tracepoint field offsets differ between kernel versions, so user space reads them from
//! tracefs `format` files and writes them into `NET_OFFSETS` (indices below) before attaching.

/// `PORTS` value bit: a member's client port.
pub const ROLE_CLIENT: u8 = 1;
/// `PORTS` value bit: a member's (or a known peer's) peer port.
pub const ROLE_PEER: u8 = 2;

/// Offset index: `inet_sock_set_state.oldstate`.
pub const OFF_STATE_OLDSTATE: u32 = 0;
/// Offset index: `inet_sock_set_state.newstate`.
pub const OFF_STATE_NEWSTATE: u32 = 1;
/// Offset index: `inet_sock_set_state.sport`.
pub const OFF_STATE_SPORT: u32 = 2;
/// Offset index: `inet_sock_set_state.dport`.
pub const OFF_STATE_DPORT: u32 = 3;
/// Offset index: `inet_sock_set_state.protocol`.
pub const OFF_STATE_PROTOCOL: u32 = 4;
/// Offset index: `inet_sock_set_state.saddr_v6`.
pub const OFF_STATE_SADDR_V6: u32 = 5;
/// Offset index: `inet_sock_set_state.daddr_v6`.
pub const OFF_STATE_DADDR_V6: u32 = 6;
/// Offset index: `tcp_retransmit_skb.sport`.
pub const OFF_RETRANS_SPORT: u32 = 7;
/// Offset index: `tcp_retransmit_skb.dport`.
pub const OFF_RETRANS_DPORT: u32 = 8;
/// Offset index: `tcp_retransmit_skb.saddr_v6`.
pub const OFF_RETRANS_SADDR_V6: u32 = 9;
/// Offset index: `tcp_retransmit_skb.daddr_v6`.
pub const OFF_RETRANS_DADDR_V6: u32 = 10;
/// Offset index: `tcp_probe.saddr` (a `sockaddr_in`/`sockaddr_in6`).
pub const OFF_PROBE_SADDR: u32 = 11;
/// Offset index: `tcp_probe.daddr`.
pub const OFF_PROBE_DADDR: u32 = 12;
/// Offset index: `tcp_probe.sport`.
pub const OFF_PROBE_SPORT: u32 = 13;
/// Offset index: `tcp_probe.dport`.
pub const OFF_PROBE_DPORT: u32 = 14;
/// Offset index: `tcp_probe.family`.
pub const OFF_PROBE_FAMILY: u32 = 15;
/// Offset index: `tcp_probe.data_len`.
pub const OFF_PROBE_DATA_LEN: u32 = 16;
/// Offset index: `tcp_probe.snd_una`.
pub const OFF_PROBE_SND_UNA: u32 = 17;
/// Offset index: `tcp_probe.srtt` (microseconds).
pub const OFF_PROBE_SRTT: u32 = 18;
/// Number of offset slots.
pub const OFF_LEN: u32 = 19;
/// `tcp_probe.sport` where kernels since 5.x put it; read directly when tracefs agrees.
pub const PROBE_SPORT_AT: usize = 64;
/// `tcp_probe.dport`, likewise.
pub const PROBE_DPORT_AT: usize = 66;
/// Offset value meaning "this kernel has no such field": the program skips the event.
pub const OFF_MISSING: u32 = u32::MAX;

/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u16 = 6;
/// `TCP_ESTABLISHED`.
pub const TCP_ESTABLISHED: i32 = 1;
/// `TCP_CLOSE`.
pub const TCP_CLOSE: i32 = 7;

/// One TCP connection as seen from its local end. IPv4 addresses are stored v4-mapped
/// (`::ffff:a.b.c.d`), as the tracepoints report them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    /// Local port (host order).
    pub sport: u16,
    /// Remote port (host order).
    pub dport: u16,
    /// Local address.
    pub saddr: [u8; 16],
    /// Remote address.
    pub daddr: [u8; 16],
}

/// Counters of one connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ConnStats {
    /// Retransmitted segments.
    pub retransmits: u64,
    /// Payload bytes received (sum of `tcp_probe.data_len`).
    pub rx_bytes: u64,
    /// Bytes the peer acknowledged (growth of `snd_una`).
    pub tx_acked_bytes: u64,
    /// Sum of smoothed RTT samples, microseconds.
    pub srtt_sum_us: u64,
    /// Number of RTT samples.
    pub srtt_samples: u64,
    /// Last smoothed RTT, microseconds.
    pub srtt_last_us: u32,
    /// Last `snd_una` seen (0 before the first sample).
    pub last_snd_una: u32,
    /// `PORTS` role bits that selected the connection.
    pub role: u8,
    /// 1 once the connection reached TCP_CLOSE.
    pub closed: u8,
    /// Zero.
    pub _pad: [u8; 6],
}

/// Client connections opened and closed on one listening port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Churn {
    /// Connections that reached ESTABLISHED.
    pub opened: u64,
    /// Connections that left ESTABLISHED.
    pub closed: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all three): `repr(C)`, `Copy`, no pointers, no implicit padding.
    unsafe impl aya::Pod for super::ConnKey {}
    unsafe impl aya::Pod for super::ConnStats {}
    unsafe impl aya::Pod for super::Churn {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(core::mem::size_of::<ConnKey>(), 36);
        assert_eq!(core::mem::size_of::<ConnStats>(), 5 * 8 + 2 * 4 + 8);
        assert_eq!(core::mem::size_of::<Churn>(), 16);
    }
}
