//! Usage metering: what the edge reports to the control plane about the requests it answered.
//!
//! The edge records one [`Outcome`] per request it can attribute to a key (a key whose tag
//! verified: allowed, revoked, expired, out of scope, over its limit, or refused or failed by
//! the edge itself; a forged key belongs to nobody). It aggregates them into a [`Batch`] per
//! minute, key, route scope and outcome, with each key's last use and a bounded sample of recent
//! requests for the activity log, and sends it to the control plane's [`INGEST_PATH`], signed
//! with [`sign_batch`].
//!
//! Delivery is at least once: a batch is retried until the control plane acknowledges it. It is
//! applied at most once: `(source, seq)` names a batch for ever, and the control plane records
//! the names it applied in the same transaction as the counts, so a retried batch is
//! acknowledged without being counted again.

use serde::{Deserialize, Serialize};

use crate::envelope::{self, EnvelopeError};
use crate::key::KeyId;
use crate::mac::{Keyring, Purpose};

/// The control plane's ingestion endpoint (`POST`, body a JSON [`Batch`]).
pub const INGEST_PATH: &str = "/_lynxo/usage";

/// Most activity entries one batch carries; more are counted in [`Batch::dropped_activity`].
pub const MAX_ACTIVITY_PER_BATCH: usize = 1000;

/// Domain separation from the other envelopes signed with the same purpose key.
const BATCH_KIND: &[u8] = b"usage-batch";

/// How a request ended, as the usage counters and the activity log classify it.
///
/// Four classes say what the origin answered (`2xx` .. `5xx`): only these reached the origin,
/// and only these are "allowed" (billable) traffic. Every other class is an answer the edge
/// made itself, for a request it attributes to a key: the three refusals a client can act on
/// (`401`, `403`, `429`), `edge_4xx` for the edge's other refusals (no such route, method not
/// allowed) and `edge_5xx` for the edge's own failures (revocation list unavailable, origin
/// unreachable, internal error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Outcome {
    /// Forwarded; the origin answered 1xx or 2xx.
    #[serde(rename = "2xx")]
    Success,
    /// Forwarded; the origin answered 3xx.
    #[serde(rename = "3xx")]
    Redirect,
    /// Forwarded; the origin answered 4xx.
    #[serde(rename = "4xx")]
    ClientError,
    /// Forwarded; the origin answered 5xx.
    #[serde(rename = "5xx")]
    ServerError,
    /// 401 from the edge: the key is revoked, expired or of another environment.
    #[serde(rename = "401")]
    Unauthorized,
    /// 403 from the edge: the key lacks the route's scope.
    #[serde(rename = "403")]
    Forbidden,
    /// 429 from the edge: the key is over its rate limit.
    #[serde(rename = "429")]
    RateLimited,
    /// Another refusal by the edge itself for a verified key: 404 (no such route) or 405
    /// (method not allowed). The origin never saw it.
    #[serde(rename = "edge_4xx")]
    EdgeRefused,
    /// The edge failed to serve the request: 503 (the key's revocation status could not be
    /// checked), 502 (the origin could not be reached) or 500. Not the origin's answer.
    #[serde(rename = "edge_5xx")]
    EdgeError,
}

impl Outcome {
    /// Every outcome, in display order.
    pub const ALL: [Self; 9] = [
        Self::Success,
        Self::Redirect,
        Self::ClientError,
        Self::ServerError,
        Self::Unauthorized,
        Self::Forbidden,
        Self::RateLimited,
        Self::EdgeRefused,
        Self::EdgeError,
    ];

