//! `GET /metrics`: the whole system's health in the OpenMetrics text format (what Prometheus
//! scrapes), from one scrape.
//!
//! [`Metrics`] holds one `prometheus-client` registry per [`AppState`] (no global recorder, so
//! every test app counts on its own). Handlers and loops count events as they happen (requests
//! by route template, sign-in refusals, publisher writes through [`MeteredSink`], usage
//! batches); what the database knows (outbox depths and ages, the list version, the file's
//! size) is read at the scrape; what the edge reports of itself arrives inside its signed usage
//! batches ([`Metrics::edge_reported`], `shared::usage::EdgeHealth`) and is kept for a bounded
//! number of isolates. Every label value comes from a closed set (route templates, a fixed
//! method list, status codes, publisher and reason names) or from a signed batch, capped, so no
//! caller can grow the registry. `docs/operations.md` lists each metric and its alert.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use shared::usage::EdgeHealth;

use crate::error::AppError;
use crate::publish::{Sink, SinkError};
use crate::secret::Secret;
use crate::skew::ClockSkew;
use crate::state::{AppState, Settings};
use crate::store::{StoreError, metrics as db};

/// The path of the scrape endpoint.
pub const PATH: &str = "/metrics";
/// The content type of what `prometheus-client` writes: the OpenMetrics text format, which
/// Prometheus scrapes natively (it is the Prometheus text format plus `# EOF`, `_total`
/// counters and units).
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Edge isolates tracked at once; the least recently heard from is forgotten beyond it.
pub const MAX_ISOLATES: usize = 64;
/// An isolate not heard from for this long (ms) is forgotten at the next scrape.
pub const ISOLATE_EXPIRY_MS: u64 = 10 * 60 * 1000;
/// The label of a request that matched no route: every such path counts under it.
const UNMATCHED: &str = "unmatched";
/// Latency buckets, seconds: from a cached read to a slow sign-in hash.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PublisherLabels {
    publisher: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    publisher: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IsolateLabels {
    isolate: String,
}

/// What the control plane last heard from one edge isolate.
#[derive(Debug, Clone, Copy)]
struct Isolate {
    /// Its report's time, on its clock (ms): a newer report replaces an older one.
    at_ms: u64,
    /// When we heard it, on our clock (ms): for expiry.
    heard_ms: u64,
    limiter_failures: u64,
    shard_age_secs: Option<u64>,
}

