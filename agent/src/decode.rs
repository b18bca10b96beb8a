//! Ring-buffer records → typed events. Pure, so it is tested without a kernel.

use etcd_monitor_agent_common::{
    EventKind,
    process::ProcessEvent,
    syscall::{SYSCALL_EVENT_LEN, SyscallEvent},
};

/// A decoded ring-buffer record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A completed syscall.
    Syscall(SyscallEvent),
    /// An exec whose comm matched.
    Exec(ProcessEvent),
    /// A tracked process exited.
    Exit(ProcessEvent),
}

/// A record that is not one the programs write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Zero-length record.
    #[error("empty ring-buffer record")]
    Empty,
    /// First byte names no event kind.
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
    /// Shorter than its kind's struct.
    #[error("{kind:?} record of {len} bytes, expected {expected}")]
    Short {
        /// The kind byte's meaning.
        kind: EventKind,
        /// Bytes received.
        len: usize,
        /// Bytes the struct needs.
        expected: usize,
    },
}

fn read<T: Copy>(bytes: &[u8], kind: EventKind) -> Result<T, DecodeError> {
    let expected = core::mem::size_of::<T>();
    if bytes.len() < expected {
        return Err(DecodeError::Short {
            kind,
            len: bytes.len(),
            expected,
        });
    }
    // SAFETY: length checked above; `T` is a plain `repr(C)` struct valid for any bytes and
    // `read_unaligned` does not need alignment.
    Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let kind_byte = *bytes.first().ok_or(DecodeError::Empty)?;
    let kind = EventKind::from_u8(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;
    match kind {
        EventKind::Syscall => read::<SyscallEvent>(bytes, kind).map(Event::Syscall),
        EventKind::Exec => read::<ProcessEvent>(bytes, kind).map(Event::Exec),
        EventKind::Exit => read::<ProcessEvent>(bytes, kind).map(Event::Exit),
    }
}

const _: () = assert!(SYSCALL_EVENT_LEN == 48);

#[cfg(test)]
mod tests {
    use etcd_monitor_agent_common::syscall::{FileClass, Op};

    use super::*;

    fn bytes_of<T>(value: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain struct.
        unsafe { core::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn decodes_a_syscall_event() {
        let event = SyscallEvent {
            kind: EventKind::Syscall as u8,
            op: Op::Fdatasync as u8,
            class: FileClass::Wal as u8,
            flags: 0,
            fd: 7,
            tgid: 1234,
            tid: 1240,
            start_ns: 1_000,
            duration_ns: 2_500_000,
            ret: 0,
            bytes: 0,
        };
        assert_eq!(decode(&bytes_of(&event)), Ok(Event::Syscall(event)));
    }

    #[test]
    fn decodes_process_events() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"etcd");
        let event = ProcessEvent {
            kind: EventKind::Exit as u8,
            _pad: [0; 3],
            tgid: 9,
            ts_ns: 5,
            comm,
        };
        assert_eq!(decode(&bytes_of(&event)), Ok(Event::Exit(event)));
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        assert_eq!(decode(&[99, 0, 0]), Err(DecodeError::UnknownKind(99)));
        assert!(matches!(
            decode(&[1, 0, 0]),
            Err(DecodeError::Short {
                len: 3,
                expected: 48,
                ..
            })
        ));
    }
}
