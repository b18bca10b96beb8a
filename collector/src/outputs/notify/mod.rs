//! Notification channels: console (structured log), generic webhook (JSON, optional
//! HMAC-SHA256 signature), Slack incoming webhook, PagerDuty Events API v2, email over SMTP
//! (STARTTLS, lettre) and Prometheus Alertmanager's v2 API.
//!
//! Each channel has its own task and bounded queue ([`Notifier`]), so a slow or failing
//! channel never delays another; each send has a timeout and is retried with exponential
//! backoff; each channel counts sends, failed attempts, give-ups and drops. Secrets (webhook
//! URLs of Slack, routing keys, HMAC keys, SMTP passwords) come from the environment or files
//! and are never logged: logs name the channel, never its URL.

pub mod alertmanager;
pub mod config;
pub mod console;
pub mod email;
pub mod pagerduty;
pub mod slack;
pub mod webhook;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use etcd_monitor_runtime::Backoff;
use tokio::sync::mpsc;

pub use config::{ChannelConfig, ChannelKind, ChannelSpec, Secret};

use crate::analysis::alerting::lifecycle::Alert;

/// Notifications queued per channel before new ones are dropped (and counted).
pub const QUEUE: usize = 256;

/// A failed delivery attempt.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The request failed or timed out.
    #[error("{0}")]
    Transport(String),
    /// The receiver answered with an error status.
    #[error("HTTP {status}: {body}")]
    Status {
        /// Status code.
        status: u16,
        /// Start of the body.
        body: String,
    },
    /// The message could not be built.
    #[error("{0}")]
    Build(String),
}

/// Counters of one channel.
#[derive(Debug, Default)]
pub struct ChannelStats {
    /// Notifications delivered.
    pub sent: AtomicU64,
    /// Attempts that failed (each retry counts).
    pub attempt_failures: AtomicU64,
    /// Notifications given up after every retry failed.
    pub failed: AtomicU64,
    /// Notifications dropped because the channel's queue was full.
    pub dropped: AtomicU64,
}

/// A running channel.
struct Running {
    config: Arc<ChannelConfig>,
    queue: mpsc::Sender<Alert>,
    stats: Arc<ChannelStats>,
}

/// Every channel, each behind its own queue and task.
#[derive(Clone, Default)]
pub struct Notifier {
    channels: Arc<Vec<Running>>,
    /// Under `--ha-election`, only the leader queues notifications.
    gate: Option<crate::sources::ha::Leadership>,
    /// Notifications refused by the gate.
    not_leader: Arc<AtomicU64>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.channels.iter().map(|c| &c.config.name))
            .finish()
    }
}

