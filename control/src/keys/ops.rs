//! The keys API's transactions: create, update, revoke and rotate, each a function of the
//! write transaction it runs in. Each writes the key's new state, its outbox rows and its audit
//! event together, or nothing.

use serde_json::json;
use shared::key::{self, Claims, KeyId, PlainKey};
use shared::mac::Keyring;

use super::error::{KeyOpError, check_rate_limit};
use super::request::{Changes, KeySpec, default_limit};
use super::view::{KeyStatus, KeyView, scope_names, view_of};
use crate::auth::{Caller, random_bytes};
use crate::error::Result;
use crate::events::{Event, GraceEnded};
use crate::store::StoreError;
use crate::store::audit::{self, Actor};
use crate::store::keys::{self as db, KeyRow};
use crate::store::{accounts, revocations, signing};

/// How many retirement candidates the limit error lists.
const CANDIDATES: u32 = 5;

/// Keys younger than this are never suggested for retiring at the key limit (seconds): a day
/// covers the set-up of a new integration (made, deployed, first called), so the suggestion is
/// never the production key someone created four minutes ago and has not wired in yet.
pub const RETIRE_MIN_AGE: u64 = 86_400;

/// Issues a key string for a new row; the string leaves this function only in the response.
fn mint(keyring: &Keyring, row: &KeyRow) -> Result<PlainKey, KeyOpError> {
    let claims = Claims {
        kid: row.kid,
        account_id: row.account_id,
        key_id: row.id,
        environment: row.environment,
        scopes: row.scopes,
        issued_at: row.created_at,
        expires_at: row.expires_at,
    };
    key::issue(&claims, keyring).map_err(KeyOpError::Issue)
}

/// A fresh random key id.
pub(super) fn new_key_id() -> Result<KeyId> {
    let bytes = random_bytes()?;
    let mut id = [0_u8; 16];
    id.copy_from_slice(&bytes[..16]);
    Ok(KeyId(id))
}

/// An idempotent create seen before.
pub(super) struct Replay {
    /// What the first request hashed to.
    pub(super) request_hash: Vec<u8>,
    /// The key it created.
    pub(super) key_id: KeyId,
}

/// What a create did.
pub(super) enum Created {
    /// A new key, with its string (shown once).
    New(Box<KeyRow>, PlainKey),
    /// The same request was made before with this idempotency key: its key, without the string.
    Replayed(Box<KeyView>),
}

/// Everything a create needs besides the transaction.
pub(super) struct NewKey<'a> {
    /// The validated request.
    pub(super) spec: KeySpec,
    /// Who creates it.
    pub(super) caller: &'a Caller,
    /// The new key's id.
    pub(super) id: KeyId,
    /// Signs the new key.
    pub(super) keyring: &'a Keyring,
    /// The `Idempotency-Key` and the request's hash.
    pub(super) idempotency: Option<(String, Vec<u8>)>,
    /// Milliseconds (the policy version); seconds are derived.
    pub(super) now_ms: u64,
}

