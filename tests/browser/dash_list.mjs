// Issue 18, points 5 to 7, in real headless Chromium against the real control plane and edge
// worker (run by tests/tests/dash_list.rs, which passes the same variables as dashboard.mjs):
//
//   5. the keys list: active keys by default (all statuses on request), sortable columns
//      (aria-sort, keyboard), row actions, bulk revoke of several keys with one typed
//      confirmation and ONE API call, after which the edge refuses every one of them; an Expires
//      column with a warning badge; search by name, hint and id;
//   6. filters in the URL: Back, Forward and reload restore them and the list matches the
//      controls; "N keys match" in a live region;
//   7. field-level errors (message next to the field, aria-invalid, aria-describedby, focus) in
//      the create dialog, the key page's settings and the token dialog; no past expiry date
//      (the picker's min, and the server).
//
// axe audits every state visited at 1,280 and 375 px. Saves keys-list-bulk.png.

import { appendFileSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { a11y, check, elapsed, env, launch, since, step } from './lib.mjs';

const BASE = env('LYNXO_DASHBOARD_URL').replace(/\/$/, '');
const EDGE = env('LYNXO_EDGE_URL').replace(/\/$/, '');
const EMAIL = env('LYNXO_EMAIL');
const PASSWORD = env('LYNXO_PASSWORD');
const SHOTS = env('LYNXO_SCREENSHOTS');
const SECRETS = env('LYNXO_SECRETS_FILE');
/** How long a revocation may take to reach the edge. */
const REVOKE_DEADLINE_MS = 15000;
const DAY = 86400;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function edgeStatus(key) {
  const r = await fetch(`${EDGE}/v1/jobs`, { headers: { Authorization: `Bearer ${key}` } });
  await r.arrayBuffer();
  return r.status;
}

/** Polls the edge until `key` gets `want`. */
async function edgeUntil(key, want) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < REVOKE_DEADLINE_MS) {
    last = await edgeStatus(key);
    if (last === want) return Date.now() - t0;
    await sleep(100);
  }
  throw new Error(`the edge answered ${last}, not ${want}, for ${REVOKE_DEADLINE_MS} ms`);
}

mkdirSync(SHOTS, { recursive: true });
const { context, page, problems, profile } = await launch({ width: 1280, height: 800 });

/** The API through the page's session. */
const call = (method, path, body) => page.evaluate(async ([m, p, b]) => {
  const init = { method: m, headers: { 'Content-Type': 'application/json' } };
  if (b !== null) init.body = JSON.stringify(b);
  const r = await fetch(p, init);
  return { status: r.status, body: await r.json().catch(() => null) };
}, [method, path, body ?? null]);

/** The names of the listed keys, in the order shown. */
const listed = () => page.$$eval('#keys-body tr[data-key-id] td[data-label=Name] a', (as) => as.map((a) => a.textContent));

/** Waits until the list shows exactly `names` (in any order unless `ordered`). */
async function waitForList(names, ordered = false) {
  await page.waitForFunction(([want, inOrder]) => {
    const got = [...document.querySelectorAll('#keys-body tr[data-key-id] td[data-label=Name] a')].map((a) => a.textContent);
    const a = inOrder ? got : [...got].sort();
    const b = inOrder ? want : [...want].sort();
    return a.length === b.length && a.every((n, i) => n === b[i]);
  }, [names, ordered]);
}

/** The field-level error state of `selector`: its message, aria-invalid, and whether it has focus. */
const fieldState = (selector) => page.evaluate((sel) => {
  const field = document.querySelector(sel);
  const ids = (field.getAttribute('aria-describedby') || '').split(/\s+/);
  const note = ids.map((id) => document.getElementById(id)).find((n) => n?.classList.contains('field-error'));
  return {
    message: note?.textContent ?? '',
    // The message sits right after the field (or in its group), not at the bottom of the form.
    next: Boolean(note) && (field.nextElementSibling === note || (field.tagName === 'FIELDSET' && field.contains(note))),
    invalid: field.getAttribute('aria-invalid'),
    focused: document.activeElement === field || (field.tagName === 'FIELDSET' && field.contains(document.activeElement)),
  };
}, selector);

