//! The admission decision for one API request, as pure functions of the request's parts, the
//! configuration, the time and the revocation status: unit- and property-tested on the host.
//!
//! The worker runs it in two steps because the revocation shard to read depends on the key:
//! [`authenticate`] (credentials, then the key itself, no I/O), then the glue reads the shard for
//! the key id, then [`admit`] (revocation, then route and scope). [`decide`] chains the two for
//! tests. Every check is a call into `shared`; this module only maps the results to answers.

use std::borrow::Cow;

use shared::gate::{self, Answer, Denial};
use shared::identity::Identity;
use shared::key::{self, Claims, Environment, KeyError, KeyId};
use shared::scope::{Method, PolicyError, Route, Scope};

use crate::config::Config;
use crate::problem::{self, CHALLENGE, Problem, Reply, bearer_error};

/// Longest `Authorization` header (or query credential) read at all. A key is at most 104
/// characters; anything much longer is refused before it is scanned or hashed.
pub const MAX_CREDENTIAL_LEN: usize = 1024;

/// Query parameters that may carry a key (RFC 6750 2.3 and a common alias), as [`param_name`]
/// reads them.
pub const QUERY_PARAMS: [&str; 2] = ["access_token", "api_key"];

/// Times a name is percent-decoded at most: enough for any double (or triple) encoding an
/// origin's stack might undo.
const DECODE_ROUNDS: usize = 4;

/// Percent-decodes `text` (and `+` as a space, as forms do) until nothing changes, at most
/// [`DECODE_ROUNDS`] times; a `%` not followed by two hex digits stays as it is.
pub fn percent_decode(text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..DECODE_ROUNDS {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            match bytes[i] {
                b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi << 4 | lo) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                },
                b'+' => out.push(b' '),
                b => out.push(b),
            }
            i += 1;
        }
        if out == bytes {
            break;
        }
        bytes = out;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A query parameter's name as the frameworks behind an origin may read it: percent-decoded,
/// ASCII lowercase, without a `[...]` suffix (`api_key[]` is `api_key` to PHP and Rails), with
/// `-`, `.` and spaces read as `_` (PHP turns `.` and spaces into `_`). Credential names and
/// routing overrides are compared in this form, so no spelling of them slips past.
pub fn param_name(raw: &str) -> String {
    let decoded = percent_decode(raw).to_ascii_lowercase();
    let base = decoded.split('[').next().unwrap_or("");
    base.chars()
        .map(|c| if matches!(c, '-' | '.' | ' ') { '_' } else { c })
        .collect()
}

/// What separates a query's parameters: `&`, and `;`, which some frameworks read as `&`.
pub const QUERY_SEPARATORS: [char; 2] = ['&', ';'];

/// The `(name, value)` pairs of a query string, raw, split at every [`QUERY_SEPARATORS`].
pub fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or("")
        .split(QUERY_SEPARATORS)
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Whether `text` holds a Lynxo key anywhere: a run of key characters starting with the prefix
/// that passes the public checks (shape, length, checksum; no secret needed).
pub fn holds_key(text: &str) -> bool {
    let bytes = text.as_bytes();
    let is_key_char = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    text.match_indices(key::PREFIX).any(|(start, _)| {
        let len = bytes[start..].iter().take_while(|b| is_key_char(b)).count();
        key::parse(&text[start..start + len]).is_ok()
    })
}

/// The parts of a request the decision reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming<'a> {
    /// The method, as sent.
    pub method: &'a str,
    /// The URL path, without the query.
    pub path: &'a str,
    /// The query string without `?`, if any.
    pub query: Option<&'a str>,
    /// The `Authorization` header: several headers arrive joined by `", "` (Fetch `Headers`).
    pub authorization: Option<&'a str>,
}

/// Where a credential came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `Authorization: Bearer <key>`.
    Header,
    /// `?access_token=` or `?api_key=`.
    Query,
}

/// A key that passed every check that needs no revocation list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The key's claims.
    pub claims: Claims,
    /// Where the key was sent.
    pub source: Source,
}

