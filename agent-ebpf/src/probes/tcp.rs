//! TCP connections on the members' client and peer ports: state changes (client churn),
//! retransmits and smoothed RTT / bytes per connection. These tracepoints often run in softirq
//! context, where the current task is not etcd, so connections are selected by port.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use etcd_monitor_agent_common::net::{
    AF_INET, AF_INET6, Churn, ConnKey, ConnStats, IPPROTO_TCP, OFF_LEN, OFF_MISSING,
    OFF_PROBE_DADDR, OFF_PROBE_DATA_LEN, OFF_PROBE_DPORT, OFF_PROBE_FAMILY, OFF_PROBE_SADDR,
    OFF_PROBE_SND_UNA, OFF_PROBE_SPORT, OFF_PROBE_SRTT, OFF_RETRANS_DADDR_V6, OFF_RETRANS_DPORT,
    OFF_RETRANS_SADDR_V6, OFF_RETRANS_SPORT, OFF_STATE_DADDR_V6, OFF_STATE_DPORT,
    OFF_STATE_NEWSTATE, OFF_STATE_OLDSTATE, OFF_STATE_PROTOCOL, OFF_STATE_SADDR_V6,
    OFF_STATE_SPORT, PROBE_DPORT_AT, PROBE_SPORT_AT, ROLE_CLIENT, ROLE_PEER, TCP_CLOSE,
    TCP_ESTABLISHED,
};

use crate::{
    filter::{bit_is_set, field_at},
    maps::{CHURN, CONNS, NET_OFFSETS, PORT_BITS, PORTS},
};

/// Reads a field whose offset user space stored at `index`.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offsets: &[u32; OFF_LEN as usize], index: u32) -> Option<T> {
    let offset = *offsets.get(index as usize)?;
    if offset == OFF_MISSING {
        return None;
    }
    // SAFETY: the offset comes from this kernel's tracefs format for this tracepoint.
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}

/// Role bits of a connection: those of its local port, else of its remote port. Ports that are
/// not the members' are refused by the `PORT_BITS` bitmap before any hash lookup.
#[inline(always)]
fn role(sport: u16, dport: u16) -> u8 {
    if !bit_is_set(&PORT_BITS, u32::from(sport)) && !bit_is_set(&PORT_BITS, u32::from(dport)) {
        return 0;
    }
    // SAFETY: read-only lookups of u8 values.
    unsafe {
        if let Some(r) = PORTS.get(sport) {
            return *r;
        }
        PORTS.get(dport).copied().unwrap_or(0)
    }
}

/// The connection's counters, created zeroed when missing.
#[inline(always)]
fn conn(key: &ConnKey, role: u8) -> Option<*mut ConnStats> {
    if let Some(stats) = CONNS.get_ptr_mut(key) {
        return Some(stats);
    }
    let fresh = ConnStats {
        role,
        ..ConnStats::default()
    };
    CONNS.insert(key, fresh, 0).ok()?;
    CONNS.get_ptr_mut(key)
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    // One lookup for every offset this program reads.
    let Some(offsets) = NET_OFFSETS.get(0) else {
        return 0;
    };
    // One `let … else` per field: tuple patterns over several Options compile to code the
    // verifier rejects (a register read before it is written on one path).
    let Some(protocol) = field::<u16>(&ctx, offsets, OFF_STATE_PROTOCOL) else {
        return 0;
    };
    if protocol != IPPROTO_TCP {
        return 0;
    }
    let Some(sport) = field::<u16>(&ctx, offsets, OFF_STATE_SPORT) else {
        return 0;
    };
    let Some(dport) = field::<u16>(&ctx, offsets, OFF_STATE_DPORT) else {
        return 0;
    };
    let role = role(sport, dport);
    if role == 0 {
        return 0;
    }
    let old = field::<i32>(&ctx, offsets, OFF_STATE_OLDSTATE).unwrap_or(0);
    let new = field::<i32>(&ctx, offsets, OFF_STATE_NEWSTATE).unwrap_or(0);
    // Client churn: accepted connections on a member's client port.
    // SAFETY: read-only lookup.
    let local_is_client = unsafe { PORTS.get(sport) }.is_some_and(|r| *r & ROLE_CLIENT != 0);
    if local_is_client && (new == TCP_ESTABLISHED || old == TCP_ESTABLISHED) {
        if CHURN.get_ptr_mut(sport).is_none() {
            let _ = CHURN.insert(sport, Churn::default(), 0);
        }
        if let Some(churn) = CHURN.get_ptr_mut(sport) {
            // SAFETY: map value pointer valid for this program run.
            unsafe {
                if new == TCP_ESTABLISHED {
                    (*churn).opened += 1;
                } else {
                    (*churn).closed += 1;
                }
            }
        }
    }
    if role & ROLE_PEER != 0 && (new == TCP_ESTABLISHED || new == TCP_CLOSE) {
        let Some(saddr) = field::<[u8; 16]>(&ctx, offsets, OFF_STATE_SADDR_V6) else {
            return 0;
        };
        let Some(daddr) = field::<[u8; 16]>(&ctx, offsets, OFF_STATE_DADDR_V6) else {
            return 0;
        };
        let key = ConnKey {
            sport,
            dport,
            saddr,
            daddr,
        };
        if new == TCP_CLOSE {
            if let Some(stats) = CONNS.get_ptr_mut(key) {
                // SAFETY: map value pointer valid for this program run.
                unsafe { (*stats).closed = 1 };
            }
        } else {
            let _ = conn(&key, role);
        }
    }
    0
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    // One lookup for every offset this program reads.
    let Some(offsets) = NET_OFFSETS.get(0) else {
        return 0;
    };
    let Some(sport) = field::<u16>(&ctx, offsets, OFF_RETRANS_SPORT) else {
        return 0;
    };
    let Some(dport) = field::<u16>(&ctx, offsets, OFF_RETRANS_DPORT) else {
        return 0;
    };
    // Per-connection figures are kept for peer traffic only; client connections are counted
    // by state changes (churn) and /proc (open), which is far cheaper.
    let role = role(sport, dport);
    if role & ROLE_PEER == 0 {
        return 0;
    }
    let Some(saddr) = field::<[u8; 16]>(&ctx, offsets, OFF_RETRANS_SADDR_V6) else {
        return 0;
    };
    let Some(daddr) = field::<[u8; 16]>(&ctx, offsets, OFF_RETRANS_DADDR_V6) else {
        return 0;
    };
    if let Some(stats) = conn(
        &ConnKey {
            sport,
            dport,
            saddr,
            daddr,
        },
        role,
    ) {
        // SAFETY: map value pointer valid for this program run.
        unsafe { (*stats).retransmits += 1 };
    }
    0
}

