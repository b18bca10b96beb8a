//! Wiring: pick the mode, start the tracker, the reader and the HTTP server, stop on signal.

use std::{
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use etcd_monitor_runtime::sync::lock;

use anyhow::Context;
use etcd_monitor_agent::{
    config::{Config, ModeRequest},
    discovery::Matcher,
    http::{HttpState, ModeStatus, router},
    kernel::Kernel,
    metrics::AgentMetrics,
    mode::AgentMode,
    procfs::ProcFs,
    resources::{ResourceSampler, SAMPLE_INTERVAL, SharedResources, Target},
    ship::{
        BatchQueue, Batcher,
        batcher::new_boot_id,
        client::{ShipperConfig, ShipperMetrics},
        fanout::{self, FanOut, FanoutMetrics, parse_targets},
    },
    tracker::Tracker,
};

/// The kernel side when it loaded.
struct KernelParts {
    kernel: Box<dyn Kernel>,
    #[cfg(target_os = "linux")]
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    #[cfg(target_os = "linux")]
    programs: etcd_monitor_agent::ebpf::Programs,
}

/// Tries to bring eBPF up as `config` asks; returns the parts and the status to report.
fn bring_up_kernel(config: &Config) -> anyhow::Result<(Option<KernelParts>, ModeStatus)> {
    let client_only = |reason: String| ModeStatus {
        mode: AgentMode::ClientOnly,
        reason: Some(reason),
        skipped_probes: vec![],
        probe_groups: vec![],
    };
    if config.mode == ModeRequest::ClientOnly {
        return Ok((
            None,
            client_only("requested with --mode=client-only".into()),
        ));
    }
    #[cfg(not(target_os = "linux"))]
    {
        let reason = format!("eBPF needs Linux; this is {}", std::env::consts::OS);
        if config.mode == ModeRequest::Ebpf {
            anyhow::bail!("--mode=ebpf: {reason}");
        }
        Ok((None, client_only(reason)))
    }
    #[cfg(target_os = "linux")]
    {
        use etcd_monitor_agent::ebpf::{self, LoadOptions, Loaded};
        let options = LoadOptions {
            ringbuf_bytes: config.ringbuf_bytes,
            min_duration_ns: u64::try_from(config.min_duration.as_nanos()).unwrap_or(u64::MAX),
            sync_min_duration_ns: u64::try_from(config.sync_min_duration.as_nanos())
                .unwrap_or(u64::MAX),
            // Exec events only trigger a rescan early, so `etcd` is right even with --match.
            exec_comm: "etcd".into(),
            groups: config.probes.clone(),
            net_offsets: [etcd_monitor_agent_common::net::OFF_MISSING;
                etcd_monitor_agent_common::net::OFF_LEN as usize],
            diag_offsets: [etcd_monitor_agent_common::net::OFF_MISSING;
                etcd_monitor_agent_common::diag::DOFF_LEN as usize],
        };
        match ebpf::load(&options) {
            Ok(Loaded {
                programs,
                kernel,
                ring,
                skipped,
            }) => {
                let skipped: Vec<String> = skipped
                    .iter()
                    .map(|s| format!("{}: {}", s.probe.program, s.reason))
                    .collect();
                let mode = if skipped.is_empty() {
                    AgentMode::Ebpf
                } else {
                    AgentMode::EbpfPartial
                };
                let reason = (!skipped.is_empty())
                    .then(|| "some optional probes did not attach".to_string());
                Ok((
                    Some(KernelParts {
                        kernel: Box::new(kernel),
                        ring,
                        programs,
                    }),
                    ModeStatus {
                        mode,
                        reason,
                        skipped_probes: skipped,
                        probe_groups: config.probes.clone(),
                    },
                ))
            }
            Err(err) => {
                let reason = explain_load_error(&err);
                if config.mode == ModeRequest::Ebpf {
                    anyhow::bail!("--mode=ebpf: {reason}");
                }
                Ok((None, client_only(reason)))
            }
        }
    }
}

/// Turns a load error into a sentence an operator can act on.
#[cfg(target_os = "linux")]
fn explain_load_error(err: &etcd_monitor_agent::ebpf::LoadError) -> String {
    let text = format!("{err:#}");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if text.contains("Operation not permitted") || text.contains("EPERM") || !root {
        format!(
            "eBPF needs root or CAP_BPF + CAP_PERFMON (running as uid {}): {text}",
            unsafe { libc::geteuid() }
        )
    } else if text.contains("BTF") {
        format!("the kernel's BTF is missing or unusable: {text}")
    } else {
        text
    }
}

/// Runs the agent until a shutdown signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (kernel, status) = bring_up_kernel(&config)?;
    log_mode(&status);
    let (core, kernel_io) = build_core(&config, kernel, status)?;
    let shipping = if config.collector.is_empty() {
        tracing::info!("No --collector: events stay local; /metrics still serves everything.");
        None
    } else {
        Some(start_shipping(&config, &core)?)
    };
    // The reader and the programs live until `run` returns.
    #[cfg(target_os = "linux")]
    let _kernel_side = start_reader(&core, kernel_io, shipping.as_ref())?;
    #[cfg(not(target_os = "linux"))]
    let () = kernel_io;
    let background = [
        tokio::spawn(rescan_loop(
            core.tracker.clone(),
            core.metrics.clone(),
            core.rescan.clone(),
            config.rescan_interval,
        )),
        tokio::spawn(resource_loop(
            core.tracker.clone(),
            core.resources.clone(),
            ResourceSampler::new(core.proc.clone()),
        )),
    ];
    serve(&config, &core, shipping.as_ref().map(|s| s.fanout.clone())).await?;
    for task in background {
        task.abort();
    }
    if let Some(shipping) = shipping {
        shipping.fanout.stop();
        for task in shipping.tasks {
            task.abort();
        }
    }
    tracing::info!("Stopped.");
    Ok(())
}