/// What the revocation list says about a key id (`shared`'s, so both sides read it alike).
pub use shared::gate::Revocation as RevocationStatus;

/// A request to forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// Who is calling.
    pub identity: Identity,
    /// The route called.
    pub route: &'static Route,
    /// Where the key was sent.
    pub source: Source,
}

/// The decision about a request and whom it belongs to, in one value: what the worker answers,
/// meters and rate-limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The key's claims when its tag verified (an expired key's and another environment's
    /// too): the request counts as the key owner's. `None` for a forged or mis-copied key, or
    /// no key at all: such a request belongs to nobody.
    pub owner: Option<Claims>,
    /// The scope the request is about: the route's when admitted, the missing one for
    /// `insufficient_scope`.
    pub scope: Option<Scope>,
    /// Forward, or the edge's own answer.
    pub answer: Result<Admitted, Reply>,
}

impl Decided {
    fn refused(owner: Option<Claims>, reply: Reply) -> Self {
        Self {
            owner,
            scope: None,
            answer: Err(reply),
        }
    }
}

/// The first step: finds the one credential and checks the key at `now` (Unix seconds) with
/// `shared::gate::authenticate`. A refusal is final.
pub fn authenticate(req: &Incoming<'_>, cfg: &Config, now: u64) -> Result<Verified, Decided> {
    let (token, source) = credential(req).map_err(|reply| Decided::refused(None, reply))?;
    match gate::authenticate(&token, &cfg.keyring, Some(cfg.environment), now) {
        Ok(verified) => Ok(Verified {
            claims: verified.claims,
            source,
        }),
        Err(denial) => {
            // An expired key has an owner here: its tag verified. So has another environment's
            // key once its tag verifies (checked only now, after the refusal was decided
            // without a secret): the mistake then shows in that key's activity. A forged or
            // mis-copied key of another environment fails the tag and belongs to nobody.
            let owner = match &denial {
                Denial::Expired(claims) => Some(*claims),
                Denial::Key(KeyError::WrongEnvironment { .. }) => {
                    key::check(&token, &cfg.keyring, None).ok()
                }
                _ => None,
            };
            Err(Decided::refused(owner, refusal(&denial, cfg)))
        }
    }
}

/// The second step: revocation, then the route and its scope (`gate::Verified::admit`).
pub fn admit(
    verified: &Verified,
    req: &Incoming<'_>,
    status: RevocationStatus,
    cfg: &Config,
) -> Decided {
    let result = gate::Verified {
        claims: verified.claims,
    }
    .admit(status, req.method, req.path);
    let scope = gate::scope_of(&result);
    let answer = match result {
        Ok(admitted) => {
            let claims = admitted.claims;
            Ok(Admitted {
                identity: Identity {
                    account_id: claims.account_id,
                    key_id: claims.key_id,
                    environment: claims.environment,
                    scopes: claims.scopes,
                },
                route: admitted.route,
                source: verified.source,
            })
        }
        Err(denial) => Err(refusal(&denial, cfg)),
    };
    Decided {
        owner: Some(verified.claims),
        scope,
        answer,
    }
}

/// Both steps, with `revocation` answering for the key id: what the worker decides, for the
/// tests (the worker reads the shard between the steps).
#[doc(hidden)]
pub fn decide(
    req: &Incoming<'_>,
    cfg: &Config,
    now: u64,
    revocation: impl FnOnce(KeyId) -> RevocationStatus,
) -> Decided {
    match authenticate(req, cfg, now) {
        Ok(verified) => admit(&verified, req, revocation(verified.claims.key_id), cfg),
        Err(decided) => decided,
    }
}

/// Whether a raw query parameter name is a credential's, in any spelling.
pub fn is_credential_param(raw_name: &str) -> bool {
    QUERY_PARAMS.contains(&param_name(raw_name).as_str())
}

