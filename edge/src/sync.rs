//! The control plane's signed push of a revocation shard:
//! `PUT /_lynxo/sync/revocations/<shard>` with the shard's bytes as the body and
//!
//! ```text
//! Lynxo-Signature: shared::envelope::sign(keyring, Purpose::Sync, now,
//!                      &[b"revocations", shard_index_decimal, body])
//! ```
//!
//! keyed by the key-signing keyring (`LYNXO_KEYRING`). Before the body is read: the method,
//! the index, then ([`check_before_body`]) the declared size and the signature header's shape,
//! kid and time (300 s tolerance). The body is then read up to `SYNC_MAX_BYTES` and checked in
//! order: size, signature, that the shard opens with the keyring, is the shard of the path and is
//! not already past its next-update time (stale), then ([`check_against_stored`]) that it is not
//! older than what KV holds and carries every revoked id it holds. Only then does the worker
//! write KV. Answers: 204 written, 401 unsigned or bad signature, 409 older than KV or leaving
//! out a revoked id it holds, 413 too large, 422 not a valid shard for this index, or stale.
//! A signed `GET` of the same path ([`check_read`]) answers the bytes KV holds, so the control
//! plane can learn what the edge enforces.
//!
//! The audit checkpoint (`shared::audit`, [`check_checkpoint_push`], [`check_checkpoint_read`])
//! has its own endpoint: `PUT` stores the control plane's newest checkpoint in KV unless KV holds
//! a later one, `GET` (no body) hands it back; both signed.
//!
//! The same module checks the control plane's limits push (`PUT /_lynxo/sync/limits`, body a
//! JSON `shared::limits::LimitPush`, signed with `shared::limits::sign_push`): method, size,
//! signature, then every entry ([`check_limits_push`]). The worker applies each entry to its
//! key's `KeyLimiter` object, which keeps only a newer version, so a retried push is harmless.

use shared::audit::{self, CHECKPOINT_LEN, Checkpoint};
use shared::envelope::{self, EnvelopeError};
use shared::key::KeyId;
use shared::limits::{self, LimitPush, MAX_PUSH_ENTRIES, Policy};
use shared::mac::Keyring;
use shared::revocation::{self, ListError, RevocationShard};

use crate::body::Framing;
use crate::config::Config;
use crate::problem::{Problem, Reply};

/// Header carrying the push's signature (`shared`'s: the control plane sends the same).
pub use shared::envelope::SYNC_HEADER as SIGNATURE_HEADER;
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

/// What the edge checks before it reads a push's body (a `PUT`: the caller refused other
/// methods), cheapest first: the declared length (400 if malformed or ambiguous, 413 if over
/// `SYNC_MAX_BYTES`), and the signature header's presence, shape, kid and time (401). Only a push
/// that passes all of them is read, and only up to `SYNC_MAX_BYTES`
/// ([`crate::body::read_capped`]).
pub fn check_before_body(
    cfg: &Config,
    framing: Framing<'_>,
    signature: Option<&str>,
    now: u64,
) -> Result<(), Reply> {
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

/// 405 for an endpoint that takes `PUT` only.
pub fn put_only() -> Reply {
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
    /// The plan's per-minute cap, if any.
    pub per_minute: Option<u32>,
    /// The key whose limiter counts this key's requests, when not its own.
    pub budget: Option<KeyId>,
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
    // Key ids and policies are checked as the push is read.
    let push: LimitPush = serde_json::from_slice(body).map_err(|e| refused_limits_push(&e))?;
    if push.limits.len() > MAX_PUSH_ENTRIES {
        return Err(too_many_entries());
    }
    push.limits
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            if entry.per_minute == Some(0) {
                return Err(invalid_push(
                    "invalid_policy",
                    format!("Entry {i}: a per-minute cap allows at least 1 request."),
                ));
            }
            Ok(LimitEntry {
                key_id: entry.key_id,
                policy: entry.policy,
                version: entry.version,
                per_minute: entry.per_minute,
                // A key that names itself counts at its own limiter.
                budget: entry.budget.filter(|b| *b != entry.key_id),
            })
        })
        .collect()
}

