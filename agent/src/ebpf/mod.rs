//! Loading the eBPF object, attaching its tracepoints, and owning its maps (Linux only).

mod maps;
mod reader;

use std::path::Path;

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, RingBuf},
    programs::TracePoint,
};
use etcd_monitor_agent_common::maps as names;

pub use self::{
    maps::EbpfKernel,
    reader::{ReaderContext, ReaderHandle, spawn_reader},
};
use crate::probes::{self, Probe};

/// The compiled eBPF object, built by `build.rs` from `agent-ebpf`.
static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/etcd-monitor-agent-ebpf"));

/// Why eBPF could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The kernel refused the object or a map (privileges, BTF, verifier).
    #[error("failed to load the eBPF object: {0}")]
    Object(#[source] Box<aya::EbpfError>),
    /// A program named in `probes` is not in the object (a build mismatch).
    #[error("eBPF program {0} is missing from the object")]
    MissingProgram(&'static str),
    /// A program could not be loaded or attached.
    #[error("failed to {action} {program} on {category}:{name}: {source}")]
    Program {
        /// `load` or `attach`.
        action: &'static str,
        /// Program name.
        program: &'static str,
        /// Tracepoint category.
        category: &'static str,
        /// Tracepoint name.
        name: &'static str,
        /// The error.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map is missing or of an unexpected type.
    #[error("eBPF map {map}: {reason}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// Load-time settings.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Ring buffer size in bytes (power of two, ≥ page size).
    pub ringbuf_bytes: u32,
    /// Minimum duration of write-family events sent through the ring buffer, nanoseconds.
    pub min_duration_ns: u64,
    /// The same for sync-family events.
    pub sync_min_duration_ns: u64,
    /// The comm whose exec is reported (`etcd`); empty disables exec events.
    pub exec_comm: String,
    /// Probe groups to attach (`--probes`).
    pub groups: Vec<crate::probes::ProbeGroup>,
    /// Tracepoint field offsets for the TCP programs (see `net::read_offsets`).
    pub net_offsets: [u32; etcd_monitor_agent_common::net::OFF_LEN as usize],
    /// Tracepoint field offsets for the block and sched programs (see `diag::read_offsets`).
    pub diag_offsets: [u32; etcd_monitor_agent_common::diag::DOFF_LEN as usize],
}

/// An optional probe that did not attach.
#[derive(Debug, Clone)]
pub struct SkippedProbe {
    /// The optional probe that is missing.
    pub probe: Probe,
    /// The attach error (e.g. the kernel lacks the tracepoint).
    pub reason: String,
}

/// The attached programs; dropping this detaches them.
pub struct Programs {
    _ebpf: Ebpf,
    runs: crate::probes::runs::RunSource,
}

impl Programs {
    /// Run time and count of every attached program (kernel BPF statistics), read at call time.
    pub fn runs(&self) -> crate::probes::runs::RunSource {
        self.runs.clone()
    }
}

/// The loaded object: programs attached, maps handed out.
pub struct Loaded {
    /// Keep alive as long as tracing should go on.
    pub programs: Programs,
    /// Map control for the tracker.
    pub kernel: EbpfKernel,
    /// The event ring buffer, for the reader thread.
    pub ring: RingBuf<MapData>,
    /// Optional probes that failed to attach.
    pub skipped: Vec<SkippedProbe>,
}

/// Reads each program's `run_time_ns` / `run_cnt` from its fd's `fdinfo` at call time.
fn run_source(
    programs: Vec<(&'static str, aya::programs::ProgramFd)>,
) -> crate::probes::runs::RunSource {
    use std::os::fd::{AsFd, AsRawFd};
    std::sync::Arc::new(move || {
        programs
            .iter()
            .filter_map(|(program, fd)| {
                let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
                let text = std::fs::read_to_string(path).ok()?;
                let (run_time_ns, run_count) = crate::probes::runs::parse_fdinfo(&text)?;
                Some(crate::probes::runs::ProbeRun {
                    program,
                    run_time_ns,
                    run_count,
                })
            })
            .collect()
    })
}

/// Raises RLIMIT_MEMLOCK for kernels that still account BPF memory by it. Newer kernels
/// account by memory cgroup and need nothing, so a failure is only worth a debug line.
fn bump_memlock_rlimit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "Could not raise RLIMIT_MEMLOCK; continuing, as memcg accounting does not need it.");
    }
}

