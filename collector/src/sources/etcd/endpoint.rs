//! One etcd cluster's connection settings, from flags or a config-file entry, checked into a
//! [`ClusterConfig`]: endpoints normalised, TLS files read, auth paired. Every error names its
//! flag or file field. Shared by the collector's configuration and `etcd-monitor ctl`.

use std::{path::Path, time::Duration};

use crate::{
    model::config::Auth, model::config::ClusterConfig, model::config::ConfigError,
    model::config::MetricsTarget, model::config::TlsConfig,
};

/// Raw per-cluster settings before validation, from flags or a file entry.
pub struct RawCluster<'a> {
    /// Prefix of error field names: empty for flags, `clusters[i].` in a file.
    pub field: String,
    /// Cluster name.
    pub name: String,
    /// Client URLs as given.
    pub endpoints: Vec<String>,
    /// `--ca-file`.
    pub ca_file: Option<&'a Path>,
    /// `--cert-file`.
    pub cert_file: Option<&'a Path>,
    /// `--key-file`.
    pub key_file: Option<&'a Path>,
    /// `--insecure-skip-tls`.
    pub insecure: bool,
    /// `--username`.
    pub username: Option<String>,
    /// `--password`.
    pub password: Option<String>,
    /// `--metrics-urls` entries.
    pub metrics_urls: &'a [String],
    /// Connect and per-request timeout.
    pub dial_timeout: Duration,
}

/// The flag name for a per-cluster setting: `--ca-file` for flags, `clusters[i].ca_file` in a file.
pub fn field_name(prefix: &str, flag: &str) -> String {
    if prefix.is_empty() {
        format!("--{flag}")
    } else {
        format!("{prefix}{}", flag.replace('-', "_"))
    }
}

/// Reads a PEM file named by `flag` (or the file field under `prefix`); the error names it.
pub fn read_pem(prefix: &str, flag: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let field = field_name(prefix, flag);
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::new(&field, format!("{}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN") {
        return Err(ConfigError::new(
            field,
            format!("{}: not a PEM file", path.display()),
        ));
    }
    Ok(bytes)
}

/// Checks one cluster's settings (endpoints normalised, TLS files read, auth paired); every
/// error names its flag or file field. Shared by the collector and `etcd-monitor ctl`.
pub fn validate_cluster(raw: RawCluster<'_>) -> Result<ClusterConfig, ConfigError> {
    let p = raw.field.as_str();
    let name = cluster_name(p, &raw.name)?;
    let uses_tls_files =
        raw.ca_file.is_some() || raw.cert_file.is_some() || raw.key_file.is_some() || raw.insecure;
    let endpoints = cluster_endpoints(p, &raw.endpoints, uses_tls_files)?;
    let tls = if endpoints.iter().any(|e| e.starts_with("https://")) {
        Some(tls_config(p, &raw)?)
    } else {
        None
    };
    let auth = auth_pair(p, raw.username, raw.password)?;
    let metrics_urls = metrics_targets(p, raw.metrics_urls, &endpoints)?;
    Ok(ClusterConfig {
        name,
        endpoints,
        tls,
        auth,
        metrics_urls,
        dial_timeout: raw.dial_timeout,
    })
}

/// The cluster's name, trimmed: letters, digits, '-', '_' or '.', not empty.
fn cluster_name(p: &str, raw: &str) -> Result<String, ConfigError> {
    let name = raw.trim().to_string();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ConfigError::new(
            format!("{p}name"),
            format!("{name:?}: use letters, digits, '-', '_' or '.'"),
        ));
    }
    Ok(name)
}

/// The endpoints normalised (see [`normalize_endpoint`]): at least one, all http:// or all
/// https://, and https:// when TLS files are given.
fn cluster_endpoints(
    p: &str,
    raw: &[String],
    uses_tls_files: bool,
) -> Result<Vec<String>, ConfigError> {
    let mut endpoints = Vec::new();
    for e in raw.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        endpoints
            .push(normalize_endpoint(e, uses_tls_files).map_err(|m| {
                ConfigError::new(field_name(p, "endpoints"), format!("{e:?}: {m}"))
            })?);
    }
    if endpoints.is_empty() {
        return Err(ConfigError::new(
            field_name(p, "endpoints"),
            "at least one endpoint is required",
        ));
    }
    let any_https = endpoints.iter().any(|e| e.starts_with("https://"));
    let any_http = endpoints.iter().any(|e| e.starts_with("http://"));
    if any_https && any_http {
        return Err(ConfigError::new(
            field_name(p, "endpoints"),
            "mixes http:// and https:// endpoints",
        ));
    }
    if uses_tls_files && any_http {
        return Err(ConfigError::new(
            field_name(p, "endpoints"),
            "TLS settings are given but the endpoints are http://; use https://",
        ));
    }
    Ok(endpoints)
}