/// The control plane's metrics.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    http_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    sign_in_failures: Family<ReasonLabels, Counter>,
    sign_in_lockouts: Counter,
    writes: Family<WriteLabels, Counter>,
    usage_batches: Family<ResultLabels, Counter>,
    ingest_lag: Gauge<f64, AtomicU64>,
    outbox_depth: Family<PublisherLabels, Gauge>,
    outbox_oldest: Family<PublisherLabels, Gauge>,
    list_version: Gauge,
    database_bytes: Gauge,
    edge: Mutex<HashMap<String, Isolate>>,
    edge_isolates: Gauge,
    edge_limiter_failures: Counter,
    edge_shard_age: Family<IsolateLabels, Gauge>,
    edge_shard_age_max: Gauge,
    edge_meter_retries: Counter,
    edge_reports: Counter,
    /// Control-plane-vs-edge clock skew, measured on every signed usage batch.
    pub skew: ClockSkew,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics(..)")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(&Settings::default())
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The method as a label: one of a fixed set, so an invented method adds no label value.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl Metrics {
    /// Fresh metrics, registered under their names, with the skew thresholds of `settings`.
    pub fn new(settings: &Settings) -> Self {
        let mut registry = Registry::with_prefix("lynxo");
        let metrics = Self {
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(latency_histogram),
            sign_in_failures: Family::default(),
            sign_in_lockouts: Counter::default(),
            writes: Family::default(),
            usage_batches: Family::default(),
            ingest_lag: Gauge::default(),
            outbox_depth: Family::default(),
            outbox_oldest: Family::default(),
            list_version: Gauge::default(),
            database_bytes: Gauge::default(),
            edge: Mutex::new(HashMap::new()),
            edge_isolates: Gauge::default(),
            edge_limiter_failures: Counter::default(),
            edge_shard_age: Family::default(),
            edge_shard_age_max: Gauge::default(),
            edge_meter_retries: Counter::default(),
            edge_reports: Counter::default(),
            skew: ClockSkew::new(settings.skew_ready_secs, settings.skew_warn_secs),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            metrics.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            metrics.http_seconds.clone(),
        );
        r.register(
            "sign_in_failures",
            "Refused sign-ins, by reason (wrong_credentials, locked, busy)",
            metrics.sign_in_failures.clone(),
        );
        r.register(
            "sign_in_lockouts",
            "Sign-ins refused because a failure budget is spent (a lockout in force)",
            metrics.sign_in_lockouts.clone(),
        );
        r.register(
            "publish_writes",
            "Writes to the edge by publisher (revocations, limits, checkpoint) and result (ok, failed)",
            metrics.writes.clone(),
        );
        r.register(
            "usage_batches",
            "Usage batches from the edge, by result (applied, duplicate, refused)",
            metrics.usage_batches.clone(),
        );
        r.register(
            "usage_ingest_lag_seconds",
            "Age of the oldest minute of counts in the last applied usage batch",
            metrics.ingest_lag.clone(),
        );
        r.register(
            "outbox_depth",
            "Entries waiting to reach the edge, per publisher (revocations, limits)",
            metrics.outbox_depth.clone(),
        );
        r.register(
            "outbox_oldest_age_seconds",
            "How long the oldest waiting entry has waited, per publisher",
            metrics.outbox_oldest.clone(),
        );
        r.register(
            "revocation_list_version",
            "Newest revocation shard version published",
            metrics.list_version.clone(),
        );
        r.register(
            "database_size_bytes",
            "Size of the SQLite database file (page_count * page_size)",
            metrics.database_bytes.clone(),
        );
        r.register(
            "edge_isolates",
            "Edge isolates that reported in their usage batches in the last 10 minutes",
            metrics.edge_isolates.clone(),
        );
        r.register(
            "edge_limiter_failures",
            "Rate-limiter calls that failed at the edge, as the isolates reported them",
            metrics.edge_limiter_failures.clone(),
        );
        r.register(
            "edge_shard_age_seconds",
            "Age of the oldest revocation shard each edge isolate holds",
            metrics.edge_shard_age.clone(),
        );
        r.register(
            "edge_shard_age_max_seconds",
            "Age of the oldest revocation shard any reporting edge isolate holds",
            metrics.edge_shard_age_max.clone(),
        );
        r.register(
            "edge_meter_retries",
            "Usage batch deliveries the edge's meters retried",
            metrics.edge_meter_retries.clone(),
        );
        r.register(
            "edge_reports",
            "Health reports received from edge isolates",
            metrics.edge_reports.clone(),
        );
        metrics.skew.register(r);
        Self {
            registry,
            ..metrics
        }
    }

    /// Counts a refused sign-in: `reason` is `wrong_credentials`, `locked` or `busy`.
    pub fn sign_in_failed(&self, reason: &'static str) {
        self.sign_in_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
        if reason == "locked" {
            self.sign_in_lockouts.inc();
        }
    }

    /// Counts a usage batch: `applied`, `duplicate` (applied before) or `refused`.
    pub fn usage_batch(&self, result: &'static str) {
        self.usage_batches
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Records how far behind the counts of an applied batch are.
    pub fn ingest_lag(&self, seconds: f64) {
        self.ingest_lag.set(seconds.max(0.0));
    }

    /// Takes in what the edge reported of itself in an applied batch, heard at `now_ms`.
    /// Counters add only what is new since the isolate's previous report; the per-isolate
    /// table is capped at [`MAX_ISOLATES`], the least recently heard from going first.
    pub fn edge_reported(&self, health: &EdgeHealth, now_ms: u64) {
        self.edge_meter_retries.inc_by(health.meter_retries);
        let Ok(mut edge) = self.edge.lock() else {
            return;
        };
        for report in &health.isolates {
            self.edge_reports.inc();
            let known = edge.get(&report.isolate).copied();
            if known.is_some_and(|k| k.at_ms > report.at_ms) {
                continue;
            }
            let before = known.map_or(0, |k| k.limiter_failures);
            self.edge_limiter_failures
                .inc_by(report.limiter_failures.saturating_sub(before));
            if known.is_none() && edge.len() >= MAX_ISOLATES {
                if let Some(oldest) = edge
                    .iter()
                    .min_by_key(|(_, i)| i.heard_ms)
                    .map(|(k, _)| k.clone())
                {
                    edge.remove(&oldest);
                }
            }
            edge.insert(
                report.isolate.clone(),
                Isolate {
                    at_ms: report.at_ms,
                    heard_ms: now_ms,
                    limiter_failures: report.limiter_failures,
                    shard_age_secs: report.shard_age_secs,
                },
            );
        }
    }

    /// Sets the gauges of the edge's isolates at `now_ms`, forgetting the expired ones.
    fn refresh_edge(&self, now_ms: u64) {
        let Ok(mut edge) = self.edge.lock() else {
            return;
        };
        edge.retain(|_, i| now_ms.saturating_sub(i.heard_ms) < ISOLATE_EXPIRY_MS);
        self.edge_shard_age.clear();
        let mut max = 0;
        for (id, isolate) in edge.iter() {
            if let Some(age) = isolate.shard_age_secs {
                // Reported at `at_ms`: the shard has aged since by the time we held the report.
                let age = age.saturating_add(now_ms.saturating_sub(isolate.heard_ms) / 1000);
                max = max.max(age);
                self.edge_shard_age
                    .get_or_create(&IsolateLabels {
                        isolate: id.clone(),
                    })
                    .set(i64::try_from(age).unwrap_or(i64::MAX));
            }
        }
        self.edge_isolates
            .set(i64::try_from(edge.len()).unwrap_or(i64::MAX));
        self.edge_shard_age_max
            .set(i64::try_from(max).unwrap_or(i64::MAX));
    }

    /// Sets the gauges the database knows.
    fn refresh_store(&self, g: db::Gauges) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for (publisher, depth, oldest) in [
            (
                "revocations",
                g.revocations_pending,
                g.revocations_oldest_secs,
            ),
            ("limits", g.limits_pending, g.limits_oldest_secs),
        ] {
            let labels = PublisherLabels { publisher };
            self.outbox_depth.get_or_create(&labels).set(gauge(depth));
            self.outbox_oldest.get_or_create(&labels).set(gauge(oldest));
        }
        self.list_version.set(gauge(g.list_version));
        self.database_bytes.set(gauge(g.database_bytes));
    }

    /// Counts one write of `publisher` to the edge.
    fn write(&self, publisher: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.writes
            .get_or_create(&WriteLabels { publisher, result })
            .inc();
    }

    /// The exposition text.
    fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Tags a response with the route template that answered it; layered with `route_layer`, so
/// it runs only for a request that matched a route (for which axum sets [`MatchedPath`]).
pub async fn tag_route(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(matched) = matched {
        response.extensions_mut().insert(matched);
    }
    response
}

/// Counts every request and its latency under the route template that answered it (never the
/// raw path: a path no route matched counts as `unmatched`).
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let status = response.status().as_u16();
    let metrics = &state.metrics;
    metrics
        .http_seconds
        .get_or_create(&RouteLabels {
            route: route.clone(),
            method,
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status,
        })
        .inc();
    response
}

