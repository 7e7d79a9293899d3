//! The control plane's signed push of a revocation shard:
//! `PUT /_lynxo/sync/revocations/<shard>` with the shard's bytes as the body and
//!
//! ```text
//! Lynxo-Signature: shared::envelope::sign(keyring, Purpose::Sync, now,
//!                      &[b"revocations", shard_index_decimal, body])
//! ```
//!
//! keyed by the key-signing keyring (`LYNXO_KEYRING`). Before the body is read
//! ([`check_before_body`]): method, index, declared size, and the signature header's shape, kid
//! and time (300 s tolerance). The body is then read up to `SYNC_MAX_BYTES` and checked in order:
//! size, signature, that the shard opens with the keyring and is the shard of the path, then
//! ([`check_against_stored`]) that it is not older than what KV holds. Only then does the worker
//! write KV. Answers: 204 written, 401 unsigned or bad signature, 409 older than
//! KV, 413 too large, 422 not a valid shard for this index.
//!
//! The same module checks the control plane's limits push (`PUT /_lynxo/sync/limits`, body a
//! JSON `shared::limits::LimitPush`, signed with `shared::limits::sign_push`): method, size,
//! signature, then every entry ([`check_limits_push`]). The worker applies each entry to its
//! key's `KeyLimiter` object, which keeps only a newer version, so a retried push is harmless.

use shared::envelope::{self, EnvelopeError};
use shared::key::KeyId;
use shared::limits::{self, LimitPush, MAX_PUSH_ENTRIES, Policy};
use shared::mac::Keyring;
use shared::revocation::{self, RevocationShard};

use crate::body::Framing;
use crate::config::Config;
use crate::problem::{Problem, Reply};

/// Path prefix of the endpoint; the shard index follows.
pub const PATH_PREFIX: &str = "/_lynxo/sync/revocations/";
/// Header carrying the push's signature.
pub const SIGNATURE_HEADER: &str = "lynxo-signature";
/// Seconds a push's timestamp may differ from the edge's clock.
pub const TOLERANCE: u64 = 300;
/// Signs a push of `body` as shard `index` at `now`: what the control plane sends.
pub use shared::revocation::sign_push;

/// A push that passed every check but the comparison with KV.
#[derive(Debug)]
pub struct Push {
    /// The shard index.
    pub index: u16,
    /// The opened shard.
    pub shard: RevocationShard,
}

fn refuse(
    status: u16,
    code: &'static str,
    title: &'static str,
    detail: impl Into<String>,
) -> Reply {
    Problem::new(status, code, title, detail).reply()
}

/// Parses the index in the path: canonical decimal, below the shard count.
pub fn parse_index(text: &str, cfg: &Config) -> Result<u16, Reply> {
    let canonical = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    text.parse::<u16>()
        .ok()
        .filter(|i| canonical && *i < cfg.shard_count)
        .ok_or_else(|| {
            refuse(
                404,
                "not_found",
                "Not Found",
                format!(
                    "No revocation shard {text:?}: shards are 0 to {}.",
                    cfg.shard_count - 1
                ),
            )
        })
}

/// What the edge checks before it reads a push's body, cheapest first: the method (405), the
/// declared length (400 if malformed, 413 if over `SYNC_MAX_BYTES`), and the signature header's
/// presence, shape, kid and time (401). Only a push that passes all of them is read, and only up
/// to `SYNC_MAX_BYTES` ([`crate::body::read_capped`]).
pub fn check_before_body(
    cfg: &Config,
    method: &str,
    framing: Framing<'_>,
    signature: Option<&str>,
    now: u64,
) -> Result<(), Reply> {
    if method != "PUT" {
        return Err(put_only());
    }
    if framing
        .declared()?
        .is_some_and(|n| n > cfg.sync_max_bytes as u64)
    {
        return Err(too_large(cfg));
    }
    let signature = signature.ok_or_else(missing_signature)?;
    envelope::check_header(&cfg.keyring, envelope::SCHEME_V1, signature, now, TOLERANCE)
        .map_err(signature_refusal)?;
    Ok(())
}

/// The answer for a push over `SYNC_MAX_BYTES`.
pub fn too_large(cfg: &Config) -> Reply {
    crate::body::too_large(cfg.sync_max_bytes, "A sync push")
}

