//! A minimal blocking HTTP/1.1 client for loopback test servers (no TLS, no keep-alive).

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use anyhow::{Context, bail};

/// A response: status code and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Body as text.
    pub body: String,
}

impl Response {
    /// Parses the body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("body is not JSON: {}", self.body))
    }
}

/// `GET http://host:port/path`.
pub fn get(url: &str) -> anyhow::Result<Response> {
    request("GET", url, None)
}

/// `POST` with a JSON body.
pub fn post_json(url: &str, body: &str) -> anyhow::Result<Response> {
    request("POST", url, Some(body))
}

/// Sends one request and reads the whole response.
pub fn request(method: &str, url: &str, body: Option<&str>) -> anyhow::Result<Response> {
    request_with(method, url, body, &[])
}

/// Like [`request`], with extra headers (e.g. `("Authorization", "Bearer x")`).
pub fn request_with(
    method: &str,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> anyhow::Result<Response> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream =
        TcpStream::connect(authority).with_context(|| format!("connect {authority}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, payload)) = text.split_once("\r\n\r\n") else {
        bail!("malformed response from {url}: {text}");
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(payload)
    } else {
        payload.to_string()
    };
    Ok(Response { status, body })
}

fn dechunk(mut payload: &str) -> String {
    let mut out = String::new();
    while let Some((size_line, rest)) = payload.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        payload = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Value of the first Prometheus sample named `name` whose labels contain every `label="value"`
/// pair in `labels`, summed over all matching series.
pub fn prom_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(pair) => pair,
            None => continue,
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, l)) => (m, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let wanted = labels.iter().all(|(k, v)| {
            label_text
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        });
        if wanted && let Ok(v) = value.parse::<f64>() {
            found = true;
            sum += v;
        }
    }
    found.then_some(sum)
}

/// Buckets `(le, cumulative count)` of histogram `name` (without `_bucket`) for series whose
/// labels contain `labels`, summed over matching series, sorted by `le` (`+Inf` last).
pub fn prom_buckets(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let bucket_name = format!("{name}_bucket");
    let mut sums: Vec<(f64, f64)> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || !line.starts_with(&bucket_name) {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((metric, label_text)) = series.split_once('{') else {
            continue;
        };
        if metric != bucket_name {
            continue;
        }
        let label_text = label_text.trim_end_matches('}');
        let pairs: Vec<&str> = label_text.split(',').collect();
        if !labels
            .iter()
            .all(|(k, v)| pairs.contains(&format!("{k}=\"{v}\"").as_str()))
        {
            continue;
        }
        let Some(le) = pairs
            .iter()
            .find_map(|p| p.strip_prefix("le=\""))
            .map(|s| s.trim_end_matches('"'))
        else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        match sums.iter_mut().find(|(l, _)| *l == le) {
            Some((_, total)) => *total += v,
            None => sums.push((le, v)),
        }
    }
    sums.sort_by(|a, b| a.0.total_cmp(&b.0));
    sums
}

/// Element-wise `after - before` of two bucket lists with the same bounds.
pub fn bucket_delta(after: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|(le, v)| {
            let old = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, v)| *v);
            (*le, v - old)
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, interpolated linearly inside the bucket as
/// Prometheus' `histogram_quantile` does. `None` without observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev_le = 0.0;
    let mut prev_count = 0.0;
    for (le, count) in buckets {
        if *count >= rank {
            if le.is_infinite() {
                return Some(prev_le);
            }
            let in_bucket = count - prev_count;
            let fraction = if in_bucket > 0.0 {
                (rank - prev_count) / in_bucket
            } else {
                1.0
            };
            return Some(prev_le + (le - prev_le) * fraction);
        }
        prev_le = *le;
        prev_count = *count;
    }
    Some(prev_le)
}
