//! What the worker sends the origin for an admitted request: the URL, the client headers on the
//! allow-list, and the signed identity.
//!
//! The edge authorises the request line (method and path) it sees; the origin must act on that
//! same request and nothing a client could use to make it act on another. So only headers on
//! [`FORWARDED`] (content negotiation, representation, conditional requests, tracing) and those
//! the operator adds in `FORWARD_HEADERS` go through: routing overrides (`X-HTTP-Method-Override`,
//! `X-Original-URL`, `X-Forwarded-Host`, `Forwarded`, ...) never do, nor any header named like the
//! edge's own identity in any spelling ([`never_forwarded`]). The query loses its credential
//! parameters and `_method`-style overrides, in every spelling `decide::param_name` reads. The
//! identity signature then binds the method, path and query exactly as the origin receives them,
//! the body's length and a fresh request id (`shared::identity`).

use std::borrow::Cow;

use shared::identity::{Request as Signed, RequestId};

use crate::config::Config;
use crate::decide::{
    Admitted, Incoming, QUERY_SEPARATORS, Source, holds_key, is_credential_param, param_name,
};

/// Client headers forwarded unchanged, lowercase: nothing on this list can change which
/// resource or method the origin acts on.
pub const FORWARDED: [&str; 22] = [
    "accept",
    "accept-encoding",
    "accept-language",
    "cache-control",
    "content-digest",
    "content-encoding",
    "content-language",
    "content-type",
    "idempotency-key",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "prefer",
    "range",
    "repr-digest",
    "traceparent",
    "tracestate",
    "user-agent",
    "want-content-digest",
    "want-repr-digest",
];

/// Headers that are never forwarded, even when `FORWARD_HEADERS` names them: connection-level
/// headers (RFC 9110 7.6.1) and framing the runtime sets itself, credentials the edge handles,
/// and every header a framework or proxy may read as another method, path, host or client.
const NEVER: [&str; 34] = [
    // The connection and the framing: the runtime writes its own.
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
    // Credentials: `Authorization` goes through only with FORWARD_AUTHORIZATION.
    "authorization",
    "proxy-authorization",
    "cookie",
    // Routing and method overrides.
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-envoy-original-path",
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-prefix",
    "x-forwarded-path",
    "x-forwarded-uri",
    "x-forwarded-proto",
    "x-forwarded-scheme",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-for",
    "x-original-host",
    "x-host",
    "x-real-ip",
];

/// Query parameters that override the method, as [`param_name`] reads them.
const METHOD_PARAMS: [&str; 4] = [
    "_method",
    "x_http_method_override",
    "x_http_method",
    "x_method_override",
];

/// The request to send the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Absolute URL at the origin.
    pub url: String,
    /// Headers, names lowercase.
    pub headers: Vec<(String, String)>,
}

/// Whether a header named `name` must never reach the origin from a client: the list above,
/// and every name that is, or that a framework would read as, one of the edge's identity
/// headers (`lynxo-*`, `x-lynxo-*`, in any case and with `_` for `-`).
pub fn never_forwarded(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('_', "-");
    name.starts_with("lynxo-") || name.starts_with("x-lynxo-") || NEVER.contains(&name.as_str())
}

/// The query the origin receives: the client's, without credential parameters and method
/// overrides, in every spelling.
pub fn forwarded_query(query: Option<&str>) -> String {
    let keep = |pair: &str| {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        !pair.is_empty()
            && !is_credential_param(name)
            && !METHOD_PARAMS.contains(&param_name(name).as_str())
    };
    let query = query.unwrap_or("");
    let mut out = String::with_capacity(query.len());
    // Each parameter with the separator before it, which a kept parameter keeps.
    let mut before = None;
    let mut start = 0;
    for (at, separator) in query
        .match_indices(QUERY_SEPARATORS)
        .chain(std::iter::once((query.len(), "")))
    {
        let pair = &query[start..at];
        if keep(pair) {
            if !out.is_empty() {
                out.push_str(before.unwrap_or("&"));
            }
            out.push_str(pair);
        }
        before = Some(separator);
        start = at + separator.len();
    }
    out
}