/// The query parameters that carry a key, and their values (percent-decoded).
fn query_credentials(query: Option<&str>) -> impl Iterator<Item = String> + '_ {
    query_pairs(query)
        .filter(|(name, _)| is_credential_param(name))
        .map(|(_, value)| percent_decode(value))
}

/// Refuses a URL that carries a Lynxo key anywhere but in a credential parameter: in the path,
/// or in another parameter's name or value. Such a key would reach the origin (and its logs).
fn no_stray_key(req: &Incoming<'_>) -> Result<(), Reply> {
    let in_query = query_pairs(req.query).any(|(name, value)| {
        !is_credential_param(name)
            && (holds_key(&percent_decode(name)) || holds_key(&percent_decode(value)))
    });
    if in_query || holds_key(&percent_decode(req.path)) {
        return Err(problem::invalid_request(
            "key_in_url",
            "The URL carries an API key outside the credential.",
            "Send your key only as `Authorization: Bearer <key>`; never put it in the path or another query parameter.",
        ));
    }
    Ok(())
}

fn too_large() -> Reply {
    problem::invalid_request(
        "credential_too_large",
        "The credentials are too large to be an API key.",
        "Send only your key, as `Authorization: Bearer <key>`.",
    )
}

/// Finds the single credential of the request, or the answer for why there is none.
fn credential<'a>(req: &Incoming<'a>) -> Result<(Cow<'a, str>, Source), Reply> {
    // Sizes first: nothing longer is scanned.
    let header = req.authorization.filter(|h| !h.is_empty());
    if header.is_some_and(|h| h.len() > MAX_CREDENTIAL_LEN)
        || req.query.is_some_and(|q| q.len() > 16 * MAX_CREDENTIAL_LEN)
    {
        return Err(too_large());
    }
    no_stray_key(req)?;
    let mut from_query = query_credentials(req.query);
    let first_query = from_query.next();
    let several_in_query = from_query.next().is_some();
    // Keys contain no commas, so a comma means two headers (joined by Fetch) or two values.
    let several_in_header = header.is_some_and(|h| h.contains(','));
    if several_in_query || several_in_header || (header.is_some() && first_query.is_some()) {
        return Err(problem::invalid_request(
            "multiple_credentials",
            "The request carries more than one credential.",
            "Send exactly one key, in one `Authorization: Bearer <key>` header and not also in the query string.",
        ));
    }
    if let Some(value) = first_query {
        if value.len() > MAX_CREDENTIAL_LEN {
            return Err(too_large());
        }
        return Ok((Cow::Owned(value), Source::Query));
    }
    let Some(header) = header else {
        return Err(problem::missing_credentials(None));
    };
    let (scheme, token) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        if token.trim().is_empty() {
            return Err(problem::invalid_request(
                "empty_token",
                "The `Authorization` header has the `Bearer` scheme but no key.",
                "Put your key after `Bearer `: `Authorization: Bearer <key>`.",
            ));
        }
        return Ok((Cow::Borrowed(token), Source::Header));
    }
    if header.trim_start().starts_with(key::PREFIX) {
        return Err(problem::invalid_request(
            "missing_bearer_scheme",
            "The `Authorization` header holds a key without the `Bearer` scheme.",
            "Put `Bearer ` before the key: `Authorization: Bearer lnx_...`.",
        ));
    }
    Err(problem::missing_credentials(Some(
        "Lynxo API keys use the Bearer scheme: `Authorization: Bearer <key>`.",
    )))
}

/// The answer for a key that is forged, tampered, signed by a retired kid, or revoked: the same
/// bytes in every case, so a prober cannot tell them apart.
pub fn not_valid() -> Reply {
    problem::invalid_token(
        None,
        "The key is not valid: it may have been revoked or replaced. Check it in the dashboard and create a new key if needed.",
    )
}

