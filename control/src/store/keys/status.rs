//! A key's status: where it is in its life at a given time, from its row (`KeyRow::status`)
//! or, for lists, in SQL (`status_sql` in the parent module, the same rule).

use super::KeyRow;

/// Where a key is in its life, at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Works, and no revocation is scheduled.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked at the end of a rotation's grace period, which has not ended yet.
    Rotating,
    /// Revoked: the revocation is in force, or its time has come.
    Revoked,
}

impl KeyStatus {
    /// Every status, in the order the API documents them.
    pub const ALL: [Self; 4] = [Self::Active, Self::Expired, Self::Rotating, Self::Revoked];

    /// The API's name: `active`, `expired`, `rotating` or `revoked`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Rotating => "rotating",
            Self::Revoked => "revoked",
        }
    }

    /// The status named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl std::fmt::Display for KeyStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl KeyRow {
    /// The key's status at `now`; `status_sql` is the same rule in SQL.
    pub fn status(&self, now: u64) -> KeyStatus {
        match (self.revoked_at, self.expires_at) {
            // In force is final: a revoke stamped by a clock that ran fast is still revoked once
            // the clock is corrected, not "rotating".
            (Some(_), _) if self.revocation_in_force => KeyStatus::Revoked,
            (Some(at), _) if at <= now => KeyStatus::Revoked,
            (_, Some(exp)) if exp <= now => KeyStatus::Expired,
            (Some(_), _) => KeyStatus::Rotating,
            _ => KeyStatus::Active,
        }
    }
}
