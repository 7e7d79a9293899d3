// The dashboard in real headless Chromium (Debian's `chromium`, driven by playwright-core),
// against the real control plane and the real edge worker. Run by tests/tests/dashboard.rs,
// which starts both and passes their addresses:
//
//   LYNXO_DASHBOARD_URL  the control plane, e.g. http://127.0.0.1:41234 (its public origin)
//   LYNXO_EDGE_URL       the worker under wrangler dev
//   LYNXO_EMAIL, LYNXO_PASSWORD   the user `control init` created
//   LYNXO_SCREENSHOTS    folder for the screenshots
//   LYNXO_SECRETS_FILE   every key the dashboard showed is appended here, one per line, so the
//                        Rust side can check that none reached the control plane's log
//   LYNXO_CHROMIUM       the browser (default /usr/bin/chromium)
//
// Exits 0 when every check passed; prints one line per step with the time it took.

import { mkdirSync, appendFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { a11y, check, elapsed, env, since, step, launch } from './lib.mjs';

const BASE = env('LYNXO_DASHBOARD_URL').replace(/\/$/, '');
const EDGE = env('LYNXO_EDGE_URL').replace(/\/$/, '');
const EMAIL = env('LYNXO_EMAIL');
const PASSWORD = env('LYNXO_PASSWORD');
const SHOTS = env('LYNXO_SCREENSHOTS');
const SECRETS = env('LYNXO_SECRETS_FILE');
/** Usage arrives from the edge in batches: how long to wait for it on the key page. */
const USAGE_DEADLINE_MS = Number(env('LYNXO_USAGE_DEADLINE_MS', '45000'));
/** How long a revocation may take to reach the edge. */
const REVOKE_DEADLINE_MS = 15000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Calls the edge like a customer would. */
async function edge(key, method = 'GET', path = '/v1/jobs', extra = {}) {
  const r = await fetch(`${EDGE}${path}`, {
    method,
    headers: { Authorization: `Bearer ${key}`, 'User-Agent': 'lynxo-dashboard-test/1', ...extra },
  });
  await r.arrayBuffer();
  return r.status;
}

/** Polls the edge until `key` gets `want`; returns the milliseconds it took. */
async function edgeUntil(key, want, deadline) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < deadline) {
    last = await edge(key);
    if (last === want) return Date.now() - t0;
    await sleep(100);
  }
  throw new Error(`the edge answered ${last}, not ${want}, for ${deadline} ms`);
}

mkdirSync(SHOTS, { recursive: true });
const { context, page, problems, profile } = await launch({ width: 1280, height: 800 });

const secrets = [];
function remember(secret) {
  secrets.push(secret);
  appendFileSync(SECRETS, `${secret}\n`);
}

/** Fails if any shown-once secret is in the page, its URL, history state, storage or cookies. */
async function assertNoSecretStored(where, { onScreen = false } = {}) {
  const html = onScreen ? '' : await page.content();
  const state = await page.evaluate(() => JSON.stringify({
    url: location.href,
    history: history.state,
    local: { ...localStorage },
    session: { ...sessionStorage },
    title: document.title,
  }));
  const cookies = JSON.stringify(await context.cookies());
  for (const s of secrets) {
    const at = html.indexOf(s);
    check(at < 0, `${where}: a shown-once key is in the page HTML, after …${html.slice(Math.max(0, at - 80), at)}`);
    check(!state.includes(s), `${where}: a shown-once key is in the URL, history state or storage`);
    check(!cookies.includes(s), `${where}: a shown-once key is in a cookie`);
  }
}

/**
 * Text whose colour has less than 4.5:1 contrast with the background behind it (3:1 for large
 * text), per WCAG 2's relative luminance; disabled controls and SVG are left out.
 */