/// TLS for https:// endpoints: the CA bundle (required unless insecure) and the client
/// certificate and key (both or neither), read from their PEM files.
fn tls_config(p: &str, raw: &RawCluster<'_>) -> Result<TlsConfig, ConfigError> {
    let ca_pem = match raw.ca_file {
        Some(path) => Some(read_pem(p, "ca-file", path)?),
        None if raw.insecure => None,
        None => {
            return Err(ConfigError::new(
                field_name(p, "ca-file"),
                "https endpoints need a CA bundle (or --insecure-skip-tls)",
            ));
        }
    };
    let identity = match (raw.cert_file, raw.key_file) {
        (Some(c), Some(k)) => Some((read_pem(p, "cert-file", c)?, read_pem(p, "key-file", k)?)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(
                field_name(p, "key-file"),
                "required with --cert-file",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                field_name(p, "cert-file"),
                "required with --key-file",
            ));
        }
    };
    Ok(TlsConfig {
        ca_pem,
        identity,
        insecure_skip_verify: raw.insecure,
        ca_source: raw
            .ca_file
            .map(|f| format!("{} {}", field_name(p, "ca-file"), f.display()))
            .unwrap_or_else(|| "no CA (insecure)".to_string()),
    })
}

/// etcd authentication: user name and password both given (a non-empty name), or neither.
fn auth_pair(
    p: &str,
    username: Option<String>,
    password: Option<String>,
) -> Result<Option<Auth>, ConfigError> {
    match (username, password) {
        (Some(u), Some(pw)) if !u.is_empty() => Ok(Some(Auth {
            username: u,
            password: pw,
        })),
        (None, None) => Ok(None),
        (Some(_), _) => Err(ConfigError::new(
            field_name(p, "password"),
            "required with --username",
        )),
        (None, Some(_)) => Err(ConfigError::new(
            field_name(p, "username"),
            "required with --password",
        )),
    }
}

/// The `--metrics-urls` entries: `NAME=URL` for a named member, or a bare URL for the endpoint
/// at the same position; each an http(s) URL with a host.
fn metrics_targets(
    p: &str,
    raw: &[String],
    endpoints: &[String],
) -> Result<Vec<(MetricsTarget, String)>, ConfigError> {
    let mut metrics_urls = Vec::new();
    let mut positional = 0;
    for entry in raw.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let field = field_name(p, "metrics-urls");
        let (target, url) = match entry.split_once('=') {
            Some((name, url)) if !name.contains("://") => {
                (MetricsTarget::Member(name.to_string()), url)
            }
            _ => {
                let Some(endpoint) = endpoints.get(positional) else {
                    return Err(ConfigError::new(
                        field,
                        format!("{entry:?}: more bare URLs than endpoints; use NAME=URL"),
                    ));
                };
                positional += 1;
                (MetricsTarget::Endpoint(endpoint.clone()), entry)
            }
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e| ConfigError::new(&field, format!("{url:?}: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(ConfigError::new(
                field,
                format!("{url:?}: must be an http(s) URL"),
            ));
        }
        metrics_urls.push((target, url.to_string()));
    }
    Ok(metrics_urls)
}

/// Normalises `e` to `scheme://host:port` (no path); a bare `host:port` gets `https://` when TLS
/// settings are present, else `http://`.
pub fn normalize_endpoint(e: &str, tls: bool) -> Result<String, String> {
    let with_scheme = if e.contains("://") {
        e.to_string()
    } else if tls {
        format!("https://{e}")
    } else {
        format!("http://{e}")
    };
    let uri: http::Uri = with_scheme.parse().map_err(|err| format!("{err}"))?;
    let scheme = uri.scheme_str().unwrap_or_default();
    if scheme != "http" && scheme != "https" {
        return Err(format!("scheme {scheme:?} is not http or https"));
    }
    let host = uri.host().ok_or("no host")?;
    let port = uri.port_u16().ok_or("no port")?;
    if !matches!(uri.path(), "" | "/") {
        return Err("must not have a path".to_string());
    }
    Ok(format!("{scheme}://{host}:{port}"))
}
