//! The Prometheus text format, shared by every service's `/metrics`.
//!
//! One [`Exposition`] gathers samples from several sources (the archiver,
//! every node's shipper and agent, the query service, …) and writes each
//! metric family once, `# HELP` and `# TYPE` first, as the format requires
//! when `sluice up` serves them all on one endpoint.

use std::fmt::{Display, Write as _};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

struct Family {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    samples: Vec<String>,
}

/// Metric families in the order first seen, each with its samples.
#[derive(Default)]
pub struct Exposition {
    families: Vec<Family>,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// One sample of `name` with `labels` (values escaped here).
    pub fn add(
        &mut self,
        name: &'static str,
        kind: Kind,
        help: &'static str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) {
        let family = match self.families.iter().position(|f| f.name == name) {
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
        };
        let mut sample = String::from(name);
        if !labels.is_empty() {
            sample.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    sample.push(',');
                }
                let _ = write!(sample, "{key}=\"{}\"", escape(value));
            }
            sample.push('}');
        }
        let _ = write!(sample, " {value}");
        family.samples.push(sample);
    }

    /// A counter sample.
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) {
        self.add(name, Kind::Counter, help, labels, value);
    }

    /// A gauge sample.
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) {
        self.add(name, Kind::Gauge, help, labels, value);
    }

    /// Declares a family that may have no samples (so it is documented).
    pub fn declare(&mut self, name: &'static str, kind: Kind, help: &'static str) {
        if !self.families.iter().any(|f| f.name == name) {
            self.families.push(Family {
                name,
                kind,
                help,
                samples: Vec::new(),
            });
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.families {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
            for sample in &f.samples {
                out.push_str(sample);
                out.push('\n');
            }
        }
        out
    }
}

/// A label value: backslash, quote and newline escaped.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Seconds with millisecond precision, from Unix nanoseconds (0 stays 0).
pub fn seconds_from_nanos(nanos: i64) -> String {
    format!("{:.3}", nanos as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_written_once_with_every_sample() {
        let mut e = Exposition::new();
        e.counter("a_total", "a help", &[("host", "n0")], 1);
        e.gauge("b", "b help", &[], 2.5);
        e.counter("a_total", "a help", &[("host", "n\"1\n")], 3);
        e.declare("c", Kind::Gauge, "c help");
        assert_eq!(
            e.render(),
            "# HELP a_total a help\n# TYPE a_total counter\na_total{host=\"n0\"} 1\n\
             a_total{host=\"n\\\"1\\n\"} 3\n# HELP b b help\n# TYPE b gauge\nb 2.5\n\
             # HELP c c help\n# TYPE c gauge\n"
        );
    }
}
