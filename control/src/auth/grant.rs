//! What a management token may do: the catalog of admin scopes ([`AdminScope`], defined here
//! once), the access each route asks for ([`Access`], named in the one table of operations,
//! `routes::operations`), and the refusals when a token lacks it.
//!
//! A dashboard session may do everything its user may. A token may call a route only if it
//! holds the route's scope; it can never create or revoke tokens (those routes are
//! [`Access::Session`]), and every key it creates, rotates, changes or revokes must lie within
//! its key grant (`Caller::key_grant`, a `shared::scope::ScopeSet`): a token whose grant is Read
//! Only cannot mint a Full Access key, nor rotate one to obtain a fresh secret.

use axum::http::{HeaderValue, StatusCode, header};
use shared::scope::{Permission, ScopeSet};

use crate::error::AppError;

/// One admin permission a management token can hold. The bits are stored in
/// `management_tokens.scopes`: a scope's bit must never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminScope {
    /// `GET /v1/account`: the account, its plan and its keys in use.
    AccountRead,
    /// List and read keys.
    KeysRead,
    /// Create, change, rotate and revoke keys, within the token's key grant.
    KeysWrite,
    /// `POST /v1/keys/verify`: check a key.
    KeysVerify,
    /// Read usage and activity.
    UsageRead,
    /// Read the audit trail.
    AuditRead,
    /// List the account's management tokens (never create or revoke them).
    TokensRead,
}

impl AdminScope {
    /// The catalog, in the order the API and the dashboard show it.
    pub const ALL: [Self; 7] = [
        Self::AccountRead,
        Self::KeysRead,
        Self::KeysWrite,
        Self::KeysVerify,
        Self::UsageRead,
        Self::AuditRead,
        Self::TokensRead,
    ];

    /// The stored bit. Never change one.
    pub const fn bit(self) -> u32 {
        match self {
            Self::AccountRead => 0,
            Self::KeysRead => 1,
            Self::KeysWrite => 2,
            Self::KeysVerify => 3,
            Self::UsageRead => 4,
            Self::AuditRead => 5,
            Self::TokensRead => 6,
        }
    }

    /// Its name in the API.
    pub const fn name(self) -> &'static str {
        match self {
            Self::AccountRead => "account:read",
            Self::KeysRead => "keys:read",
            Self::KeysWrite => "keys:write",
            Self::KeysVerify => "keys:verify",
            Self::UsageRead => "usage:read",
            Self::AuditRead => "audit:read",
            Self::TokensRead => "tokens:read",
        }
    }

    /// What it allows, in words (the dashboard's checkboxes, the OpenAPI document).
    pub const fn description(self) -> &'static str {
        match self {
            Self::AccountRead => "Read the account, its plan and its keys in use",
            Self::KeysRead => "List and read API keys",
            Self::KeysWrite => {
                "Create, change, rotate and revoke API keys within the token's key grant"
            }
            Self::KeysVerify => "Check whether an API key is valid",
            Self::UsageRead => "Read usage and activity",
            Self::AuditRead => "Read the audit trail",
            Self::TokensRead => "List management tokens",
        }
    }

    /// The scope named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A set of admin scopes, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdminScopes(u32);

impl AdminScopes {
    /// Every scope of the catalog (tokens made before scopes existed, and `init`'s).
    pub const ALL: Self = {
        let mut bits = 0;
        let mut i = 0;
        while i < AdminScope::ALL.len() {
            bits |= 1 << AdminScope::ALL[i].bit();
            i += 1;
        }
        Self(bits)
    };

    /// The stored bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Reads stored bits; `None` if a bit names no scope.
    pub const fn from_bits(bits: u32) -> Option<Self> {
        if bits & !Self::ALL.0 != 0 {
            None
        } else {
            Some(Self(bits))
        }
    }

    /// Whether the set holds `scope`.
    pub const fn contains(self, scope: AdminScope) -> bool {
        self.0 & (1 << scope.bit()) != 0
    }

    /// The scopes held, in catalog order.
    pub fn iter(self) -> impl Iterator<Item = AdminScope> {
        AdminScope::ALL
            .into_iter()
            .filter(move |s| self.contains(*s))
    }

    /// Parses scope names; an unknown name is the error. Empty is allowed here (the caller
    /// refuses it).
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, &'a str> {
        names.into_iter().try_fold(Self(0), |set, name| {
            AdminScope::from_name(name)
                .map(|s| Self(set.0 | 1 << s.bit()))
                .ok_or(name)
        })
    }

    /// The names held.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(AdminScope::name).collect()
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A session, or a token holding this scope.
    Scope(AdminScope),
    /// A dashboard session only: creating and revoking tokens.
    Session,
    /// Any caller that authenticated (signing out; the dashboard's page shells).
    Any,
}

/// The path of the operation a request was routed to, as the table of operations names it
/// (`/v1/keys/{id}`): what the audit trail records of a token's use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePath(pub &'static str);

/// The key grant of a token: the API scopes the keys it manages may carry at most.
pub fn grant_name(grant: ScopeSet) -> &'static str {
    grant.permission().name()
}

/// 403 `insufficient_scope` (RFC 6750) naming the scope the token lacks.
pub fn insufficient_scope(scope: AdminScope) -> AppError {
    let challenge = format!(
        r#"Bearer realm="lynxo-control", error="insufficient_scope", scope="{}""#,
        scope.name()
    );
    let mut e = AppError::new(
        StatusCode::FORBIDDEN,
        "insufficient_scope",
        "The management token lacks a scope this call needs",
    )
    .with_detail(format!(
        "this call needs the scope `{}`; create a token that holds it",
        scope.name()
    ))
    .with_field("required_scope", scope.name());
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        e = e.with_header(header::WWW_AUTHENTICATE, value);
    }
    e
}

/// 403 `session_required`: token management needs a person at the dashboard.
pub fn session_required() -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        "session_required",
        "Sign in to the dashboard to manage tokens",
    )
    .with_detail("a management token cannot create or revoke management tokens")
}

/// 403 `key_grant_exceeded`: the key would carry more than the token may grant.
pub fn key_grant_exceeded(grant: ScopeSet) -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        "key_grant_exceeded",
        "The key is beyond what this management token may grant",
    )
    .with_detail(format!(
        "this token manages only keys whose scopes lie within its key grant ({}); Full Access \
         keys need a Full Access grant",
        grant_name(grant)
    ))
    .with_field(
        "key_grant",
        match grant.permission() {
            Permission::Custom(set) => set.iter().map(|s| s.name()).collect::<Vec<_>>(),
            level => vec![level.name()],
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_is_consistent() {
        let mut bits = 0_u32;
        for scope in AdminScope::ALL {
            assert_eq!(bits & 1 << scope.bit(), 0, "{scope:?} reuses a bit");
            bits |= 1 << scope.bit();
            assert_eq!(AdminScope::from_name(scope.name()), Some(scope));
            assert!(!scope.description().is_empty());
        }
        assert_eq!(AdminScopes::ALL.bits(), bits);
        assert_eq!(AdminScopes::from_bits(bits), Some(AdminScopes::ALL));
        assert_eq!(AdminScopes::from_bits(1 << 20), None);
        assert_eq!(AdminScopes::from_names(["keys:read", "nope"]), Err("nope"));
        let read = AdminScopes::from_names(["keys:read", "audit:read"]).unwrap();
        assert!(read.contains(AdminScope::KeysRead) && !read.contains(AdminScope::KeysWrite));
        assert_eq!(read.names(), ["keys:read", "audit:read"]);
    }
}
