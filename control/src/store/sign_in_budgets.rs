//! The sign-in attempt budgets of [`crate::auth::limit::StoreLedger`], in the database, so
//! every replica on one PostgreSQL database draws on the same budgets (docs/sign-in.md).
//!
//! `sign_in_budgets` holds one row per budget entry, named by its opaque 16-byte key, never an
//! email; `sign_in_reservations` one row per attempt admitted and not yet settled, with the
//! time after which any replica may settle it as a failure (its replica died mid-hash);
//! `sign_in_ledger` counts the entries, so checking the table's bound costs one row, not a
//! count. The rules themselves are `auth::limit`'s, run on the rows a step reads: each step is
//! one write transaction in `Lane::SignIn` (`Store::write_apart`), serialised with every
//! replica's ledger steps by that lane's lock, and apart from the store's other writes.

use std::collections::HashMap;

use super::db::{Db, OptionalExtension as _, params};
use super::{Result, to_i64};
use crate::auth::limit::{
    self, Attempt, Budget, BudgetKey, Census, Entries, Entry, Outcome, RESERVATION_TTL, Refusal,
    ReservationId,
};

/// Expired reservations settled by one reservation at most: a replica holds at most its
/// hashing slots' worth, so a few steps clear what a dead one left.
const SWEEP: usize = 16;

/// A budget as a reservation row keeps it: key, limit (big-endian), cleared-by-success flag.
const BUDGET_BYTES: usize = 16 + 4 + 1;

/// Admits `attempt` at `now` and counts it (one reservation row, valid for
/// [`RESERVATION_TTL`]), or refuses it and counts nothing. First settles, as failures, up to
/// [`SWEEP`] reservations whose time is up. At most `capacity` entries are kept: when a new
/// one has no room, room is made as `MemoryLedger` makes it.
pub fn reserve(
    tx: &Db<'_>,
    attempt: &Attempt,
    now: u64,
    capacity: usize,
) -> Result<Result<ReservationId, Refusal>> {
    sweep(tx, now)?;
    let read = load(tx, attempt)?;
    let mut entries = read.clone();
    if let Err(refusal) = limit::admit(&mut entries, attempt, now) {
        save(tx, &read, &entries)?;
        return Ok(Err(refusal));
    }
    let new = limit::new_entries(&entries, attempt);
    if new > 0 {
        let mut held = count(tx)?;
        if held + new > capacity {
            make_room(tx, now, capacity)?;
            held = count(tx)?;
        }
        if held + new > capacity {
            save(tx, &read, &entries)?;
            return Ok(Err(Refusal::Busy));
        }
    }
    limit::hold(&mut entries, attempt, now);
    save(tx, &read, &entries)?;
    let id: u64 = tx.query_row(
        "INSERT INTO sign_in_reservations (email, budgets, expires_at) VALUES (?1, ?2, ?3) \
         RETURNING id",
        params![
            attempt.email.0,
            encode(&attempt.budgets),
            to_i64(now.saturating_add(RESERVATION_TTL))
        ],
        |r| r.get(0),
    )?;
    Ok(Ok(ReservationId(id)))
}

/// Settles the reservation `id` of `attempt`. A reservation already settled (its time was up
/// and another step counted it as a failure) settles nothing again.
pub fn settle(
    tx: &Db<'_>,
    attempt: &Attempt,
    id: ReservationId,
    outcome: Outcome,
    now: u64,
) -> Result<()> {
    let gone = tx.execute(
        "DELETE FROM sign_in_reservations WHERE id = ?1 AND email = ?2",
        params![id.0, attempt.email.0],
    )?;
    if gone == 1 {
        release(tx, attempt, outcome, now)?;
    }
    Ok(())
}

/// Entries kept and attempts in flight.
pub fn census(db: &Db<'_>) -> Result<Census> {
    let entries = count(db)? as u64;
    let in_flight: u64 = db.query_row("SELECT count(*) FROM sign_in_reservations", [], |r| {
        r.get(0)
    })?;
    Ok(Census { entries, in_flight })
}

fn release(tx: &Db<'_>, attempt: &Attempt, outcome: Outcome, now: u64) -> Result<()> {
    let read = load(tx, attempt)?;
    let mut entries = read.clone();
    limit::release(&mut entries, attempt, outcome, now);
    save(tx, &read, &entries)
}

