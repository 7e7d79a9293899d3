//! Per-key rate limits: the policy the control plane sets, the signed push that carries it to
//! the edge, and the fixed-window arithmetic both sides share.
//!
//! A key's limit is `limit` requests per `window` seconds, counted in fixed windows aligned to
//! the Unix epoch (a 60 s window runs from :00 to :59 of each minute). The limit belongs to the
//! key's record in the control plane, not to the key string, so changing it needs no new key:
//! the control plane pushes a [`LimitPush`] to the edge's sync endpoint at [`SYNC_PATH`], signed
//! with [`sign_push`]. Each entry carries a version; the edge keeps the highest it has seen, so a
//! retried or reordered push never rolls a limit back. `docs/rate-limits.md` has the design.

use serde::{Deserialize, Serialize};

use crate::envelope::{self, EnvelopeError};
use crate::key::KeyId;
use crate::mac::{Keyring, Purpose};

/// The edge's sync endpoint for limit pushes (`PUT`).
pub const SYNC_PATH: &str = "/_lynxo/sync/limits";

/// Longest window, in seconds (one day).
pub const MAX_WINDOW: u32 = 86_400;

/// Most entries in one push.
pub const MAX_PUSH_ENTRIES: usize = 1000;

/// The span, in seconds, of a key's per-minute cap ([`LimitUpdate::per_minute`]): no 60 seconds,
/// aligned or not, admit more than the cap, whatever the key's window.
pub const CAP_SPAN: u32 = 60;

/// Domain separation: a limits push can never pass as another signed message.
const PUSH_KIND: &[u8] = b"limits";

/// `limit` requests per `window` seconds. A deserialized policy is checked ([`Policy::check`]):
/// there is no unchecked one to forget about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Unchecked")]
pub struct Policy {
    /// Requests allowed in one window, at least 1.
    pub limit: u32,
    /// The window's length in seconds, 1 to [`MAX_WINDOW`].
    pub window: u32,
}

/// A policy as it arrives, before [`Policy::check`].
#[derive(Deserialize)]
struct Unchecked {
    limit: u32,
    window: u32,
}

impl TryFrom<Unchecked> for Policy {
    type Error = PolicyError;
    fn try_from(raw: Unchecked) -> Result<Self, PolicyError> {
        Self::new(raw.limit, raw.window)
    }
}

/// Every [`PolicyError`] message starts with this: a reader's error message that holds it
/// names a refused policy.
pub const POLICY_REFUSED: &str = "rate limit policy refused: ";

/// Why a policy was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The limit is zero.
    #[error("{POLICY_REFUSED}a rate limit allows at least 1 request per window")]
    ZeroLimit,
    /// The window is zero or longer than [`MAX_WINDOW`].
    #[error("{POLICY_REFUSED}a rate-limit window is 1 to {MAX_WINDOW} seconds")]
    Window,
    /// The text is not `<limit>/<window seconds>` with both numbers in digits.
    #[error("{POLICY_REFUSED}it is written `<limit>/<window seconds>`, e.g. `600/60`")]
    Malformed,
}

impl Policy {
    /// A checked policy.
    pub fn new(limit: u32, window: u32) -> Result<Self, PolicyError> {
        let policy = Self { limit, window };
        policy.check()?;
        Ok(policy)
    }

    /// Checks the bounds: what [`Policy::new`] and deserializing enforce.
    pub fn check(&self) -> Result<(), PolicyError> {
        if self.limit == 0 {
            return Err(PolicyError::ZeroLimit);
        }
        check_window(self.window)
    }

    /// Parses `"<limit>/<window seconds>"`, e.g. `"600/60"` (spaces around either number are
    /// ignored), and checks it.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let (limit, window) = text.split_once('/').ok_or(PolicyError::Malformed)?;
        match (decimal(limit), decimal(window)) {
            (Some(limit), Some(window)) => Self::new(limit, window),
            _ => Err(PolicyError::Malformed),
        }
    }

    /// The window's length in milliseconds.
    pub const fn window_ms(&self) -> u64 {
        self.window as u64 * 1000
    }

    /// Start of the window that contains `now_ms` (Unix milliseconds).
    pub const fn window_start_ms(&self, now_ms: u64) -> u64 {
        now_ms - now_ms % self.window_ms()
    }

    /// End of the window that contains `now_ms`: when its count starts again from zero.
    pub const fn reset_ms(&self, now_ms: u64) -> u64 {
        self.window_start_ms(now_ms) + self.window_ms()
    }

    /// Whole seconds until the window resets, rounded up (never 0 before the reset), as the
    /// `t` parameter of the `RateLimit` header and `Retry-After` want it.
    pub const fn seconds_to_reset(&self, now_ms: u64) -> u64 {
        (self.reset_ms(now_ms) - now_ms).div_ceil(1000)
    }
}

