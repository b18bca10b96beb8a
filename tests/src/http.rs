//! A blocking HTTP client for loopback test servers (reqwest) and Prometheus text helpers
//! (prometheus-parse).
//!
//! Every call runs on its own short-lived thread, so tests may call these from inside a Tokio
//! runtime too (reqwest's blocking client must not run on a runtime thread). No connection is
//! reused between calls, as test servers come and go on the same ports, and no proxy is used.

use std::time::Duration;

use anyhow::Context;
use prometheus_parse::{Sample, Scrape, Value};

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

/// Sends one request and reads the whole response. A non-2xx status is a response, not an
/// error; an error means no response (refused, timed out after 30 s, malformed).
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
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .with_context(|| format!("bad HTTP method {method:?}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| send(method, url, body, headers))
            .join()
            .map_err(|_| anyhow::anyhow!("the HTTP client thread panicked ({url})"))?
    })
}

fn send(
    method: reqwest::Method,
    url: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> anyhow::Result<Response> {
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let mut req = client
        .request(method.clone(), url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.unwrap_or("").to_owned());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let response = req.send().with_context(|| format!("{method} {url}"))?;
    let status = response.status().as_u16();
    let body = response
        .text()
        .with_context(|| format!("reading the body of {method} {url}"))?;
    Ok(Response { status, body })
}

fn parse(text: &str) -> Vec<Sample> {
    // Reading from a string cannot fail, so neither can the parse.
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .map(|s| s.samples)
        .unwrap_or_default()
}

fn has_labels(sample: &Sample, labels: &[(&str, &str)]) -> bool {
    labels.iter().all(|(k, v)| sample.labels.get(k) == Some(*v))
}

fn parse_le(le: &str) -> Option<f64> {
    match le {
        "+Inf" => Some(f64::INFINITY),
        other => other.parse().ok(),
    }
}

/// `(le, cumulative count)` of every histogram series named `name` (without `_bucket`) whose
/// labels contain `labels`, whether the text declared it `# TYPE … histogram` or not.
fn bucket_counts(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let bucket_name = format!("{name}_bucket");
    let mut out = Vec::new();
    for s in samples.iter().filter(|s| has_labels(s, labels)) {
        match &s.value {
            Value::Histogram(counts) if s.metric == name => {
                out.extend(counts.iter().map(|c| (c.less_than, c.count)));
            }
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) if s.metric == bucket_name => {
                if let Some(le) = s.labels.get("le").and_then(parse_le) {
                    out.push((le, *v));
                }
            }
            _ => {}
        }
    }
    out
}

/// Value of the Prometheus samples named `name` whose labels contain every `label="value"`
/// pair in `labels`, summed over all matching series; `None` when no series matches.
pub fn prom_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let samples = parse(text);
    let mut found = false;
    let mut sum = 0.0;
    for s in samples
        .iter()
        .filter(|s| s.metric == name && has_labels(s, labels))
    {
        if let Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) = s.value {
            found = true;
            sum += v;
        }
    }
    // `NAME_bucket{le="…"}` of a declared histogram: prometheus-parse folds those lines into
    // the histogram, so look there too.
    if let Some(base) = name.strip_suffix("_bucket") {
        let wanted_le = labels
            .iter()
            .find(|(k, _)| *k == "le")
            .and_then(|(_, v)| parse_le(v));
        let others: Vec<(&str, &str)> =
            labels.iter().copied().filter(|(k, _)| *k != "le").collect();
        for s in samples
            .iter()
            .filter(|s| s.metric == base && has_labels(s, &others))
        {
            if let Value::Histogram(counts) = &s.value {
                for c in counts {
                    if wanted_le.is_none_or(|le| le == c.less_than) {
                        found = true;
                        sum += c.count;
                    }
                }
            }
        }
    }
    found.then_some(sum)
}

