//! The closed scope catalog, the permission levels, and the route policy.
//!
//! Every scope the Lynxo API knows is listed here, with the sentence the dashboard shows for
//! it, and every route of the API names the one scope it needs. The edge answers "may these
//! claims call this route?" with [`authorize`]; a route missing from [`ROUTES`] is refused, so a
//! new API route cannot ship without deciding its scope.
//!
//! Scopes are bits of a `u32` in the key's claims. A bit's meaning never changes once a key
//! carries it: new scopes take new bits. Bit 31 is Full Access, which also covers scopes added
//! after the key was issued.

use core::fmt;

/// One permission of the Lynxo API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Scope {
    /// `jobs:read`
    JobsRead,
    /// `jobs:write`
    JobsWrite,
    /// `files:read`
    FilesRead,
    /// `files:write`
    FilesWrite,
    /// `webhooks:read`
    WebhooksRead,
    /// `webhooks:write`
    WebhooksWrite,
    /// `usage:read`
    UsageRead,
    /// `account:read`
    AccountRead,
    /// `account:write`
    AccountWrite,
}

impl Scope {
    /// The catalog, in display order.
    pub const ALL: [Self; 9] = [
        Self::JobsRead,
        Self::JobsWrite,
        Self::FilesRead,
        Self::FilesWrite,
        Self::WebhooksRead,
        Self::WebhooksWrite,
        Self::UsageRead,
        Self::AccountRead,
        Self::AccountWrite,
    ];

    /// The bit this scope occupies in a key's claims. Never reuse or renumber.
    pub const fn bit(self) -> u32 {
        match self {
            Self::JobsRead => 0,
            Self::JobsWrite => 1,
            Self::FilesRead => 2,
            Self::FilesWrite => 3,
            Self::WebhooksRead => 4,
            Self::WebhooksWrite => 5,
            Self::UsageRead => 6,
            Self::AccountRead => 7,
            Self::AccountWrite => 8,
        }
    }

    /// The scope's name as it appears in APIs and `WWW-Authenticate` headers: `jobs:read`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::JobsRead => "jobs:read",
            Self::JobsWrite => "jobs:write",
            Self::FilesRead => "files:read",
            Self::FilesWrite => "files:write",
            Self::WebhooksRead => "webhooks:read",
            Self::WebhooksWrite => "webhooks:write",
            Self::UsageRead => "usage:read",
            Self::AccountRead => "account:read",
            Self::AccountWrite => "account:write",
        }
    }

    /// What the scope allows, in one sentence for the dashboard.
    pub const fn description(self) -> &'static str {
        match self {
            Self::JobsRead => "List jobs and read their status and results.",
            Self::JobsWrite => "Create, cancel and delete jobs.",
            Self::FilesRead => "List and download files.",
            Self::FilesWrite => "Upload and delete files.",
            Self::WebhooksRead => "List webhook endpoints and their deliveries.",
            Self::WebhooksWrite => "Create, change and delete webhook endpoints.",
            Self::UsageRead => "Read the account's API usage and billing meters.",
            Self::AccountRead => "Read the account's profile and settings.",
            Self::AccountWrite => "Change the account's profile and settings.",
        }
    }

    /// The resource group the dashboard shows the scope under: `jobs`, `files`, ...
    pub fn group(self) -> &'static str {
        let name = self.name();
        name.split_once(':').map_or(name, |(group, _)| group)
    }

    /// Whether the scope only reads.
    pub fn is_read(self) -> bool {
        self.name().ends_with(":read")
    }

    /// Parses a scope name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of scopes, or Full Access.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ScopeSet(u32);

impl ScopeSet {
    /// No scope at all: the key can authenticate but call nothing.
    pub const EMPTY: Self = Self(0);
    /// Full Access: every scope, including scopes added after the key was issued.
    pub const FULL_ACCESS: Self = Self(Self::FULL_BIT);

    const FULL_BIT: u32 = 1 << 31;

    const fn known_bits() -> u32 {
        let mut bits = Self::FULL_BIT;
        let mut i = 0;
        while i < Scope::ALL.len() {
            bits |= 1 << Scope::ALL[i].bit();
            i += 1;
        }
        bits
    }

