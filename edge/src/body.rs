//! Request bodies: the framing rules, and the one place the worker reads a body itself.
//!
//! The idea: nothing a caller sends before it is authenticated is held beyond a fixed bound,
//! however the body is framed. The worker reads a body only on the sync endpoints, and only
//! after the method, the declared length and the signature header's shape passed: as a stream
//! it stops reading at the endpoint's limit (413), whatever the framing (`Content-Length`,
//! chunked, a length that lies), within [`READ_TIMEOUT_MS`] (408), and at most
//! [`MAX_READS_IN_FLIGHT`] at once per isolate (503), so the isolate holds at most that many
//! limits' worth of unauthenticated bytes. API bodies are never read: they stream to the origin
//! and must declare their length (411), which the signed identity binds; a method that takes no
//! body is refused one (400) before anything is read.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use worker::wasm_bindgen::JsCast;
use worker::wasm_bindgen_futures::JsFuture;
use worker::{Delay, Request, js_sys, web_sys};

use crate::problem::{Problem, Reply};

/// Longest a sync body may take to arrive, in milliseconds: a slow sender holds one of the
/// isolate's few read slots, so it must let go.
pub const READ_TIMEOUT_MS: u64 = 10_000;

/// Bodies the worker reads at once per isolate.
pub const MAX_READS_IN_FLIGHT: usize = 2;

/// Longest `Content-Length` value accepted: 2^64 has 20 digits.
const MAX_LENGTH_DIGITS: usize = 20;

thread_local! {
    /// Bodies being read now.
    static READING: Cell<usize> = const { Cell::new(0) };
}

/// Whether a request with `method` may carry a body at all.
pub fn takes_body(method: &str) -> bool {
    !matches!(
        method,
        "GET" | "HEAD" | "DELETE" | "OPTIONS" | "TRACE" | "CONNECT"
    )
}

/// Parses a `Content-Length` value: canonical decimal only (no sign, no spaces, no list of
/// values that several headers would join into).
pub fn content_length(value: Option<&str>) -> Result<Option<u64>, Reply> {
    let Some(value) = value else {
        return Ok(None);
    };
    let canonical = !value.is_empty()
        && value.len() <= MAX_LENGTH_DIGITS
        && value.bytes().all(|b| b.is_ascii_digit());
    value
        .parse::<u64>()
        .ok()
        .filter(|_| canonical)
        .map(Some)
        .ok_or_else(|| {
            Problem::new(
                400,
                "invalid_content_length",
                "Bad Request",
                "The `Content-Length` header is not one decimal number.",
            )
            .reply()
        })
}

/// The framing headers of a request, as received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Framing<'a> {
    /// `Content-Length`.
    pub content_length: Option<&'a str>,
    /// `Transfer-Encoding`.
    pub transfer_encoding: Option<&'a str>,
}

impl Framing<'_> {
    /// The body's declared length: `None` when it has none (no body, or chunked). Both headers
    /// at once are refused (RFC 9112 6.3: the transfer coding wins, and the pair is the shape of
    /// request smuggling), as is a length that is not one decimal number.
    pub fn declared(&self) -> Result<Option<u64>, Reply> {
        if self.transfer_encoding.is_some() {
            if self.content_length.is_some() {
                return Err(Problem::new(
                    400,
                    "ambiguous_framing",
                    "Bad Request",
                    "The request has both `Content-Length` and `Transfer-Encoding`.",
                )
                .hint("Send one of them: `Content-Length` for a body of known length.")
                .header("connection", "close")
                .reply());
            }
            return Ok(None);
        }
        content_length(self.content_length)
    }
}

/// The request's `Content-Length` and `Transfer-Encoding` headers.
pub(crate) fn framing_headers(req: &Request) -> worker::Result<(Option<String>, Option<String>)> {
    Ok((
        req.headers().get("content-length")?,
        req.headers().get("transfer-encoding")?,
    ))
}

/// The length of a request's body by its framing: for an API request, the body the edge streams
/// to the origin unread and the signed identity binds: `Content-Length`, or 0 without a body. A body that declares no length
/// (chunked) is 411; a body on a method that takes none is 400.
pub fn request_body_length(
    method: &str,
    framing: Framing<'_>,
    has_body: bool,
) -> Result<u64, Reply> {
    let declared = framing.declared()?;
    if !takes_body(method) {
        if has_body || declared.is_some_and(|n| n > 0) {
            return Err(Problem::new(
                400,
                "body_not_allowed",
                "Bad Request",
                format!("A {method} request has no body."),
            )
            .hint("Send the request without a body, or use the method the API reference names.")
            .reply());
        }
        return Ok(0);
    }
    match declared {
        Some(n) => Ok(n),
        None if !has_body => Ok(0),
        None => Err(Problem::new(
            411,
            "length_required",
            "Length Required",
            "A request body must declare its length in `Content-Length`.",
        )
        .hint("Send the body with a `Content-Length` header instead of chunked transfer coding.")
        .reply()),
    }
}

/// The answer for a body over `limit` bytes.
pub fn too_large(limit: usize, what: &str) -> Reply {
    Problem::new(
        413,
        "payload_too_large",
        "Content Too Large",
        format!("{what} is at most {limit} bytes."),
    )
    .field("limit", limit)
    .reply()
}

fn timed_out() -> Reply {
    Problem::new(
        408,
        "body_timeout",
        "Request Timeout",
        format!(
            "The body did not arrive within {} s.",
            READ_TIMEOUT_MS / 1000
        ),
    )
    .header("connection", "close")
    .reply()
}

