//! The caller identity the edge forwards to the origin, its signature, and the origin's replay
//! cache.
//!
//! After a key passes, the edge sends the origin who is calling in plain headers
//! ([`ACCOUNT_HEADER`], [`KEY_ID_HEADER`], [`ENVIRONMENT_HEADER`], [`SCOPES_HEADER`]), a random
//! [`REQUEST_ID_HEADER`], and [`SIGNATURE_HEADER`]: an [`envelope`](crate::envelope) signature
//! with the identity subkey, scheme [`SIGNATURE_SCHEME`], over those values and everything the
//! origin acts on ([`Request`]: method, path, query, body length). The identity keyring is a
//! secret shared only by the edge and the origin, so a request that bypassed the edge (or a
//! client that sent these headers itself) cannot pose as one the edge admitted.
//!
//! A signature is single-use: [`Identity::verify`] refuses one older than the origin's window
//! (at most [`MAX_WINDOW`] seconds) and, through the origin's [`ReplayCache`], a request id it
//! accepted before within that window. A captured request can therefore be neither replayed nor
//! changed (another query, another method, a body of another length) to do something else.
//!
//! Every header name starts with [`HEADER_PREFIX`]: the edge drops every client header with that
//! prefix (and its `x-` and underscore spellings) before adding its own.

use core::fmt;
use std::collections::{BTreeMap, BTreeSet};

use crate::envelope::{self, EnvelopeError};
use crate::key::{Environment, KeyId};
use crate::mac::{Keyring, Purpose};
use crate::scope::{Scope, ScopeSet};

/// Prefix of every identity header (lowercase, as HTTP/2 writes header names).
pub const HEADER_PREFIX: &str = "lynxo-";
/// The account id, decimal.
pub const ACCOUNT_HEADER: &str = "lynxo-account-id";
/// The key id, 32 lowercase hex digits.
pub const KEY_ID_HEADER: &str = "lynxo-key-id";
/// The environment name: `development`, `staging` or `production`.
pub const ENVIRONMENT_HEADER: &str = "lynxo-environment";
/// The scopes: `*` for Full Access, else scope names separated by single spaces (OAuth style).
pub const SCOPES_HEADER: &str = "lynxo-scopes";
/// The request id: 32 lowercase hex digits, random per request, chosen by the edge.
pub const REQUEST_ID_HEADER: &str = "lynxo-request-id";
/// The signature: `t=<unix seconds>,kid=<kid>,v2=<64 hex digits>`.
pub const SIGNATURE_HEADER: &str = "lynxo-identity-signature";
/// The signature's scheme: the field name of its tag, and the first signed part. `v1` signed
/// the identity, method and path only; a `v1` header is refused as malformed.
pub const SIGNATURE_SCHEME: &str = "v2";
/// The longest replay window an origin may use, in seconds: a signature older than its window
/// is refused, and the replay cache remembers every request id for that long.
pub const MAX_WINDOW: u64 = 30;

/// Who is calling, as the edge established it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The account that owns the key.
    pub account_id: u64,
    /// The key's id.
    pub key_id: KeyId,
    /// The key's environment.
    pub environment: Environment,
    /// The key's scopes.
    pub scopes: ScopeSet,
}

/// What the origin acts on, exactly as the edge forwards it: all of it is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method, as sent (`GET`, `POST`, ...).
    pub method: &'a str,
    /// The path, as sent (percent-encoding untouched), without the query.
    pub path: &'a str,
    /// The query string without `?`, as sent; empty when there is none.
    pub query: &'a str,
    /// The body's length in bytes: its `Content-Length`, 0 without a body.
    pub body_length: u64,
}

/// A request id: 128 random bits chosen by the edge for one request.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub [u8; 16]);

impl RequestId {
    /// Parses 32 lowercase hex digits.
    pub fn parse_hex(text: &str) -> Option<Self> {
        KeyId::parse_hex(text).map(|id| Self(id.0))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&KeyId(self.0), f)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({self})")
    }
}

/// An identity the origin accepted, with the request id it consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Who is calling.
    pub identity: Identity,
    /// The request's id (for the origin's logs; it is spent).
    pub request_id: RequestId,
    /// When the edge signed it (Unix seconds).
    pub signed_at: u64,
}

