//! The leak transaction: for each genuine key reported, one leak record per place it was found,
//! its audit event, and (unless the account chose "notify only") its revocation through the
//! keys' one revoke path. A place already recorded changes nothing: replays are idempotent.
//!
//! A report is one transaction, whole or not at all: a failure anywhere undoes every key of it,
//! and the provider's retry (GitLab retries any answer of 400 or more) finds nothing recorded and
//! does it all. Its revocations share one list version, taken at the first one.

use std::collections::HashMap;

use shared::key::Claims;

use crate::events::Event;
use crate::keys::KeyStatus;
use crate::keys::ops::revoke_under;
use crate::store::StoreError;
use crate::store::audit::{self, Actor};
use crate::store::keys as db;
use crate::store::leaks::{self, LeakAction, LeakResponse, NewLeak, Reporter};
use crate::store::revocations;

/// The reason a leaked key's revocation records.
pub const LEAKED: &str = "leaked";
/// The reason of a revocation by the key's holder.
pub const REVOKED_BY_HOLDER: &str = "revoked_by_holder";

/// A genuine key found somewhere.
#[derive(Debug, Clone)]
pub struct Sighting {
    /// The key's claims (its tag verified).
    pub claims: Claims,
    /// Where ('' when none).
    pub url: String,
    /// What kind of place.
    pub source: Option<String>,
}

/// What the transaction did.
#[derive(Debug, Default)]
pub struct Handled {
    /// Per sighting: whether the key is one of ours (a stored key): `true_positive`.
    pub ours: Vec<bool>,
    /// Keys revoked now.
    pub revoked: u32,
}

/// Records `sightings` reported by `reporter` (acting as `actor`) at `now`.
pub fn record(
    tx: &crate::store::db::Db<'_>,
    reporter: Reporter,
    actor: &Actor,
    sightings: &[Sighting],
    now: u64,
) -> Result<Handled, StoreError> {
    let mut handled = Handled::default();
    let mut responses: HashMap<u64, LeakResponse> = HashMap::new();
    // The list version of this report's revocations: one for all, taken at the first.
    let mut batch_version = None;
    for s in sightings {
        let account = s.claims.account_id;
        let Some(row) = db::get(tx, account, s.claims.key_id)? else {
            handled.ours.push(false);
            continue;
        };
        handled.ours.push(true);
        let leak = NewLeak {
            key_id: row.id,
            account_id: account,
            reporter,
            url: &s.url,
            source: s.source.as_deref(),
            at: now,
        };
        if leaks::seen(tx, &leak)? {
            continue;
        }
        let action = match row.status(now) {
            KeyStatus::Revoked => LeakAction::AlreadyRevoked,
            KeyStatus::Expired => LeakAction::Expired,
            KeyStatus::Active | KeyStatus::Rotating => {
                let response = match responses.get(&account) {
                    Some(r) => *r,
                    None => *responses
                        .entry(account)
                        .or_insert(leaks::leak_response(tx, account)?),
                };
                // The holder asked for the revocation itself: "notify only" is about partners.
                if reporter == Reporter::Holder || response == LeakResponse::Revoke {
                    let reason = if reporter == Reporter::Holder {
                        REVOKED_BY_HOLDER
                    } else {
                        LEAKED
                    };
                    let version = match batch_version {
                        Some(v) => v,
                        None => {
                            let v = revocations::next_version(tx, now)?;
                            batch_version = Some(v);
                            v
                        }
                    };
                    revoke_under(
                        tx,
                        (now, version),
                        (account, actor),
                        row.id,
                        reason,
                        row.grace_until,
                        None,
                    )?;
                    handled.revoked += 1;
                    LeakAction::Revoked
                } else {
                    LeakAction::Notified
                }
            }
        };
        leaks::insert(tx, &leak, action)?;
        audit::record(
            tx,
            now,
            Some(account),
            actor,
            &Event::KeyLeaked {
                key_id: row.id,
                reporter: reporter.name(),
                url: s.url.clone(),
                source: s.source.clone(),
                action: action.name(),
            },
        )?;
    }
    Ok(handled)
}