/// The 16-byte (v4-mapped for IPv4) address inside a `sockaddr_in`/`sockaddr_in6` field.
#[inline(always)]
fn sockaddr_ip(
    ctx: &TracePointContext,
    offsets: &[u32; OFF_LEN as usize],
    index: u32,
    family: u16,
) -> Option<[u8; 16]> {
    let raw = field::<[u8; 28]>(ctx, offsets, index)?;
    let mut ip = [0u8; 16];
    if family == AF_INET {
        ip[10] = 0xff;
        ip[11] = 0xff;
        ip[12] = raw[4];
        ip[13] = raw[5];
        ip[14] = raw[6];
        ip[15] = raw[7];
    } else if family == AF_INET6 {
        let mut i = 0;
        while i < 16 {
            ip[i] = raw[8 + i];
            i += 1;
        }
    } else {
        return None;
    }
    Some(ip)
}

#[tracepoint]
pub fn tcp_probe(ctx: TracePointContext) -> u32 {
    // One lookup for every offset this program reads.
    let Some(offsets) = NET_OFFSETS.get(0) else {
        return 0;
    };
    // tcp_probe fires for every ACK on the node: direct loads, then the port bitmap.
    let Some(sport) = field_at::<u16, PROBE_SPORT_AT>(&ctx, offsets[OFF_PROBE_SPORT as usize])
    else {
        return 0;
    };
    let Some(dport) = field_at::<u16, PROBE_DPORT_AT>(&ctx, offsets[OFF_PROBE_DPORT as usize])
    else {
        return 0;
    };
    let role = role(sport, dport);
    if role & ROLE_PEER == 0 {
        return 0;
    }
    let Some(family) = field::<u16>(&ctx, offsets, OFF_PROBE_FAMILY) else {
        return 0;
    };
    let Some(saddr) = sockaddr_ip(&ctx, offsets, OFF_PROBE_SADDR, family) else {
        return 0;
    };
    let Some(daddr) = sockaddr_ip(&ctx, offsets, OFF_PROBE_DADDR, family) else {
        return 0;
    };
    let data_len = field::<u16>(&ctx, offsets, OFF_PROBE_DATA_LEN).unwrap_or(0);
    let snd_una = field::<u32>(&ctx, offsets, OFF_PROBE_SND_UNA).unwrap_or(0);
    let srtt = field::<u32>(&ctx, offsets, OFF_PROBE_SRTT).unwrap_or(0);
    if let Some(stats) = conn(
        &ConnKey {
            sport,
            dport,
            saddr,
            daddr,
        },
        role,
    ) {
        // SAFETY: map value pointer valid for this program run.
        unsafe {
            (*stats).rx_bytes += u64::from(data_len);
            if (*stats).last_snd_una != 0 {
                (*stats).tx_acked_bytes += u64::from(snd_una.wrapping_sub((*stats).last_snd_una));
            }
            (*stats).last_snd_una = snd_una;
            if srtt != 0 {
                (*stats).srtt_last_us = srtt;
                (*stats).srtt_sum_us += u64::from(srtt);
                (*stats).srtt_samples += 1;
            }
        }
    }
    0
}
