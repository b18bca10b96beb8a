//! Certificate expiry: the end of validity of every certificate the collector depends on, so
//! an expiring certificate is an alert weeks before it is an outage.
//!
//! Two sources, both kept in the cluster's [`CertificateReport`]:
//! - **handshakes**: a TLS handshake with each member's https client URL (`server`) and https
//!   peer URL (`peer`); the certificate the member presents is recorded whatever the handshake's
//!   outcome (a peer URL that demands a client certificate still shows its own first). Nothing
//!   is sent over the connection.
//! - **configured files**: the collector's own client certificate (`--cert-file`, `client`) and
//!   every certificate of its CA bundle (`--ca-file`, `ca`).
//!
//! The checks run with the scrape loop, at most every [`CHECK_EVERY`] or when the members'
//! URLs change. What yields no certificate is counted by kind; what exceeds
//! [`MAX_CERTIFICATES`] is refused and counted.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
};

use crate::model::{
    cluster::{ClusterHandle, ClusterState},
    config::TlsConfig,
    series::{CertificateExpiry, CertificateKind, MAX_CERTIFICATES, MAX_SUBJECT_LEN},
    time::now_ms,
};

/// How often the certificates are looked at again when nothing changed.
pub const CHECK_EVERY: Duration = Duration::from_secs(300);

/// When the last check ran and on which URLs.
#[derive(Debug, Default)]
pub struct CertChecks {
    last_ms: u64,
    last_targets: Vec<Target>,
}

/// A URL to shake hands with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    member: String,
    kind: CertificateKind,
    host: String,
    port: u16,
}

impl CertChecks {
    /// Checks the certificates of `state`'s members and of `cluster`'s configured files when
    /// [`CHECK_EVERY`] passed or the members' URLs changed, and stores the result.
    pub async fn check_if_due(&mut self, cluster: &ClusterHandle, state: &ClusterState) {
        let targets = targets(state);
        let now = now_ms();
        let due = self.last_ms == 0
            || targets != self.last_targets
            || now.saturating_sub(self.last_ms) >= CHECK_EVERY.as_millis() as u64;
        if !due {
            return;
        }
        self.last_ms = now;
        self.last_targets = targets.clone();
        let tls = cluster.config.tls.as_ref();
        let mut found: Vec<CertificateExpiry> = Vec::new();
        let mut failures: Vec<&'static str> = Vec::new();
        if let Some(tls) = tls {
            configured_files(tls, &mut found, &mut failures);
        }
        let timeout = cluster.config.dial_timeout.max(Duration::from_secs(1));
        let seen = futures::future::join_all(
            targets
                .iter()
                .map(|t| handshake_certificate(t, tls, timeout)),
        )
        .await;
        for (t, der) in targets.iter().zip(seen) {
            match der.and_then(|d| expiry_of(&d)) {
                Some((subject, not_after_unix)) => found.push(CertificateExpiry {
                    member: t.member.clone(),
                    kind: t.kind,
                    subject,
                    not_after_unix,
                }),
                None => failures.push(t.kind.as_str()),
            }
        }
        store(cluster, found, &failures, now_ms());
    }
}

/// Keeps at most [`MAX_CERTIFICATES`] in the cluster's report and adds up the failures.
fn store(
    cluster: &ClusterHandle,
    mut found: Vec<CertificateExpiry>,
    failures: &[&'static str],
    at_ms: u64,
) {
    found.sort_by(|a, b| (a.kind, &a.member, &a.subject).cmp(&(b.kind, &b.member, &b.subject)));
    found.dedup();
    let refused = found.len().saturating_sub(MAX_CERTIFICATES) as u64;
    found.truncate(MAX_CERTIFICATES);
    if refused > 0 {
        tracing::warn!(cluster = %cluster.name(), refused, "Certificates over the limit left out.");
    }
    for kind in failures {
        tracing::debug!(cluster = %cluster.name(), kind, "No certificate from a check.");
    }
    cluster.update(|s| {
        let report = &mut s.certificates;
        report.certificates = found;
        report.refused += refused;
        for kind in failures {
            *report.failures.entry(kind).or_insert(0) += 1;
        }
        report.checked_at_ms = at_ms;
    });
}

/// Every https client and peer URL of the members.
fn targets(state: &ClusterState) -> Vec<Target> {
    let mut out = Vec::new();
    for m in &state.members {
        let member = ClusterState::member_label(m);
        for (kind, urls) in [
            (CertificateKind::Server, &m.client_urls),
            (CertificateKind::Peer, &m.peer_urls),
        ] {
            for url in urls {
                if let Some((host, port)) = https_host_port(url) {
                    out.push(Target {
                        member: member.clone(),
                        kind,
                        host,
                        port,
                    });
                }
            }
        }
    }
    out
}

/// Host and port of an `https://` URL (default port 443); `None` for anything else.
fn https_host_port(url: &str) -> Option<(String, u16)> {
    let uri: http::Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("https") {
        return None;
    }
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), uri.port_u16().unwrap_or(443)))
}