/// Creates a key: the record, its limits outbox row, the idempotency record and `key.created`,
/// within the plan's limits; or answers a replay of an idempotent create.
pub(super) fn create(
    tx: &crate::store::db::Db<'_>,
    new: NewKey<'_>,
) -> Result<Created, KeyOpError> {
    let NewKey {
        spec,
        caller,
        id,
        keyring,
        idempotency,
        now_ms,
    } = new;
    let now = now_ms / 1000;
    let account = caller.account_id;
    if let Some((idem, request_hash)) = &idempotency {
        if let Some((hash, key_id)) = db::idempotency_record(tx, account, idem)? {
            let seen = Replay {
                request_hash: hash,
                key_id,
            };
            if &seen.request_hash != request_hash {
                return Err(KeyOpError::IdempotencyKeyReused);
            }
            let row = db::get(tx, account, seen.key_id)?.ok_or(KeyOpError::NotFound)?;
            let view = view_of(tx, &row, now, keyring.active_kid())?;
            return Ok(Created::Replayed(Box::new(view)));
        }
    }
    refuse_retired_signer(tx, keyring)?;
    let plan = accounts::plan(tx, account)?;
    let window = spec.rate_limit_window;
    let rate_limit = spec
        .rate_limit
        .unwrap_or_else(|| default_limit(&plan, window));
    check_rate_limit(rate_limit, window, plan.max_rate_limit)?;
    check_key_cap(tx, account, &plan, now)?;
    let mut row = KeyRow {
        id,
        account_id: account,
        name: spec.name,
        description: spec.description,
        environment: spec.environment,
        scopes: spec.scopes,
        kid: keyring.active_kid(),
        hint: String::new(),
        rate_limit,
        rate_limit_window: window,
        policy_version: now_ms,
        created_at: now,
        expires_at: spec.expires_at,
        last_used_at: None,
        last_used_ip: None,
        last_used_user_agent: None,
        revoked_at: None,
        revoke_reason: None,
        revocation_version: None,
        rotated_from: None,
        rotated_to: None,
        grace_until: None,
        limit_pending: true,
        revocation_in_force: false,
        budget_id: id,
        kid_retired: None,
    };
    let plain = mint(keyring, &row)?;
    row.hint = plain.hint();
    db::insert(tx, &row)?;
    db::enqueue_limit(tx, id, now_ms, now_ms)?;
    if let Some((idem, request_hash)) = &idempotency {
        db::insert_idempotency(tx, account, idem, request_hash, id, now)?;
    }
    let settings = json!({
        "name": row.name,
        "environment": row.environment.name(),
        "permission": row.scopes.permission().name(),
        "scopes": scope_names(row.scopes),
        "expires_at": row.expires_at,
        "rate_limit": row.rate_limit,
        "rate_limit_window": row.rate_limit_window,
    });
    audit::record(
        tx,
        now,
        Some(account),
        &caller.actor,
        &Event::KeyCreated {
            key_id: id,
            settings,
        },
    )?;
    Ok(Created::New(Box::new(row), plain))
}

/// Applies `changes` to key `id`: name and description, and a new rate limit (a new policy
/// version in the limits outbox) for an active key. Returns the view and whether the limit
/// changed.
pub(super) fn update(
    tx: &crate::store::db::Db<'_>,
    caller: &Caller,
    id: KeyId,
    changes: Changes,
    now_ms: u64,
    active_kid: u8,
) -> Result<(KeyView, bool), KeyOpError> {
    let now = now_ms / 1000;
    let account = caller.account_id;
    let mut row = db::get(tx, account, id)?.ok_or(KeyOpError::NotFound)?;
    caller
        .may_manage(row.scopes)
        .map_err(KeyOpError::BeyondGrant)?;
    let snapshot = |row: &KeyRow| {
        json!({
            "name": row.name,
            "description": row.description,
            "rate_limit": row.rate_limit,
            "rate_limit_window": row.rate_limit_window,
        })
    };
    if row.status(now) == KeyStatus::Revoked {
        return Err(KeyOpError::UpdateRevoked);
    }
    let before = snapshot(&row);
    if let Some(name) = changes.name {
        row.name = name;
    }
    if let Some(description) = changes.description {
        row.description = description;
    }
    db::update_details(tx, id, &row.name, row.description.as_deref())?;
    let limit = changes.rate_limit.unwrap_or(row.rate_limit);
    let window = changes.rate_limit_window.unwrap_or(row.rate_limit_window);
    let limit_changed = (limit, window) != (row.rate_limit, row.rate_limit_window);
    let state_now = row.status(now);
    if limit_changed && state_now != KeyStatus::Active {
        return Err(KeyOpError::LimitOfNotActive(state_now));
    }
    if limit_changed {
        check_rate_limit(limit, window, accounts::plan(tx, account)?.max_rate_limit)?;
        row.policy_version = db::set_rate_limit(tx, id, limit, window, now_ms)?;
        row.rate_limit = limit;
        row.rate_limit_window = window;
        row.limit_pending = true;
    }
    audit::record(
        tx,
        now,
        Some(account),
        &caller.actor,
        &Event::KeyUpdated {
            key_id: id,
            before,
            after: snapshot(&row),
            policy_version: limit_changed.then_some(row.policy_version),
        },
    )?;
    Ok((view_of(tx, &row, now, active_kid)?, limit_changed))
}