impl Notifier {
    /// Starts one task per channel.
    pub fn start(channels: Vec<ChannelConfig>) -> Self {
        let running = channels
            .into_iter()
            .map(|config| {
                let config = Arc::new(config);
                let stats = Arc::new(ChannelStats::default());
                let (queue, rx) = mpsc::channel(QUEUE);
                tokio::spawn(worker(config.clone(), stats.clone(), rx));
                Running {
                    config,
                    queue,
                    stats,
                }
            })
            .collect();
        Self {
            channels: Arc::new(running),
            gate: None,
            not_leader: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues notifications only while `leadership` leads (`--ha-election`); refusals are
    /// counted as `etcdmon_ha_notifications_withheld_total{reason="not_leader"}`.
    pub fn with_leadership(mut self, leadership: crate::sources::ha::Leadership) -> Self {
        self.gate = leadership.is_enabled().then_some(leadership);
        self
    }

    /// Whether the gate lets a notification through now (always without `--ha-election`).
    fn leading(&self, alert: &Alert) -> bool {
        let Some(gate) = &self.gate else {
            return true;
        };
        if gate.is_leader() {
            return true;
        }
        self.not_leader.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(alert = %alert.name, state = alert.state.as_str(), "Notification withheld: this collector no longer leads.");
        false
    }

    /// Queues `alert` (state firing or resolved) on every channel; never waits.
    pub fn notify(&self, alert: &Alert) {
        if !self.leading(alert) {
            return;
        }
        for c in self.channels.iter() {
            if c.queue.try_send(alert.clone()).is_err() {
                c.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    channel = %c.config.name,
                    alert = %alert.name,
                    "Notification dropped: the channel's queue is full."
                );
            }
        }
    }

    /// Re-sends a firing `alert` to the channels that forget alerts not re-sent (Alertmanager
    /// resolves an alert on its own after its `resolve_timeout`, 5 minutes by default).
    pub fn refresh(&self, alert: &Alert) {
        if !self.leading(alert) {
            return;
        }
        for c in self.channels.iter() {
            if matches!(c.config.kind, ChannelKind::Alertmanager { .. })
                && c.queue.try_send(alert.clone()).is_err()
            {
                c.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The per-channel counters. Channel names come from the config file; the exposition
    /// escapes them like every other label value.
    pub fn render(&self, out: &mut crate::model::exposition::Exposition) {
        const SENT: &str = "etcdmon_alert_notifications_total";
        const SENT_HELP: &str = "Alert notifications by channel and result (sent, failed after retries, dropped on a full queue).";
        const FAILED: &str = "etcdmon_alert_notification_failures_total";
        const FAILED_HELP: &str = "Failed delivery attempts by channel (each retry counts).";
        if self.gate.is_some() {
            out.counter(
                "etcdmon_ha_notifications_withheld_total",
                crate::analysis::alerting::handover::WITHHELD_HELP,
                &[("reason", "not_leader")],
                self.not_leader.load(Ordering::Relaxed) as f64,
            );
        }
        for c in self.channels.iter() {
            let (channel, kind) = (c.config.name.as_str(), c.config.kind.type_name());
            for (result, v) in [
                ("sent", &c.stats.sent),
                ("failed", &c.stats.failed),
                ("dropped", &c.stats.dropped),
            ] {
                out.counter(
                    SENT,
                    SENT_HELP,
                    &[("channel", channel), ("type", kind), ("result", result)],
                    v.load(Ordering::Relaxed) as f64,
                );
            }
        }
        for c in self.channels.iter() {
            out.counter(
                FAILED,
                FAILED_HELP,
                &[
                    ("channel", &c.config.name),
                    ("type", c.config.kind.type_name()),
                ],
                c.stats.attempt_failures.load(Ordering::Relaxed) as f64,
            );
        }
    }
}

async fn worker(
    config: Arc<ChannelConfig>,
    stats: Arc<ChannelStats>,
    mut rx: mpsc::Receiver<Alert>,
) {
    let http = match reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(channel = %config.name, error = %e, "Channel cannot start its HTTP client.");
            return;
        }
    };
    while let Some(alert) = rx.recv().await {
        if alert.state == crate::analysis::alerting::lifecycle::AlertState::Resolved
            && !config.send_resolved
        {
            continue;
        }
        let mut backoff = Backoff::new(config.backoff, Duration::from_secs(30));
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result =
                match tokio::time::timeout(config.timeout, send(&config, &http, &alert)).await {
                    Ok(r) => r,
                    Err(_) => Err(NotifyError::Transport(format!(
                        "no answer within {:?}",
                        config.timeout
                    ))),
                };
            match result {
                Ok(()) => {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        channel = %config.name,
                        alert = %alert.name,
                        state = alert.state.as_str(),
                        attempt,
                        "Notification sent."
                    );
                    break;
                }
                Err(e) => {
                    stats.attempt_failures.fetch_add(1, Ordering::Relaxed);
                    if attempt > config.retries {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            channel = %config.name,
                            alert = %alert.name,
                            state = alert.state.as_str(),
                            attempts = attempt,
                            error = %e,
                            "Notification failed; giving up."
                        );
                        break;
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        channel = %config.name,
                        alert = %alert.name,
                        attempt,
                        error = %e,
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "Notification failed; retrying."
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

async fn send(
    config: &ChannelConfig,
    http: &reqwest::Client,
    alert: &Alert,
) -> Result<(), NotifyError> {
    match &config.kind {
        ChannelKind::Console => {
            console::log(alert);
            Ok(())
        }
        ChannelKind::Webhook { url, hmac_key } => {
            let body = webhook::payload(alert);
            post(http, url, body, |req, bytes| match hmac_key {
                Some(key) => req.header(
                    webhook::SIGNATURE_HEADER,
                    webhook::sign(key.expose(), bytes),
                ),
                None => req,
            })
            .await
        }
        ChannelKind::Slack { url } => {
            post(http, url.expose(), slack::payload(alert), |r, _| r).await
        }
        ChannelKind::PagerDuty { url, routing_key } => {
            post(
                http,
                url,
                pagerduty::payload(alert, routing_key.expose()),
                |r, _| r,
            )
            .await
        }
        ChannelKind::Alertmanager { url } => {
            let endpoint = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
            post(http, &endpoint, alertmanager::payload(alert), |r, _| r).await
        }
        ChannelKind::Email(settings) => email::send(settings, alert, config.timeout).await,
    }
}

/// POSTs `body` as JSON; `sign` may add headers computed over the exact bytes sent.
async fn post(
    http: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
    sign: impl FnOnce(reqwest::RequestBuilder, &[u8]) -> reqwest::RequestBuilder,
) -> Result<(), NotifyError> {
    let bytes = serde_json::to_vec(&body).map_err(|e| NotifyError::Build(e.to_string()))?;
    let req = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    let req = sign(req, &bytes).body(bytes);
    // The error text never includes the URL (it may be a secret, as Slack's are).
    let resp = req.send().await.map_err(|e| {
        NotifyError::Transport(crate::sources::etcd::client::error_chain(&e.without_url()))
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    Err(NotifyError::Status {
        status: status.as_u16(),
        body: text.chars().take(200).collect(),
    })
}

/// RFC 3339 time of a Unix-ms timestamp.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// One line naming the alert: `[FIRING] MemberUnavailable (critical) default/m1`.
pub fn title(alert: &Alert) -> String {
    let state = alert.state.as_str().to_ascii_uppercase();
    let mut where_ = alert.cluster.clone();
    if let Some(m) = &alert.member {
        where_.push('/');
        where_.push_str(m);
    }
    format!("[{state}] {} ({}) {where_}", alert.name, alert.severity)
}
/// The alerting engine hands its alerts to the channels through this.
impl crate::analysis::alerting::AlertSink for Notifier {
    fn notify(&self, alert: &Alert) {
        Notifier::notify(self, alert);
    }

    fn refresh(&self, alert: &Alert) {
        Notifier::refresh(self, alert);
    }

    fn render(&self, out: &mut crate::model::exposition::Exposition) {
        Notifier::render(self, out);
    }
}