/// Whether `headers` carry `Authorization: Bearer <token>`, compared in constant time.
fn presents(headers: &HeaderMap, token: &Secret) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    subtle::ConstantTimeEq::ct_eq(given, token.expose().as_bytes()).into()
}

#[utoipa::path(
    get,
    path = "/metrics",
    summary = "Prometheus metrics",
    description = "The control plane's and the edge's metrics in the Prometheus text format \
        (`docs/operations.md`). Needs the metrics token (`LYNXO_METRICS_TOKEN`), not a \
        management token; without one configured every request is refused (401).",
    responses(
        (status = 200, description = "The OpenMetrics text exposition (version 1.0.0), which Prometheus scrapes.", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "No metrics token, the wrong one, or none configured on the server (metrics are off).", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("metrics_token" = [])),
)]
pub async fn get_metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    // Without a configured token nothing can authenticate: the same 401, said plainly (the
    // endpoint is in the public document anyway, and an operator who forgot the token should
    // read why).
    let Some(token) = &state.settings.metrics_token else {
        return Err(AppError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Send the metrics token as a bearer token",
        )
        .with_detail("metrics are off: no metrics token is set (LYNXO_METRICS_TOKEN)"));
    };
    if !presents(&headers, token) {
        return Err(AppError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Send the metrics token as a bearer token",
        ));
    }
    let now_ms = state.clock.now_ms();
    let shards = state.settings.shard_count;
    let gauges = state
        .store
        .read(move |c| db::gauges(c, now_ms, shards))
        .await
        .map_err(|e: StoreError| AppError::internal(e))?;
    let metrics = &state.metrics;
    metrics.refresh_store(gauges);
    metrics.refresh_edge(now_ms);
    let text = metrics.encode().map_err(AppError::internal)?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        text,
    )
        .into_response())
}

/// A [`Sink`] that counts each write, by publisher and result, and passes everything else
/// through: the publishers themselves stay unaware of metrics.
pub struct MeteredSink {
    inner: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
}

impl MeteredSink {
    /// Counts the writes of `inner` into `metrics`.
    pub fn wrap(inner: Arc<dyn Sink>, metrics: Arc<Metrics>) -> Arc<dyn Sink> {
        Arc::new(Self { inner, metrics })
    }

    fn count<T>(&self, publisher: &'static str, r: Result<T, SinkError>) -> Result<T, SinkError> {
        self.metrics.write(publisher, r.is_ok());
        r
    }
}

impl Sink for MeteredSink {
    fn put(&self, index: u16, body: &[u8], now: u64) -> Result<(), SinkError> {
        self.count("revocations", self.inner.put(index, body, now))
    }

    fn get(&self, index: u16, now: u64) -> Result<Option<Vec<u8>>, SinkError> {
        self.inner.get(index, now)
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn supports_limits(&self) -> bool {
        self.inner.supports_limits()
    }

    fn put_limits(&self, body: &[u8], now: u64) -> Result<(), SinkError> {
        self.count("limits", self.inner.put_limits(body, now))
    }

    fn supports_checkpoints(&self) -> bool {
        self.inner.supports_checkpoints()
    }

    fn put_checkpoint(&self, body: &[u8], now: u64) -> Result<(), SinkError> {
        self.count("checkpoint", self.inner.put_checkpoint(body, now))
    }

    fn get_checkpoint(&self, now: u64) -> Result<Option<Vec<u8>>, SinkError> {
        self.inner.get_checkpoint(now)
    }
}