    /// The raw bits, as signed into a key.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Reads raw bits; `None` if a bit names no scope this build knows. Full Access is stored
    /// alone, so that each set has one encoding.
    pub const fn from_bits(bits: u32) -> Option<Self> {
        if bits & !Self::known_bits() != 0 || (bits & Self::FULL_BIT != 0 && bits != Self::FULL_BIT)
        {
            return None;
        }
        Some(Self(bits))
    }

    /// Whether this is Full Access.
    pub const fn is_full_access(self) -> bool {
        self.0 == Self::FULL_BIT
    }

    /// The set plus `scope` (Full Access stays Full Access).
    #[must_use]
    pub const fn with(self, scope: Scope) -> Self {
        if self.is_full_access() {
            self
        } else {
            Self(self.0 | 1 << scope.bit())
        }
    }

    /// Whether the set grants `scope`.
    pub const fn contains(self, scope: Scope) -> bool {
        self.is_full_access() || self.0 & (1 << scope.bit()) != 0
    }

    /// Whether every scope this set grants, `other` grants too. Full Access is within Full
    /// Access only: it holds scopes added later, which no listed set holds.
    pub const fn is_within(self, other: Self) -> bool {
        other.is_full_access() || (!self.is_full_access() && self.0 & !other.0 == 0)
    }

    /// The scopes granted, in catalog order (all of them for Full Access).
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Parses scope names; an unknown name is returned as the error.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, &'a str> {
        names.into_iter().try_fold(Self::EMPTY, |set, name| {
            Scope::from_name(name).map(|s| set.with(s)).ok_or(name)
        })
    }

    /// The permission level that describes this set best.
    pub fn permission(self) -> Permission {
        [
            Permission::FullAccess,
            Permission::ReadWrite,
            Permission::ReadOnly,
        ]
        .into_iter()
        .find(|p| p.scopes() == self)
        .unwrap_or(Permission::Custom(self))
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_full_access() {
            return f.write_str("ScopeSet(full access)");
        }
        f.debug_set().entries(self.iter().map(Scope::name)).finish()
    }
}

/// The permission levels the dashboard offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Every `:read` scope in the catalog at issue time.
    ReadOnly,
    /// Every scope except `account:write`, at issue time.
    ReadWrite,
    /// Every scope, including those added later.
    FullAccess,
    /// Exactly the scopes chosen.
    Custom(ScopeSet),
}

impl Permission {
    /// The scopes a key of this level carries.
    pub fn scopes(self) -> ScopeSet {
        let pick = |keep: fn(Scope) -> bool| {
            Scope::ALL
                .into_iter()
                .filter(|s| keep(*s))
                .fold(ScopeSet::EMPTY, ScopeSet::with)
        };
        match self {
            Self::ReadOnly => pick(Scope::is_read),
            Self::ReadWrite => pick(|s| s != Scope::AccountWrite),
            Self::FullAccess => ScopeSet::FULL_ACCESS,
            Self::Custom(set) => set,
        }
    }

    /// Reads a permission as the API takes it: a level name (`read_only`, `read_write`,
    /// `full_access`), or `custom` with the scope names (at least one). The dashboard and the
    /// keys API both read it here.
    pub fn parse<'a>(
        level: &str,
        scopes: Option<impl IntoIterator<Item = &'a str>>,
    ) -> Result<Self, PermissionError<'a>> {
        match (level, scopes) {
            ("custom", Some(names)) => match ScopeSet::from_names(names) {
                Ok(ScopeSet::EMPTY) => Err(PermissionError::NoScopes),
                Ok(set) => Ok(Self::Custom(set)),
                Err(bad) => Err(PermissionError::UnknownScope(bad)),
            },
            ("custom", None) => Err(PermissionError::MissingScopes),
            (_, Some(_)) => Err(PermissionError::UnexpectedScopes),
            ("read_only", None) => Ok(Self::ReadOnly),
            ("read_write", None) => Ok(Self::ReadWrite),
            ("full_access", None) => Ok(Self::FullAccess),
            (_, None) => Err(PermissionError::UnknownLevel),
        }
    }

    /// The level's API name: `read_only`, `read_write`, `full_access` or `custom`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ReadOnly => "read_only",
            Self::ReadWrite => "read_write",
            Self::FullAccess => "full_access",
            Self::Custom(_) => "custom",
        }
    }
}

