//! Automatic rolling defragmentation (`--auto-defrag=45%,100MB` with
//! `--auto-defrag-window`), off by default. [`AutoDefrag::tick`] is the one entry point: each
//! call checks every cluster and starts, through the same [`AdminJobs`] as the REST API (so
//! the run is the CLI's rolling defrag, audited as actor `auto-defrag` and counted), a rolling
//! defragmentation of the members past the threshold — only inside the window, never while an
//! alert fires on that cluster, never while another admin operation runs there. Every check's
//! outcome is counted in `etcdmon_auto_defrag_checks_total{cluster,outcome}`. A caller that
//! must run scheduled work on one replica only gates the calls to `tick`.

use std::{sync::Arc, time::Duration};

use crate::{
    analysis::alerting::{Alerting, lifecycle::AlertState},
    model::cluster::Clusters,
    model::time::now_ms,
    ops::admin::{actions::AdminOp, jobs::AdminJobs, window::Window},
    ops::ctl::safe::{self, DefragOptions, Fragmentation},
};

/// The actor automatic runs are audited as.
pub const ACTOR: &str = "auto-defrag";
/// Default `--auto-defrag-interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

/// Validated `--auto-defrag*` flags.
#[derive(Debug, Clone, Copy)]
pub struct AutoDefragConfig {
    /// Defragment members at or past this fragmentation and size.
    pub threshold: Fragmentation,
    /// When a run may start.
    pub window: Window,
    /// How often the clusters are checked.
    pub interval: Duration,
}

/// The scheduler.
#[derive(Clone)]
pub struct AutoDefrag {
    config: AutoDefragConfig,
    clusters: Clusters,
    jobs: AdminJobs,
    alerting: Option<Alerting>,
}

impl AutoDefrag {
    /// Checks `clusters`, starting runs through `jobs`, never while `alerting` has a firing
    /// alert on the cluster.
    pub fn new(
        config: AutoDefragConfig,
        clusters: Clusters,
        jobs: AdminJobs,
        alerting: Option<Alerting>,
    ) -> Self {
        Self {
            config,
            clusters,
            jobs,
            alerting,
        }
    }

    /// Calls [`Self::tick`] every interval, forever, while `leadership` leads (under
    /// `--ha-election` only the elected collector defragments; standalone it always leads).
    pub async fn run(self, leadership: crate::sources::ha::Leadership) {
        tracing::info!(
            threshold = ?self.config.threshold,
            window = %self.config.window,
            interval = ?self.config.interval,
            "Automatic defragmentation on."
        );
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !leadership.is_leader() {
                for cluster in self.clusters.iter() {
                    self.jobs.count_auto(cluster.name(), "not_leader");
                }
                continue;
            }
            self.tick(now_ms()).await;
        }
    }

    /// One check of every cluster at `now` (Unix ms); returns the outcome per cluster.
    pub async fn tick(&self, now: u64) -> Vec<(String, &'static str)> {
        let mut outcomes = Vec::new();
        for cluster in self.clusters.iter() {
            let outcome = self.check(cluster, now).await;
            self.jobs.count_auto(cluster.name(), outcome);
            outcomes.push((cluster.name().to_string(), outcome));
        }
        outcomes
    }

    fn options(&self) -> DefragOptions {
        DefragOptions {
            if_fragmented: Some(self.config.threshold),
            ..DefragOptions::default()
        }
    }

    async fn check(
        &self,
        cluster: &Arc<crate::model::cluster::ClusterHandle>,
        now: u64,
    ) -> &'static str {
        let name = cluster.name();
        if !self.config.window.contains(now) {
            return "outside_window";
        }
        if let Some(alerting) = &self.alerting {
            let firing: Vec<String> = alerting
                .active(name)
                .into_iter()
                .filter(|a| a.state == AlertState::Firing)
                .map(|a| a.name)
                .collect();
            if !firing.is_empty() {
                tracing::info!(cluster = name, alerts = ?firing, "Automatic defragmentation held: alerts are firing.");
                return "alert_firing";
            }
        }
        if self.jobs.running(name).is_some() {
            return "busy";
        }
        let survey = match safe::survey(&cluster.config).await {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(cluster = name, %error, "Automatic defragmentation: cannot survey the cluster.");
                return "survey_failed";
            }
        };
        let options = self.options();
        if safe::plan(&survey, &options)
            .iter()
            .all(|s| s.action == "skip")
        {
            return "below_threshold";
        }
        match self
            .jobs
            .start(cluster.config.clone(), AdminOp::Defrag(options), ACTOR)
        {
            Ok(id) => {
                tracing::info!(cluster = name, %id, "Automatic defragmentation started.");
                "started"
            }
            Err(_) => "busy",
        }
    }
}