async function expectFieldError(selector, words, { focused = true } = {}) {
  await page.waitForFunction((sel) => {
    const f = document.querySelector(sel);
    return (f.getAttribute('aria-describedby') || '').includes('-field-error');
  }, selector);
  const s = await fieldState(selector);
  check(s.message.includes(words), `${selector}: the message "${s.message}" does not say "${words}"`);
  check(s.next, `${selector}: the message is not next to the field`);
  if (!selector.includes('fieldset')) check(s.invalid === 'true', `${selector}: aria-invalid is ${s.invalid}`);
  if (focused) check(s.focused, `${selector}: focus is on ${await page.evaluate(() => document.activeElement?.id || document.activeElement?.tagName)}`);
}

try {
  step('sign in');
  await page.goto(`${BASE}/sign-in`);
  await page.fill('#email', EMAIL);
  await page.fill('#password', PASSWORD);
  await page.click('#sign-in-form button[type=submit]');
  await page.waitForURL(`${BASE}/dashboard/keys`);

  step('keys for the walk, made through the API');
  const now = Math.floor(Date.now() / 1000);
  const made = {};
  for (const [name, environment, extra] of [
    ['alpha', 'production', { expires_at: now + 3 * DAY + 3600 }],
    ['bravo', 'staging', {}],
    ['charlie', 'staging', {}],
    ['worker 1', 'development', {}],
    ['worker 2', 'development', {}],
    ['worker 3', 'development', {}],
    ['retired', 'development', {}],
  ]) {
    const r = await call('POST', '/v1/keys', { name, environment, permission: 'read_write', ...extra });
    check(r.status === 201, `create ${name}: ${r.status} ${JSON.stringify(r.body)}`);
    made[name] = r.body;
    appendFileSync(SECRETS, `${r.body.key}\n`);
  }
  const revokedOne = await call('POST', `/v1/keys/${made.retired.id}/revoke`, { reason: 'test' });
  check(revokedOne.status === 200, 'revoke "retired"');
  const workers = ['worker 1', 'worker 2', 'worker 3'];
  for (const w of workers) check(await edgeStatus(made[w].key) === 200, `the edge takes ${w} before the bulk revoke`);

  // --- 5: active by default, all on request ---------------------------------------------
  await page.goto(`${BASE}/dashboard/keys`);
  const active = ['alpha', 'bravo', 'charlie', ...workers];
  await waitForList(active);
  check(await page.inputValue('#filter-status') === 'active', 'the status filter starts on Active');
  await page.waitForFunction(() => document.querySelector('#match-count').textContent === '6 keys match.');
  check(await page.getAttribute('#match-count', 'role') === 'status', 'the match count is a live region');
  await a11y(page, 'keys list, active keys by default');
  await page.selectOption('#filter-status', 'all');
  await waitForList([...active, 'retired']);
  check(new URL(page.url()).searchParams.get('status') === 'all', `the URL carries the status: ${page.url()}`);
  await page.waitForFunction(() => document.querySelector('#match-count').textContent === '7 keys match.');
  const retiredRow = `tr[data-key-id="${made.retired.id}"]`;
  check(await page.locator(`${retiredRow} input[type=checkbox]`).count() === 0, 'a revoked key cannot be selected');
  check(await page.locator(`${retiredRow} button:has-text("Revoke")`).count() === 0, 'a revoked key has no Revoke action');
  await a11y(page, 'keys list, all statuses');
  step('active keys by default; "All statuses" shows the revoked one too; "N keys match" announced');

  // --- 5: Expires column with a warning badge ----------------------------------------------
  const alphaRow = `tr[data-key-id="${made.alpha.id}"]`;
  const badge = await page.textContent(`${alphaRow} td[data-label=Expires] .badge.warn`);
  check(/Expires in [34] days/.test(badge), `alpha's expiry badge: ${badge}`);
  check((await page.textContent(`tr[data-key-id="${made.bravo.id}"] td[data-label=Expires]`)).includes('Never'), 'a key without expiry says Never');
  check(await page.locator(`tr[data-key-id="${made.bravo.id}"] td[data-label=Expires] .badge`).count() === 0, 'no badge without an expiry');
  step(`Expires column: "${badge}" on a key expiring in 3 days`);

  // --- 5: sortable columns, by mouse and keyboard -----------------------------------------
  await page.selectOption('#filter-status', 'active');
  await waitForList(active);
  const created = await page.getAttribute('th[data-sort=created]', 'aria-sort');
  check(created === 'descending', `the default sort is newest first: aria-sort ${created}`);
  await page.click('th[data-sort=name] button');
  await waitForList(['alpha', 'bravo', 'charlie', 'worker 1', 'worker 2', 'worker 3'], true);
  check(await page.getAttribute('th[data-sort=name]', 'aria-sort') === 'ascending', 'Name is aria-sort ascending');
  check(await page.getAttribute('th[data-sort=created]', 'aria-sort') === null, 'only the sorted column has aria-sort');
  await page.focus('th[data-sort=name] button');
  await page.keyboard.press('Enter');
  await waitForList(['worker 3', 'worker 2', 'worker 1', 'charlie', 'bravo', 'alpha'], true);
  check(await page.getAttribute('th[data-sort=name]', 'aria-sort') === 'descending', 'Enter on Name sorts descending');
  check(await page.inputValue('#filter-sort') === 'name-desc', 'the sort control follows the header');
  await page.keyboard.press('Space');
  await waitForList(['alpha', 'bravo', 'charlie', 'worker 1', 'worker 2', 'worker 3'], true);
  await page.click('th[data-sort=expires] button');
  check((await listed())[0] === 'alpha', 'Expires ascending puts the expiring key first');
  await a11y(page, 'keys list sorted by expiry');
  await page.selectOption('#filter-sort', 'created-desc');
  step('columns sort by click and keyboard, with aria-sort on the sorted header only');

  // --- 5: search by name, hint and id ------------------------------------------------------
  await page.fill('#search', 'ALPH');
  await waitForList(['alpha']);
  await page.waitForFunction(() => document.querySelector('#match-count').textContent === '1 key matches.');
  const tail = made.bravo.hint.slice(-4);
  await page.fill('#search', tail);
  await page.waitForFunction((id) => [...document.querySelectorAll('#keys-body tr[data-key-id]')].some((r) => r.dataset.keyId === id), made.bravo.id);
  await page.fill('#search', made.charlie.id.slice(0, 14));
  await waitForList(['charlie']);
  await a11y(page, 'keys list searched by id');
  await page.fill('#search', '');
  await waitForList(active);
  step(`search finds a key by name, by its hint's tail (${tail}) and by id`);

  // --- 6: filters in the URL survive Back, Forward and reload ------------------------------
  await page.goto(`${BASE}/dashboard/keys`);
  await waitForList(active);
  await page.selectOption('#filter-environment', 'staging');
  await waitForList(['bravo', 'charlie']);
  check(new URL(page.url()).searchParams.get('environment') === 'staging', `URL: ${page.url()}`);
  await page.selectOption('#filter-environment', 'production');
  await waitForList(['alpha']);
  await page.goBack();
  await waitForList(['bravo', 'charlie']);
  check(await page.inputValue('#filter-environment') === 'staging', 'Back restores the Staging filter');
  await page.waitForFunction(() => document.querySelector('#match-count').textContent === '2 keys match.');
  await page.goForward();
  await waitForList(['alpha']);
  check(await page.inputValue('#filter-environment') === 'production', 'Forward restores Production');
  await page.goBack();
  await waitForList(['bravo', 'charlie']);
  // Leave for a key's page and come back: the filter and the list still agree.
  await page.click(`tr[data-key-id="${made.bravo.id}"] td[data-label=Name] a`);
  await page.waitForURL(`${BASE}/dashboard/keys/${made.bravo.id}`);
  await page.goBack();
  await waitForList(['bravo', 'charlie']);
  check(await page.inputValue('#filter-environment') === 'staging', 'after the key page, Back shows Staging');
  await page.reload();
  await waitForList(['bravo', 'charlie']);
  check(await page.inputValue('#filter-environment') === 'staging', 'reload keeps Staging');
  await a11y(page, 'keys list filtered to staging after Back');
  // A hand-made URL with values the page does not know falls back to the defaults.
  await page.goto(`${BASE}/dashboard/keys?environment=%3Cscript%3E&status=nope&sort=x`);
  await waitForList(active);
  check(await page.inputValue('#filter-environment') === '' && await page.inputValue('#filter-status') === 'active',
    'unknown URL values fall back to the defaults');
  step('filters live in the URL: Back, Forward, a key page round trip and reload restore them');

  // --- 5: row action and bulk revoke with one confirmation, one API call --------------------
  await page.goto(`${BASE}/dashboard/keys`);
  await waitForList(active);
  await page.click(`${alphaRow} button:has-text("Revoke")`);
  check(await page.textContent('#bulk-title') === 'Revoke 1 key', 'the row action opens the revoke dialog for one key');
  check(await page.textContent('#bulk-phrase') === 'revoke 1 key', 'one key, one phrase');
  await a11y(page, 'revoke dialog from a row action');
  await page.keyboard.press('Escape');
  await page.waitForFunction(() => !document.getElementById('bulk-dialog').open);
  check(await page.evaluate(() => document.activeElement?.textContent) === 'Revoke', 'focus returns to the row action');

  for (const w of workers) await page.check(`tr[data-key-id="${made[w].id}"] input[type=checkbox]`);
  await page.waitForFunction(() => document.querySelector('#bulk-count').textContent === '3 keys selected');
  check(await page.evaluate(() => document.getElementById('select-all').indeterminate), 'select-all shows a partial selection');
  await page.screenshot({ path: join(SHOTS, 'keys-list-bulk.png'), fullPage: true });
  await a11y(page, 'keys list with a bulk selection');
  const calls = [];
  page.on('request', (r) => {
    if (r.method() === 'POST' && r.url().includes('/v1/keys/')) calls.push(new URL(r.url()).pathname);
  });
  await page.click('#bulk-open');
  const phrase = await page.textContent('#bulk-phrase');
  check(phrase === 'revoke 3 keys', `the phrase: ${phrase}`);
  const items = await page.$$eval('#bulk-list li', (lis) => lis.map((l) => l.textContent));
  check(items.length === 3 && workers.every((w) => items.some((i) => i.startsWith(w))), `the dialog lists the set: ${items}`);
  check(await page.evaluate(() => document.activeElement?.id) === 'bulk-reason', 'focus starts on the reason');
  await a11y(page, 'bulk revoke dialog');
  // Nothing typed: both fields are refused where they are, focus on the first.
  await page.click('#bulk-submit');
  await expectFieldError('#bulk-reason', 'Say why');
  await expectFieldError('#bulk-confirm', 'revoke 3 keys', { focused: false });
  await a11y(page, 'bulk revoke dialog with field errors');
  await page.fill('#bulk-reason', 'retiring the workers');
  await page.fill('#bulk-confirm', 'revoke 2 keys');
  await page.click('#bulk-submit');
  await expectFieldError('#bulk-confirm', 'revoke 3 keys');
  check(await page.getAttribute('#bulk-reason', 'aria-invalid') === null, 'a corrected field is no longer invalid');
  check(calls.length === 0, `nothing was sent before the confirmation: ${calls}`);
  await page.fill('#bulk-confirm', 'revoke 3 keys');
  await page.click('#bulk-submit');
  await page.waitForFunction(() => document.querySelector('#bulk-done').textContent.startsWith('3 keys revoked'));
  await waitForList(['alpha', 'bravo', 'charlie']);
  check(await page.evaluate(() => document.activeElement?.id) === 'bulk-done', 'focus moves to the result');
  check(calls.length === 1 && calls[0] === '/v1/keys/bulk-revoke', `one API call for the set: ${JSON.stringify(calls)}`);
  for (const w of workers) {
    const took = await edgeUntil(made[w].key, 401);
    step(`the edge refuses ${w} (401) ${took} ms after the bulk revoke`);
  }
  const audit = await call('GET', '/v1/audit-events?limit=20');
  const reasons = audit.body.data.filter((e) => e.action === 'key.revoked' && e.details?.reason === 'retiring the workers');
  check(reasons.length === 3, `three key.revoked events with the reason: ${reasons.length}`);
  await a11y(page, 'keys list after the bulk revoke');
  step('bulk revoke: three keys, one typed confirmation, one API call, all refused at the edge');

  // --- 7: field-level errors in the create dialog -------------------------------------------
  await page.click('#create-open');
  const tomorrow = new Date(Date.now() + DAY * 1000).toISOString().slice(0, 10);
  check(await page.getAttribute('#key-expiry', 'min') === tomorrow, 'the date picker starts tomorrow');
  await page.click('#create-submit');
  await expectFieldError('#key-name', 'Give the key a name');
  await a11y(page, 'create dialog, name missing');
  await page.fill('#key-name', 'form errors');
  await page.check('#perm-custom');
  await page.click('#create-form details.advanced summary');
  await page.fill('#key-expiry', '2020-01-01');
  await page.click('#create-submit');
  await expectFieldError('#custom-scopes fieldset', 'at least one scope');
  await expectFieldError('#key-expiry', 'after today', { focused: false });
  await page.check('#perm-read_only');
  await page.click('#create-submit');
  await expectFieldError('#key-expiry', 'after today');
  check(await page.getAttribute('#key-name', 'aria-invalid') === null, 'the name is no longer marked invalid');
  await page.fill('#key-expiry', '');
  await page.fill('#key-rate', '999999');
  await page.click('#create-submit');
  // The server refuses the limit; the answer lands next to the field, in plain words.
  await expectFieldError('#key-rate', 'Your plan allows up to');
  const rateMessage = (await fieldState('#key-rate')).message;
  check(!rateMessage.includes('rate_limit'), `the message reads like API output: ${rateMessage}`);
  await a11y(page, 'create dialog, rate limit refused by the server');
  await page.keyboard.press('Escape');
  // The server refuses a past expiry too, whatever the page sends.
  const past = await call('POST', '/v1/keys', { name: 'past', environment: 'development', permission: 'read_only', expires_at: now - 60 });
  check(past.status === 422 && past.body.field === 'expires_at', `a past expiry through the API: ${past.status}`);
  step('create dialog: name, scopes, past date and the server\'s rate-limit refusal shown at their fields, focus on the first');

  // --- 7: field-level errors in the key page's settings --------------------------------------
  await page.goto(`${BASE}/dashboard/keys/${made.alpha.id}`);
  await page.waitForFunction(() => document.querySelector('#set-name').value === 'alpha');
  await page.fill('#set-name', '');
  await page.click('#settings-form button[type=submit]');
  await expectFieldError('#set-name', 'needs a name');
  await page.fill('#set-name', 'alpha');
  await page.fill('#set-rate', '999999');
  await page.click('#settings-form button[type=submit]');
  await expectFieldError('#set-rate', 'Your plan allows up to');
  check(await page.getAttribute('#set-name', 'aria-invalid') === null, 'the name is valid again');
  await a11y(page, 'key settings, rate limit refused');
  step('key settings: a missing name and a refused limit shown at their fields, with focus');

  // --- 7: field-level errors in the token dialog ---------------------------------------------
  await page.goto(`${BASE}/dashboard/tokens`);
  await page.waitForSelector('#tokens-body tr');
  await page.click('#token-open');
  await page.click('#token-form button[type=submit]');
  await expectFieldError('#token-name', 'Give the token a name');
  await expectFieldError('#token-form fieldset.scope-group', 'at least one scope', { focused: false });
  await expectFieldError('#token-password', 'Enter your password', { focused: false });
  await a11y(page, 'token dialog, fields missing');
  await page.fill('#token-name', 'list test');
  await page.check('#admin-keys-read');
  await page.fill('#token-password', 'not the password');
  await page.click('#token-form button[type=submit]');
  await expectFieldError('#token-password', 'password is not correct');
  check(await page.getAttribute('#token-name', 'aria-invalid') === null, 'the name is valid again');
  await a11y(page, 'token dialog, wrong password');
  step('token dialog: missing fields and a wrong password shown at their fields, with focus');

  check(problems.length === 0, `console errors (CSP violations, script errors): ${problems.join(' | ')}`);
  console.log(`dash_list browser test passed in ${since()}`);
} catch (e) {
  console.error(`FAILED ${elapsed()}: ${e.stack || e}`);
  console.error(`page: ${page.url()}`);
  if (problems.length) console.error(`console errors: ${problems.join(' | ')}`);
  await page.screenshot({ path: join(SHOTS, 'dash-list-failure.png'), fullPage: true }).catch(() => {});
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