/// The hint for each key error that is safe to name: the public ones from `shared::scan` (the
/// JavaScript package's `inspectKey` gives the same words), the environment mismatch here.
fn key_hint(error: &KeyError) -> Option<String> {
    match error {
        KeyError::WrongEnvironment { key, endpoint } => Some(format!(
            "This is a {} key, but this endpoint serves {}. Use a key of that environment.",
            environment_label(*key),
            environment_label(*endpoint),
        )),
        other => shared::scan::error_hint(other),
    }
}

fn expired_hint(expired_at: u64) -> String {
    shared::scan::error_hint(&KeyError::Expired { expired_at }).unwrap_or_default()
}

fn environment_label(environment: Environment) -> String {
    format!(
        "{} (`{}{}_` keys)",
        environment.name(),
        key::PREFIX,
        environment.tag()
    )
}

/// The edge's problem document for a refusal: the (status, code, reason, scope) come from
/// [`Denial::answer`], the same as the control plane's verify endpoint reports; the edge adds
/// the words (title, detail, hint) and the headers (RFC 6750 challenges, `Allow`, `Retry-After`).
pub fn refusal(denial: &Denial, cfg: &Config) -> Reply {
    let mut reply = refusal_reply(denial, cfg);
    // Why, for the key owner's activity log: from the denial itself, whatever the body says (a
    // revoked key's body names no reason).
    if let Some(reason) = denial.refusal_reason() {
        reply.reason = Some(reason);
    }
    reply
}

fn refusal_reply(denial: &Denial, cfg: &Config) -> Reply {
    let answer = denial.answer();
    let hint = match denial {
        Denial::Key(e) => key_hint(e),
        Denial::Expired(claims) => Some(expired_hint(claims.expires_at.unwrap_or(0))),
        _ => None,
    };
    match denial {
        Denial::Key(_) | Denial::Expired(_) | Denial::Revoked => match (answer.reason, hint) {
            (Some(reason), Some(hint)) => {
                let mut p = Problem::new(
                    answer.status,
                    answer.code,
                    "Unauthorized",
                    "The API key is not valid.",
                )
                .reason(reason)
                .hint(hint)
                .header("www-authenticate", bearer_error(answer.code));
                if let Denial::Key(KeyError::WrongEnvironment { key, endpoint }) = denial {
                    p = p
                        .field("key_environment", key.name())
                        .field("endpoint_environment", endpoint.name());
                }
                p.reply()
            }
            // Forged, tampered, unknown-signer, revoked, or unknown to this build.
            _ => not_valid(),
        },
        Denial::RevocationUnavailable => problem::unavailable(
            answer.code,
            "The edge cannot confirm that the key is not revoked right now, so it refuses the request.",
            cfg.retry_after(),
        ),
        Denial::Policy(e) => policy_reply(e, answer),
        // A denial this build does not know: refuse, without detail.
        _ => problem::internal(),
    }
}

