//! Reading the Grafana dashboard the project ships (`deploy/grafana/etcd-monitor.json`).

use anyhow::Context;

/// The dashboard JSON.
pub fn dashboard(root: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let path = root.join("deploy/grafana/etcd-monitor.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// Every panel, rows' nested panels included.
pub fn panels(d: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Each expression of the dashboard with its panel title, Grafana's variables replaced by
/// values PromQL takes.
pub fn exprs(d: &serde_json::Value) -> Vec<(String, String)> {
    panels(d)
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| Some((title.clone(), t["expr"].as_str()?.to_string())))
        })
        .map(|(title, e)| {
            let e = e
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "1m")
                .replace("$__range", "1h")
                .replace("${cluster}", ".*")
                .replace("$cluster", ".*")
                .replace("$member", ".*")
                .replace("$file", ".*");
            (title, e)
        })
        .collect()
}
