//! Signing-key rollover: the keyring texts the operator installs, in order, and the retirement
//! of a kid (`control keyring ...`, `docs/operations.md` "Signing-key rollover").
//!
//! The one idea: a kid is *known* (in a keyring) before anything is *signed* with it, and a kid
//! that is *retired* is known nowhere again. The keyring itself lives outside the database (the
//! edge holds the same one); the database records only which kids are retired, when and why,
//! and revokes the keys a retirement kills so their owners are told, on the dashboard and in
//! the API, and the edge's revocation list agrees with its keyring.

use std::collections::BTreeMap;

use shared::mac::{Secret, parse_config};

use crate::auth::random_bytes;
use crate::events::Event;
use crate::keys::ops::revoke_now;
use crate::store::audit::{self, Actor};
use crate::store::signing::{self as db, RetireReason, RetiredKid};
use crate::store::{Store, StoreError};

/// Longest operator note kept with a retirement.
pub const MAX_NOTE_CHARS: usize = 500;

/// Why a keyring command refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// The keyring text does not parse.
    #[error("the keyring does not parse: {0}")]
    Keyring(#[from] shared::mac::KeyringError),
    /// Every kid up to 255 is taken (in the ring or retired).
    #[error("no free kid: every kid up to 255 is in the keyring or retired")]
    NoFreeKid,
    /// The kid is not in the keyring.
    #[error("kid {0} is not in the keyring")]
    NotInRing(u8),
    /// The kid is retired and can never be used again.
    #[error("kid {0} is retired: it can never sign or verify again")]
    Retired(u8),
    /// Retiring the kid that signs would leave nothing to sign with.
    #[error(
        "kid {0} is the active kid: add a new kid and activate it first \
         (`control keyring add --activate`)"
    )]
    RetireActive(u8),
    /// The note is too long or holds characters people cannot see.
    #[error("the note must be at most {MAX_NOTE_CHARS} characters of visible text")]
    BadNote,
    /// No randomness.
    #[error("reading random bytes: {0}")]
    Random(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A keyring as text: the active kid and the secrets by kid.
#[derive(Debug, Clone)]
pub struct RingText {
    /// The kid that signs.
    pub active: u8,
    /// Secrets by kid, ascending.
    pub secrets: BTreeMap<u8, Secret>,
}

impl RingText {
    /// Parses `active=KID;KID:HEX,...` and checks it builds a keyring.
    pub fn parse(text: &str) -> Result<Self, SigningError> {
        shared::mac::Keyring::from_config(text)?;
        let (active, secrets) = parse_config(text)?;
        Ok(Self {
            active,
            secrets: secrets.into_iter().collect(),
        })
    }

    /// The text form, `active=KID;KID:HEX,...`, kids ascending.
    pub fn render(&self) -> String {
        let entries: Vec<String> = self
            .secrets
            .iter()
            .map(|(kid, s)| format!("{kid}:{}", hex::encode(s.expose())))
            .collect();
        format!("active={};{}", self.active, entries.join(","))
    }

    /// Adds a fresh random secret under the next kid never used: above every kid of the ring
    /// and every retired kid (a retired kid's number is never given a new secret). Returns it.
    pub fn add(&mut self, retired: &[u8]) -> Result<u8, SigningError> {
        let highest = self
            .secrets
            .keys()
            .chain(retired)
            .copied()
            .max()
            .unwrap_or(0);
        let kid = highest.checked_add(1).ok_or(SigningError::NoFreeKid)?;
        let bytes = random_bytes().map_err(|e| SigningError::Random(e.to_string()))?;
        self.secrets.insert(kid, Secret::new(bytes.to_vec())?);
        Ok(kid)
    }

    /// Makes `kid`, already in the ring and not retired, the one that signs.
    pub fn activate(&mut self, kid: u8, retired: &[u8]) -> Result<(), SigningError> {
        if retired.contains(&kid) {
            return Err(SigningError::Retired(kid));
        }
        if !self.secrets.contains_key(&kid) {
            return Err(SigningError::NotInRing(kid));
        }
        self.active = kid;
        Ok(())
    }

    /// Drops `kid` (not the active one). Dropping a kid that is not there changes nothing.
    pub fn remove(&mut self, kid: u8) -> Result<(), SigningError> {
        if kid == self.active {
            return Err(SigningError::RetireActive(kid));
        }
        self.secrets.remove(&kid);
        Ok(())
    }
}

/// What `retire` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retirement {
    /// The retirement as recorded (by this call or an earlier one).
    pub record: RetiredKid,
    /// Whether this call retired it (false: it was retired before and nothing changed).
    pub changed: bool,
    /// The accounts told (one `signing_key.retired` event each).
    pub accounts: u64,
}