fn too_many_entries() -> Reply {
    invalid_push(
        "too_many_entries",
        format!("A push has at most {MAX_PUSH_ENTRIES} entries."),
    )
}

/// The answer for a limits push that did not read as one. Key ids and policies are checked as
/// they are read, so the reader's message names the value refused (and where): its reason
/// follows from which of `shared`'s checks refused it.
fn refused_limits_push(error: &serde_json::Error) -> Reply {
    let why = error.to_string();
    let reason = if !error.is_data() {
        return invalid_push("malformed", "The body is not a JSON limits push.");
    } else if why.starts_with(KeyId::REFUSED) {
        "invalid_key_id"
    } else if why.starts_with(limits::POLICY_REFUSED) {
        "invalid_policy"
    } else {
        "malformed"
    };
    invalid_push(reason, format!("The limits push was refused: {why}."))
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
    // Past its next-update by this edge's clock: no reader may use it, so it must not replace
    // the shard KV holds (which would fail every key of the shard closed).
    if let Err(ListError::Stale { next_update }) = shard.check(now, None) {
        return Err(Problem::new(
            422,
            "stale_shard",
            "Unprocessable Content",
            format!(
                "The shard's next update ({next_update}) is not after this edge's clock ({now}): \
                 check the control plane's clock."
            ),
        )
        .field("next_update", next_update)
        .field("edge_time", now)
        .reply());
    }
    Ok(Push { index, shard })
}

/// Refuses a push older than the shard KV holds at `now`, or one that would take a revocation
/// back.
///
/// The version check: a stored value that does not open (tampered, or signed by a retired kid),
/// or that is past its next-update (no reader uses it), does not block a fresh push of a lower
/// version.
///
/// Revocations are never undone, so a push must also carry every id of the stored shard (of the
/// same layout), whatever its version: a control plane whose database lost some (a restore from
/// an older backup) is answered 409 `revocations_dropped` and reads the shard back (`GET`,
/// [`check_read`]) to learn them. A stored shard past its next-update binds too: stale or not,
/// its ids were revoked by a holder of the keyring. The only stored values that bind nothing
/// are those that do not open with this edge's keyring (nothing in them can be trusted) and
/// shards of another shard count (their ids belong to other shards now).
pub fn check_against_stored(
    push: &Push,
    stored: Option<&[u8]>,
    keyring: &Keyring,
    now: u64,
) -> Result<(), Reply> {
    let Some(stored) = stored.and_then(|b| RevocationShard::open(b, keyring).ok()) else {
        return Ok(());
    };
    let (have, new) = (stored.header().version, push.shard.header().version);
    if new < have && stored.check(now, None).is_ok() {
        return Err(Problem::new(
            409,
            "stale_version",
            "Conflict",
            format!("The edge holds version {have} of this shard; the push is version {new}."),
        )
        .field("current_version", have)
        .reply());
    }
    if stored.header().shard_count != push.shard.header().shard_count {
        return Ok(());
    }
    let dropped = stored.ids().filter(|&id| !push.shard.contains(id)).count();
    if dropped > 0 {
        return Err(Problem::new(
            409,
            "revocations_dropped",
            "Conflict",
            format!(
                "The push leaves out {dropped} revoked key ids that the edge holds in this shard \
                 (version {have}); revocations are never undone. Read the shard back and carry \
                 them."
            ),
        )
        .field("dropped", dropped)
        .field("current_version", have)
        .reply());
    }
    Ok(())
}

/// 405 for an endpoint that takes `GET` and `PUT`.
pub fn get_or_put() -> Reply {
    Problem::new(
        405,
        "method_not_allowed",
        "Method Not Allowed",
        "The sync endpoint accepts GET and PUT.",
    )
    .header("allow", "GET, PUT")
    .reply()
}