fn busy() -> Reply {
    crate::problem::unavailable(
        "sync_busy",
        "The edge is reading as many bodies as it allows at once. Please retry.",
        1,
    )
}

/// One of the isolate's read slots, given back when dropped.
struct Slot;

impl Slot {
    fn take() -> Option<Self> {
        READING.with(|n| {
            let taken = n.get();
            (taken < MAX_READS_IN_FLIGHT).then(|| {
                n.set(taken + 1);
                Self
            })
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        READING.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// `fut`, or `None` once `ms` milliseconds passed.
async fn within<T>(ms: u64, fut: impl Future<Output = T>) -> Option<T> {
    let mut fut = pin!(fut);
    let mut delay = pin!(Delay::from(Duration::from_millis(ms)));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(value) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(value));
        }
        delay.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// Reads `req`'s body, at most `limit` bytes of it; the refusal when it is longer, slower than
/// [`READ_TIMEOUT_MS`], or when the isolate is reading [`MAX_READS_IN_FLIGHT`] bodies already.
/// Stops reading (and cancels the stream) at the first byte past the limit.
pub async fn read_capped(
    req: &Request,
    limit: usize,
    what: &str,
) -> worker::Result<Result<Vec<u8>, Reply>> {
    let Some(_slot) = Slot::take() else {
        return Ok(Err(busy()));
    };
    let Some(stream) = req.inner().body() else {
        return Ok(Ok(Vec::new()));
    };
    let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let read = async {
        let mut body = Vec::new();
        loop {
            let chunk = JsFuture::from(reader.read()).await?;
            let done = js_sys::Reflect::get(&chunk, &"done".into())?;
            if done.is_truthy() {
                return Ok(Some(body));
            }
            let value = js_sys::Reflect::get(&chunk, &"value".into())?;
            let bytes: js_sys::Uint8Array = value.dyn_into()?;
            let len = bytes.length() as usize;
            if body.len() + len > limit {
                return Ok(None);
            }
            let start = body.len();
            body.resize(start + len, 0);
            bytes.copy_to(&mut body[start..]);
        }
    };
    let outcome: Option<worker::Result<Option<Vec<u8>>>> = within(READ_TIMEOUT_MS, async {
        read.await
            .map_err(|e: worker::wasm_bindgen::JsValue| worker::Error::from(e))
    })
    .await;
    let answer = match outcome {
        Some(Ok(Some(body))) => return Ok(Ok(body)),
        Some(Ok(None)) => too_large(limit, what),
        None => timed_out(),
        Some(Err(e)) => return Err(e),
    };
    // Tell the runtime the rest is not wanted; what it does with it is its own bound.
    let _ = reader.cancel();
    Ok(Err(answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn refusal(r: Result<u64, Reply>) -> (u16, String) {
        let reply = r.unwrap_err();
        let body: Value = serde_json::from_str(&reply.body).unwrap();
        (reply.status, body["code"].as_str().unwrap().to_owned())
    }

    fn length(method: &str, content_length: Option<&str>, has_body: bool) -> Result<u64, Reply> {
        let framing = Framing {
            content_length,
            transfer_encoding: None,
        };
        request_body_length(method, framing, has_body)
    }

    #[test]
    fn framing() {
        assert_eq!(length("POST", Some("13"), true), Ok(13));
        assert_eq!(length("POST", Some("0"), false), Ok(0));
        assert_eq!(length("POST", None, false), Ok(0));
        assert_eq!(length("GET", None, false), Ok(0));
        assert_eq!(length("DELETE", Some("0"), false), Ok(0));
        assert_eq!(
            refusal(length("POST", None, true)),
            (411, "length_required".into())
        );
        assert_eq!(
            refusal(length("PATCH", None, true)),
            (411, "length_required".into())
        );
        for method in ["GET", "HEAD", "DELETE"] {
            assert_eq!(
                refusal(length(method, None, true)),
                (400, "body_not_allowed".into())
            );
            assert_eq!(
                refusal(length(method, Some("5"), false)),
                (400, "body_not_allowed".into())
            );
        }
        for bad in [
            "",
            "-1",
            "+5",
            " 5",
            "5, 5",
            "0x10",
            "1".repeat(21).as_str(),
        ] {
            assert_eq!(
                refusal(length("POST", Some(bad), true)),
                (400, "invalid_content_length".into()),
                "{bad:?}"
            );
        }
        assert_eq!(
            content_length(Some("18446744073709551615")),
            Ok(Some(u64::MAX))
        );
        assert!(content_length(Some("18446744073709551616")).is_err());
    }

    #[test]
    fn both_framings_at_once_are_refused() {
        let chunked = Framing {
            content_length: None,
            transfer_encoding: Some("chunked"),
        };
        assert_eq!(
            refusal(request_body_length("POST", chunked, true)),
            (411, "length_required".into())
        );
        let both = Framing {
            content_length: Some("5"),
            transfer_encoding: Some("chunked"),
        };
        for method in ["POST", "GET"] {
            assert_eq!(
                refusal(request_body_length(method, both, true)),
                (400, "ambiguous_framing".into())
            );
        }
    }

    #[test]
    fn slots_are_given_back() {
        let first = Slot::take();
        let second = Slot::take();
        assert!(first.is_some() && second.is_some());
        assert!(Slot::take().is_none());
        drop(first);
        assert!(Slot::take().is_some());
    }
}
