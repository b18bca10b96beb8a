//! Classifying an etcd process's fds: WAL, DB, SNAP, client or peer socket, or other.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use etcd_monitor_agent_common::syscall::FileClass;

use crate::{
    identity::{MemberIdentity, url_port},
    procfs::TcpSocket,
};

/// The ports that tell client from peer traffic for one member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortRoles {
    /// Ports of the member's own client URLs (and every other member's, from its URLs).
    pub client: Vec<u16>,
    /// Ports of peer URLs: the member's own and those in `--initial-cluster`.
    pub peer: Vec<u16>,
}

impl PortRoles {
    /// Port roles of a member, from its identity.
    pub fn of(identity: &MemberIdentity) -> Self {
        let ports =
            |urls: &[String]| -> Vec<u16> { urls.iter().filter_map(|u| url_port(u)).collect() };
        let mut client = ports(&identity.listen_client_urls);
        client.extend(ports(&identity.client_urls));
        let mut peer = ports(&identity.listen_peer_urls);
        peer.extend(ports(&identity.peer_urls));
        peer.extend(
            identity
                .initial_cluster
                .iter()
                .filter_map(|(_, u)| url_port(u)),
        );
        client.sort_unstable();
        client.dedup();
        peer.sort_unstable();
        peer.dedup();
        Self { client, peer }
    }

    /// Class of a TCP socket: a listener or accepted connection on a client port, or a
    /// connection to one, is client traffic; the same for peer ports.
    pub fn classify(&self, socket: &TcpSocket) -> FileClass {
        let is = |ports: &[u16]| {
            ports.contains(&socket.local_port) || ports.contains(&socket.remote_port)
        };
        if is(&self.peer) {
            FileClass::SocketPeer
        } else if is(&self.client) {
            FileClass::SocketClient
        } else {
            FileClass::Socket
        }
    }
}

