//! The network view: which ports the kernel watches, tracepoint field offsets from tracefs,
//! and per-peer / per-member figures from the kernel's per-connection counters.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv6Addr},
    path::Path,
};

use etcd_monitor_agent_common::net::{self as abi, ConnKey, ConnStats, ROLE_CLIENT, ROLE_PEER};

use crate::{
    identity::{MemberIdentity, url_port},
    procfs::{ProcFs, TcpSocket},
};

/// Field name → byte offset, from a tracefs `format` file.
pub fn parse_format(text: &str) -> HashMap<String, u32> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';');
        let (Some(decl), Some(offset)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(name) = decl.split_whitespace().last() else {
            continue;
        };
        let name = name.split('[').next().unwrap_or(name);
        if let Some(offset) = offset
            .trim()
            .strip_prefix("offset:")
            .and_then(|o| o.parse().ok())
        {
            fields.insert(name.to_string(), offset);
        }
    }
    fields
}

/// Reads the offsets the TCP programs need from `tracefs` (`/sys/kernel/tracing`); fields a
/// kernel lacks are `OFF_MISSING`, and the program skips those events.
pub fn read_offsets(tracefs: &Path) -> [u32; abi::OFF_LEN as usize] {
    let mut offsets = [abi::OFF_MISSING; abi::OFF_LEN as usize];
    let wanted: [(&str, &[(u32, &str)]); 3] = [
        (
            "events/sock/inet_sock_set_state/format",
            &[
                (abi::OFF_STATE_OLDSTATE, "oldstate"),
                (abi::OFF_STATE_NEWSTATE, "newstate"),
                (abi::OFF_STATE_SPORT, "sport"),
                (abi::OFF_STATE_DPORT, "dport"),
                (abi::OFF_STATE_PROTOCOL, "protocol"),
                (abi::OFF_STATE_SADDR_V6, "saddr_v6"),
                (abi::OFF_STATE_DADDR_V6, "daddr_v6"),
            ],
        ),
        (
            "events/tcp/tcp_retransmit_skb/format",
            &[
                (abi::OFF_RETRANS_SPORT, "sport"),
                (abi::OFF_RETRANS_DPORT, "dport"),
                (abi::OFF_RETRANS_SADDR_V6, "saddr_v6"),
                (abi::OFF_RETRANS_DADDR_V6, "daddr_v6"),
            ],
        ),
        (
            "events/tcp/tcp_probe/format",
            &[
                (abi::OFF_PROBE_SADDR, "saddr"),
                (abi::OFF_PROBE_DADDR, "daddr"),
                (abi::OFF_PROBE_SPORT, "sport"),
                (abi::OFF_PROBE_DPORT, "dport"),
                (abi::OFF_PROBE_FAMILY, "family"),
                (abi::OFF_PROBE_DATA_LEN, "data_len"),
                (abi::OFF_PROBE_SND_UNA, "snd_una"),
                (abi::OFF_PROBE_SRTT, "srtt"),
            ],
        ),
    ];
    fill_offsets(tracefs, &wanted, &mut offsets);
    offsets
}

/// Reads each tracepoint `format` file of `wanted` under `tracefs` and stores the offset of
/// each named field at its index in `offsets`; a missing file or field leaves its slot as it
/// was (`OFF_MISSING`), and the probe that needs it reads nothing.
pub fn fill_offsets(tracefs: &Path, wanted: &[(&str, &[(u32, &str)])], offsets: &mut [u32]) {
    for (file, fields) in wanted {
        let Ok(text) = std::fs::read_to_string(tracefs.join(file)) else {
            continue;
        };
        let parsed = parse_format(&text);
        for (index, name) in *fields {
            if let (Some(offset), Some(slot)) =
                (parsed.get(*name), offsets.get_mut(*index as usize))
            {
                *slot = *offset;
            }
        }
    }
}