/// Logs the mode the agent runs in.
fn log_mode(status: &ModeStatus) {
    match &status.reason {
        None => tracing::info!(mode = status.mode.label(), "eBPF is on."),
        Some(reason) if status.mode == AgentMode::ClientOnly => {
            tracing::warn!(mode = status.mode.label(), %reason, "eBPF is off; running client-only.")
        }
        Some(reason) => {
            tracing::warn!(mode = status.mode.label(), %reason, skipped = ?status.skipped_probes, "eBPF is on with gaps.")
        }
    }
}

/// What every part of the agent shares.
struct Core {
    proc: ProcFs,
    tracker: Arc<Mutex<Tracker>>,
    metrics: Arc<AgentMetrics>,
    resources: SharedResources,
    status: Arc<Mutex<ModeStatus>>,
    rescan: Arc<tokio::sync::Notify>,
    node: String,
}

/// The ring buffer and programs, when eBPF loaded.
#[cfg(target_os = "linux")]
type KernelIo = Option<(
    aya::maps::RingBuf<aya::maps::MapData>,
    etcd_monitor_agent::ebpf::Programs,
)>;
#[cfg(not(target_os = "linux"))]
type KernelIo = ();

/// Builds the tracker and the metrics over the kernel side.
fn build_core(
    config: &Config,
    kernel: Option<KernelParts>,
    status: ModeStatus,
) -> anyhow::Result<(Core, KernelIo)> {
    let pattern = config
        .match_pattern
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .context("--match")?;
    let matcher = Matcher::new(pattern);
    let proc = ProcFs::new(&config.proc_root);
    #[cfg(target_os = "linux")]
    let (kernel_box, kernel_io) = match kernel {
        Some(KernelParts {
            kernel,
            ring,
            programs,
        }) => (Some(kernel), Some((ring, programs))),
        None => (None, None),
    };
    #[cfg(not(target_os = "linux"))]
    let (kernel_box, kernel_io) = (kernel.map(|k| k.kernel), ());
    let tracker = Arc::new(Mutex::new(Tracker::new(proc.clone(), matcher, kernel_box)));
    let metrics = Arc::new(AgentMetrics::new(tracker.clone()).context("registering metrics")?);
    let resources = SharedResources::default();
    metrics.register_resources(resources.clone());
    metrics.set_mode(status.mode);
    for skipped in &status.skipped_probes {
        let program = skipped.split(':').next().unwrap_or(skipped);
        metrics.skipped_probes.with_label_values(&[program]).set(1);
    }
    let core = Core {
        proc,
        tracker,
        metrics,
        resources,
        status: Arc::new(Mutex::new(status)),
        rescan: Arc::new(tokio::sync::Notify::new()),
        node: config.node_name(),
    };
    Ok((core, kernel_io))
}

/// Starts the ring-buffer reader, forwarding events to the batcher when shipping.
#[cfg(target_os = "linux")]
fn start_reader(
    core: &Core,
    kernel_io: KernelIo,
    shipping: Option<&Shipping>,
) -> anyhow::Result<
    Option<(
        etcd_monitor_agent::ebpf::ReaderHandle,
        etcd_monitor_agent::ebpf::Programs,
    )>,