/// Mounts tracefs at /sys/kernel/tracing when neither it nor debugfs' tracing dir is there.
pub fn ensure_tracefs() -> Result<(), String> {
    let tracing = Path::new("/sys/kernel/tracing/events");
    if tracing.exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: all pointers are valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "tracefs is not mounted and mounting it at /sys/kernel/tracing failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    tracing::info!("Mounted tracefs at /sys/kernel/tracing.");
    Ok(())
}

/// Loads the object, attaches every probe, and hands out the maps.
pub fn load(options: &LoadOptions) -> Result<Loaded, LoadError> {
    bump_memlock_rlimit();
    if let Err(reason) = ensure_tracefs() {
        tracing::warn!(%reason, "Tracepoints may fail to attach.");
    }
    let mut options = options.clone();
    if options
        .net_offsets
        .iter()
        .all(|o| *o == etcd_monitor_agent_common::net::OFF_MISSING)
    {
        let root = if Path::new("/sys/kernel/tracing/events").exists() {
            Path::new("/sys/kernel/tracing")
        } else {
            Path::new("/sys/kernel/debug/tracing")
        };
        options.net_offsets = crate::net::read_offsets(root);
    }
    if options
        .diag_offsets
        .iter()
        .all(|o| *o == etcd_monitor_agent_common::net::OFF_MISSING)
    {
        let root = if Path::new("/sys/kernel/tracing/events").exists() {
            Path::new("/sys/kernel/tracing")
        } else {
            Path::new("/sys/kernel/debug/tracing")
        };
        options.diag_offsets = crate::diag::read_offsets(root);
    }
    let options = &options;
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(names::EVENTS, options.ringbuf_bytes)
        .load(OBJECT)
        .map_err(|e| LoadError::Object(Box::new(e)))?;

    let mut skipped = Vec::new();
    let mut attached = Vec::new();
    for probe in probes::all()
        .into_iter()
        .filter(|p| options.groups.contains(&p.group))
    {
        match attach(&mut ebpf, probe) {
            Ok(fd) => attached.extend(fd.map(|fd| (probe.program, fd))),
            Err(err) => {
                if probe.required {
                    return Err(err);
                }
                skipped.push(SkippedProbe {
                    probe,
                    reason: err.to_string(),
                });
            }
        }
    }

    let mut kernel = EbpfKernel::take(&mut ebpf)?;
    kernel.configure(options)?;
    let ring_map = ebpf.take_map(names::EVENTS).ok_or(LoadError::Map {
        map: names::EVENTS,
        reason: "missing".into(),
    })?;
    let ring = RingBuf::try_from(ring_map).map_err(|e| LoadError::Map {
        map: names::EVENTS,
        reason: e.to_string(),
    })?;
    Ok(Loaded {
        programs: Programs {
            _ebpf: ebpf,
            runs: run_source(attached),
        },
        kernel,
        ring,
        skipped,
    })
}

/// Loads and attaches one program; returns a copy of its fd for the run-time statistics (none
/// if the fd could not be duplicated: only that program's statistics are missing then).
fn attach(ebpf: &mut Ebpf, probe: Probe) -> Result<Option<aya::programs::ProgramFd>, LoadError> {
    let program_error = |action, source| LoadError::Program {
        action,
        program: probe.program,
        category: probe.category,
        name: probe.name,
        source: Box::new(source),
    };
    let program: &mut TracePoint = ebpf
        .program_mut(probe.program)
        .ok_or(LoadError::MissingProgram(probe.program))?
        .try_into()
        .map_err(|e| program_error("load", e))?;
    program.load().map_err(|e| program_error("load", e))?;
    program
        .attach(probe.category, probe.name)
        .map_err(|e| program_error("attach", e))?;
    Ok(program.fd().ok().and_then(|fd| fd.try_clone().ok()))
}
