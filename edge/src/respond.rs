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
/// stream, status and status text, the runtime copying the headers (`new Headers(...)`), and the
/// two fields are set on the copy. All of it is one call into JavaScript (`withRateFields`):
/// done from Rust it was about ten calls across the wasm boundary (status, status text, the
/// init's three fields, the body, the constructor, the new headers, two `set`s), two thirds of
/// what authentication cost over the bare proxy (docs/benchmarks.md, "Edge: CPU per request").
pub(crate) fn origin_with_rate_headers(
    response: web_sys::Response,
    status: &Status,
    now_ms: u64,
) -> web_sys::Response {
    let [(_, policy), (_, rate)] = status.headers(now_ms);
    match js::with_rate_fields(&response, &policy, &rate) {
        Ok(rebuilt) => rebuilt,
        Err(e) => {
            console_error!("lynxo-edge: origin response not rebuilt: {e:?}");
            response
        }
    }
}

mod js {
    use wasm_bindgen::prelude::*;
    use worker::web_sys;

    // The header names are the ones `limit::Status::headers` gives (lowercase, as the runtime
    // lists them). 101 (a WebSocket) and anything outside 200..=599 pass through untouched; a
    // null-body status gets no stream (the constructor would throw).
    #[wasm_bindgen(inline_js = r#"
export function withRateFields(response, policy, rate) {
  const status = response.status;
  if (status < 200 || status > 599) return response;
  const body = status === 204 || status === 205 || status === 304 ? null : response.body;
  const rebuilt = new Response(body, response);
  rebuilt.headers.set("ratelimit-policy", policy);
  rebuilt.headers.set("ratelimit", rate);
  return rebuilt;
}
"#)]
    extern "C" {
        #[wasm_bindgen(catch, js_name = withRateFields)]
        pub(super) fn with_rate_fields(
            response: &web_sys::Response,
            policy: &str,
            rate: &str,
        ) -> Result<web_sys::Response, JsValue>;
    }
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
