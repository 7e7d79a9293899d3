//! The whole admission decision for one API request, as the edge and the control plane's
//! verify endpoint both make it, and the answer each refusal gets: one rule, two callers.
//!
//! It runs in two steps because the revocation status to look up depends on the key id and
//! each caller looks it up asynchronously in its own store (the edge's cached shards, the
//! control plane's database): [`authenticate`] checks the key (public checks, environment,
//! tag, expiry; no I/O), then [`Verified::admit`] takes the revocation status and checks the
//! route policy. [`Denial::answer`] is the (status, code, reason, scope) of every refusal, so
//! the edge's problem documents and the verify endpoint's verdicts cannot drift apart.

use crate::key::{self, Claims, Environment, KeyError, KeyId};
use crate::mac::Keyring;
use crate::scope::{self, PolicyError, Route, Scope};
use crate::usage::Reason;

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denial {
    /// The key itself is invalid (never [`KeyError::Expired`]: that is [`Denial::Expired`]).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The key is genuine, of this environment, but expired: it still has an owner.
    #[error("the key expired")]
    Expired(Claims),
    /// The key is genuine but revoked.
    #[error("the key has been revoked")]
    Revoked,
    /// The revocation status could not be learnt: fail closed.
    #[error("the revocation list is unavailable")]
    RevocationUnavailable,
    /// The key may not call this route.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// What the revocation list says about a key id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The list does not name the key.
    Clear,
    /// The list names the key.
    Revoked,
    /// No usable list (missing, unverified, or past its next-update time).
    Unavailable,
}

impl From<bool> for Revocation {
    fn from(revoked: bool) -> Self {
        if revoked { Self::Revoked } else { Self::Clear }
    }
}

/// The answer to a refusal: what both the edge and the verify endpoint report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status the edge refuses with.
    pub status: u16,
    /// The stable problem code (`invalid_token`, `insufficient_scope`, ...).
    pub code: &'static str,
    /// For a key mistake that is safe to name (typo, expiry, environment): which one.
    pub reason: Option<&'static str>,
    /// For `insufficient_scope`: the scope the route needs.
    pub scope: Option<Scope>,
}

impl Answer {
    const fn refuse(status: u16, code: &'static str) -> Self {
        Self {
            status,
            code,
            reason: None,
            scope: None,
        }
    }
}

/// The problem code of an invalid key, whatever the reason.
pub const INVALID_TOKEN: &str = "invalid_token";

impl Denial {
    /// The (status, code, reason, scope) of this refusal. Forged, tampered, unknown-signer and
    /// revoked keys get one identical answer, so a prober cannot tell them apart.
    pub fn answer(&self) -> Answer {
        match self {
            Self::Key(e) if e.is_forgery_class() => Answer::refuse(401, INVALID_TOKEN),
            Self::Key(e) => Answer {
                reason: Some(e.code()),
                ..Answer::refuse(401, INVALID_TOKEN)
            },
            Self::Expired(_) => Answer {
                reason: Some("expired"),
                ..Answer::refuse(401, INVALID_TOKEN)
            },
            Self::RevocationUnavailable => Answer::refuse(503, "revocation_list_unavailable"),
            Self::Policy(PolicyError::NoRoute) => Answer::refuse(404, "not_found"),
            Self::Policy(PolicyError::InvalidPath) => Answer::refuse(400, "invalid_path"),
            Self::Policy(PolicyError::MethodNotAllowed { .. }) => {
                Answer::refuse(405, "method_not_allowed")
            }
            Self::Policy(PolicyError::InsufficientScope { needed }) => Answer {
                scope: Some(*needed),
                ..Answer::refuse(403, "insufficient_scope")
            },
            // Revoked, or anything this build does not know: the one answer for an invalid key.
            _ => Answer::refuse(401, INVALID_TOKEN),
        }
    }

