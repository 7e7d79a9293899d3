//! The HTML shells of the dashboard's pages: one askama template per page, under `templates/`.
//!
//! Each shell holds the page's fixed structure (headings, forms, dialogs, empty tables with
//! their captions) and the scope catalog from `shared::scope`; the page's script fills in the
//! data from the JSON API. The templates are compiled in and escape every interpolated value
//! for HTML by construction: nothing here writes markup by hand. The one unescaped output is the
//! scope catalog, through askama's `json` filter, whose output holds no `<`, `>`, `&` or `'`.
//! No inline script or style: the Content-Security-Policy forbids both.

use askama::Template;

use crate::state::ApiBases;
use serde::Serialize;
use shared::scope::{Method, Permission, ROUTES, Scope};

use super::Account;
use super::assets;
use crate::auth::grant::AdminScope;
use crate::auth::password::MIN_PASSWORD_CHARS;
use crate::state::Settings;
use crate::store::accounts::Plan;

/// `text` with its first letter in upper case (`standard` → `Standard`).
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// The navigation entries: (path, page name, label).
const NAV: &[(&str, &str, &str)] = &[
    ("/dashboard/keys", "keys", "API Keys"),
    ("/dashboard/tokens", "tokens", "Management tokens"),
    ("/dashboard/audit", "audit", "Audit log"),
    ("/dashboard/sessions", "sessions", "Sessions"),
];

/// One entry of the navigation.
pub(super) struct NavItem {
    href: &'static str,
    label: &'static str,
    /// The page shown is this entry's (or, for one key, the keys list's).
    current: bool,
}

/// What the layout around every page needs (`layout.html`).
pub(super) struct Shell<'a> {
    title: &'a str,
    /// Selects the script's behaviour (`data-page`).
    page: &'a str,
    /// The signed-in account, shown in the header; `None` on the sign-in page.
    account: Option<&'a Account>,
    /// The key a key page shows (`data-key-id`).
    key_id: Option<&'a str>,
}

impl Shell<'_> {
    fn version(&self) -> &'static str {
        assets::version()
    }

    fn nav(&self) -> Vec<NavItem> {
        NAV.iter()
            .map(|&(href, name, label)| NavItem {
                href,
                label,
                current: name == self.page || (self.page == "key" && name == "keys"),
            })
            .collect()
    }

    /// The account's name as shown: refused characters stored before the rule made visible
    /// (`text::visible`); the template isolates it in a `<bdi>`.
    fn account_name(&self) -> String {
        self.account
            .map(|account| crate::text::visible(&account.name))
            .unwrap_or_default()
    }

    fn plan_name(&self) -> String {
        self.account
            .map(|account| capitalized(&account.plan_id))
            .unwrap_or_default()
    }
}

/// The sign-in page.
#[derive(Template)]
#[template(path = "sign_in.html")]
pub(super) struct SignIn {
    shell: Shell<'static>,
}

/// The sign-in page.
pub(super) fn sign_in() -> SignIn {
    SignIn {
        shell: Shell {
            title: "Sign in",
            page: "sign-in",
            account: None,
            key_id: None,
        },
    }
}

/// A route of the catalog that `scope` lets a key call: a collection read if there is one.
fn example_route(scope: Scope) -> String {
    let routes = || ROUTES.iter().filter(move |r| r.scope == scope);
    routes()
        .find(|r| r.method == Method::Get && !r.pattern.contains('{'))
        .or_else(|| routes().find(|r| !r.pattern.contains('{')))
        .or_else(|| routes().next())
        .map(|r| format!("{} {}", r.method.name(), r.pattern))
        .unwrap_or_default()
}

/// One scope of the catalog data block: what the curl line and the unused-scopes list need.
#[derive(Serialize)]
pub(super) struct CatalogEntry {
    name: &'static str,
    group: &'static str,
    description: &'static str,
    example: String,
}

/// The scope catalog, for the page's JSON data block.
fn catalog() -> Vec<CatalogEntry> {
    Scope::ALL
        .iter()
        .map(|s| CatalogEntry {
            name: s.name(),
            group: s.group(),
            description: s.description(),
            example: example_route(*s),
        })
        .collect()
}

