//! Every service's `/metrics`, in the Prometheus text format.
//!
//! Components keep their figures in atomics; at each scrape they add them
//! to one [`Exposition`] (the archiver, every node's shipper and agent, the
//! query service, …), which groups samples by family, so that `sluice up`
//! serving them all on one endpoint writes each family once. The text
//! itself (escaping, `# HELP`/`# TYPE`, number formats) is written by the
//! `prometheus-client` crate's encoder.

use std::borrow::Cow;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`Exposition::render`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What a metric family counts or measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (its name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// A sample's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    /// A count.
    Int(u64),
    /// Seconds, a ratio, or a count that may go below zero.
    Float(f64),
}

macro_rules! int_number {
    ($($t:ty),*) => {$(
        impl From<$t> for Number {
            fn from(v: $t) -> Number {
                Number::Int(v as u64)
            }
        }
    )*};
}
int_number!(u64, u32, usize);

impl From<i64> for Number {
    fn from(v: i64) -> Number {
        u64::try_from(v).map_or(Number::Float(v as f64), Number::Int)
    }
}

impl From<f64> for Number {
    fn from(v: f64) -> Number {
        Number::Float(v)
    }
}

#[derive(Debug, Clone)]
struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    samples: Vec<(Vec<(String, String)>, Number)>,
}

/// Metric families in the order first seen, each with its samples.
#[derive(Debug, Default, Clone)]
pub struct Exposition {
    families: Vec<Family>,
}

impl Exposition {
    /// An exposition with no families yet, the same as `Exposition::default()`.
    pub fn new() -> Self {
        Self::default()
    }

    fn family(&mut self, name: &'static str, kind: Kind, help: &'static str) -> &mut Family {
        match self.families.iter().position(|f| f.name == name) {
            Some(i) => &mut self.families[i],
            None => {
                self.families.push(Family {
                    name,
                    kind,
                    help,
                    samples: Vec::new(),
                });
                self.families.last_mut().expect("just pushed")
            }
        }
    }

    /// One sample of `name` with `labels`.
    pub fn add(
        &mut self,
        name: &'static str,
        kind: Kind,
        help: &'static str,
        labels: &[(&str, &str)],
        value: impl Into<Number>,
    ) {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.family(name, kind, help)
            .samples
            .push((labels, value.into()));
    }

    /// A counter sample.
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: impl Into<Number>,
    ) {
        self.add(name, Kind::Counter, help, labels, value);
    }

    /// A gauge sample.
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: impl Into<Number>,
    ) {
        self.add(name, Kind::Gauge, help, labels, value);
    }

    /// Declares a family that may have no samples (so it is documented).
    pub fn declare(&mut self, name: &'static str, kind: Kind, help: &'static str) {
        self.family(name, kind, help);
    }

    /// The Prometheus text format (0.0.4) of every family.
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            .expect("writing to a String does not fail");
        out
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            // The encoder adds `_total` to a counter's name.
            let (name, kind) = match family.kind {
                Kind::Counter => (
                    family.name.strip_suffix("_total").unwrap_or(family.name),
                    MetricType::Counter,
                ),
                Kind::Gauge => (family.name, MetricType::Gauge),
            };
            let mut metric = encoder.encode_descriptor(name, family.help, None, kind)?;
            for (labels, value) in &family.samples {
                let labels: Vec<(Cow<'_, str>, Cow<'_, str>)> = labels
                    .iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
                    .collect();
                let sample = metric.encode_family(&labels)?;
                match (family.kind, *value) {
                    (Kind::Counter, Number::Int(v)) => ConstCounter::new(v).encode(sample)?,
                    (Kind::Counter, Number::Float(v)) => ConstCounter::new(v).encode(sample)?,
                    (Kind::Gauge, Number::Int(v)) => {
                        ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(sample)?
                    }
                    (Kind::Gauge, Number::Float(v)) => ConstGauge::new(v).encode(sample)?,
                }
            }
        }
        Ok(())
    }
}

/// Seconds from Unix nanoseconds (0 stays 0: never).
pub fn seconds_from_nanos(nanos: i64) -> f64 {
    nanos as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_written_once_with_every_sample() {
        let mut e = Exposition::new();
        e.counter("a_total", "a help", &[("host", "n0")], 1u64);
        e.gauge("b", "b help", &[], 2.5);
        e.counter("a_total", "a help", &[("host", "n\"1\n")], 3u64);
        e.declare("c", Kind::Gauge, "c help");
        let text = e.render();
        assert_eq!(
            text,
            "# HELP a_total a help\n# TYPE a_total counter\na_total{host=\"n0\"} 1\n\
             a_total{host=\"n\\\"1\\n\"} 3\n# HELP b b help\n# TYPE b gauge\nb 2.5\n\
             # HELP c c help\n# TYPE c gauge\n"
        );
    }
}