/// Retires `kid` at `now`, unless it is `active` (the kid the control plane signs with): every
/// key it signed that still works is revoked (reason `signing_key_retired`, published like any
/// revocation), each affected account gets one `signing_key.retired` audit event naming its
/// keys, and the kid is recorded as retired; all in one transaction. Retiring a retired kid
/// changes nothing and answers the first retirement.
pub fn retire(
    store: &Store,
    active: u8,
    kid: u8,
    reason: RetireReason,
    note: Option<String>,
    now: u64,
) -> Result<Retirement, SigningError> {
    if kid == active {
        return Err(SigningError::RetireActive(kid));
    }
    if let Some(n) = &note {
        if n.chars().count() > MAX_NOTE_CHARS || crate::text::check(n).is_err() {
            return Err(SigningError::BadNote);
        }
    }
    let actor = Actor {
        actor: "cli".into(),
        source: None,
    };
    store
        .write_blocking(move |tx| {
            if let Some(record) = db::get_retired(tx, kid)? {
                return Ok(Retirement {
                    record,
                    changed: false,
                    accounts: 0,
                });
            }
            let keys = db::working_keys_of(tx, kid, now)?;
            let mut by_account: BTreeMap<u64, Vec<_>> = BTreeMap::new();
            for key in &keys {
                revoke_now(
                    tx,
                    now,
                    (key.account_id, &actor),
                    key.id,
                    db::REVOKE_REASON,
                    key.grace_until,
                    None,
                )?;
                by_account.entry(key.account_id).or_default().push(key.id);
            }
            for (account, key_ids) in &by_account {
                audit::record(
                    tx,
                    now,
                    Some(*account),
                    &actor,
                    &Event::SigningKeyRetired {
                        account_id: *account,
                        kid,
                        reason: reason.name(),
                        key_ids: key_ids.clone(),
                    },
                )?;
            }
            let record = RetiredKid {
                kid,
                retired_at: now,
                reason,
                note,
                keys_revoked: keys.len() as u64,
            };
            db::insert_retired(tx, &record)?;
            Ok::<_, StoreError>(Retirement {
                record,
                changed: true,
                accounts: by_account.len() as u64,
            })
        })
        .map_err(SigningError::Store)
}

/// Why `serve` must not start with a keyring.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyringRefusal {
    /// The keyring holds a retired kid.
    #[error(
        "LYNXO_KEYRING holds kid {kid}, which was retired ({reason}) at {retired_at}: a retired \
         kid never signs or verifies again; remove it from the keyring (`control keyring \
         retire {kid}` prints the keyring without it)"
    )]
    HoldsRetired {
        /// The kid.
        kid: u8,
        /// Its retirement's reason.
        reason: &'static str,
        /// Unix seconds.
        retired_at: u64,
    },
    /// Working keys were signed by a kid the keyring lacks and that was never retired.
    #[error(
        "{keys} working keys were signed by kid {kid}, which LYNXO_KEYRING does not hold: put \
         the kid back, or retire it (`control keyring retire {kid} --reason ...`) so the \
         owners of those keys are told"
    )]
    MissingKid {
        /// The kid.
        kid: u8,
        /// Its working keys.
        keys: u64,
    },
}

/// Checks the keyring `serve` is given against the database at `now`: it holds no retired
/// kid, and every kid that signed a working key is in it or retired.
pub fn check_keyring(
    conn: &crate::store::db::Db<'_>,
    ring: &shared::mac::Keyring,
    now: u64,
) -> Result<Result<(), KeyringRefusal>, StoreError> {
    let retired = db::retired(conn)?;
    if let Some(r) = retired.iter().find(|r| ring.contains(r.kid)) {
        return Ok(Err(KeyringRefusal::HoldsRetired {
            kid: r.kid,
            reason: r.reason.name(),
            retired_at: r.retired_at,
        }));
    }
    for (kid, keys) in db::working_by_kid(conn, now)? {
        if !ring.contains(kid) && !retired.iter().any(|r| r.kid == kid) {
            return Ok(Err(KeyringRefusal::MissingKid { kid, keys }));
        }
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "active=1;1:1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn add_takes_a_kid_above_the_ring_and_the_retired_ones() {
        let mut ring = RingText::parse(ONE).unwrap();
        assert_eq!(ring.add(&[]).unwrap(), 2);
        assert_eq!(ring.add(&[7]).unwrap(), 8);
        assert_eq!(ring.active, 1);
        let text = ring.render();
        assert!(text.starts_with("active=1;1:1111"), "{text}");
        let parsed = shared::mac::Keyring::from_config(&text).unwrap();
        assert_eq!(parsed.kids().collect::<Vec<_>>(), [1, 2, 8]);
        assert_ne!(
            ring.secrets[&2].expose(),
            ring.secrets[&8].expose(),
            "each kid gets its own secret"
        );
    }

    #[test]
    fn activate_and_remove_refuse_what_would_break_the_ring() {
        let mut ring = RingText::parse(ONE).unwrap();
        let two = ring.add(&[]).unwrap();
        assert!(matches!(
            ring.activate(9, &[]),
            Err(SigningError::NotInRing(9))
        ));
        assert!(matches!(
            ring.activate(two, &[two]),
            Err(SigningError::Retired(2))
        ));
        assert!(matches!(ring.remove(1), Err(SigningError::RetireActive(1))));
        ring.activate(two, &[]).unwrap();
        ring.remove(1).unwrap();
        ring.remove(1).unwrap();
        let parsed = shared::mac::Keyring::from_config(&ring.render()).unwrap();
        assert_eq!(
            (parsed.active_kid(), parsed.kids().collect::<Vec<_>>()),
            (2, vec![2])
        );
    }

    #[test]
    fn no_kid_past_255() {
        let hex = "22".repeat(32);
        let mut ring = RingText::parse(&format!("active=255;255:{hex}")).unwrap();
        assert!(matches!(ring.add(&[]), Err(SigningError::NoFreeKid)));
    }
}
