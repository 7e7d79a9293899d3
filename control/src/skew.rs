//! Clock skew between the control plane and the edge, measured on every signed exchange that
//! carries the edge's time, and the readiness rule on it.
//!
//! Every message between the two is signed with its sender's clock and refused by the receiver
//! beyond [`SIGNATURE_TOLERANCE`](crate::usage::SIGNATURE_TOLERANCE) (300 s): past it,
//! revocation pushes, limit pushes and usage ingestion all stop. So the skew is measured long
//! before: each usage batch's signature time against our clock, when the batch is applied (a
//! genuine batch outside the tolerance is still measured, then refused; a batch applied before,
//! which may be a replay, never is), exposed as `lynxo_clock_skew_seconds`, logged
//! once when it passes the warning threshold, and `/readyz` fails (503 `clock_skew`) while it
//! is over the readiness threshold (60 s by default), so an operator hears of it at a fifth of
//! the tolerance. `docs/operations.md` has the alert.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::http::StatusCode;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::error::AppError;
use crate::state::AppState;

/// Default readiness threshold, seconds of skew either way.
pub const DEFAULT_READY_SECS: u64 = 60;
/// Default warning threshold, seconds of skew either way.
pub const DEFAULT_WARN_SECS: u64 = 30;

/// The last measured skew and its thresholds.
#[derive(Debug)]
pub struct ClockSkew {
    /// Edge time minus our time, seconds: positive when the edge's clock is ahead.
    skew: Gauge<f64, AtomicU64>,
    /// When it was measured, Unix seconds on our clock (0: never).
    measured_at: Gauge,
    /// Whether a batch was measured since this process started: none means nothing to judge.
    measured: AtomicBool,
    /// The last skew as `f64` bits, for readiness (the gauge is for the scrape).
    last: AtomicU64,
    warned: AtomicBool,
    ready_secs: u64,
    warn_secs: u64,
}

impl ClockSkew {
    /// Thresholds in seconds: readiness fails past `ready_secs`, a warning is logged past
    /// `warn_secs`.
    pub fn new(ready_secs: u64, warn_secs: u64) -> Self {
        Self {
            skew: Gauge::default(),
            measured_at: Gauge::default(),
            measured: AtomicBool::new(false),
            last: AtomicU64::new(0f64.to_bits()),
            warned: AtomicBool::new(false),
            ready_secs,
            warn_secs,
        }
    }

    /// Registers the gauges.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "clock_skew_seconds",
            "Edge clock minus control-plane clock at the last signed usage batch (positive: \
             the edge is ahead); exchanges stop at 300 s either way",
            self.skew.clone(),
        );
        registry.register(
            "clock_skew_measured_at_seconds",
            "When lynxo_clock_skew_seconds was measured (Unix time, 0: never)",
            self.measured_at.clone(),
        );
    }

    /// Records a message the edge signed at `signed_at` (Unix seconds), received at `now_ms`.
    pub fn observe(&self, signed_at: u64, now_ms: u64) {
        // Whole seconds on both sides, as the signature carries them: the reading is within a
        // second (plus the message's transit) of the true skew.
        let skew = signed_at as f64 - (now_ms / 1000) as f64;
        self.skew.set(skew);
        self.last.store(skew.to_bits(), Ordering::Relaxed);
        self.measured_at
            .set(i64::try_from(now_ms / 1000).unwrap_or(i64::MAX));
        self.measured.store(true, Ordering::Relaxed);
        let over = skew.abs() > self.warn_secs as f64;
        if over && !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                skew_seconds = skew,
                warn_secs = self.warn_secs,
                ready_secs = self.ready_secs,
                "clock skew between the edge and the control plane: past 300 s every push and \
                 usage batch is refused; fix NTP on the side that is off"
            );
        } else if !over && self.warned.swap(false, Ordering::Relaxed) {
            tracing::info!(
                skew_seconds = skew,
                "clock skew back within the warning threshold"
            );
        }
    }

    /// The last measured skew, if any.
    pub fn last(&self) -> Option<f64> {
        self.measured
            .load(Ordering::Relaxed)
            .then(|| f64::from_bits(self.last.load(Ordering::Relaxed)))
    }
}

/// Readiness on the clock: a 503 `clock_skew` while the last measured skew is past the
/// readiness threshold. `/readyz` calls it.
pub fn check_ready(state: &AppState) -> Result<(), AppError> {
    let skew = &state.metrics.skew;
    match skew.last() {
        Some(s) if s.abs() > skew.ready_secs as f64 => Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "clock_skew",
            "The edge's clock and this one differ too much",
        )
        .with_detail(format!(
            "the edge's clock is {s:+} s from this one (readiness allows {} s; signed exchanges \
             stop at 300 s)",
            skew.ready_secs
        ))),
        _ => Ok(()),
    }
}
