//! `--check-live`: asks the control plane whether a found key is still active.
//!
//! It calls `POST /v1/keys/verify` (control/src/verify.rs) with a management token of the
//! account, from `LYNXO_MANAGEMENT_TOKEN`. That endpoint answers only about the caller's own
//! keys: another account's key, a forged one and a revoked one all get the same 401, so
//! "inactive" means "not an active key of your account". The key itself goes only to that
//! endpoint, over HTTPS (plain HTTP only to this machine), with redirects refused so it is never
//! re-sent elsewhere.

use std::time::Duration;

use serde::Deserialize;

/// The environment variable that holds the management token.
pub const TOKEN_VAR: &str = "LYNXO_MANAGEMENT_TOKEN";

/// What the control plane says about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// An active key of the token's account: revoke it.
    Active,
    /// Expired.
    Expired,
    /// Not an active key of the token's account: revoked, forged, or another account's.
    Inactive,
    /// An answer this build does not read (a refusal other than the key's or the route's).
    Unknown,
}

impl Liveness {
    /// How output names it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Inactive => "inactive",
            Self::Unknown => "unknown",
        }
    }
}

/// Why the control plane could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// No management token in the environment.
    #[error("--check-live needs a management token in {TOKEN_VAR}")]
    NoToken,
    /// The URL would send keys somewhere they could be read on the way.
    #[error(
        "--check-live {0:?}: give the control plane's https:// URL (http:// only to localhost)"
    )]
    Insecure(String),
    /// The request failed.
    #[error("asking {url}: {error}")]
    Transport {
        /// The endpoint.
        url: String,
        /// What failed.
        error: String,
    },
    /// The control plane refused the call.
    #[error("{url} answered {status}: {body}")]
    Refused {
        /// The endpoint.
        url: String,
        /// The status.
        status: u16,
        /// The start of its body.
        body: String,
    },
}

/// A client of one control plane's verify endpoint.
pub struct Checker {
    url: String,
    token: String,
    agent: ureq::Agent,
}

/// The verdict fields the answer is read by.
#[derive(Deserialize)]
struct Verdict {
    valid: bool,
    status: Option<u16>,
    reason: Option<String>,
}

impl Checker {
    /// A checker for the control plane at `base` (`https://control.example.com`), with the
    /// token `token`.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, LiveError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(LiveError::NoToken)?;
        let uri: ureq::http::Uri = base
            .parse()
            .map_err(|_| LiveError::Insecure(base.to_owned()))?;
        let host = uri.host().unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let secure = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => loopback,
            _ => false,
        };
        if !secure || host.is_empty() || uri.query().is_some() {
            return Err(LiveError::Insecure(base.to_owned()));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(15)))
            .build()
            .into();
        Ok(Self {
            url: format!("{}/v1/keys/verify", base.trim_end_matches('/')),
            token,
            agent,
        })
    }

    /// Whether `key` is an active key of the token's account.
    pub fn check(&self, key: &str) -> Result<Liveness, LiveError> {
        let body = serde_json::json!({ "key": key, "method": "GET", "path": "/" }).to_string();
        let transport = |e: ureq::Error| LiveError::Transport {
            url: self.url.clone(),
            error: e.to_string(),
        };
        let mut response = self
            .agent
            .post(&self.url)
            .header("authorization", format!("Bearer {}", self.token))
            .content_type("application/json")
            .send(body)
            .map_err(transport)?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_string()
            .map_err(transport)?;
        if status != 200 {
            return Err(LiveError::Refused {
                url: self.url.clone(),
                status,
                body: redacted(&text).chars().take(300).collect(),
            });
        }
        let verdict: Verdict = serde_json::from_str(&text).map_err(|e| LiveError::Transport {
            url: self.url.clone(),
            error: format!("unexpected answer: {e}"),
        })?;
        Ok(liveness(&verdict))
    }
}

/// `text` with every key in it replaced by its hint: an answer that echoes a key (a proxy's
/// error page) must not print it.
fn redacted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for found in shared::scan::find_keys(text) {
        out.push_str(&text[from..found.start]);
        out.push_str(&shared::key::hint(found.text));
        from = found.start + found.text.len();
    }
    out.push_str(&text[from..]);
    out
}

/// A verdict about `GET /` read as liveness: a key refused for the route (400, 403, 404, 405)
/// authenticated, so it is active; a 401 is a key that is not.
fn liveness(verdict: &Verdict) -> Liveness {
    match (verdict.valid, verdict.status, verdict.reason.as_deref()) {
        (true, ..) => Liveness::Active,
        (false, Some(400 | 403 | 404 | 405), _) => Liveness::Active,
        (false, Some(401), Some("expired")) => Liveness::Expired,
        (false, Some(401), _) => Liveness::Inactive,
        _ => Liveness::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_go_only_to_https_or_this_machine() {
        let token = || Some("lnxm_x".to_owned());
        for ok in [
            "https://control.example.com",
            "https://control.example.com/",
            "http://127.0.0.1:8080",
            "http://localhost:3000/",
            "http://[::1]:9000",
        ] {
            assert!(Checker::new(ok, token()).is_ok(), "{ok}");
        }
        for refused in [
            "http://control.example.com",
            "http://10.0.0.1",
            "ftp://x",
            "control.example.com",
            "https://x/?k=1",
            "",
        ] {
            assert!(
                matches!(Checker::new(refused, token()), Err(LiveError::Insecure(_))),
                "{refused}"
            );
        }
        assert!(matches!(
            Checker::new("https://x", None),
            Err(LiveError::NoToken)
        ));
        assert!(matches!(
            Checker::new("https://x", Some(String::new())),
            Err(LiveError::NoToken)
        ));
    }

    #[test]
    fn verdicts_read_as_liveness() {
        let v = |valid, status, reason: Option<&str>| Verdict {
            valid,
            status,
            reason: reason.map(str::to_owned),
        };
        assert_eq!(liveness(&v(true, None, None)), Liveness::Active);
        assert_eq!(liveness(&v(false, Some(404), None)), Liveness::Active);
        assert_eq!(liveness(&v(false, Some(403), None)), Liveness::Active);
        assert_eq!(
            liveness(&v(false, Some(401), Some("expired"))),
            Liveness::Expired
        );
        assert_eq!(liveness(&v(false, Some(401), None)), Liveness::Inactive);
        assert_eq!(liveness(&v(false, Some(503), None)), Liveness::Unknown);
        assert_eq!(liveness(&v(false, None, None)), Liveness::Unknown);
    }

    #[test]
    fn an_answer_that_echoes_a_key_is_printed_without_it() {
        let key = crate::find::tests::key(9);
        let text = format!("{{\"detail\":\"bad key {key}\"}} and {key}");
        let shown = redacted(&text);
        assert!(!shown.contains(&key[10..90]), "{shown}");
        assert_eq!(
            shown.matches(&shared::key::hint(&key)).count(),
            2,
            "{shown}"
        );
        assert_eq!(redacted("no key"), "no key");
    }
}
