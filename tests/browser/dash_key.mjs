// The key page and the shown-once panel (issue 18, points 1, 3, 4, 9 and 10's 404 and revoke
// reason) in real headless Chromium, against the real control plane and the real worker. Run by
// tests/tests/dash_key.rs with LYNXO_DASHBOARD_URL, LYNXO_EDGE_URL, LYNXO_EMAIL,
// LYNXO_PASSWORD, LYNXO_SCREENSHOTS, LYNXO_SECRETS_FILE and LYNXO_CHROMIUM (see dashboard.mjs).
// Every state it visits goes through axe (`a11y`) at 1,280 and 375 px.

import { appendFileSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { a11y, check, elapsed, env, launch, since, step } from './lib.mjs';

const BASE = env('LYNXO_DASHBOARD_URL').replace(/\/$/, '');
const EDGE = env('LYNXO_EDGE_URL').replace(/\/$/, '');
const EMAIL = env('LYNXO_EMAIL');
const PASSWORD = env('LYNXO_PASSWORD');
const SHOTS = env('LYNXO_SCREENSHOTS');
const SECRETS = env('LYNXO_SECRETS_FILE');
/** Usage arrives from the edge in batches: how long to wait for it on the key page. */
const USAGE_DEADLINE_MS = Number(env('LYNXO_USAGE_DEADLINE_MS', '45000'));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Calls the edge like a customer would; returns the status. */
async function edge(key, method = 'GET', path = '/v1/jobs') {
  const r = await fetch(`${EDGE}${path}`, {
    method,
    headers: { Authorization: `Bearer ${key}`, 'User-Agent': 'lynxo-dash-key-test/1' },
  });
  await r.arrayBuffer();
  return r.status;
}

/** Polls the edge until `key` gets `want`; returns how many answers were something else. */
async function edgeUntil(key, want, deadline = 15000) {
  const t0 = Date.now();
  let last;
  let other = 0;
  while (Date.now() - t0 < deadline) {
    last = await edge(key);
    if (last === want) return other;
    other += 1;
    await sleep(100);
  }
  throw new Error(`the edge answered ${last}, not ${want}, for ${deadline} ms`);
}

mkdirSync(SHOTS, { recursive: true });
const { context, page, problems, profile } = await launch({ width: 1280, height: 800 });
const remember = (secret) => appendFileSync(SECRETS, `${secret}\n`);
const activeId = () => page.evaluate(() => document.activeElement?.id || document.activeElement?.textContent?.trim());
const isOpen = (id) => page.evaluate((d) => document.getElementById(d).open, id);

/** Creates a key through the API (as a script would); returns its record with the key. */
async function apiKey(body) {
  return page.evaluate(async (b) => {
    const r = await fetch('/v1/keys', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(b) });
    return r.json();
  }, body);
}

/** Opens a key's page and waits for its data. */
async function openKey(id) {
  await page.goto(`${BASE}/dashboard/keys/${id}`);
  await page.waitForFunction(() => document.getElementById('key-title').textContent !== 'Key');
  await page.waitForFunction(() => !document.querySelector('#activity-body').textContent.includes('Loading'));
}