/// The scope names a preset level carries, space-separated.
fn preset(permission: Permission) -> String {
    permission
        .scopes()
        .iter()
        .map(Scope::name)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A resource's custom-scope checkboxes.
pub(super) struct ScopeGroup {
    title: String,
    scopes: Vec<ScopeBox>,
}

/// One custom-scope checkbox and its sentence.
pub(super) struct ScopeBox {
    /// The element id, `scope-jobs-read` for `jobs:read`.
    id: String,
    name: &'static str,
    example: String,
    about: &'static str,
}

/// The custom-scope checkboxes, grouped by resource in catalog order.
fn scope_groups() -> Vec<ScopeGroup> {
    let mut groups: Vec<ScopeGroup> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for scope in Scope::ALL {
        let scope_box = ScopeBox {
            id: format!("scope-{}", scope.name().replace(':', "-")),
            name: scope.name(),
            example: example_route(scope),
            about: scope.description(),
        };
        match names.iter().position(|g| *g == scope.group()) {
            Some(i) => groups[i].scopes.push(scope_box),
            None => {
                names.push(scope.group());
                groups.push(ScopeGroup {
                    title: capitalized(scope.group()),
                    scopes: vec![scope_box],
                });
            }
        }
    }
    groups
}

/// Developers → API Keys: the list, its filters, and the Create New API Key dialog.
#[derive(Template)]
#[template(path = "keys.html")]
pub(super) struct Keys<'a> {
    shell: Shell<'a>,
    plan: &'a Plan,
    read_only: String,
    read_write: String,
    groups: Vec<ScopeGroup>,
    catalog: Vec<CatalogEntry>,
    api_bases: &'a ApiBases,
}

/// Developers → API Keys.
pub(super) fn keys<'a>(account: &'a Account, api_bases: &'a ApiBases) -> Keys<'a> {
    Keys {
        shell: Shell {
            title: "API Keys",
            page: "keys",
            account: Some(account),
            key_id: None,
        },
        plan: &account.plan,
        read_only: preset(Permission::ReadOnly),
        read_write: preset(Permission::ReadWrite),
        groups: scope_groups(),
        catalog: catalog(),
        api_bases,
    }
}

/// One key: details, settings, usage, activity, unused scopes, audit events, rotate, revoke.
#[derive(Template)]
#[template(path = "key.html")]
pub(super) struct Key<'a> {
    shell: Shell<'a>,
    plan: &'a Plan,
    id: &'a str,
    catalog: Vec<CatalogEntry>,
    api_bases: &'a ApiBases,
}

/// One key, by its id.
pub(super) fn key<'a>(account: &'a Account, id: &'a str, api_bases: &'a ApiBases) -> Key<'a> {
    Key {
        shell: Shell {
            title: "API key",
            page: "key",
            account: Some(account),
            key_id: Some(id),
        },
        plan: &account.plan,
        id,
        catalog: catalog(),
        api_bases,
    }
}

/// The account's audit log.
#[derive(Template)]
#[template(path = "audit.html")]
pub(super) struct Audit<'a> {
    shell: Shell<'a>,
}

/// The account's audit log.
pub(super) fn audit(account: &Account) -> Audit<'_> {
    Audit {
        shell: Shell {
            title: "Audit log",
            page: "audit",
            account: Some(account),
            key_id: None,
        },
    }
}

/// Management tokens: list, create (scopes, key grant, expiry, password; shown once), revoke.
#[derive(Template)]
#[template(path = "tokens.html")]
pub(super) struct Tokens<'a> {
    shell: Shell<'a>,
    scopes: Vec<AdminScopeBox>,
}

/// One admin scope's checkbox.
pub(super) struct AdminScopeBox {
    /// The element id, `admin-keys-read` for `keys:read`.
    id: String,
    name: &'static str,
    about: &'static str,
}