/// Why [`Permission::parse`] refused a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PermissionError<'a> {
    /// The level is none of `read_only`, `read_write`, `full_access`, `custom`.
    #[error("permission must be read_only, read_write, full_access or custom")]
    UnknownLevel,
    /// `custom` came without scopes.
    #[error("custom permission needs `scopes`")]
    MissingScopes,
    /// `custom` came with an empty list of scopes.
    #[error("custom permission needs at least one scope")]
    NoScopes,
    /// Scopes came with a level other than `custom`.
    #[error("`scopes` goes only with permission `custom`")]
    UnexpectedScopes,
    /// A scope name is not in the catalog.
    #[error("unknown scope `{0}`")]
    UnknownScope(&'a str),
}

/// An HTTP method the API routes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET` (and `HEAD`, which is routed as `GET`).
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
}

impl Method {
    /// Parses a method name, case-sensitively as HTTP requires; `HEAD` reads like `GET`.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "GET" | "HEAD" => Self::Get,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            _ => return None,
        })
    }

    /// The method's name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// One route of the Lynxo API and the scope it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path pattern: literal segments, and `{name}` for one non-empty segment.
    pub pattern: &'static str,
    /// The scope a key needs to call it.
    pub scope: Scope,
}

const fn route(method: Method, pattern: &'static str, scope: Scope) -> Route {
    Route {
        method,
        pattern,
        scope,
    }
}

/// Every route of the Lynxo API.
pub const ROUTES: &[Route] = {
    use Method::{Delete, Get, Patch, Post};
    use Scope::*;
    &[
        route(Get, "/v1/jobs", JobsRead),
        route(Post, "/v1/jobs", JobsWrite),
        route(Get, "/v1/jobs/{id}", JobsRead),
        route(Delete, "/v1/jobs/{id}", JobsWrite),
        route(Post, "/v1/jobs/{id}/cancel", JobsWrite),
        route(Get, "/v1/jobs/{id}/results", JobsRead),
        route(Get, "/v1/files", FilesRead),
        route(Post, "/v1/files", FilesWrite),
        route(Get, "/v1/files/{id}", FilesRead),
        route(Get, "/v1/files/{id}/content", FilesRead),
        route(Delete, "/v1/files/{id}", FilesWrite),
        route(Get, "/v1/webhooks", WebhooksRead),
        route(Post, "/v1/webhooks", WebhooksWrite),
        route(Get, "/v1/webhooks/{id}", WebhooksRead),
        route(Patch, "/v1/webhooks/{id}", WebhooksWrite),
        route(Delete, "/v1/webhooks/{id}", WebhooksWrite),
        route(Get, "/v1/webhooks/{id}/deliveries", WebhooksRead),
        route(Get, "/v1/usage", UsageRead),
        route(Get, "/v1/account", AccountRead),
        route(Patch, "/v1/account", AccountWrite),
    ]
};

/// Why a request was refused by the route policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// No route of the API has this path.
    #[error("no such route")]
    NoRoute,
    /// The path exists but not with this method (or the method is not one the API uses).
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The methods the path does accept.
        allowed: Vec<Method>,
    },
    /// The key lacks the scope the route needs (RFC 6750 `insufficient_scope`).
    #[error("the key lacks the `{needed}` scope")]
    InsufficientScope {
        /// The scope the route needs.
        needed: Scope,
    },
    /// The path is not canonical ([`is_canonical_path`]): an id holding an encoded `/`, `\`
    /// or `.`, a `;` parameter, a dot segment, or anything an origin might decode or normalise
    /// into another route than the one authorised here.
    #[error("the path is not canonical")]
    InvalidPath,
}

/// Whether `path` is in the one form routes are matched in: it starts with `/`, every byte is
/// an RFC 3986 unreserved character (`A-Z a-z 0-9 - . _ ~`) or `/`, and no segment is `.` or
/// `..`. Every id of the API fits; anything else (percent-encoding of any kind, so `%2F`, `%5C`,
/// `%2E`, double encoding and overlong UTF-8 alike; `;` path parameters; `\`; non-ASCII) could
/// be read by some origin as another path than the one the edge authorised, so it is refused
/// rather than normalised: there is then no second reading to disagree with.
pub fn is_canonical_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/'))
        && path
            .split('/')
            .all(|segment| segment != "." && segment != "..")
}

