//! Clients for `ctl` and the safe operations, built with the collector's own connection code
//! ([`crate::sources::etcd::client::connect`]) so endpoints, TLS and auth behave exactly as in the
//! collector.

use std::time::Duration;

use etcd_client::Client;

use crate::model::config::ClusterConfig;

/// Why a client could not be had.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{url}: {message}")]
pub struct ConnectError {
    /// Endpoint.
    pub url: String,
    /// The collector's explanation (TLS, auth, timeout, refused).
    pub message: String,
}

/// A client to exactly `url`, whose requests may take up to `request_timeout` (a defragment of
/// a large database takes far longer than the dial timeout); connecting still has to finish
/// within the cluster's dial timeout.
pub async fn member_client(
    config: &ClusterConfig,
    url: &str,
    request_timeout: Duration,
) -> Result<Client, ConnectError> {
    let mut c = config.clone();
    c.dial_timeout = request_timeout.max(config.dial_timeout);
    match tokio::time::timeout(
        config.dial_timeout,
        crate::sources::etcd::client::connect(&c, url),
    )
    .await
    {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(message)) => Err(ConnectError {
            url: url.to_string(),
            message,
        }),
        Err(_) => Err(ConnectError {
            url: url.to_string(),
            message: format!("no answer within {:?}", config.dial_timeout),
        }),
    }
}

/// A client to the first endpoint of `config` that answers (in `--endpoints` order).
pub async fn any_client(
    config: &ClusterConfig,
    request_timeout: Duration,
) -> Result<(String, Client), ConnectError> {
    let mut last = None;
    for url in &config.endpoints {
        match member_client(config, url, request_timeout).await {
            Ok(mut client) => {
                // connect() is lazy for some transports: prove the member answers.
                match tokio::time::timeout(config.dial_timeout, client.status()).await {
                    Ok(Ok(_)) => return Ok((url.clone(), client)),
                    Ok(Err(e)) => {
                        last = Some(ConnectError {
                            url: url.clone(),
                            message: crate::sources::etcd::client::explain(&e, config.tls.as_ref()),
                        })
                    }
                    Err(_) => {
                        last = Some(ConnectError {
                            url: url.clone(),
                            message: format!("no answer within {:?}", config.dial_timeout),
                        })
                    }
                }
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(ConnectError {
        url: String::new(),
        message: "no endpoints".to_string(),
    }))
}
