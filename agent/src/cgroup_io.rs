//! I/O throttling evidence of a member's cgroup, and pressure stall information (PSI).
//!
//! - cgroup v1 `blkio`: the limits `blkio.throttle.{read,write}_{bps,iops}_device` and the
//!   counters `blkio.throttle.io_service_bytes_recursive` / `io_serviced_recursive` of the
//!   innermost cgroup (the member's or an ancestor's) that sets a limit, else of the member's
//!   own cgroup.
//! - cgroup v2: `io.max` (limits) and `io.stat` (counters), the same way.
//! - PSI: `cpu.pressure` and `io.pressure` of the member's cgroup v2 directory when it is not
//!   the root (source `cgroup`); else the node's `/proc/pressure/{cpu,io}` (source `system`).
//!   On a v1 or hybrid host whose processes sit in the v2 root, PSI is the node's only.
//!
//! The collector turns two readings into rates (`sampled_at_ms` apart): a cgroup serviced at
//! its limit while its WAL fsync is slow is `io_throttled`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use crate::cgroups::{CgroupRoots, ProcCgroups, ancestors};

/// At most this many devices per cgroup are reported (a cgroup that touched more is unusual;
/// the ones with limits come first).
pub const MAX_DEVICES: usize = 16;

/// Limits of one device; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoLimits {
    /// Read bytes per second.
    pub read_bps: Option<u64>,
    /// Write bytes per second.
    pub write_bps: Option<u64>,
    /// Read requests per second.
    pub read_iops: Option<u64>,
    /// Write requests per second.
    pub write_iops: Option<u64>,
}

impl IoLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.read_bps.is_some()
            || self.write_bps.is_some()
            || self.read_iops.is_some()
            || self.write_iops.is_some()
    }
}

/// Cumulative I/O the cgroup got serviced on one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Read requests.
    pub read_ios: u64,
    /// Write requests.
    pub write_ios: u64,
}

/// One device of a cgroup: its limits and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceIo {
    /// `major:minor`.
    pub device: String,
    /// The limits set on it.
    pub limits: IoLimits,
    /// What the cgroup got serviced on it.
    pub counters: IoCounters,
}

/// Pressure stall figures of one resource: cumulative stall time, µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    /// Time some task was stalled.
    pub some_us: u64,
    /// Time all non-idle tasks were stalled (absent for `cpu` on older kernels).
    pub full_us: Option<u64>,
}

/// Where PSI figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PressureSource {
    /// The member's own cgroup v2 directory.
    Cgroup,
    /// The node's `/proc/pressure`.
    System,
}

impl PressureSource {
    /// `cgroup` or `system`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Cgroup => "cgroup",
            Self::System => "system",
        }
    }
}

/// The I/O cgroup evidence of one member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupIo {
    /// The cgroup the figures are from (v1 blkio or v2 path).
    pub cgroup: String,
    /// From cgroup v2 (`io.max`/`io.stat`) rather than v1 blkio.
    pub v2: bool,
    /// Devices, those with a limit first.
    pub devices: Vec<DeviceIo>,
    /// Where the PSI figures came from, when there are any.
    pub pressure_source: Option<PressureSource>,
    /// `io.pressure`.
    pub io_pressure: Option<Pressure>,
    /// `cpu.pressure`.
    pub cpu_pressure: Option<Pressure>,
}

/// Parses a v1 `blkio.throttle.*_device` file (`8:0 1048576` per line).
pub fn parse_v1_limits(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (dev, value) = (w.next()?, w.next()?.parse().ok()?);
            dev.contains(':').then(|| (dev.to_string(), value))
        })
        .collect()
}

/// Parses a v1 `blkio.throttle.io_serviced[_recursive]` or `io_service_bytes[_recursive]` file
/// (`8:0 Read 10`, `8:0 Write 5`, …, `Total 15`): (read, write) per device.
pub fn parse_v1_rwstat(text: &str) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let (Some(dev), Some(kind), Some(value)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let (Ok(value), true) = (value.parse::<u64>(), dev.contains(':')) else {
            continue;
        };
        let entry = out.entry(dev.to_string()).or_default();
        match kind {
            "Read" => entry.0 = value,
            "Write" => entry.1 = value,
            _ => {}
        }
    }
    out
}

