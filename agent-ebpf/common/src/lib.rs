//! The kernel/user ABI of etcd-monitor's eBPF programs.
//!
//! Everything here is `#[repr(C)]`, `Copy` and free of pointers, so the eBPF programs in
//! `etcd-monitor-agent-ebpf` write these structs into maps and the ring buffer, and the agent reads
//! them back byte for byte. The crate is `no_std` and has no dependencies unless the `user`
//! feature is on, which adds `aya::Pod` impls for the map key and value types.
#![no_std]

pub mod diag;
pub mod hist;
pub mod maps;
pub mod net;
pub mod process;
pub mod syscall;

/// The first byte of every ring-buffer record: which struct follows.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A [`syscall::SyscallEvent`].
    Syscall = 1,
    /// A [`process::ProcessEvent`] for an `exec` of a process whose `comm` matched.
    Exec = 2,
    /// A [`process::ProcessEvent`] for the exit of a tracked process.
    Exit = 3,
}

impl EventKind {
    /// Decodes the kind byte; `None` for a byte no program writes.
    pub const fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Syscall),
            2 => Some(Self::Exec),
            3 => Some(Self::Exit),
            _ => None,
        }
    }
}
