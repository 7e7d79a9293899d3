//! Response building: the edge's own answers ([`Reply`]) become runtime responses that cannot
//! fail, and the origin's response gets the RateLimit header fields.

use worker::{Headers, Response, ResponseBody, ResponseBuilder, console_error, web_sys};

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

/// The origin's response with the RateLimit header fields added. A fetched response's headers
/// are immutable in the Workers runtime, so they are copied, by the runtime in one call (no
/// crossing of the wasm boundary per header), and the two fields set on the copy; the status
/// and the body stream stay as they are.
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
    let headers = match web_sys::Headers::new_with_headers(&response.headers().0) {
        Ok(headers) => Headers(headers),
        Err(e) => {
            console_error!("lynxo-edge: origin headers not copied: {e:?}");
            return response;
        }
    };
    for (name, value) in status.headers(now_ms) {
        if headers.set(name, &value).is_err() {
            console_error!("lynxo-edge: header {name} refused by the runtime");
        }
    }
    let response = response.with_headers(headers);
    // A null-body status must not get a stream (the Response constructor would throw).
    if matches!(code, 204 | 205 | 304) && matches!(response.body(), ResponseBody::Stream(_)) {
        let (builder, _) = response.into_parts();
        return builder.empty();
    }
    response
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
