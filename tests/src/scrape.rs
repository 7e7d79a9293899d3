//! The control plane's `/metrics`, scraped and parsed with a strict OpenMetrics text parser
//! (`openmetrics-parser`: a grammar, so a malformed line fails the parse instead of being
//! skipped), flattened into samples a test can look up.

use std::net::SocketAddr;

pub use crate::exposition::{Sample, parse_exposition};
use crate::http;

/// One scrape's samples.
#[derive(Debug, Clone)]
pub struct Scrape(pub Vec<Sample>);

impl Scrape {
    /// `GET /metrics` at `addr` with `token`; panics unless it answers 200 in the OpenMetrics
    /// format and parses.
    pub fn get(addr: SocketAddr, token: &str) -> Self {
        let auth = format!("Bearer {token}");
        let r = http::send(
            addr,
            "GET",
            "/metrics",
            &[("Authorization", auth.as_str())],
            b"",
        )
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("application/openmetrics-text; version=1.0.0")),
            "{:?}",
            r.headers
        );
        Self(parse_exposition(&r.text()).unwrap_or_else(|e| panic!("/metrics does not parse: {e}")))
    }

    /// The value of the first sample `name` whose labels include every pair of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples(name, labels).next().map(|s| s.value)
    }

    /// The samples `name` whose labels include every pair of `labels`.
    pub fn samples<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }
}
