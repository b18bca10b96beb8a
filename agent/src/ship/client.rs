//! The gRPC client stream to the collector: connect, stream batches from the queue, and on any
//! failure reconnect with jittered exponential backoff. Batches lost in a broken stream show up
//! as sequence gaps at the collector.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use etcd_monitor_proto::v1::agent_ingest_client::AgentIngestClient;
use etcd_monitor_runtime::Backoff;
use prometheus::{IntCounter, IntGauge};
use tonic::{
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use super::BatchQueue;

/// Where and how to connect. `Debug` says whether a key and token are set, never shows them.
#[derive(Clone)]
pub struct ShipperConfig {
    /// `http://host:9464` or `https://host:9464`.
    pub url: String,
    /// PEM CA bundle to verify the collector (https).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and key (mutual TLS).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// TLS server name, when it differs from the URL's host.
    pub domain: Option<String>,
    /// Bearer token sent as `authorization`.
    pub token: Option<String>,
}

impl std::fmt::Debug for ShipperConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShipperConfig")
            .field("url", &self.url)
            .field("ca", &self.ca_pem.is_some())
            .field("client_identity", &self.identity.is_some())
            .field("domain", &self.domain)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A connection setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ShipperError {
    /// The URL does not parse.
    #[error("--collector={url:?}: {source}")]
    Url {
        /// `--collector` as given.
        url: String,
        /// The parse error.
        source: tonic::transport::Error,
    },
    /// TLS settings were rejected.
    #[error("collector TLS settings: {0}")]
    Tls(tonic::transport::Error),
    /// The token has characters a header cannot carry.
    #[error("the collector token is not a valid header value")]
    Token,
}

/// Counters the shipper keeps.
#[derive(Clone)]
pub struct ShipperMetrics {
    /// Batches handed to the stream.
    pub batches_sent: IntCounter,
    /// Connection attempts after the first.
    pub reconnects: IntCounter,
    /// 1 while a stream is open.
    pub connected: IntGauge,
    /// Aggregate counters across targets, fed too (their `connected` counts open streams).
    pub totals: Option<Box<ShipperMetrics>>,
}

impl ShipperMetrics {
    fn sent(&self) {
        self.batches_sent.inc();
        if let Some(t) = &self.totals {
            t.batches_sent.inc();
        }
    }

    fn reconnect(&self) {
        self.reconnects.inc();
        if let Some(t) = &self.totals {
            t.reconnects.inc();
        }
    }

    fn set_connected(&self, open: bool) {
        let was = self.connected.get() != 0;
        self.connected.set(i64::from(open));
        if let Some(t) = &self.totals
            && was != open
        {
            t.connected.add(if open { 1 } else { -1 });
        }
    }
}

impl ShipperConfig {
    fn endpoint(&self) -> Result<Endpoint, ShipperError> {
        let mut endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|source| ShipperError::Url {
                url: self.url.clone(),
                source,
            })?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .tcp_keepalive(Some(Duration::from_secs(30)));
        if self.url.starts_with("https://") || self.ca_pem.is_some() {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &self.ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &self.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            if let Some(domain) = &self.domain {
                tls = tls.domain_name(domain.clone());
            }
            endpoint = endpoint.tls_config(tls).map_err(ShipperError::Tls)?;
        }
        Ok(endpoint)
    }
}

/// Streams batches from `queue` to the collector until `stop` is set.
pub async fn run(
    config: ShipperConfig,
    queue: Arc<BatchQueue>,
    metrics: ShipperMetrics,
    stop: Arc<AtomicBool>,
) -> Result<(), ShipperError> {
    let endpoint = config.endpoint()?;
    let token = match &config.token {
        Some(t) => {
            Some(MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| ShipperError::Token)?)
        }
        None => None,
    };
    // Between connection attempts: doubling from 100 ms to 10 s, ±20 % jitter.
    let mut backoff =
        Backoff::new(Duration::from_millis(100), Duration::from_secs(10)).with_jitter(0.2);
    let mut attempt: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        if attempt > 0 {
            metrics.reconnect();
            tokio::time::sleep(backoff.next_delay()).await;
        }
        attempt = attempt.saturating_add(1);
        let channel: Channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(err) => {
                tracing::debug!(error = %err, url = %config.url, "Collector not reachable.");
                if attempt == 1 || attempt.is_multiple_of(20) {
                    tracing::warn!(error = %err, url = %config.url, attempt, "Collector not reachable; batches wait in the queue (oldest dropped when full).");
                }
                continue;
            }
        };
        let token = token.clone();
        let mut client =
            AgentIngestClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
                if let Some(t) = &token {
                    req.metadata_mut().insert("authorization", t.clone());
                }
                Ok(req)
            })
            .max_encoding_message_size(64 << 20);
        tracing::info!(url = %config.url, "Connected to the collector.");
        metrics.set_connected(true);
        let sent = metrics.clone();
        let q = queue.clone();
        let stop_stream = stop.clone();
        let outbound = futures_stream(q, sent, stop_stream);
        let result = client.push(outbound).await;
        metrics.set_connected(false);
        match result {
            Ok(ack) => {
                tracing::info!(
                    last_sequence = ack.get_ref().last_sequence,
                    "Collector closed the stream."
                );
                attempt = 1;
                backoff.reset();
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "Stream to the collector broke; reconnecting.");
                if status.code() == tonic::Code::Unauthenticated {
                    tracing::error!(
                        "The collector refused our credentials; check the token and client certificate."
                    );
                }
                attempt = 1;
                backoff.reset();
            }
        }
    }
    Ok(())
}

/// The outbound stream: batches popped from the queue as they come.
fn futures_stream(
    queue: Arc<BatchQueue>,
    sent: ShipperMetrics,
    stop: Arc<AtomicBool>,
) -> impl tokio_stream::Stream<Item = etcd_monitor_proto::v1::EventBatch> {
    futures::stream::unfold((queue, sent, stop), |(queue, sent, stop)| async move {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let batch = queue.pop().await;
        sent.sent();
        Some((batch, (queue, sent, stop)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_secret_in_debug_output() {
        const SECRET: &str = "hunter2-s3cr3t";
        let config = ShipperConfig {
            url: "https://collector:9464".into(),
            ca_pem: Some(b"CA".to_vec()),
            identity: Some((b"CERT".to_vec(), SECRET.as_bytes().to_vec())),
            domain: None,
            token: Some(SECRET.into()),
        };
        for text in [format!("{config:?}"), format!("{config:#?}")] {
            assert!(!text.contains(SECRET), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
    }

    #[test]
    fn bad_urls_are_rejected_with_the_flag() {
        let config = ShipperConfig {
            url: "http://bad host:1".into(),
            ca_pem: None,
            identity: None,
            domain: None,
            token: None,
        };
        let err = config.endpoint().expect_err("invalid URL");
        assert!(err.to_string().contains("--collector"), "{err}");
    }
}
