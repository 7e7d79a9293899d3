//! Response building: the edge's own answers ([`Reply`]) become runtime responses that cannot
//! fail, and the origin's response gets the RateLimit header fields.

use worker::{Headers, Response, ResponseBuilder, console_error, web_sys};

use crate::limit::Status;
use crate::problem::Reply;

/// An answer: decided by the edge, or the origin's response passed through.
pub(crate) enum Answer {
    /// The edge's own answer.
    Reply(Reply),
    /// The origin's response, as the runtime's object: passed on as it came, or rebuilt once
    /// with the RateLimit fields.
    Origin(web_sys::Response),
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
/// are immutable in the Workers runtime, so the response is built anew around the same body
/// stream, status and status text, the runtime copying the headers in the constructor (one
/// call, no crossing of the wasm boundary per header); the two fields are then set on the new
/// response's own (mutable) headers.
pub(crate) fn origin_with_rate_headers(
    response: web_sys::Response,
    status: &Status,
    now_ms: u64,
) -> web_sys::Response {
    let code = response.status();
    // 101 (a WebSocket) passes through untouched.
    if !(200..=599).contains(&code) {
        return response;
    }
    let init = web_sys::ResponseInit::new();
    init.set_status(code);
    init.set_status_text(&response.status_text());
    init.set_headers(&response.headers());
    // A null-body status must not get a stream (the Response constructor would throw).
    let body = match code {
        204 | 205 | 304 => None,
        _ => response.body(),
    };
    let rebuilt =
        match web_sys::Response::new_with_opt_readable_stream_and_init(body.as_ref(), &init) {
            Ok(rebuilt) => rebuilt,
            Err(e) => {
                console_error!("lynxo-edge: origin response not rebuilt: {e:?}");
                return response;
            }
        };
    let headers = rebuilt.headers();
    for (name, value) in status.headers(now_ms) {
        if headers.set(name, &value).is_err() {
            console_error!("lynxo-edge: header {name} refused by the runtime");
        }
    }
    rebuilt
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