/// Settles as failures, at `now`, up to [`SWEEP`] reservations whose time is up: losing an
/// answer never refunds a guess, and the email's in-flight place is given back.
fn sweep(tx: &Db<'_>, now: u64) -> Result<()> {
    let expired: Vec<(i64, Vec<u8>, Vec<u8>)> = tx
        .prepare_cached(
            "SELECT id, email, budgets FROM sign_in_reservations WHERE expires_at <= ?1 \
             ORDER BY expires_at, id LIMIT ?2",
        )?
        .query_map(params![to_i64(now), SWEEP], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<super::db::Result<_>>()?;
    for (id, email, budgets) in expired {
        tx.execute("DELETE FROM sign_in_reservations WHERE id = ?1", [id])?;
        match decode(&email, &budgets) {
            Some(attempt) => release(tx, &attempt, Outcome::Failed, now)?,
            // Only this module writes the rows, and their CHECKs bound the shapes it writes.
            None => tracing::error!(id, "a sign-in reservation row could not be read"),
        }
    }
    Ok(())
}

/// Every entry of `attempt`'s keys that exists.
fn load(tx: &Db<'_>, attempt: &Attempt) -> Result<Entries> {
    let mut entries = HashMap::new();
    let keys = attempt.budgets.iter().map(|b| b.key).chain([attempt.email]);
    for key in keys {
        if entries.contains_key(&key) {
            continue;
        }
        let entry = tx
            .query_row(
                "SELECT start, failures, pending, in_flight, strikes, locked_until \
                 FROM sign_in_budgets WHERE key = ?1",
                [key.0],
                |r| {
                    Ok(Entry {
                        start: r.get(0)?,
                        failures: r.get(1)?,
                        pending: r.get(2)?,
                        in_flight: r.get(3)?,
                        strikes: r.get(4)?,
                        locked_until: r.get(5)?,
                    })
                },
            )
            .optional()?;
        if let Some(entry) = entry {
            entries.insert(key, entry);
        }
    }
    Ok(entries)
}

/// Writes what a step changed: the entries of `after` that `before` lacks or held otherwise.
fn save(tx: &Db<'_>, before: &Entries, after: &Entries) -> Result<()> {
    let mut added = 0_u64;
    for (key, entry) in after {
        let values = params![
            key.0,
            to_i64(entry.start),
            entry.failures,
            entry.pending,
            entry.in_flight,
            entry.strikes,
            to_i64(entry.locked_until),
            to_i64(entry.forget_at())
        ];
        match before.get(key) {
            Some(old) if old == entry => {}
            Some(_) => {
                tx.execute(
                    "UPDATE sign_in_budgets SET start = ?2, failures = ?3, pending = ?4, \
                     in_flight = ?5, strikes = ?6, locked_until = ?7, forget_at = ?8 \
                     WHERE key = ?1",
                    values,
                )?;
            }
            None => {
                tx.execute(
                    "INSERT INTO sign_in_budgets \
                     (key, start, failures, pending, in_flight, strikes, locked_until, forget_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    values,
                )?;
                added += 1;
            }
        }
    }
    if added > 0 {
        tx.execute(
            "UPDATE sign_in_ledger SET entries = entries + ?1 WHERE id = 1",
            [added],
        )?;
    }
    Ok(())
}

/// Entries kept now.
fn count(db: &Db<'_>) -> Result<usize> {
    Ok(
        db.query_row("SELECT entries FROM sign_in_ledger WHERE id = 1", [], |r| {
            r.get(0)
        })?,
    )
}

/// `MemoryLedger::make_room` on the table: forgets expired entries; if that is not enough, the
/// least restrictive eighth (not locked now before locked, then fewer doublings, fewer
/// failures, older: `Entry::weight`'s order). Entries with attempts in flight stay. The count
/// is taken again here (rarely: once per eighth of the capacity of new entries), so the kept
/// one cannot drift for longer than that.
fn make_room(tx: &Db<'_>, now: u64, capacity: usize) -> Result<()> {
    let now = to_i64(now);
    tx.execute(
        "DELETE FROM sign_in_budgets WHERE forget_at <= ?1 AND pending = 0 AND in_flight = 0",
        [now],
    )?;
    let mut held: usize = tx.query_row("SELECT count(*) FROM sign_in_budgets", [], |r| r.get(0))?;
    let target = limit::room_target(capacity);
    if held > target {
        held -= tx.execute(
            "DELETE FROM sign_in_budgets WHERE key IN (SELECT key FROM sign_in_budgets \
             WHERE pending = 0 AND in_flight = 0 \
             ORDER BY locked_until > ?1, strikes, failures, start LIMIT ?2)",
            params![now, held - target],
        )?;
    }
    tx.execute(
        "UPDATE sign_in_ledger SET entries = ?1 WHERE id = 1",
        [held],
    )?;
    Ok(())
}

fn encode(budgets: &[Budget]) -> Vec<u8> {
    let mut out = Vec::with_capacity(budgets.len() * BUDGET_BYTES);
    for b in budgets {
        out.extend_from_slice(&b.key.0);
        out.extend_from_slice(&b.limit.to_be_bytes());
        out.push(u8::from(b.cleared_by_success));
    }
    out
}

fn decode(email: &[u8], budgets: &[u8]) -> Option<Attempt> {
    let key = |b: &[u8]| b.try_into().ok().map(BudgetKey);
    if budgets.len() % BUDGET_BYTES != 0 {
        return None;
    }
    let budgets = budgets
        .chunks_exact(BUDGET_BYTES)
        .map(|c| {
            Some(Budget {
                key: key(&c[..16])?,
                limit: u32::from_be_bytes(c[16..20].try_into().ok()?),
                cleared_by_success: c[20] != 0,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Attempt {
        email: key(email)?,
        budgets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_row_gives_its_attempt_back() {
        let attempt = Attempt {
            email: BudgetKey([1; 16]),
            budgets: vec![
                Budget {
                    key: BudgetKey([1; 16]),
                    limit: 10,
                    cleared_by_success: false,
                },
                Budget {
                    key: BudgetKey([2; 16]),
                    limit: u32::MAX,
                    cleared_by_success: true,
                },
            ],
        };
        let row = encode(&attempt.budgets);
        assert_eq!(row.len(), 2 * BUDGET_BYTES);
        assert_eq!(decode(&[1; 16], &row), Some(attempt));
        assert_eq!(decode(&[1; 15], &row), None);
        assert_eq!(decode(&[1; 16], &row[1..]), None);
    }
}
