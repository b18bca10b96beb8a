//! Load on etcd through its JSON gRPC gateway (`POST /v3/kv/put`), from plain threads.

use anyhow::Context;
use base64::Engine as _;

/// Puts `count` keys `<prefix><i>` with `value_size`-byte values, spread over 8 threads and
/// every endpoint. Fails on the first rejected put.
pub fn put_many(
    endpoints: &str,
    prefix: &str,
    count: usize,
    value_size: usize,
) -> anyhow::Result<()> {
    let endpoints: Vec<String> = endpoints.split(',').map(str::to_string).collect();
    let threads = 8.min(count.max(1));
    let value = base64::engine::general_purpose::STANDARD.encode(vec![b'v'; value_size]);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for t in 0..threads {
            let endpoints = &endpoints;
            let value = &value;
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                let mut i = t;
                while i < count {
                    let url = format!("{}/v3/kv/put", endpoints[i % endpoints.len()]);
                    let key =
                        base64::engine::general_purpose::STANDARD.encode(format!("{prefix}{i}"));
                    let body = format!(r#"{{"key":"{key}","value":"{value}"}}"#);
                    let resp = crate::http::post_json(&url, &body)?;
                    anyhow::ensure!(
                        resp.status == 200,
                        "put {i} via {url}: {} {}",
                        resp.status,
                        resp.body
                    );
                    i += threads;
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
        }
        Ok(())
    })
    .context("put load")
}