/// Why the origin refused an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A required header is absent (the request did not come through the edge).
    #[error("identity header `{0}` is missing")]
    Missing(&'static str),
    /// A header is present but not in its documented form.
    #[error("identity header `{0}` is malformed")]
    Malformed(&'static str),
    /// The signature is malformed, stale, by an unknown kid, or does not match the request.
    #[error("identity signature refused: {0}")]
    Signature(#[from] EnvelopeError),
    /// The request id was accepted before, within the window: a replay.
    #[error("request id already used")]
    Replayed,
    /// The replay cache is full and had to forget request ids signed at or before this
    /// request's time, so it cannot tell whether this one is a replay.
    #[error("replay cache full")]
    ReplayCacheFull,
}

impl IdentityError {
    /// A stable code for logs, problem documents and the vectors file.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Missing(_) => "missing_header",
            Self::Malformed(_) => "malformed_header",
            Self::Signature(EnvelopeError::Malformed) => "malformed_signature",
            Self::Signature(EnvelopeError::UnknownKid(_)) => "unknown_kid",
            Self::Signature(EnvelopeError::OutsideTolerance { .. }) => "outside_window",
            Self::Signature(_) => "bad_signature",
            Self::Replayed => "replayed",
            Self::ReplayCacheFull => "replay_cache_full",
        }
    }
}

/// Why a [`ReplayCache`] cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayCacheError {
    /// The window is 0 or longer than [`MAX_WINDOW`].
    #[error("the replay window must be 1 to {MAX_WINDOW} seconds")]
    Window,
    /// The capacity is 0.
    #[error("the replay cache needs room for at least one request id")]
    Capacity,
}

/// The request ids an origin accepted within its window: what makes a signature single-use.
///
/// Bounded: it holds at most `capacity` ids, and forgets each one once its signature is older
/// than the window (after which [`Identity::verify`] refuses that signature anyway). When it is
/// full of ids still inside the window, a signature no newer than the oldest id it holds is
/// refused ([`IdentityError::ReplayCacheFull`]) and a newer one takes the oldest id's place. An id
/// forgotten that way is no newer than any id the cache still holds, so it is refused for as long
/// as the cache is full, and its signature has left the window before there is room again: an
/// overloaded origin turns away some late requests, and never lets a replay through. Size it for
/// the origin's peak rate times the window (about 80 bytes per id).
///
/// Pure: the time comes in as `now`. Ordered maps, not hash maps: no hashing seed to draw, and
/// no input an attacker can make collide (only ids the edge signed get in).
#[derive(Debug, Clone)]
pub struct ReplayCache {
    capacity: usize,
    window: u64,
    /// Each id and when it was signed.
    seen: BTreeMap<RequestId, u64>,
    /// The same entries by signing time, oldest first: what expires, or is evicted, next.
    by_time: BTreeSet<(u64, RequestId)>,
}

impl ReplayCache {
    /// A cache of at most `capacity` ids for signatures at most `window` seconds old
    /// (1 to [`MAX_WINDOW`]).
    pub fn new(capacity: usize, window: u64) -> Result<Self, ReplayCacheError> {
        if window == 0 || window > MAX_WINDOW {
            return Err(ReplayCacheError::Window);
        }
        if capacity == 0 {
            return Err(ReplayCacheError::Capacity);
        }
        Ok(Self {
            capacity,
            window,
            seen: BTreeMap::new(),
            by_time: BTreeSet::new(),
        })
    }

