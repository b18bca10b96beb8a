//! The kernel maps behind the [`Kernel`] trait.

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap},
};
use etcd_monitor_agent_common::diag::{self as diag_abi, Issuer, IssuerKey};
use std::collections::{BTreeMap, BTreeSet, HashMap as StdHashMap};

use etcd_monitor_agent_common::{
    maps::{self as names, CommFilter, bit_position},
    net::{Churn, ConnKey, ConnStats},
    syscall::{FdKey, FileClass, OpKey, OpStats, SockIo},
};

use super::{LoadError, LoadOptions};
use crate::{
    kernel::{Kernel, KernelDrops, KernelError},
    stats::OpTotals,
};

/// Owns the maps the agent reads and writes.
pub struct EbpfKernel {
    tracked: Array<MapData, u64>,
    fd_class: HashMap<MapData, FdKey, u8>,
    op_stats: PerCpuHashMap<MapData, OpKey, OpStats>,
    config: Array<MapData, u64>,
    drops: PerCpuArray<MapData, u64>,
    exec_comm: Array<MapData, CommFilter>,
    ports: HashMap<MapData, u16, u8>,
    conns: HashMap<MapData, ConnKey, ConnStats>,
    churn: HashMap<MapData, u16, Churn>,
    net_offsets: Array<MapData, [u32; etcd_monitor_agent_common::net::OFF_LEN as usize]>,
    sock_io: PerCpuHashMap<MapData, FdKey, SockIo>,
    diag_offsets: Array<MapData, [u32; diag_abi::DOFF_LEN as usize]>,
    block_devs: HashMap<MapData, u32, u8>,
    block_stats: PerCpuHashMap<MapData, u32, OpStats>,
    issuers: PerCpuHashMap<MapData, IssuerKey, Issuer>,
    tids: HashMap<MapData, u32, u32>,
    tid_bits: Array<MapData, u64>,
    tid_words: BTreeSet<u32>,
    port_bits: Array<MapData, u64>,
    port_words: BTreeSet<u32>,
    runq_stats: PerCpuHashMap<MapData, u32, OpStats>,
}

/// Sets or clears bit `id` of a bitmap map (only user space writes `TRACKED_BITS` and
/// `PORT_BITS`, so the read-modify-write cannot lose a kernel update).
fn write_bit(
    map: &mut Array<MapData, u64>,
    name: &'static str,
    id: u32,
    on: bool,
) -> Result<(), KernelError> {
    let (word, mask) = bit_position(id);
    let old = map.get(&word, 0).map_err(map_error(name, "read bitmap"))?;
    let new = if on { old | mask } else { old & !mask };
    if new != old {
        map.set(word, new, 0)
            .map_err(map_error(name, "write bitmap"))?;
    }
    Ok(())
}

/// Makes a bitmap hold exactly `ids`, writing only the words that differ. `words` remembers
/// which words were non-empty last time; `extra` names words to check as well (ids the kernel
/// may have set on its own).
fn write_bitmap(
    map: &mut Array<MapData, u64>,
    name: &'static str,
    words: &mut BTreeSet<u32>,
    ids: impl Iterator<Item = u32>,
    extra: impl Iterator<Item = u32>,
) -> Result<(), KernelError> {
    let mut want: BTreeMap<u32, u64> = BTreeMap::new();
    for id in ids {
        let (word, mask) = bit_position(id);
        *want.entry(word).or_default() |= mask;
    }
    let mut visit: BTreeSet<u32> = want.keys().copied().collect();
    visit.extend(words.iter().copied());
    visit.extend(extra.map(|id| bit_position(id).0));
    for word in visit {
        let value = want.get(&word).copied().unwrap_or(0);
        let Ok(current) = map.get(&word, 0) else {
            continue; // past the end: an id no kernel hands out
        };
        if current != value {
            map.set(word, value, 0)
                .map_err(map_error(name, "write bitmap"))?;
        }
    }
    *words = want.into_keys().collect();
    Ok(())
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoadError::Map {
        map: name,
        reason: "missing".into(),
    })?;
    T::try_from(map).map_err(|e| LoadError::Map {
        map: name,
        reason: e.to_string(),
    })
}

fn map_error(
    map: &'static str,
    action: &'static str,
) -> impl Fn(aya::maps::MapError) -> KernelError {
    move |e| KernelError {
        map,
        action,
        reason: e.to_string(),
    }
}