/// The answer for a route-policy refusal.
fn policy_reply(error: &PolicyError, answer: Answer) -> Reply {
    let Answer { status, code, .. } = answer;
    match error {
        PolicyError::NoRoute => Problem::new(status, code, "Not Found", "The Lynxo API has no such route.")
            .hint("Check the path against the API reference.")
            .reply(),
        PolicyError::MethodNotAllowed { allowed } => {
            let mut names: Vec<&str> = allowed.iter().map(|m| m.name()).collect();
            if allowed.contains(&Method::Get) {
                names.push("HEAD");
            }
            let allow = names.join(", ");
            Problem::new(status, code, "Method Not Allowed", format!("This route accepts {allow}."))
                .header("allow", allow)
                .reply()
        }
        PolicyError::InsufficientScope { needed } => Problem::new(
            status,
            code,
            "Forbidden",
            format!("The API key lacks the `{needed}` scope this route needs."),
        )
        .field("scope", needed.name())
        .hint(format!("Edit the key's permissions in the dashboard to include `{needed}`, or use a key that has it."))
        .header("www-authenticate", format!(r#"{CHALLENGE}, error="{code}", scope="{needed}""#))
        .reply(),
        PolicyError::InvalidPath => Problem::new(
            status,
            code,
            "Bad Request",
            "The path is not canonical: path segments hold only letters, digits, `-`, `.`, `_` and `~`, and are never `.` or `..`.",
        )
        .hint("Send ids as they are, without percent-encoding, `;` parameters or dot segments.")
        .reply(),
        // A policy error this build does not know: refuse, without detail.
        _ => problem::internal(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::config;
    use serde_json::Value;
    use shared::key::KeyId;
    use shared::mac::Keyring;
    use shared::scope::{Permission, ScopeSet};

    const NOW: u64 = 1_800_000_000;

    fn claims(environment: Environment, scopes: ScopeSet) -> Claims {
        Claims {
            kid: 1,
            account_id: 42,
            key_id: KeyId([3; 16]),
            environment,
            scopes,
            issued_at: NOW - 100,
            expires_at: None,
        }
    }

    fn issue(claims: &Claims, ring: &Keyring) -> String {
        key::issue(claims, ring).unwrap().into_inner()
    }

    fn live_key() -> String {
        issue(
            &claims(Environment::Production, Permission::ReadOnly.scopes()),
            &config().keyring,
        )
    }

    fn run(
        method: &str,
        path: &str,
        auth: Option<&str>,
        query: Option<&str>,
        status: RevocationStatus,
    ) -> Result<Admitted, Reply> {
        let req = Incoming {
            method,
            path,
            query,
            authorization: auth,
        };
        decide(&req, &config(), NOW, |_| status).answer
    }

    fn get(auth: &str) -> Result<Admitted, Reply> {
        run("GET", "/v1/jobs", Some(auth), None, RevocationStatus::Clear)
    }

    fn body(reply: &Reply) -> Value {
        serde_json::from_str(&reply.body).unwrap()
    }

    /// (status, code, reason) of a refusal.
    fn refusal(result: Result<Admitted, Reply>) -> (u16, String, Option<String>) {
        let reply = result.unwrap_err();
        let b = body(&reply);
        assert_eq!(b["status"], reply.status);
        assert_eq!(reply.header("content-type"), Some(problem::PROBLEM_JSON));
        (
            reply.status,
            b["code"].as_str().unwrap().to_owned(),
            b["reason"].as_str().map(str::to_owned),
        )
    }

    #[test]
    fn a_valid_key_is_admitted_with_its_identity() {
        let key = live_key();
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let admitted = get(&format!("{scheme} {key}")).unwrap();
            assert_eq!(admitted.identity.account_id, 42);
            assert_eq!(admitted.identity.key_id, KeyId([3; 16]));
            assert_eq!(admitted.route.pattern, "/v1/jobs");
            assert_eq!(admitted.source, Source::Header);
        }
        let q = format!("limit=5&api_key={key}");
        let admitted = run("GET", "/v1/jobs", None, Some(&q), RevocationStatus::Clear).unwrap();
        assert_eq!(admitted.source, Source::Query);
    }

    #[test]
    fn credential_errors() {
        let key = live_key();
        let reply = run("GET", "/v1/jobs", None, None, RevocationStatus::Clear).unwrap_err();
        assert_eq!(reply.status, 401);
        assert_eq!(reply.header("www-authenticate"), Some(CHALLENGE));
        let reply = get("Basic dXNlcjpwYXNz").unwrap_err();
        assert_eq!(reply.header("www-authenticate"), Some(CHALLENGE));

        let bad_request = |r| refusal(r);
        let two = format!("Bearer {key}, Bearer {key}");
        assert_eq!(
            bad_request(get(&two)),
            (
                400,
                "invalid_request".into(),
                Some("multiple_credentials".into())
            )
        );
        let q = format!("access_token={key}");
        let both = run(
            "GET",
            "/v1/jobs",
            Some(&format!("Bearer {key}")),
            Some(&q),
            RevocationStatus::Clear,
        );
        assert_eq!(refusal(both).2.as_deref(), Some("multiple_credentials"));
        let q2 = format!("access_token={key}&api_key={key}");
        let two_q = run("GET", "/v1/jobs", None, Some(&q2), RevocationStatus::Clear);
        assert_eq!(refusal(two_q).2.as_deref(), Some("multiple_credentials"));
        let huge = format!("Bearer {}", "a".repeat(MAX_CREDENTIAL_LEN));
        assert_eq!(
            refusal(get(&huge)).2.as_deref(),
            Some("credential_too_large")
        );
        assert_eq!(
            refusal(get(&key)).2.as_deref(),
            Some("missing_bearer_scheme")
        );
        assert_eq!(refusal(get("Bearer ")).2.as_deref(), Some("empty_token"));
    }

    #[test]
    fn credential_names_in_every_spelling() {
        let key = live_key();
        let auth = format!("Bearer {key}");
        for name in [
            "api_key",
            "api%5Fkey",
            "api%5fkey",
            "api%255Fkey",
            "API_KEY",
            "Api-Key",
            "api.key",
            "api+key",
            "api_key[]",
            "api_key%5B%5D",
            "access_token",
            "ACCESS_TOKEN[0]",
            "access%2Dtoken",
        ] {
            let q = format!("a=1&{name}={key}");
            // Beside a header key: two credentials.
            let both = run(
                "GET",
                "/v1/jobs",
                Some(&auth),
                Some(&q),
                RevocationStatus::Clear,
            );
            assert_eq!(
                refusal(both).2.as_deref(),
                Some("multiple_credentials"),
                "{name}"
            );
            // Alone: the credential, its value decoded.
            let alone = run("GET", "/v1/jobs", None, Some(&q), RevocationStatus::Clear);
            assert_eq!(alone.unwrap().source, Source::Query, "{name}");
        }
        // `;` separates parameters too, for the frameworks that read it so.
        let q = format!("a=1;api_key={key}");
        let both = run(
            "GET",
            "/v1/jobs",
            Some(&auth),
            Some(&q),
            RevocationStatus::Clear,
        );
        assert_eq!(refusal(both).2.as_deref(), Some("multiple_credentials"));
        let encoded = format!("api_key={}", key.replace('_', "%5F"));
        assert!(
            run(
                "GET",
                "/v1/jobs",
                None,
                Some(&encoded),
                RevocationStatus::Clear
            )
            .is_ok()
        );
        assert_eq!(
            param_name("x%2Dhttp%2Dmethod%2Doverride"),
            "x_http_method_override"
        );
        assert_eq!(param_name("%5FMETHOD"), "_method");
    }

    #[test]
    fn a_key_anywhere_else_in_the_url_is_refused() {
        let key = live_key();
        let auth = format!("Bearer {key}");
        let other = issue(
            &claims(Environment::Production, ScopeSet::FULL_ACCESS),
            &config().keyring,
        );
        let encoded = other.replace('_', "%5F");
        for query in [
            format!("q={other}"),
            format!("apikey={other}"),
            format!("token={encoded}"),
            format!("note=see%20{other}%20here"),
            format!("{other}=1"),
            format!("x={}", encoded.replace('%', "%25")),
        ] {
            let r = run(
                "GET",
                "/v1/jobs",
                Some(&auth),
                Some(&query),
                RevocationStatus::Clear,
            );
            assert_eq!(refusal(r).2.as_deref(), Some("key_in_url"), "{query}");
        }
        let path = format!("/v1/jobs/{other}");
        let r = run("GET", &path, Some(&auth), None, RevocationStatus::Clear);
        assert_eq!(refusal(r).2.as_deref(), Some("key_in_url"));
        // Text that only looks like the prefix, or a key with a broken checksum, is not a key.
        let mut typo = other.clone().into_bytes();
        typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        for query in ["q=lnx_is_a_prefix".to_owned(), format!("q={typo}")] {
            let r = run(
                "GET",
                "/v1/jobs",
                Some(&auth),
                Some(&query),
                RevocationStatus::Clear,
            );
            assert!(r.is_ok(), "{query}");
        }
    }

    #[test]
    fn key_errors_have_hints_where_they_leak_nothing() {
        let key = live_key();
        let mut typo = key.clone().into_bytes();
        typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        let cases = [
            (format!("Bearer  {key}"), "surrounding_whitespace"),
            (
                format!("Bearer {}", &key[..key.len() - 1]),
                "invalid_length",
            ),
            (format!("Bearer {typo}"), "invalid_checksum"),
            (
                format!("Bearer {}", key.replacen('a', "-", 1)),
                "invalid_character",
            ),
            ("Bearer sk_live_123".to_owned(), "missing_prefix"),
        ];
        for (auth, reason) in cases {
            let reply = get(&auth).unwrap_err();
            assert_eq!(reply.status, 401, "{auth}");
            assert_eq!(
                reply.header("www-authenticate"),
                Some(r#"Bearer realm="lynxo", error="invalid_token""#)
            );
            let b = body(&reply);
            assert_eq!(b["code"], "invalid_token");
            assert_eq!(b["reason"], reason, "{auth}");
            assert!(b["hint"].is_string());
        }
        let mut expiring = claims(Environment::Production, Permission::ReadOnly.scopes());
        expiring.expires_at = Some(NOW);
        let expired = issue(&expiring, &config().keyring);
        assert_eq!(
            refusal(get(&format!("Bearer {expired}"))).2.as_deref(),
            Some("expired")
        );
        // An expired key still has an owner; a mis-copied one has none.
        let auth = format!("Bearer {expired}");
        let owner = |auth: &str| {
            let req = Incoming {
                method: "GET",
                path: "/v1/jobs",
                query: None,
                authorization: Some(auth),
            };
            decide(&req, &config(), NOW, |_| RevocationStatus::Clear).owner
        };
        assert_eq!(owner(&auth).map(|c| c.key_id), Some(KeyId([3; 16])));
        assert_eq!(owner(&format!("Bearer {typo}")), None);
        let dev = issue(
            &claims(Environment::Development, ScopeSet::FULL_ACCESS),
            &config().keyring,
        );
        // Another environment's key whose tag verifies is its owner's (the refusal is metered
        // against it); one signed with another keyring, or mis-copied, belongs to nobody.
        assert_eq!(
            owner(&format!("Bearer {dev}")).map(|c| (c.key_id, c.environment)),
            Some((KeyId([3; 16]), Environment::Development))
        );
        let other_ring = Keyring::from_config(&format!("active=1;1:{}", "99".repeat(32))).unwrap();
        let forged_dev = issue(
            &claims(Environment::Development, ScopeSet::FULL_ACCESS),
            &other_ring,
        );
        assert_eq!(owner(&format!("Bearer {forged_dev}")), None);
        let mut tampered = dev.clone().into_bytes();
        let at = tampered.len() - 10;
        tampered[at] = if tampered[at] == b'a' { b'b' } else { b'a' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(owner(&format!("Bearer {tampered}")), None);
        // The answer is the same with or without an owner: the environment is named.
        assert_eq!(
            refusal(get(&format!("Bearer {dev}"))).2.as_deref(),
            Some("wrong_environment")
        );
        assert_eq!(
            refusal(get(&format!("Bearer {forged_dev}"))).2.as_deref(),
            Some("wrong_environment")
        );
    }

    #[test]
    fn the_decision_carries_its_attribution() {
        let key = live_key();
        let auth = format!("Bearer {key}");
        let decided = |method, status| {
            let req = Incoming {
                method,
                path: "/v1/jobs",
                query: None,
                authorization: Some(&auth),
            };
            decide(&req, &config(), NOW, |_| status)
        };
        let admitted = decided("GET", RevocationStatus::Clear);
        assert_eq!(admitted.owner.map(|c| c.key_id), Some(KeyId([3; 16])));
        assert_eq!(admitted.scope, Some(Scope::JobsRead));
        let refused = decided("POST", RevocationStatus::Clear);
        assert_eq!(refused.scope, Some(Scope::JobsWrite));
        assert_eq!(refused.answer.unwrap_err().status, 403);
        let revoked = decided("GET", RevocationStatus::Revoked);
        assert_eq!(revoked.owner.map(|c| c.key_id), Some(KeyId([3; 16])));
        assert_eq!(revoked.scope, None);
    }

    #[test]
    fn another_environment_is_named() {
        let dev = issue(
            &claims(Environment::Development, ScopeSet::FULL_ACCESS),
            &config().keyring,
        );
        let reply = get(&format!("Bearer {dev}")).unwrap_err();
        let b = body(&reply);
        assert_eq!(
            (reply.status, b["reason"].as_str()),
            (401, Some("wrong_environment"))
        );
        let hint = b["hint"].as_str().unwrap();
        assert!(
            hint.contains("development") && hint.contains("production"),
            "{hint}"
        );
    }

    #[test]
    fn forged_unknown_kid_and_revoked_look_the_same() {
        let good = live_key();
        let other_ring = Keyring::from_config(&format!("active=1;1:{}", "99".repeat(32))).unwrap();
        let forged = issue(
            &claims(Environment::Production, ScopeSet::FULL_ACCESS),
            &other_ring,
        );
        let kid9_ring = Keyring::from_config(&format!("active=9;9:{}", "11".repeat(32))).unwrap();
        let mut c = claims(Environment::Production, ScopeSet::FULL_ACCESS);
        c.kid = 9;
        let unknown_kid = issue(&c, &kid9_ring);
        let revoked = run(
            "GET",
            "/v1/jobs",
            Some(&format!("Bearer {good}")),
            None,
            RevocationStatus::Revoked,
        )
        .unwrap_err();
        // The same bytes to the client; only the revoked key's owner learns why, in its
        // activity log (a forged key has no owner).
        for other in [forged, unknown_kid] {
            let reply = get(&format!("Bearer {other}")).unwrap_err();
            assert_eq!(reply.on_the_wire(), revoked.on_the_wire());
            assert_eq!(reply.reason, None);
        }
        assert_eq!(revoked.reason, Some(shared::usage::Reason::Revoked));
        assert_eq!(revoked.status, 401);
        assert!(body(&revoked).get("reason").is_none());
    }

    #[test]
    fn revocation_list_unavailable_fails_closed() {
        let auth = format!("Bearer {}", live_key());
        let reply = run(
            "GET",
            "/v1/jobs",
            Some(&auth),
            None,
            RevocationStatus::Unavailable,
        )
        .unwrap_err();
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header("retry-after"), Some("2"));
        assert_eq!(body(&reply)["code"], "revocation_list_unavailable");
    }

    #[test]
    fn route_policy() {
        let auth = format!("Bearer {}", live_key());
        let call = |method, path| run(method, path, Some(&auth), None, RevocationStatus::Clear);
        assert_eq!(refusal(call("GET", "/v2/nope")).0, 404);
        let reply = call("PUT", "/v1/jobs").unwrap_err();
        assert_eq!(reply.status, 405);
        assert_eq!(reply.header("allow"), Some("GET, POST, HEAD"));
        let reply = call("POST", "/v1/jobs").unwrap_err();
        assert_eq!(reply.status, 403);
        assert_eq!(
            reply.header("www-authenticate"),
            Some(r#"Bearer realm="lynxo", error="insufficient_scope", scope="jobs:write""#)
        );
        assert_eq!(body(&reply)["code"], "insufficient_scope");
        assert!(call("HEAD", "/v1/jobs/abc").is_ok());
        for path in [
            "/v1/webhooks/x%2F..%2F..%2Faccount",
            "/v1/jobs/j;x",
            "/v1/jobs/%2e%2e",
        ] {
            let (status, code, _) = refusal(call("GET", path));
            assert_eq!((status, code.as_str()), (400, "invalid_path"), "{path}");
        }
    }
}
