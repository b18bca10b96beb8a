//! Wiring: opens the store, starts one health loop and one scrape loop per cluster (each its own
//! task, so one cluster's outage never stalls another), the retention task, and the HTTP server.

pub mod bench;
pub mod config;
pub mod mcp;
pub mod report;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use crate::{
    app::config::Config, model::cluster::ClusterHandle, model::cluster::Clusters,
    model::telemetry::Telemetry, model::time::now_ms, outputs::api::AppState, outputs::api::router,
    sources::etcd::client::http_client, sources::etcd::health::HealthLoop,
    sources::etcd::health::HealthSettings, sources::ingest, sources::ingest::Pipeline,
    sources::ingest::server::IngestSettings, sources::ingest::server::IngestState,
    sources::scrape::ScrapeLoop, store::Store, store::StoreError,
};

/// Why the collector could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The history store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A cluster's settings could not be turned into clients.
    #[error("cluster {cluster}: {message}")]
    Cluster {
        /// Cluster.
        cluster: String,
        /// Cause.
        message: String,
    },
    /// The alert rules or the alerting state could not be loaded.
    #[error(transparent)]
    Alerting(#[from] crate::analysis::alerting::AlertingError),
    /// The gRPC server could not start.
    #[error("{0}")]
    Grpc(String),
    /// The API address could not be bound or served.
    #[error("--api-host/--api-port {addr}: {source}")]
    Listen {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// How often retention runs: history by age and size, agent sequences of agents silent for
/// longer than the retention, silences that have ended.
const RETENTION_EVERY: Duration = Duration::from_secs(600);

/// A started collector: the address it serves on and the clusters it watches.
pub struct Running {
    /// The bound REST/metrics address.
    pub addr: SocketAddr,
    /// The bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// The clusters.
    pub clusters: Clusters,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    benchmarks: crate::ops::bench::jobs::BenchJobs,
}

impl Running {
    /// Waits until the server stops (on SIGINT/SIGTERM).
    pub async fn wait(self) -> Result<(), AppError> {
        let addr = self.addr.to_string();
        let served = self.server.await;
        // Running benchmarks stop and delete their keys before the process exits.
        self.benchmarks.shutdown(Duration::from_secs(30)).await;
        match served {
            Ok(result) => result.map_err(|source| AppError::Listen { addr, source }),
            Err(e) => Err(AppError::Listen {
                addr,
                source: std::io::Error::other(e),
            }),
        }
    }
}

/// Starts everything `config` describes.
pub async fn start(config: Config) -> Result<Running, AppError> {
    warn_deprecated(&config);
    let (store, telemetry) = open_store(&config)?;
    let clusters: Clusters = Arc::new(
        config
            .clusters
            .iter()
            .cloned()
            .map(ClusterHandle::new)
            .collect(),
    );
    let pipeline = Pipeline::bounded(
        config.ingest.subscriber_buffer,
        config.ingest.max_subscribers,
        ingest::AgentRegistry::persistent(store.clone(), config.ingest.agent_limits)?,
    );
    start_sources(&config, &clusters, &store, &telemetry, &pipeline)?;
    spawn_retention(&config, &store, &telemetry);
    let grpc_addr = start_ingest(&config, &clusters, &pipeline).await?;
    let analysis = start_analysis(&config, &clusters, &store, &pipeline)?;
    let benchmarks =
        crate::ops::bench::jobs::BenchJobs::new(config.benchmark_api.clone(), Some(store.clone()));
    if config.benchmark_api.enabled {
        tracing::info!("Benchmark API enabled (admin token required).");
    }
    tokio::spawn(crate::analysis::diagnosis::run(
        clusters.clone(),
        pipeline.clone(),
        analysis.diagnoses.clone(),
        config.diagnosis.clone(),
        store.clone(),
    ));
    let access = rest_access(&config);
    let tls_failures = access.tls_handshake_failures();
    let state = build_state(
        &config,
        StateParts {
            store,
            telemetry,
            clusters: clusters.clone(),
            pipeline,
            analysis,
            benchmarks: benchmarks.clone(),
            access,
        },
    );
    let (addr, server) = serve_rest(&config, state, tls_failures).await?;
    Ok(Running {
        addr,
        grpc_addr,
        clusters,
        server,
        benchmarks,
    })
}

/// Says at start-up which given settings no longer do anything, so nobody relies on them.
fn warn_deprecated(config: &Config) {
    let given = config.thresholds.max_db_size_mb;
    if given != crate::model::config::Thresholds::DEFAULT.max_db_size_mb {
        tracing::warn!(
            max_db_size_mb = given,
            "--max-db-size-mb is deprecated and ignored: the database is judged against etcd's own quota (--quota-backend-bytes, etcdDatabaseQuotaLowSpace) and DiskUsageHigh against the data dir's filesystem."
        );
    }
}

/// Opens the history store (a corrupt file is moved aside and a fresh store started, never a
/// crash loop) and the self-metrics registry its metrics are registered in.
fn open_store(config: &Config) -> Result<(Arc<Store>, Telemetry), AppError> {
    let store = Arc::new(Store::open_or_recover(&config.data_dir)?);
    tracing::info!(path = %store.path().display(), "History store open.");
    // A history query reaches back at most as far as history is kept.
    store.set_max_range(config.history_retention);
    let telemetry = Telemetry::new();
    if let Err(e) = store.register_metrics(&telemetry.registry) {
        tracing::error!(error = %e, "Cannot register the history store's metrics.");
    }
    Ok((store, telemetry))
}

/// Spawns one health loop and one scrape loop per cluster.
fn start_sources(
    config: &Config,
    clusters: &Clusters,
    store: &Arc<Store>,
    telemetry: &Telemetry,
    pipeline: &Pipeline,
) -> Result<(), AppError> {
    let settings = HealthSettings {
        interval: config.health_interval,
        thresholds: config.thresholds,
        probe_read: config.probe_read,
        probe_write: config.probe_write,
    };
    for cluster in clusters.iter() {
        let http = http_client(&cluster.config).map_err(|message| AppError::Cluster {
            cluster: cluster.name().to_string(),
            message,
        })?;
        tracing::info!(
            cluster = cluster.name(),
            endpoints = ?cluster.config.endpoints,
            tls = cluster.config.tls.is_some(),
            auth = cluster.config.auth.is_some(),
            "Monitoring cluster."
        );
        let health = HealthLoop::new(
            cluster.clone(),
            settings,
            telemetry.clone(),
            Some(store.clone()),
        );
        tokio::spawn(health.run());
        let scrape = ScrapeLoop::new(
            cluster.clone(),
            http,
            telemetry.clone(),
            Some(store.clone()),
        )
        .with_registry(pipeline.registry.clone());
        tokio::spawn(scrape.run(config.metrics_interval));
    }
    Ok(())
}

/// Spawns the retention task: every [`RETENTION_EVERY`], prunes history by age and size.
fn spawn_retention(config: &Config, store: &Arc<Store>, telemetry: &Telemetry) {
    let store = store.clone();
    let telemetry = telemetry.clone();
    let (max_age, max_bytes) = (config.history_retention, config.history_max_bytes);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RETENTION_EVERY);
        loop {
            tick.tick().await;
            let store = store.clone();
            let result =
                tokio::task::spawn_blocking(move || store.prune(now_ms(), max_age, max_bytes))
                    .await;
            match result {
                Ok(Ok(n)) if n > 0 => tracing::info!(rows = n, "History pruned."),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => telemetry.store_failed("prune", &e.to_string()),
                Err(e) => telemetry.store_failed("prune", &e.to_string()),
            }
        }
    });
}

