//! One member's WAL fsync readings fed through every consumer of histograms — history window
//! (status page), alert signals, diagnosis, the join's kernel view, the exporter and the
//! pipeline's re-exported kernel buckets — to show they report the same quantile for the same
//! window, counter reset included. Each consumer is called through its own code path: etcd
//! readings go through the scrape parser, kernel readings through the agent registry.

use std::{sync::Arc, time::Duration};

use etcd_monitor_histogram::CumulativeBuckets;
use etcd_monitor_proto::v1::{
    AgentStatus, DiskOp, EventBatch, FileClass, KernelHistogram, MemberIdentity,
};
use prometheus_parse::Scrape;

use crate::{
    analysis::alerting::signals, analysis::alerting::signals::Signal,
    analysis::alerting::signals::SignalHistory, analysis::diagnosis::DiagnosisConfig,
    analysis::diagnosis::diagnose, analysis::diagnosis::sample, model::cluster::ClusterHandle,
    model::cluster::ClusterState, model::cluster::Clusters, model::cluster::MemberState,
    model::config::ClusterConfig, model::telemetry::Telemetry, model::window::FsyncWindows,
    outputs::exporter, sources::ingest, sources::ingest::Pipeline, sources::scrape,
};

const PEER: &str = "http://10.0.0.1:2380";
const T0: u64 = 1_000_000;
const STEP: u64 = 60_000;

/// etcd's `/metrics` with WAL fsync buckets `(le, cumulative)`, sum and count.
fn etcd_text(buckets: &[(&str, u64)], sum: f64) -> String {
    let mut t = String::from(
        "# TYPE etcd_server_proposals_committed_total gauge\n\
         etcd_server_proposals_committed_total 1\n\
         # TYPE etcd_disk_wal_fsync_duration_seconds histogram\n",
    );
    for (le, c) in buckets {
        t.push_str(&format!(
            "etcd_disk_wal_fsync_duration_seconds_bucket{{le=\"{le}\"}} {c}\n"
        ));
    }
    let count = buckets.last().map_or(0, |b| b.1);
    t.push_str(&format!(
        "etcd_disk_wal_fsync_duration_seconds_sum {sum}\n\
         etcd_disk_wal_fsync_duration_seconds_count {count}\n"
    ));
    t
}

const LE: [&str; 8] = [
    "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "+Inf",
];

fn etcd_reading(cumulative: [u64; 8], sum: f64) -> String {
    let b: Vec<(&str, u64)> = LE.iter().copied().zip(cumulative).collect();
    etcd_text(&b, sum)
}

/// An agent status for member `m0` with WAL and DB `fdatasync` slots.
fn agent_status(wal: &[(usize, u64)], each_ns: u64) -> AgentStatus {
    let mut slots = vec![0u64; 40];
    for (slot, n) in wal {
        slots[*slot] = *n;
    }
    let count = wal.iter().map(|w| w.1).sum();
    let hist = |file: FileClass, slots: Vec<u64>, count: u64| KernelHistogram {
        member: "m0".into(),
        op: DiskOp::Fdatasync as i32,
        file: file as i32,
        count,
        sum_nanos: count * each_ns,
        bytes: 0,
        errors: 0,
        log2_slots: slots,
    };
    let mut db = vec![0u64; 40];
    db[30] = 7; // must not leak into the WAL figures
    AgentStatus {
        mode: "ebpf".into(),
        members: vec![MemberIdentity {
            name: "m0".into(),
            pid: 42,
            peer_urls: vec![PEER.into()],
            ..MemberIdentity::default()
        }],
        histograms: vec![
            hist(FileClass::Wal, slots, count),
            hist(FileClass::Db, db, 7),
        ],
        ..AgentStatus::default()
    }
}

fn close(what: &str, got: Option<f64>, want: f64) {
    let ok = got.is_some_and(|g| (g - want).abs() <= 1e-9 * want.abs().max(1.0));
    assert!(ok, "{what}: got {got:?}, want {want}");
}

/// What each consumer reports after one more reading.
#[derive(Debug, Default)]
struct Reports {
    history_server_ms: Option<f64>,
    history_kernel_ms: Option<f64>,
    alert_server_ms: Option<f64>,
    alert_kernel_ms: Option<f64>,
    diagnosis_server_ms: Option<f64>,
    diagnosis_kernel_ms: Option<f64>,
    diagnosis_server_p95_ms: Option<f64>,
    kernel_view_ms: Option<f64>,
    exporter_server_p95_ms: Option<f64>,
    reexported_kernel_ms: Option<f64>,
}

struct Member {
    clusters: Clusters,
    pipeline: Pipeline,
    windows: FsyncWindows,
    signals: SignalHistory,
    samples: Vec<sample::MemberSample>,
    sequence: u64,
}

