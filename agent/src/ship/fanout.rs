//! Shipping to every collector: each `--collector` URL (a DNS name may stand for several
//! replicas, e.g. a Kubernetes headless Service) becomes one or more targets, each with its own
//! bounded drop-oldest queue and its own gRPC stream with backoff (`client::run`). The batcher
//! fills one source queue; the fan-out task copies every batch into each target's queue, which
//! never blocks, so a slow or dead collector holds up neither the others nor the tracer.
//!
//! Names are re-resolved every [`RESOLVE_INTERVAL`]; targets whose address disappeared are
//! stopped and their series removed. At most [`MAX_TARGETS`] run at once; addresses beyond
//! that are refused and counted.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use etcd_monitor_runtime::sync::lock;

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::task::JoinHandle;

use super::{
    BatchQueue,
    client::{self, ShipperConfig, ShipperMetrics},
};

/// How many collector targets run at once (bounds the `target` label set).
pub const MAX_TARGETS: usize = 8;
/// How often DNS names in `--collector` are resolved again.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(30);

/// A `--collector` value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// Not an http(s) URL with a host.
    #[error("--collector={0:?}: must be http://HOST:PORT or https://HOST:PORT")]
    Url(String),
    /// No value at all.
    #[error("--collector: empty value")]
    Empty,
    /// More URLs than targets allowed.
    #[error("--collector: {0} URLs given, at most {MAX_TARGETS} allowed")]
    TooMany(usize),
}

/// One `--collector` URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorUrl {
    /// `http` or `https`.
    pub scheme: String,
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port (the scheme's default when the URL has none).
    pub port: u16,
}

impl CollectorUrl {
    /// Parses `http(s)://host[:port][/]`.
    pub fn parse(value: &str) -> Result<Self, TargetError> {
        let bad = || TargetError::Url(value.to_string());
        let (scheme, rest) = value.split_once("://").ok_or_else(bad)?;
        if scheme != "http" && scheme != "https" {
            return Err(bad());
        }
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains(['/', '@', ' ']) {
            return Err(bad());
        }
        let uri: tonic::codegen::http::Uri = value.parse().map_err(|_| bad())?;
        let host = uri.host().ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        Ok(Self {
            scheme: scheme.to_string(),
            host: host.to_string(),
            port,
        })
    }

    /// The URL of one address of this name.
    fn url_for(&self, ip: IpAddr) -> String {
        match ip {
            IpAddr::V4(v4) => format!("{}://{v4}:{}", self.scheme, self.port),
            IpAddr::V6(v6) => format!("{}://[{v6}]:{}", self.scheme, self.port),
        }
    }
}

/// Parses every `--collector` value (each may hold comma-separated URLs; clap already split
/// them), refusing more than [`MAX_TARGETS`].
pub fn parse_targets(values: &[String]) -> Result<Vec<CollectorUrl>, TargetError> {
    let values: Vec<&str> = values
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        return Err(TargetError::Empty);
    }
    if values.len() > MAX_TARGETS {
        return Err(TargetError::TooMany(values.len()));
    }
    values.into_iter().map(CollectorUrl::parse).collect()
}

/// Keeps the addresses of one family: IPv4 when there is any, so a dual-stack name (and
/// `localhost`) does not make two targets of one collector. Sorted and deduplicated.
pub fn pick_addresses(mut ips: Vec<IpAddr>) -> Vec<IpAddr> {
    if ips.iter().any(IpAddr::is_ipv4) {
        ips.retain(IpAddr::is_ipv4);
    }
    ips.sort();
    ips.dedup();
    ips
}

/// Per-target series, labelled `target` (at most [`MAX_TARGETS`] values at once).
#[derive(Clone)]
pub struct FanoutMetrics {
    connected: IntGaugeVec,
    sent: IntCounterVec,
    reconnects: IntCounterVec,
    dropped: IntCounterVec,
    queue_bytes: IntGaugeVec,
    refused: IntCounter,
    resolve_failures: IntCounter,
    no_target: IntCounter,
    /// Aggregate counters the shipper also feeds (`etcdmon_agent_batches_sent_total`, ...).
    pub totals: ShipperMetrics,
}

