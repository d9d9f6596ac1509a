//! `/metrics` through the prometheus-client crate. The request path keeps bumping plain atomics
//! (and the per-route histograms, which are the crate's own `HistogramWithExemplars`); at scrape
//! time one [`Collector`] walks that state and hands each family to the crate's encoders, which
//! own the format: names and `_total` suffixes, label escaping, and the two expositions.
//!
//! - **OpenMetrics 1.0** (`application/openmetrics-text`, what Prometheus asks for first): with
//!   exemplars on the latency buckets, each carrying the `trace_id` of a traced request that
//!   fell in the bucket, so a latency spike links to a trace.
//! - **Prometheus text 0.0.4** (`text/plain`), for every other client: the same families without
//!   exemplars.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// A sample's labels: names and raw values (the encoder escapes them).
pub type Labels = Vec<(&'static str, String)>;

/// The exemplar's labels: `trace_id`.
pub type TraceLabels = Vec<(&'static str, String)>;

/// A latency histogram with exemplars.
pub type Histogram = HistogramWithExemplars<TraceLabels>;

/// Which exposition the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    PrometheusText,
}

impl Format {
    /// From the scrape's `Accept` header: OpenMetrics when it is named, else the classic text.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::PrometheusText,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::PrometheusText => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// Where a scrape writes its families. Errors (a malformed name is the only one the encoders
/// raise) are kept and returned once the scrape ends.
pub struct Families<'a> {
    enc: DescriptorEncoder<'a>,
    result: fmt::Result,
}

impl Families<'_> {
    /// A counter family; `name` ends in `_total`, as it is exposed.
    pub fn counter(&mut self, name: &str, help: &str, samples: &[(Labels, u64)]) {
        let base = name.strip_suffix("_total").unwrap_or(name);
        self.family(base, help, MetricType::Counter, samples, |v, e| {
            ConstCounter::new(*v).encode(e)
        });
    }

    /// A gauge family.
    pub fn gauge(&mut self, name: &str, help: &str, samples: &[(Labels, i64)]) {
        self.family(name, help, MetricType::Gauge, samples, |v, e| {
            ConstGauge::new(*v).encode(e)
        });
    }

    /// A histogram family.
    pub fn histogram(&mut self, name: &str, help: &str, samples: &[(Labels, &Histogram)]) {
        self.family(name, help, MetricType::Histogram, samples, |h, e| {
            h.encode(e)
        });
    }

    fn family<V>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: &[(Labels, V)],
        encode: impl Fn(&V, MetricEncoder) -> fmt::Result,
    ) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            let mut m = self.enc.encode_descriptor(name, help, None, kind)?;
            match samples {
                [(labels, v)] if labels.is_empty() => encode(v, m),
                _ => {
                    for (labels, v) in samples {
                        encode(v, m.encode_family(labels)?)?;
                    }
                    Ok(())
                }
            }
        })();
    }
}

/// One sample without labels.
pub fn one<V>(value: V) -> Vec<(Labels, V)> {
    vec![(Vec::new(), value)]
}

/// A sample's labels from `(name, value)` pairs.
pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

struct Scrape<F>(F);

impl<F> fmt::Debug for Scrape<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrape")
    }
}

impl<F: Fn(&mut Families) + Send + Sync + 'static> Collector for Scrape<F> {
    fn encode(&self, enc: DescriptorEncoder) -> fmt::Result {
        let mut families = Families {
            enc,
            result: Ok(()),
        };
        (self.0)(&mut families);
        families.result
    }
}

/// Renders what `collect` writes, in `format`.
pub fn render(
    format: Format,
    collect: impl Fn(&mut Families) + Send + Sync + 'static,
) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(collect)));
    let mut out = String::with_capacity(16 * 1024);
    match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry)?,
        Format::PrometheusText => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(format: Format) -> String {
        render(format, |f| {
            f.counter(
                "x_events_total",
                "Events.",
                &[(labels([("name", "a\"b\\c\nd")]), 3)],
            );
            f.gauge("x_up", "Up.", &one(1));
            let h = Histogram::new([0.1, 1.0].into_iter());
            h.observe(
                0.05,
                Some(vec![(
                    "trace_id",
                    "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                )]),
                None,
            );
            h.observe(5.0, None, None);
            f.histogram("x_seconds", "Latency.", &[(labels([("route", "r")]), &h)]);
        })
        .unwrap()
    }

    #[test]
    fn label_values_are_escaped_and_counters_named_once() {
        let t = sample(Format::PrometheusText);
        assert!(t.contains(r#"x_events_total{name="a\"b\\c\nd"} 3"#), "{t}");
        assert!(t.contains("# TYPE x_events_total counter"), "{t}");
        assert!(t.contains("\nx_up 1\n"), "{t}");
        assert!(!t.contains("trace_id"), "no exemplars in 0.0.4: {t}");
        assert!(!t.contains("# EOF"), "{t}");
    }

    #[test]
    fn openmetrics_carries_the_trace_id_on_the_bucket_it_fell_in() {
        let t = sample(Format::OpenMetrics);
        let bucket = t
            .lines()
            .find(|l| l.starts_with(r#"x_seconds_bucket{le="0.1",route="r"}"#))
            .unwrap_or_else(|| panic!("{t}"));
        assert!(
            bucket.contains(r#"# {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.05"#),
            "{bucket}"
        );
        assert!(
            t.contains(r#"x_seconds_bucket{le="+Inf",route="r"} 2"#),
            "{t}"
        );
        assert!(t.ends_with("# EOF\n"), "{t}");
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("*/*")), Format::PrometheusText);
    }
}
