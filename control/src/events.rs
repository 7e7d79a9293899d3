//! The audit trail's vocabulary: every event the service records, typed.
//!
//! Each variant is one `action` of the trail with its target and its details, so an action's
//! name and the shape of its details are written once, here, and a handler cannot misspell
//! either. `store::audit::record` appends one in the transaction of its change.

use serde_json::{Value, json};
use shared::key::KeyId;

/// Something that happened, as the audit trail records it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// `account.created` (by `init`).
    AccountCreated {
        /// The new account.
        account_id: u64,
        /// Its display name.
        name: String,
    },
    /// `user.created` (by `init`).
    UserCreated {
        /// The new user.
        user_id: u64,
        /// Their email.
        email: String,
    },
    /// `user.signed_in`.
    SignedIn {
        /// Who signed in.
        user_id: u64,
        /// The session opened.
        session_id: u64,
    },
    /// `user.sign_in_failed`: a wrong password for a known user.
    SignInFailed {
        /// Whose account was tried.
        user_id: u64,
        /// The browser held a device cookie for this email.
        known_device: bool,
    },
    /// `user.signed_out`.
    SignedOut,
    /// `user.password_check_failed`: a signed-in user was asked for their password again (to
    /// create a management token) and gave a wrong one.
    PasswordCheckFailed {
        /// The user.
        user_id: u64,
        /// What the password was asked for (`management_token.create`).
        purpose: &'static str,
    },
    /// `user.sessions_ended`: sessions of a user ended before their time, other than by signing
    /// out of them.
    SessionsEnded {
        /// Whose sessions.
        user_id: u64,
        /// Which, oldest first.
        session_ids: Vec<u64>,
        /// Why.
        reason: SessionsEndedBy,
    },
    /// `user.password_changed`: the user changed their password, which ended their other
    /// sessions.
    PasswordChanged {
        /// Whose password.
        user_id: u64,
        /// The sessions it ended, oldest first.
        session_ids: Vec<u64>,
    },
    /// `user.password_change_failed`: a password change gave a wrong current password.
    PasswordChangeFailed {
        /// Whose password.
        user_id: u64,
    },
    /// `user.password_reset`: an operator set a new password (`control reset-password`), which
    /// ended every session of the user.
    PasswordReset {
        /// Whose password.
        user_id: u64,
        /// The sessions it ended, oldest first.
        session_ids: Vec<u64>,
    },
    /// `management_token.created`.
    TokenCreated {
        /// The token's id.
        token_id: u64,
        /// Its name (absent for `init`'s first token).
        name: Option<String>,
        /// Its non-secret hint.
        hint: String,
        /// What it may do: `scopes`, `key_grant`, `expires_at` (absent for tokens from before).
        grant: Option<Value>,
    },
    /// `management_token.used` (at most once an hour per token).
    TokenUsed {
        /// The token's id.
        token_id: u64,
        /// The method of the call that used it.
        method: String,
        /// Its route (`/v1/keys/{id}`).
        path: String,
    },
    /// `management_token.revoked`.
    TokenRevoked {
        /// The token's id.
        token_id: u64,
        /// Its non-secret hint.
        hint: String,
    },
    /// `key.created`.
    KeyCreated {
        /// The new key.
        key_id: KeyId,
        /// The key's settings, as the API shows them.
        settings: Value,
    },
    /// `key.updated`.
    KeyUpdated {
        /// The key.
        key_id: KeyId,
        /// Name, description and rate limit before.
        before: Value,
        /// The same after.
        after: Value,
        /// The new policy version, if the rate limit changed.
        policy_version: Option<u64>,
    },
    /// `key.revoked`.
    KeyRevoked {
        /// The key.
        key_id: KeyId,
        /// Why.
        reason: String,
        /// Every shard of this list version or newer carries the revocation.
        list_version: u64,
        /// Set when a rotation of the key's successor ended its grace period early.
        grace_ended: Option<GraceEnded>,
    },
    /// `key.replaced`: a key that works nowhere (its signing key was retired) got a replacement
    /// with its settings; it stays revoked.
    KeyReplaced {
        /// The old key.
        key_id: KeyId,
        /// Its replacement.
        new_key_id: KeyId,
        /// Why the old key works nowhere (`signing_key_retired`).
        reason: &'static str,
    },
    /// `signing_key.retired`: the operator retired a signing key (`control keyring retire`);
    /// one event per account that had working keys signed by it, which were revoked.
    SigningKeyRetired {
        /// The account.
        account_id: u64,
        /// The retired kid.
        kid: u8,
        /// `compromised` or `scheduled`.
        reason: &'static str,
        /// The account's keys it revoked.
        key_ids: Vec<KeyId>,
    },
    /// `key.leaked`: a partner found the key in public, or its holder revoked it.
    KeyLeaked {
        /// The key.
        key_id: KeyId,
        /// `github`, `gitlab` or `holder`.
        reporter: &'static str,
        /// Where it was found, as reported ('' when none).
        url: String,
        /// What kind of place, as reported.
        source: Option<String>,
        /// What was done: `revoked`, `notified`, `already_revoked`, `expired`.
        action: &'static str,
    },
    /// `account.leak_response_changed`.
    LeakResponseChanged {
        /// The account.
        account_id: u64,
        /// `revoke` or `notify`.
        before: &'static str,
        /// The same, now.
        after: &'static str,
    },
    /// `key.rotated`.
    KeyRotated {
        /// The old key.
        key_id: KeyId,
        /// Its successor.
        new_key_id: KeyId,
        /// When the old key stops working.
        grace_until: u64,
        /// Once the grace ends, every shard of this version or newer carries the revocation.
        list_version: u64,
        /// The rate-limit budget both keys spend.
        rate_limit_budget: KeyId,
    },
    /// `key.verified`: the verify endpoint answered about the caller's own key.
    KeyVerified {
        /// The key.
        key_id: KeyId,
        /// The verdict.
        valid: bool,
        /// The status the edge would answer with when refusing.
        status: Option<u16>,
    },
    /// `key.verified_by_other_account`: another account presented this key to the verify
    /// endpoint (recorded in the owner's trail).
    KeyVerifiedByOtherAccount {
        /// The key.
        key_id: KeyId,
        /// Who presented it.
        caller_account_id: u64,
    },
}