/// Serves the agents' gRPC ingest and starts the watches on `--watch-prefix`; returns the
/// bound gRPC address.
async fn start_ingest(
    config: &Config,
    clusters: &Clusters,
    pipeline: &Pipeline,
) -> Result<SocketAddr, AppError> {
    let grpc_addr = resolve_listen(&config.ingest.host, config.grpc_port)
        .await
        .map_err(|e| AppError::Grpc(format!("--grpc-host {:?}: {e}", config.ingest.host)))?;
    let (grpc_addr, _grpc) = ingest::server::serve(
        grpc_addr,
        IngestSettings {
            max_batch_bytes: config.ingest.max_batch_bytes,
            ingest_token: config.ingest.ingest_token.clone(),
            subscribe_token: config.ingest.subscribe_token.clone(),
            max_concurrent_streams: config.ingest.max_concurrent_streams,
            concurrency_per_connection: config.ingest.concurrency_per_connection,
            tls_identity: config.ingest.tls_identity.clone(),
            client_ca: config.ingest.client_ca.clone(),
        },
        IngestState {
            registry: pipeline.registry.clone(),
            fanout: pipeline.fanout.clone(),
            clusters: clusters.clone(),
            counters: pipeline.counters.clone(),
        },
        etcd_monitor_runtime::shutdown_signal(),
    )
    .await
    .map_err(|e| AppError::Grpc(e.to_string()))?;
    for cluster in clusters.iter() {
        for prefix in &config.ingest.watch_prefixes {
            tracing::info!(cluster = cluster.name(), %prefix, "Watching prefix.");
            tokio::spawn(ingest::watch::run(
                cluster.clone(),
                prefix.clone(),
                config.ingest.watch_prev_kv,
                pipeline.fanout.clone(),
                pipeline.watches.clone(),
            ));
        }
    }
    Ok(grpc_addr)
}