/// Buckets `(le, cumulative count)` of histogram `name` (without `_bucket`) for series whose
/// labels contain `labels`, summed over matching series, sorted by `le` (`+Inf` last).
pub fn prom_buckets(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let mut sums: Vec<(f64, f64)> = Vec::new();
    for (le, v) in bucket_counts(&parse(text), name, labels) {
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

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader, Read, Write},
        net::TcpListener,
    };

    use super::*;

    const TEXT: &str = "\
# HELP lat Latency.
# TYPE lat histogram
lat_bucket{member=\"a\",le=\"0.1\"} 1
lat_bucket{member=\"a\",le=\"1\"} 3
lat_bucket{member=\"a\",le=\"+Inf\"} 4
lat_bucket{member=\"b\",le=\"0.1\"} 2
lat_bucket{member=\"b\",le=\"1\"} 2
lat_bucket{member=\"b\",le=\"+Inf\"} 2
lat_sum{member=\"a\"} 2.5
lat_count{member=\"a\"} 4
# TYPE up gauge
up{member=\"a\"} 1
up{member=\"b\"} 0
untyped_bucket{le=\"5\"} 7
untyped_bucket{le=\"+Inf\"} 9
";

    #[test]
    fn sums_series_matching_the_labels() {
        assert_eq!(prom_sum(TEXT, "up", &[]), Some(1.0));
        assert_eq!(prom_sum(TEXT, "up", &[("member", "b")]), Some(0.0));
        assert_eq!(prom_sum(TEXT, "up", &[("member", "c")]), None);
        assert_eq!(prom_sum(TEXT, "lat_count", &[("member", "a")]), Some(4.0));
        assert_eq!(prom_sum(TEXT, "missing", &[]), None);
        // Bucket lines of a declared histogram are still samples by name.
        assert_eq!(prom_sum(TEXT, "lat_bucket", &[("le", "1")]), Some(5.0));
        assert_eq!(prom_sum(TEXT, "untyped_bucket", &[("le", "5")]), Some(7.0));
    }

    #[test]
    fn buckets_are_summed_per_bound_and_sorted() {
        assert_eq!(
            prom_buckets(TEXT, "lat", &[]),
            vec![(0.1, 3.0), (1.0, 5.0), (f64::INFINITY, 6.0)]
        );
        assert_eq!(
            prom_buckets(TEXT, "lat", &[("member", "a")]),
            vec![(0.1, 1.0), (1.0, 3.0), (f64::INFINITY, 4.0)]
        );
        assert_eq!(
            prom_buckets(TEXT, "untyped", &[]),
            vec![(5.0, 7.0), (f64::INFINITY, 9.0)]
        );
        assert!(prom_buckets(TEXT, "lat", &[("member", "c")]).is_empty());
    }

    /// Serves one canned response and returns the request it read.
    fn serve_once(response: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("read the request");
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().expect("content length");
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).expect("read the body");
            let mut stream = reader.into_inner();
            stream.write_all(response.as_bytes()).expect("write");
            head + &String::from_utf8_lossy(&body)
        });
        (url, handle)
    }

    #[test]
    fn posts_with_headers_and_reads_a_chunked_error_response() {
        let (url, server) = serve_once(
            "HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             5\r\n{\"err\r\n9\r\nor\": \"x\"}\r\n0\r\n\r\n",
        );
        let r = request_with(
            "POST",
            &format!("{url}/p?q=1"),
            Some("{}"),
            &[("X-Test", "yes")],
        )
        .expect("a response");
        let seen = server.join().expect("server thread");
        assert_eq!(r.status, 400);
        assert_eq!(r.json().expect("JSON body")["error"], "x");
        assert!(seen.starts_with("POST /p?q=1 HTTP/1.1\r\n"), "{seen}");
        assert!(seen.to_ascii_lowercase().contains("x-test: yes"), "{seen}");
        assert!(seen.ends_with("{}"), "{seen}");
    }

    #[test]
    fn a_refused_connection_is_an_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        assert!(get(&format!("http://127.0.0.1:{port}/")).is_err());
    }
}