fn signature_refusal(e: EnvelopeError) -> Reply {
    let reason = match e {
        EnvelopeError::Malformed => "malformed",
        EnvelopeError::UnknownKid(_) => "unknown_kid",
        EnvelopeError::OutsideTolerance { .. } => "outside_tolerance",
        _ => "bad_signature",
    };
    Problem::new(
        401,
        "invalid_signature",
        "Unauthorized",
        "The push's signature is not valid.",
    )
    .reason(reason)
    .reply()
}

fn missing_signature() -> Reply {
    refuse(
        401,
        "missing_signature",
        "Unauthorized",
        "A push must carry a `Lynxo-Signature` header.",
    )
}

fn put_only() -> Reply {
    Problem::new(
        405,
        "method_not_allowed",
        "Method Not Allowed",
        "The sync endpoint accepts PUT.",
    )
    .header("allow", "PUT")
    .reply()
}

/// One checked entry of a limits push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitEntry {
    /// The key.
    pub key_id: KeyId,
    /// Its policy.
    pub policy: Policy,
    /// The policy's version.
    pub version: u64,
}

fn invalid_push(reason: &'static str, detail: impl Into<String>) -> Reply {
    Problem::new(400, "invalid_push", "Bad Request", detail)
        .reason(reason)
        .reply()
}

/// Checks a limits push of `body` at `now` (Unix seconds): method, size, signature, then each
/// entry. Answers 405, 413, 401 and 400 (`invalid_push` with a `reason`).
pub fn check_limits_push(
    cfg: &Config,
    method: &str,
    signature: Option<&str>,
    body: &[u8],
    now: u64,
) -> Result<Vec<LimitEntry>, Reply> {
    if method != "PUT" {
        return Err(put_only());
    }
    if body.len() > cfg.sync_max_bytes {
        return Err(too_large(cfg));
    }
    let signature = signature.ok_or_else(missing_signature)?;
    limits::verify_push(&cfg.keyring, signature, body, now, TOLERANCE)
        .map_err(signature_refusal)?;
    let push: LimitPush = serde_json::from_slice(body)
        .map_err(|_| invalid_push("malformed", "The body is not a JSON limits push."))?;
    if push.limits.len() > MAX_PUSH_ENTRIES {
        return Err(invalid_push(
            "too_many_entries",
            format!("A push has at most {MAX_PUSH_ENTRIES} entries."),
        ));
    }
    push.limits
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let key_id = KeyId::parse_hex(&entry.key_id).ok_or_else(|| {
                invalid_push(
                    "invalid_key_id",
                    format!("Entry {i}: the key id is not 32 lowercase hex digits."),
                )
            })?;
            entry
                .policy
                .check()
                .map_err(|e| invalid_push("invalid_policy", format!("Entry {i}: {e}.")))?;
            Ok(LimitEntry {
                key_id,
                policy: entry.policy,
                version: entry.version,
            })
        })
        .collect()
}

/// Checks a push of `body` to shard path segment `index_text` at `now` (Unix seconds).
pub fn check_push(
    cfg: &Config,
    method: &str,
    index_text: &str,
    signature: Option<&str>,
    body: &[u8],
    now: u64,
) -> Result<Push, Reply> {
    if method != "PUT" {
        return Err(put_only());
    }
    let index = parse_index(index_text, cfg)?;
    if body.len() > cfg.sync_max_bytes {
        return Err(too_large(cfg));
    }
    let signature = signature.ok_or_else(missing_signature)?;
    revocation::verify_push(&cfg.keyring, signature, index, body, now, TOLERANCE)
        .map_err(signature_refusal)?;
    let shard = RevocationShard::open(body, &cfg.keyring).map_err(|e| {
        Problem::new(
            422,
            "invalid_shard",
            "Unprocessable Content",
            "The body is not a valid revocation shard.",
        )
        .reason(e.code())
        .reply()
    })?;
    let header = shard.header();
    if header.shard != index || header.shard_count != cfg.shard_count {
        return Err(refuse(
            422,
            "shard_mismatch",
            "Unprocessable Content",
            format!(
                "The body is shard {} of {}; this endpoint is shard {index} of {}.",
                header.shard, header.shard_count, cfg.shard_count
            ),
        ));
    }
    Ok(Push { index, shard })
}