/// The ports whose connections the kernel should watch, with their role bits.
pub fn port_roles<'a>(
    identities: impl IntoIterator<Item = &'a MemberIdentity>,
) -> HashMap<u16, u8> {
    let mut ports: HashMap<u16, u8> = HashMap::new();
    for id in identities {
        for url in id.listen_client_urls.iter().chain(&id.client_urls) {
            if let Some(p) = url_port(url) {
                *ports.entry(p).or_default() |= ROLE_CLIENT;
            }
        }
        let peers = id
            .listen_peer_urls
            .iter()
            .chain(&id.peer_urls)
            .chain(id.initial_cluster.iter().map(|(_, u)| u));
        for url in peers {
            if let Some(p) = url_port(url) {
                *ports.entry(p).or_default() |= ROLE_PEER;
            }
        }
    }
    ports
}

/// Figures of one (member, peer) pair.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PeerTotals {
    /// Retransmitted segments.
    pub retransmits: u64,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes the peer acknowledged.
    pub tx_bytes: u64,
    /// Highest latest smoothed RTT over the pair's open connections, microseconds.
    pub srtt_us: u32,
}

/// Client connection figures of one member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientTotals {
    /// Established connections on the member's client ports now.
    pub open: u64,
    /// Connections established since the agent started.
    pub opened: u64,
    /// Connections that ended since the agent started.
    pub closed: u64,
}

/// The network figures at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetSnapshot {
    /// (member, peer) → figures; `peer` is a member name when known, else `ip:port`.
    pub peers: BTreeMap<(String, String), PeerTotals>,
    /// member → client figures.
    pub clients: BTreeMap<String, ClientTotals>,
    /// (member, peer) → bytes the member's send/receive syscalls moved on peer sockets.
    pub syscall: BTreeMap<(String, String), SyscallBytes>,
    /// Network namespaces whose TCP tables were not read since the agent started (over
    /// [`MAX_NETNS`] per refresh, counted once per refresh).
    pub netns_refused: u64,
}

/// Syscall bytes of one (member, peer) pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyscallBytes {
    /// Bytes received by the member from the peer (read/readv/recvfrom/recvmsg).
    pub received: u64,
    /// Bytes sent by the member to the peer (write/writev).
    pub sent: u64,
}

/// At most this many network namespaces' TCP tables are read per refresh; members in
/// namespaces beyond it keep only their listening-port attribution, and each refusal is
/// counted in [`Resolver::refused_namespaces`].
pub const MAX_NETNS: usize = 64;

/// Finds which traced member owns each end of a connection.
///
/// Members on one node may live in different network namespaces (pods without host
/// networking): each namespace's TCP table is read once, through one pid in it, and every
/// socket is attributed through the fds of the pids in that namespace. Socket inodes are
/// unique across namespaces, so the tables are merged by inode.
pub struct Resolver<'a> {
    members: Vec<(u32, &'a MemberIdentity)>,
    /// (local port, remote port) → socket inodes, from every read namespace's TCP table.
    by_ports: HashMap<(u16, u16), Vec<u64>>,
    /// socket inode → pid of a traced process holding it.
    owner: HashMap<u64, u32>,
    tcp: HashMap<u64, TcpSocket>,
    refused: u64,
}