/// `key=value` pairs of a v2 `io.max` or `io.stat` line after the device.
fn keyed(line: &str) -> Option<(String, BTreeMap<&str, &str>)> {
    let mut w = line.split_whitespace();
    let dev = w.next().filter(|d| d.contains(':'))?;
    Some((
        dev.to_string(),
        w.filter_map(|kv| kv.split_once('=')).collect(),
    ))
}

/// Parses v2 `io.max` (`8:0 rbps=max wbps=1048576 riops=max wiops=100`).
pub fn parse_io_max(text: &str) -> BTreeMap<String, IoLimits> {
    let limit = |kv: &BTreeMap<&str, &str>, k: &str| kv.get(k).and_then(|v| v.parse().ok());
    text.lines()
        .filter_map(keyed)
        .map(|(dev, kv)| {
            let limits = IoLimits {
                read_bps: limit(&kv, "rbps"),
                write_bps: limit(&kv, "wbps"),
                read_iops: limit(&kv, "riops"),
                write_iops: limit(&kv, "wiops"),
            };
            (dev, limits)
        })
        .collect()
}

/// Parses v2 `io.stat` (`8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`).
pub fn parse_io_stat(text: &str) -> BTreeMap<String, IoCounters> {
    let n = |kv: &BTreeMap<&str, &str>, k: &str| kv.get(k).and_then(|v| v.parse().ok());
    text.lines()
        .filter_map(keyed)
        .map(|(dev, kv)| {
            let counters = IoCounters {
                read_bytes: n(&kv, "rbytes").unwrap_or(0),
                write_bytes: n(&kv, "wbytes").unwrap_or(0),
                read_ios: n(&kv, "rios").unwrap_or(0),
                write_ios: n(&kv, "wios").unwrap_or(0),
            };
            (dev, counters)
        })
        .collect()
}

/// Parses a PSI file (`some avg10=0.00 avg60=0.00 avg300=0.00 total=123` and a `full` line).
pub fn parse_pressure(text: &str) -> Option<Pressure> {
    let total = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))?
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("total="))?
            .parse()
            .ok()
    };
    Some(Pressure {
        some_us: total("some ")?,
        full_us: total("full "),
    })
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Which limit of an [`IoLimits`] a file sets.
type LimitField = fn(&mut IoLimits) -> &mut Option<u64>;

/// v1 limits of one blkio directory.
fn v1_limits(dir: &Path) -> BTreeMap<String, IoLimits> {
    let mut out: BTreeMap<String, IoLimits> = BTreeMap::new();
    let files: [(&str, LimitField); 4] = [
        ("blkio.throttle.read_bps_device", |l| &mut l.read_bps),
        ("blkio.throttle.write_bps_device", |l| &mut l.write_bps),
        ("blkio.throttle.read_iops_device", |l| &mut l.read_iops),
        ("blkio.throttle.write_iops_device", |l| &mut l.write_iops),
    ];
    for (file, field) in files {
        for (dev, value) in parse_v1_limits(&read(&dir.join(file)).unwrap_or_default()) {
            *field(out.entry(dev).or_default()) = Some(value);
        }
    }
    out
}

/// v1 counters of one blkio directory (recursive variants first).
fn v1_counters(dir: &Path) -> BTreeMap<String, IoCounters> {
    let stat = |name: &str| {
        read(&dir.join(format!("blkio.throttle.{name}_recursive")))
            .or_else(|| read(&dir.join(format!("blkio.throttle.{name}"))))
            .map(|t| parse_v1_rwstat(&t))
            .unwrap_or_default()
    };
    let (bytes, ios) = (stat("io_service_bytes"), stat("io_serviced"));
    let mut out: BTreeMap<String, IoCounters> = BTreeMap::new();
    for (dev, (r, w)) in bytes {
        let c = out.entry(dev).or_default();
        (c.read_bytes, c.write_bytes) = (r, w);
    }
    for (dev, (r, w)) in ios {
        let c = out.entry(dev).or_default();
        (c.read_ios, c.write_ios) = (r, w);
    }
    out
}

