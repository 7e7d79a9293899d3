//! Response building: the edge's own answers ([`Reply`]) become runtime responses that cannot
//! fail, and the origin's response gets the RateLimit header fields.

use worker::{Headers, Response, ResponseBody, ResponseBuilder, console_error, console_warn};

use crate::limit::Status;
use crate::problem::Reply;

/// An answer: decided by the edge, or the origin's response passed through.
pub(crate) enum Answer {
    /// The edge's own answer.
    Reply(Reply),
    /// The origin's response.
    Origin(Response),
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Self::Reply(reply)
    }
}

/// Adds the RateLimit header fields to a reply.
pub(crate) fn with_rate_headers(mut reply: Reply, status: Option<Status>, now_ms: u64) -> Reply {
    if let Some(status) = status {
        reply.headers.extend(status.headers(now_ms));
    }
    reply
}

/// The origin's response with the RateLimit header fields added. Its headers are immutable in
/// the Workers runtime, so this is a new response around the same body stream.
pub(crate) fn origin_with_rate_headers(
    response: Response,
    status: &Status,
    now_ms: u64,
) -> Response {
    let code = response.status_code();
    // 101 (a WebSocket) passes through untouched.
    if !(200..=599).contains(&code) {
        return response;
    }
    let headers = Headers::new();
    for (name, value) in response.headers().entries() {
        if headers.append(&name, &value).is_err() {
            console_warn!("lynxo-edge: origin header {name} not copied");
        }
    }
    for (name, value) in status.headers(now_ms) {
        if headers.set(name, &value).is_err() {
            console_error!("lynxo-edge: header {name} refused by the runtime");
        }
    }
    let (_, body) = response.into_parts();
    // A null-body status must not get a stream (the Response constructor would throw).
    let body = match body {
        ResponseBody::Stream(_) if matches!(code, 204 | 205 | 304) => ResponseBody::Empty,
        body => body,
    };
    ResponseBuilder::new()
        .with_status(code)
        .with_headers(headers)
        .body(body)
}

/// Builds a response that cannot fail: a header the runtime refuses is logged and left out.
pub(crate) fn to_response(reply: &Reply) -> Response {
    let headers = Headers::new();
    for (name, value) in &reply.headers {
        if headers.append(name, value).is_err() {
            console_error!("lynxo-edge: header {name} refused by the runtime");
        }
    }
    let builder = ResponseBuilder::new()
        .with_status(reply.status)
        .with_headers(headers);
    if reply.body.is_empty() {
        // A null body: a 204 with a zero-length body draws a runtime warning per response.
        builder.empty()
    } else {
        builder.fixed(reply.body.as_bytes().to_vec())
    }
}