/// Management tokens.
pub(super) fn tokens(account: &Account) -> Tokens<'_> {
    Tokens {
        shell: Shell {
            title: "Management tokens",
            page: "tokens",
            account: Some(account),
            key_id: None,
        },
        scopes: AdminScope::ALL
            .iter()
            .map(|s| AdminScopeBox {
                id: format!("admin-{}", s.name().replace(':', "-")),
                name: s.name(),
                about: s.description(),
            })
            .collect(),
    }
}

/// The signed-in user's sessions (list, end one, sign out everywhere else) and the password
/// change form.
#[derive(Template)]
#[template(path = "sessions.html")]
pub(super) struct Sessions<'a> {
    shell: Shell<'a>,
    idle_minutes: u64,
    ttl_hours: u64,
    cap: u32,
    min_chars: usize,
}

/// Sessions and password, stating the limits `settings` puts on sessions.
pub(super) fn sessions<'a>(account: &'a Account, settings: &Settings) -> Sessions<'a> {
    Sessions {
        shell: Shell {
            title: "Sessions and password",
            page: "sessions",
            account: Some(account),
            key_id: None,
        },
        idle_minutes: settings.session_idle.div_ceil(60),
        ttl_hours: settings.session_ttl.div_ceil(3600),
        cap: settings.sessions_per_user,
        min_chars: MIN_PASSWORD_CHARS,
    }
}

/// A page for an address that names nothing.
#[derive(Template)]
#[template(path = "not_found.html")]
pub(super) struct NotFound<'a> {
    shell: Shell<'a>,
    what: &'a str,
}

/// A page for an address that names nothing: `what` says what was not found.
pub(super) fn not_found<'a>(account: &'a Account, what: &'a str) -> NotFound<'a> {
    NotFound {
        shell: Shell {
            title: "Not found",
            page: "not-found",
            account: Some(account),
            key_id: None,
        },
        what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str) -> Account {
        Account {
            id: 7,
            name: name.into(),
            plan_id: "standard".into(),
            created_at: 0,
            plan: Plan {
                max_active_keys: 50,
                default_rate_limit: 600,
                max_rate_limit: 6000,
            },
        }
    }

    #[test]
    fn escapes_markup_and_quotes() {
        // Every interpolated value is escaped by the template engine, in text and attributes.
        let account = account(r#"<a href="x" onclick='y'>&</a>"#);
        let id = r#"" onload="x"#;
        let page = key(&account, id, &ApiBases::default()).render().unwrap();
        assert!(page.contains("&#60;a href=&#34;x&#34; onclick=&#39;y&#39;&#62;&#38;&#60;/a&#62;"));
        assert!(!page.contains("<a href=\"x\""));
        assert!(!page.contains(r#"" onload="x"#));
        let page = not_found(&account, "<b>&</b>").render().unwrap();
        assert!(page.contains("<p>&#60;b&#62;&#38;&#60;/b&#62;</p>"));
    }

    #[test]
    fn the_catalog_block_cannot_be_closed_by_a_value() {
        let page = keys(&account("Acme"), &ApiBases::default())
            .render()
            .unwrap();
        let start = page.find(r#"<script type="application/json" id="scope-catalog">"#);
        let block = &page[start.unwrap()..];
        let json = &block[block.find('>').unwrap() + 1..block.find("</script>").unwrap()];
        assert!(!json.contains('<') && !json.contains('&'));
        let parsed: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(parsed.as_array().unwrap().len(), Scope::ALL.len());
        assert_eq!(parsed[0]["name"], Scope::ALL[0].name());
    }

    #[test]
    fn every_scope_has_a_checkbox_a_sentence_and_a_route() {
        let html = keys(&account("Acme"), &ApiBases::default())
            .render()
            .unwrap();
        for scope in Scope::ALL {
            assert!(html.contains(&format!(r#"value="{}""#, scope.name())));
            assert!(
                html.contains(
                    &askama::filters::escape(scope.description(), askama::filters::Html)
                        .unwrap()
                        .to_string()
                )
            );
            assert!(!example_route(scope).is_empty(), "{scope} has no route");
        }
        assert_eq!(example_route(Scope::JobsRead), "GET /v1/jobs");
    }
}
