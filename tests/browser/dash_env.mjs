// Environment mistakes, readable audit and honest numbers (issue 18, points 2, 8 and 10) in real
// headless Chromium against the real control plane and worker. Run by tests/tests/dash_env.rs,
// which has already sent a production key to the development edge and passes:
//
//   LYNXO_DASHBOARD_URL      the control plane (its public origin)
//   LYNXO_EDGE_URL           the worker; also the control plane's development API base URL
//   LYNXO_EMAIL, LYNXO_PASSWORD   the user `control init` created
//   LYNXO_WRONG_ENV_KEY_ID   the production key the development edge refused
//   LYNXO_SCREENSHOTS        folder for the screenshots
//   LYNXO_CHROMIUM           the browser (default /usr/bin/chromium)
//
// Exits 0 when every check passed; prints one line per step. Every state visited is audited
// with axe-core at 1,280 and 375 px.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { a11y, check, env, launch, step } from './lib.mjs';

const BASE = env('LYNXO_DASHBOARD_URL').replace(/\/$/, '');
const EDGE = env('LYNXO_EDGE_URL').replace(/\/$/, '');
const EMAIL = env('LYNXO_EMAIL');
const PASSWORD = env('LYNXO_PASSWORD');
const WRONG_ENV_KEY = env('LYNXO_WRONG_ENV_KEY_ID');
const SCOPES_KEY = env('LYNXO_SCOPES_KEY_ID');
const SHOTS = env('LYNXO_SCREENSHOTS');

mkdirSync(SHOTS, { recursive: true });
const { context, page, problems } = await launch({ width: 1280, height: 900 });
const screenshot = (name) => page.screenshot({ path: join(SHOTS, name), fullPage: true });