/// Checks a read of shard path segment `index_text` (`GET`, no body) at `now`: the index, then
/// the signature ([`revocation::sign_read`]), before KV is read at all.
pub fn check_read(
    cfg: &Config,
    index_text: &str,
    signature: Option<&str>,
    now: u64,
) -> Result<u16, Reply> {
    let index = parse_index(index_text, cfg)?;
    let signature = signature.ok_or_else(missing_signature)?;
    revocation::verify_read(&cfg.keyring, signature, index, now, TOLERANCE)
        .map_err(signature_refusal)?;
    Ok(index)
}

/// The answer to a shard read: the bytes KV holds, as hex (`{"shard": "<hex>"}`), unchecked:
/// the reader verifies them with its own keyring. 404 when KV holds none.
pub fn shard_reply(stored: Option<&[u8]>) -> Reply {
    let Some(bytes) = stored else {
        return refuse(
            404,
            "not_found",
            "Not Found",
            "The edge holds no value for this shard.",
        );
    };
    Reply {
        status: 200,
        headers: vec![
            ("content-type", "application/json".to_owned()),
            ("cache-control", "no-store".to_owned()),
        ],
        body: serde_json::json!({ "shard": shared::lowerhex::encode(bytes) }).to_string(),
        reason: None,
    }
}

/// Checks a read of the stored audit checkpoint (`GET`) at `now`: method and signature.
pub fn check_checkpoint_read(
    cfg: &Config,
    method: &str,
    signature: Option<&str>,
    now: u64,
) -> Result<(), Reply> {
    if method != "GET" {
        return Err(get_or_put());
    }
    let signature = signature.ok_or_else(missing_signature)?;
    audit::verify_read(&cfg.keyring, signature, now, TOLERANCE).map_err(signature_refusal)?;
    Ok(())
}

/// Checks a push of an audit checkpoint (`PUT`) at `now`: method, size, signature, then its
/// shape (the edge cannot check its tag: that needs the control plane's audit keyring).
pub fn check_checkpoint_push(
    cfg: &Config,
    method: &str,
    signature: Option<&str>,
    body: &[u8],
    now: u64,
) -> Result<Checkpoint, Reply> {
    if method != "PUT" {
        return Err(get_or_put());
    }
    if body.len() > cfg.sync_max_bytes {
        return Err(too_large(cfg));
    }
    let signature = signature.ok_or_else(missing_signature)?;
    audit::verify_push(&cfg.keyring, signature, body, now, TOLERANCE).map_err(signature_refusal)?;
    Checkpoint::parse_unverified(body).map_err(|e| {
        Problem::new(
            422,
            "invalid_checkpoint",
            "Unprocessable Content",
            format!("The body is not an audit checkpoint of {CHECKPOINT_LEN} bytes."),
        )
        .reason(e.code())
        .reply()
    })
}

/// Whether a checked checkpoint `body` may replace the one KV holds: only one that anchors a
/// later event (or is the same bytes again, an idempotent retry). A stored value that does not
/// parse is replaced.
pub fn check_checkpoint_against_stored(
    pushed: &Checkpoint,
    body: &[u8],
    stored: Option<&[u8]>,
) -> Result<(), Reply> {
    let Some((bytes, held)) =
        stored.and_then(|b| Checkpoint::parse_unverified(b).ok().map(|c| (b, c)))
    else {
        return Ok(());
    };
    if pushed.seq > held.seq || bytes == body {
        return Ok(());
    }
    Err(Problem::new(
        409,
        "stale_checkpoint",
        "Conflict",
        format!(
            "The edge holds a checkpoint of event {}; the push anchors event {}.",
            held.seq, pushed.seq
        ),
    )
    .field("current_seq", held.seq)
    .reply())
}