> {
    let Some((ring, programs)) = kernel_io else {
        return Ok(None);
    };
    core.metrics.register_probe_runs(programs.runs());
    let sink: Box<dyn FnMut(&etcd_monitor_agent::decode::Event) + Send> = match shipping {
        Some(shipping) => {
            let mut forwarder = etcd_monitor_agent::ship::Forwarder::new(
                shipping.batcher.clone(),
                core.tracker.clone(),
                core.node.clone(),
            );
            Box::new(move |event| forwarder.forward(event))
        }
        None => Box::new(|_| {}),
    };
    let reader = etcd_monitor_agent::ebpf::spawn_reader(
        ring,
        etcd_monitor_agent::ebpf::ReaderContext {
            tracker: core.tracker.clone(),
            metrics: core.metrics.clone(),
            rescan: core.rescan.clone(),
            sink,
        },
    )
    .context("starting the ring-buffer reader")?;
    Ok(Some((reader, programs)))
}

/// Serves /metrics and /healthz until a shutdown signal.
async fn serve(config: &Config, core: &Core, fanout: Option<Arc<FanOut>>) -> anyhow::Result<()> {
    let state = HttpState {
        metrics: core.metrics.clone(),
        tracker: core.tracker.clone(),
        status: core.status.clone(),
        node: core.node.clone(),
        fanout,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("--listen={}: cannot bind", config.listen))?;
    tracing::info!(listen = %config.listen, "Serving /metrics and /healthz.");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(etcd_monitor_runtime::shutdown_signal())
        .await
        .context("HTTP server failed")
}

/// The running shipping side.
struct Shipping {
    #[cfg_attr(
        not(target_os = "linux"),
        expect(
            dead_code,
            reason = "only the Linux ring-buffer reader feeds the batcher"
        )
    )]
    batcher: Arc<Mutex<Batcher>>,
    fanout: Arc<FanOut>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn read_file(flag: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{flag}={}", path.display()))
}

/// TLS and token settings shared by every collector target (the URL is set per target).
fn shipper_config(config: &Config) -> anyhow::Result<ShipperConfig> {
    let ca_pem = config
        .collector_ca_file
        .as_deref()
        .map(|p| read_file("--collector-ca-file", p))
        .transpose()?;
    let identity = match (&config.collector_cert_file, &config.collector_key_file) {
        (Some(cert), Some(key)) => Some((
            read_file("--collector-cert-file", cert)?,
            read_file("--collector-key-file", key)?,
        )),
        _ => None,
    };
    let token = match &config.collector_token_file {
        Some(path) => Some(
            String::from_utf8(read_file("--collector-token-file", path)?)
                .context("--collector-token-file: not UTF-8")?
                .trim()
                .to_string(),
        ),
        None => std::env::var("COLLECTOR_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };
    Ok(ShipperConfig {
        url: String::new(),
        ca_pem,
        identity,
        domain: config.collector_server_name.clone(),
        token,
    })
}

/// Starts the batch flusher, the status sender, and the fan-out to every `--collector` target.
fn start_shipping(config: &Config, core: &Core) -> anyhow::Result<Shipping> {
    let urls = parse_targets(&config.collector)?;
    let base = shipper_config(config)?;
    let queue_bytes = usize::try_from(config.queue_bytes).unwrap_or(usize::MAX);
    let queue = Arc::new(BatchQueue::new(
        queue_bytes,
        core.metrics.drops.agent_queue.clone(),
    ));
    let batcher = Arc::new(Mutex::new(Batcher::new(
        core.node.clone(),
        new_boot_id(),
        config.batch_max_events as usize,
        queue.clone(),
    )));
    let totals = ShipperMetrics {
        batches_sent: core.metrics.batches_sent.clone(),
        reconnects: core.metrics.reconnects.clone(),
        connected: core.metrics.connected.clone(),
        totals: None,
    };
    let fanout_metrics =
        FanoutMetrics::new(&core.metrics.registry, totals).context("registering metrics")?;
    let fanout = FanOut::new(base, queue_bytes, fanout_metrics);
    let mut tasks = vec![
        tokio::spawn(flush_loop(
            batcher.clone(),
            queue.clone(),
            core.metrics.clone(),
            config.batch_interval,
        )),
        tokio::spawn(status_loop(
            batcher.clone(),
            core.shared(),
            config.status_interval,
        )),
    ];
    tasks.extend(fanout::spawn(fanout.clone(), urls, queue));
    tracing::info!(collectors = ?config.collector, "Shipping events to every collector.");
    Ok(Shipping {
        batcher,
        fanout,
        tasks,
    })
}

/// Handles the status loop needs.
#[derive(Clone)]
struct StatusInputs {
    tracker: Arc<Mutex<Tracker>>,
    metrics: Arc<AgentMetrics>,
    status: Arc<Mutex<ModeStatus>>,
    resources: SharedResources,
}

impl Core {
    fn shared(&self) -> StatusInputs {
        StatusInputs {
            tracker: self.tracker.clone(),
            metrics: self.metrics.clone(),
            status: self.status.clone(),
            resources: self.resources.clone(),
        }
    }
}

/// Flushes the batcher every `every` and updates the queue gauges.
async fn flush_loop(
    batcher: Arc<Mutex<Batcher>>,
    queue: Arc<BatchQueue>,
    metrics: Arc<AgentMetrics>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let batched = {
            let mut b = lock(&batcher);
            b.flush();
            b.events_batched()
        };
        let counted = metrics.events_batched.get();
        if batched > counted {
            metrics.events_batched.inc_by(batched - counted);
        }
        metrics.queue_batches.set(queue.len() as i64);
        metrics.queue_bytes.set(queue.bytes() as i64);
    }
}

/// Sends the exact counters and identities every `every`.
async fn status_loop(batcher: Arc<Mutex<Batcher>>, inputs: StatusInputs, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let (batcher, inputs) = (batcher.clone(), inputs.clone());
        let built = tokio::task::spawn_blocking(move || {
            let mode = lock(&inputs.status).clone();
            let resources = lock(&inputs.resources).clone();
            let mut tracker = lock(&inputs.tracker);
            let queue_drops = inputs.metrics.drops.agent_queue.load(Ordering::Relaxed);
            let snapshot = etcd_monitor_agent::ship::status::snapshot(
                &mut tracker,
                &mode,
                queue_drops,
                &resources,
            );
            drop(tracker);
            lock(&batcher).send_status(snapshot);
        })
        .await;
        if built.is_err() {
            tracing::error!("Building the status snapshot failed.");
        }
    }
}

