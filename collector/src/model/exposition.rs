//! The one way the collector writes Prometheus text. Every family on `/metrics` — the contract
//! series, the kernel histograms, the self-metrics, alerts, notifier, benchmark, access and
//! diagnosis series — is added to one [`Exposition`] at scrape time, from the state as it is
//! then, and the whole page is encoded once by the `prometheus` crate's `TextEncoder`.
//!
//! That encoder owns the escaping, so there is one rule for all of it: in a label value `\`,
//! `"` and a newline become `\\`, `\"` and `\n`; in HELP text `\` and a newline become `\\`
//! and `\n`. A histogram's buckets are written with `le` and always end with `le="+Inf"`.
//! A family is written once (one HELP, one TYPE) however many producers add samples to it,
//! and a family with no sample is left out.

use std::collections::HashMap;

use prometheus::{
    Encoder, TextEncoder,
    proto::{self, MetricFamily, MetricType},
};

/// A page of Prometheus text being assembled: families in the order first added, samples in
/// the order added.
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<MetricFamily>,
    index: HashMap<String, usize>,
}

impl Exposition {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    /// One gauge sample of family `name`.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut g = proto::Gauge::default();
        g.set_value(value);
        let mut m = metric(labels);
        m.set_gauge(g);
        self.push(name, help, MetricType::GAUGE, m);
    }

    /// One counter sample of family `name`.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let mut c = proto::Counter::default();
        c.set_value(value);
        let mut m = metric(labels);
        m.set_counter(c);
        self.push(name, help, MetricType::COUNTER, m);
    }

    /// One histogram of family `name`: `buckets` are `(upper bound, cumulative count)` in
    /// increasing bound order; the `+Inf` bucket is always written from `count` (an infinite bound
    /// given here is left out, so it appears once and spelled `+Inf`).
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) {
        let mut h = proto::Histogram::default();
        h.set_sample_count(count);
        h.set_sample_sum(sum);
        h.set_bucket(
            buckets
                .iter()
                .filter(|(le, _)| le.is_finite())
                .map(|&(le, cumulative)| {
                    let mut b = proto::Bucket::default();
                    b.set_upper_bound(le);
                    b.set_cumulative_count(cumulative);
                    b
                })
                .collect(),
        );
        let mut m = metric(labels);
        m.set_histogram(h);
        self.push(name, help, MetricType::HISTOGRAM, m);
    }

    /// Families gathered from a `prometheus::Registry` (the self-metrics counted as events
    /// happen), merged by name with what is already on the page.
    pub fn extend(&mut self, families: Vec<MetricFamily>) {
        for mut f in families {
            let help = f.help().to_string();
            let kind = f.get_field_type();
            for m in f.take_metric() {
                self.push(f.name(), &help, kind, m);
            }
        }
    }

    fn push(&mut self, name: &str, help: &str, kind: MetricType, m: proto::Metric) {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                let mut f = MetricFamily::default();
                f.set_name(name.to_string());
                f.set_help(help.to_string());
                f.set_field_type(kind);
                self.families.push(f);
                self.index.insert(name.to_string(), self.families.len() - 1);
                self.families.len() - 1
            }
        };
        let f = &mut self.families[i];
        if f.get_field_type() != kind {
            // Two producers disagree on a family's type: the page would not parse.
            tracing::error!(
                family = name,
                "Metric family added with two types; sample dropped."
            );
            return;
        }
        f.mut_metric().push(m);
    }

    /// The page as Prometheus text (format 0.0.4).
    pub fn encode(&self) -> String {
        let families: Vec<MetricFamily> = self
            .families
            .iter()
            .filter(|f| !f.get_metric().is_empty())
            .cloned()
            .collect();
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "Encoding metrics failed.");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// A sample's label set, in the order given (the order is not meaning; callers that want the
/// `prometheus` crate's own order sort by name first).
fn metric(labels: &[(&str, &str)]) -> proto::Metric {
    proto::Metric::from_label(
        labels
            .iter()
            .map(|&(k, v)| {
                let mut l = proto::LabelPair::default();
                l.set_name(k.to_string());
                l.set_value(v.to_string());
                l
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        let mut e = Exposition::new();
        e.counter("x_total", "X.", &[("channel", "a\\b\"c\nd")], 3.0);
        let text = e.encode();
        assert!(
            text.contains("x_total{channel=\"a\\\\b\\\"c\\nd\"} 3\n"),
            "{text}"
        );
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .map_err(|e| e.to_string());
        let Ok(parsed) = parsed else {
            panic!("{parsed:?}");
        };
        assert_eq!(parsed.samples.len(), 1);
        // prometheus-parse 0.2 keeps label values as written (it does not unescape).
        assert_eq!(
            parsed.samples[0].labels.get("channel"),
            Some("a\\\\b\\\"c\\nd"),
        );
    }

    #[test]
    fn help_escapes_backslash_and_newline_but_not_quotes() {
        let mut e = Exposition::new();
        e.gauge("g", "a \\ b\nc \"d\"", &[], 1.0);
        let text = e.encode();
        assert!(
            text.starts_with("# HELP g a \\\\ b\\nc \"d\"\n# TYPE g gauge\ng 1\n"),
            "{text}"
        );
    }

    #[test]
    fn histogram_buckets_use_le_and_end_with_plus_inf() {
        let mut e = Exposition::new();
        e.histogram(
            "h_seconds",
            "H.",
            &[("m", "0")],
            &[(0.001, 1), (0.5, 3), (f64::INFINITY, 4)],
            0.75,
            4,
        );
        let text = e.encode();
        let want = "h_seconds_bucket{m=\"0\",le=\"0.001\"} 1\n\
                    h_seconds_bucket{m=\"0\",le=\"0.5\"} 3\n\
                    h_seconds_bucket{m=\"0\",le=\"+Inf\"} 4\n\
                    h_seconds_sum{m=\"0\"} 0.75\n\
                    h_seconds_count{m=\"0\"} 4\n";
        assert!(text.contains(want), "{text}");
        assert_eq!(text.matches("le=\"+Inf\"").count(), 1);
    }

    #[test]
    fn a_family_is_written_once_and_empty_ones_not_at_all() {
        let mut e = Exposition::new();
        e.counter("a_total", "A.", &[("k", "1")], 1.0);
        e.gauge("b", "B.", &[], 2.0);
        e.counter("a_total", "A.", &[("k", "2")], 5.0);
        let registry = prometheus::Registry::new();
        let c = prometheus::IntCounterVec::new(prometheus::Opts::new("a_total", "A."), &["k"])
            .map_err(|e| e.to_string());
        let Ok(c) = c else { panic!("{c:?}") };
        assert!(registry.register(Box::new(c.clone())).is_ok());
        c.with_label_values(&["3"]).inc();
        let _ = prometheus::IntCounterVec::new(prometheus::Opts::new("unused", "U."), &["k"]);
        e.extend(registry.gather());
        let text = e.encode();
        assert_eq!(text.matches("# TYPE a_total counter").count(), 1, "{text}");
        assert_eq!(text.matches("a_total{").count(), 3, "{text}");
        // A type clash is refused, not written.
        e.gauge("a_total", "A.", &[("k", "4")], 1.0);
        assert!(!e.encode().contains("k=\"4\""));
        assert!(Exposition::new().encode().is_empty());
        // Labels keep the order given.
        let mut e = Exposition::new();
        e.counter("o_total", "O.", &[("z", "1"), ("a", "2")], 1.0);
        assert!(e.encode().contains("o_total{z=\"1\",a=\"2\"} 1\n"));
    }
}
