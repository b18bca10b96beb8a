//! etcd clients, one per member URL, so each member is asked directly rather than through a
//! balancer. Connecting (which authenticates when a user is set) is retried with exponential
//! backoff; a URL that cannot be reached is a state the health loop reports, never an error that
//! stops it.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use etcd_monitor_runtime::Backoff;
use hyper_util::rt::TokioIo;

use crate::{model::config::ClusterConfig, model::config::TlsConfig};

/// Why a member could not be asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No answer within the dial timeout.
    #[error("no answer from {url} within {timeout:?}")]
    Timeout {
        /// The member endpoint (normalised client URL).
        url: String,
        /// The dial timeout that ran out (`--dial-timeout`).
        timeout: Duration,
    },
    /// The request failed; the message explains TLS and auth failures in plain words.
    #[error("{url}: {message}")]
    Failed {
        /// The member endpoint (normalised client URL).
        url: String,
        /// Explanation and the underlying error chain.
        message: String,
    },
    /// Connecting failed recently; the next attempt waits for the backoff.
    #[error("{url}: connection attempts backing off ({last})")]
    BackingOff {
        /// The member endpoint (normalised client URL).
        url: String,
        /// Last error.
        last: String,
    },
}

/// The whole `source()` chain of an error, joined with `: `.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Turns an etcd-client error into a message that says what went wrong.
pub fn explain(err: &etcd_client::Error, tls: Option<&TlsConfig>) -> String {
    let chain = error_chain(err);
    let lower = chain.to_ascii_lowercase();
    let hint = if lower.contains("unknownissuer")
        || lower.contains("unknown issuer")
        || lower.contains("certificate verify failed")
        || lower.contains("badsignature")
    {
        Some(format!(
            "TLS: the server certificate is not signed by the trusted CA ({})",
            tls.map_or("no CA configured", |t| t.ca_source.as_str())
        ))
    } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        Some("TLS: the server certificate does not name this host".to_string())
    } else if lower.contains("certificate required") || lower.contains("certificaterequired") {
        Some("TLS: the server requires a client certificate (--cert-file/--key-file)".to_string())
    } else if lower.contains("authentication failed") || lower.contains("invalid auth token") {
        Some("auth: user name or password rejected".to_string())
    } else if lower.contains("user name is empty") || lower.contains("permission denied") {
        Some("auth: the cluster requires a user (--username/--password)".to_string())
    } else if lower.contains("timeout expired") || lower.contains("deadline") {
        Some("no answer within the dial timeout".to_string())
    } else if lower.contains("connection refused") {
        Some("connection refused".to_string())
    } else {
        None
    };
    match hint {
        Some(h) => format!("{h} ({chain})"),
        None => chain,
    }
}

struct Slot {
    client: Option<Client>,
    next_attempt: Instant,
    backoff: Backoff,
    last_error: String,
}

/// Clients keyed by URL, created on demand, with backoff between failed attempts.
pub struct ClientPool {
    config: ClusterConfig,
    slots: HashMap<String, Slot>,
    max_backoff: Duration,
}

const MIN_BACKOFF: Duration = Duration::from_millis(250);

impl ClientPool {
    /// A pool for `config`; connection backoff never exceeds `max_backoff`.
    pub fn new(config: ClusterConfig, max_backoff: Duration) -> Self {
        Self {
            config,
            slots: HashMap::new(),
            max_backoff: max_backoff.max(MIN_BACKOFF),
        }
    }

    /// The clients for `urls`, connecting (concurrently) where there is none and the backoff
    /// has passed.
    pub async fn get_many(&mut self, urls: &[String]) -> Vec<Result<Client, ClientError>> {
        let now = Instant::now();
        let mut to_connect = Vec::new();
        for url in urls {
            let slot = self.slots.entry(url.clone()).or_insert(Slot {
                client: None,
                next_attempt: now,
                backoff: Backoff::new(MIN_BACKOFF, self.max_backoff),
                last_error: String::new(),
            });
            if slot.client.is_none() && now >= slot.next_attempt {
                to_connect.push(url.clone());
            }
        }
        let timeout = self.config.dial_timeout;
        let config = &self.config;
        let connected = futures::future::join_all(to_connect.iter().map(|url| async move {
            match tokio::time::timeout(timeout, connect(config, url)).await {
                Ok(Ok(client)) => Ok(client),
                Ok(Err(message)) => Err(ClientError::Failed {
                    url: url.clone(),
                    message,
                }),
                Err(_) => Err(ClientError::Timeout {
                    url: url.clone(),
                    timeout,
                }),
            }
        }))
        .await;
        let mut fresh: HashMap<String, ClientError> = HashMap::new();
        for (url, result) in to_connect.into_iter().zip(connected) {
            let Some(slot) = self.slots.get_mut(&url) else {
                continue;
            };
            match result {
                Ok(client) => {
                    slot.client = Some(client);
                    slot.backoff.reset();
                }
                Err(e) => {
                    slot.last_error = e.to_string();
                    slot.next_attempt = now + slot.backoff.next_delay();
                    fresh.insert(url, e);
                }
            }
        }
        urls.iter()
            .map(|url| {
                if let Some(e) = fresh.remove(url) {
                    return Err(e);
                }
                match self.slots.get(url) {
                    Some(Slot {
                        client: Some(c), ..
                    }) => Ok(c.clone()),
                    Some(slot) => Err(ClientError::BackingOff {
                        url: url.clone(),
                        last: slot.last_error.clone(),
                    }),
                    None => Err(ClientError::BackingOff {
                        url: url.clone(),
                        last: String::new(),
                    }),
                }
            })
            .collect()
    }