/// The answer to a checkpoint read: the stored bytes as hex, with the fields the edge can read.
pub fn checkpoint_reply(stored: Option<&[u8]>) -> Reply {
    let Some(bytes) = stored else {
        return refuse(
            404,
            "not_found",
            "Not Found",
            "The edge holds no audit checkpoint yet.",
        );
    };
    let parsed = Checkpoint::parse_unverified(bytes).ok();
    let body = serde_json::json!({
        "checkpoint": shared::lowerhex::encode(bytes),
        "seq": parsed.map(|c| c.seq),
        "at": parsed.map(|c| c.at),
    });
    Reply {
        status: 200,
        headers: vec![
            ("content-type", "application/json".to_owned()),
            ("cache-control", "no-store".to_owned()),
        ],
        body: body.to_string(),
        reason: None,
    }
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
        let before = |cfg: &Config, length, sig, now| {
            let framing = Framing {
                content_length: length,
                transfer_encoding: None,
            };
            check_before_body(cfg, framing, sig, now).map_err(|r| r.status)
        };
        assert_eq!(before(&cfg, Some("10"), Some(sig.as_str()), NOW), Ok(()));
        assert_eq!(before(&cfg, None, Some(sig.as_str()), NOW), Ok(()));
        assert_eq!(
            before(&small, Some("11"), Some(sig.as_str()), NOW),
            Err(413)
        );
        assert_eq!(
            before(&cfg, Some("1, 1"), Some(sig.as_str()), NOW),
            Err(400)
        );
        assert_eq!(before(&cfg, None, None, NOW), Err(401));
        assert_eq!(before(&cfg, None, Some("t=1"), NOW), Err(401));
        assert_eq!(
            before(&cfg, None, Some(sig.as_str()), NOW + TOLERANCE + 1),
            Err(401)
        );
        let forged = format!("t={NOW},kid=9,v1={}", "00".repeat(32));
        assert_eq!(before(&cfg, None, Some(forged.as_str()), NOW), Err(401));
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
                version: 3,
                per_minute: None,
                budget: None,
            }]
        );
        // A rotated key names its chain's budget and the plan's cap.
        let root = KeyId([0xcd; 16]).to_string();
        let chained = body.replace(
            r#""version":3"#,
            &format!(r#""version":3,"per_minute":6000,"budget":"{root}""#),
        );
        let sig2 = limits::sign_push(&cfg.keyring, chained.as_bytes(), NOW);
        let entries = check("PUT", Some(&sig2), chained.as_bytes(), NOW).unwrap();
        assert_eq!(
            (entries[0].per_minute, entries[0].budget),
            (Some(6000), Some(KeyId([0xcd; 16])))
        );
        // Naming itself is no redirection.
        let own = body.replace(r#""version":3"#, &format!(r#""version":3,"budget":"{id}""#));
        let sig3 = limits::sign_push(&cfg.keyring, own.as_bytes(), NOW);
        assert_eq!(
            check("PUT", Some(&sig3), own.as_bytes(), NOW).unwrap()[0].budget,
            None
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
        assert_eq!(
            bad(body.replace(r#""version":3"#, r#""version":3,"per_minute":0"#)),
            (400, "invalid_policy".into())
        );
        assert_eq!(
            bad(body.replace(r#""version":3"#, r#""version":3,"budget":"x""#)),
            (400, "invalid_key_id".into())
        );
        let many = LimitPush {
            limits: vec![
                shared::limits::LimitUpdate {
                    key_id: KeyId([0xab; 16]),
                    policy: Policy::new(1, 1).unwrap(),
                    version: 1,
                    per_minute: None,
                    budget: None,
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

    fn code(reply: &Reply) -> String {
        let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        v["code"].as_str().unwrap_or("").to_owned()
    }

    #[test]
    fn a_push_past_its_next_update_is_refused_as_stale() {
        let cfg = config();
        let pushed = |next_update: u64| {
            let header = ShardHeader {
                shard: 3,
                shard_count: 16,
                version: 9,
                issued_at: NOW - 3_600,
                next_update,
            };
            let body = RevocationShard::new(header, 1, [])
                .unwrap()
                .encode(&cfg.keyring)
                .unwrap();
            let sig = sign_push(&cfg.keyring, 3, &body, NOW);
            check_push(&cfg, "PUT", "3", Some(&sig), &body, NOW)
        };
        for stale in [NOW - 3_000, NOW - 1, NOW] {
            let reply = pushed(stale).unwrap_err();
            assert_eq!((reply.status, code(&reply)), (422, "stale_shard".into()));
        }
        assert!(pushed(NOW + 1).is_ok());
    }

    fn checkpoint(seq: u64) -> Vec<u8> {
        let ring = shared::testkit::audit_keyring();
        Checkpoint {
            kid: 1,
            seq,
            legacy_upto: 0,
            at: NOW,
            head: [seq as u8; 32],
        }
        .encode(&ring)
        .unwrap()
        .to_vec()
    }

    #[test]
    fn checkpoint_pushes_and_reads() {
        let cfg = config();
        let body = checkpoint(7);
        let sig = audit::sign_push(&cfg.keyring, &body, NOW);
        let push = |method, sig: Option<&str>, body: &[u8], now| {
            check_checkpoint_push(&cfg, method, sig, body, now).map_err(|r| r.status)
        };
        assert_eq!(push("PUT", Some(&sig), &body, NOW + 5).unwrap().seq, 7);
        assert_eq!(push("POST", Some(&sig), &body, NOW), Err(405));
        assert_eq!(push("PUT", None, &body, NOW), Err(401));
        assert_eq!(
            push("PUT", Some(&sig), &body, NOW + TOLERANCE + 1),
            Err(401)
        );
        // Another message's signature (a shard push, a read) does not pass.
        let shard_sig = sign_push(&cfg.keyring, 0, &body, NOW);
        assert_eq!(push("PUT", Some(&shard_sig), &body, NOW), Err(401));
        let read_sig = audit::sign_read(&cfg.keyring, NOW);
        assert_eq!(push("PUT", Some(&read_sig), &body, NOW), Err(401));
        let junk = b"not a checkpoint";
        let junk_sig = audit::sign_push(&cfg.keyring, junk, NOW);
        assert_eq!(push("PUT", Some(&junk_sig), junk, NOW), Err(422));

        let read = |method, sig: Option<&str>, now| {
            check_checkpoint_read(&cfg, method, sig, now).map_err(|r| r.status)
        };
        assert_eq!(read("GET", Some(&read_sig), NOW + 10), Ok(()));
        assert_eq!(read("GET", None, NOW), Err(401));
        assert_eq!(read("GET", Some(&sig), NOW), Err(401));
        assert_eq!(read("DELETE", Some(&read_sig), NOW), Err(405));
        let reply = checkpoint_reply(Some(&body));
        let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!((reply.status, v["seq"].as_u64()), (200, Some(7)));
        assert_eq!(v["checkpoint"].as_str().unwrap().len(), 2 * CHECKPOINT_LEN);
        assert_eq!(checkpoint_reply(None).status, 404);
    }

    #[test]
    fn a_checkpoint_never_replaces_a_later_one() {
        let (c5, c7) = (checkpoint(5), checkpoint(7));
        let parsed = |b: &[u8]| Checkpoint::parse_unverified(b).unwrap();
        let check = |pushed: &[u8], stored: Option<&[u8]>| {
            check_checkpoint_against_stored(&parsed(pushed), pushed, stored).map_err(|r| r.status)
        };
        assert_eq!(check(&c7, None), Ok(()));
        assert_eq!(check(&c7, Some(&c5)), Ok(()));
        assert_eq!(
            check(&c7, Some(&c7)),
            Ok(()),
            "the same bytes again: a retry"
        );
        assert_eq!(check(&c5, Some(&c7)), Err(409));
        assert_eq!(check(&c5, Some(b"garbage")), Ok(()));
        // Another checkpoint of the same event (another head) is refused too.
        let mut other = c7.clone();
        other[40] ^= 1;
        assert_eq!(check(&other, Some(&c7)), Err(409));
    }

    fn shard_with(version: u64, next_update: u64, ids: &[KeyId], cfg: &Config) -> Vec<u8> {
        let header = ShardHeader {
            shard: 0,
            shard_count: 16,
            version,
            // A shard past its next update was issued before it.
            issued_at: NOW.min(next_update),
            next_update,
        };
        RevocationShard::new(header, 1, ids.iter().copied())
            .unwrap()
            .encode(&cfg.keyring)
            .unwrap()
    }

    #[test]
    fn a_push_never_drops_a_revoked_id_the_edge_holds() {
        let cfg = config();
        // Ids of shard 0 of 16, the shard these pushes carry.
        let mut ids = (0..=u8::MAX)
            .map(|i| KeyId([i; 16]))
            .filter(|&id| revocation::shard_of(id, 16) == 0);
        let mut next = || ids.next().expect("ids of shard 0");
        let (a, b, c) = (next(), next(), next());
        let pushed = |ids: &[KeyId], version| {
            let body = shard_with(version, NOW + 3_600, ids, &cfg);
            let sig = sign_push(&cfg.keyring, 0, &body, NOW);
            check_push(&cfg, "PUT", "0", Some(&sig), &body, NOW).unwrap()
        };
        let check = |push: &Push, stored: &[u8], now| {
            check_against_stored(push, Some(stored), &cfg.keyring, now).map_err(|r| {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                (r.status, code(&r), v["dropped"].as_u64())
            })
        };
        let held = shard_with(5, NOW + 3_600, &[a, b], &cfg);
        // A newer version without `b`: refused, whatever the version says.
        let dropped = (409, "revocations_dropped".to_owned(), Some(1));
        assert_eq!(check(&pushed(&[a], 6), &held, NOW), Err(dropped.clone()));
        assert_eq!(check(&pushed(&[a], u64::MAX), &held, NOW), Err(dropped));
        // The same ids or more: accepted.
        assert!(check(&pushed(&[a, b], 6), &held, NOW).is_ok());
        assert!(check(&pushed(&[a, b, c], 6), &held, NOW).is_ok());
        // A stored shard past its next-update still binds: its ids were revoked.
        let stale = shard_with(5, NOW - 1, &[a, b], &cfg);
        assert_eq!(
            check(&pushed(&[], 1), &stale, NOW).map_err(|e| e.0),
            Err(409)
        );
        assert!(check(&pushed(&[a, b], 1), &stale, NOW).is_ok());
        // Bytes that do not open with this keyring bind nothing.
        let mut forged = held.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(check(&pushed(&[], 6), &forged, NOW).is_ok());
    }

    #[test]
    fn shard_reads_are_signed_for_their_index() {
        let cfg = config();
        let read = revocation::sign_read(&cfg.keyring, 3, NOW);
        let check = |index, sig: Option<&str>, now| {
            check_read(&cfg, index, sig, now).map_err(|r| (r.status, code(&r)))
        };
        assert_eq!(check("3", Some(&read), NOW + 5), Ok(3));
        assert_eq!(check("4", Some(&read), NOW).map_err(|e| e.0), Err(401));
        assert_eq!(check("3", None, NOW).map_err(|e| e.0), Err(401));
        assert_eq!(
            check("3", Some(&read), NOW + TOLERANCE + 1).map_err(|e| e.0),
            Err(401)
        );
        assert_eq!(check("03", Some(&read), NOW).map_err(|e| e.0), Err(404));
        assert_eq!(check("16", Some(&read), NOW).map_err(|e| e.0), Err(404));
        // A push's signature is no read's.
        let push = sign_push(&cfg.keyring, 3, b"", NOW);
        assert_eq!(check("3", Some(&push), NOW).map_err(|e| e.0), Err(401));
        let reply = shard_reply(Some(&[0xab, 0x01]));
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, r#"{"shard":"ab01"}"#)
        );
        assert_eq!(shard_reply(None).status, 404);
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
        let check =
            |stored: Option<&[u8]>, now| check_against_stored(&push, stored, &cfg.keyring, now);
        assert!(check(None, NOW).is_ok());
        assert!(check(Some(&shard(3, 16, 5, &cfg)), NOW).is_ok());
        assert!(check(Some(&shard(3, 16, 4, &cfg)), NOW).is_ok());
        assert!(check(Some(b"garbage"), NOW).is_ok());
        let newer = shard(3, 16, 6, &cfg);
        assert_eq!(check(Some(&newer), NOW).unwrap_err().status, 409);
        // The newer one held in KV has expired (next update NOW + 3600): it blocks nothing.
        assert!(check(Some(&newer), NOW + 3_600).is_ok());
    }
}
