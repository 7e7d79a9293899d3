//! The audit-trail API: an account reads its own events, newest first, filtered by event type,
//! target, actor and time, and exports them as CSV or JSON. Writing happens in the store, in
//! the transaction of each change (`store::audit`).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Frame;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Caller;
use crate::error::{AppError, Json, PageLimit, Query, Result};
use crate::state::AppState;
use crate::store::audit::{self, AuditEvent, AuditFilter};

/// Query of `GET /v1/audit-events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only events before this sequence number (for paging). Read as text so a number too
    /// large for any sequence number means "no bound" rather than a parse error.
    pub before: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Only events about this target (a key id, a token id).
    pub target: Option<String>,
    /// Only this event type, or every type a prefix ending in `.` starts (`key.`).
    pub action: Option<String>,
    /// Only events by this actor (`user:1`, `token:3`, `system`).
    pub actor: Option<String>,
    /// Only events at or after this time (Unix seconds).
    pub from: Option<u64>,
    /// Only events before this time (Unix seconds).
    pub to: Option<u64>,
}

/// A page of events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// The events, newest first.
    pub data: Vec<AuditEvent>,
    /// Pass as `before` for the next page; absent on the last page.
    #[schema(required = true)]
    pub next_before: Option<u64>,
}

/// `GET /v1/audit-events` pages: 100 events by default, at most 1000.
type AuditLimit = PageLimit<100, 1000>;

/// The query's `before`: any run of digits (a number past every sequence number is no bound).
fn before_of(before: Option<&str>) -> Result<Option<u64>> {
    match before {
        None => Ok(None),
        Some(b) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) => {
            Ok(Some(b.parse::<u64>().unwrap_or(u64::MAX)))
        }
        Some(_) => {
            Err(AppError::validation("before must be a sequence number")
                .with_field("field", "before"))
        }
    }
}

/// The filters of a query, checked: short texts of the characters ids and actions use, and a
/// time range that is not backwards.
fn filter_of(
    target: Option<String>,
    action: Option<String>,
    actor: Option<String>,
    from: Option<u64>,
    to: Option<u64>,
) -> Result<AuditFilter> {
    let bad = |field: &str, detail: &str| {
        Err(AppError::validation(detail.to_owned()).with_field("field", field))
    };
    if target
        .as_ref()
        .is_some_and(|t| t.is_empty() || t.len() > 64)
    {
        return bad("target", "target must be 1 to 64 characters");
    }
    let word = |t: &String| {
        !t.is_empty()
            && t.len() <= 64
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
    };
    if action.as_ref().is_some_and(|a| !word(a)) {
        return bad(
            "action",
            "action must be an event type such as key.revoked, or a prefix such as key.",
        );
    }
    if actor.as_ref().is_some_and(|a| !word(a)) {
        return bad("actor", "actor must be an actor such as user:1 or token:3");
    }
    // Past i64 a time means nothing to the database (and would not fit its column).
    if from.is_some_and(|f| f > i64::MAX as u64) || to.is_some_and(|t| t > i64::MAX as u64) {
        return bad("to", "from and to must be Unix seconds");
    }
    Ok(AuditFilter {
        target,
        action,
        actor,
        from,
        to,
    })
}

/// `GET /v1/audit-events`.
#[utoipa::path(
    get,
    path = "/v1/audit-events",
    summary = "Read the account's audit trail",
    params(
        ("before" = Option<u64>, Query, description = "Only events with a smaller sequence number (paging); any larger number means no bound.", minimum = 0),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000),
        ("target" = Option<String>, Query, description = "Only events about this target: a key id (32 hex digits) or a management token id.", max_length = 64, min_length = 1),
        ("action" = Option<String>, Query, description = "Only this event type (`key.revoked`), or every type a prefix ending in `.` starts (`key.`).", max_length = 64, min_length = 1, pattern = "^[A-Za-z0-9._:-]+$"),
        ("actor" = Option<String>, Query, description = "Only events by this actor (`user:1`, `token:3`, `system`).", max_length = 64, min_length = 1, pattern = "^[A-Za-z0-9._:-]+$"),
        ("from" = Option<u64>, Query, description = "Only events at or after this time (Unix seconds).", minimum = 0),
        ("to" = Option<u64>, Query, description = "Only events before this time (Unix seconds); not before `from`.", minimum = 0),
    ),
    responses(
        (status = 200, description = "Events, newest first.", body = crate::audit::AuditPage),
        crate::openapi::Unauthenticated,
        crate::openapi::BadQuery,
        (status = 422, description = "Bad limit, target, action, actor or time range.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn list_audit_events(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
    PageLimit(limit): AuditLimit,
) -> Result<Json<AuditPage>> {
    let before = before_of(q.before.as_deref())?;
    let filter = filter_of(q.target, q.action, q.actor, q.from, q.to)?;
    let account = caller.account_id;
    let data = state
        .store
        .read(move |c| audit::list_filtered(c, account, &filter, before, limit))
        .await?;
    let next_before = (data.len() == limit as usize)
        .then(|| data.last().map(|e| e.seq))
        .flatten();
    Ok(Json(AuditPage { data, next_before }))
}

/// Most events one export holds; the rest are named by the `Lynxo-Next-Before` header.
pub const EXPORT_MAX: u32 = 10_000;

/// Events read per page of an export: one short read transaction each, so an export never
/// holds the database for long, and the body is sent as each page is ready.
const EXPORT_PAGE: u32 = 500;

/// Query of `GET /v1/audit-events/export`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `csv` (default) or `json`.
    pub format: Option<String>,
    /// As the audit API's.
    pub before: Option<String>,
    /// As the audit API's.
    pub target: Option<String>,
    /// As the audit API's.
    pub action: Option<String>,
    /// As the audit API's.
    pub actor: Option<String>,
    /// As the audit API's.
    pub from: Option<u64>,
    /// As the audit API's.
    pub to: Option<u64>,
}