impl FanoutMetrics {
    /// Registers the per-target series in `registry`; `totals` are the agent's aggregate ones.
    pub fn new(registry: &Registry, totals: ShipperMetrics) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), &["target"])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGaugeVec, prometheus::Error> {
            let g = IntGaugeVec::new(Opts::new(name, help), &["target"])?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let refused = IntCounter::new(
            "etcdmon_agent_collector_targets_refused_total",
            "Collector addresses not shipped to because MAX_TARGETS (8) were already running, counted per resolution.",
        )?;
        registry.register(Box::new(refused.clone()))?;
        let resolve_failures = IntCounter::new(
            "etcdmon_agent_collector_resolve_failures_total",
            "DNS resolutions of a --collector name that failed (its known targets are kept).",
        )?;
        registry.register(Box::new(resolve_failures.clone()))?;
        let no_target = IntCounter::new(
            "etcdmon_agent_collector_no_target_dropped_events_total",
            "Events dropped because no collector address was resolved at all (every lookup failing).",
        )?;
        registry.register(Box::new(no_target.clone()))?;
        Ok(Self {
            connected: gauge(
                "etcdmon_agent_collector_target_connected",
                "1 while the stream to this collector address is open.",
            )?,
            sent: counter(
                "etcdmon_agent_collector_target_batches_sent_total",
                "Batches handed to this collector address's stream.",
            )?,
            reconnects: counter(
                "etcdmon_agent_collector_target_reconnects_total",
                "Connection retries to this collector address.",
            )?,
            dropped: counter(
                "etcdmon_agent_collector_target_dropped_events_total",
                "Events dropped (oldest first) from this collector address's full queue.",
            )?,
            queue_bytes: gauge(
                "etcdmon_agent_collector_target_queue_bytes",
                "Bytes waiting in this collector address's queue.",
            )?,
            refused,
            resolve_failures,
            no_target,
            totals,
        })
    }

    fn remove(&self, label: &str) {
        let _ = self.connected.remove_label_values(&[label]);
        let _ = self.sent.remove_label_values(&[label]);
        let _ = self.reconnects.remove_label_values(&[label]);
        let _ = self.dropped.remove_label_values(&[label]);
        let _ = self.queue_bytes.remove_label_values(&[label]);
    }
}

/// One collector target's state, for `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TargetView {
    /// The address shipped to (`host:port`), the `target` label of its series.
    pub target: String,
    /// Whether its stream is open.
    pub connected: bool,
    /// Bytes waiting in its queue.
    pub queue_bytes: u64,
    /// Events dropped from its full queue since start.
    pub dropped_events: u64,
}

/// One running target.
struct Running {
    queue: Arc<BatchQueue>,
    dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

/// The set of running targets and what they share.
pub struct FanOut {
    targets: Mutex<BTreeMap<String, Running>>,
    metrics: FanoutMetrics,
    base: ShipperConfig,
    queue_bytes: usize,
}

impl FanOut {
    /// No targets yet; `base` carries the TLS and token settings every target shares.
    pub fn new(base: ShipperConfig, queue_bytes: usize, metrics: FanoutMetrics) -> Arc<Self> {
        Arc::new(Self {
            targets: Mutex::new(BTreeMap::new()),
            metrics,
            base,
            queue_bytes,
        })
    }

    /// The running targets (a poisoned lock is recovered: the map stays consistent).
    fn targets(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        lock(&self.targets)
    }

    /// Labels of the running targets.
    pub fn labels(&self) -> Vec<String> {
        self.targets().keys().cloned().collect()
    }