/// Whether `path` fits `pattern`, in one pass over both without allocating: the edge runs this
/// for every request.
fn matches(pattern: &str, path: &str) -> bool {
    let (pattern, path) = (pattern.as_bytes(), path.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < pattern.len() {
        if pattern[i] == b'{' {
            // A parameter: one non-empty segment.
            let start = j;
            while j < path.len() && path[j] != b'/' {
                j += 1;
            }
            if j == start {
                return false;
            }
            while i < pattern.len() && pattern[i] != b'/' {
                i += 1;
            }
        } else {
            if j >= path.len() || pattern[i] != path[j] {
                return false;
            }
            i += 1;
            j += 1;
        }
    }
    j == path.len()
}

/// Finds the route for `method` and `path` (the path without its query string). A path that is
/// not canonical is [`PolicyError::InvalidPath`] whatever the method.
pub fn find_route(method: &str, path: &str) -> Result<&'static Route, PolicyError> {
    if !is_canonical_path(path) {
        return Err(PolicyError::InvalidPath);
    }
    let parsed = Method::parse(method);
    if let Some(route) = ROUTES
        .iter()
        .find(|r| Some(r.method) == parsed && matches(r.pattern, path))
    {
        return Ok(route);
    }
    // The slow path only runs for refusals: which methods would the path have taken?
    let allowed: Vec<Method> = ROUTES
        .iter()
        .filter(|r| matches(r.pattern, path))
        .map(|r| r.method)
        .collect();
    if allowed.is_empty() {
        Err(PolicyError::NoRoute)
    } else {
        Err(PolicyError::MethodNotAllowed { allowed })
    }
}