impl EbpfKernel {
    /// Takes the maps out of a loaded object.
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        Ok(Self {
            tracked: take(ebpf, names::TRACKED_BITS)?,
            fd_class: take(ebpf, names::FD_CLASS)?,
            op_stats: take(ebpf, names::OP_STATS)?,
            config: take(ebpf, names::CONFIG)?,
            drops: take(ebpf, names::DROPS)?,
            exec_comm: take(ebpf, names::EXEC_COMM)?,
            ports: take(ebpf, names::PORTS)?,
            conns: take(ebpf, names::CONNS)?,
            churn: take(ebpf, names::CHURN)?,
            net_offsets: take(ebpf, names::NET_OFFSETS)?,
            sock_io: take(ebpf, names::SOCK_IO)?,
            diag_offsets: take(ebpf, diag_abi::DIAG_OFFSETS)?,
            block_devs: take(ebpf, diag_abi::BLOCK_DEVS)?,
            block_stats: take(ebpf, diag_abi::BLOCK_STATS)?,
            issuers: take(ebpf, diag_abi::IO_ISSUERS)?,
            tids: take(ebpf, diag_abi::TIDS)?,
            tid_bits: take(ebpf, diag_abi::TID_BITS)?,
            tid_words: BTreeSet::new(),
            port_bits: take(ebpf, names::PORT_BITS)?,
            port_words: BTreeSet::new(),
            runq_stats: take(ebpf, diag_abi::RUNQ_STATS)?,
        })
    }

    /// Writes the load-time settings into `CONFIG` and `EXEC_COMM`.
    pub(super) fn configure(&mut self, options: &LoadOptions) -> Result<(), LoadError> {
        let to_load = |map: &'static str| {
            move |e: aya::maps::MapError| LoadError::Map {
                map,
                reason: e.to_string(),
            }
        };
        self.config
            .set(names::CONFIG_MIN_DURATION_NS, options.min_duration_ns, 0)
            .map_err(to_load(names::CONFIG))?;
        self.config
            .set(
                names::CONFIG_SYNC_MIN_DURATION_NS,
                options.sync_min_duration_ns,
                0,
            )
            .map_err(to_load(names::CONFIG))?;
        // Wake the reader at a quarter full; its poll timeout picks up the rest.
        self.config
            .set(
                names::CONFIG_WAKEUP_BYTES,
                u64::from(options.ringbuf_bytes / 4),
                0,
            )
            .map_err(to_load(names::CONFIG))?;
        let mut filter = CommFilter {
            len: 0,
            comm: [0; 16],
        };
        let comm = options.exec_comm.as_bytes();
        let len = comm.len().min(15);
        filter.comm[..len].copy_from_slice(&comm[..len]);
        filter.len = len as u32;
        self.exec_comm
            .set(0, filter, 0)
            .map_err(to_load(names::EXEC_COMM))?;
        self.net_offsets
            .set(0, options.net_offsets, 0)
            .map_err(to_load(names::NET_OFFSETS))?;
        self.diag_offsets
            .set(0, options.diag_offsets, 0)
            .map_err(to_load(diag_abi::DIAG_OFFSETS))?;
        Ok(())
    }

    /// Sets the minimum duration of events sent through the ring buffer.
    pub fn set_min_duration_ns(&mut self, ns: u64) -> Result<(), KernelError> {
        self.config
            .set(names::CONFIG_MIN_DURATION_NS, ns, 0)
            .map_err(map_error(names::CONFIG, "set min duration"))
    }
}

impl Kernel for EbpfKernel {
    fn track(&mut self, tgid: u32) -> Result<(), KernelError> {
        write_bit(&mut self.tracked, names::TRACKED_BITS, tgid, true)
    }