/// A decimal `u32` with spaces around it, read as `u32::from_str` reads one (a `+` sign
/// allowed), in a loop small enough for the worker: it reads its configuration with it.
fn decimal(text: &str) -> Option<u32> {
    let text = text.trim();
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.is_empty() {
        return None;
    }
    digits.bytes().try_fold(0_u32, |n, b| {
        let digit = u32::from(b)
            .checked_sub(u32::from(b'0'))
            .filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(digit)
    })
}

/// Checks a window's length alone: 1 to [`MAX_WINDOW`] seconds (the control plane checks a
/// requested window before it knows the limit).
pub fn check_window(window: u32) -> Result<(), PolicyError> {
    if window == 0 || window > MAX_WINDOW {
        Err(PolicyError::Window)
    } else {
        Ok(())
    }
}

/// One key's policy in a push. On the wire the policy's fields sit beside the others
/// ([`WireUpdate`]); reading one checks its policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireUpdate", into = "WireUpdate")]
pub struct LimitUpdate {
    /// The key id (32 lowercase hex digits on the wire).
    pub key_id: KeyId,
    /// The policy.
    pub policy: Policy,
    /// Monotonic per key: the edge ignores an update older than one it has applied.
    pub version: u64,
    /// The plan's per-minute cap: the most requests the key is admitted in any [`CAP_SPAN`]
    /// seconds, aligned to its windows or not, whatever its window. Absent: only the window
    /// limits the key.
    pub per_minute: Option<u32>,
    /// The key whose limiter counts this key's requests: the first key of its rotation chain,
    /// so a key and its successor share one budget. Absent: its own. Fixed for the life of a
    /// key.
    pub budget: Option<KeyId>,
}

/// The wire form of a [`LimitUpdate`]: flat, so `serde(flatten)` and its buffering stay out of
/// the worker.
#[derive(Serialize, Deserialize)]
struct WireUpdate {
    key_id: KeyId,
    limit: u32,
    window: u32,
    version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    budget: Option<KeyId>,
}

impl TryFrom<WireUpdate> for LimitUpdate {
    type Error = PolicyError;
    fn try_from(w: WireUpdate) -> Result<Self, PolicyError> {
        Ok(Self {
            key_id: w.key_id,
            policy: Policy::new(w.limit, w.window)?,
            version: w.version,
            per_minute: w.per_minute,
            budget: w.budget,
        })
    }
}

impl From<LimitUpdate> for WireUpdate {
    fn from(u: LimitUpdate) -> Self {
        Self {
            key_id: u.key_id,
            limit: u.policy.limit,
            window: u.policy.window,
            version: u.version,
            per_minute: u.per_minute,
            budget: u.budget,
        }
    }
}

/// The body of a `PUT` to [`SYNC_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LimitPush {
    /// At most [`MAX_PUSH_ENTRIES`] entries.
    pub limits: Vec<LimitUpdate>,
}

/// Signs a push body for the `Lynxo-Signature` header.
pub fn sign_push(keyring: &Keyring, body: &[u8], now: u64) -> String {
    envelope::sign(keyring, Purpose::Sync, now, &[PUSH_KIND, body])
}