/// `GET /v1/audit-events/export`: the events the same filters select, newest first, as one
/// CSV or JSON download.
#[utoipa::path(
    get,
    path = "/v1/audit-events/export",
    summary = "Export the account's audit trail as CSV or JSON",
    description = "The events `GET /v1/audit-events` would page through with the same filters, newest first, at most 10,000; when more match, the `Lynxo-Next-Before` header names the `before` of the next export. Read a page at a time and streamed. CSV cells that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab or carriage return) are prefixed with `'`.",
    params(
        ("format" = Option<String>, Query, description = "`csv` (default) or `json` (an array of the audit API's events).", pattern = "^(csv|json)$"),
        ("before" = Option<u64>, Query, description = "Only events with a smaller sequence number.", minimum = 0),
        ("target" = Option<String>, Query, max_length = 64, min_length = 1),
        ("action" = Option<String>, Query, max_length = 64, min_length = 1, pattern = "^[A-Za-z0-9._:-]+$"),
        ("actor" = Option<String>, Query, max_length = 64, min_length = 1, pattern = "^[A-Za-z0-9._:-]+$"),
        ("from" = Option<u64>, Query, minimum = 0),
        ("to" = Option<u64>, Query, minimum = 0),
    ),
    responses(
        (status = 200, description = "The events, newest first.", content(
            (String = "text/csv"),
            (Vec<crate::store::audit::AuditEvent> = "application/json"),
        ), headers(
            ("Lynxo-Next-Before" = u64, description = "Present when more events match than one export holds: pass it as `before` for the rest."),
        )),
        crate::openapi::Unauthenticated,
        crate::openapi::BadQuery,
        (status = 422, description = "Bad format, target, action, actor or time range.", body = crate::openapi::Problem, content_type = "application/problem+json"),
    ),
    security(("managementToken" = []), ("session" = [])),
)]
pub async fn export_audit_events(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ExportQuery>,
) -> Result<Response> {
    let csv = match q.format.as_deref() {
        None | Some("csv") => true,
        Some("json") => false,
        Some(_) => {
            return Err(
                AppError::validation("format must be csv or json").with_field("field", "format")
            );
        }
    };
    let before = before_of(q.before.as_deref())?;
    let filter = filter_of(q.target, q.action, q.actor, q.from, q.to)?;
    let account = caller.account_id;
    let bounds_filter = filter.clone();
    let (start, next) = state
        .store
        .read(move |c| audit::export_bounds(c, account, &bounds_filter, before, EXPORT_MAX))
        .await?;

    // A channel of two chunks: a slow reader holds the export back, not the server's memory.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let store = state.store.clone();
    tokio::spawn(async move {
        let mut before = start;
        let mut first = true;
        if tx
            .send(Bytes::from(if csv { CSV_HEAD } else { "[" }))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let page_filter = filter.clone();
            let page = store
                .read(move |c| {
                    audit::list_filtered(c, account, &page_filter, Some(before), EXPORT_PAGE)
                })
                .await;
            let Ok(mut events) = page else {
                // The body is cut short (no closing bracket): a reader sees an incomplete file.
                tracing::error!("audit export: a page could not be read");
                return;
            };
            let full = events.len() == EXPORT_PAGE as usize;
            if let Some(end) = next {
                events.retain(|e| e.seq >= end);
            }
            let Some(last) = events.last().map(|e| e.seq) else {
                break;
            };
            let mut chunk = String::new();
            for e in &events {
                if csv {
                    csv_row(&mut chunk, e);
                } else {
                    if !first {
                        chunk.push(',');
                    }
                    chunk.push_str(&serde_json::to_string(e).unwrap_or_default());
                }
                first = false;
            }
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
            if !full || next.is_some_and(|end| last <= end) {
                break;
            }
            before = last;
        }
        if !csv {
            let _ = tx.send(Bytes::from_static(b"]")).await;
        }
    });

    let (content_type, name) = if csv {
        ("text/csv; charset=utf-8", "audit-events.csv")
    } else {
        ("application/json", "audit-events.json")
    };
    let mut response = Body::new(Chunks(rx)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(end) = next {
        headers.insert("lynxo-next-before", HeaderValue::from(end));
    }
    Ok(response)
}