async function lowContrast() {
  return page.evaluate(() => {
    const rgba = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
      const f = (v) => {
        const x = v / 255;
        return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (node) => {
      for (let n = node; n; n = n.parentElement) {
        const c = rgba(getComputedStyle(n).backgroundColor);
        if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) return c;
      }
      return [255, 255, 255];
    };
    const bad = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const seen = new Set();
    for (let t = walker.nextNode(); t; t = walker.nextNode()) {
      const node = t.parentElement;
      if (!t.textContent.trim() || seen.has(node) || node.closest('svg, [disabled], [hidden]')) continue;
      seen.add(node);
      const box = node.getBoundingClientRect();
      const style = getComputedStyle(node);
      if (!box.width || !box.height || style.visibility === 'hidden') continue;
      // Text inside an open modal dialog is checked; text behind it is not visible anyway.
      const modal = document.querySelector('dialog[open]');
      if (modal && !modal.contains(node)) continue;
      const fg = lum(rgba(style.color));
      const bg = lum(background(node));
      const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
      const size = parseFloat(style.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
      if (ratio < (large ? 3 : 4.5)) bad.push(`${t.textContent.trim().slice(0, 30)} (${ratio.toFixed(2)})`);
    }
    return bad;
  });
}

async function screenshot(name, options = {}) {
  await page.screenshot({ path: join(SHOTS, name), ...options });
}

let attacker;
try {
  // --- Sign in ---------------------------------------------------------------------------
  const first = await page.goto(`${BASE}/`);
  check(page.url() === `${BASE}/sign-in`, `/ should lead to /sign-in, got ${page.url()}`);
  const headers = first.headers();
  check(headers['content-security-policy']?.includes("script-src 'self'"), 'the page has the CSP');
  check(headers['x-content-type-options'] === 'nosniff', 'nosniff');
  check(headers['cache-control'] === 'no-store', 'the page is no-store');
  await page.fill('#email', EMAIL);
  await page.fill('#password', 'not the password');
  await page.click('#sign-in-form button[type=submit]');
  await page.waitForSelector('#sign-in-error:not([hidden])');
  await screenshot('sign-in-refused.png');
  await a11y(page, 'sign-in, password refused');
  const signInContrast = await lowContrast();
  check(signInContrast.length === 0, `low contrast on the sign-in page: ${signInContrast}`);
  await page.fill('#password', PASSWORD);
  await page.click('#sign-in-form button[type=submit]');
  await page.waitForURL(`${BASE}/dashboard/keys`);
  await page.waitForSelector('#key-count:not(:empty)');
  step('signed in (a wrong password first: refused)');
  check((await page.textContent('.account-name')).trim() === 'Default account', 'the header names the account');
  check((await page.textContent('.plan')).includes('Standard plan'), 'the header names the plan');

  // --- Create a key with custom scopes ---------------------------------------------------
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
  const name = `browser <b>test</b> ${Date.now()}`;
  await page.click('#create-open');
  check(await page.evaluate(() => document.getElementById('create-dialog').open), 'the dialog opened');
  check(await page.evaluate(() => document.activeElement?.id) === 'key-name', 'focus moved to the name field');
  // Every control of the form has a label.
  const unlabeled = await page.evaluate(() => [...document.querySelectorAll('#create-form input, #create-form select, #create-form textarea')]
    .filter((i) => !(i.labels?.length || i.getAttribute('aria-label'))).map((i) => i.id || i.name));
  check(unlabeled.length === 0, `controls without a label: ${unlabeled}`);
  // Escape closes the dialog and gives focus back to the button that opened it (or this times out).
  await page.keyboard.press('Escape');
  await page.waitForFunction(() => !document.getElementById('create-dialog').open);
  await page.waitForFunction(() => document.activeElement?.id === 'create-open');
  await page.click('#create-open');
  await page.fill('#key-name', name);
  await page.fill('#key-description', 'made by tests/browser/dashboard.mjs');
  await page.selectOption('#key-environment', 'development');
  await page.check('#perm-custom');
  check(await page.isVisible('#scope-jobs-read'), 'custom shows the scope checkboxes');
  check((await page.textContent('#scope-jobs-read-about')).includes('List jobs'), 'each scope says what it allows');
  await page.check('#scope-jobs-read');
  await page.check('#scope-files-read');
  await page.click('#create-submit');
  await page.waitForSelector('#created:not([hidden])');
  const key = (await page.textContent('#created [data-secret]')).trim();
  check(/^lnx_dev_[0-9A-Za-z]+$/.test(key), `a development key is shown: ${key.slice(0, 12)}…`);
  remember(key);
  check((await page.textContent('#created .warning')).includes('will not be shown again'), 'the warning says it is shown once');
  const curl = await page.textContent('#created [data-curl]');
  // A development key's line names the development API (the control plane's default for it).
  check(curl === `curl -H "Authorization: Bearer ${key}" https://api.development.lynxo.ai/v1/jobs`, `curl line: ${curl}`);
  await page.click('#created [data-copy]');
  await page.waitForFunction(() => document.querySelector('#created [data-copy-status]').textContent.includes('Copied'));
  const clipboard = await page.evaluate(() => navigator.clipboard.readText());
  check(clipboard === key, 'the copy button put the key on the clipboard');
  await screenshot('create-dialog-shown-once.png');
  await a11y(page, 'create dialog, key shown once');
  const dialogContrast = await lowContrast();
  check(dialogContrast.length === 0, `low contrast in the shown-once dialog: ${dialogContrast}`);
  step('created a custom-scope key; shown once, copied to the clipboard');

  // Leaving the page while the key is on screen, then coming back, shows it nowhere.
  const keyId = await page.evaluate((n) => {
    const link = [...document.querySelectorAll('#keys-body a')].find((a) => a.textContent === n);
    return link?.getAttribute('href').split('/').pop();
  }, name);
  check(/^[0-9a-f]{32}$/.test(keyId || ''), 'the new key is in the list, its name shown as text');
  // While it is on screen it is in the DOM, but in nothing that outlives the page.
  await assertNoSecretStored('keys page, key on screen', { onScreen: true });
  await page.goto(`${BASE}/dashboard/keys/${keyId}`);
  await assertNoSecretStored('key page');
  await page.goBack();
  await page.waitForURL(`${BASE}/dashboard/keys`);
  await page.waitForSelector('#key-count:not(:empty)');
  check(!(await page.evaluate(() => document.getElementById('create-dialog').open)), 'the dialog is closed after going back');
  await assertNoSecretStored('keys page after going back');
  await page.goForward();
  await assertNoSecretStored('key page after going forward');
  step('after leaving the page the key is in no page, history entry, storage or cookie');

  // --- Use it through the real edge -----------------------------------------------------
  // A new key works at once; the poll only absorbs a slow first answer of the worker.
  await edgeUntil(key, 200, 10000);
  check(await edge(key, 'GET', '/v1/files') === 200, 'and for GET /v1/files (files:read)');
  check(await edge(key, 'POST', '/v1/jobs') === 403, 'but not POST /v1/jobs (no jobs:write): 403');
  // The demo origin answers the status a request asks for: a 5xx for the chart's legend.
  await edge(key, 'GET', '/v1/jobs', { 'Demo-Status': '503' });
  step('the edge answered 200, 200 and 403 (and passed an origin 503 through)');

  // --- Usage chart and activity log -----------------------------------------------------
  const keyUrl = `${BASE}/dashboard/keys/${keyId}`;
  const t0 = Date.now();
  let seen = null;
  while (Date.now() - t0 < USAGE_DEADLINE_MS) {
    await page.goto(keyUrl);
    await page.waitForFunction(() => document.getElementById('usage-totals').textContent !== 'Loading…');
    await page.waitForFunction(() => !document.querySelector('#activity-body').textContent.includes('Loading'));
    const totals = await page.textContent('#usage-totals');
    check(!totals.includes('not available'), `the usage API answers: ${totals}`);
    seen = await page.evaluate(() => ({
      bars: [...document.querySelectorAll('svg.usage-chart rect.bar')].map((r) => [r.dataset.outcome, Number(r.dataset.count)]),
      activity: [...document.querySelectorAll('#activity-body tr.activity')].map((r) => r.textContent),
      label: document.querySelector('svg.usage-chart')?.getAttribute('aria-label') || '',
    }));
    const ok = seen.bars.some(([o, n]) => o === '2xx' && n > 0)
      && seen.activity.some((t) => t.includes('GET /v1/jobs'));
    if (ok) break;
    seen = null;
    await sleep(1000);
  }
  check(seen, `the request did not appear in the usage chart and activity log within ${USAGE_DEADLINE_MS} ms`);
  check(seen.bars.some(([o, n]) => o === '403' && n > 0), 'the 403 is in the chart too');
  check(seen.activity.some((t) => t.includes('POST /v1/jobs') && t.includes('403')), 'the 403 is in the activity log');
  check(/requests/.test(seen.label), 'the chart has a text alternative');
  check(await page.locator('#usage-table table').count() === 1, 'the chart has a table alternative');
  await page.click('[data-range="7d"]');
  await page.waitForFunction(() => document.getElementById('usage-totals').textContent.includes('7 days'));
  await page.click('[data-range="24h"]');
  await page.waitForFunction(() => document.getElementById('usage-totals').textContent.includes('24 hours'));
  await page.waitForSelector('svg.usage-chart rect.bar');
  await screenshot('key-page-with-usage.png', { fullPage: true });
  await a11y(page, 'key page with usage and activity');
  const keyContrast = await lowContrast();
  check(keyContrast.length === 0, `low contrast on the key page: ${keyContrast}`);
  step(`usage and activity on the key page after ${Date.now() - t0} ms`);

  // The activity log filters by outcome.
  await page.selectOption('#activity-outcome', 'denied');
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('#activity-body tr.activity')];
    return rows.length > 0 && rows.every((r) => r.textContent.includes('403'));
  });
  await page.selectOption('#activity-outcome', '');
  await page.locator('section[aria-labelledby="usage-title"]').screenshot({ path: join(SHOTS, 'key-usage-chart.png') });

  // The key's audit events are listed on its page.
  const events = await page.textContent('#events-body');
  check(events.includes('key.created'), 'the key page lists its key.created event');

  // --- Settings ------------------------------------------------------------------------
  await page.fill('#set-description', 'described in the browser');
  await page.fill('#set-rate', '120');
  await page.click('#settings-form button[type=submit]');
  await page.waitForFunction(() => document.getElementById('settings-ok').textContent === 'Saved.');
  await page.waitForFunction(() => document.getElementById('key-details').textContent.includes('120 requests per minute'));
  step('settings saved with PATCH (description, rate limit 120/min)');

  // --- Rotate --------------------------------------------------------------------------
  await page.click('#rotate-open');
  await page.selectOption('#grace', '3600');
  await page.click('#rotate-form button[type=submit]');
  await page.waitForSelector('#rotated:not([hidden])');
  const rotated = (await page.textContent('#rotated [data-secret]')).trim();
  check(/^lnx_dev_/.test(rotated) && rotated !== key, 'a new key is shown once');
  remember(rotated);
  const newId = (await page.getAttribute('#rotated [data-new-key] a', 'href')).split('/').pop();
  await page.click('#rotated [data-done]');
  await page.waitForFunction(() => document.querySelector('#key-status').textContent.includes('Rotating'));
  check(await page.textContent('#rotated [data-secret]') === '', 'closing the dialog wipes the new key');
  await assertNoSecretStored('key page after rotating');
  check(await edge(key) === 200, 'the old key works during the grace period');
  await edgeUntil(rotated, 200, 10000);
  step('rotated with a one-hour grace: both keys work');

  // --- Revoke with the typed-name confirmation -------------------------------------------
  await page.goto(`${BASE}/dashboard/keys/${newId}`);
  await page.waitForFunction((n) => document.getElementById('key-title').textContent === n, name);
  await page.waitForFunction(() => document.getElementById('events-body').textContent.includes('key.rotated'));
  step('the new key\'s page lists the rotation that made it');
  await page.click('#revoke-open');
  check((await page.textContent('#revoke-dialog')).includes('cannot be undone'), 'the dialog says it cannot be undone');
  // The reason is the person's own (issue 18: none is filled in), and Revoke needs it.
  await page.fill('#revoke-reason', 'browser test done');
  await page.fill('#revoke-confirm', 'not the name');
  check(await page.isDisabled('#revoke-submit'), 'a wrong name keeps Revoke disabled');
  await page.fill('#revoke-confirm', name);
  check(await page.isEnabled('#revoke-submit'), 'the exact name enables Revoke');
  await page.click('#revoke-submit');
  await page.waitForFunction(() => document.querySelector('#key-status').textContent.includes('Revoked'));
  const took = await edgeUntil(rotated, 401, REVOKE_DEADLINE_MS);
  step(`revoked the new key in the dashboard; the edge refused it (401) after ${took} ms`);
  // The old key, still in its grace period, revoked too: immediately.
  await page.goto(keyUrl);
  await page.waitForFunction(() => document.querySelector('#key-status').textContent.includes('Rotating'));
  await page.click('#revoke-open');
  await page.fill('#revoke-reason', 'browser test done');
  await page.fill('#revoke-confirm', name);
  await page.click('#revoke-submit');
  await page.waitForFunction(() => document.querySelector('#key-status').textContent.includes('Revoked'));
  const tookOld = await edgeUntil(key, 401, REVOKE_DEADLINE_MS);
  step(`revoked the old key within its grace; the edge refused it (401) after ${tookOld} ms`);

  // --- Keys list: filters, search, screenshots ------------------------------------------
  await page.goto(`${BASE}/dashboard/keys`);
  // Active keys by default (issue 18): both keys made so far are revoked, so none is listed.
  await page.waitForFunction(() => document.querySelector('#keys-body').textContent.includes('No active keys'));
  check(await page.inputValue('#filter-status') === 'active', 'the list starts on active keys');
  await page.selectOption('#filter-status', 'revoked');
  await page.waitForFunction(() => document.querySelectorAll('#keys-body tr[data-key-id]').length === 2);
  await page.selectOption('#filter-status', 'all');
  await page.fill('#search', 'no such key');
  await page.waitForFunction(() => document.querySelector('#keys-body').textContent.includes('No key matches'));
  await page.fill('#search', '');
  await page.waitForFunction(() => document.querySelectorAll('#keys-body tr[data-key-id]').length === 2);
  // A few more keys so the list shows every status and permission level.
  for (const [n, level, envName] of [['billing worker', 'perm-read_write', 'production'], ['nightly export', 'perm-read_only', 'staging']]) {
    await page.click('#create-open');
    await page.fill('#key-name', n);
    await page.selectOption('#key-environment', envName);
    await page.check(`#${level}`);
    if (n === 'nightly export') {
      await page.click('#create-form details.advanced summary');
      await page.fill('#key-rate', '5000');
      await page.selectOption('#key-window', '3600');
    }
    await page.click('#create-submit');
    await page.waitForSelector('#created:not([hidden])');
    remember((await page.textContent('#created [data-secret]')).trim());
    await page.click('#created [data-done]');
  }
  await page.waitForFunction(() => document.querySelectorAll('#keys-body tr[data-key-id]').length === 4);
  await assertNoSecretStored('keys page after creating more keys');
  const nightly = await page.evaluate(async () => (await (await fetch('/v1/keys?search=nightly')).json()).data[0]);
  check(nightly.rate_limit === 5000 && nightly.rate_limit_window === 3600, `rate limit from the form: ${nightly.rate_limit}/${nightly.rate_limit_window}`);
  await screenshot('keys-list.png', { fullPage: true });
  await a11y(page, 'keys list');
  const listContrast = await lowContrast();
  check(listContrast.length === 0, `low contrast on the keys page: ${listContrast}`);
  await page.setViewportSize({ width: 375, height: 800 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
  check(overflow <= 375, `the keys page fits 375 px (scroll width ${overflow})`);
  await screenshot('keys-list-375px.png', { fullPage: true });
  await page.goto(keyUrl);
  await page.waitForSelector('svg.usage-chart');
  const keyOverflow = await page.evaluate(() => document.documentElement.scrollWidth);
  check(keyOverflow <= 375, `the key page fits 375 px (scroll width ${keyOverflow})`);
  await screenshot('key-page-with-usage-375px.png');
  await page.locator('section[aria-labelledby="usage-title"]').screenshot({ path: join(SHOTS, 'key-usage-chart-375px.png') });
  await page.setViewportSize({ width: 1280, height: 800 });
  step('filters and search work; screenshots at 1280 and 375 px');

  // --- Audit log and management tokens ----------------------------------------------------
  await page.goto(`${BASE}/dashboard/audit`);
  await page.waitForFunction(() => document.querySelector('#audit-body').textContent.includes('key.revoked'));
  await screenshot('audit-log.png');
  await a11y(page, 'audit log');
  const auditContrast = await lowContrast();
  check(auditContrast.length === 0, `low contrast on the audit page: ${auditContrast}`);
  await page.goto(`${BASE}/dashboard/tokens`);
  await page.waitForSelector('#tokens-body tr td[data-label="Name"]');
  await page.click('#token-open');
  await page.fill('#token-name', 'browser test token');
  // A token carries the scopes chosen for it, and minting one asks for the password again.
  await page.check('#admin-keys-read');
  await page.fill('#token-password', PASSWORD);
  await page.click('#token-form button[type=submit]');
  await page.waitForSelector('#token-created:not([hidden])');
  const token = (await page.textContent('#token-created [data-secret]')).trim();
  check(/^lnxm_[0-9a-f]{64}$/.test(token), 'a management token is shown once');
  remember(token);
  await screenshot('token-created-shown-once.png');
  await a11y(page, 'token created, shown once');
  await page.click('#token-created [data-done]');
  await page.click('button[aria-label="Revoke token browser test token"]');
  await page.click('#token-revoke-form button[type=submit]');
  await page.waitForFunction(() => [...document.querySelectorAll('#tokens-body tr')]
    .some((r) => r.textContent.includes('browser test token') && r.textContent.includes('Revoked')));
  const tokenCheck = await fetch(`${BASE}/v1/keys`, { headers: { Authorization: `Bearer ${token}` } });
  check(tokenCheck.status === 401, `the revoked token is refused (${tokenCheck.status})`);
  await assertNoSecretStored('tokens page');
  step('audit log lists the revocations; a token created (shown once) and revoked');

  // --- A cross-site form post is refused ---------------------------------------------------
  const before = await page.evaluate(async () => (await (await fetch('/v1/keys?limit=1000')).json()).data.length);
  // Another origin (same host, another port): the session cookie is SameSite=Strict, and
  // same host counts as the same site, so the browser does send it. The CSRF check must refuse.
  attacker = createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end(`<!doctype html><form id="f" method="post" action="${BASE}/v1/keys" enctype="text/plain">
<input type="hidden" name='{"name":"csrf","environment":"development","permission":"full_access","x":"' value='"}'>
</form><script>document.getElementById('f').submit()</script>`);
  });
  await new Promise((r) => attacker.listen(0, '127.0.0.1', r));
  const evil = `http://127.0.0.1:${attacker.address().port}/`;
  const posted = page.waitForRequest((r) => r.url() === `${BASE}/v1/keys` && r.method() === 'POST');
  const answered = page.waitForResponse((r) => r.url() === `${BASE}/v1/keys` && r.request().method() === 'POST');
  await page.goto(evil);
  const request = await posted;
  const response = await answered;
  const sent = await request.allHeaders();
  check((sent.cookie || '').includes('__Host-lynxo_session='), 'the cross-site post carried the session cookie');
  check(response.status() === 403, `the cross-site post was refused with 403, got ${response.status()}`);
  const problem = await response.json();
  check(problem.code === 'cross_site_request', `code ${problem.code}`);
  await page.goto(`${BASE}/dashboard/keys`);
  const after = await page.evaluate(async () => (await (await fetch('/v1/keys?limit=1000')).json()).data);
  check(after.length === before && !after.some((k) => k.name === 'csrf'), 'no key was created');
  step('a cross-site form post with the session cookie: 403 cross_site_request, no key created');

  // --- The 50-key limit ------------------------------------------------------------------
  // Fill the plan with keys made through the API (they are never shown in the dashboard), then
  // the page and the create form explain the limit and point at idle keys.
  const made = await page.evaluate(async () => {
    const list = await (await fetch('/v1/keys?status=active&limit=1000')).json();
    let n = 0;
    for (let i = list.active_keys; i < list.max_active_keys; i += 1) {
      const r = await fetch('/v1/keys', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: `filler ${i + 1}`, environment: 'development', permission: 'read_only' }),
      });
      if (r.status === 201) n += 1;
    }
    return n;
  });
  await page.reload();
  await page.waitForSelector('#limit-notice:not([hidden])');
  check((await page.textContent('#limit-notice')).includes('all of them are in use'), 'the page explains the limit');
  await page.click('#create-open');
  check(await page.isVisible('#create-limit'), 'the create form explains the limit');
  check(await page.isDisabled('#create-submit'), 'and does not offer to create');
  // Every key here was made minutes ago: none is suggested for retiring (keys::RETIRE_MIN_AGE;
  // tests/browser/dash_env.mjs checks the suggestions themselves).
  const idleLinks = await page.locator('#create-limit [data-candidate]').count();
  check(idleLinks === 0, `no key made minutes ago is suggested for retiring (${idleLinks} were)`);
  await screenshot('create-dialog-at-limit.png');
  await a11y(page, 'create dialog at the 50-key limit');
  await page.keyboard.press('Escape');
  step(`at the 50-key limit (${made} keys added through the API) the form explains why and suggests no key made minutes ago`);

  // --- Sign out -------------------------------------------------------------------------
  await page.click('#sign-out');
  await page.waitForURL(`${BASE}/sign-in`);
  await page.goto(`${BASE}/dashboard/keys`);
  check(page.url() === `${BASE}/sign-in`, 'signed out: the dashboard sends to sign-in');
  step('signed out');

  check(problems.length === 0, `console errors (CSP violations, script errors): ${problems.join(' | ')}`);
  console.log(`dashboard browser test passed in ${since()}`);
} catch (e) {
  console.error(`FAILED ${elapsed()}: ${e.stack || e}`);
  console.error(`page: ${page.url()}`);
  if (problems.length) console.error(`console errors: ${problems.join(' | ')}`);
  await page.screenshot({ path: join(SHOTS, 'failure.png'), fullPage: true }).catch(() => {});
  process.exitCode = 1;
} finally {
  if (attacker) attacker.close();
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