    fn untrack(&mut self, tgid: u32) -> Result<(), KernelError> {
        write_bit(&mut self.tracked, names::TRACKED_BITS, tgid, false)?;
        let fds: Vec<FdKey> = self
            .fd_class
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.tgid == tgid)
            .collect();
        for key in fds {
            let _ = self.fd_class.remove(&key);
        }
        let ops: Vec<OpKey> = self
            .op_stats
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.tgid == tgid)
            .collect();
        for key in ops {
            let _ = self.op_stats.remove(&key);
        }
        let _ = self.runq_stats.remove(&tgid);
        let socks: Vec<FdKey> = self
            .sock_io
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.tgid == tgid)
            .collect();
        for key in socks {
            let _ = self.sock_io.remove(&key);
        }
        Ok(())
    }

    fn set_fd_class(&mut self, tgid: u32, fd: i32, class: FileClass) -> Result<(), KernelError> {
        self.fd_class
            .insert(FdKey { tgid, fd }, class as u8, 0)
            .map_err(map_error(names::FD_CLASS, "insert"))
    }

    fn op_stats(&self) -> Result<Vec<(OpKey, OpTotals)>, KernelError> {
        let mut out = Vec::new();
        for entry in self.op_stats.iter() {
            let (key, per_cpu) = entry.map_err(map_error(names::OP_STATS, "iterate"))?;
            out.push((key, OpTotals::from_per_cpu(per_cpu.iter())));
        }
        Ok(out)
    }

    fn drops(&self) -> Result<KernelDrops, KernelError> {
        let read = |index: u32| -> Result<u64, KernelError> {
            let values = self
                .drops
                .get(&index, 0)
                .map_err(map_error(names::DROPS, "read"))?;
            Ok(values.iter().sum())
        };
        Ok(KernelDrops {
            ringbuf_syscall: read(names::DROP_RINGBUF_SYSCALL)?,
            ringbuf_process: read(names::DROP_RINGBUF_PROCESS)?,
            start_map: read(names::DROP_START_MAP)?,
            stats_map: read(names::DROP_STATS_MAP)?,
        })
    }

    fn set_ports(&mut self, ports: &StdHashMap<u16, u8>) -> Result<(), KernelError> {
        let stale: Vec<u16> = self
            .ports
            .keys()
            .filter_map(Result::ok)
            .filter(|p| !ports.contains_key(p))
            .collect();
        for port in stale {
            let _ = self.ports.remove(&port);
        }
        for (port, role) in ports {
            self.ports
                .insert(*port, *role, 0)
                .map_err(map_error(names::PORTS, "insert"))?;
        }
        write_bitmap(
            &mut self.port_bits,
            names::PORT_BITS,
            &mut self.port_words,
            ports.keys().map(|p| u32::from(*p)),
            std::iter::empty(),
        )
    }

    fn conns(&self) -> Result<Vec<(ConnKey, ConnStats)>, KernelError> {
        self.conns
            .iter()
            .map(|e| e.map_err(map_error(names::CONNS, "iterate")))
            .collect()
    }

    fn remove_conn(&mut self, key: &ConnKey) -> Result<(), KernelError> {
        self.conns
            .remove(key)
            .map_err(map_error(names::CONNS, "remove"))
    }

    fn churn(&self) -> Result<Vec<(u16, Churn)>, KernelError> {
        self.churn
            .iter()
            .map(|e| e.map_err(map_error(names::CHURN, "iterate")))
            .collect()
    }

    fn sock_io(&self) -> Result<Vec<(FdKey, SockIo)>, KernelError> {
        let mut out = Vec::new();
        for entry in self.sock_io.iter() {
            let (key, per_cpu) = entry.map_err(map_error(names::SOCK_IO, "iterate"))?;
            out.push((key, crate::sockio::sum_per_cpu(per_cpu.iter())));
        }
        Ok(out)
    }

    fn remove_sock_io(&mut self, key: &FdKey) -> Result<(), KernelError> {
        self.sock_io
            .remove(key)
            .map_err(map_error(names::SOCK_IO, "remove"))
    }

    fn set_block_devs(&mut self, devs: &[u32]) -> Result<(), KernelError> {
        let stale: Vec<u32> = self
            .block_devs
            .keys()
            .filter_map(Result::ok)
            .filter(|d| !devs.contains(d))
            .collect();
        for dev in stale {
            let _ = self.block_devs.remove(&dev);
        }
        for dev in devs {
            self.block_devs
                .insert(*dev, 1, 0)
                .map_err(map_error(diag_abi::BLOCK_DEVS, "insert"))?;
        }
        Ok(())
    }

    fn block_stats(&self) -> Result<Vec<(u32, OpTotals)>, KernelError> {
        let mut out = Vec::new();
        for entry in self.block_stats.iter() {
            let (key, per_cpu) = entry.map_err(map_error(diag_abi::BLOCK_STATS, "iterate"))?;
            out.push((key, OpTotals::from_per_cpu(per_cpu.iter())));
        }
        Ok(out)
    }

    fn issuers(&self) -> Result<Vec<(IssuerKey, Issuer)>, KernelError> {
        let mut out = Vec::new();
        for entry in self.issuers.iter() {
            let (key, per_cpu) = entry.map_err(map_error(diag_abi::IO_ISSUERS, "iterate"))?;
            if let Some(total) = crate::diag::sum_issuer(per_cpu.iter()) {
                out.push((key, total));
            }
        }
        Ok(out)
    }

    fn set_tids(&mut self, tids: &StdHashMap<u32, u32>) -> Result<(), KernelError> {
        let stale: Vec<u32> = self
            .tids
            .keys()
            .filter_map(Result::ok)
            .filter(|t| !tids.contains_key(t))
            .collect();
        for tid in &stale {
            let _ = self.tids.remove(tid);
        }
        for (tid, tgid) in tids {
            // An entry the kernel already added (sched_wakeup_new) is left as it is.
            if self.tids.get(tid, 0).is_ok() {
                continue;
            }
            self.tids
                .insert(*tid, *tgid, 0)
                .map_err(map_error(diag_abi::TIDS, "insert"))?;
        }
        // The bitmap after the hash, so a thread's bit is never set without its tgid entry.
        write_bitmap(
            &mut self.tid_bits,
            diag_abi::TID_BITS,
            &mut self.tid_words,
            tids.keys().copied(),
            stale.into_iter(),
        )
    }

    fn runq_stats(&self) -> Result<Vec<(u32, OpTotals)>, KernelError> {
        let mut out = Vec::new();
        for entry in self.runq_stats.iter() {
            let (key, per_cpu) = entry.map_err(map_error(diag_abi::RUNQ_STATS, "iterate"))?;
            out.push((key, OpTotals::from_per_cpu(per_cpu.iter())));
        }
        Ok(out)
    }
}