    /// The wire name: `"2xx"`, `"3xx"`, `"4xx"`, `"5xx"`, `"401"`, `"403"`, `"429"`,
    /// `"edge_4xx"` or `"edge_5xx"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Success => "2xx",
            Self::Redirect => "3xx",
            Self::ClientError => "4xx",
            Self::ServerError => "5xx",
            Self::Unauthorized => "401",
            Self::Forbidden => "403",
            Self::RateLimited => "429",
            Self::EdgeRefused => "edge_4xx",
            Self::EdgeError => "edge_5xx",
        }
    }

    /// The outcome of a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.name() == name)
    }

    /// The outcome of a request the edge forwarded and the origin answered with `status`.
    pub const fn of_origin_status(status: u16) -> Self {
        match status {
            300..=399 => Self::Redirect,
            400..=499 => Self::ClientError,
            500.. => Self::ServerError,
            _ => Self::Success,
        }
    }

    /// The outcome of an answer the edge made itself with `status` (never an origin class).
    pub const fn of_edge_status(status: u16) -> Self {
        match status {
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            429 => Self::RateLimited,
            500.. => Self::EdgeError,
            _ => Self::EdgeRefused,
        }
    }

    /// Whether the edge answered the request itself (a refusal or a failure of the edge): the
    /// origin never answered it, so it is never billed as traffic.
    pub const fn is_denial(self) -> bool {
        !self.is_allowed()
    }

    /// Whether the origin answered the request: the traffic a customer is billed for.
    pub const fn is_allowed(self) -> bool {
        matches!(
            self,
            Self::Success | Self::Redirect | Self::ClientError | Self::ServerError
        )
    }
}

/// Requests of one key in one minute with one route scope and one outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// The key id (on the wire, 32 lowercase hex digits; anything else is refused as it is
    /// read, with [`KeyId::REFUSED`]).
    pub key_id: KeyId,
    /// The key's account.
    pub account_id: u64,
    /// Unix minute: Unix seconds / 60.
    pub minute: u64,
    /// The scope the route requires (`jobs:read`), or `None` when the route was not matched
    /// (a 401 is answered before the route is looked up).
    pub scope: Option<String>,
    /// How the requests ended.
    pub outcome: Outcome,
    /// How many, at least 1.
    pub n: u64,
}

/// A key's most recent request in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastUsed {
    /// The key id.
    pub key_id: KeyId,
    /// The key's account.
    pub account_id: u64,
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// The client's address (`CF-Connecting-IP`), when known.
    pub client_ip: Option<String>,
    /// The client's `User-Agent`, at most [`MAX_USER_AGENT`] bytes.
    pub user_agent: Option<String>,
}

/// One request, for the activity log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// The key id.
    pub key_id: KeyId,
    /// The key's account.
    pub account_id: u64,
    /// When, in Unix milliseconds.
    pub at_ms: u64,
    /// The method as sent.
    pub method: String,
    /// The path, without the query (a query can carry a key), at most [`MAX_PATH`] bytes.
    pub path: String,
    /// The status the client received.
    pub status: u16,
    /// Its class.
    pub outcome: Outcome,
    /// The client's address, when known.
    pub client_ip: Option<String>,
    /// ISO country code from Cloudflare, when known.
    pub country: Option<String>,
    /// Cloudflare data-center code, when known.
    pub colo: Option<String>,
    /// The client's `User-Agent`, at most [`MAX_USER_AGENT`] bytes.
    pub user_agent: Option<String>,
    /// Why the edge answered the request itself, from its own decision; `None` for an answer of
    /// the origin. Optional both ways: an entry from an edge older than the field reads as
    /// `None`, a control plane older than it ignores it. A code this build does not know (a
    /// newer edge's) also reads as `None` ([`Reason::lenient`]): dropped, never refused, so the
    /// edge's retries of the batch cannot stall on it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "Reason::lenient"
    )]
    pub reason: Option<Reason>,
}

/// Longest [`Reason`] code, in bytes: what the control plane's store accepts.
pub const MAX_REASON: usize = 32;