/// Refuses a push older than the shard KV holds. A stored value that does not open (tampered,
/// or signed by a retired kid) is replaced.
pub fn check_against_stored(
    push: &Push,
    stored: Option<&[u8]>,
    keyring: &Keyring,
) -> Result<(), Reply> {
    let Some(stored) = stored.and_then(|b| RevocationShard::open(b, keyring).ok()) else {
        return Ok(());
    };
    let (have, new) = (stored.header().version, push.shard.header().version);
    if new < have {
        return Err(Problem::new(
            409,
            "stale_version",
            "Conflict",
            format!("The edge holds version {have} of this shard; the push is version {new}."),
        )
        .field("current_version", have)
        .reply());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::config;
    use shared::revocation::ShardHeader;

    const NOW: u64 = 1_800_000_000;

    fn shard(index: u16, count: u16, version: u64, cfg: &Config) -> Vec<u8> {
        let header = ShardHeader {
            shard: index,
            shard_count: count,
            version,
            issued_at: NOW,
            next_update: NOW + 3_600,
        };
        RevocationShard::new(header, 1, [])
            .unwrap()
            .encode(&cfg.keyring)
            .unwrap()
    }

    fn status(r: Result<Push, Reply>) -> u16 {
        r.map(|_| 204).unwrap_or_else(|e| e.status)
    }

    #[test]
    fn each_check() {
        let cfg = config();
        let body = shard(3, 16, 5, &cfg);
        let sig = sign_push(&cfg.keyring, 3, &body, NOW);
        let push = |method, index, sig: Option<&str>, body: &[u8], now| {
            status(check_push(&cfg, method, index, sig, body, now))
        };
        assert_eq!(push("PUT", "3", Some(&sig), &body, NOW + 10), 204);
        assert_eq!(push("POST", "3", Some(&sig), &body, NOW), 405);
        for bad in ["03", "16", "", "x", "99999999"] {
            assert_eq!(push("PUT", bad, Some(&sig), &body, NOW), 404, "{bad}");
        }
        assert_eq!(push("PUT", "3", None, &body, NOW), 401);
        assert_eq!(
            push("PUT", "3", Some(&sig), &body, NOW + TOLERANCE + 1),
            401
        );
        assert_eq!(push("PUT", "4", Some(&sig), &body, NOW), 401);
        let other = shard(4, 16, 5, &cfg);
        let other_sig = sign_push(&cfg.keyring, 3, &other, NOW);
        assert_eq!(push("PUT", "3", Some(&other_sig), &other, NOW), 422);
        let wrong_count = shard(3, 8, 5, &cfg);
        let wrong_count_sig = sign_push(&cfg.keyring, 3, &wrong_count, NOW);
        assert_eq!(
            push("PUT", "3", Some(&wrong_count_sig), &wrong_count, NOW),
            422
        );
        let junk = b"not a shard";
        let junk_sig = sign_push(&cfg.keyring, 3, junk, NOW);
        assert_eq!(push("PUT", "3", Some(&junk_sig), junk, NOW), 422);
        let mut small = cfg.clone();
        small.sync_max_bytes = 10;
        assert_eq!(
            status(check_push(&small, "PUT", "3", Some(&sig), &body, NOW)),
            413
        );
        let before = |cfg: &Config, method, length, sig, now| {
            let framing = Framing {
                content_length: length,
                transfer_encoding: None,
            };
            check_before_body(cfg, method, framing, sig, now).map_err(|r| r.status)
        };
        assert_eq!(
            before(&cfg, "PUT", Some("10"), Some(sig.as_str()), NOW),
            Ok(())
        );
        assert_eq!(before(&cfg, "PUT", None, Some(sig.as_str()), NOW), Ok(()));
        assert_eq!(
            before(&small, "PUT", Some("11"), Some(sig.as_str()), NOW),
            Err(413)
        );
        assert_eq!(
            before(&cfg, "POST", None, Some(sig.as_str()), NOW),
            Err(405)
        );
        assert_eq!(
            before(&cfg, "PUT", Some("1, 1"), Some(sig.as_str()), NOW),
            Err(400)
        );
        assert_eq!(before(&cfg, "PUT", None, None, NOW), Err(401));
        assert_eq!(before(&cfg, "PUT", None, Some("t=1"), NOW), Err(401));
        assert_eq!(
            before(&cfg, "PUT", None, Some(sig.as_str()), NOW + TOLERANCE + 1),
            Err(401)
        );
        let forged = format!("t={NOW},kid=9,v1={}", "00".repeat(32));
        assert_eq!(
            before(&cfg, "PUT", None, Some(forged.as_str()), NOW),
            Err(401)
        );
    }

    #[test]
    fn limits_push_checks() {
        let cfg = config();
        let id = KeyId([0xab; 16]).to_string();
        let body =
            format!(r#"{{"limits":[{{"key_id":"{id}","limit":5,"window":10,"version":3}}]}}"#);
        let sig = limits::sign_push(&cfg.keyring, body.as_bytes(), NOW);
        let check = |method, sig: Option<&str>, body: &[u8], now| {
            check_limits_push(&cfg, method, sig, body, now)
        };
        let entries = check("PUT", Some(&sig), body.as_bytes(), NOW + 5).unwrap();
        assert_eq!(
            entries,
            [LimitEntry {
                key_id: KeyId([0xab; 16]),
                policy: Policy::new(5, 10).unwrap(),
                version: 3
            }]
        );
        let status =
            |r: Result<Vec<LimitEntry>, Reply>| r.map(|_| 204).unwrap_or_else(|e| e.status);
        assert_eq!(status(check("POST", Some(&sig), body.as_bytes(), NOW)), 405);
        assert_eq!(status(check("PUT", None, body.as_bytes(), NOW)), 401);
        assert_eq!(
            status(check(
                "PUT",
                Some(&sig),
                body.as_bytes(),
                NOW + TOLERANCE + 1
            )),
            401
        );
        // A revocation push signature does not pass for a limits push.
        let other = sign_push(&cfg.keyring, 0, body.as_bytes(), NOW);
        assert_eq!(
            status(check("PUT", Some(&other), body.as_bytes(), NOW)),
            401
        );
        let bad = |body: String| {
            let sig = limits::sign_push(&cfg.keyring, body.as_bytes(), NOW);
            let reply = check("PUT", Some(&sig), body.as_bytes(), NOW).unwrap_err();
            let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
            (reply.status, v["reason"].as_str().unwrap_or("").to_owned())
        };
        assert_eq!(bad("nope".into()), (400, "malformed".into()));
        assert_eq!(
            bad(body.replace(&id, "ABC")),
            (400, "invalid_key_id".into())
        );
        assert_eq!(
            bad(body.replace(&id, &id.to_uppercase())),
            (400, "invalid_key_id".into())
        );
        assert_eq!(
            bad(body.replace(r#""limit":5"#, r#""limit":0"#)),
            (400, "invalid_policy".into())
        );
        let many = LimitPush {
            limits: vec![
                shared::limits::LimitUpdate {
                    key_id: id.clone(),
                    policy: Policy::new(1, 1).unwrap(),
                    version: 1
                };
                MAX_PUSH_ENTRIES + 1
            ],
        };
        assert_eq!(
            bad(serde_json::to_string(&many).unwrap()),
            (400, "too_many_entries".into())
        );
        let mut small = cfg.clone();
        small.sync_max_bytes = 10;
        assert_eq!(
            status(check_limits_push(
                &small,
                "PUT",
                Some(&sig),
                body.as_bytes(),
                NOW
            )),
            413
        );
    }

    #[test]
    fn older_than_stored_is_a_conflict() {
        let cfg = config();
        let v5 = shard(3, 16, 5, &cfg);
        let push = check_push(
            &cfg,
            "PUT",
            "3",
            Some(&sign_push(&cfg.keyring, 3, &v5, NOW)),
            &v5,
            NOW,
        )
        .unwrap();
        assert!(check_against_stored(&push, None, &cfg.keyring).is_ok());
        assert!(check_against_stored(&push, Some(&shard(3, 16, 5, &cfg)), &cfg.keyring).is_ok());
        assert!(check_against_stored(&push, Some(&shard(3, 16, 4, &cfg)), &cfg.keyring).is_ok());
        assert!(check_against_stored(&push, Some(b"garbage"), &cfg.keyring).is_ok());
        let reply =
            check_against_stored(&push, Some(&shard(3, 16, 6, &cfg)), &cfg.keyring).unwrap_err();
        assert_eq!(reply.status, 409);
    }
}
