//! An OpenMetrics exposition, parsed with a strict parser (`openmetrics-parser`: a grammar, so
//! a malformed line, a missing `# EOF` or a sample of another family's type fails the parse
//! instead of being skipped) and flattened into samples a test can look up. Depends on nothing
//! else in this crate: the control plane's own tests include this file too
//! (`control/tests/metrics.rs`), so both read `/metrics` by one rule.

/// One sample of a scrape: its series name (`_total`, `_count`, `_sum` as exposed), labels
/// and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// Parses an exposition with `openmetrics-parser` (a grammar for the OpenMetrics text
/// format: a malformed line, a missing `# EOF`, a sample of another family's type all fail)
/// and flattens it into samples.
pub fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    use openmetrics_parser::OpenMetricsValue as V;
    let exposition =
        openmetrics_parser::openmetrics::parse_openmetrics(text).map_err(|e| format!("{e:?}"))?;
    let mut samples = Vec::new();
    for (name, family) in &exposition.families {
        for sample in family.iter_samples() {
            let labels = sample
                .get_labelset()
                .map_err(|e| format!("{e:?}"))?
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<std::collections::BTreeMap<_, _>>();
            let mut push = |suffix: &str, value: f64| {
                samples.push(Sample {
                    name: format!("{name}{suffix}"),
                    labels: labels.clone(),
                    value,
                });
            };
            match &sample.value {
                V::Counter(c) => push("_total", c.value.as_f64()),
                V::Gauge(n) | V::Unknown(n) => push("", n.as_f64()),
                V::Histogram(h) => {
                    push("_count", h.count.unwrap_or(0) as f64);
                    push("_sum", h.sum.as_ref().map_or(0.0, |s| s.as_f64()));
                }
                other => return Err(format!("unexpected {other:?} in {name}")),
            }
        }
    }
    Ok(samples)
}