    /// Forgets the client of `url` (e.g. after an auth failure) so the next call reconnects.
    pub fn reset(&mut self, url: &str) {
        if let Some(slot) = self.slots.get_mut(url) {
            slot.client = None;
        }
    }

    /// The TLS settings, for error messages.
    pub fn tls(&self) -> Option<&TlsConfig> {
        self.config.tls.as_ref()
    }
}

/// Connects one client to `url` with the cluster's TLS and auth settings.
pub async fn connect(config: &ClusterConfig, url: &str) -> Result<Client, String> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.dial_timeout)
        .with_timeout(config.dial_timeout);
    if let Some(auth) = &config.auth {
        options = options.with_user(auth.username.clone(), auth.password.clone());
    }
    let tls = config.tls.as_ref();
    let result = match tls {
        Some(t) if t.insecure_skip_verify => {
            let channel = insecure_channel(url, t)?;
            Client::from_channel(etcd_client::Channel::Tonic(channel), Some(options)).await
        }
        Some(t) => {
            let mut tls_options = TlsOptions::new();
            if let Some(ca) = &t.ca_pem {
                tls_options = tls_options.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &t.identity {
                tls_options = tls_options.identity(Identity::from_pem(cert, key));
            }
            Client::connect([url], Some(options.with_tls(tls_options))).await
        }
        None => Client::connect([url], Some(options)).await,
    };
    result.map_err(|e| explain(&e, tls))
}

/// A lazily connecting channel to `url` over TLS that does not verify the server certificate
/// (`--insecure-skip-tls`). The client certificate, when given, is still presented.
fn insecure_channel(url: &str, tls: &TlsConfig) -> Result<tonic::transport::Channel, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("{url}: no host"))?
        .to_string();
    let port = uri.port_u16().unwrap_or(2379);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)));
    let mut client_config = match &tls.identity {
        Some((cert, key)) => {
            use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
            let certs = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("--cert-file: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("--key-file: {e}"))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    client_config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = InsecureConnector {
        config: Arc::new(client_config),
        host: host.clone(),
        port,
    };
    // tonic must not add TLS itself: the connector does it, so the endpoint says http.
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{host}:{port}"))
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(endpoint.connect_with_connector_lazy(connector))
}

#[derive(Clone)]
struct InsecureConnector {
    config: Arc<rustls::ClientConfig>,
    host: String,
    port: u16,
}

type IoResult<T> = Result<T, std::io::Error>;

impl tower::Service<http::Uri> for InsecureConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = IoResult<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<IoResult<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect((this.host.as_str(), this.port)).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(this.host.clone())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let tls = tokio_rustls::TlsConnector::from(this.config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// Accepts any server certificate but still checks handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An HTTP client for the members' /metrics with the cluster's TLS settings.
pub fn http_client(config: &ClusterConfig) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(config.dial_timeout)
        .connect_timeout(config.dial_timeout)
        .pool_max_idle_per_host(1);
    if let Some(tls) = &config.tls {
        builder = builder.use_rustls_tls();
        if let Some(ca) = &tls.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(ca)
                .map_err(|e| format!("{}: {e}", tls.ca_source))?
            {
                builder = builder.add_root_certificate(cert);
            }
            builder = builder.tls_built_in_root_certs(false);
        }
        if let Some((cert, key)) = &tls.identity {
            let mut pem = cert.clone();
            pem.push(b'\n');
            pem.extend_from_slice(key);
            builder = builder.identity(
                reqwest::Identity::from_pem(&pem).map_err(|e| format!("client identity: {e}"))?,
            );
        }
        if tls.insecure_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
    }
    builder.build().map_err(|e| format!("HTTP client: {e}"))
}