    /// The window, in seconds: also the clock difference [`Identity::verify`] allows.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// How many ids it holds now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether it holds no id.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Records the first use of `id`, signed at `signed_at`, at `now`; refuses a second use, a
    /// signature outside the window, and one it can no longer tell apart from a replay.
    pub fn first_use(
        &mut self,
        id: RequestId,
        signed_at: u64,
        now: u64,
    ) -> Result<(), IdentityError> {
        if now.abs_diff(signed_at) > self.window {
            return Err(EnvelopeError::OutsideTolerance {
                timestamp: signed_at,
            }
            .into());
        }
        self.expire(now);
        if self.seen.contains_key(&id) {
            return Err(IdentityError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            let Some(&(oldest, oldest_id)) = self.by_time.first() else {
                return Err(IdentityError::ReplayCacheFull);
            };
            // An id no newer than the oldest one held may be one the cache forgot.
            if signed_at <= oldest {
                return Err(IdentityError::ReplayCacheFull);
            }
            self.by_time.remove(&(oldest, oldest_id));
            self.seen.remove(&oldest_id);
        }
        self.seen.insert(id, signed_at);
        self.by_time.insert((signed_at, id));
        Ok(())
    }

    /// Forgets the ids whose signatures are older than the window at `now`.
    fn expire(&mut self, now: u64) {
        while let Some(&(at, id)) = self.by_time.first() {
            if at.saturating_add(self.window) >= now {
                break;
            }
            self.by_time.remove(&(at, id));
            self.seen.remove(&id);
        }
    }
}

/// The [`SCOPES_HEADER`] value for `scopes`.
pub fn scopes_value(scopes: ScopeSet) -> String {
    if scopes.is_full_access() {
        return "*".to_owned();
    }
    let mut out = String::new();
    for scope in scopes.iter() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(scope.name());
    }
    out
}

/// Parses a [`SCOPES_HEADER`] value; `None` for an unknown name or a stray separator.
pub fn parse_scopes(value: &str) -> Option<ScopeSet> {
    if value == "*" {
        return Some(ScopeSet::FULL_ACCESS);
    }
    if value.is_empty() {
        return Some(ScopeSet::EMPTY);
    }
    value.split(' ').try_fold(ScopeSet::EMPTY, |set, name| {
        Scope::from_name(name).map(|s| set.with(s))
    })
}

