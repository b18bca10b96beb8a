//! Operational alerts end to end: certificate expiry from a real TLS cluster whose
//! certificates the test made with short validity (rcgen), seen by the real collector in its
//! TLS handshakes with the members and in its configured files, exported as
//! `etcdmon_certificate_expiry_seconds` and alerted on by `CertificateExpiringSoon`.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::common::{metric, start_collector, tail, wait_status};
use etcd_monitor_tests::{ClientTls, ClusterOptions, EtcdCluster, http, wait_for};

/// (year, month, day) of the Unix day `days` (Howard Hinnant's civil-from-days).
fn civil(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

/// A CA (valid for years), a server certificate for 127.0.0.1 valid until midnight in
/// `server_days`, and a client certificate valid until midnight in `client_days`; returns the
/// files and each certificate's notAfter (Unix seconds) as the test set it.
fn short_lived_tls(
    dir: &Path,
    server_days: i64,
    client_days: i64,
) -> anyhow::Result<(ClientTls, i64, i64)> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let today = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64 / 86_400;
    let not_after = |days: i64| {
        let (y, m, d) = civil(today + days);
        (rcgen::date_time_ymd(y, m, d), (today + days) * 86_400)
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "etcd-monitor expiry test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_after = not_after(3650).0;
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let leaf = |cn: &str, days: i64| -> anyhow::Result<(String, String, i64)> {
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let (date, unix) = not_after(days);
        p.not_after = date;
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &ca)?;
        Ok((cert.pem(), key.serialize_pem(), unix))
    };
    let (server_cert, server_key, server_unix) = leaf("etcd server expiring", server_days)?;
    let (client_cert, client_key, client_unix) = leaf("etcd-monitor client", client_days)?;
    let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    };
    let tls = ClientTls {
        ca_file: write("ca.pem", &ca.pem())?,
        server_cert_file: write("server.pem", &server_cert)?,
        server_key_file: write("server-key.pem", &server_key)?,
        client_cert_file: write("client.pem", &client_cert)?,
        client_key_file: write("client-key.pem", &client_key)?,
    };
    Ok((tls, server_unix, client_unix))
}

fn active(collector: &etcd_monitor_tests::CollectorProcess) -> Vec<serde_json::Value> {
    collector
        .get_json("/api/v1/alerts")
        .ok()
        .and_then(|(_, b)| b["alerts"].as_array().cloned())
        .unwrap_or_default()
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[test]
fn certificate_expiry_is_exported_and_alerted() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Server certificates expire in 3 days (critical), the client's in 20 (warning), the CA
    // in ten years (quiet).
    let (tls, server_not_after, client_not_after) = short_lived_tls(dir.path(), 3, 20)?;
    let cluster = EtcdCluster::start(ClusterOptions {
        tls: Some(tls.clone()),
        name_prefix: "exp".to_string(),
        ..ClusterOptions::default()
    })?;
    let args = [
        format!("--endpoints={}", cluster.endpoints()),
        format!("--ca-file={}", tls.ca_file.display()),
        format!("--cert-file={}", tls.client_cert_file.display()),
        format!("--key-file={}", tls.client_key_file.display()),
        "--health-check-interval=1s".to_string(),
        "--metrics-interval=1s".to_string(),
        "--dial-timeout=2s".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let collector = start_collector(dir.path(), &args)?;
    wait_status(
        &collector,
        "healthy over TLS",
        Duration::from_secs(30),
        |s| s["healthy"] == true && s["available_members"] == 3,
    )?;

    // Every member's server certificate, from the handshakes.
    let expiry =
        |labels: &[(&str, &str)]| metric(&collector, "etcdmon_certificate_expiry_seconds", labels);
    for m in &cluster.members {
        let labels = [
            ("cluster", "default"),
            ("member", m.name.as_str()),
            ("kind", "server"),
            ("subject", "etcd server expiring"),
        ];
        let v = wait_for(
            &format!("server certificate of {}", m.name),
            Duration::from_secs(30),
            || expiry(&labels),
        )
        .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&collector.log_text(), 30)))?;
        let truth = (server_not_after - now_unix()) as f64;
        assert!(
            (v - truth).abs() < 120.0,
            "{}: {v} s, set {truth} s",
            m.name
        );
    }
    // The configured files: the client certificate and the CA.
    let client = expiry(&[("kind", "client"), ("subject", "etcd-monitor client")])
        .ok_or_else(|| anyhow::anyhow!("no client certificate series"))?;
    let truth = (client_not_after - now_unix()) as f64;
    assert!(
        (client - truth).abs() < 120.0,
        "client: {client} s, set {truth} s"
    );
    let ca = expiry(&[("kind", "ca")]).ok_or_else(|| anyhow::anyhow!("no CA series"))?;
    assert!(ca > 3000.0 * 86_400.0, "ca: {ca}");
    // Peers speak plain http here: no peer certificate, and no failure for one.
    let page = collector.metrics()?;
    assert!(
        http::prom_sum(
            &page,
            "etcdmon_certificate_expiry_seconds",
            &[("kind", "peer")]
        )
        .is_none()
    );
    assert!(
        http::prom_sum(&page, "etcdmon_certificate_check_failures_total", &[])
            .is_none_or(|v| v == 0.0),
        "{page}"
    );

    // Alerts: critical and warning for every server certificate, warning only for the client
    // certificate, nothing for the CA.
    let firing = |severity: &str, kind: &str| {
        active(&collector)
            .into_iter()
            .filter(|a| {
                a["name"] == "CertificateExpiringSoon"
                    && a["state"] == "firing"
                    && a["severity"] == severity
                    && a["labels"]["kind"] == kind
            })
            .count()
    };
    wait_for("certificate alerts firing", Duration::from_secs(30), || {
        (firing("critical", "server") == 3
            && firing("warning", "server") == 3
            && firing("warning", "client") == 1)
            .then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}\nactive: {:?}", active(&collector)))?;
    assert_eq!(firing("critical", "client"), 0);
    assert_eq!(firing("warning", "ca") + firing("critical", "ca"), 0);
    let alert = active(&collector)
        .into_iter()
        .find(|a| a["severity"] == "critical" && a["labels"]["kind"] == "server")
        .unwrap_or_default();
    let description = alert["annotations"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        description.contains("etcd server expiring")
            && description.contains("presented by member exp"),
        "{alert}"
    );
    Ok(())
}