    /// Why the edge refused, for the activity log of the key's owner ([`Reason`]): what the
    /// client's answer may not say (a revoked key's 401 names no reason). `None` for a refusal
    /// that has no owner: a key that is not genuine.
    pub fn refusal_reason(&self) -> Option<Reason> {
        Some(match self {
            Self::Key(KeyError::WrongEnvironment { .. }) => Reason::WrongEnvironment,
            Self::Key(_) => return None,
            Self::Expired(_) => Reason::Expired,
            Self::Revoked => Reason::Revoked,
            Self::RevocationUnavailable => Reason::RevocationListUnavailable,
            Self::Policy(PolicyError::NoRoute) => Reason::NotFound,
            Self::Policy(PolicyError::InvalidPath) => Reason::InvalidPath,
            Self::Policy(PolicyError::MethodNotAllowed { .. }) => Reason::MethodNotAllowed,
            Self::Policy(PolicyError::InsufficientScope { .. }) => Reason::InsufficientScope,
        })
    }
}

/// A key that passed every check that needs no revocation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The key's claims.
    pub claims: Claims,
}

/// A request that may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// The verified claims of the caller's key.
    pub claims: Claims,
    /// The route being called.
    pub route: &'static Route,
}

/// The first step: checks the key `text` at `now` (Unix seconds) for an endpoint serving
/// `endpoint` (`None`: any environment).
pub fn authenticate(
    text: &str,
    keyring: &Keyring,
    endpoint: Option<Environment>,
    now: u64,
) -> Result<Verified, Denial> {
    let claims = key::check(text, keyring, endpoint)?;
    match claims.expires_at {
        Some(expired_at) if now >= expired_at => Err(Denial::Expired(claims)),
        _ => Ok(Verified { claims }),
    }
}

impl Verified {
    /// The key id whose revocation status [`Verified::admit`] needs.
    pub const fn key_id(&self) -> KeyId {
        self.claims.key_id
    }

    /// The second step: revocation, then the route policy for `method path`.
    pub fn admit(
        self,
        revocation: Revocation,
        method: &str,
        path: &str,
    ) -> Result<Admitted, Denial> {
        match revocation {
            Revocation::Clear => {}
            Revocation::Revoked => return Err(Denial::Revoked),
            Revocation::Unavailable => return Err(Denial::RevocationUnavailable),
        }
        let route = scope::authorize(self.claims.scopes, method, path)?;
        Ok(Admitted {
            claims: self.claims,
            route,
        })
    }
}

/// Both steps, with `revocation` answering for the key id: for the benchmarks and tests, whose
/// revocation store answers synchronously.
#[cfg(any(test, feature = "testkit"))]
pub fn decide(
    text: &str,
    keyring: &Keyring,
    endpoint: Option<Environment>,
    now: u64,
    revocation: impl FnOnce(KeyId) -> Revocation,
    method: &str,
    path: &str,
) -> Result<Admitted, Denial> {
    let verified = authenticate(text, keyring, endpoint, now)?;
    verified.admit(revocation(verified.key_id()), method, path)
}