try {
  await page.goto(`${BASE}/sign-in`);
  await page.fill('#email', EMAIL);
  await page.fill('#password', PASSWORD);
  await page.click('#sign-in-form button[type=submit]');
  await page.waitForURL(`${BASE}/dashboard/keys`);
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
  step('signed in');

  // --- 1. The shown-once key asks before it is thrown away ------------------------------------
  const name = `deploy <b>bot</b> ${Date.now()}`;
  await page.click('#create-open');
  await page.fill('#key-name', name);
  await page.selectOption('#key-environment', 'development');
  await page.check('#perm-read_only');
  await page.click('#create-submit');
  await page.waitForSelector('#created:not([hidden])');
  const key = (await page.textContent('#created [data-secret]')).trim();
  check(/^lnx_dev_/.test(key), 'a development key is shown');
  remember(key);
  const meta = await page.textContent('#created [data-meta]');
  check(meta.includes(name) && meta.includes('Development') && meta.includes('Read Only'),
    `the panel names the key, its environment and permission: ${meta}`);
  await page.keyboard.press('Escape');
  await page.waitForSelector('#created [data-confirm]:not([hidden])');
  check(await isOpen('create-dialog'), 'Escape before copying does not close the dialog');
  check((await page.textContent('#created [data-secret]')).trim() === key, 'the key is still shown');
  check(await activeId() === 'Keep it open', `focus on "Keep it open", not ${await activeId()}`);
  await a11y(page, 'shown-once key: asked before closing uncopied');
  await page.click('#created [data-keep]');
  check(await page.isHidden('#created [data-confirm]'), 'Keep it open hides the question');
  await page.click('#create-dialog .dialog-head [data-close]');
  await page.waitForSelector('#created [data-confirm]:not([hidden])');
  check(await isOpen('create-dialog'), '× before copying does not close the dialog either');
  await page.click('#created [data-copy-env]');
  await page.waitForFunction(() => document.querySelector('#created [data-copy-status]').textContent.includes('Copied'));
  const clip = await page.evaluate(() => navigator.clipboard.readText());
  check(clip === `LYNXO_API_KEY=${key}`, 'Copy as LYNXO_API_KEY=... copies the assignment');
  check(await page.isHidden('#created [data-confirm]'), 'copying answers the question');
  await a11y(page, 'shown-once key: copied as LYNXO_API_KEY');
  await page.keyboard.press('Escape');
  await page.waitForFunction(() => !document.getElementById('create-dialog').open);
  // The page wipes the key at the dialog's `close` event, a task after it closed: wait for it.
  await page.waitForFunction(() => document.querySelector('#created [data-secret]').textContent === '')
    .catch(() => check(false, 'closing wipes the key'));
  const keyId = await page.evaluate((n) => [...document.querySelectorAll('#keys-body a')]
    .find((a) => a.textContent === n)?.getAttribute('href').split('/').pop(), name);
  check(/^[0-9a-f]{32}$/.test(keyId || ''), 'the new key is listed');
  step('shown-once: Escape and × ask until copied; name, environment, permission shown; LYNXO_API_KEY= copied');

  // The same question in the rotate dialog, and "Close without copying" really closes.
  await openKey(keyId);
  await page.click('#rotate-open');
  await page.selectOption('#grace', '3600');
  await page.click('#rotate-form button[type=submit]');
  await page.waitForSelector('#rotated:not([hidden])');
  const rotated = (await page.textContent('#rotated [data-secret]')).trim();
  remember(rotated);
  check((await page.textContent('#rotated [data-meta]')).includes('Development'), 'the rotated key is named too');
  await page.keyboard.press('Escape');
  await page.waitForSelector('#rotated [data-confirm]:not([hidden])');
  check(await isOpen('rotate-dialog'), 'Escape asks in the rotate dialog');
  await page.click('#rotated [data-discard]');
  await page.waitForFunction(() => !document.getElementById('rotate-dialog').open);
  check(await page.textContent('#rotated [data-secret]') === '', '"Close without copying" wipes the key');
  const newId = await page.evaluate(async (id) => (await (await fetch(`/v1/keys/${id}`)).json()).rotated_to, keyId);
  check(/^[0-9a-f]{32}$/.test(newId || ''), 'the rotation made a new key');
  step('rotate: Escape asks; Close without copying closes and wipes');

  // --- 9. Rotation is easy to follow ---------------------------------------------------------
  // The old key: a "rotated" chip naming its successor, and the grace countdown.
  await openKey(keyId);
  const oldChip = page.locator('#key-status .badge.rotated a');
  check((await oldChip.getAttribute('href')) === `/dashboard/keys/${newId}`, 'the old key\'s chip links the new key');
  check((await oldChip.textContent()).includes(name), 'by its name, not its id');
  check(!(await oldChip.textContent()).includes(newId), 'no raw id in the link');
  const countdownText = await page.textContent('#key-facts');
  check(/Stops working in (59 min|1 h)/.test(countdownText), `a countdown to the end of the grace: ${countdownText}`);
  const first = await page.textContent('#grace-countdown');
  await page.waitForFunction((t) => document.getElementById('grace-countdown').textContent !== t, first);
  check(await page.isHidden('#revoked-banner'), 'no revoked banner during the grace');
  await a11y(page, 'old key in its rotation grace');
  // The new key: the chip back, names in its links, and its rotate-by date.
  await openKey(newId);
  const newChip = page.locator('#key-status .badge.rotated a');
  check((await newChip.getAttribute('href')) === `/dashboard/keys/${keyId}` && (await newChip.textContent()).includes(name),
    'the new key\'s chip links the old one by name');
  const details = await page.textContent('#key-details');
  check(!details.includes(keyId), 'the details show no raw key id of another key');
  const newKey = await page.evaluate(async (id) => (await fetch(`/v1/keys/${id}`)).json(), newId);
  const rotateBy = await page.evaluate((at) => new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' })
    .format(new Date((at + 90 * 86400) * 1000)), newKey.created_at);
  check((await page.textContent('#key-facts')).includes(`Rotate by ${rotateBy}`), `"Rotate by ${rotateBy}" beside the key`);
  check(details.includes('Rotate by') && details.includes('90 days after its rotation'), 'and in its details');
  await a11y(page, 'new key made by a rotation');
  step('rotation: chips link old and new by name, countdown ticks, rotate-by date shown');

  // --- 3. A revoked key's page --------------------------------------------------------------
  // Use before the revocation: allowed requests and a 403 (a read-only key writing).
  await edgeUntil(rotated, 200);
  check(await edge(rotated, 'POST', '/v1/jobs') === 403, 'a read-only key cannot write: 403');
  const t0 = Date.now();
  for (;;) {
    await openKey(newId);
    const rows = await page.$$eval('#activity-body tr.activity', (r) => r.map((x) => x.textContent));
    if (rows.some((t) => t.includes('POST /v1/jobs'))) break;
    check(Date.now() - t0 < USAGE_DEADLINE_MS, 'the 403 did not reach the activity log');
    await sleep(1000);
  }
  // 4: activity times to the second and the reason of a denial.
  const denied = await page.$$eval('#activity-body tr.activity', (rows) => rows
    .filter((r) => r.textContent.includes('POST /v1/jobs'))
    .map((r) => ({ reason: r.querySelector('td[data-label="Reason"]').textContent, time: r.querySelector('td[data-label="Time"]').textContent })));
  check(denied[0].reason.includes('lacks the scope'), `the 403's reason: ${denied[0].reason}`);
  check(/\d{1,2}:\d{2}:\d{2}/.test(denied[0].time), `activity times have seconds: ${denied[0].time}`);
  // The 24 h count before the revocation: at least that 200 and that 403, once counted.
  let usedBefore = 0;
  for (const t = Date.now(); usedBefore < 2; await sleep(500)) {
    usedBefore = (await page.evaluate(async (id) => (await fetch(`/v1/keys/${id}`)).json(), newId)).requests_24h;
    check(Date.now() - t < USAGE_DEADLINE_MS, 'the requests were not counted');
  }

  // 10: the revoke dialog has no reason filled in, and Revoke needs one.
  await page.click('#revoke-open');
  check(await page.inputValue('#revoke-reason') === '', 'no reason is filled in');
  check(await activeId() === 'revoke-reason', 'focus on the reason');
  await page.fill('#revoke-confirm', name);
  check(await page.isDisabled('#revoke-submit'), 'the name alone does not enable Revoke');
  await page.fill('#revoke-reason', 'retired with the deploy bot');
  check(await page.isEnabled('#revoke-submit'), 'name and reason enable Revoke');
  await a11y(page, 'revoke dialog, filled in');
  await page.click('#revoke-submit');
  await page.waitForSelector('#revoked-banner:not([hidden])');
  await page.waitForFunction(() => document.activeElement?.id === 'revoked-banner');
  const banner = await page.textContent('#revoked-banner');
  check(banner.includes('retired with the deploy bot') && banner.includes('attempts') && /Revoked .*\d/.test(banner),
    `the banner says when, why and the attempts: ${banner}`);
  check(await page.evaluate(() => [...document.getElementById('settings-form').elements].every((c) => c.disabled)), 'settings are read-only');
  check(await page.isHidden('#settings-save'), 'no Save button');
  check(await page.isHidden('#revoke-open') && await page.isHidden('#rotate-open'), 'no Rotate or Revoke on a revoked key');
  const patched = await page.evaluate(async (id) => (await fetch(`/v1/keys/${id}`, {
    method: 'PATCH', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'renamed' }),
  })).json(), newId);
  check(patched.code === 'key_revoked', `the API refuses a change too: ${patched.code}`);
  step('revoked: banner focused, reason required, settings read-only (the API says key_revoked)');

  // Attempts after the revocation: counted apart, listed apart.
  // Answers the edge gave before the revocation reached it are use, not attempts.
  const served = await edgeUntil(rotated, 401);
  for (let i = 0; i < 4; i += 1) check(await edge(rotated) === 401, 'the revoked key is refused');
  const t1 = Date.now();
  let after;
  for (;;) {
    after = await page.evaluate(async (id) => (await fetch(`/v1/keys/${id}`)).json(), newId);
    if (after.refused_since_revocation >= 5 && after.requests_24h === usedBefore + served) break;
    check(Date.now() - t1 < USAGE_DEADLINE_MS, `attempts ${after.refused_since_revocation} (want 5 or more), `
      + `24 h count ${after.requests_24h} (want ${usedBefore} + ${served}): the attempts are not counted apart`);
    await sleep(1000);
  }
  await openKey(newId);
  await page.waitForFunction(() => document.getElementById('attempts-body').querySelectorAll('tr.activity').length > 0);
  check((await page.textContent('#revoked-banner')).includes(`${after.refused_since_revocation} attempts`), 'the banner counts the attempts');
  const split = await page.evaluate(() => ({
    main: [...document.querySelectorAll('#activity-body tr.activity')].map((r) => r.textContent),
    attempts: [...document.querySelectorAll('#attempts-body tr.activity')].map((r) => r.textContent),
  }));
  check(split.attempts.every((t) => t.includes('401')), 'the attempts table lists the 401s');
  check(!split.main.some((t) => t.includes('401')), 'the activity before the revocation has none of them');
  check((await page.textContent('#key-details')).includes('before the revocation'), 'the 24 h count says what it counts');
  await page.screenshot({ path: join(SHOTS, 'key-revoked.png'), fullPage: true });
  await a11y(page, 'revoked key with attempts since');
  step(`revoked key: ${after.refused_since_revocation} attempts apart from the activity and the 24 h count`);

  // --- 4. The key page is short, its actions on top -----------------------------------------
  const busy = await apiKey({ name: 'busy reader', environment: 'development', permission: 'read_only' });
  remember(busy.key);
  await edgeUntil(busy.key, 200);
  for (let i = 0; i < 30; i += 1) {
    await edge(busy.key);
    await edge(busy.key, 'POST', '/v1/jobs');
  }
  const t2 = Date.now();
  for (;;) {
    const n = await page.evaluate(async (id) => (await (await fetch(`/v1/keys/${id}/activity?limit=60`)).json()).data.length, busy.id);
    if (n >= 20) break;
    check(Date.now() - t2 < USAGE_DEADLINE_MS, `only ${n} activity rows arrived`);
    await sleep(1000);
  }
  await openKey(busy.id);
  await page.waitForSelector('svg.usage-chart');
  const title = await page.$eval('.key-head', (h) => h.textContent);
  check(title.includes('Rotate key') && title.includes('Revoke key'), 'Rotate and Revoke are in the title row');
  check(await page.$$eval('#activity-body tr.activity', (r) => r.length) === 10, 'ten activity rows');
  check(await page.isVisible('#activity-all'), '"View all" offered');
  const heights = {};
  for (const width of [1280, 375]) {
    await page.setViewportSize({ width, height: 800 });
    heights[width] = await page.evaluate(() => document.scrollingElement.scrollHeight);
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    check(wide <= width, `the key page fits ${width} px (${wide})`);
  }
  await page.setViewportSize({ width: 375, height: 800 });
  await page.screenshot({ path: join(SHOTS, 'key-page-375px.png'), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.screenshot({ path: join(SHOTS, 'key-page.png'), fullPage: true });
  await a11y(page, 'key page, ten activity rows');
  await page.click('#activity-all');
  await page.waitForFunction(() => document.querySelectorAll('#activity-body tr.activity').length > 10);
  const all = {};
  for (const width of [1280, 375]) {
    await page.setViewportSize({ width, height: 800 });
    all[width] = await page.evaluate(() => document.scrollingElement.scrollHeight);
  }
  await page.setViewportSize({ width: 1280, height: 800 });
  await a11y(page, 'key page, all activity');
  console.log(`KEY PAGE HEIGHT scrollHeight px: 10 rows ${heights[1280]} at 1280, ${heights[375]} at 375; `
    + `after View all (${await page.$$eval('#activity-body tr.activity', (r) => r.length)} rows) ${all[1280]} at 1280, ${all[375]} at 375`);
  step('key page: actions in the title row, ten rows and View all');

  // --- 10. A key id of no key of the account is a real 404 ----------------------------------
  const missing = await page.goto(`${BASE}/dashboard/keys/00112233445566778899aabbccddeeff`);
  check(missing.status() === 404, `an unknown key answers 404, not ${missing.status()}`);
  check((await page.textContent('h1')) === 'Not found', 'a Not found page');
  check(await page.locator('#revoke-open, #rotate-open, #settings-form').count() === 0, 'with no buttons that act');
  await a11y(page, 'key page 404');
  step('unknown key: 404 page');

  check(problems.length === 0, `console errors: ${problems.join(' | ')}`);
  console.log(`dash_key browser test passed in ${since()}`);
} catch (e) {
  console.error(`FAILED ${elapsed()}: ${e.stack || e}`);
  console.error(`page: ${page.url()}`);
  if (problems.length) console.error(`console errors: ${problems.join(' | ')}`);
  await page.screenshot({ path: join(SHOTS, 'failure.png'), fullPage: true }).catch(() => {});
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