/// The body of an export: the chunks its task sends, in order, until the task is done.
struct Chunks(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// The CSV export's header row.
const CSV_HEAD: &str = "seq,time,event,target,actor,actor_name,source,details\r\n";

/// Appends one event as a CSV row (RFC 4180: every cell quoted, CRLF line ends).
fn csv_row(out: &mut String, e: &AuditEvent) {
    let cells = [
        e.seq.to_string(),
        utc(e.at),
        e.action.clone(),
        e.target.clone().unwrap_or_default(),
        e.actor.clone(),
        e.actor_name.clone().unwrap_or_default(),
        e.source.clone().unwrap_or_default(),
        readable_details(&e.details),
    ];
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_cell(out, cell);
    }
    out.push_str("\r\n");
}

/// One quoted CSV cell. A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, or a
/// tab or carriage return before one) gets a leading `'`, so it is shown as text (OWASP, "CSV
/// Injection"): a key name or revoke reason is the customer's own text and may be anything.
pub fn csv_cell(out: &mut String, cell: &str) {
    out.push('"');
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        out.push('\'');
    }
    out.push_str(&cell.replace('"', "\"\""));
    out.push('"');
}

/// Unix seconds as `2026-12-02 16:04:57 UTC`.
pub fn utc(seconds: u64) -> String {
    let days = seconds / 86_400;
    let rest = seconds % 86_400;
    // Civil from days (Howard Hinnant's algorithm), for dates from 1970 on.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// An event's details as one line a person reads: `name: value` pairs joined by `; `, times
/// (fields named `at`, `*_at` or `*_until` holding a number) as UTC dates, lists joined by `, `.
pub fn readable_details(details: &Value) -> String {
    let Value::Object(map) = details else {
        return match details {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
    };
    map.iter()
        .map(|(k, v)| {
            let is_time = k == "at" || k.ends_with("_at") || k.ends_with("_until");
            let value = match v {
                Value::Number(n) if is_time => n.as_u64().map_or_else(|| n.to_string(), utc),
                Value::String(s) => s.clone(),
                Value::Null => "none".to_owned(),
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            };
            format!("{}: {value}", k.replace('_', " "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formula_cells_are_text() {
        for (cell, want) in [
            ("=HYPERLINK(\"x\")", "\"'=HYPERLINK(\"\"x\"\")\""),
            ("+1", "\"'+1\""),
            ("-1+2", "\"'-1+2\""),
            ("@SUM(A1)", "\"'@SUM(A1)\""),
            ("\t=1", "\"'\t=1\""),
            ("\r=1", "\"'\r=1\""),
            ("plain, \"quoted\"", "\"plain, \"\"quoted\"\"\""),
            ("a=1", "\"a=1\""),
            ("", "\"\""),
        ] {
            let mut out = String::new();
            csv_cell(&mut out, cell);
            assert_eq!(out, want, "{cell:?}");
        }
    }

    #[test]
    fn times_are_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_190_882), "2026-12-02 05:54:42 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(4_107_542_399), "2100-02-28 23:59:59 UTC");
    }

    #[test]
    fn details_read_as_text() {
        let d = json!({
            "grace_until": 1_796_190_882_u64,
            "reason": "leaked in CI",
            "scopes": ["jobs:read", "files:read"],
            "new_key_id": "00112233445566778899aabbccddeeff",
            "rate_limit": 600,
            "expires_at": null,
        });
        let text = readable_details(&d);
        for part in [
            "grace until: 2026-12-02 05:54:42 UTC",
            "reason: leaked in CI",
            "scopes: jobs:read, files:read",
            "rate limit: 600",
            "expires at: none",
        ] {
            assert!(text.contains(part), "{part} not in {text}");
        }
        assert!(!text.contains("1796190882"), "{text}");
        assert_eq!(readable_details(&Value::Null), "");
    }
}