impl Member {
    fn new() -> Self {
        let c = ClusterHandle::new(ClusterConfig {
            name: "c".into(),
            endpoints: vec!["http://10.0.0.1:2379".into()],
            tls: None,
            auth: None,
            metrics_urls: vec![],
            dial_timeout: Duration::from_secs(1),
        });
        Self {
            clusters: Arc::new(vec![c]),
            pipeline: Pipeline::default(),
            windows: FsyncWindows::default(),
            signals: SignalHistory::default(),
            samples: Vec::new(),
            sequence: 0,
        }
    }

    fn signal_ms(&self, signal: Signal, state: &ClusterState, now: u64) -> Option<f64> {
        let s = signals::samples(
            signal,
            Duration::from_millis(STEP),
            state,
            &self.signals,
            now,
        );
        assert!(s.len() <= 1, "{s:?}");
        s.first().map(|s| s.value * 1e3)
    }

    /// Feeds one scrape and one agent status taken at `at`, then asks every consumer.
    fn observe(&mut self, at: u64, etcd: &str, boot: &str, status: AgentStatus) -> Reports {
        let server = scrape::derive(etcd).expect("etcd text parses");
        self.clusters[0].update(|s| {
            s.updated_at_ms = at;
            s.members = vec![MemberState {
                id: "8e9e05c52164694d".into(),
                name: "m0".into(),
                peer_urls: vec![PEER.into()],
                client_urls: vec!["http://10.0.0.1:2379".into()],
                reachable: true,
                server: Some(server),
                ..MemberState::default()
            }];
        });
        self.sequence += 1;
        let accepted = self.pipeline.registry.accept(&EventBatch {
            node: "n1".into(),
            boot_id: boot.into(),
            sequence: self.sequence,
            event_offset: 0,
            status: Some(status),
            ..EventBatch::default()
        });
        assert!(!accepted.expect("a valid batch").duplicate);
        let state = self.clusters[0].snapshot();
        let member = &state.members[0];
        let registry = &self.pipeline.registry;

        // History and the status page: what the scrape loop hands the window.
        let kernel = registry.wal_fsync_slots(member);
        let history = self.windows.observe(
            &member.id,
            member.server.as_ref().map(|s| &s.series.wal_fsync),
            kernel.as_ref(),
        );
        // Alert signals.
        self.signals.record(&state, Some(registry), at);
        // Diagnosis over the last two samples.
        self.samples
            .push(sample::member_sample(member, registry, at));
        let cfg = DiagnosisConfig {
            quantile: 0.95,
            ..DiagnosisConfig::default()
        };
        let verdict = match self.samples.as_slice() {
            [.., a, b] => Some(diagnose(a, b, &cfg)),
            _ => None,
        };
        // The exporter's p95 since the member started.
        let mut page = crate::model::exposition::Exposition::new();
        exporter::render(&self.clusters, &Telemetry::new(), &mut page);
        let exported = page.encode();
        let exported = Scrape::parse(exported.lines().map(|l| Ok(l.to_string())))
            .expect("exporter text parses");
        let exporter_p95 = exported
            .samples
            .iter()
            .find(|s| s.metric == "etcd_disk_wal_fsync_duration_p95_milliseconds")
            .and_then(|s| match s.value {
                prometheus_parse::Value::Gauge(v) => Some(v),
                _ => None,
            });
        // The kernel buckets re-exported on the collector's /metrics, read as Prometheus'
        // histogram_quantile would.
        let mut page = crate::model::exposition::Exposition::new();
        ingest::metrics::render(&self.clusters, &self.pipeline, &mut page);
        let reexported = page.encode();
        let reexported = Scrape::parse(reexported.lines().map(|l| Ok(l.to_string())))
            .expect("pipeline text parses");
        let wal_buckets: CumulativeBuckets =
            scrape::merged_buckets(&reexported, "etcdmon_fsync_duration_seconds", |l| {
                l.get("file") == Some("wal") && l.get("op") == Some("fdatasync")
            });
        Reports {
            history_server_ms: history.server_ms,
            history_kernel_ms: history.kernel_ms,
            alert_server_ms: self.signal_ms(Signal::WalFsyncP99Seconds, &state, at),
            alert_kernel_ms: self.signal_ms(Signal::KernelWalFsyncP99Seconds, &state, at),
            diagnosis_server_ms: verdict
                .as_ref()
                .and_then(|v| v.evidence.etcd_wal_fsync_p99_ms),
            diagnosis_kernel_ms: verdict
                .as_ref()
                .and_then(|v| v.evidence.syscall_fdatasync_p99_ms),
            diagnosis_server_p95_ms: verdict
                .as_ref()
                .and_then(|v| v.evidence.etcd_wal_fsync_at_quantile_ms),
            kernel_view_ms: registry
                .kernel_view(member)
                .and_then(|v| v.wal_fsync)
                .map(|l| l.p99_ms),
            exporter_server_p95_ms: exporter_p95,
            reexported_kernel_ms: wal_buckets.histogram().quantile_ms(0.99),
        }
    }
}