/// Classifies one `/proc/PID/fd/N` link target.
pub fn classify(
    target: &str,
    identity: &MemberIdentity,
    roles: &PortRoles,
    sockets: &HashMap<u64, TcpSocket>,
) -> FileClass {
    if let Some(inode) = target
        .strip_prefix("socket:[")
        .and_then(|s| s.strip_suffix(']'))
    {
        return inode
            .parse::<u64>()
            .ok()
            .and_then(|inode| sockets.get(&inode))
            .map_or(FileClass::Socket, |s| roles.classify(s));
    }
    let path = Path::new(target.trim_end_matches(" (deleted)"));
    if !path.is_absolute() {
        return FileClass::Other; // pipe:[..], anon_inode:[..]
    }
    let member = identity.data_dir.join("member");
    let wal_dir = identity
        .wal_dir
        .clone()
        .unwrap_or_else(|| member.join("wal"));
    let snap_dir = member.join("snap");
    // The kernel names an open file by its real path (symlinks resolved, as mounted in the
    // member's namespace): compare with the canonical dirs too, and the argv forms for when
    // they could not be resolved.
    let canonical = &identity.canonical;
    let under = |argv: &Path, canonical: Option<&PathBuf>| {
        path.starts_with(argv) || canonical.is_some_and(|c| path.starts_with(c))
    };
    let is_db = path == snap_dir.join("db")
        || canonical
            .snap_dir
            .as_ref()
            .is_some_and(|c| path == c.join("db"));
    if under(&wal_dir, canonical.wal_dir.as_ref()) {
        FileClass::Wal
    } else if is_db {
        FileClass::Db
    } else if under(&snap_dir, canonical.snap_dir.as_ref()) {
        FileClass::Snap
    } else {
        FileClass::Other
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn identity() -> MemberIdentity {
        crate::identity::parse(
            &"etcd --name m0 --data-dir /var/lib/etcd --listen-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 --initial-cluster m0=http://127.0.0.1:2380,m1=http://127.0.0.1:12380"
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>(),
            &[],
            Path::new("/"),
            |_| None,
        )
    }

    #[test]
    fn files_under_the_data_dir() {
        let id = identity();
        let roles = PortRoles::of(&id);
        let none = HashMap::new();
        let c = |t: &str| classify(t, &id, &roles, &none);
        assert_eq!(
            c("/var/lib/etcd/member/wal/0000000000000000-0000000000000000.wal"),
            FileClass::Wal
        );
        assert_eq!(
            c("/var/lib/etcd/member/wal/0.tmp (deleted)"),
            FileClass::Wal
        );
        assert_eq!(c("/var/lib/etcd/member/wal"), FileClass::Wal);
        assert_eq!(c("/var/lib/etcd/member/snap/db"), FileClass::Db);
        assert_eq!(
            c("/var/lib/etcd/member/snap/0000000000000002-0000000000002711.snap"),
            FileClass::Snap
        );
        assert_eq!(c("/var/lib/etcd-other/member/wal/x.wal"), FileClass::Other);
        assert_eq!(c("/dev/null"), FileClass::Other);
        assert_eq!(c("pipe:[1234]"), FileClass::Other);
        assert_eq!(c("socket:[99]"), FileClass::Socket, "unknown inode");
    }

    #[test]
    fn separate_wal_dir() {
        let mut id = identity();
        id.wal_dir = Some(PathBuf::from("/fast/wal"));
        let roles = PortRoles::of(&id);
        let none = HashMap::new();
        assert_eq!(
            classify("/fast/wal/1.wal", &id, &roles, &none),
            FileClass::Wal
        );
        assert_eq!(
            classify("/var/lib/etcd/member/wal/1.wal", &id, &roles, &none),
            FileClass::Other
        );
    }

    #[test]
    fn canonical_dirs_classify_what_the_kernel_names() {
        // --data-dir=/var/lib/etcd is a symlink to /mnt/vol/etcd; --wal-dir=/fast/wal to /nvme/wal.
        let mut id = identity();
        id.wal_dir = Some(PathBuf::from("/fast/wal"));
        id.canonical = crate::identity::CanonicalDirs {
            data_dir: Some(PathBuf::from("/mnt/vol/etcd")),
            wal_dir: Some(PathBuf::from("/nvme/wal")),
            snap_dir: Some(PathBuf::from("/mnt/vol/etcd/member/snap")),
        };
        let roles = PortRoles::of(&id);
        let none = HashMap::new();
        let c = |t: &str| classify(t, &id, &roles, &none);
        assert_eq!(
            c("/nvme/wal/0000000000000000-0000000000000000.wal"),
            FileClass::Wal
        );
        assert_eq!(
            c("/fast/wal/1.wal"),
            FileClass::Wal,
            "argv form still counts"
        );
        assert_eq!(c("/mnt/vol/etcd/member/snap/db"), FileClass::Db);
        assert_eq!(c("/mnt/vol/etcd/member/snap/1-2.snap"), FileClass::Snap);
        assert_eq!(c("/mnt/vol/etcd/member/wal/1.wal"), FileClass::Other);
        assert_eq!(c("/nvme/wal-other/1.wal"), FileClass::Other);
    }

    #[test]
    fn sockets_by_port_role() {
        let id = identity();
        let roles = PortRoles::of(&id);
        let sockets = HashMap::from([
            (
                1,
                TcpSocket {
                    local_port: 2379,
                    remote_port: 0,
                    state: 1,
                },
            ),
            (
                2,
                TcpSocket {
                    local_port: 2379,
                    remote_port: 51000,
                    state: 1,
                },
            ),
            (
                3,
                TcpSocket {
                    local_port: 40000,
                    remote_port: 12380,
                    state: 1,
                },
            ),
            (
                4,
                TcpSocket {
                    local_port: 2380,
                    remote_port: 41000,
                    state: 1,
                },
            ),
            (
                5,
                TcpSocket {
                    local_port: 40001,
                    remote_port: 443,
                    state: 1,
                },
            ),
        ]);
        let c = |inode: u64| classify(&format!("socket:[{inode}]"), &id, &roles, &sockets);
        assert_eq!(c(1), FileClass::SocketClient);
        assert_eq!(c(2), FileClass::SocketClient);
        assert_eq!(c(3), FileClass::SocketPeer);
        assert_eq!(c(4), FileClass::SocketPeer);
        assert_eq!(c(5), FileClass::Socket);
    }
}