/// Limits and counters of the innermost directory in `dirs` that sets a limit (else of the
/// first one), with that directory.
fn limited_dir(
    dirs: &[PathBuf],
    limits: impl Fn(&Path) -> BTreeMap<String, IoLimits>,
    counters: impl Fn(&Path) -> BTreeMap<String, IoCounters>,
) -> Option<(PathBuf, Vec<DeviceIo>)> {
    let first = dirs.first().filter(|d| d.is_dir())?;
    let (dir, limits) = dirs
        .iter()
        .map(|d| (d, limits(d)))
        .find(|(_, l)| l.values().any(IoLimits::any))
        .unwrap_or_else(|| (first, BTreeMap::new()));
    let mut devices: BTreeMap<String, DeviceIo> = counters(dir)
        .into_iter()
        .map(|(device, counters)| {
            let io = DeviceIo {
                device: device.clone(),
                counters,
                ..DeviceIo::default()
            };
            (device, io)
        })
        .collect();
    for (device, l) in limits.into_iter().filter(|(_, l)| l.any()) {
        devices
            .entry(device.clone())
            .or_insert_with(|| DeviceIo {
                device,
                ..DeviceIo::default()
            })
            .limits = l;
    }
    let mut devices: Vec<DeviceIo> = devices.into_values().collect();
    devices.sort_by_key(|d| !d.limits.any());
    devices.truncate(MAX_DEVICES);
    Some((dir.clone(), devices))
}

/// The path of `dir` below `root`, as `/a/b`.
fn label(root: &Path, dir: &Path) -> String {
    format!(
        "/{}",
        dir.strip_prefix(root).unwrap_or(dir).to_string_lossy()
    )
}