/// The network namespace of `pid`: the inode in `/proc/PID/ns/net` (`net:[N]`); a pid whose
/// link cannot be read is its own group, so it is never merged with another by mistake.
pub fn netns_of(proc: &ProcFs, pid: u32) -> Option<u64> {
    std::fs::read_link(proc.path(pid, "ns/net"))
        .ok()?
        .to_str()?
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Groups pids by network namespace, in first-seen order; pids whose namespace is unknown
/// form one group each. At most `max` groups; the number of groups refused is returned.
pub fn group_by_netns(proc: &ProcFs, pids: &[u32], max: usize) -> (Vec<Vec<u32>>, u64) {
    let mut groups: Vec<(Option<u64>, Vec<u32>)> = Vec::new();
    let mut refused = 0;
    for pid in pids {
        let ns = netns_of(proc, *pid);
        if let Some(g) = groups.iter_mut().find(|(n, _)| ns.is_some() && *n == ns) {
            g.1.push(*pid);
        } else if groups.len() < max {
            groups.push((ns, vec![*pid]));
        } else {
            refused += 1;
        }
    }
    (groups.into_iter().map(|(_, g)| g).collect(), refused)
}

impl<'a> Resolver<'a> {
    /// Reads the TCP table of each traced member's network namespace and the traced
    /// processes' socket fds.
    pub fn new(proc: &ProcFs, members: Vec<(u32, &'a MemberIdentity)>) -> Self {
        let pids: Vec<u32> = members.iter().map(|(p, _)| *p).collect();
        let (groups, refused) = group_by_netns(proc, &pids, MAX_NETNS);
        let mut sockets = Vec::new();
        for group in &groups {
            let Some(first) = group.first() else { continue };
            let table = proc.tcp_sockets(*first);
            let mut owner = HashMap::new();
            for pid in group {
                for (_, target) in proc.fds(*pid) {
                    if let Some(inode) = target
                        .strip_prefix("socket:[")
                        .and_then(|s| s.strip_suffix(']'))
                        .and_then(|s| s.parse::<u64>().ok())
                    {
                        owner.insert(inode, *pid);
                    }
                }
            }
            for (inode, s) in table {
                // Sockets no traced pid holds keep pid 0: no member has it.
                sockets.push((inode, s, owner.get(&inode).copied().unwrap_or(0)));
            }
        }
        let mut resolver = Self::from_tables(members, &sockets);
        resolver.refused = refused;
        resolver
    }

    /// Network namespaces whose tables were not read this refresh (over [`MAX_NETNS`]).
    pub fn refused_namespaces(&self) -> u64 {
        self.refused
    }

    /// A resolver from explicit tables (tests).
    pub fn from_tables(
        members: Vec<(u32, &'a MemberIdentity)>,
        sockets: &[(u64, TcpSocket, u32)],
    ) -> Self {
        let mut by_ports: HashMap<(u16, u16), Vec<u64>> = HashMap::new();
        for (i, s, _) in sockets {
            by_ports
                .entry((s.local_port, s.remote_port))
                .or_default()
                .push(*i);
        }
        Self {
            members,
            by_ports,
            owner: sockets
                .iter()
                .filter(|(_, _, pid)| *pid != 0)
                .map(|(i, _, pid)| (*i, *pid))
                .collect(),
            tcp: sockets.iter().map(|(i, s, _)| (*i, *s)).collect(),
            refused: 0,
        }
    }

    fn member_of_pid(&self, pid: u32) -> Option<&'a MemberIdentity> {
        self.members
            .iter()
            .find(|(p, _)| *p == pid)
            .map(|(_, m)| *m)
    }

    fn member_listening_on(&self, port: u16) -> Option<&'a MemberIdentity> {
        self.members.iter().map(|(_, m)| *m).find(|m| {
            m.listen_client_urls
                .iter()
                .chain(&m.listen_peer_urls)
                .any(|u| url_port(u) == Some(port))
        })
    }

    fn owner_of(&self, local: u16, remote: u16) -> Option<&'a MemberIdentity> {
        // The same port pair may exist in two namespaces: take the one a traced pid holds.
        self.by_ports
            .get(&(local, remote))?
            .iter()
            .find_map(|inode| self.member_of_pid(*self.owner.get(inode)?))
    }

    /// The traced member on the local end of `key`.
    pub fn local(&self, key: &ConnKey) -> Option<&'a MemberIdentity> {
        self.member_listening_on(key.sport)
            .or_else(|| self.owner_of(key.sport, key.dport))
    }

    /// The name of the remote end: a traced member on this host, a member named in
    /// `--initial-cluster` by address and port, or `ip:port`.
    pub fn remote(&self, key: &ConnKey) -> String {
        self.resolve_remote(key).0
    }

    /// The remote end's name and whether it is certain (a member, not just an address).
    ///
    /// Without a member to name, an outbound connection is named by the remote listener
    /// (`ip:port`), an inbound one by the remote IP alone: its port is ephemeral, and a label
    /// per ephemeral port would grow without bound.
    pub fn resolve_remote(&self, key: &ConnKey) -> (String, bool) {
        if let Some(m) = self
            .member_listening_on(key.dport)
            .or_else(|| self.owner_of(key.dport, key.sport))
        {
            return (m.name.clone(), true);
        }
        let ip = addr(&key.daddr);
        let inbound = self.member_listening_on(key.sport).is_some();
        let mut by_ip = Vec::new();
        for (_, m) in &self.members {
            for (name, url) in &m.initial_cluster {
                let host = url
                    .split_once("://")
                    .map_or(url.as_str(), |(_, r)| r)
                    .rsplit_once(':')
                    .map(|(h, _)| h.trim_matches(['[', ']']));
                if host.and_then(|h| h.parse::<IpAddr>().ok()) != Some(ip) {
                    continue;
                }
                if url_port(url) == Some(key.dport) {
                    return (name.clone(), true);
                }
                if !by_ip.contains(name) {
                    by_ip.push(name.clone());
                }
            }
        }
        if inbound {
            // Only one member lives at that address: it dialed us.
            let others: Vec<&String> = by_ip
                .iter()
                .filter(|n| Some(n.as_str()) != self.local(key).map(|m| m.name.as_str()))
                .collect();
            if let [only] = others.as_slice() {
                return ((*only).clone(), true);
            }
            return (ip.to_string(), false);
        }
        (format!("{ip}:{}", key.dport), false)
    }

    /// Established connections on each member's client ports that the member's own process
    /// holds (tables of several namespaces are merged, so the port alone is not enough).
    pub fn open_client_connections(&self) -> BTreeMap<String, u64> {
        let mut open = BTreeMap::new();
        for (pid, m) in &self.members {
            let ports: Vec<u16> = m
                .listen_client_urls
                .iter()
                .filter_map(|u| url_port(u))
                .collect();
            let count = self
                .tcp
                .iter()
                .filter(|(inode, s)| {
                    s.state == 1
                        && ports.contains(&s.local_port)
                        && self.owner.get(inode) == Some(pid)
                })
                .count();
            open.insert(m.name.clone(), count as u64);
        }
        open
    }
}