/// Why the edge answered a request attributed to a key itself: the edge's own decision, recorded
/// with the request's activity entry for the key's owner. The client's answer may say less (a
/// revoked key's 401 names no reason, so a prober cannot tell it from a forged one); the owner
/// knows the key and is told. Each code is the problem `code` (or, for a 401, the `reason`) of
/// the edge's answer, and belongs to one [`Outcome`] ([`Reason::outcome`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// 401: a key of another environment (checked first, before revocation and expiry).
    WrongEnvironment,
    /// 401: the key is revoked.
    Revoked,
    /// 401: the key expired.
    Expired,
    /// 403: the key lacks the route's scope.
    InsufficientScope,
    /// 429: over the key's rate limit (or its refused-key budget).
    RateLimitExceeded,
    /// 404: no such route.
    NotFound,
    /// 405: the route does not take this method.
    MethodNotAllowed,
    /// 400: the path is not canonical.
    InvalidPath,
    /// 503: the key's revocation status could not be checked.
    RevocationListUnavailable,
    /// 502: the origin could not be reached.
    OriginUnavailable,
    /// 500: the edge failed.
    InternalError,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Self; 11] = [
        Self::WrongEnvironment,
        Self::Revoked,
        Self::Expired,
        Self::InsufficientScope,
        Self::RateLimitExceeded,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::InvalidPath,
        Self::RevocationListUnavailable,
        Self::OriginUnavailable,
        Self::InternalError,
    ];

    /// The wire name (`wrong_environment`, ...), at most [`MAX_REASON`] bytes.
    pub const fn name(self) -> &'static str {
        match self {
            Self::WrongEnvironment => "wrong_environment",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::InsufficientScope => "insufficient_scope",
            Self::RateLimitExceeded => "rate_limit_exceeded",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::InvalidPath => "invalid_path",
            Self::RevocationListUnavailable => "revocation_list_unavailable",
            Self::OriginUnavailable => "origin_unavailable",
            Self::InternalError => "internal_error",
        }
    }

    /// The reason of a wire name; `None` for any other text.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The one outcome an answer for this reason has: an entry whose outcome differs carries a
    /// reason that cannot be its own, and the control plane drops it.
    pub const fn outcome(self) -> Outcome {
        match self {
            Self::WrongEnvironment | Self::Revoked | Self::Expired => Outcome::Unauthorized,
            Self::InsufficientScope => Outcome::Forbidden,
            Self::RateLimitExceeded => Outcome::RateLimited,
            Self::NotFound | Self::MethodNotAllowed | Self::InvalidPath => Outcome::EdgeRefused,
            Self::RevocationListUnavailable | Self::OriginUnavailable | Self::InternalError => {
                Outcome::EdgeError
            }
        }
    }

    /// Reads an optional reason leniently: a known code is its reason; null, or a string that
    /// names none (longer than any, or a newer edge's), is `None`. Nothing is allocated for the
    /// string. Anything but a string or null is refused: no edge sends it.
    pub fn lenient<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Self>, D::Error> {
        use serde::de::{Deserializer, Error, Visitor};
        use std::fmt;

        struct Code;
        impl<'v> Visitor<'v> for Code {
            type Value = Option<Reason>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a refusal reason code or null")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Reason::from_name(v))
            }
            fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'v>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_str(self)
            }
        }
        d.deserialize_option(Code)
    }
}

/// What one edge meter sends in one request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Batch {
    /// The sender: unique and stable for the life of its sequence numbers.
    pub source: String,
    /// The batch's number, from 1, increasing by one per batch of this source.
    pub seq: u64,
    /// Counts, at most one entry per (key, minute, scope, outcome).
    pub counts: Vec<Count>,
    /// Each key's latest request in the batch.
    pub last_used: Vec<LastUsed>,
    /// Recent requests: a bounded sample per key of the denials and of the rest.
    pub activity: Vec<Activity>,
    /// Requests left out of `activity` (they are still in `counts`).
    pub dropped_activity: u64,
    /// The edge's own health, as the meter that sealed the batch knew it. Optional: a batch
    /// without it (from an edge older than the field) is read as before, and a control plane
    /// older than the field ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<EdgeHealth>,
}

/// Most isolate reports one batch carries ([`EdgeHealth::isolates`]).
pub const MAX_HEALTH_ISOLATES: usize = 32;
/// Longest isolate id, in bytes.
pub const MAX_ISOLATE_ID: usize = 32;

