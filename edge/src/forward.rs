//! What the worker sends the origin for an admitted request: the URL, and the client's headers
//! minus anything that could pose as the edge's identity, plus the signed identity.
//!
//! Dropped: every `lynxo-*` and `x-lynxo-*` header (only the edge may set them), the client's
//! `Authorization` (unless `FORWARD_AUTHORIZATION` is `true`), `Host` and hop-by-hop headers; a
//! key sent in the query string is removed from the forwarded query.

use shared::identity::{HEADER_PREFIX, SIGNATURE_HEADER};

use crate::config::Config;
use crate::decide::{Admitted, Incoming, QUERY_PARAMS, Source};

/// Headers that describe one connection, not the request (RFC 9110 7.6.1), and `Host`.
const DROPPED: [&str; 9] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// The request to send the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Absolute URL at the origin.
    pub url: String,
    /// Headers, names lowercase.
    pub headers: Vec<(String, String)>,
}

/// Whether a client header must not reach the origin.
fn dropped(name: &str, keep_authorization: bool) -> bool {
    name.starts_with(HEADER_PREFIX)
        || name.starts_with("x-lynxo-")
        || (name == "authorization" && !keep_authorization)
        || DROPPED.contains(&name)
}

/// The query without any key-carrying parameter.
fn forwarded_query(query: Option<&str>) -> String {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !pair.is_empty() && !QUERY_PARAMS.contains(&name)
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Plans the origin request for `admitted`, signed at `now` (Unix seconds).
pub fn plan(
    cfg: &Config,
    req: &Incoming<'_>,
    admitted: &Admitted,
    client_headers: impl IntoIterator<Item = (String, String)>,
    now: u64,
) -> Forward {
    let keep_authorization = cfg.forward_authorization && admitted.source == Source::Header;
    let mut headers: Vec<(String, String)> = client_headers
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .filter(|(name, _)| !dropped(name, keep_authorization))
        .collect();
    let identity = admitted.identity;
    headers.extend(
        identity
            .headers()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value)),
    );
    headers.push((
        SIGNATURE_HEADER.to_owned(),
        identity.sign(&cfg.identity_keyring, req.method, req.path, now),
    ));
    let query = forwarded_query(req.query);
    let mut url = format!("{}{}", cfg.origin, req.path);
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query);
    }
    Forward { url, headers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{RevocationStatus, decide};
    use crate::testing::config;
    use shared::identity::Identity;
    use shared::key::{self, Claims, Environment, KeyId};
    use shared::scope::Permission;

    const NOW: u64 = 1_800_000_000;

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
            ("Lynxo-Identity-Signature", "t=1,kid=7,v1=00"),
            ("Host", "api.lynxo.ai"),
            ("Accept", "application/json"),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn strips_client_identity_and_signs_ours() {
        let cfg = config();
        let auth = format!("Bearer {}", key(&cfg));
        let req = Incoming {
            method: "GET",
            path: "/v1/jobs/9",
            query: Some("a=1&api_key=x&b=2"),
            authorization: Some(&auth),
        };
        // The query key makes this two credentials; plan the header-only request instead.
        let header_only = Incoming {
            query: Some("a=1&b=2"),
            ..req
        };
        let admitted = decide(&header_only, &cfg, NOW, |_| RevocationStatus::Clear).unwrap();
        let fwd = plan(&cfg, &req, &admitted, client_headers(&auth), NOW);
        assert_eq!(fwd.url, "http://origin.test/v1/jobs/9?a=1&b=2");
        let get = |name: &str| {
            let values: Vec<&str> = fwd
                .headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect();
            assert!(values.len() <= 1, "{name} forwarded twice");
            values.first().copied()
        };
        assert_eq!(get("authorization"), None);
        assert_eq!(get("x-lynxo-admin"), None);
        assert_eq!(get("host"), None);
        assert_eq!(get("accept"), Some("application/json"));
        assert_eq!(get("lynxo-account-id"), Some("7"));
        let scopes = shared::identity::scopes_value(Permission::ReadOnly.scopes());
        assert_eq!(get("lynxo-scopes"), Some(scopes.as_str()));
        let identity =
            Identity::verify(&cfg.identity_keyring, get, "GET", "/v1/jobs/9", NOW + 1, 60).unwrap();
        assert_eq!(identity, admitted.identity);

        let mut keep = cfg.clone();
        keep.forward_authorization = true;
        let fwd = plan(&keep, &req, &admitted, client_headers(&auth), NOW);
        assert!(
            fwd.headers
                .iter()
                .any(|(n, v)| n == "authorization" && *v == auth)
        );
    }
}