/// IPv4-mapped addresses shown as IPv4.
pub fn addr(bytes: &[u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(*bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Per-pair totals of connections that are gone, so counters never go down.
#[derive(Debug, Default)]
pub struct NetState {
    netns_refused: u64,
    retired: BTreeMap<(String, String), PeerTotals>,
    /// Remote names resolved while both ends were alive, kept for when they no longer are.
    names: HashMap<ConnKey, String>,
}

impl NetState {
    /// Folds the kernel's connections into per-pair figures. Returns the snapshot and the
    /// closed connections the caller should delete from the kernel map (already counted here).
    pub fn harvest(
        &mut self,
        conns: &[(ConnKey, ConnStats)],
        churn: &[(u16, abi::Churn)],
        resolver: &Resolver<'_>,
    ) -> (NetSnapshot, Vec<ConnKey>) {
        let mut snapshot = NetSnapshot {
            peers: self.retired.clone(),
            clients: BTreeMap::new(),
            syscall: BTreeMap::new(),
            netns_refused: 0,
        };
        self.netns_refused += resolver.refused_namespaces();
        snapshot.netns_refused = self.netns_refused;
        let mut closed = Vec::new();
        for (key, stats) in conns {
            if stats.role & ROLE_PEER == 0 {
                if stats.closed != 0 {
                    closed.push(*key);
                }
                continue;
            }
            let Some(local) = resolver.local(key) else {
                if stats.closed != 0 {
                    closed.push(*key);
                }
                continue;
            };
            let remote = match resolver.resolve_remote(key) {
                (name, true) => {
                    self.names.insert(*key, name.clone());
                    name
                }
                (fallback, false) => self.names.get(key).cloned().unwrap_or(fallback),
            };
            let pair = (local.name.clone(), remote);
            let totals = snapshot.peers.entry(pair.clone()).or_default();
            totals.retransmits += stats.retransmits;
            totals.rx_bytes += stats.rx_bytes;
            totals.tx_bytes += stats.tx_acked_bytes;
            if stats.closed != 0 {
                self.names.remove(key);
                let kept = self.retired.entry(pair).or_default();
                kept.retransmits += stats.retransmits;
                kept.rx_bytes += stats.rx_bytes;
                kept.tx_bytes += stats.tx_acked_bytes;
                closed.push(*key);
            } else {
                totals.srtt_us = totals.srtt_us.max(stats.srtt_last_us);
            }
        }
        // Forget names of connections the kernel no longer has (closed or evicted).
        self.names.retain(|k, _| conns.iter().any(|(c, _)| c == k));
        for (member, open) in resolver.open_client_connections() {
            snapshot.clients.entry(member).or_default().open = open;
        }
        for (port, c) in churn {
            if let Some(m) = resolver.member_listening_on(*port) {
                let t = snapshot.clients.entry(m.name.clone()).or_default();
                t.opened += c.opened;
                t.closed += c.closed;
            }
        }
        (snapshot, closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, client: u16, peer: u16, cluster: &str) -> MemberIdentity {
        crate::identity::parse(
            &[
                "etcd".to_string(),
                format!("--name={name}"),
                format!("--listen-client-urls=http://127.0.0.1:{client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-cluster={cluster}"),
            ],
            &[],
            Path::new("/"),
            |_| None,
        )
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[10] = 0xff;
        b[11] = 0xff;
        b[12..].copy_from_slice(&a);
        b
    }

    #[test]
    fn parses_tracefs_formats() {
        let text = "name: tcp_probe\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:__u8 saddr[28];\toffset:8;\tsize:28;\tsigned:0;\n\tfield:__u16 sport;\toffset:64;\tsize:2;\tsigned:0;\n\tfield:__u32 srtt;\toffset:100;\tsize:4;\tsigned:0;\n";
        let f = parse_format(text);
        assert_eq!(f["saddr"], 8);
        assert_eq!(f["sport"], 64);
        assert_eq!(f["srtt"], 100);
        assert_eq!(f["common_type"], 0);
    }

    #[test]
    fn reads_this_kernels_offsets() {
        let offsets = read_offsets(Path::new("/sys/kernel/tracing"));
        if !Path::new("/sys/kernel/tracing/events/tcp/tcp_probe/format").exists() {
            return; // tracefs not mounted for this unprivileged unit test
        }
        assert!(
            offsets.iter().all(|o| *o != abi::OFF_MISSING),
            "{offsets:?}"
        );
    }

    #[test]
    fn roles_cover_client_and_peer_ports() {
        let m = member(
            "m0",
            2379,
            2380,
            "m0=http://127.0.0.1:2380,m1=http://10.0.0.2:12380",
        );
        let roles = port_roles([&m]);
        assert_eq!(roles[&2379], ROLE_CLIENT);
        assert_eq!(roles[&2380], ROLE_PEER);
        assert_eq!(roles[&12380], ROLE_PEER);
    }

    #[test]
    fn attributes_peer_connections_to_member_pairs() {
        let cluster = "m0=http://127.0.0.1:2380,m1=http://127.0.0.1:12380,far=http://10.9.9.9:2380";
        let m0 = member("m0", 2379, 2380, cluster);
        let m1 = member("m1", 12379, 12380, cluster);
        let est = |l, r| TcpSocket {
            local_port: l,
            remote_port: r,
            state: 1,
        };
        // m0 dials m1 from port 40000; m1 accepted it on 12380. A client on m0's 2379.
        let resolver = Resolver::from_tables(
            vec![(10, &m0), (11, &m1)],
            &[
                (1, est(40000, 12380), 10),
                (2, est(12380, 40000), 11),
                (3, est(2379, 50000), 10),
            ],
        );
        let lo = v4([127, 0, 0, 1]);
        let stats = |rtt, retrans, closed| ConnStats {
            role: ROLE_PEER,
            srtt_last_us: rtt,
            retransmits: retrans,
            rx_bytes: 100,
            tx_acked_bytes: 50,
            closed,
            ..Default::default()
        };
        let conns = vec![
            (
                ConnKey {
                    sport: 40000,
                    dport: 12380,
                    saddr: lo,
                    daddr: lo,
                },
                stats(300, 2, 0),
            ),
            (
                ConnKey {
                    sport: 12380,
                    dport: 40000,
                    saddr: lo,
                    daddr: lo,
                },
                stats(250, 1, 0),
            ),
            (
                ConnKey {
                    sport: 40001,
                    dport: 2380,
                    saddr: lo,
                    daddr: v4([10, 9, 9, 9]),
                },
                stats(900, 0, 1),
            ),
        ];
        let churn = vec![(
            2379u16,
            abi::Churn {
                opened: 5,
                closed: 4,
            },
        )];
        let mut state = NetState::default();
        let (snap, closed) = state.harvest(&conns, &churn, &resolver);
        assert_eq!(snap.peers[&("m0".into(), "m1".into())].retransmits, 2);
        assert_eq!(snap.peers[&("m0".into(), "m1".into())].srtt_us, 300);
        assert_eq!(snap.peers[&("m1".into(), "m0".into())].retransmits, 1);
        assert_eq!(
            snap.clients["m0"],
            ClientTotals {
                open: 1,
                opened: 5,
                closed: 4
            }
        );
        assert_eq!(snap.clients["m1"].open, 0);
        // The closed connection from 40001 has no traced owner: dropped, not attributed.
        assert_eq!(closed.len(), 1);
        assert_eq!(snap.peers.len(), 2);

        // A closed m0→m1 connection keeps counting after the kernel forgets it.
        let gone = vec![(
            ConnKey {
                sport: 40000,
                dport: 12380,
                saddr: lo,
                daddr: lo,
            },
            stats(300, 7, 1),
        )];
        let (_, closed) = state.harvest(&gone, &[], &resolver);
        assert_eq!(closed.len(), 1);
        let (snap, _) = state.harvest(&[], &[], &resolver);
        assert_eq!(snap.peers[&("m0".into(), "m1".into())].retransmits, 7);
    }

    #[test]
    fn remote_members_by_initial_cluster_address() {
        let m0 = member(
            "m0",
            2379,
            2380,
            "m0=http://10.0.0.1:2380,m2=http://10.0.0.3:2380",
        );
        let resolver = Resolver::from_tables(vec![(10, &m0)], &[]);
        let key = ConnKey {
            sport: 40000,
            dport: 2380,
            saddr: v4([10, 0, 0, 1]),
            daddr: v4([10, 0, 0, 3]),
        };
        assert_eq!(
            resolver.remote(&key),
            "m0",
            "port 2380 is m0's own listener on this host"
        );
        let m0b = member(
            "m0",
            2379,
            22380,
            "m0=http://10.0.0.1:22380,m2=http://10.0.0.3:2380",
        );
        let resolver = Resolver::from_tables(vec![(10, &m0b)], &[]);
        assert_eq!(resolver.remote(&key), "m2");
        let other = ConnKey {
            daddr: v4([10, 0, 0, 9]),
            ..key
        };
        assert_eq!(resolver.remote(&other), "10.0.0.9:2380");
    }

    /// A fake `/proc`: each pid gets `ns/net` → `net:[ns]`, socket fds for `inodes`, and
    /// (for the first pid of each namespace) the namespace's `net/tcp`.
    /// (pid, netns inode, socket fd inodes, TCP table rows (inode, local port, remote port)).
    type FakePid<'a> = (u32, u64, &'a [u64], &'a [(u64, u16, u16)]);

    fn fake_proc(pids: &[FakePid<'_>]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (pid, ns, inodes, table) in pids {
            let base = dir.path().join(pid.to_string());
            std::fs::create_dir_all(base.join("ns")).expect("mkdir");
            std::fs::create_dir_all(base.join("fd")).expect("mkdir");
            std::fs::create_dir_all(base.join("net")).expect("mkdir");
            std::os::unix::fs::symlink(format!("net:[{ns}]"), base.join("ns/net")).expect("ln");
            for (fd, inode) in inodes.iter().enumerate() {
                std::os::unix::fs::symlink(
                    format!("socket:[{inode}]"),
                    base.join(format!("fd/{}", fd + 3)),
                )
                .expect("ln");
            }
            let mut text = String::from("  sl  local_address rem_address   st\n");
            for (inode, l, r) in *table {
                text.push_str(&format!(
                    "   0: 0100007F:{l:04X} 0100007F:{r:04X} 01 0:0 00:0 0 0 0 {inode} 1\n"
                ));
            }
            std::fs::write(base.join("net/tcp"), text).expect("write");
        }
        dir
    }

    #[test]
    fn groups_pids_by_network_namespace_and_bounds_them() {
        let dir = fake_proc(&[
            (10, 1, &[], &[]),
            (11, 1, &[], &[]),
            (20, 2, &[], &[]),
            (30, 3, &[], &[]),
        ]);
        let proc = ProcFs::new(dir.path());
        assert_eq!(netns_of(&proc, 20), Some(2));
        assert_eq!(netns_of(&proc, 99), None);
        let (groups, refused) = group_by_netns(&proc, &[10, 20, 11, 99, 30], 8);
        assert_eq!(groups, vec![vec![10, 11], vec![20], vec![99], vec![30]]);
        assert_eq!(refused, 0);
        let (groups, refused) = group_by_netns(&proc, &[10, 20, 11, 30], 2);
        assert_eq!(groups, vec![vec![10, 11], vec![20]]);
        assert_eq!(refused, 1, "pid 30's namespace is over the bound");
    }

    #[test]
    fn attributes_sockets_within_each_namespace() {
        // m0 (pid 10) and m1 (pid 11) share the host namespace; m2 (pid 20) has its own
        // namespace behind a veth, reached at 10.213.0.2. The host end is 10.213.0.1, which
        // both host members dial from.
        let cluster =
            "m0=http://10.213.0.1:2380,m1=http://10.213.0.1:12380,m2=http://10.213.0.2:22380";
        let m0 = member("m0", 2379, 2380, cluster);
        let m1 = member("m1", 12379, 12380, cluster);
        let m2 = member("m2", 22379, 22380, cluster);
        // Host table: m0 dialed m2 (40000→22380), m2 dialed m0 (accepted on 2380 from 45000),
        // m1 dialed m2 (41000→22380). m2's table: the far ends, plus two clients on 22379.
        let host: &[(u64, u16, u16)] =
            &[(100, 40000, 22380), (101, 2380, 45000), (102, 41000, 22380)];
        let ns2: &[(u64, u16, u16)] = &[
            (200, 22380, 40000),
            (201, 45000, 2380),
            (202, 22380, 41000),
            (203, 22379, 50000),
            (204, 22379, 50001),
        ];
        let dir = fake_proc(&[
            (10, 1, &[100, 101], host),
            (11, 1, &[102], &[]),
            (20, 2, &[200, 201, 202, 203, 204], ns2),
        ]);
        let proc = ProcFs::new(dir.path());
        let resolver = Resolver::new(&proc, vec![(10, &m0), (11, &m1), (20, &m2)]);
        assert_eq!(resolver.refused_namespaces(), 0);
        let key = |sport, dport, saddr, daddr| ConnKey {
            sport,
            dport,
            saddr: v4(saddr),
            daddr: v4(daddr),
        };
        let (host_ip, ns_ip) = ([10, 213, 0, 1], [10, 213, 0, 2]);
        // m2 dialed m0 from its own ephemeral port: only m2's namespace knows that socket.
        let dialed = key(45000, 2380, ns_ip, host_ip);
        assert_eq!(resolver.local(&dialed).map(|m| m.name.as_str()), Some("m2"));
        assert_eq!(resolver.resolve_remote(&dialed), ("m0".to_string(), true));
        // m0 and m1 both dial m2 from 10.213.0.1: named by the dialing socket's owner, not the address.
        let from_m0 = key(22380, 40000, ns_ip, host_ip);
        let from_m1 = key(22380, 41000, ns_ip, host_ip);
        assert_eq!(
            resolver.local(&from_m0).map(|m| m.name.as_str()),
            Some("m2")
        );
        assert_eq!(resolver.resolve_remote(&from_m0), ("m0".to_string(), true));
        assert_eq!(resolver.resolve_remote(&from_m1), ("m1".to_string(), true));
        // Host members' dialed connections stay theirs.
        let m1_out = key(41000, 22380, host_ip, ns_ip);
        assert_eq!(resolver.local(&m1_out).map(|m| m.name.as_str()), Some("m1"));
        // Client connections counted in m2's own namespace.
        let open = resolver.open_client_connections();
        assert_eq!(open["m2"], 2);
        assert_eq!(open["m0"], 0);

        // The namespaced member as the lowest pid: the host members keep their dialed sockets.
        let resolver = Resolver::new(&proc, vec![(20, &m2), (10, &m0), (11, &m1)]);
        assert_eq!(resolver.local(&m1_out).map(|m| m.name.as_str()), Some("m1"));
        let m0_out = key(40000, 22380, host_ip, ns_ip);
        assert_eq!(resolver.local(&m0_out).map(|m| m.name.as_str()), Some("m0"));

        // Over the bound: m2's namespace is refused and counted; its dialed socket is unknown.
        let (_, refused) = group_by_netns(&proc, &[10, 11, 20], 1);
        assert_eq!(refused, 1);
    }
}