/// Checks a push's `Lynxo-Signature` header: made by [`sign_push`] for this `body`, within
/// `tolerance` seconds of `now`. Returns the header's timestamp.
pub fn verify_push(
    keyring: &Keyring,
    header: &str,
    body: &[u8],
    now: u64,
    tolerance: u64,
) -> Result<u64, EnvelopeError> {
    envelope::verify(
        keyring,
        Purpose::Sync,
        header,
        &[PUSH_KIND, body],
        now,
        tolerance,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    #[test]
    fn windows_are_aligned_to_the_epoch() {
        let p = Policy::new(10, 60).unwrap();
        assert_eq!(p.window_start_ms(120_000), 120_000);
        assert_eq!(p.window_start_ms(179_999), 120_000);
        assert_eq!(p.reset_ms(120_000), 180_000);
        assert_eq!(p.seconds_to_reset(120_000), 60);
        assert_eq!(p.seconds_to_reset(179_001), 1);
        assert_eq!(p.seconds_to_reset(179_999), 1);
    }

    #[test]
    fn bounds() {
        assert_eq!(Policy::new(0, 60), Err(PolicyError::ZeroLimit));
        assert_eq!(Policy::new(1, 0), Err(PolicyError::Window));
        assert_eq!(Policy::new(1, MAX_WINDOW + 1), Err(PolicyError::Window));
        assert!(Policy::new(1, MAX_WINDOW).is_ok());
    }

    #[test]
    fn parsing() {
        assert_eq!(Policy::parse("600/60"), Policy::new(600, 60));
        assert_eq!(Policy::parse(" 5 / 1 "), Policy::new(5, 1));
        assert_eq!(Policy::parse("0/60"), Err(PolicyError::ZeroLimit));
        assert_eq!(Policy::parse("600/0"), Err(PolicyError::Window));
        assert_eq!(Policy::parse("600/86401"), Err(PolicyError::Window));
        assert_eq!(Policy::parse("+5/60"), Policy::new(5, 60));
        assert_eq!(Policy::parse("4294967295/60"), Policy::new(u32::MAX, 60));
        for malformed in [
            "x/60",
            "600",
            "600/x",
            "-1/60",
            "",
            "/",
            "1/2/3",
            "+/60",
            "4294967296/60",
            "1 0/60",
        ] {
            assert_eq!(
                Policy::parse(malformed),
                Err(PolicyError::Malformed),
                "{malformed}"
            );
        }
    }

    #[test]
    fn a_policy_is_checked_when_read_and_key_ids_are_hex() {
        let entry = |limit: u32, window: u32, key_id: &str| {
            serde_json::from_str::<LimitUpdate>(&format!(
                r#"{{"key_id":"{key_id}","limit":{limit},"window":{window},"version":1}}"#
            ))
        };
        let id = "ab".repeat(16);
        assert_eq!(entry(5, 60, &id).unwrap().key_id, KeyId([0xab; 16]));
        assert!(entry(0, 60, &id).is_err());
        assert!(entry(5, MAX_WINDOW + 1, &id).is_err());
        assert!(entry(5, 60, &"AB".repeat(16)).is_err());
        assert!(entry(5, 60, "ab").is_err());
    }

    #[test]
    fn wire_form() {
        let push = LimitPush {
            limits: vec![LimitUpdate {
                key_id: KeyId([0; 16]),
                policy: Policy::new(5, 10).unwrap(),
                version: 7,
                per_minute: None,
                budget: None,
            }],
        };
        let text = serde_json::to_string(&push).unwrap();
        assert_eq!(
            text,
            r#"{"limits":[{"key_id":"00000000000000000000000000000000","limit":5,"window":10,"version":7}]}"#
        );
        assert_eq!(serde_json::from_str::<LimitPush>(&text).unwrap(), push);
        // A rotated key names the first key of its chain; the plan's cap rides along.
        let push = LimitPush {
            limits: vec![LimitUpdate {
                key_id: KeyId([1; 16]),
                policy: Policy::new(8_640_000, 86_400).unwrap(),
                version: 8,
                per_minute: Some(6000),
                budget: Some(KeyId([0; 16])),
            }],
        };
        let text = serde_json::to_string(&push).unwrap();
        assert_eq!(
            text,
            r#"{"limits":[{"key_id":"01010101010101010101010101010101","limit":8640000,"window":86400,"version":8,"per_minute":6000,"budget":"00000000000000000000000000000000"}]}"#
        );
        assert_eq!(serde_json::from_str::<LimitPush>(&text).unwrap(), push);
    }

    #[test]
    fn pushes_are_signed_for_their_body_and_kind() {
        let ring = testkit::keyring();
        let body = br#"{"limits":[]}"#;
        let sig = sign_push(&ring, body, 1000);
        assert_eq!(verify_push(&ring, &sig, body, 1000, 300), Ok(1000));
        assert_eq!(
            verify_push(&ring, &sig, b"{}", 1000, 300),
            Err(EnvelopeError::BadSignature)
        );
        // A revocation push over the same bytes is a different message.
        let other = crate::revocation::sign_push(&ring, 0, body, 1000);
        assert!(verify_push(&ring, &other, body, 1000, 300).is_err());
    }
}