    /// Each running target as `/healthz` shows it.
    pub fn views(&self) -> Vec<TargetView> {
        self.targets()
            .iter()
            .map(|(label, t)| TargetView {
                target: label.clone(),
                connected: self.metrics.connected.with_label_values(&[label]).get() == 1,
                queue_bytes: t.queue.bytes() as u64,
                dropped_events: t.dropped.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Makes the running set equal `wanted` (label → (url, TLS server name)), capped at
    /// [`MAX_TARGETS`]; the surplus is counted as refused.
    fn reconcile(&self, wanted: BTreeMap<String, (String, Option<String>)>) {
        let mut targets = self.targets();
        let gone: Vec<String> = targets
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for label in gone {
            if let Some(old) = targets.remove(&label) {
                old.stop.store(true, Ordering::Relaxed);
                old.task.abort();
                self.metrics.remove(&label);
                tracing::info!(target_addr = %label, "Collector address gone; stopped shipping to it.");
            }
        }
        for (label, (url, domain)) in wanted {
            if targets.contains_key(&label) {
                continue;
            }
            if targets.len() >= MAX_TARGETS {
                self.metrics.refused.inc();
                tracing::warn!(target_addr = %label, max = MAX_TARGETS, "Too many collector addresses; refused one.");
                continue;
            }
            targets.insert(label.clone(), self.start(&label, url, domain));
        }
    }

    fn start(&self, label: &str, url: String, domain: Option<String>) -> Running {
        let dropped = Arc::new(AtomicU64::new(0));
        let queue = Arc::new(BatchQueue::new(self.queue_bytes, dropped.clone()));
        let stop = Arc::new(AtomicBool::new(false));
        let config = ShipperConfig {
            url,
            domain: self.base.domain.clone().or(domain),
            ..self.base.clone()
        };
        let metrics = ShipperMetrics {
            batches_sent: self.metrics.sent.with_label_values(&[label]),
            reconnects: self.metrics.reconnects.with_label_values(&[label]),
            connected: self.metrics.connected.with_label_values(&[label]),
            totals: Some(Box::new(self.metrics.totals.clone())),
        };
        self.metrics.dropped.with_label_values(&[label]);
        let (q, s, l) = (queue.clone(), stop.clone(), label.to_string());
        let task = tokio::spawn(async move {
            if let Err(err) = client::run(config, q, metrics, s).await {
                tracing::error!(error = %err, target_addr = %l, "Shipping to this collector is off.");
            }
        });
        tracing::info!(target_addr = %label, "Shipping events to this collector address.");
        Running {
            queue,
            dropped,
            stop,
            task,
        }
    }

    /// Hands `batch` to every target's queue (never blocks; the last target takes it, the
    /// others a copy) and updates the per-target drop and queue series.
    fn push(&self, mut batch: etcd_monitor_proto::v1::EventBatch) {
        let targets = self.targets();
        if targets.is_empty() {
            // Nowhere to ship: the batch is lost, and counted.
            self.metrics.no_target.inc_by(batch.events.len() as u64);
            return;
        }
        let mut rest = targets.iter().peekable();
        while let Some((label, t)) = rest.next() {
            let copy = if rest.peek().is_some() {
                batch.clone()
            } else {
                std::mem::take(&mut batch)
            };
            t.queue.push(copy);
            let dropped = t.dropped.load(Ordering::Relaxed);
            let counter = self.metrics.dropped.with_label_values(&[label]);
            if dropped > counter.get() {
                counter.inc_by(dropped - counter.get());
            }
            self.metrics
                .queue_bytes
                .with_label_values(&[label])
                .set(t.queue.bytes() as i64);
        }
    }

    /// Stops every target.
    pub fn stop(&self) {
        for (_, t) in std::mem::take(&mut *self.targets()) {
            t.stop.store(true, Ordering::Relaxed);
            t.task.abort();
        }
    }
}

/// Resolves every URL into target label → (url, TLS server name). A name that fails to
/// resolve keeps the targets it had (`previous`).
async fn resolve_all(
    urls: &[CollectorUrl],
    previous: &[String],
    metrics: &FanoutMetrics,
) -> BTreeMap<String, (String, Option<String>)> {
    let mut wanted = BTreeMap::new();
    for url in urls {
        if let Ok(ip) = url.host.parse::<IpAddr>() {
            let target = url.url_for(ip);
            wanted.insert(label_of(&target), (target, None));
            continue;
        }
        match tokio::net::lookup_host((url.host.as_str(), url.port)).await {
            Ok(addrs) => {
                let ips = pick_addresses(addrs.map(|a| a.ip()).collect());
                for ip in ips {
                    let target = url.url_for(ip);
                    wanted.insert(label_of(&target), (target, Some(url.host.clone())));
                }
            }
            Err(err) => {
                metrics.resolve_failures.inc();
                tracing::warn!(error = %err, host = %url.host, "Cannot resolve the collector name; keeping its known addresses.");
                let suffix = format!(":{}", url.port);
                for label in previous.iter().filter(|l| l.ends_with(&suffix)) {
                    wanted.insert(
                        label.clone(),
                        (format!("{}://{label}", url.scheme), Some(url.host.clone())),
                    );
                }
            }
        }
    }
    wanted
}

/// `scheme://addr:port` → `addr:port`, the `target` label.
fn label_of(url: &str) -> String {
    url.split_once("://")
        .map_or(url, |(_, rest)| rest)
        .to_string()
}

/// Starts the resolver (every [`RESOLVE_INTERVAL`]) and the fan-out from `source` to the
/// targets; returns their tasks.
pub fn spawn(
    fanout: Arc<FanOut>,
    urls: Vec<CollectorUrl>,
    source: Arc<BatchQueue>,
) -> Vec<JoinHandle<()>> {
    // The copier waits for the first resolution, so early batches reach the first targets.
    let (resolved, first) = tokio::sync::oneshot::channel::<()>();
    let resolver = tokio::spawn({
        let fanout = fanout.clone();
        async move {
            let mut resolved = Some(resolved);
            let mut tick = tokio::time::interval(RESOLVE_INTERVAL);
            loop {
                tick.tick().await;
                let previous = fanout.labels();
                let wanted = resolve_all(&urls, &previous, &fanout.metrics).await;
                fanout.reconcile(wanted);
                if let Some(tx) = resolved.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    let copier = tokio::spawn(async move {
        let _ = first.await;
        loop {
            let batch = source.pop().await;
            fanout.push(batch);
        }
    });
    vec![resolver, copier]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_urls_with_default_ports_and_ipv6() {
        let urls = parse_targets(&strings(&[
            "http://collector:9464",
            "https://c.example",
            "http://[::1]:1/",
        ]))
        .expect("valid");
        assert_eq!(urls[0].host, "collector");
        assert_eq!(urls[0].port, 9464);
        assert_eq!(urls[1].port, 443);
        assert_eq!(urls[2].host, "::1");
        assert_eq!(
            urls[2].url_for("::1".parse().expect("ip")),
            "http://[::1]:1"
        );
    }

    #[test]
    fn refuses_bad_urls_and_too_many() {
        for bad in [
            "grpc://x:1",
            "http://",
            "collector:9464",
            "http://a b:1",
            "http://h:1/path",
        ] {
            let err = parse_targets(&strings(&[bad])).expect_err(bad);
            assert!(err.to_string().contains("--collector"), "{err}");
        }
        assert_eq!(parse_targets(&[]), Err(TargetError::Empty));
        let many: Vec<String> = (0..=MAX_TARGETS)
            .map(|i| format!("http://h{i}:1"))
            .collect();
        assert_eq!(
            parse_targets(&many),
            Err(TargetError::TooMany(MAX_TARGETS + 1))
        );
    }

    #[test]
    fn prefers_one_family_and_dedups() {
        let ips: Vec<IpAddr> = ["::1", "127.0.0.2", "127.0.0.1", "127.0.0.2"]
            .iter()
            .map(|s| s.parse().expect("ip"))
            .collect();
        let picked = pick_addresses(ips);
        assert_eq!(picked.len(), 2);
        assert!(picked.iter().all(IpAddr::is_ipv4));
        let v6: Vec<IpAddr> = vec!["::2".parse().expect("ip"), "::1".parse().expect("ip")];
        assert_eq!(pick_addresses(v6).len(), 2);
    }

    fn fanout() -> Arc<FanOut> {
        let registry = Registry::new();
        let totals = ShipperMetrics {
            batches_sent: IntCounter::new("a", "a").expect("metric"),
            reconnects: IntCounter::new("b", "b").expect("metric"),
            connected: prometheus::IntGauge::new("c", "c").expect("metric"),
            totals: None,
        };
        let metrics = FanoutMetrics::new(&registry, totals).expect("metrics");
        let base = ShipperConfig {
            url: String::new(),
            ca_pem: None,
            identity: None,
            domain: None,
            token: None,
        };
        FanOut::new(base, 1 << 20, metrics)
    }

    #[tokio::test]
    async fn caps_targets_counts_refusals_and_removes_gone_ones() {
        let f = fanout();
        let wanted: BTreeMap<_, _> = (0..MAX_TARGETS + 2)
            .map(|i| {
                let label = format!("127.0.0.{}:1", i + 1);
                (label.clone(), (format!("http://{label}"), None))
            })
            .collect();
        f.reconcile(wanted);
        assert_eq!(f.labels().len(), MAX_TARGETS);
        assert_eq!(f.metrics.refused.get(), 2);
        // Every target gets its own copy; a full queue drops only its own oldest.
        f.push(etcd_monitor_proto::v1::EventBatch::default());
        for t in f.targets.lock().expect("lock").values() {
            assert_eq!(t.queue.len(), 1);
        }
        let one: BTreeMap<_, _> = [(
            "127.0.0.1:1".to_string(),
            ("http://127.0.0.1:1".to_string(), None),
        )]
        .into();
        f.reconcile(one);
        assert_eq!(f.labels(), vec!["127.0.0.1:1".to_string()]);
        f.stop();
        assert!(f.labels().is_empty());
    }
}
