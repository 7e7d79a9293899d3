//! Every answer the edge makes itself, as plain data: status, headers and an RFC 9457
//! `application/problem+json` body with a stable `code` and a link to its documentation.
//!
//! Bearer-auth failures also follow RFC 6750: the body's `code` is the RFC's error code
//! (`invalid_request`, `invalid_token`, `insufficient_scope`) and `reason` says which check
//! failed, where telling it leaks nothing.

use serde_json::{Map, Value, json};
use shared::usage::Reason;

/// Media type of RFC 9457 problem details.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Where each error code is documented: `<DOCS_BASE><code>`. Also the problem's `type`.
pub const DOCS_BASE: &str = "https://docs.lynxo.ai/errors/";

/// The `WWW-Authenticate` challenge without an error: the answer to a request with no key.
pub const CHALLENGE: &str = r#"Bearer realm="lynxo""#;

/// A complete answer, decided without any runtime types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Response headers (`content-type` included).
    pub headers: Vec<(&'static str, String)>,
    /// Response body.
    pub body: String,
    /// Why the edge answered so, for the activity log of the key's owner (never sent to the
    /// client: its body says only what is safe to tell). Set from the edge's own decision, a
    /// `Copy` code: nothing a client sends can choose it.
    pub reason: Option<Reason>,
}

impl Reply {
    /// The value of header `name` (lowercase), if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// What the client receives (status, headers, body): everything but [`Reply::reason`].
    pub fn on_the_wire(&self) -> (u16, &[(&'static str, String)], &str) {
        (self.status, &self.headers, &self.body)
    }

    /// A plain-text answer.
    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![
                ("content-type", "text/plain; charset=utf-8".to_owned()),
                ("cache-control", "no-store".to_owned()),
            ],
            body: body.to_owned(),
            reason: None,
        }
    }
}

/// A problem document being built.
#[derive(Debug, Clone)]
pub struct Problem {
    status: u16,
    code: &'static str,
    title: &'static str,
    detail: String,
    fields: Map<String, Value>,
    headers: Vec<(&'static str, String)>,
    because: Option<Reason>,
}

impl Problem {
    /// A problem with its status, stable code, short title and a sentence of detail.
    pub fn new(
        status: u16,
        code: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            title,
            detail: detail.into(),
            fields: Map::new(),
            headers: Vec::new(),
            because: None,
        }
    }

    /// Adds an extension member to the body.
    #[must_use]
    pub fn field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(name.to_owned(), value.into());
        self
    }

    /// Adds the `reason` member: which check failed, a stable code.
    #[must_use]
    pub fn reason(self, reason: &'static str) -> Self {
        self.field("reason", reason)
    }

    /// Adds the `hint` member: how a person fixes the request.
    #[must_use]
    pub fn hint(self, hint: impl Into<String>) -> Self {
        self.field("hint", hint.into())
    }

    /// Adds a response header.
    #[must_use]
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Records why the edge answered so, for the key owner's activity log ([`Reply::reason`]);
    /// the body is unchanged.
    #[must_use]
    pub fn because(mut self, reason: Reason) -> Self {
        self.because = Some(reason);
        self
    }

    /// The finished answer.
    pub fn reply(self) -> Reply {
        let mut body = Map::new();
        body.insert("type".into(), json!(format!("{DOCS_BASE}{}", self.code)));
        body.insert("title".into(), json!(self.title));
        body.insert("status".into(), json!(self.status));
        body.insert("code".into(), json!(self.code));
        body.insert("detail".into(), json!(self.detail));
        body.extend(self.fields);
        let mut headers = vec![
            ("content-type", PROBLEM_JSON.to_owned()),
            ("cache-control", "no-store".to_owned()),
        ];
        headers.extend(self.headers);
        Reply {
            status: self.status,
            headers,
            body: Value::Object(body).to_string(),
            reason: self.because,
        }
    }
}

/// `WWW-Authenticate` for an RFC 6750 error.
pub fn bearer_error(error: &str) -> String {
    format!(r#"{CHALLENGE}, error="{error}""#)
}

/// 401 for a request with no credentials: the bare challenge, no error code (RFC 6750 3.1).
pub fn missing_credentials(hint: Option<&str>) -> Reply {
    let mut p = Problem::new(
        401,
        "missing_credentials",
        "Unauthorized",
        "This request needs an API key.",
    )
    .hint(hint.unwrap_or("Send your key as `Authorization: Bearer <key>`."))
    .header("www-authenticate", CHALLENGE);
    if hint.is_some() {
        p = p.reason("unsupported_scheme");
    }
    p.reply()
}

/// 400 `invalid_request`: the request's credentials are malformed.
pub fn invalid_request(reason: &'static str, detail: &str, hint: &str) -> Reply {
    Problem::new(400, "invalid_request", "Bad Request", detail)
        .reason(reason)
        .hint(hint)
        .header("www-authenticate", bearer_error("invalid_request"))
        .reply()
}

/// 401 `invalid_token`, optionally with the check that failed and how to fix it.
pub fn invalid_token(reason: Option<&'static str>, hint: &str) -> Reply {
    let mut p = Problem::new(
        401,
        "invalid_token",
        "Unauthorized",
        "The API key is not valid.",
    )
    .hint(hint)
    .header("www-authenticate", bearer_error("invalid_token"));
    if let Some(reason) = reason {
        p = p.reason(reason);
    }
    p.reply()
}

/// 500 for anything the edge itself got wrong. Details go to the log, never to the caller.
pub fn internal() -> Reply {
    Problem::new(
        500,
        "internal_error",
        "Internal Server Error",
        "The edge could not handle this request. Please retry; if it persists, contact support.",
    )
    .because(Reason::InternalError)
    .reply()
}

/// 503 for a dependency (KV, configuration) that is unavailable; the caller may retry.
pub fn unavailable(code: &'static str, detail: &str, retry_after: u64) -> Reply {
    Problem::new(503, code, "Service Unavailable", detail)
        .header("retry-after", retry_after.to_string())
        .reply()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_document_has_the_rfc_members() {
        let reply = Problem::new(418, "teapot", "I'm a teapot", "Short and stout.")
            .reason("spout")
            .header("x-a", "b")
            .reply();
        assert_eq!(reply.status, 418);
        assert_eq!(reply.header("content-type"), Some(PROBLEM_JSON));
        assert_eq!(reply.header("x-a"), Some("b"));
        let body: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["type"], "https://docs.lynxo.ai/errors/teapot");
        assert_eq!(body["status"], 418);
        assert_eq!(body["code"], "teapot");
        assert_eq!(body["reason"], "spout");
        assert!(body["title"].is_string() && body["detail"].is_string());
    }

    #[test]
    fn missing_credentials_has_no_error_code() {
        let reply = missing_credentials(None);
        assert_eq!(reply.status, 401);
        assert_eq!(reply.header("www-authenticate"), Some(CHALLENGE));
    }
}