#[test]
fn every_consumer_reports_the_same_p99_for_the_same_window() {
    let mut m = Member::new();
    // t0: 1000 fast syncs, etcd ≤ 1 ms, kernel in [2^19, 2^20) ns.
    let r0 = m.observe(
        T0,
        &etcd_reading([1000; 8], 0.5),
        "boot-1",
        agent_status(&[(19, 1000)], 700_000),
    );
    assert_eq!(r0.history_server_ms, None, "no window yet");
    assert_eq!(r0.alert_server_ms, None, "no window yet");

    // t1: 100 slow syncs more: etcd in (8, 16] ms, kernel in [2^23, 2^24) ns.
    let r1 = m.observe(
        T0 + STEP,
        &etcd_reading([1000, 1000, 1000, 1000, 1100, 1100, 1100, 1100], 1.7),
        "boot-1",
        agent_status(&[(19, 1000), (23, 100)], 1_800_000),
    );
    // Rank 99 of the window's 100, interpolated inside the bucket / slot.
    let server_w1 = (0.008 + 0.008 * 0.99) * 1e3;
    let kernel_w1 = (1u64 << 23) as f64 * 1.99 / 1e6;
    for (what, got) in [
        ("history", r1.history_server_ms),
        ("alert", r1.alert_server_ms),
        ("diagnosis", r1.diagnosis_server_ms),
    ] {
        close(&format!("etcd p99 W1, {what}"), got, server_w1);
    }
    for (what, got) in [
        ("history", r1.history_kernel_ms),
        ("alert", r1.alert_kernel_ms),
        ("diagnosis", r1.diagnosis_kernel_ms),
    ] {
        close(&format!("kernel p99 W1, {what}"), got, kernel_w1);
    }
    // The cumulative views (since the agent started) hold all 1100 calls: rank 1089 is the
    // 89th of the 100 slow ones — another window, the same rule, on the page and in PromQL.
    let kernel_since_start = (1u64 << 23) as f64 * 1.89 / 1e6;
    for (what, got) in [
        ("kernel view", r1.kernel_view_ms),
        ("re-exported buckets", r1.reexported_kernel_ms),
    ] {
        close(
            &format!("kernel p99 since start, {what}"),
            got,
            kernel_since_start,
        );
    }

    // t2: etcd and the agent restarted; since then 50 syncs in (2, 4] ms and 5 in (32, 64] ms
    // (kernel: [2^21, 2^22) and [2^25, 2^26) ns). Every counter went down.
    let r2 = m.observe(
        T0 + 2 * STEP,
        &etcd_reading([0, 0, 50, 50, 50, 50, 55, 55], 0.4),
        "boot-2",
        agent_status(&[(21, 50), (25, 5)], 4_000_000),
    );
    // The reset rule: the window is what the new processes counted, so windowed consumers
    // (history, alert, diagnosis) and cumulative ones (kernel view, exporter) agree.
    let server_w2 = (0.032 + 0.032 * 0.89) * 1e3; // rank 54.45: 4.45th of 5 in (32, 64] ms
    let server_w2_p95 = (0.032 + 0.032 * 0.45) * 1e3; // rank 52.25
    let kernel_w2 = (1u64 << 25) as f64 * 1.89 / 1e6;
    for (what, got) in [
        ("history", r2.history_server_ms),
        ("alert", r2.alert_server_ms),
        ("diagnosis", r2.diagnosis_server_ms),
    ] {
        close(&format!("etcd p99 W2, {what}"), got, server_w2);
    }
    for (what, got) in [
        ("diagnosis at 0.95", r2.diagnosis_server_p95_ms),
        ("exporter", r2.exporter_server_p95_ms),
    ] {
        close(&format!("etcd p95 W2, {what}"), got, server_w2_p95);
    }
    for (what, got) in [
        ("history", r2.history_kernel_ms),
        ("alert", r2.alert_kernel_ms),
        ("diagnosis", r2.diagnosis_kernel_ms),
        ("kernel view", r2.kernel_view_ms),
        ("re-exported buckets", r2.reexported_kernel_ms),
    ] {
        close(&format!("kernel p99 W2, {what}"), got, kernel_w2);
    }

    // The server/kernel ratio alert divides the same two numbers.
    let state = m.clusters[0].snapshot();
    let ratio = m.signal_ms(Signal::WalFsyncServerKernelRatio, &state, T0 + 2 * STEP);
    close("ratio", ratio.map(|r| r / 1e3), server_w2 / kernel_w2);
}
