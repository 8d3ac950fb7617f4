//! The two text formats `/metrics` speaks: OpenMetrics, which the metrics
//! library writes and which Prometheus asks for first, and the Prometheus
//! text format (0.0.4), which every other scraper and `promtool` read, and
//! which is the default.

use std::collections::BTreeSet;

/// A text format of the exposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// it (with a quality above zero), Prometheus text otherwise.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let wants_openmetrics = accept.unwrap_or("").split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let kind = parts.next().unwrap_or("");
            let refused = parts.any(|p| p.strip_prefix("q=").is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0)));
            kind.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        });
        if wants_openmetrics { Format::OpenMetrics } else { Format::Prometheus }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Rewrites OpenMetrics text as Prometheus text. The two differ, for what
/// this router serves, in three ways: a counter family is named with its
/// `_total` suffix in `# HELP` and `# TYPE` (OpenMetrics names it without,
/// its samples carry the suffix in both); there is no `# EOF` or `# UNIT`;
/// and the type `unknown` is called `untyped`.
pub fn to_prometheus(openmetrics: &str) -> String {
    let counters: BTreeSet<&str> =
        openmetrics.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        match comment(line) {
            Some((keyword, name, rest)) if counters.contains(name) => {
                out.push_str(&format!("# {keyword} {name}_total{rest}"));
            }
            Some(("TYPE", name, " unknown")) => out.push_str(&format!("# TYPE {name} untyped")),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A `# HELP` or `# TYPE` line's keyword, family name and the rest of the
/// line (from the space after the name).
fn comment(line: &str) -> Option<(&str, &str, &str)> {
    let body = line.strip_prefix("# ")?;
    let (keyword, after) = body.split_once(' ')?;
    if keyword != "HELP" && keyword != "TYPE" {
        return None;
    }
    let split = after.find(' ').unwrap_or(after.len());
    Some((keyword, &after[..split], &after[split..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_their_suffix_and_the_end_marker_goes() {
        let openmetrics = "# HELP a_requests Requests answered.\n# TYPE a_requests counter\n\
                           a_requests_total{method=\"GET\"} 3\n# HELP a_epoch The epoch.\n# TYPE a_epoch gauge\n\
                           a_epoch 7\n# TYPE a_odd unknown\na_odd 1\n# UNIT a_epoch seconds\n# EOF\n";
        let expected = "# HELP a_requests_total Requests answered.\n# TYPE a_requests_total counter\n\
                        a_requests_total{method=\"GET\"} 3\n# HELP a_epoch The epoch.\n# TYPE a_epoch gauge\n\
                        a_epoch 7\n# TYPE a_odd untyped\na_odd 1\n";
        assert_eq!(to_prometheus(openmetrics), expected);
    }

    #[test]
    fn openmetrics_only_for_a_scraper_that_asks_for_it() {
        let prometheus_server = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prometheus_server)), Format::OpenMetrics);
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Prometheus);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(Format::from_accept(Some("application/openmetrics-text; q=0, text/plain")), Format::Prometheus);
    }
}