/// The leader gate, the running alerting engine and the diagnoses it is attached to.
struct Analysis {
    leadership: crate::sources::ha::Leadership,
    alerting: crate::analysis::alerting::Alerting,
    diagnoses: Arc<crate::analysis::diagnosis::Diagnoses>,
}

/// Starts the leader gate and the alerting engine (notifying through the notifiers while it
/// leads).
fn start_analysis(
    config: &Config,
    clusters: &Clusters,
    store: &Arc<Store>,
    pipeline: &Pipeline,
) -> Result<Analysis, AppError> {
    // The one leader gate: notifications and scheduled work run only while it leads
    // (always without --ha-election).
    let leadership = match &config.ha {
        Some(ha) => crate::sources::ha::Leadership::start(ha.clone()),
        None => crate::sources::ha::Leadership::standalone(),
    };
    let alerting = crate::analysis::alerting::Alerting::new(
        crate::analysis::alerting::AlertingSettings {
            rules_path: config.rules.clone(),
            thresholds: config.thresholds,
            interval: config
                .health_interval
                .min(config.metrics_interval)
                .max(Duration::from_millis(200)),
            dedup_window: crate::analysis::alerting::lifecycle::DEDUP_WINDOW,
        },
        clusters.clone(),
        Some(pipeline.registry.clone()),
        Some(store.clone()),
        Arc::new(
            crate::outputs::notify::Notifier::start(config.notifiers.clone())
                .with_leadership(leadership.clone()),
        ),
    )?;
    alerting.attach_leadership(leadership.clone());
    alerting.share_silences(config.rest.silences.max_active);
    let diagnoses = Arc::new(crate::analysis::diagnosis::Diagnoses::default());
    alerting.attach_diagnoses(diagnoses.clone());
    alerting.spawn();
    Ok(Analysis {
        leadership,
        alerting,
        diagnoses,
    })
}

/// The REST access policy from the token files, warning about token files others can read.
fn rest_access(config: &Config) -> crate::outputs::api::access::Access {
    for path in &config.rest.insecure_token_files {
        tracing::warn!(
            path = %path.display(),
            "Token file is readable by group or others; chmod 600 it (counted in etcdmon_api_token_files_insecure)."
        );
    }
    let access = crate::outputs::api::access::Access::new(
        config.rest.tokens.clone(),
        &config.cors_origins,
        config.rest.insecure_token_files.len() as u64,
    );
    tracing::info!(
        admin_tokens = access.has_admin_tokens(),
        reads_closed = access.reads_closed(),
        tls = config.rest.tls.is_some(),
        "REST access: changes need {}.",
        if access.has_admin_tokens() {
            "an admin token"
        } else {
            "a loopback peer (no --admin-token-file)"
        }
    );
    access
}

/// What [`build_state`] assembles the REST state from.
struct StateParts {
    store: Arc<Store>,
    telemetry: Telemetry,
    clusters: Clusters,
    pipeline: Pipeline,
    analysis: Analysis,
    benchmarks: crate::ops::bench::jobs::BenchJobs,
    access: crate::outputs::api::access::Access,
}