/// The collector's client certificate and its CA bundle.
fn configured_files(
    tls: &TlsConfig,
    found: &mut Vec<CertificateExpiry>,
    failures: &mut Vec<&'static str>,
) {
    let mut add = |kind: CertificateKind, pem: &[u8], all: bool| {
        let certs = pem_certificates(pem);
        if certs.is_empty() {
            failures.push(kind.as_str());
        }
        for der in certs.iter().take(if all { usize::MAX } else { 1 }) {
            match expiry_of(der) {
                Some((subject, not_after_unix)) => found.push(CertificateExpiry {
                    member: String::new(),
                    kind,
                    subject,
                    not_after_unix,
                }),
                None => failures.push(kind.as_str()),
            }
        }
    };
    if let Some((cert, _)) = &tls.identity {
        add(CertificateKind::Client, cert, false);
    }
    if let Some(ca) = &tls.ca_pem {
        add(CertificateKind::Ca, ca, true);
    }
}

/// The DER certificates of a PEM bundle (unreadable blocks are skipped).
fn pem_certificates(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// (subject, notAfter as Unix seconds) of a DER certificate.
pub fn expiry_of(der: &[u8]) -> Option<(String, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| cert.subject().to_string());
    Some((bounded(&subject), cert.validity().not_after.timestamp()))
}

/// `s` cut to [`MAX_SUBJECT_LEN`] bytes on a character boundary.
fn bounded(s: &str) -> String {
    let mut end = s.len().min(MAX_SUBJECT_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Shakes hands with `target` and returns the certificate it presented, if any. The client
/// certificate, when configured, is offered so members that demand one finish the handshake.
async fn handshake_certificate(
    target: &Target,
    tls: Option<&TlsConfig>,
    timeout: Duration,
) -> Option<Vec<u8>> {
    let seen = Arc::new(Mutex::new(None));
    let config = client_config(tls, seen.clone())?;
    let name = ServerName::try_from(target.host.clone()).ok()?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map(drop)
    };
    // The certificate is recorded before the handshake ends, so a refused client
    // certificate still leaves the server's.
    let _ = tokio::time::timeout(timeout, attempt).await;
    crate::model::sync::lock(&seen).take()
}

fn client_config(
    tls: Option<&TlsConfig>,
    seen: Arc<Mutex<Option<Vec<u8>>>>,
) -> Option<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Recorder { provider, seen }));
    match tls.and_then(|t| t.identity.as_ref()) {
        Some((cert, key)) => {
            use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
            let key = PrivateKeyDer::from_pem_slice(key).ok()?;
            builder
                .with_client_auth_cert(pem_certificates(cert), key)
                .ok()
        }
        None => Some(builder.with_no_client_auth()),
    }
}

/// Records the server's end-entity certificate and accepts it: the check reads the
/// certificate, it trusts nothing on the connection (no byte of application data is sent).
#[derive(Debug)]
struct Recorder {
    provider: Arc<rustls::crypto::CryptoProvider>,
    seen: Arc<Mutex<Option<Vec<u8>>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *crate::model::sync::lock(&self.seen) = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, days: i64) -> String {
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
        p.distinguished_name
            .push(rcgen::DnType::CommonName, cn.to_string());
        p.not_after = rcgen::date_time_ymd(2030, 1, 1) + time_days(days);
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        p.self_signed(&key).unwrap_or_else(|e| panic!("{e}")).pem()
    }

    fn time_days(days: i64) -> std::time::Duration {
        std::time::Duration::from_secs(days as u64 * 86_400)
    }

    #[test]
    fn configured_files_give_client_and_every_ca() {
        let client = cert("etcd-monitor client", 0);
        let ca = format!("{}{}", cert("ca one", 1), cert("ca two", 2));
        let tls = TlsConfig {
            ca_pem: Some(ca.into_bytes()),
            identity: Some((client.into_bytes(), Vec::new())),
            insecure_skip_verify: false,
            ca_source: "test".into(),
        };
        let (mut found, mut failures) = (Vec::new(), Vec::new());
        configured_files(&tls, &mut found, &mut failures);
        assert!(failures.is_empty(), "{failures:?}");
        let kinds: Vec<(&str, &str)> = found
            .iter()
            .map(|c| (c.kind.as_str(), c.subject.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("client", "etcd-monitor client"),
                ("ca", "ca one"),
                ("ca", "ca two")
            ]
        );
        // 2030-01-01T00:00:00Z.
        assert_eq!(found[0].not_after_unix, 1_893_456_000);
        assert_eq!(found[2].not_after_unix, 1_893_456_000 + 2 * 86_400);
    }

    #[test]
    fn a_file_without_certificates_is_a_failure() {
        let tls = TlsConfig {
            ca_pem: Some(b"-----BEGIN NOTHING-----\n".to_vec()),
            identity: None,
            insecure_skip_verify: false,
            ca_source: "test".into(),
        };
        let (mut found, mut failures) = (Vec::new(), Vec::new());
        configured_files(&tls, &mut found, &mut failures);
        assert!(found.is_empty());
        assert_eq!(failures, ["ca"]);
    }

    #[test]
    fn only_https_urls_are_targets_and_subjects_are_bounded() {
        assert_eq!(
            https_host_port("https://127.0.0.1:2379"),
            Some(("127.0.0.1".to_string(), 2379))
        );
        assert_eq!(
            https_host_port("https://[::1]:2380"),
            Some(("::1".to_string(), 2380))
        );
        assert_eq!(https_host_port("http://127.0.0.1:2379"), None);
        assert_eq!(https_host_port("unix://x"), None);
        let long = "é".repeat(100);
        let b = bounded(&long);
        assert!(b.len() <= MAX_SUBJECT_LEN && b.chars().all(|c| c == 'é'));
    }
}