/// Reads the I/O cgroup evidence and PSI of the process whose cgroups are `cgroups`.
/// `proc_root` is `/proc` normally (for `/proc/pressure`). `None` when neither a blkio/io
/// cgroup nor PSI is readable.
pub fn read_member(
    roots: &CgroupRoots,
    cgroups: &ProcCgroups,
    proc_root: &Path,
) -> Option<CgroupIo> {
    let mut out = CgroupIo::default();
    let mut found = false;
    if let (Some(root), Some(path)) = (roots.v1.get("blkio"), cgroups.v1.get("blkio"))
        && let Some((dir, devices)) = limited_dir(&ancestors(root, path), v1_limits, v1_counters)
    {
        (out.cgroup, out.devices, found) = (label(root, &dir), devices, true);
    } else if let (Some(root), Some(path)) = (&roots.v2, &cgroups.v2) {
        let limits = |d: &Path| parse_io_max(&read(&d.join("io.max")).unwrap_or_default());
        let counters = |d: &Path| parse_io_stat(&read(&d.join("io.stat")).unwrap_or_default());
        if let Some((dir, devices)) = limited_dir(&ancestors(root, path), limits, counters)
            && dir.join("io.stat").exists()
        {
            (out.cgroup, out.devices, out.v2, found) = (label(root, &dir), devices, true, true);
        }
    }
    let own_v2 = match (&roots.v2, &cgroups.v2) {
        (Some(root), Some(path)) if !path.trim_matches('/').is_empty() => {
            ancestors(root, path).into_iter().next()
        }
        _ => None,
    };
    let psi = |io: PathBuf, cpu: PathBuf| {
        let io = read(&io).and_then(|t| parse_pressure(&t));
        let cpu = read(&cpu).and_then(|t| parse_pressure(&t));
        (io.is_some() || cpu.is_some()).then_some((io, cpu))
    };
    let system = proc_root.join("pressure");
    let pressure = own_v2
        .and_then(|d| psi(d.join("io.pressure"), d.join("cpu.pressure")))
        .map(|p| (PressureSource::Cgroup, p))
        .or_else(|| {
            psi(system.join("io"), system.join("cpu")).map(|p| (PressureSource::System, p))
        });
    if let Some((source, (io, cpu))) = pressure {
        (out.pressure_source, out.io_pressure, out.cpu_pressure) = (Some(source), io, cpu);
        found = true;
    }
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn v1_files() {
        assert_eq!(
            parse_v1_limits("7:3 20\n8:0 1048576\n"),
            BTreeMap::from([("7:3".to_string(), 20), ("8:0".to_string(), 1_048_576)])
        );
        let serviced = "7:3 Read 4\n7:3 Write 300\n7:3 Sync 300\n7:3 Async 4\n7:3 Discard 0\n7:3 Total 304\nTotal 304\n";
        assert_eq!(parse_v1_rwstat(serviced)["7:3"], (4, 300));
        assert_eq!(
            parse_v1_rwstat(serviced).len(),
            1,
            "the Total line is no device"
        );
    }

    #[test]
    fn v2_files() {
        let max = parse_io_max("259:0 rbps=max wbps=1048576 riops=max wiops=100\n");
        assert_eq!(
            max["259:0"],
            IoLimits {
                read_bps: None,
                write_bps: Some(1_048_576),
                read_iops: None,
                write_iops: Some(100),
            }
        );
        let stat = parse_io_stat("259:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n");
        assert_eq!(
            stat["259:0"],
            IoCounters {
                read_bytes: 1,
                write_bytes: 2,
                read_ios: 3,
                write_ios: 4
            }
        );
    }

    #[test]
    fn pressure_files() {
        let io = "some avg10=1.00 avg60=0.50 avg300=0.10 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=789\n";
        assert_eq!(
            parse_pressure(io),
            Some(Pressure {
                some_us: 123_456,
                full_us: Some(789)
            })
        );
        assert_eq!(
            parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n"),
            Some(Pressure {
                some_us: 5,
                full_us: None
            })
        );
        assert_eq!(parse_pressure("junk"), None);
    }

    fn write(path: PathBuf, text: &str) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn v1_limit_on_an_ancestor_is_found_with_its_counters_and_node_psi() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blkio = dir.path().join("blkio");
        write(
            blkio.join("pod/blkio.throttle.write_iops_device"),
            "7:3 20\n",
        );
        write(
            blkio.join("pod/blkio.throttle.io_serviced_recursive"),
            "7:3 Write 200\n8:0 Read 5\nTotal 205\n",
        );
        write(blkio.join("pod/ctr/blkio.throttle.write_iops_device"), "");
        write(
            dir.path().join("proc/pressure/io"),
            "some avg10=0 avg60=0 avg300=0 total=10\nfull avg10=0 avg60=0 avg300=0 total=4\n",
        );
        let roots = CgroupRoots {
            v2: None,
            v1: HashMap::from([("blkio".to_string(), blkio)]),
        };
        let cgroups = crate::cgroups::parse_proc_cgroup("7:blkio:/pod/ctr\n");
        let io = read_member(&roots, &cgroups, &dir.path().join("proc")).expect("evidence");
        assert_eq!(io.cgroup, "/pod");
        assert!(!io.v2);
        assert_eq!(io.devices[0].device, "7:3", "the limited device first");
        assert_eq!(io.devices[0].limits.write_iops, Some(20));
        assert_eq!(io.devices[0].counters.write_ios, 200);
        assert_eq!(io.pressure_source, Some(PressureSource::System));
        assert_eq!(io.io_pressure.map(|p| p.some_us), Some(10));
        assert_eq!(io.cpu_pressure, None);
    }

    #[test]
    fn v2_cgroup_with_its_own_psi() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("unified");
        write(
            root.join("a/io.max"),
            "7:3 rbps=max wbps=max riops=max wiops=50\n",
        );
        write(
            root.join("a/io.stat"),
            "7:3 rbytes=0 wbytes=8192 rios=0 wios=2\n",
        );
        write(
            root.join("a/cpu.pressure"),
            "some avg10=0 avg60=0 avg300=0 total=77\n",
        );
        let roots = CgroupRoots {
            v2: Some(root),
            v1: HashMap::new(),
        };
        let cgroups = crate::cgroups::parse_proc_cgroup("0::/a\n");
        let io = read_member(&roots, &cgroups, &dir.path().join("proc")).expect("evidence");
        assert!(io.v2);
        assert_eq!(io.cgroup, "/a");
        assert_eq!(io.devices[0].limits.write_iops, Some(50));
        assert_eq!(io.devices[0].counters.write_bytes, 8192);
        assert_eq!(io.pressure_source, Some(PressureSource::Cgroup));
        assert_eq!(io.cpu_pressure.map(|p| p.some_us), Some(77));
    }
}