/// Revokes `id` at `now` for `by` (its account, and who acts): the key's new state, a list
/// version, the outbox row and the `key.revoked` event, in `tx`. Returns the version. Every
/// revocation goes through here or [`revoke_under`], so every one reaches the edge's list the
/// same way.
pub(crate) fn revoke_now(
    tx: &crate::store::db::Db<'_>,
    now: u64,
    by: (u64, &Actor),
    id: KeyId,
    reason: &str,
    grace_until: Option<u64>,
    grace_ended: Option<GraceEnded>,
) -> Result<u64, StoreError> {
    let version = revocations::next_version(tx, now)?;
    revoke_under(tx, (now, version), by, id, reason, grace_until, grace_ended)?;
    Ok(version)
}

/// [`revoke_now`] under a list version the caller took in `tx` (`at`: now and that version), so
/// that revocations made together share one: a leak report revokes up to 1,000 keys in one
/// transaction, and they reach the edge in the same publish whatever their versions, so one
/// version says so. The version must come from [`revocations::next_version`] in this same
/// transaction: then it is above every version published before, and the publish that carries
/// these revocations takes a newer one.
pub(crate) fn revoke_under(
    tx: &crate::store::db::Db<'_>,
    at: (u64, u64),
    by: (u64, &Actor),
    id: KeyId,
    reason: &str,
    grace_until: Option<u64>,
    grace_ended: Option<GraceEnded>,
) -> Result<(), StoreError> {
    let (now, version) = at;
    db::set_revoked(tx, id, now, reason, version, grace_until)?;
    revocations::enqueue_now(tx, id, version)?;
    audit::record(
        tx,
        now,
        Some(by.0),
        by.1,
        &Event::KeyRevoked {
            key_id: id,
            reason: reason.to_owned(),
            list_version: version,
            grace_ended,
        },
    )?;
    Ok(())
}

/// Revokes key `id` now (a second revoke changes nothing). Returns the view, the list version
/// that carries the revocation, and whether this call revoked it.
pub(super) fn revoke(
    tx: &crate::store::db::Db<'_>,
    caller: &Caller,
    id: KeyId,
    reason: String,
    now: u64,
    active_kid: u8,
) -> Result<(KeyView, u64, bool), KeyOpError> {
    let mut row = db::get(tx, caller.account_id, id)?.ok_or(KeyOpError::NotFound)?;
    caller
        .may_manage(row.scopes)
        .map_err(KeyOpError::BeyondGrant)?;
    if let (Some(version), KeyStatus::Revoked) = (row.revocation_version, row.status(now)) {
        return Ok((view_of(tx, &row, now, active_kid)?, version, false));
    }
    let by = (caller.account_id, &caller.actor);
    let version = revoke_now(tx, now, by, id, &reason, row.grace_until, None)?;
    row.revoked_at = Some(now);
    row.revoke_reason = Some(reason);
    row.revocation_version = Some(version);
    row.revocation_in_force = true;
    Ok((view_of(tx, &row, now, active_kid)?, version, true))
}

