//! The HTML shells of the dashboard's pages, one function per page.
//!
//! Each shell holds the page's fixed structure (headings, forms, dialogs, empty tables with
//! their captions) and the scope catalog from `shared::scope`; the page's script fills in the
//! data from the JSON API. Everything interpolated goes through [`escape`]. No inline script or
//! style: the Content-Security-Policy forbids both.

use std::fmt::Write as _;

use shared::scope::{Method, Permission, ROUTES, Scope};

use super::Account;
use super::assets;

/// `text` with its first letter in upper case (`standard` → `Standard`).
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// Escapes text for an HTML text node or a double- or single-quoted attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The navigation entries: (path, page name, label).
const NAV: &[(&str, &str, &str)] = &[
    ("/dashboard/keys", "keys", "API Keys"),
    ("/dashboard/tokens", "tokens", "Management tokens"),
    ("/dashboard/audit", "audit", "Audit log"),
];

/// The whole document around `main`. `page` selects the script's behaviour (`data-page`).
fn layout(title: &str, page: &str, account: Option<&Account>, attrs: &str, main: &str) -> String {
    let v = assets::version();
    let mut header = String::new();
    if let Some(account) = account {
        let mut nav = String::new();
        for (href, name, label) in NAV {
            let current = if *name == page || (page == "key" && *name == "keys") {
                r#" aria-current="page""#
            } else {
                ""
            };
            let _ = write!(nav, r#"<li><a href="{href}"{current}>{label}</a></li>"#);
        }
        let plan = &account.plan;
        header = format!(
            r#"<header class="top">
  <a class="brand" href="/dashboard/keys"><img src="/assets/{v}/logo.svg" alt="" width="28" height="28"> Lynxo Keys</a>
  <nav aria-label="Developers"><span class="nav-group" id="nav-group">Developers</span><ul aria-labelledby="nav-group">{nav}</ul></nav>
  <div class="account">
    <span class="account-name">{name}</span>
    <span class="plan" title="Plan limits">{plan_id} plan: {max} keys, {rate}/min per key by default</span>
    <button type="button" class="secondary" id="sign-out">Sign out</button>
  </div>
</header>"#,
            name = escape(&account.name),
            plan_id = escape(&capitalized(&account.plan_id)),
            max = plan.max_active_keys,
            rate = plan.default_rate_limit,
        );
    }
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title} · Lynxo Keys</title>
<link rel="icon" href="/assets/{v}/logo.svg" type="image/svg+xml">
<link rel="stylesheet" href="/assets/{v}/app.css">
<script type="module" src="/assets/{v}/app.js"></script>
</head>
<body data-page="{page}"{attrs}>
<a class="skip" href="#main">Skip to content</a>
{header}
<main id="main" tabindex="-1">
{main}
</main>
</body>
</html>
"##,
        title = escape(title),
        page = escape(page),
    )
}