/// May a key with `scopes` call `method path`? Returns the route on success.
pub fn authorize(
    scopes: ScopeSet,
    method: &str,
    path: &str,
) -> Result<&'static Route, PolicyError> {
    let route = find_route(method, path)?;
    if scopes.contains(route.scope) {
        Ok(route)
    } else {
        Err(PolicyError::InsufficientScope {
            needed: route.scope,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_parse() {
        let none = None::<[&str; 0]>;
        assert_eq!(
            Permission::parse("read_only", none),
            Ok(Permission::ReadOnly)
        );
        assert_eq!(
            Permission::parse("read_write", none),
            Ok(Permission::ReadWrite)
        );
        assert_eq!(
            Permission::parse("full_access", none),
            Ok(Permission::FullAccess)
        );
        assert_eq!(
            Permission::parse("custom", Some(["jobs:read"])),
            Ok(Permission::Custom(ScopeSet::EMPTY.with(Scope::JobsRead)))
        );
        assert_eq!(
            Permission::parse("admin", none),
            Err(PermissionError::UnknownLevel)
        );
        assert_eq!(
            Permission::parse("custom", none),
            Err(PermissionError::MissingScopes)
        );
        assert_eq!(
            Permission::parse("custom", Some([])),
            Err(PermissionError::NoScopes)
        );
        assert_eq!(
            Permission::parse("read_only", Some(["jobs:read"])),
            Err(PermissionError::UnexpectedScopes)
        );
        assert_eq!(
            Permission::parse("custom", Some(["jobs:read", "nope"])),
            Err(PermissionError::UnknownScope("nope"))
        );
        for p in [
            Permission::ReadOnly,
            Permission::ReadWrite,
            Permission::FullAccess,
        ] {
            assert_eq!(Permission::parse(p.name(), none), Ok(p));
        }
    }

    #[test]
    fn catalog_is_consistent() {
        for (i, a) in Scope::ALL.iter().enumerate() {
            assert_eq!(Scope::from_name(a.name()), Some(*a));
            assert!(a.bit() < 31);
            for b in &Scope::ALL[i + 1..] {
                assert_ne!(a.bit(), b.bit());
                assert_ne!(a.name(), b.name());
            }
        }
        for route in ROUTES {
            assert!(route.pattern.starts_with("/v1/"), "{route:?}");
            let path = route.pattern.replace("{id}", "x");
            assert_eq!(
                find_route(route.method.name(), &path).unwrap(),
                route,
                "shadowed"
            );
        }
    }

    #[test]
    fn levels() {
        let ro = Permission::ReadOnly.scopes();
        assert!(ro.contains(Scope::JobsRead) && !ro.contains(Scope::JobsWrite));
        let rw = Permission::ReadWrite.scopes();
        assert!(rw.contains(Scope::JobsWrite) && !rw.contains(Scope::AccountWrite));
        assert!(
            Permission::FullAccess
                .scopes()
                .contains(Scope::AccountWrite)
        );
        assert_eq!(ro.permission(), Permission::ReadOnly);
        assert_eq!(rw.permission(), Permission::ReadWrite);
        assert_eq!(ScopeSet::FULL_ACCESS.permission(), Permission::FullAccess);
        let custom = ScopeSet::EMPTY.with(Scope::FilesRead);
        assert_eq!(custom.permission(), Permission::Custom(custom));
        // Full Access is stored as its own bit, so it covers scopes added in later releases.
        assert_eq!(ScopeSet::FULL_ACCESS.bits(), 1 << 31);
        assert_eq!(ScopeSet::from_bits(1 << 30), None);
        assert_eq!(ScopeSet::from_bits(1 << 31 | 1), None);
        assert_eq!(ScopeSet::from_names(["jobs:read", "nope"]), Err("nope"));
    }

    #[test]
    fn within() {
        let (ro, rw, full) = (
            Permission::ReadOnly.scopes(),
            Permission::ReadWrite.scopes(),
            ScopeSet::FULL_ACCESS,
        );
        let every = Scope::ALL.into_iter().fold(ScopeSet::EMPTY, ScopeSet::with);
        for (set, of, expected) in [
            (ro, rw, true),
            (rw, ro, false),
            (rw, full, true),
            (full, full, true),
            (ScopeSet::EMPTY, ro, true),
            // Full Access holds scopes added later: no listed set covers it.
            (full, every, false),
            (every, full, true),
        ] {
            assert_eq!(set.is_within(of), expected, "{set:?} within {of:?}");
        }
    }

    #[test]
    fn route_table() {
        let ro = Permission::ReadOnly.scopes();
        let cases: &[(&str, &str, Result<Scope, PolicyError>)] = &[
            ("GET", "/v1/jobs", Ok(Scope::JobsRead)),
            ("HEAD", "/v1/jobs", Ok(Scope::JobsRead)),
            ("GET", "/v1/jobs/job_123", Ok(Scope::JobsRead)),
            (
                "POST",
                "/v1/jobs",
                Err(PolicyError::InsufficientScope {
                    needed: Scope::JobsWrite,
                }),
            ),
            ("GET", "/v1/jobs/", Err(PolicyError::NoRoute)),
            ("GET", "/v1/jobs//results", Err(PolicyError::NoRoute)),
            ("GET", "/v2/jobs", Err(PolicyError::NoRoute)),
            (
                "get",
                "/v1/jobs",
                Err(PolicyError::MethodNotAllowed {
                    allowed: vec![Method::Get, Method::Post],
                }),
            ),
            (
                "PUT",
                "/v1/account",
                Err(PolicyError::MethodNotAllowed {
                    allowed: vec![Method::Get, Method::Patch],
                }),
            ),
        ];
        for (method, path, want) in cases {
            let got = authorize(ro, method, path).map(|r| r.scope);
            assert_eq!(&got, want, "{method} {path}");
        }
    }

    #[test]
    fn only_canonical_paths_reach_a_route() {
        for path in [
            "/v1/webhooks/x%2F..%2F..%2Faccount",
            "/v1/webhooks/x%2f..%2f..%2faccount",
            "/v1/jobs/a%5C..%5Caccount",
            "/v1/jobs/%2E%2E",
            "/v1/jobs/%2e",
            "/v1/jobs/a%252F..",
            "/v1/jobs/%C0%AF",
            "/v1/jobs/j_1;x=1",
            "/v1/jobs/j_1\\..",
            "/v1/jobs/..",
            "/v1/jobs/.",
            "/v1/jobs/../account",
            "/v1/jobs/j\u{e9}",
            "/v1/jobs/j 1",
            "/v1/jobs/j:1",
            "/v1/jobs/j@1",
            "v1/jobs",
            "",
        ] {
            for method in ["GET", "DELETE", "BREW"] {
                assert_eq!(
                    find_route(method, path),
                    Err(PolicyError::InvalidPath),
                    "{method} {path:?}"
                );
            }
        }
        for path in [
            "/v1/jobs/job_123",
            "/v1/jobs/a.b-c~d",
            "/v1/jobs/...",
            "/v1/files/f.tar.gz",
        ] {
            assert!(is_canonical_path(path), "{path}");
            assert!(find_route("GET", path).is_ok(), "{path}");
        }
    }
}