impl Identity {
    /// The identity headers without the request id and the signature, as `(name, value)` pairs.
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            (ACCOUNT_HEADER, self.account_id.to_string()),
            (KEY_ID_HEADER, self.key_id.to_string()),
            (ENVIRONMENT_HEADER, self.environment.name().to_owned()),
            (SCOPES_HEADER, scopes_value(self.scopes)),
        ]
    }

    /// The signed parts, in this order: the scheme, each header value in [`Self::headers`]
    /// order (`values`), the request id, then the request's method, path, query and body length
    /// (decimal).
    fn with_parts<R>(
        values: &[(&'static str, String); 4],
        request_id: &str,
        request: &Request<'_>,
        f: impl FnOnce(&[&[u8]]) -> R,
    ) -> R {
        let [account, key_id, environment, scopes] = values.each_ref().map(|(_, v)| v.as_bytes());
        let body_length = request.body_length.to_string();
        f(&[
            SIGNATURE_SCHEME.as_bytes(),
            account,
            key_id,
            environment,
            scopes,
            request_id.as_bytes(),
            request.method.as_bytes(),
            request.path.as_bytes(),
            request.query.as_bytes(),
            body_length.as_bytes(),
        ])
    }

    /// The [`SIGNATURE_HEADER`] value for this identity making `request` with `request_id`
    /// (sent as [`REQUEST_ID_HEADER`]), signed at `now` with the identity keyring's active kid.
    pub fn sign(
        &self,
        keyring: &Keyring,
        request: &Request<'_>,
        request_id: RequestId,
        now: u64,
    ) -> String {
        let [.., (_, signature)] = self.signed_headers(keyring, request, request_id, now);
        signature
    }

    /// Every identity header of a request to the origin, each value made once: the
    /// [`Self::headers`], then [`REQUEST_ID_HEADER`] and [`SIGNATURE_HEADER`] (what
    /// [`Self::sign`] gives).
    pub fn signed_headers(
        &self,
        keyring: &Keyring,
        request: &Request<'_>,
        request_id: RequestId,
        now: u64,
    ) -> [(&'static str, String); 6] {
        let values = self.headers();
        let request_id = request_id.to_string();
        let signature = Self::with_parts(&values, &request_id, request, |parts| {
            envelope::sign_scheme(keyring, Purpose::Identity, SIGNATURE_SCHEME, now, parts)
        });
        let [account, key_id, environment, scopes] = values;
        [
            account,
            key_id,
            environment,
            scopes,
            (REQUEST_ID_HEADER, request_id),
            (SIGNATURE_HEADER, signature),
        ]
    }

    /// What the origin calls on every request, before it reads the body: reads the identity
    /// headers through `header` (a case-insensitive lookup the caller provides), checks their
    /// signature against `request` as the origin received it, at `now`, within the replay
    /// cache's window, then spends the request id in `replay`.
    ///
    /// `request.body_length` is the `Content-Length` the origin received (0 without one); the
    /// origin must then read exactly that many bytes of body and refuse the request otherwise.
    pub fn verify<'a>(
        keyring: &Keyring,
        header: impl Fn(&str) -> Option<&'a str>,
        request: &Request<'_>,
        now: u64,
        replay: &mut ReplayCache,
    ) -> Result<Verified, IdentityError> {
        let get = |name: &'static str| header(name).ok_or(IdentityError::Missing(name));
        let signature = get(SIGNATURE_HEADER)?;
        let account_text = get(ACCOUNT_HEADER)?;
        let key_id_text = get(KEY_ID_HEADER)?;
        let environment_text = get(ENVIRONMENT_HEADER)?;
        let scopes_text = get(SCOPES_HEADER)?;
        let request_id_text = get(REQUEST_ID_HEADER)?;
        // Parse strictly: the signature covers the canonical forms, so any other spelling is
        // refused here rather than accepted with a signature over different bytes.
        let identity = Self {
            account_id: account_text
                .parse()
                .ok()
                .filter(|a: &u64| a.to_string() == account_text)
                .ok_or(IdentityError::Malformed(ACCOUNT_HEADER))?,
            key_id: KeyId::parse_hex(key_id_text).ok_or(IdentityError::Malformed(KEY_ID_HEADER))?,
            environment: Environment::from_name(environment_text)
                .ok_or(IdentityError::Malformed(ENVIRONMENT_HEADER))?,
            scopes: parse_scopes(scopes_text)
                .filter(|s| scopes_value(*s) == scopes_text)
                .ok_or(IdentityError::Malformed(SCOPES_HEADER))?,
        };
        let request_id = RequestId::parse_hex(request_id_text)
            .ok_or(IdentityError::Malformed(REQUEST_ID_HEADER))?;
        let canonical_id = request_id.to_string();
        let signed_at = Self::with_parts(&identity.headers(), &canonical_id, request, |parts| {
            envelope::verify_scheme(
                keyring,
                Purpose::Identity,
                SIGNATURE_SCHEME,
                signature,
                parts,
                now,
                replay.window(),
            )
        })?;
        // Only a genuine signature reaches the cache, so only the edge can fill it.
        replay.first_use(request_id, signed_at, now)?;
        Ok(Verified {
            identity,
            request_id,
            signed_at,
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "account {} key {} ({})",
            self.account_id, self.key_id, self.environment
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::Secret;
    use crate::scope::Permission;
    use std::collections::HashMap;

    const ID: RequestId = RequestId([7; 16]);

    fn ring(byte: u8) -> Keyring {
        Keyring::new(5, &[(5, Secret::new(vec![byte; 32]).unwrap())]).unwrap()
    }

    fn identity() -> Identity {
        Identity {
            account_id: 42,
            key_id: KeyId([9; 16]),
            environment: Environment::Staging,
            scopes: Permission::ReadOnly.scopes(),
        }
    }

    fn request() -> Request<'static> {
        Request {
            method: "GET",
            path: "/v1/jobs",
            query: "limit=5",
            body_length: 0,
        }
    }

    fn headers(
        id: &Identity,
        ring: &Keyring,
        request_id: RequestId,
        now: u64,
    ) -> HashMap<&'static str, String> {
        let mut h: HashMap<_, _> = id.headers().into_iter().collect();
        h.insert(REQUEST_ID_HEADER, request_id.to_string());
        h.insert(SIGNATURE_HEADER, id.sign(ring, &request(), request_id, now));
        h
    }

    fn cache() -> ReplayCache {
        ReplayCache::new(1_000, 30).unwrap()
    }

    fn check_with(
        h: &HashMap<&'static str, String>,
        request: &Request<'_>,
        now: u64,
        replay: &mut ReplayCache,
    ) -> Result<Identity, IdentityError> {
        Identity::verify(
            &ring(1),
            |n| h.get(n).map(String::as_str),
            request,
            now,
            replay,
        )
        .map(|v| v.identity)
    }

    fn check(
        h: &HashMap<&'static str, String>,
        request: &Request<'_>,
        now: u64,
    ) -> Result<Identity, IdentityError> {
        check_with(h, request, now, &mut cache())
    }

    fn bad_signature() -> Result<Identity, IdentityError> {
        Err(IdentityError::Signature(EnvelopeError::BadSignature))
    }

    #[test]
    fn round_trip() {
        let h = headers(&identity(), &ring(1), ID, 1_000);
        let verified = Identity::verify(
            &ring(1),
            |n| h.get(n).map(String::as_str),
            &request(),
            1_030,
            &mut cache(),
        )
        .unwrap();
        assert_eq!(
            verified,
            Verified {
                identity: identity(),
                request_id: ID,
                signed_at: 1_000
            }
        );
        assert!(h[SIGNATURE_HEADER].starts_with("t=1000,kid=5,v2="));
    }

    #[test]
    fn every_part_of_the_request_is_bound() {
        let good = headers(&identity(), &ring(1), ID, 1_000);
        let base = request();
        let changed = [
            Request {
                method: "DELETE",
                ..base
            },
            Request {
                path: "/v1/jobs/1",
                ..base
            },
            Request {
                query: "limit=500",
                ..base
            },
            Request { query: "", ..base },
            Request {
                body_length: 1,
                ..base
            },
        ];
        for request in changed {
            assert_eq!(
                check(&good, &request, 1_000),
                bad_signature(),
                "{request:?}"
            );
        }
        // Another request id under the same signature.
        let mut h = good.clone();
        h.insert(REQUEST_ID_HEADER, RequestId([8; 16]).to_string());
        assert_eq!(check(&h, &base, 1_000), bad_signature());
        // A changed value under a good signature: a client escalating its own scopes.
        let mut h = good.clone();
        h.insert(SCOPES_HEADER, "*".into());
        assert_eq!(check(&h, &base, 1_000), bad_signature());
        let other = headers(&identity(), &ring(2), ID, 1_000);
        assert_eq!(check(&other, &base, 1_000), bad_signature());
    }

    #[test]
    fn each_refusal() {
        let good = headers(&identity(), &ring(1), ID, 1_000);
        let base = request();
        for now in [969, 1_031, 1_061] {
            let err = check(&good, &base, now).unwrap_err();
            assert_eq!(err.code(), "outside_window", "{now}");
        }
        let mut h = good.clone();
        h.insert(ACCOUNT_HEADER, "042".into());
        assert_eq!(
            check(&h, &base, 1_000),
            Err(IdentityError::Malformed(ACCOUNT_HEADER))
        );
        let mut h = good.clone();
        h.insert(SCOPES_HEADER, "jobs:read  files:read".into());
        assert_eq!(
            check(&h, &base, 1_000),
            Err(IdentityError::Malformed(SCOPES_HEADER))
        );
        let mut h = good.clone();
        h.insert(REQUEST_ID_HEADER, "AB".repeat(16));
        assert_eq!(
            check(&h, &base, 1_000),
            Err(IdentityError::Malformed(REQUEST_ID_HEADER))
        );
        // The previous scheme's header is not read as this one.
        let mut h = good.clone();
        let v1 = h[SIGNATURE_HEADER].replace("v2=", "v1=");
        h.insert(SIGNATURE_HEADER, v1);
        assert_eq!(
            check(&h, &base, 1_000).unwrap_err().code(),
            "malformed_signature"
        );
        for name in [
            SIGNATURE_HEADER,
            ACCOUNT_HEADER,
            KEY_ID_HEADER,
            ENVIRONMENT_HEADER,
            SCOPES_HEADER,
            REQUEST_ID_HEADER,
        ] {
            let mut h = good.clone();
            h.remove(name);
            assert_eq!(check(&h, &base, 1_000), Err(IdentityError::Missing(name)));
        }
    }

    #[test]
    fn a_request_id_is_spent_once() {
        let mut replay = cache();
        let h = headers(&identity(), &ring(1), ID, 1_000);
        assert_eq!(
            check_with(&h, &request(), 1_000, &mut replay),
            Ok(identity())
        );
        for now in [1_000, 1_010, 1_030] {
            assert_eq!(
                check_with(&h, &request(), now, &mut replay),
                Err(IdentityError::Replayed)
            );
        }
        // Past the window the signature itself is refused, and the cache has let the id go.
        let err = check_with(&h, &request(), 1_031, &mut replay).unwrap_err();
        assert_eq!(err.code(), "outside_window");
        let other = headers(&identity(), &ring(1), RequestId([1; 16]), 1_031);
        assert!(check_with(&other, &request(), 1_031, &mut replay).is_ok());
        assert_eq!(replay.len(), 1);
        // A refused signature never reaches the cache.
        let forged = headers(&identity(), &ring(2), RequestId([2; 16]), 1_031);
        assert!(check_with(&forged, &request(), 1_031, &mut replay).is_err());
        assert_eq!(replay.len(), 1);
    }

    #[test]
    fn a_full_cache_refuses_what_it_cannot_vouch_for() {
        let mut replay = ReplayCache::new(2, 30).unwrap();
        let id = |n: u8| RequestId([n; 16]);
        assert_eq!(replay.first_use(id(1), 100, 100), Ok(()));
        assert_eq!(replay.first_use(id(2), 101, 101), Ok(()));
        // Full: no older signature can take a place.
        assert_eq!(
            replay.first_use(id(3), 100, 101),
            Err(IdentityError::ReplayCacheFull)
        );
        // A newer one evicts the oldest; while the cache is full, everything signed up to the
        // oldest time it holds is refused, the evicted id's replay included.
        assert_eq!(replay.first_use(id(4), 102, 102), Ok(()));
        assert_eq!(replay.len(), 2);
        assert_eq!(
            replay.first_use(id(1), 100, 102),
            Err(IdentityError::ReplayCacheFull)
        );
        assert_eq!(
            replay.first_use(id(5), 100, 102),
            Err(IdentityError::ReplayCacheFull)
        );
        assert_eq!(
            replay.first_use(id(2), 101, 102),
            Err(IdentityError::Replayed)
        );
        // Expiry makes room, once the evicted ids' signatures are out of the window too.
        assert_eq!(replay.first_use(id(6), 140, 140), Ok(()));
        assert_eq!(replay.len(), 1);
    }

    #[test]
    fn window_and_capacity_are_bounded() {
        assert_eq!(
            ReplayCache::new(10, 31).unwrap_err(),
            ReplayCacheError::Window
        );
        assert_eq!(
            ReplayCache::new(10, 0).unwrap_err(),
            ReplayCacheError::Window
        );
        assert_eq!(
            ReplayCache::new(0, 30).unwrap_err(),
            ReplayCacheError::Capacity
        );
        assert_eq!(ReplayCache::new(1, MAX_WINDOW).unwrap().window(), 30);
    }

    #[test]
    fn scopes_round_trip() {
        for set in [
            ScopeSet::EMPTY,
            ScopeSet::FULL_ACCESS,
            Permission::ReadOnly.scopes(),
            Permission::ReadWrite.scopes(),
        ] {
            assert_eq!(parse_scopes(&scopes_value(set)), Some(set));
        }
        assert_eq!(scopes_value(ScopeSet::FULL_ACCESS), "*");
        assert_eq!(parse_scopes("jobs:read nope"), None);
    }

    #[test]
    fn request_ids_are_hex() {
        assert_eq!(RequestId::parse_hex(&ID.to_string()), Some(ID), "{ID:?}");
        assert_eq!(ID.to_string(), "07".repeat(16));
        assert_eq!(RequestId::parse_hex("07"), None);
    }
}

/// The replay cache's promise, for any order of arrivals: an id is never accepted twice while
/// its signature is inside the window, and the cache never holds more than its capacity.
#[cfg(all(test, not(target_arch = "wasm32")))]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn never_twice_never_unbounded(
            capacity in 1_usize..8,
            window in 1_u64..=MAX_WINDOW,
            // When the edge signed each of 12 ids (it signs an id once), from t = 1000 on.
            signed in prop::collection::vec(0_u64..60, 12),
            // Which id arrives, and how far the clock moved before it did.
            arrivals in prop::collection::vec((0_usize..12, 0_u64..3), 1..300),
        ) {
            let mut cache = ReplayCache::new(capacity, window).unwrap();
            let mut accepted = Vec::new();
            let mut now = 1_000;
            for (which, step) in arrivals {
                now += step;
                let id = RequestId([which as u8; 16]);
                if cache.first_use(id, 1_000 + signed[which], now).is_ok() {
                    prop_assert!(!accepted.contains(&id), "{id:?} accepted twice");
                    accepted.push(id);
                }
                prop_assert!(cache.len() <= capacity);
            }
        }
    }
}