/// Revokes every key of `ids` (one bulk revoke) or none: an id the account does not have
/// (another account's included, the same answer) or a key beyond a token's grant refuses the
/// whole set before anything is written. Keys already revoked are reported unchanged, so a
/// replay answers the same and changes nothing. Returns one answer per id, in order.
pub(super) fn revoke_many(
    tx: &crate::store::db::Db<'_>,
    caller: &Caller,
    ids: &[KeyId],
    reason: &str,
    now: u64,
    active_kid: u8,
) -> Result<Vec<(KeyView, u64, bool)>, KeyOpError> {
    let mut rows = Vec::with_capacity(ids.len());
    let mut unknown = Vec::new();
    for &id in ids {
        match db::get(tx, caller.account_id, id)? {
            Some(row) => rows.push(row),
            None => unknown.push(id),
        }
    }
    if !unknown.is_empty() {
        return Err(KeyOpError::NotFoundAmong(unknown));
    }
    for row in &rows {
        caller
            .may_manage(row.scopes)
            .map_err(KeyOpError::BeyondGrant)?;
    }
    rows.into_iter()
        .map(|row| revoke(tx, caller, row.id, reason.to_owned(), now, active_kid))
        .collect()
}

/// What a rotation made.
pub(super) struct Rotation {
    /// The old key's view, revoked at the end of the grace period.
    pub(super) old: KeyView,
    /// The new key's record.
    pub(super) new: KeyRow,
    /// The new key's string (shown once).
    pub(super) plain: PlainKey,
    /// The list version that carries the old key's revocation once the grace ends.
    pub(super) list_version: u64,
}

/// Refuses to sign with a kid that is retired: a control plane still running with the keyring
/// of before a retirement (until it restarts with the new one) makes no key that is dead on
/// arrival.
fn refuse_retired_signer(
    tx: &crate::store::db::Db<'_>,
    keyring: &Keyring,
) -> Result<(), KeyOpError> {
    let kid = keyring.active_kid();
    match signing::get_retired(tx, kid)? {
        Some(_) => Err(KeyOpError::SignerRetired(kid)),
        None => Ok(()),
    }
}

/// The successor of `old` (its settings and budget, signed by the active kid), stored with its
/// limits outbox row; and its key string.
fn mint_successor(
    tx: &crate::store::db::Db<'_>,
    keyring: &Keyring,
    old: &KeyRow,
    new_id: KeyId,
    now_ms: u64,
) -> Result<(KeyRow, PlainKey), KeyOpError> {
    let mut new = KeyRow {
        id: new_id,
        kid: keyring.active_kid(),
        created_at: now_ms / 1000,
        rotated_from: Some(old.id),
        rotated_to: None,
        hint: String::new(),
        last_used_at: None,
        last_used_ip: None,
        last_used_user_agent: None,
        revoked_at: None,
        revoke_reason: None,
        revocation_version: None,
        grace_until: None,
        revocation_in_force: false,
        policy_version: now_ms,
        limit_pending: true,
        kid_retired: None,
        ..old.clone()
    };
    let plain = mint(keyring, &new)?;
    new.hint = plain.hint();
    db::insert(tx, &new)?;
    db::enqueue_limit(tx, new_id, now_ms, now_ms)?;
    Ok((new, plain))
}

/// Refuses a new working key when the account is at its plan's cap, naming the keys best
/// retired. Keys in a rotation's grace count: they work at the edge until it ends.
fn check_key_cap(
    tx: &crate::store::db::Db<'_>,
    account: u64,
    plan: &accounts::Plan,
    now: u64,
) -> Result<(), KeyOpError> {
    let counts = db::count_working(tx, account, now)?;
    if counts.working < plan.max_active_keys {
        return Ok(());
    }
    let candidates = db::idle_or_oldest(
        tx,
        account,
        now,
        now.saturating_sub(RETIRE_MIN_AGE),
        CANDIDATES,
    )?;
    Err(KeyOpError::LimitReached {
        counts,
        max_active_keys: plan.max_active_keys,
        candidates,
        now,
    })
}

