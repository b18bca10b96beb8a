//! What the agent asks of the loaded eBPF programs, as a trait so that the tracker and the
//! metrics work the same with a real kernel, with none (client-only) and in unit tests.

use std::collections::HashMap;

use etcd_monitor_agent_common::{
    diag::{Issuer, IssuerKey},
    net::{Churn, ConnKey, ConnStats},
    syscall::{FdKey, FileClass, OpKey, SockIo},
};

use crate::stats::OpTotals;

/// A map operation on the loaded programs failed.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} in eBPF map {map}: {reason}")]
pub struct KernelError {
    /// The map's name.
    pub map: &'static str,
    /// What we tried.
    pub action: &'static str,
    /// The error from the map API.
    pub reason: String,
}

/// Loss counters read from the kernel's `DROPS` map, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelDrops {
    /// Syscall events not written because the ring buffer was full.
    pub ringbuf_syscall: u64,
    /// Process events not written because the ring buffer was full.
    pub ringbuf_process: u64,
    /// Syscalls not timed because the start map refused an entry.
    pub start_map: u64,
    /// Syscalls not counted because the stats map was full.
    pub stats_map: u64,
}

/// Control of the in-kernel side.
pub trait Kernel: Send {
    /// Starts tracing process `tgid`.
    fn track(&mut self, tgid: u32) -> Result<(), KernelError>;
    /// Stops tracing `tgid` and deletes its fd classes and counters (harvest them first).
    fn untrack(&mut self, tgid: u32) -> Result<(), KernelError>;
    /// Tells the kernel the class of an open fd.
    fn set_fd_class(&mut self, tgid: u32, fd: i32, class: FileClass) -> Result<(), KernelError>;
    /// Every (tgid, op, class) counter, summed over CPUs.
    fn op_stats(&self) -> Result<Vec<(OpKey, OpTotals)>, KernelError>;
    /// The loss counters.
    fn drops(&self) -> Result<KernelDrops, KernelError>;
    /// Makes the kernel watch exactly these ports (port → role bits).
    fn set_ports(&mut self, _ports: &HashMap<u16, u8>) -> Result<(), KernelError> {
        Ok(())
    }
    /// Every watched TCP connection's counters.
    fn conns(&self) -> Result<Vec<(ConnKey, ConnStats)>, KernelError> {
        Ok(Vec::new())
    }
    /// Forgets a connection (after its final counts were harvested).
    fn remove_conn(&mut self, _key: &ConnKey) -> Result<(), KernelError> {
        Ok(())
    }
    /// Client connection churn per listening port.
    fn churn(&self) -> Result<Vec<(u16, Churn)>, KernelError> {
        Ok(Vec::new())
    }
    /// Bytes through each peer socket fd (summed over CPUs).
    fn sock_io(&self) -> Result<Vec<(FdKey, SockIo)>, KernelError> {
        Ok(Vec::new())
    }
    /// Forgets a closed socket fd's counters (after they were harvested).
    fn remove_sock_io(&mut self, _key: &FdKey) -> Result<(), KernelError> {
        Ok(())
    }
    /// Makes the block programs watch exactly these devices (kernel `dev_t`).
    fn set_block_devs(&mut self, _devs: &[u32]) -> Result<(), KernelError> {
        Ok(())
    }
    /// Request service time per watched device.
    fn block_stats(&self) -> Result<Vec<(u32, OpTotals)>, KernelError> {
        Ok(Vec::new())
    }
    /// I/O submitted per (device, process), summed over CPUs.
    fn issuers(&self) -> Result<Vec<(IssuerKey, Issuer)>, KernelError> {
        Ok(Vec::new())
    }
    /// Makes the sched programs watch exactly these threads (tid → tgid).
    fn set_tids(&mut self, _tids: &HashMap<u32, u32>) -> Result<(), KernelError> {
        Ok(())
    }
    /// Run-queue latency per tracked process.
    fn runq_stats(&self) -> Result<Vec<(u32, OpTotals)>, KernelError> {
        Ok(Vec::new())
    }
}