/// Starts the admin jobs and the benchmark schedule, and assembles the REST server's state.
fn build_state(config: &Config, parts: StateParts) -> AppState {
    let StateParts {
        store,
        telemetry,
        clusters,
        pipeline,
        analysis:
            Analysis {
                leadership,
                alerting,
                diagnoses,
            },
        benchmarks,
        access,
    } = parts;
    let admin = start_admin(config, &store, &clusters, &alerting, &leadership);
    let scheduler = report::start_schedule(
        config,
        &clusters,
        &benchmarks,
        &alerting,
        &admin,
        &leadership,
    );
    AppState {
        admin,
        report: crate::outputs::report::ReportSettings {
            thresholds: config.report_thresholds,
            scheduler,
        },
        clusters,
        alerting: Some(alerting),
        benchmarks,
        store: Some(store),
        telemetry,
        thresholds: config.thresholds,
        cors_origins: config.cors_origins.clone(),
        pipeline,
        diagnoses,
        access,
        silence_limits: config.rest.silences,
        leadership,
    }
}

/// Binds `--api-host:--api-port` and serves the REST API and `/metrics` on it (HTTPS with
/// `--api-tls-cert`); returns the bound address and the server's task.
async fn serve_rest(
    config: &Config,
    state: AppState,
    tls_failures: Arc<std::sync::atomic::AtomicU64>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>), AppError> {
    let bind = format!("{}:{}", config.api_host, config.api_port);
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|source| AppError::Listen {
            addr: bind.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| AppError::Listen {
        addr: bind.clone(),
        source,
    })?;
    let service = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let server = match &config.rest.tls {
        Some(tls) => {
            let tls_config = crate::outputs::api::tls::server_config(&tls.cert_pem, &tls.key_pem)
                .map_err(|e| AppError::Listen {
                addr: bind.clone(),
                source: std::io::Error::other(e),
            })?;
            let listener =
                crate::outputs::api::tls::TlsListener::new(listener, tls_config, tls_failures)
                    .map_err(|source| AppError::Listen {
                        addr: bind.clone(),
                        source,
                    })?;
            tracing::info!(%addr, "REST API and /metrics listening (HTTPS).");
            tokio::spawn(async move {
                use axum::serve::ListenerExt;
                axum::serve(listener.tap_io(|_| {}), service)
                    .with_graceful_shutdown(etcd_monitor_runtime::shutdown_signal())
                    .await
            })
        }
        None => {
            tracing::info!(%addr, "REST API and /metrics listening.");
            tokio::spawn(async move {
                axum::serve(listener, service)
                    .with_graceful_shutdown(etcd_monitor_runtime::shutdown_signal())
                    .await
            })
        }
    };
    Ok((addr, server))
}

/// The admin jobs (audit bound, snapshot directory) and, with `--auto-defrag`, its scheduler.
fn start_admin(
    config: &Config,
    store: &Arc<Store>,
    clusters: &Clusters,
    alerting: &crate::analysis::alerting::Alerting,
    leadership: &crate::sources::ha::Leadership,
) -> crate::ops::admin::AdminJobs {
    store.set_audit_max_rows(config.admin.audit_max_records);
    let jobs = crate::ops::admin::AdminJobs::new(
        Some(store.clone()),
        config.admin.snapshot_dir(&config.data_dir),
    );
    if let Some(auto) = config.admin.auto_defrag {
        let scheduler = crate::ops::admin::auto::AutoDefrag::new(
            auto,
            clusters.clone(),
            jobs.clone(),
            Some(alerting.clone()),
        );
        tokio::spawn(scheduler.run(leadership.clone()));
    }
    jobs
}

/// The address to listen on for `host` (an IPv4 or IPv6 literal, bracketed or not, or a host
/// name resolved now: its first address) and `port`.
pub async fn resolve_listen(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((bare, port))
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other("the name resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn listen_hosts_resolve_like_rest_or_fail() {
        let v6 = resolve_listen("::1", 9464).await.expect("IPv6 literal");
        assert_eq!(v6, "[::1]:9464".parse().expect("addr"));
        let bracketed = resolve_listen("[::1]", 1).await.expect("bracketed");
        assert!(bracketed.is_ipv6());
        let name = resolve_listen("localhost", 2).await.expect("host name");
        assert!(name.ip().is_loopback(), "{name}");
        assert!(resolve_listen("no-such-host.invalid", 3).await.is_err());
    }
}