/// Plans the origin request for `admitted`, with a body of `body_length` bytes, as request
/// `request_id`, signed at `now` (Unix seconds). `None` if the origin URL does not parse (the
/// configuration is validated, so only a bug gets there).
pub fn plan(
    cfg: &Config,
    req: &Incoming<'_>,
    admitted: &Admitted,
    client_headers: impl IntoIterator<Item = (impl AsRef<str>, impl AsRef<str>)>,
    body_length: u64,
    request_id: RequestId,
    now: u64,
) -> Option<Forward> {
    let keep_authorization = cfg.forward_authorization && admitted.source == Source::Header;
    let mut headers: Vec<(String, String)> = client_headers
        .into_iter()
        .filter_map(|(name, value)| {
            // The runtime lists names in lowercase: copied only when kept, or not lowercase.
            let name = name.as_ref();
            let name: Cow<'_, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(name.to_ascii_lowercase())
            } else {
                Cow::Borrowed(name)
            };
            let value = value.as_ref();
            // The allow-list first: most names are not on it, and the other checks cost more.
            let kept = (keep_authorization && name == "authorization")
                || ((FORWARDED.contains(&&*name) || cfg.forward_headers.iter().any(|h| *h == name))
                    && !never_forwarded(&name)
                    // A key pasted into another header never reaches the origin's logs.
                    && !holds_key(value));
            kept.then(|| (name.into_owned(), value.to_owned()))
        })
        .collect();
    let query = forwarded_query(req.query);
    let mut url = format!("{}{}", cfg.origin, req.path);
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query);
    }
    // Sign the path and query exactly as the runtime will send them: parsed and serialised by
    // the same WHATWG URL rules.
    let parsed = worker::Url::parse(&url).ok()?;
    let signed = Signed {
        method: req.method,
        path: parsed.path(),
        query: parsed.query().unwrap_or(""),
        body_length,
    };
    // Each identity value made once, the signature's parts included.
    headers.extend(
        admitted
            .identity
            .signed_headers(&cfg.identity_keyring, &signed, request_id, now)
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value)),
    );
    Some(Forward {
        url: parsed.into(),
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{RevocationStatus, decide};
    use crate::testing::config;
    use shared::identity::{Identity, ReplayCache};
    use shared::key::{self, Claims, Environment, KeyId};
    use shared::scope::Permission;

    const NOW: u64 = 1_800_000_000;
    const ID: RequestId = RequestId([0x5a; 16]);

    fn key(cfg: &Config) -> String {
        let claims = Claims {
            kid: 1,
            account_id: 7,
            key_id: KeyId([1; 16]),
            environment: Environment::Production,
            scopes: Permission::ReadOnly.scopes(),
            issued_at: NOW,
            expires_at: None,
        };
        key::issue(&claims, &cfg.keyring).unwrap().into_inner()
    }

    fn client_headers(auth: &str) -> Vec<(String, String)> {
        [
            ("Authorization", auth),
            ("Lynxo-Account-Id", "1"),
            ("lynxo-scopes", "*"),
            ("X-Lynxo-Admin", "yes"),
            ("lynxo_account_id", "1"),
            ("X_Lynxo_Admin", "yes"),
            ("LYNXO_SCOPES", "*"),
            ("Lynxo-Identity-Signature", "t=1,kid=7,v2=00"),
            ("Lynxo-Request-Id", "00"),
            ("Host", "api.lynxo.ai"),
            ("X-HTTP-Method-Override", "DELETE"),
            ("X-HTTP-Method", "DELETE"),
            ("X-Method-Override", "DELETE"),
            ("X-Original-URL", "/v1/account"),
            ("X-Rewrite-URL", "/v1/account"),
            ("X-Forwarded-Host", "evil.test"),
            ("X-Forwarded-Prefix", "/admin"),
            ("Forwarded", "host=evil.test"),
            ("X_Forwarded_Host", "evil.test"),
            ("Cookie", "session=1"),
            ("Demo-Status", "201"),
            ("Accept", "application/json"),
            ("Content-Type", "application/json"),
            (
                "Traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
    }

    fn admitted(cfg: &Config, auth: &str) -> Admitted {
        let header_only = Incoming {
            method: "GET",
            path: "/v1/jobs/9",
            query: Some("a=1&b=2"),
            authorization: Some(auth),
        };
        decide(&header_only, cfg, NOW, |_| RevocationStatus::Clear)
            .answer
            .unwrap()
    }

    #[test]
    fn forwards_only_the_allow_list_and_signs_the_request() {
        let cfg = config();
        let auth = format!("Bearer {}", key(&cfg));
        let admitted = admitted(&cfg, &auth);
        let req = Incoming {
            method: "GET",
            path: "/v1/jobs/9",
            query: Some(
                "a=1&api_key=x&API%5FKEY=y&access_token[]=z&_method=DELETE&%5Fmethod=PUT&b=2",
            ),
            authorization: Some(&auth),
        };
        let fwd = plan(&cfg, &req, &admitted, client_headers(&auth), 0, ID, NOW).unwrap();
        assert_eq!(fwd.url, "http://origin.test/v1/jobs/9?a=1&b=2");
        let names: Vec<&str> = fwd.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "accept",
                "content-type",
                "traceparent",
                "lynxo-account-id",
                "lynxo-key-id",
                "lynxo-environment",
                "lynxo-scopes",
                "lynxo-request-id",
                "lynxo-identity-signature",
            ]
        );
        let get = |name: &str| {
            fwd.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("lynxo-account-id"), Some("7"));
        assert_eq!(get("lynxo-request-id"), Some("5a".repeat(16).as_str()));
        let request = Signed {
            method: "GET",
            path: "/v1/jobs/9",
            query: "a=1&b=2",
            body_length: 0,
        };
        let mut replay = ReplayCache::new(10, 30).unwrap();
        let verified =
            Identity::verify(&cfg.identity_keyring, get, &request, NOW + 1, &mut replay).unwrap();
        assert_eq!(verified.identity, admitted.identity);
        assert_eq!(verified.request_id, ID);

        // Extra names come from configuration; Authorization only with its own switch.
        let mut open = cfg.clone();
        open.forward_authorization = true;
        open.forward_headers = vec!["demo-status".to_owned()];
        let fwd = plan(&open, &req, &admitted, client_headers(&auth), 0, ID, NOW).unwrap();
        let has = |name: &str| fwd.headers.iter().any(|(n, _)| n == name);
        assert!(has("demo-status") && has("authorization"));
        assert!(!has("x-http-method-override") && !has("cookie"));

        // A key pasted into a forwarded header stays at the edge.
        let pasted = vec![
            ("User-Agent".to_owned(), format!("script {}", key(&cfg))),
            ("Accept".to_owned(), "*/*".to_owned()),
        ];
        let fwd = plan(&cfg, &req, &admitted, pasted, 0, ID, NOW).unwrap();
        let has = |name: &str| fwd.headers.iter().any(|(n, _)| n == name);
        assert!(has("accept") && !has("user-agent"));
    }

    #[test]
    fn the_body_length_is_signed() {
        let cfg = config();
        let auth = format!("Bearer {}", key(&cfg));
        let admitted = admitted(&cfg, &auth);
        let req = Incoming {
            method: "GET",
            path: "/v1/jobs/9",
            query: None,
            authorization: Some(&auth),
        };
        let fwd = plan(
            &cfg,
            &req,
            &admitted,
            Vec::<(String, String)>::new(),
            13,
            ID,
            NOW,
        )
        .unwrap();
        let get = |name: &str| {
            fwd.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let verify = |body_length| {
            let request = Signed {
                method: "GET",
                path: "/v1/jobs/9",
                query: "",
                body_length,
            };
            let mut replay = ReplayCache::new(10, 30).unwrap();
            Identity::verify(&cfg.identity_keyring, get, &request, NOW, &mut replay).is_ok()
        };
        assert!(verify(13));
        assert!(!verify(12) && !verify(0));
    }

    #[test]
    fn identity_spellings_and_overrides_are_never_forwarded() {
        for name in [
            "lynxo-account-id",
            "LYNXO_ACCOUNT_ID",
            "lynxo_identity_signature",
            "x_lynxo_admin",
            "X-LYNXO-ANYTHING",
            "x-forwarded-host",
            "X_HTTP_METHOD_OVERRIDE",
            "forwarded",
            "content-length",
        ] {
            assert!(never_forwarded(name), "{name}");
        }
        for name in ["demo-status", "accept", "x-request-id", "lynxoaccount"] {
            assert!(!never_forwarded(name), "{name}");
        }
        assert!(FORWARDED.iter().all(|name| !never_forwarded(name)));
    }

    #[test]
    fn method_overrides_leave_the_query() {
        for query in [
            "_method=DELETE",
            "_METHOD=DELETE",
            "%5Fmethod=DELETE",
            "_method[]=DELETE",
            "x-http-method-override=DELETE",
            "X_HTTP_METHOD=DELETE",
        ] {
            assert_eq!(forwarded_query(Some(&format!("a=1&{query}&b"))), "a=1&b");
        }
        assert_eq!(forwarded_query(Some("&&method=x&")), "method=x");
        assert_eq!(
            forwarded_query(Some("a=1;_method=DELETE&b=2;api_key=k;c")),
            "a=1&b=2;c"
        );
        assert_eq!(forwarded_query(Some("q=a;b&r=1")), "q=a;b&r=1");
    }
}