/// The sign-in page.
pub fn sign_in() -> String {
    layout(
        "Sign in",
        "sign-in",
        None,
        "",
        r#"<section class="sign-in card">
  <h1>Sign in to Lynxo Keys</h1>
  <form id="sign-in-form" method="post" action="/sign-in" novalidate>
    <p class="field"><label for="email">Email</label>
      <input id="email" name="email" type="email" autocomplete="username" required></p>
    <p class="field"><label for="password">Password</label>
      <input id="password" name="password" type="password" autocomplete="current-password" required></p>
    <p class="error" id="sign-in-error" role="alert" hidden></p>
    <p><button type="submit">Sign in</button></p>
  </form>
</section>"#,
    )
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

/// The scope catalog as a JSON data block (not executed, so the CSP allows it): name, group,
/// sentence and an example route per scope, for the curl line and the unused-scopes list.
fn catalog_json() -> String {
    let entries: Vec<_> = Scope::ALL
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name(),
                "group": s.group(),
                "description": s.description(),
                "example": example_route(*s),
            })
        })
        .collect();
    // `<` escaped so no value can close the element.
    let json = serde_json::Value::from(entries)
        .to_string()
        .replace('<', "\\u003c");
    format!(r#"<script type="application/json" id="scope-catalog">{json}</script>"#)
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

/// The custom-scope checkboxes, grouped by resource, each with its sentence.
fn scope_fieldsets() -> String {
    let mut out = String::new();
    let mut groups: Vec<&str> = Vec::new();
    for scope in Scope::ALL {
        if !groups.contains(&scope.group()) {
            groups.push(scope.group());
        }
    }
    for group in groups {
        let _ = write!(
            out,
            r#"<fieldset class="scope-group"><legend>{}</legend>"#,
            escape(&title_case(group))
        );
        for scope in Scope::ALL.iter().filter(|s| s.group() == group) {
            let id = format!("scope-{}", scope.name().replace(':', "-"));
            let _ = write!(
                out,
                r#"<div class="scope"><input type="checkbox" name="scopes" id="{id}" value="{name}" data-example="{example}" aria-describedby="{id}-about"><label for="{id}"><code>{name}</code></label><p class="hint" id="{id}-about">{about}</p></div>"#,
                name = escape(scope.name()),
                example = escape(&example_route(*scope)),
                about = escape(scope.description()),
            );
        }
        out.push_str("</fieldset>");
    }
    out
}

fn title_case(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// The panel that shows a new key once (create and rotate share it).
fn secret_panel(id: &str, heading: &str) -> String {
    format!(
        r#"<section class="secret" id="{id}" hidden aria-labelledby="{id}-title">
  <h3 id="{id}-title" tabindex="-1">{heading}</h3>
  <p class="warning" role="note"><strong>Copy this key now and store it securely.</strong> It will not be shown again: Lynxo keeps only a hint of it. If you lose it, rotate or revoke the key.</p>
  <div class="secret-row">
    <code class="secret-value" data-secret aria-label="The new API key"></code>
    <button type="button" data-copy>Copy key</button>
  </div>
  <p class="copy-status" data-copy-status role="status" aria-live="polite"></p>
  <p>Try it:</p>
  <pre class="curl"><code data-curl></code></pre>
  <p><button type="button" class="secondary" data-done>I have stored the key</button></p>
</section>"#
    )
}

/// Developers → API Keys: the list, its filters, and the Create New API Key dialog.
pub fn keys(account: &Account) -> String {
    let plan = &account.plan;
    let main = format!(
        r#"<nav class="crumbs" aria-label="Breadcrumb"><ol><li>Developers</li><li><a href="/dashboard/keys" aria-current="page">API Keys</a></li></ol></nav>
<div class="title-row">
  <h1>API Keys</h1>
  <button type="button" id="create-open">Create New API Key</button>
</div>
<p class="count" id="key-count" aria-live="polite"></p>
<div class="notice" id="limit-notice" hidden></div>
<form class="filters" id="filters" role="search" aria-label="Filter keys">
  <p class="field"><label for="search">Search by name</label>
    <input id="search" name="search" type="search" autocomplete="off"></p>
  <p class="field"><label for="filter-environment">Environment</label>
    <select id="filter-environment" name="environment">
      <option value="">All environments</option>
      <option value="production">Production</option>
      <option value="staging">Staging</option>
      <option value="development">Development</option>
    </select></p>
  <p class="field"><label for="filter-status">Status</label>
    <select id="filter-status" name="status">
      <option value="">Any status</option>
      <option value="active">Active</option>
      <option value="rotating">Rotating</option>
      <option value="revoked">Revoked</option>
      <option value="expired">Expired</option>
    </select></p>
</form>
<div class="table-wrap">
<table class="keys stack" id="keys-table">
  <caption class="visually-hidden">API keys, newest first</caption>
  <thead><tr><th scope="col">Name</th><th scope="col">Environment</th><th scope="col">Permission</th><th scope="col">Key</th><th scope="col">Created</th><th scope="col">Last used</th><th scope="col">Requests (24 h)</th><th scope="col">Status</th></tr></thead>
  <tbody id="keys-body"><tr><td colspan="8">Loading…</td></tr></tbody>
</table>
</div>
<p><button type="button" class="secondary" id="keys-more" hidden>Show more keys</button></p>

<dialog id="create-dialog" aria-labelledby="create-title">
  <div class="dialog-head"><h2 id="create-title">Create New API Key</h2>
    <button type="button" class="icon" data-close aria-label="Close">×</button></div>
  <form id="create-form" method="post" action="/dashboard/keys" novalidate>
    <div class="notice" id="create-limit" hidden></div>
    <p class="field"><label for="key-name">Name</label>
      <input id="key-name" name="name" required maxlength="100" autocomplete="off" aria-describedby="key-name-hint">
      <span class="hint" id="key-name-hint">Say where the key is used, e.g. “billing worker”.</span></p>
    <p class="field"><label for="key-description">Description <span class="optional">(optional)</span></label>
      <textarea id="key-description" name="description" maxlength="1000" rows="2"></textarea></p>
    <p class="field"><label for="key-environment">Environment</label>
      <select id="key-environment" name="environment">
        <option value="production">Production</option>
        <option value="staging">Staging</option>
        <option value="development" selected>Development</option>
      </select></p>
    <fieldset class="permission"><legend>Permission level</legend>
      <div class="radio"><input type="radio" name="permission" id="perm-read_only" value="read_only" data-scopes="{read_only}" aria-describedby="perm-read_only-about"><label for="perm-read_only">Read Only</label><p class="hint" id="perm-read_only-about">Every read scope: list and read, change nothing.</p></div>
      <div class="radio"><input type="radio" name="permission" id="perm-read_write" value="read_write" data-scopes="{read_write}" aria-describedby="perm-read_write-about" checked><label for="perm-read_write">Read/Write</label><p class="hint" id="perm-read_write-about">Every scope except changing the account's settings.</p></div>
      <div class="radio"><input type="radio" name="permission" id="perm-full_access" value="full_access" data-scopes="*" aria-describedby="perm-full_access-about"><label for="perm-full_access">Full Access</label><p class="hint" id="perm-full_access-about">Everything, including scopes added to the API later.</p></div>
      <div class="radio"><input type="radio" name="permission" id="perm-custom" value="custom" aria-describedby="perm-custom-about" aria-controls="custom-scopes"><label for="perm-custom">Custom</label><p class="hint" id="perm-custom-about">Exactly the scopes you pick below.</p></div>
    </fieldset>
    <div id="custom-scopes" class="scopes" hidden>{scopes}</div>
    <details class="advanced">
      <summary>Expiry and rate limit</summary>
      <p class="field"><label for="key-expiry">Expires on <span class="optional">(optional)</span></label>
        <input id="key-expiry" name="expires" type="date" aria-describedby="key-expiry-hint">
        <span class="hint" id="key-expiry-hint">Leave empty for a key that does not expire. It stops working at the start of that day (UTC).</span></p>
      <div class="field-row">
        <p class="field"><label for="key-rate">Rate limit <span class="optional">(optional)</span></label>
          <input id="key-rate" name="rate_limit" type="number" min="1" inputmode="numeric" aria-describedby="key-rate-hint">
          <span class="hint" id="key-rate-hint">Requests per window; empty for the plan's default ({default_rate} per minute, scaled to the window). The plan allows at most {max_rate} per minute.</span></p>
        <p class="field"><label for="key-window">Window</label>
          <select id="key-window" name="rate_limit_window">
            <option value="1">per second</option>
            <option value="60" selected>per minute</option>
            <option value="3600">per hour</option>
            <option value="86400">per day</option>
          </select></p>
      </div>
    </details>
    <p class="error" id="create-error" role="alert" hidden></p>
    <div class="actions"><button type="button" class="secondary" data-close>Cancel</button><button type="submit" id="create-submit">Create key</button></div>
  </form>
  {secret}
</dialog>"#,
        read_only = escape(&preset(Permission::ReadOnly)),
        read_write = escape(&preset(Permission::ReadWrite)),
        scopes = scope_fieldsets(),
        max_rate = plan.max_rate_limit,
        default_rate = plan.default_rate_limit,
        secret = secret_panel("created", "Your new API key"),
    ) + &catalog_json();
    layout("API Keys", "keys", Some(account), "", &main)
}

/// One key: details, settings, usage, activity, unused scopes, audit events, rotate, revoke.
pub fn key(account: &Account, id: &str) -> String {
    let id = escape(id);
    let plan = &account.plan;
    let main = format!(
        r#"<nav class="crumbs" aria-label="Breadcrumb"><ol><li>Developers</li><li><a href="/dashboard/keys">API Keys</a></li><li><span aria-current="page" id="crumb-name">Key</span></li></ol></nav>
<div class="title-row">
  <h1 id="key-title">Key</h1>
  <span id="key-status"></span>
</div>
<p class="error" id="key-error" role="alert" hidden></p>
<div class="grid">
<section class="card" aria-labelledby="details-title">
  <h2 id="details-title">Details</h2>
  <dl class="details" id="key-details"></dl>
</section>
<section class="card" aria-labelledby="settings-title">
  <h2 id="settings-title">Settings</h2>
  <form id="settings-form" method="post" action="/dashboard/keys/{id}" novalidate>
    <p class="field"><label for="set-name">Name</label>
      <input id="set-name" name="name" required maxlength="100" autocomplete="off"></p>
    <p class="field"><label for="set-description">Description</label>
      <textarea id="set-description" name="description" maxlength="1000" rows="2"></textarea></p>
    <div class="field-row">
      <p class="field"><label for="set-rate">Rate limit</label>
        <input id="set-rate" name="rate_limit" type="number" min="1" inputmode="numeric" aria-describedby="set-rate-hint"></p>
      <p class="field"><label for="set-window">Window</label>
        <select id="set-window" name="rate_limit_window">
          <option value="1">per second</option>
          <option value="60">per minute</option>
          <option value="3600">per hour</option>
          <option value="86400">per day</option>
        </select></p>
    </div>
    <p class="hint" id="set-rate-hint">A new limit reaches the edge within seconds; the key itself does not change. The plan allows at most {max_rate} requests per minute.</p>
    <p class="hint" id="rate-pending" hidden></p>
    <p class="error" id="settings-error" role="alert" hidden></p>
    <p class="ok" id="settings-ok" role="status" aria-live="polite"></p>
    <p><button type="submit">Save settings</button></p>
  </form>
</section>
</div>

<section class="card" aria-labelledby="usage-title">
  <div class="title-row"><h2 id="usage-title">Usage</h2>
    <div class="segmented" role="group" aria-label="Time range">
      <button type="button" data-range="24h" aria-pressed="true">24 h</button>
      <button type="button" data-range="7d" aria-pressed="false">7 d</button>
      <button type="button" data-range="30d" aria-pressed="false">30 d</button>
    </div></div>
  <p class="totals" id="usage-totals" aria-live="polite">Loading…</p>
  <figure class="chart" id="usage-chart"></figure>
  <details class="chart-table"><summary>Usage as a table</summary><div id="usage-table"></div></details>
  <h3>Requests by scope</h3>
  <div id="usage-scopes"></div>
</section>

<section class="card" aria-labelledby="unused-title">
  <h2 id="unused-title">Scopes not used in 30 days</h2>
  <div id="unused-scopes"><p>—</p></div>
</section>

<section class="card" aria-labelledby="activity-title">
  <div class="title-row"><h2 id="activity-title">Recent activity</h2>
    <p class="field inline"><label for="activity-outcome">Outcome</label>
      <select id="activity-outcome" name="outcome">
        <option value="">All requests</option>
        <option value="denied">Denied by the edge</option>
        <option value="2xx">2xx success</option>
        <option value="3xx">3xx redirect</option>
        <option value="4xx">4xx client error</option>
        <option value="5xx">5xx origin error</option>
        <option value="401">401 unauthenticated</option>
        <option value="403">403 forbidden</option>
        <option value="429">429 rate limited</option>
        <option value="edge_4xx">Edge 404/405</option>
        <option value="edge_5xx">Edge error</option>
      </select></p></div>
  <div class="table-wrap">
  <table class="stack" id="activity-table">
    <caption class="visually-hidden">The key's most recent requests, newest first</caption>
    <thead><tr><th scope="col">Time</th><th scope="col">Request</th><th scope="col">Status</th><th scope="col">Client</th><th scope="col">Where</th><th scope="col">User agent</th></tr></thead>
    <tbody id="activity-body"><tr><td colspan="6">Loading…</td></tr></tbody>
  </table>
  </div>
  <p><button type="button" class="secondary" id="activity-more" hidden>Older requests</button></p>
</section>

<section class="card" aria-labelledby="events-title">
  <h2 id="events-title">Audit events for this key</h2>
  <div class="table-wrap">
  <table class="stack" id="events-table">
    <caption class="visually-hidden">Changes to this key, newest first</caption>
    <thead><tr><th scope="col">Time</th><th scope="col">Event</th><th scope="col">By</th><th scope="col">Details</th></tr></thead>
    <tbody id="events-body"><tr><td colspan="4">Loading…</td></tr></tbody>
  </table>
  </div>
</section>

<section class="card danger" aria-labelledby="danger-title" id="danger">
  <h2 id="danger-title">Rotate or revoke</h2>
  <p>Rotating issues a new key with the same settings; the old one keeps working for the grace period you choose, then stops. Revoking stops the key for good.</p>
  <p class="muted">During the grace period both keys share one rate limit, and the old key still counts against your plan's key limit. Only one old key per key is kept in grace: rotating the new key again stops the old one at once.</p>
  <div class="actions start"><button type="button" id="rotate-open">Rotate key…</button><button type="button" class="destructive" id="revoke-open">Revoke key…</button></div>
</section>

<dialog id="rotate-dialog" aria-labelledby="rotate-title">
  <div class="dialog-head"><h2 id="rotate-title">Rotate key</h2>
    <button type="button" class="icon" data-close aria-label="Close">×</button></div>
  <form id="rotate-form" method="post" action="/dashboard/keys/{id}" novalidate>
    <p>A new key with the same name, environment, scopes, rate limit and expiry is shown once. Deploy it, then let the old key run out.</p>
    <p class="muted">Both keys share one rate limit while the old one works, and it counts against your key limit until it stops. If this key replaced a key that is still in its grace period, that older key stops now.</p>
    <p class="field"><label for="grace">Old key keeps working for</label>
      <select id="grace" name="grace_period_seconds">
        <option value="0">No time: stop it now</option>
        <option value="3600">1 hour</option>
        <option value="86400" selected>24 hours</option>
        <option value="604800">7 days</option>
        <option value="2592000">30 days</option>
      </select></p>
    <p class="error" id="rotate-error" role="alert" hidden></p>
    <div class="actions"><button type="button" class="secondary" data-close>Cancel</button><button type="submit">Rotate</button></div>
  </form>
  {secret}
</dialog>

<dialog id="revoke-dialog" aria-labelledby="revoke-title">
  <div class="dialog-head"><h2 id="revoke-title">Revoke key</h2>
    <button type="button" class="icon" data-close aria-label="Close">×</button></div>
  <form id="revoke-form" method="post" action="/dashboard/keys/{id}" novalidate>
    <p class="warning"><strong>This cannot be undone.</strong> Every request with this key will be refused within seconds, everywhere.</p>
    <p class="field"><label for="revoke-reason">Reason</label>
      <input id="revoke-reason" name="reason" required maxlength="500" autocomplete="off" value="No longer needed"></p>
    <p class="field"><label for="revoke-confirm">Type the key's name, <strong id="revoke-name"></strong>, to confirm</label>
      <input id="revoke-confirm" name="confirm" required autocomplete="off" spellcheck="false"></p>
    <p class="error" id="revoke-error" role="alert" hidden></p>
    <div class="actions"><button type="button" class="secondary" data-close>Cancel</button><button type="submit" class="destructive" id="revoke-submit" disabled>Revoke key</button></div>
  </form>
</dialog>"#,
        max_rate = plan.max_rate_limit,
        secret = secret_panel("rotated", "Your new API key"),
    ) + &catalog_json();
    layout(
        "API key",
        "key",
        Some(account),
        &format!(r#" data-key-id="{id}""#),
        &main,
    )
}

/// The account's audit log.
pub fn audit(account: &Account) -> String {
    layout(
        "Audit log",
        "audit",
        Some(account),
        "",
        r#"<h1>Audit log</h1>
<p>Every change to the account's keys, tokens and sign-ins, newest first. Events are chained by hash: a removed or edited row is detected by <code>control verify-audit</code>.</p>
<div class="table-wrap">
<table class="stack" id="audit-table">
  <caption class="visually-hidden">Audit events, newest first</caption>
  <thead><tr><th scope="col">#</th><th scope="col">Time</th><th scope="col">Event</th><th scope="col">Target</th><th scope="col">By</th><th scope="col">From</th><th scope="col">Details</th></tr></thead>
  <tbody id="audit-body"><tr><td colspan="7">Loading…</td></tr></tbody>
</table>
</div>
<p><button type="button" class="secondary" id="audit-more" hidden>Older events</button></p>"#,
    )
}

/// Management tokens: list, create (shown once), revoke.
pub fn tokens(account: &Account) -> String {
    let main = format!(
        r#"<div class="title-row"><h1>Management tokens</h1>
  <button type="button" id="token-open">Create token</button></div>
<p>Scripts use a management token (<code>lnxm_…</code>) to call this admin API. A token cannot create or revoke tokens: only a signed-in person can.</p>
<div class="table-wrap">
<table class="stack" id="tokens-table">
  <caption class="visually-hidden">Management tokens, newest first</caption>
  <thead><tr><th scope="col">Name</th><th scope="col">Token</th><th scope="col">Created</th><th scope="col">Last used</th><th scope="col">Status</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
  <tbody id="tokens-body"><tr><td colspan="6">Loading…</td></tr></tbody>
</table>
</div>
<dialog id="token-dialog" aria-labelledby="token-title">
  <div class="dialog-head"><h2 id="token-title">Create management token</h2>
    <button type="button" class="icon" data-close aria-label="Close">×</button></div>
  <form id="token-form" method="post" action="/dashboard/tokens" novalidate>
    <p class="field"><label for="token-name">Name</label>
      <input id="token-name" name="name" required maxlength="100" autocomplete="off"></p>
    <p class="error" id="token-error" role="alert" hidden></p>
    <div class="actions"><button type="button" class="secondary" data-close>Cancel</button><button type="submit">Create token</button></div>
  </form>
  {secret}
</dialog>
<dialog id="token-revoke-dialog" aria-labelledby="token-revoke-title">
  <div class="dialog-head"><h2 id="token-revoke-title">Revoke token</h2>
    <button type="button" class="icon" data-close aria-label="Close">×</button></div>
  <form id="token-revoke-form" method="post" action="/dashboard/tokens" novalidate>
    <p class="warning"><strong>This cannot be undone.</strong> Scripts using <span id="token-revoke-name"></span> stop working at once.</p>
    <p class="error" id="token-revoke-error" role="alert" hidden></p>
    <div class="actions"><button type="button" class="secondary" data-close>Cancel</button><button type="submit" class="destructive">Revoke token</button></div>
  </form>
</dialog>"#,
        secret = secret_panel("token-created", "Your new management token")
            .replace("rotate or revoke the key", "revoke it and create another")
            .replace("The new API key", "The new management token")
            .replace("this key", "this token")
            .replace("Copy key", "Copy token")
            .replace("I have stored the key", "I have stored the token"),
    );
    layout("Management tokens", "tokens", Some(account), "", &main)
}

/// A page for an address that names nothing.
pub fn not_found(account: &Account, what: &str) -> String {
    layout(
        "Not found",
        "not-found",
        Some(account),
        "",
        &format!(
            r#"<h1>Not found</h1><p>{}</p><p><a href="/dashboard/keys">Back to API Keys</a></p>"#,
            escape(what)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x" onclick='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn every_scope_has_a_checkbox_a_sentence_and_a_route() {
        let html = scope_fieldsets();
        for scope in Scope::ALL {
            assert!(html.contains(&format!(r#"value="{}""#, scope.name())));
            assert!(html.contains(&escape(scope.description())));
            assert!(!example_route(scope).is_empty(), "{scope} has no route");
        }
        assert_eq!(example_route(Scope::JobsRead), "GET /v1/jobs");
    }
}