/// Samples the traced members' resources every [`SAMPLE_INTERVAL`] into `shared`.
async fn resource_loop(
    tracker: Arc<Mutex<Tracker>>,
    shared: SharedResources,
    sampler: ResourceSampler,
) {
    let sampler = Arc::new(Mutex::new(sampler));
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    loop {
        tick.tick().await;
        let (tracker, shared, sampler) = (tracker.clone(), shared.clone(), sampler.clone());
        let done = tokio::task::spawn_blocking(move || {
            // The tracker's lock is held only to copy who to sample, not during the reads.
            let targets: Vec<Target> = lock(&tracker)
                .processes()
                .iter()
                .map(|(pid, p)| Target {
                    pid: *pid,
                    start_time: p.start_time,
                    identity: p.identity.clone(),
                })
                .collect();
            let snapshot = lock(&sampler).sample(&targets);
            *lock(&shared) = snapshot;
        })
        .await;
        if let Err(err) = done {
            tracing::error!(error = %err, "Resource sampling task failed.");
        }
    }
}

/// Rescans /proc every `interval`, or at once when an exec/exit event asks.
async fn rescan_loop(
    tracker: Arc<Mutex<Tracker>>,
    metrics: Arc<AgentMetrics>,
    wake: Arc<tokio::sync::Notify>,
    interval: Duration,
) {
    loop {
        let tracker = tracker.clone();
        let metrics_in = metrics.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut tracker = lock(&tracker);
            let report = tracker.rescan();
            metrics_in.rescans.inc();
            metrics_in.tracked.set(tracker.processes().len() as i64);
            metrics_in.member_info.reset();
            for (pid, p) in tracker.processes() {
                let id = &p.identity;
                metrics_in
                    .member_info
                    .with_label_values(&[
                        id.name.as_str(),
                        pid.to_string().as_str(),
                        &id.data_dir.to_string_lossy(),
                        id.client_urls.first().map(String::as_str).unwrap_or(""),
                        id.peer_urls.first().map(String::as_str).unwrap_or(""),
                    ])
                    .set(1);
            }
            for pid in &report.added {
                if let Some(p) = tracker.processes().get(pid) {
                    tracing::info!(pid, member = %p.identity.name, data_dir = %p.identity.data_dir.display(), "Tracing etcd process.");
                }
            }
            for pid in &report.removed {
                tracing::info!(pid, "etcd process gone.");
            }
            for error in &report.errors {
                metrics_in.map_errors.inc();
                tracing::warn!(%error, "Kernel map update failed during rescan.");
            }
        })
        .await;
        if let Err(err) = done {
            tracing::error!(error = %err, "Rescan task failed.");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {
                // Let a burst of exec/exit events settle into one rescan.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
