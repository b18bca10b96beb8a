//! Flags of `etcd-monitor mcp` (MCP over stdio, a thin client of a collector's REST API) and
//! their validation into a [`super::backend::Remote`].

use std::{path::PathBuf, time::Duration};

use clap::Parser;

use super::backend::Remote;
use crate::model::config::ConfigError;

/// Largest token file read, bytes.
const MAX_TOKEN_BYTES: u64 = 4096;

/// `etcd-monitor mcp`: an MCP server on stdin/stdout for an AI assistant, answering from a
/// running collector's REST API (`/mcp` on the collector serves the same tools over HTTP).
#[derive(Debug, Clone, Parser)]
#[command(name = "etcd-monitor mcp", version)]
pub struct McpFlags {
    /// Base URL of the collector's REST API (a port-forward works: `kubectl port-forward
    /// svc/etcd-monitor 8080`).
    #[arg(
        long,
        env = "ETCD_MONITOR_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,

    /// File holding the bearer token sent to the collector (a viewer token for reads when the
    /// collector has viewer tokens; an admin token for admin tools). Without it no token is
    /// sent: reads work on an open collector, admin tools only on a local one without admin
    /// tokens.
    #[arg(long, env = "ETCD_MONITOR_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// PEM bundle of the CA that signed the collector's certificate (`--api-cert-file`), for an
    /// `https://` URL; the system's roots are trusted too.
    #[arg(long, env = "ETCD_MONITOR_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Give up on one REST request after this long.
    #[arg(long, env = "ETCD_MONITOR_MCP_TIMEOUT", default_value = "30s")]
    pub timeout: String,
}

impl McpFlags {
    /// The REST client these flags describe; errors name the flag.
    pub fn remote(&self) -> Result<Remote, ConfigError> {
        let url = self.url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 8 {
            return Err(ConfigError::new(
                "--url",
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        }
        let timeout = crate::model::time::parse_duration(&self.timeout)
            .map_err(|e| ConfigError::new("--timeout", e.to_string()))?;
        if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "--timeout",
                format!("{} is not in 100ms..=1h", self.timeout),
            ));
        }
        let token = match &self.token_file {
            Some(path) => Some(read_token(path)?),
            None => None,
        };
        let ca =
            match &self.ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    ConfigError::new("--ca-file", format!("{}: {e}", path.display()))
                })?),
                None => None,
            };
        Remote::new(url, token, ca.as_deref(), timeout).map_err(|e| {
            let field = if ca.is_some() { "--ca-file" } else { "--url" };
            ConfigError::new(field, e.to_string())
        })
    }
}

fn read_token(path: &std::path::Path) -> Result<String, ConfigError> {
    let err = |m: String| ConfigError::new("--token-file", format!("{}: {m}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_TOKEN_BYTES {
        return Err(err(format!("larger than {MAX_TOKEN_BYTES} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(err("empty".to_string()));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> McpFlags {
        let mut all = vec!["etcd-monitor mcp"];
        all.extend_from_slice(args);
        McpFlags::try_parse_from(all).unwrap()
    }

    #[test]
    fn bad_values_name_their_flag() {
        let e = flags(&["--url=ftp://x"]).remote().unwrap_err();
        assert_eq!(e.field, "--url");
        let e = flags(&["--timeout=soon"]).remote().unwrap_err();
        assert_eq!(e.field, "--timeout");
        let e = flags(&["--timeout=1ms"]).remote().unwrap_err();
        assert_eq!(e.field, "--timeout");
        let e = flags(&["--token-file=/nonexistent/token"])
            .remote()
            .unwrap_err();
        assert_eq!(e.field, "--token-file");
        let e = flags(&["--ca-file=/nonexistent/ca.pem"])
            .remote()
            .unwrap_err();
        assert_eq!(e.field, "--ca-file");
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("ca.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = flags(&[&format!("--ca-file={}", junk.display())])
            .remote()
            .unwrap_err();
        assert_eq!(e.field, "--ca-file");
    }

    #[test]
    fn the_token_file_is_read_trimmed_and_empty_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "  s3cret\n").unwrap();
        assert_eq!(read_token(&path).unwrap(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_token(&path).unwrap_err().message.contains("empty"));
        let ok = flags(&["--url=http://127.0.0.1:1/", "--timeout=2s"]).remote();
        assert!(ok.is_ok());
    }
}