try {
  step('sign in');
  await page.goto(`${BASE}/sign-in`);
  await page.fill('#email', EMAIL);
  await page.fill('#password', PASSWORD);
  await page.click('#sign-in-form button[type=submit]');
  await page.waitForURL(`${BASE}/dashboard/keys`);
  await page.waitForSelector('#key-count:not(:empty)');

  // --- Point 2: the environment refusal is on the key's page ----------------------------
  step('the production key refused at the development edge shows the refusal in its activity');
  await page.goto(`${BASE}/dashboard/keys/${WRONG_ENV_KEY}`);
  await page.waitForFunction(() => !document.querySelector('#activity-body').textContent.includes('Loading'));
  await page.waitForFunction(() => document.querySelector('#key-details').textContent.includes('Last used'));
  const activity = await page.$$eval('#activity-body tr.activity', (rows) => rows.map((r) => ({
    text: r.textContent,
    reason: r.querySelector('[data-reason]')?.dataset.reason,
  })));
  check(activity.length === 3, `three refusals in the activity: ${JSON.stringify(activity)}`);
  check(activity.every((a) => a.reason === 'wrong_environment' && a.text.includes('wrong environment') && a.text.includes('401')),
    `each says why: ${JSON.stringify(activity)}`);
  const details = await page.textContent('#key-details');
  check(!/Last used\s*Never/.test(details), `the key no longer reads "Last used: Never": ${details}`);
  await screenshot('key-wrong-environment.png');
  await a11y(page, 'key page with wrong-environment refusals');

  // --- Point 2: "Try it" names the key's own environment's API --------------------------
  step('a new development key\'s "Try it" line names the development API, and works');
  await page.goto(`${BASE}/dashboard/keys`);
  await page.waitForSelector('#key-count:not(:empty)');
  await page.click('#create-open');
  await page.fill('#key-name', `dash-env ${Date.now()}`);
  await page.selectOption('#key-environment', 'development');
  await page.click('#create-submit');
  await page.waitForSelector('#created:not([hidden])');
  const key = (await page.textContent('#created [data-secret]')).trim();
  const curl = (await page.textContent('#created [data-curl]')).trim();
  const url = curl.split(' ').pop();
  check(url.startsWith(`${EDGE}/v1/`), `the curl line names the development base URL ${EDGE}: ${curl}`);
  check(!curl.includes('api.lynxo.ai'), `not production's: ${curl}`);
  const tried = await fetch(url, { headers: { Authorization: `Bearer ${key}` } });
  await tried.arrayBuffer();
  check(tried.status === 200, `the shown line works as shown: ${tried.status}`);
  await a11y(page, 'shown-once panel of a development key');

  // --- Point 10: the audit log reads as sentences, filters in the URL, exports -------------
  step('audit: actors by name, times as dates');
  await page.goto(`${BASE}/dashboard/audit`);
  await page.waitForSelector('#audit-body tr[data-seq]');
  const by = await page.$$eval('#audit-body td[data-label=By]', (cells) => cells.map((c) => c.textContent.trim()));
  check(by.length > 0 && by.every((t) => !/^(user|token):\d+$/.test(t)), `actors are named: ${by.join(' | ')}`);
  check(by.some((t) => t === EMAIL), `the signed-in user is named by email: ${by.join(' | ')}`);
  check(by.some((t) => t.startsWith('token "')), `a management token is named by its name: ${by.join(' | ')}`);
  const grace = await page.$eval('[data-detail=grace_until]', (d) => ({ text: d.textContent, time: !!d.querySelector('time[datetime]') }));
  check(grace.time && !/\d{9,}/.test(grace.text), `grace_until is a date, not Unix seconds: ${grace.text}`);
  await screenshot('audit-readable.png');
  await a11y(page, 'audit log, readable');

  step('audit: a filter is in the URL, announced, and survives Back');
  await page.selectOption('#audit-action', 'key.rotated');
  await page.waitForURL(/action=key\.rotated/);
  await page.waitForFunction(() => [...document.querySelectorAll('#audit-body tr[data-seq]')].length > 0
    && [...document.querySelectorAll('#audit-body td[data-label=Event]')].every((c) => c.textContent === 'key.rotated'));
  const announced = await page.textContent('#audit-count');
  check(/^1 event shown/.test(announced), `the count is announced: ${announced}`);
  check(await page.getAttribute('#audit-count', 'role') === 'status', 'the count is a live status');
  const csvHref = await page.getAttribute('#audit-export-csv', 'href');
  check(csvHref.includes('action=key.rotated') && csvHref.includes('format=csv'), `the export follows the filter: ${csvHref}`);
  await a11y(page, 'audit log, filtered by event type');
  await page.goBack();
  await page.waitForFunction(() => !location.search.includes('action='));
  await page.waitForFunction(() => document.getElementById('audit-action').value === ''
    && [...document.querySelectorAll('#audit-body td[data-label=Event]')].some((c) => c.textContent !== 'key.rotated'));
  await page.goForward();
  await page.waitForFunction(() => document.getElementById('audit-action').value === 'key.rotated');
  step('audit: the CSV export of the filter, with the session');
  const csv = await page.evaluate(async (href) => {
    const r = await fetch(href);
    return { status: r.status, type: r.headers.get('content-type'), text: await r.text() };
  }, csvHref);
  check(csv.status === 200 && csv.type.startsWith('text/csv'), `CSV export: ${csv.status} ${csv.type}`);
  const lines = csv.text.split('\r\n').filter(Boolean);
  check(lines[0] === 'seq,time,event,target,actor,actor_name,source,details', `CSV header: ${lines[0]}`);
  check(lines.length === 2 && lines[1].includes('"key.rotated"') && /grace until: \d{4}-\d{2}-\d{2} /.test(lines[1]),
    `one readable key.rotated row: ${lines.slice(1).join(' / ')}`);
  const jsonHref = await page.getAttribute('#audit-export-json', 'href');
  const json = await page.evaluate(async (href) => (await fetch(href)).json(), jsonHref);
  check(Array.isArray(json) && json.length === 1 && json[0].action === 'key.rotated', `JSON export: ${JSON.stringify(json).slice(0, 200)}`);

  step('token revoke dialog opens with focus on Cancel');
  await page.goto(`${BASE}/dashboard/tokens`);
  await page.waitForSelector('#tokens-body button[data-token]');
  await page.click('#tokens-body button[data-token]');
  await page.waitForFunction(() => document.getElementById('token-revoke-dialog').open);
  const focused = await page.evaluate(() => ({ text: document.activeElement?.textContent, close: document.activeElement?.hasAttribute('data-close') }));
  check(focused.text === 'Cancel' && focused.close, `focus starts on Cancel: ${JSON.stringify(focused)}`);
  await a11y(page, 'token revoke dialog');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => !document.getElementById('token-revoke-dialog').open);
  const tokenStill = await page.$$eval('#tokens-body button[data-token]', (b) => b.length);
  check(tokenStill > 0, 'Enter on the opened dialog cancelled: the token is not revoked');

  // --- Point 8: numbers that do not mislead ---------------------------------------------
  step('requests by scope: the 403 is counted apart and marked as not a scope of the key');
  await page.goto(`${BASE}/dashboard/keys/${SCOPES_KEY}`);
  await page.waitForSelector('#scopes-allowed li');
  await page.waitForSelector('#scopes-refused li');
  const used = await page.$$eval('#scopes-allowed li', (l) => l.map((i) => i.dataset.scope));
  const refusedScopes = await page.$$eval('#scopes-refused li', (l) => l.map((i) => ({ scope: i.dataset.scope, text: i.textContent })));
  check(used.includes('jobs:read') && !used.includes('jobs:write'), `used scopes: ${used}`);
  check(refusedScopes.some((r) => r.scope === 'jobs:write' && r.text.includes('1 refused') && r.text.includes('not a scope of this key')),
    `the 403 is apart: ${JSON.stringify(refusedScopes)}`);
  step('the unused-scopes advice waits for a week-old key');
  const wait = await page.textContent('#unused-scopes');
  check(await page.locator('#unused-wait').count() === 1 && await page.locator('#unused-scopes ul.unused').count() === 0,
    `no advice on a key made minutes ago: ${wait}`);
  await screenshot('key-scopes-honest.png');
  await a11y(page, 'key page with refused scopes apart and the advice held');

  step('at the key limit, no key made minutes ago is suggested for retiring');
  const filled = await page.evaluate(async () => {
    const account = await (await fetch('/v1/keys?status=active&limit=1')).json();
    let made = 0;
    for (let n = account.active_keys; n < account.max_active_keys; n += 1) {
      const r = await fetch('/v1/keys', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: `filler ${n}`, environment: 'production', permission: 'read_only' }),
      });
      if (r.status !== 201) return { error: r.status, text: await r.text() };
      made += 1;
    }
    return { made };
  });
  check(!filled.error, `filling the account to its limit: ${JSON.stringify(filled)}`);
  await page.goto(`${BASE}/dashboard/keys`);
  await page.waitForSelector('#limit-notice:not([hidden])');
  const notice = await page.textContent('#limit-notice');
  check(notice.includes('all of them are in use'), `the limit is explained: ${notice}`);
  check(await page.locator('#limit-notice [data-candidate]').count() === 0, `no key made minutes ago is suggested: ${notice}`);
  await a11y(page, 'keys list at the key limit');

  check(problems.length === 0, `console errors or failed requests: ${problems.join('\n')}`);
  step('done');
  await context.close();
} catch (e) {
  console.error(e.stack || String(e));
  await page.screenshot({ path: join(SHOTS, 'failure.png'), fullPage: true }).catch(() => {});
  await context.close().catch(() => {});
  process.exit(1);
}
