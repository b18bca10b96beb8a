//! Certificates made in the test with rcgen: a CA, a server certificate for 127.0.0.1 and
//! localhost, and a client certificate, all written as PEM files.

use std::path::Path;

use crate::ClientTls;

/// CA, server and client certificates for a TLS cluster, written under `dir`.
pub fn make_tls(dir: &Path, tag: &str) -> anyhow::Result<ClientTls> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("etcd-monitor test CA {tag}"));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let leaf = |cn: &str| -> anyhow::Result<(String, String)> {
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
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &ca)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (server_cert, server_key) = leaf("etcd server")?;
    let (client_cert, client_key) = leaf("etcd-monitor client")?;
    let write = |name: &str, text: &str| -> anyhow::Result<std::path::PathBuf> {
        let path = dir.join(format!("{tag}-{name}"));
        std::fs::write(&path, text)?;
        Ok(path)
    };
    Ok(ClientTls {
        ca_file: write("ca.pem", &ca.pem())?,
        server_cert_file: write("server.pem", &server_cert)?,
        server_key_file: write("server-key.pem", &server_key)?,
        client_cert_file: write("client.pem", &client_cert)?,
        client_key_file: write("client-key.pem", &client_key)?,
    })
}