/// What the edge reports of itself inside a usage batch: it has no endpoint to scrape, so its
/// health rides in the batches it signs anyway, and the control plane exposes it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EdgeHealth {
    /// Failed deliveries of sealed batches to the control plane (each retried) since the
    /// meter sealed its previous batch.
    #[serde(default)]
    pub meter_retries: u64,
    /// The latest report of each isolate that delivered into the batch, at most
    /// [`MAX_HEALTH_ISOLATES`].
    #[serde(default)]
    pub isolates: Vec<IsolateHealth>,
}

/// One isolate's report: counters since the isolate started, and what it holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolateHealth {
    /// The isolate's random id (made once per isolate), at most [`MAX_ISOLATE_ID`] bytes.
    pub isolate: String,
    /// When it reported, Unix milliseconds on its clock.
    pub at_ms: u64,
    /// Calls to the rate limiter that failed (the request was answered without a verdict from
    /// the limiter) since the isolate started.
    #[serde(default)]
    pub limiter_failures: u64,
    /// Age, in seconds, of the oldest revocation shard the isolate holds (now minus the
    /// shard's issued-at); absent when it holds none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_age_secs: Option<u64>,
}

/// Signs a batch body for the `Lynxo-Signature` header.
pub fn sign_batch(keyring: &Keyring, body: &[u8], now: u64) -> String {
    envelope::sign(keyring, Purpose::Usage, now, &[BATCH_KIND, body])
}