/// Why sessions ended early (`user.sessions_ended`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionsEndedBy {
    /// `ended_by_user`: the user ended this one session from another (or from itself).
    User,
    /// `sign_out_everywhere`: the user ended every session but the one they used.
    SignOutEverywhere,
    /// `session_cap`: a sign-in past the per-user cap ended the oldest.
    Cap,
}

impl SessionsEndedBy {
    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            Self::User => "ended_by_user",
            Self::SignOutEverywhere => "sign_out_everywhere",
            Self::Cap => "session_cap",
        }
    }
}

/// A grace period that a later rotation ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraceEnded {
    /// The key whose rotation ended it.
    pub by_rotation_of: KeyId,
    /// When the grace would have ended.
    pub was_until: Option<u64>,
}

impl Event {
    /// The stored `action`.
    pub fn action(&self) -> &'static str {
        match self {
            Self::AccountCreated { .. } => "account.created",
            Self::UserCreated { .. } => "user.created",
            Self::SignedIn { .. } => "user.signed_in",
            Self::SignInFailed { .. } => "user.sign_in_failed",
            Self::SignedOut => "user.signed_out",
            Self::PasswordCheckFailed { .. } => "user.password_check_failed",
            Self::SessionsEnded { .. } => "user.sessions_ended",
            Self::PasswordChanged { .. } => "user.password_changed",
            Self::PasswordChangeFailed { .. } => "user.password_change_failed",
            Self::PasswordReset { .. } => "user.password_reset",
            Self::TokenCreated { .. } => "management_token.created",
            Self::TokenUsed { .. } => "management_token.used",
            Self::TokenRevoked { .. } => "management_token.revoked",
            Self::KeyCreated { .. } => "key.created",
            Self::KeyUpdated { .. } => "key.updated",
            Self::KeyRevoked { .. } => "key.revoked",
            Self::KeyRotated { .. } => "key.rotated",
            Self::KeyReplaced { .. } => "key.replaced",
            Self::SigningKeyRetired { .. } => "signing_key.retired",
            Self::KeyLeaked { .. } => "key.leaked",
            Self::LeakResponseChanged { .. } => "account.leak_response_changed",
            Self::KeyVerified { .. } => "key.verified",
            Self::KeyVerifiedByOtherAccount { .. } => "key.verified_by_other_account",
        }
    }

    /// The stored `target`: the id of what it happened to.
    pub fn target(&self) -> Option<String> {
        match self {
            Self::AccountCreated { account_id, .. }
            | Self::LeakResponseChanged { account_id, .. }
            | Self::SigningKeyRetired { account_id, .. } => Some(account_id.to_string()),
            Self::UserCreated { user_id, .. }
            | Self::SignedIn { user_id, .. }
            | Self::SignInFailed { user_id, .. }
            | Self::SessionsEnded { user_id, .. }
            | Self::PasswordChanged { user_id, .. }
            | Self::PasswordChangeFailed { user_id }
            | Self::PasswordReset { user_id, .. }
            | Self::PasswordCheckFailed { user_id, .. } => Some(user_id.to_string()),
            Self::SignedOut => None,
            Self::TokenCreated { token_id, .. }
            | Self::TokenUsed { token_id, .. }
            | Self::TokenRevoked { token_id, .. } => Some(token_id.to_string()),
            Self::KeyCreated { key_id, .. }
            | Self::KeyUpdated { key_id, .. }
            | Self::KeyRevoked { key_id, .. }
            | Self::KeyRotated { key_id, .. }
            | Self::KeyReplaced { key_id, .. }
            | Self::KeyLeaked { key_id, .. }
            | Self::KeyVerified { key_id, .. }
            | Self::KeyVerifiedByOtherAccount { key_id, .. } => Some(key_id.to_string()),
        }
    }

    /// The stored `details`.
    pub fn details(&self) -> Value {
        match self {
            Self::AccountCreated { name, .. } => json!({ "name": name }),
            Self::UserCreated { email, .. } => json!({ "email": email }),
            Self::SignedOut | Self::PasswordChangeFailed { .. } => {
                json!({})
            }
            Self::SignedIn { session_id, .. } => json!({ "session_id": session_id }),
            Self::SessionsEnded {
                session_ids,
                reason,
                ..
            } => json!({ "session_ids": session_ids, "reason": reason.name() }),
            Self::PasswordChanged { session_ids, .. } | Self::PasswordReset { session_ids, .. } => {
                json!({ "sessions_ended": session_ids })
            }
            Self::TokenUsed { method, path, .. } => json!({ "method": method, "path": path }),
            Self::SignInFailed { known_device, .. } => json!({ "known_device": known_device }),
            Self::PasswordCheckFailed { purpose, .. } => json!({ "purpose": purpose }),
            Self::TokenCreated {
                name, hint, grant, ..
            } => {
                let mut details = match name {
                    Some(name) => json!({ "name": name, "hint": hint }),
                    None => json!({ "hint": hint }),
                };
                if let (Some(Value::Object(grant)), Some(out)) = (grant, details.as_object_mut()) {
                    out.extend(grant.clone());
                }
                details
            }
            Self::TokenRevoked { hint, .. } => json!({ "hint": hint }),
            Self::KeyCreated { settings, .. } => settings.clone(),
            Self::KeyUpdated {
                before,
                after,
                policy_version,
                ..
            } => {
                let mut details = json!({ "before": before, "after": after });
                if let Some(version) = policy_version {
                    details["policy_version"] = json!(version);
                }
                details
            }
            Self::KeyRevoked {
                reason,
                list_version,
                grace_ended,
                ..
            } => {
                let mut details = json!({ "reason": reason, "list_version": list_version });
                if let Some(ended) = grace_ended {
                    details["grace_ended_by_rotation_of"] = json!(ended.by_rotation_of.to_string());
                    details["grace_was_until"] = json!(ended.was_until);
                }
                details
            }
            Self::KeyRotated {
                new_key_id,
                grace_until,
                list_version,
                rate_limit_budget,
                ..
            } => json!({
                "new_key_id": new_key_id.to_string(),
                "grace_until": grace_until,
                "list_version": list_version,
                "rate_limit_budget": rate_limit_budget.to_string(),
            }),
            Self::KeyVerified { valid, status, .. } => json!({ "valid": valid, "status": status }),
            Self::KeyReplaced {
                new_key_id, reason, ..
            } => json!({ "new_key_id": new_key_id.to_string(), "reason": reason }),
            Self::SigningKeyRetired {
                kid,
                reason,
                key_ids,
                ..
            } => json!({
                "kid": kid,
                "reason": reason,
                "key_ids": key_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "what_to_do": "these keys no longer work: rotate each one to create its \
                               replacement, or create new keys",
            }),
            Self::KeyLeaked {
                reporter,
                url,
                source,
                action,
                ..
            } => json!({ "reporter": reporter, "url": url, "source": source, "action": action }),
            Self::LeakResponseChanged { before, after, .. } => {
                json!({ "before": before, "after": after })
            }
            Self::KeyVerifiedByOtherAccount {
                caller_account_id, ..
            } => json!({ "caller_account_id": caller_account_id }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_keep_the_shapes_stored_before_events_were_typed() {
        let id = KeyId([0xab; 16]);
        let cases = [
            (
                Event::TokenCreated {
                    token_id: 3,
                    name: None,
                    hint: "lnxm_…abcd".into(),
                    grant: None,
                },
                "management_token.created",
                Some("3"),
                json!({ "hint": "lnxm_…abcd" }),
            ),
            (
                Event::KeyRevoked {
                    key_id: id,
                    reason: "rotated".into(),
                    list_version: 7,
                    grace_ended: Some(GraceEnded {
                        by_rotation_of: KeyId([1; 16]),
                        was_until: None,
                    }),
                },
                "key.revoked",
                Some("abababababababababababababababab"),
                json!({
                    "reason": "rotated",
                    "list_version": 7,
                    "grace_ended_by_rotation_of": "01010101010101010101010101010101",
                    "grace_was_until": null,
                }),
            ),
            (
                Event::KeyUpdated {
                    key_id: id,
                    before: json!({ "name": "a" }),
                    after: json!({ "name": "b" }),
                    policy_version: None,
                },
                "key.updated",
                Some("abababababababababababababababab"),
                json!({ "before": { "name": "a" }, "after": { "name": "b" } }),
            ),
            (Event::SignedOut, "user.signed_out", None, json!({})),
        ];
        for (event, action, target, details) in cases {
            assert_eq!(event.action(), action);
            assert_eq!(event.target().as_deref(), target);
            assert_eq!(event.details(), details, "{action}");
        }
    }
}
