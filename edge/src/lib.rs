//! Lynxo Keys edge: the Cloudflare Worker in front of the Lynxo API.
//!
//! The worker is thin glue. [`route`] decides the answer from the method and path alone, as
//! plain data ([`Reply`]), so the decision is unit-tested on the host where `worker`'s
//! JavaScript-backed types cannot be built; the `fetch` handler only turns that decision into a
//! `worker::Response`.
//!
//! Key verification is not wired in yet. Until it is, every API request fails closed with a 503
//! `application/problem+json` (RFC 9457) rather than reaching the origin unauthenticated; only
//! the health check answers 200.

use worker::{Context, Env, Request, Response, ResponseBuilder, Result, event};

/// Path of the liveness probe, answered without touching any binding.
pub const HEALTH_PATH: &str = "/healthz";

/// Media type of RFC 9457 problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Stable `code` of the problem returned while no verifier is deployed.
pub const VERIFIER_NOT_DEPLOYED: &str = "verifier_not_deployed";

/// Problem body for every API request until verification ships. A constant, so serving it can
/// neither fail nor allocate on the hot path.
const NOT_DEPLOYED_BODY: &str = concat!(
    r#"{"type":"about:blank","title":"Service Unavailable","status":503,"#,
    r#""detail":"The Lynxo API key verifier is not deployed yet, so no request can be authenticated.","#,
    r#""code":"verifier_not_deployed"}"#,
);

/// What the worker answers, decided without any runtime types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Value of the `Content-Type` header.
    pub content_type: &'static str,
    /// Response body.
    pub body: &'static str,
}

/// Decides the answer to a request from its method and URL path.
pub fn route(method: &str, path: &str) -> Reply {
    if method == "GET" && path == HEALTH_PATH {
        return Reply {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: "ok",
        };
    }
    Reply {
        status: 503,
        content_type: PROBLEM_JSON,
        body: NOT_DEPLOYED_BODY,
    }
}

/// Workers entry point for HTTP requests.
#[event(fetch)]
async fn fetch(req: Request, _env: Env, _ctx: Context) -> Result<Response> {
    let reply = route(req.method().as_ref(), &req.path());
    Ok(ResponseBuilder::new()
        .with_status(reply.status)
        .with_header("content-type", reply.content_type)?
        // Neither answer may be cached: health must be live, and the 503 is temporary.
        .with_header("cache-control", "no-store")?
        .fixed(reply.body.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let cases = [
            ("GET", "/healthz", 200, "text/plain; charset=utf-8"),
            ("HEAD", "/healthz", 503, PROBLEM_JSON),
            ("POST", "/healthz", 503, PROBLEM_JSON),
            ("GET", "/healthz/", 503, PROBLEM_JSON),
            ("GET", "/", 503, PROBLEM_JSON),
            ("GET", "/v1/jobs", 503, PROBLEM_JSON),
            ("POST", "/v1/jobs", 503, PROBLEM_JSON),
        ];
        for (method, path, status, content_type) in cases {
            let reply = route(method, path);
            assert_eq!(reply.status, status, "{method} {path}");
            assert_eq!(reply.content_type, content_type, "{method} {path}");
        }
    }

    #[test]
    fn health_says_ok() {
        assert_eq!(route("GET", HEALTH_PATH).body, "ok");
    }

    #[test]
    fn not_deployed_is_a_problem_document() {
        let reply = route("GET", "/v1/jobs");
        let problem: serde_json::Value =
            serde_json::from_str(reply.body).expect("problem body is JSON");
        assert_eq!(problem["status"], 503);
        assert_eq!(problem["code"], VERIFIER_NOT_DEPLOYED);
        assert_eq!(problem["type"], "about:blank");
        assert!(problem["title"].is_string());
        assert!(problem["detail"].is_string());
    }
}