/// Checks a batch's `Lynxo-Signature` header: made by [`sign_batch`] for this `body`, within
/// `tolerance` seconds of `now`. Returns the header's timestamp.
pub fn verify_batch(
    keyring: &Keyring,
    header: &str,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Result<u64, EnvelopeError> {
    envelope::verify(
        keyring,
        Purpose::Usage,
        header,
        &[BATCH_KIND, body],
        now,
        tolerance,
    )
}

/// Longest `method` of an activity entry, in bytes. This and the other `MAX_*` lengths are
/// the one rule for a batch's text fields: the edge cuts what it sends to them and the control
/// plane cuts what it stores to them ([`Batch::clip`]), so the two never disagree.
pub const MAX_METHOD: usize = 32;
/// Longest `path`, in bytes.
pub const MAX_PATH: usize = 512;
/// Longest `client_ip`, in bytes.
pub const MAX_CLIENT_IP: usize = 64;
/// Longest `country`, in bytes.
pub const MAX_COUNTRY: usize = 8;
/// Longest `colo`, in bytes.
pub const MAX_COLO: usize = 16;
/// Longest `user_agent`, in bytes.
pub const MAX_USER_AGENT: usize = 256;
/// Longest `scope` of a count, in bytes.
pub const MAX_SCOPE: usize = 64;

impl Batch {
    /// Cuts every text field to its `MAX_*` length, and drops an activity entry's reason that is
    /// not one of its outcome ([`Reason::outcome`]): an origin's answer has none.
    pub fn clip(&mut self) {
        for c in &mut self.counts {
            cut_opt(&mut c.scope, MAX_SCOPE);
        }
        for l in &mut self.last_used {
            cut_opt(&mut l.client_ip, MAX_CLIENT_IP);
            cut_opt(&mut l.user_agent, MAX_USER_AGENT);
        }
        for a in &mut self.activity {
            cut(&mut a.method, MAX_METHOD);
            cut(&mut a.path, MAX_PATH);
            cut_opt(&mut a.client_ip, MAX_CLIENT_IP);
            cut_opt(&mut a.country, MAX_COUNTRY);
            cut_opt(&mut a.colo, MAX_COLO);
            cut_opt(&mut a.user_agent, MAX_USER_AGENT);
            if a.reason.is_some_and(|r| r.outcome() != a.outcome) {
                a.reason = None;
            }
        }
        if let Some(health) = &mut self.health {
            health.isolates.truncate(MAX_HEALTH_ISOLATES);
            for i in &mut health.isolates {
                cut(&mut i.isolate, MAX_ISOLATE_ID);
            }
        }
    }
}

fn cut(text: &mut String, max: usize) {
    let end = truncate(text, max).len();
    text.truncate(end);
}

fn cut_opt(text: &mut Option<String>, max: usize) {
    if let Some(text) = text {
        cut(text, max);
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    #[test]
    fn outcomes_round_trip_by_name_and_serde() {
        for o in Outcome::ALL {
            assert_eq!(Outcome::from_name(o.name()), Some(o));
            let text = serde_json::to_string(&o).unwrap();
            assert_eq!(text, format!("\"{}\"", o.name()));
            assert_eq!(serde_json::from_str::<Outcome>(&text).unwrap(), o);
        }
        assert_eq!(Outcome::from_name("200"), None);
    }

    #[test]
    fn origin_status_classes() {
        assert_eq!(Outcome::of_origin_status(200), Outcome::Success);
        assert_eq!(Outcome::of_origin_status(101), Outcome::Success);
        assert_eq!(Outcome::of_origin_status(304), Outcome::Redirect);
        assert_eq!(Outcome::of_origin_status(404), Outcome::ClientError);
        assert_eq!(Outcome::of_origin_status(429), Outcome::ClientError);
        assert_eq!(Outcome::of_origin_status(503), Outcome::ServerError);
        assert!(Outcome::RateLimited.is_denial());
        assert!(Outcome::ClientError.is_allowed());
    }

    #[test]
    fn the_edges_own_answers_are_never_origin_traffic() {
        let cases = [
            (401, Outcome::Unauthorized),
            (403, Outcome::Forbidden),
            (404, Outcome::EdgeRefused),
            (405, Outcome::EdgeRefused),
            (429, Outcome::RateLimited),
            (500, Outcome::EdgeError),
            (502, Outcome::EdgeError),
            (503, Outcome::EdgeError),
        ];
        for (status, outcome) in cases {
            assert_eq!(Outcome::of_edge_status(status), outcome, "{status}");
            assert!(outcome.is_denial() && !outcome.is_allowed(), "{status}");
        }
        let allowed: Vec<&str> = Outcome::ALL
            .iter()
            .filter(|o| o.is_allowed())
            .map(|o| o.name())
            .collect();
        assert_eq!(allowed, ["2xx", "3xx", "4xx", "5xx"]);
    }

    #[test]
    fn batches_are_signed_for_their_body_and_purpose() {
        let ring = testkit::keyring();
        let body = serde_json::to_vec(&Batch {
            source: "meter-0-abc".into(),
            seq: 1,
            ..Batch::default()
        })
        .unwrap();
        let sig = sign_batch(&ring, &body, 1000);
        assert_eq!(verify_batch(&ring, &sig, &body, 1000, 300), Ok(1000));
        assert_eq!(
            verify_batch(&ring, &sig, b"{}", 1000, 300),
            Err(EnvelopeError::BadSignature)
        );
        let sync = crate::limits::sign_push(&ring, &body, 1000);
        assert!(verify_batch(&ring, &sync, &body, 1000, 300).is_err());
    }

    #[test]
    fn the_health_field_is_optional_both_ways() {
        // A batch from an edge older than the field reads as before.
        let old = r#"{"source":"meter-0-abc","seq":3,"counts":[],"last_used":[],"activity":[],"dropped_activity":0}"#;
        let batch: Batch = serde_json::from_str(old).unwrap();
        assert_eq!(batch.health, None);
        // Without health, the body is byte for byte what older edges sent (and signed).
        assert_eq!(serde_json::to_string(&batch).unwrap(), old);
        let mut with = batch.clone();
        with.health = Some(EdgeHealth {
            meter_retries: 2,
            isolates: vec![
                IsolateHealth {
                    isolate: "ab".repeat(40),
                    at_ms: 1_000,
                    limiter_failures: 1,
                    shard_age_secs: Some(7),
                };
                MAX_HEALTH_ISOLATES + 5
            ],
        });
        let text = serde_json::to_string(&with).unwrap();
        assert_eq!(serde_json::from_str::<Batch>(&text).unwrap(), with);
        // A reader that knows nothing of it (serde ignores unknown fields) reads the rest.
        #[derive(Deserialize)]
        struct Older {
            seq: u64,
        }
        assert_eq!(serde_json::from_str::<Older>(&text).unwrap().seq, 3);
        with.clip();
        let health = with.health.unwrap();
        assert_eq!(health.isolates.len(), MAX_HEALTH_ISOLATES);
        assert!(
            health
                .isolates
                .iter()
                .all(|i| i.isolate.len() == MAX_ISOLATE_ID)
        );
    }

    fn entry(outcome: Outcome, reason: Option<Reason>) -> Activity {
        Activity {
            key_id: KeyId([7; 16]),
            account_id: 1,
            at_ms: 1_000,
            method: "GET".into(),
            path: "/v1/jobs".into(),
            status: 401,
            outcome,
            client_ip: None,
            country: None,
            colo: None,
            user_agent: None,
            reason,
        }
    }

    #[test]
    fn reasons_round_trip_by_name_and_serde_and_are_bounded() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_name(r.name()), Some(r));
            assert!(
                !r.name().is_empty() && r.name().len() <= MAX_REASON,
                "{r:?}"
            );
            let text = serde_json::to_string(&r).unwrap();
            assert_eq!(text, format!("\"{}\"", r.name()));
            assert_eq!(serde_json::from_str::<Reason>(&text).unwrap(), r);
            assert!(r.outcome().is_denial(), "{r:?}");
        }
        assert_eq!(Reason::from_name("Revoked"), None);
        assert_eq!(Reason::from_name(""), None);
    }

    #[test]
    fn the_reason_field_is_optional_both_ways_and_read_leniently() {
        let with = entry(Outcome::Unauthorized, Some(Reason::WrongEnvironment));
        let text = serde_json::to_string(&with).unwrap();
        assert!(text.contains(r#""reason":"wrong_environment""#), "{text}");
        assert_eq!(serde_json::from_str::<Activity>(&text).unwrap(), with);
        // Without a reason the entry is byte for byte what older edges sent.
        let without = entry(Outcome::Unauthorized, None);
        let old = serde_json::to_string(&without).unwrap();
        assert!(!old.contains("reason"), "{old}");
        assert_eq!(serde_json::from_str::<Activity>(&old).unwrap(), without);
        // Null, an unknown (a newer edge's) or an oversized code: dropped, the entry kept.
        let read = |value: &str| {
            let text = old.replace(
                r#""user_agent":null"#,
                &format!(r#""user_agent":null,"reason":{value}"#),
            );
            assert_ne!(text, old);
            serde_json::from_str::<Activity>(&text).map(|a| a.reason)
        };
        assert_eq!(read("null").unwrap(), None);
        assert_eq!(read(r#""revoked""#).unwrap(), Some(Reason::Revoked));
        assert_eq!(read(r#""revoked\u0000""#).unwrap(), None);
        assert_eq!(read(r#""quota_exhausted""#).unwrap(), None);
        assert_eq!(read(&format!("\"{}\"", "x".repeat(100_000))).unwrap(), None);
        // Not a string: no edge sends it, the batch is refused as malformed.
        assert!(read("7").is_err());
        assert!(read(r#"{"a":1}"#).is_err());
        // An older reader ignores the field.
        #[derive(Deserialize)]
        struct Older {
            status: u16,
        }
        assert_eq!(serde_json::from_str::<Older>(&text).unwrap().status, 401);
    }

    #[test]
    fn clipping_drops_a_reason_that_is_not_its_outcomes() {
        let mut batch = Batch {
            activity: vec![
                entry(Outcome::Unauthorized, Some(Reason::Revoked)),
                entry(Outcome::Success, Some(Reason::Revoked)),
                entry(Outcome::Forbidden, Some(Reason::Expired)),
                entry(Outcome::RateLimited, Some(Reason::RateLimitExceeded)),
                entry(Outcome::EdgeError, Some(Reason::OriginUnavailable)),
            ],
            ..Batch::default()
        };
        batch.clip();
        let reasons: Vec<_> = batch.activity.iter().map(|a| a.reason).collect();
        assert_eq!(
            reasons,
            [
                Some(Reason::Revoked),
                None,
                None,
                Some(Reason::RateLimitExceeded),
                Some(Reason::OriginUnavailable)
            ]
        );
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("", 0), "");
    }
}