/// "Rotating" a key its kid's retirement revoked: its replacement, with its settings, signed by
/// the active kid. The old key stays revoked (no grace: it works nowhere), and is linked to the
/// replacement, so it is replaced once. The replacement counts against the plan like a new key.
fn replace_retired(
    tx: &crate::store::db::Db<'_>,
    caller: &Caller,
    keyring: &Keyring,
    mut old: KeyRow,
    new_id: KeyId,
    now_ms: u64,
) -> Result<Rotation, KeyOpError> {
    let now = now_ms / 1000;
    let account = caller.account_id;
    let plan = accounts::plan(tx, account)?;
    check_key_cap(tx, account, &plan, now)?;
    let (new, plain) = mint_successor(tx, keyring, &old, new_id, now_ms)?;
    db::set_rotated_to(tx, old.id, new_id)?;
    audit::record(
        tx,
        now,
        Some(account),
        &caller.actor,
        &Event::KeyReplaced {
            key_id: old.id,
            new_key_id: new_id,
            reason: signing::REVOKE_REASON,
        },
    )?;
    old.rotated_to = Some(new_id);
    Ok(Rotation {
        list_version: old.revocation_version.unwrap_or_default(),
        old: view_of(tx, &old, now, keyring.active_kid())?,
        new,
        plain,
    })
}

/// Rotates key `id`: a new key `new_id` with the same settings and budget; the old one revoked
/// when `grace` seconds are over (and any earlier key of the chain still in grace, now).
pub(super) fn rotate(
    tx: &crate::store::db::Db<'_>,
    caller: &Caller,
    keyring: &Keyring,
    id: KeyId,
    new_id: KeyId,
    grace: u64,
    now_ms: u64,
) -> Result<Rotation, KeyOpError> {
    let now = now_ms / 1000;
    let grace_until = now + grace;
    let account = caller.account_id;
    let mut old = db::get(tx, account, id)?.ok_or(KeyOpError::NotFound)?;
    // The new key carries the old one's scopes and its secret is shown: rotating is minting.
    caller
        .may_manage(old.scopes)
        .map_err(KeyOpError::BeyondGrant)?;
    refuse_retired_signer(tx, keyring)?;
    if old.kid_retired.is_some()
        && old.revoke_reason.as_deref() == Some(signing::REVOKE_REASON)
        && old.rotated_to.is_none()
    {
        return replace_retired(tx, caller, keyring, old, new_id, now_ms);
    }
    let state_now = old.status(now);
    if state_now != KeyStatus::Active {
        return Err(KeyOpError::RotateNotActive(state_now));
    }
    // At most one key of a chain in grace: the one this rotation puts there.
    for earlier in db::in_grace(tx, account, old.budget_id, now)? {
        revoke_now(
            tx,
            now,
            (account, &caller.actor),
            earlier.id,
            "rotated",
            Some(now),
            Some(GraceEnded {
                by_rotation_of: id,
                was_until: earlier.grace_until,
            }),
        )?;
    }
    let (new, plain) = mint_successor(tx, keyring, &old, new_id, now_ms)?;
    let version = revocations::next_version(tx, now)?;
    db::set_revoked(tx, id, grace_until, "rotated", version, Some(grace_until))?;
    db::set_rotated_to(tx, id, new_id)?;
    if grace == 0 {
        revocations::enqueue_now(tx, id, version)?;
    } else {
        revocations::schedule(tx, id, version, grace_until)?;
    }
    audit::record(
        tx,
        now,
        Some(account),
        &caller.actor,
        &Event::KeyRotated {
            key_id: id,
            new_key_id: new_id,
            grace_until,
            list_version: version,
            rate_limit_budget: old.budget_id,
        },
    )?;
    old.revoked_at = Some(grace_until);
    old.revoke_reason = Some("rotated".into());
    old.revocation_version = Some(version);
    old.grace_until = Some(grace_until);
    old.rotated_to = Some(new_id);
    old.revocation_in_force = grace == 0;
    Ok(Rotation {
        old: view_of(tx, &old, now, keyring.active_kid())?,
        new,
        plain,
        list_version: version,
    })
}
