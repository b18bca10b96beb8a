//! Bytes etcd sent and received on each peer socket, by syscall, attributed to (member, peer)
//! pairs.
//!
//! The kernel keeps per-fd counters (`SOCK_IO`, peer sockets only). Each harvest resolves an fd
//! to its socket inode (`/proc/PID/fd`), the inode to its connection (`/proc/PID/net/tcp{,6}`)
//! and the connection to a pair with the same [`Resolver`] as the TCP view. Counters are
//! accumulated by delta, so an fd whose connection closed between two harvests still gives its
//! last bytes to the pair it had, and a reused fd number starts a new attribution.

use std::collections::{BTreeMap, HashMap};

use etcd_monitor_agent_common::{
    net::ConnKey,
    syscall::{FdKey, SockIo},
};

use crate::{
    net::{Resolver, SyscallBytes},
    procfs::ProcFs,
};

#[derive(Debug, Clone)]
struct FdSeen {
    inode: u64,
    pair: (String, String),
    rx: u64,
    tx: u64,
}

/// Per-pair totals, carried across harvests.
#[derive(Debug, Default)]
pub struct SockIoState {
    seen: HashMap<FdKey, FdSeen>,
    totals: BTreeMap<(String, String), SyscallBytes>,
}

/// Parses `/proc/PID/net/tcp{,6}` into inode → connection (v4-mapped addresses, host-order
/// ports), as the TCP tracepoints key connections.
pub fn parse_conns(text: &str) -> Vec<(u64, ConnKey)> {
    fn endpoint(field: &str) -> Option<([u8; 16], u16)> {
        let (addr, port) = field.split_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        let mut ip = [0u8; 16];
        match addr.len() {
            8 => {
                let v = u32::from_str_radix(addr, 16).ok()?;
                ip[10] = 0xff;
                ip[11] = 0xff;
                ip[12..].copy_from_slice(&v.to_ne_bytes());
            }
            32 => {
                for i in 0..4 {
                    let v = u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok()?;
                    ip[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
                }
            }
            _ => return None,
        }
        Some((ip, port))
    }
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (saddr, sport) = endpoint(fields.get(1)?)?;
            let (daddr, dport) = endpoint(fields.get(2)?)?;
            let inode: u64 = fields.get(9)?.parse().ok()?;
            Some((
                inode,
                ConnKey {
                    sport,
                    dport,
                    saddr,
                    daddr,
                },
            ))
        })
        .collect()
}

fn socket_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

impl SockIoState {
    /// Folds the kernel's per-fd counters into per-pair totals. Returns the totals and the fds
    /// that are gone (closed), which the caller deletes from the kernel map.
    pub fn harvest(
        &mut self,
        io: &[(FdKey, SockIo)],
        proc: &ProcFs,
        resolver: &Resolver<'_>,
    ) -> (BTreeMap<(String, String), SyscallBytes>, Vec<FdKey>) {
        let mut conns: HashMap<u32, HashMap<u64, ConnKey>> = HashMap::new();
        let mut gone = Vec::new();
        for (key, counters) in io {
            let inode = proc
                .fd_target(key.tgid, key.fd)
                .and_then(|t| socket_inode(&t));
            let previous = self.seen.get(key).cloned();
            let (pair, base_rx, base_tx) = match (inode, previous) {
                (Some(inode), Some(p)) if p.inode == inode => (Some(p.pair), p.rx, p.tx),
                (Some(inode), previous) => {
                    // A new connection on this fd (or the first sight of it): the bytes since
                    // the last harvest belong to it, except what the previous one had.
                    let table = conns.entry(key.tgid).or_insert_with(|| {
                        let mut table = HashMap::new();
                        for file in ["net/tcp", "net/tcp6"] {
                            if let Ok(text) = std::fs::read_to_string(proc.path(key.tgid, file)) {
                                table.extend(parse_conns(&text));
                            }
                        }
                        table
                    });
                    let pair = table.get(&inode).and_then(|conn| {
                        let local = resolver.local(conn)?;
                        Some((local.name.clone(), resolver.resolve_remote(conn).0))
                    });
                    let (rx, tx) = previous.map_or((0, 0), |p| (p.rx, p.tx));
                    if let Some(pair) = &pair {
                        self.seen.insert(
                            *key,
                            FdSeen {
                                inode,
                                pair: pair.clone(),
                                rx,
                                tx,
                            },
                        );
                    }
                    (pair, rx, tx)
                }
                (None, Some(p)) => {
                    // Closed since the last harvest: its last bytes go to the pair it had.
                    gone.push(*key);
                    (Some(p.pair), p.rx, p.tx)
                }
                (None, None) => {
                    gone.push(*key);
                    (None, 0, 0)
                }
            };
            let Some(pair) = pair else {
                continue;
            };
            let totals = self.totals.entry(pair).or_default();
            totals.received += counters.rx_bytes.saturating_sub(base_rx);
            totals.sent += counters.tx_bytes.saturating_sub(base_tx);
            if let Some(seen) = self.seen.get_mut(key) {
                seen.rx = counters.rx_bytes;
                seen.tx = counters.tx_bytes;
            }
        }
        for key in &gone {
            self.seen.remove(key);
        }
        self.seen.retain(|k, _| io.iter().any(|(i, _)| i == k));
        (self.totals.clone(), gone)
    }
}

/// Sums per-CPU values of one `SOCK_IO` entry.
pub fn sum_per_cpu<'a>(values: impl IntoIterator<Item = &'a SockIo>) -> SockIo {
    let mut total = SockIo::default();
    for v in values {
        total.rx_bytes += v.rx_bytes;
        total.tx_bytes += v.tx_bytes;
        total.rx_calls += v.rx_calls;
        total.tx_calls += v.tx_calls;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_v6_connections() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:0A28 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1\n";
        let conns = parse_conns(v4);
        assert_eq!(conns.len(), 1);
        let (inode, key) = conns[0];
        assert_eq!(inode, 4242);
        assert_eq!(key.sport, 0x0a28);
        assert_eq!(key.dport, 0xd431);
        assert_eq!(&key.saddr[10..], &[0xff, 0xff, 127, 0, 0, 1]);
        let v6 = "  sl  local_address                         remote_address                        st\n   0: 00000000000000000000000001000000:0A28 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 77 1\n";
        let conns = parse_conns(v6);
        assert_eq!(conns.len(), 1);
        assert_eq!(conns[0].1.saddr[15], 1, "::1");
        assert_eq!(&conns[0].1.daddr[10..], &[0xff, 0xff, 127, 0, 0, 1]);
    }

    #[test]
    fn per_cpu_values_add_up() {
        let a = SockIo {
            rx_bytes: 10,
            tx_bytes: 1,
            rx_calls: 2,
            tx_calls: 1,
        };
        let total = sum_per_cpu([a, a].iter());
        assert_eq!(total.rx_bytes, 20);
        assert_eq!(total.tx_calls, 2);
    }
}