/// The scope a decision is about: the route's for an admitted request, the needed one for
/// `insufficient_scope`, none otherwise.
pub fn scope_of(result: &Result<Admitted, Denial>) -> Option<Scope> {
    match result {
        Ok(admitted) => Some(admitted.route.scope),
        Err(denial) => denial.answer().scope,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::{Permission, ScopeSet};
    use crate::testkit;

    const NOW: u64 = 1_800_000_000;

    fn claims(environment: Environment, expires_at: Option<u64>) -> Claims {
        Claims {
            kid: 1,
            account_id: 42,
            key_id: KeyId([3; 16]),
            environment,
            scopes: Permission::ReadOnly.scopes(),
            issued_at: NOW - 100,
            expires_at,
        }
    }

    fn key(c: &Claims) -> String {
        key::issue(c, &testkit::keyring()).unwrap().into_inner()
    }

    fn run(text: &str, revocation: Revocation, method: &str, path: &str) -> Answer {
        decide(
            text,
            &testkit::keyring(),
            Some(Environment::Production),
            NOW,
            |_| revocation,
            method,
            path,
        )
        .map(|_| Answer::refuse(200, "ok"))
        .unwrap_or_else(|d| d.answer())
    }

    #[test]
    fn every_refusal_has_its_answer() {
        let live = key(&claims(Environment::Production, None));
        let dev = key(&claims(Environment::Development, None));
        let expired = key(&claims(Environment::Production, Some(NOW)));
        let mut typo = live.clone().into_bytes();
        typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        let other_ring = crate::Keyring::from_config(&format!("active=1;1:{}", "99".repeat(32)));
        let forged = key::issue(&claims(Environment::Production, None), &other_ring.unwrap())
            .unwrap()
            .into_inner();
        let invalid = |reason| Answer {
            reason,
            ..Answer::refuse(401, INVALID_TOKEN)
        };
        let get = |text: &str, r| run(text, r, "GET", "/v1/jobs");
        assert_eq!(get(&live, Revocation::Clear).status, 200);
        assert_eq!(get(&live, Revocation::Revoked), invalid(None));
        assert_eq!(get(&forged, Revocation::Clear), invalid(None));
        assert_eq!(
            get(&typo, Revocation::Clear),
            invalid(Some("invalid_checksum"))
        );
        assert_eq!(
            get(&dev, Revocation::Clear),
            invalid(Some("wrong_environment"))
        );
        assert_eq!(get(&expired, Revocation::Clear), invalid(Some("expired")));
        assert_eq!(
            get(&live, Revocation::Unavailable),
            Answer::refuse(503, "revocation_list_unavailable")
        );
        assert_eq!(
            run(&live, Revocation::Clear, "POST", "/v1/jobs"),
            Answer {
                scope: Some(Scope::JobsWrite),
                ..Answer::refuse(403, "insufficient_scope")
            }
        );
        assert_eq!(run(&live, Revocation::Clear, "GET", "/v2/x").status, 404);
        assert_eq!(run(&live, Revocation::Clear, "PUT", "/v1/jobs").status, 405);
        assert_eq!(
            run(&live, Revocation::Clear, "GET", "/v1/jobs/%2e%2e").status,
            400
        );
    }

    #[test]
    fn every_refusal_of_an_owned_key_has_its_reason_of_its_status() {
        let cases = [
            (
                Denial::Key(KeyError::WrongEnvironment {
                    key: Environment::Development,
                    endpoint: Environment::Production,
                }),
                Some(Reason::WrongEnvironment),
            ),
            (
                Denial::Expired(claims(Environment::Production, Some(NOW))),
                Some(Reason::Expired),
            ),
            (Denial::Revoked, Some(Reason::Revoked)),
            (
                Denial::RevocationUnavailable,
                Some(Reason::RevocationListUnavailable),
            ),
            (Denial::Policy(PolicyError::NoRoute), Some(Reason::NotFound)),
            (
                Denial::Policy(PolicyError::InvalidPath),
                Some(Reason::InvalidPath),
            ),
            (
                Denial::Policy(PolicyError::MethodNotAllowed {
                    allowed: vec![scope::Method::Get],
                }),
                Some(Reason::MethodNotAllowed),
            ),
            (
                Denial::Policy(PolicyError::InsufficientScope {
                    needed: Scope::JobsWrite,
                }),
                Some(Reason::InsufficientScope),
            ),
            // A key that is not genuine has no owner to tell.
            (Denial::Key(KeyError::BadTag), None),
        ];
        for (denial, want) in cases {
            assert_eq!(denial.refusal_reason(), want, "{denial:?}");
            if let Some(reason) = want {
                // The reason's outcome is the one the answer's status is classed as.
                let status = denial.answer().status;
                assert_eq!(
                    crate::usage::Outcome::of_edge_status(status),
                    reason.outcome(),
                    "{denial:?}"
                );
            }
        }
    }

    #[test]
    fn an_expired_key_keeps_its_owner_and_no_environment_is_any() {
        let c = claims(Environment::Development, Some(NOW));
        let text = key(&c);
        let ring = testkit::keyring();
        assert_eq!(
            authenticate(&text, &ring, None, NOW),
            Err(Denial::Expired(c))
        );
        assert_eq!(
            authenticate(&text, &ring, None, NOW - 1).map(|v| v.claims),
            Ok(c)
        );
        assert_eq!(
            authenticate(&text, &ring, Some(Environment::Production), NOW),
            Err(Denial::Key(KeyError::WrongEnvironment {
                key: Environment::Development,
                endpoint: Environment::Production
            }))
        );
        let admitted = Verified { claims: c }.admit(Revocation::Clear, "GET", "/v1/jobs");
        assert_eq!(scope_of(&admitted), Some(Scope::JobsRead));
        let _ = ScopeSet::EMPTY;
    }
}
