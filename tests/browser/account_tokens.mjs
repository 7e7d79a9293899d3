// Management tokens and names that cannot lie, in real headless Chromium (Debian's `chromium`,
// driven by playwright-core), against the real control plane. Run by
// tests/tests/account_tokens.rs, which starts it, stores legacy strings straight into its
// database, and passes:
//
//   LYNXO_DASHBOARD_URL  the control plane (its public origin)
//   LYNXO_EMAIL, LYNXO_PASSWORD   the user `control init` created
//   LYNXO_KEY_ID         a key whose name and description were rewritten in SQLite to hold a
//                        right-to-left override and a CR/LF (as stored before the text rule)
//   LYNXO_SCREENSHOTS    folder for the screenshots
//   LYNXO_CHROMIUM       the browser (default /usr/bin/chromium)
//
// Exits 0 when every check passed; prints one line per step.

import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { a11y, check, env, step, launch } from './lib.mjs';

const BASE = env('LYNXO_DASHBOARD_URL').replace(/\/$/, '');
const EMAIL = env('LYNXO_EMAIL');
const PASSWORD = env('LYNXO_PASSWORD');
const KEY_ID = env('LYNXO_KEY_ID');
const SHOTS = env('LYNXO_SCREENSHOTS');


mkdirSync(SHOTS, { recursive: true });
const { context, page, problems, profile } = await launch({ width: 1280, height: 900 });
const screenshot = (name) => page.screenshot({ path: join(SHOTS, name), fullPage: true });

/**
 * How a piece of user text renders in `selector`: whether it is an isolated <bdi>, the visible
 * markers of its hidden characters, and its rendered text.
 */
function rendered(selector) {
  return page.$eval(selector, (node) => {
    const bdi = node.matches('bdi.user-text') ? node : node.querySelector('bdi.user-text');
    if (!bdi) return null;
    return {
      isolate: getComputedStyle(bdi).unicodeBidi,
      markers: [...bdi.querySelectorAll('.hidden-char')].map((m) => m.textContent),
      text: bdi.innerText,
    };
  });
}

/** Whether `text` holds any character the API refuses (what must never act on screen). */
const hidden = (text) => /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Default_Ignorable_Code_Point}]/u.test(text);

try {
  step('sign in');
  await page.goto(`${BASE}/sign-in`);
  await page.fill('#email', EMAIL);
  await page.fill('#password', PASSWORD);
  await page.click('#sign-in-form button[type=submit]');
  await page.waitForURL(`${BASE}/dashboard/keys`);

  step('a legacy name and description render isolated, their hidden characters shown');
  const keyRow = `tr[data-key-id="${KEY_ID}"]`;
  await page.waitForSelector(keyRow);
  const name = await rendered(`${keyRow} td[data-label=Name] a`);
  check(name, 'the key name is not in a bdi.user-text');
  check(name.isolate === 'isolate', `the name is not isolated: ${name.isolate}`);
  check(name.markers.includes('U+202E'), `no U+202E marker: ${JSON.stringify(name)}`);
  check(!hidden(name.text), `a hidden character acts in the name: ${JSON.stringify(name.text)}`);
  check(name.text.startsWith('U+202E'), `the override is not shown where it is: ${name.text}`);
  const description = await rendered(`${keyRow} td[data-label=Name] .sub`);
  check(description.markers.join(' ') === 'U+000D U+000A', `description markers: ${description.markers}`);
  check(!/[\r\n]/.test(description.text), 'the legacy CR/LF breaks the description');
  await screenshot('legacy-keys.png');
  await a11y(page, 'keys list with hostile names');

  step('the key page shows it the same way, the document title too');
  await page.goto(`${BASE}/dashboard/keys/${KEY_ID}`);
  await page.waitForSelector('#key-title bdi.user-text');
  const title = await rendered('#key-title');
  check(title.markers.includes('U+202E') && !hidden(title.text), `title: ${JSON.stringify(title)}`);
  check((await page.title()).startsWith('⟨U+202E⟩'), `document title: ${await page.title()}`);

  step('an audit event carrying the legacy strings cannot forge a row or a line');
  const patched = await page.evaluate(async (id) => {
    const r = await fetch(`/v1/keys/${id}`, {
      method: 'PATCH',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ rate_limit: 500 }),
    });
    return r.status;
  }, KEY_ID);
  check(patched === 200, `PATCH answered ${patched}`);
  await page.goto(`${BASE}/dashboard/audit`);
  await page.waitForSelector('#audit-body tr td[data-label="#"]');
  const events = await page.evaluate(async () => (await (await fetch('/v1/audit-events?limit=100')).json()).data.length);
  const rows = await page.$$eval('#audit-body > tr', (trs) => trs.map((tr) => ({
    cells: tr.children.length,
    event: tr.querySelector('td[data-label=Event]')?.innerText ?? '',
  })));
  check(rows.length === events, `${rows.length} rows for ${events} events`);
  check(rows.every((r) => r.cells === 7 && /^[a-z_.]+$/.test(r.event)), `a row that is no event: ${JSON.stringify(rows)}`);
  const details = (action) => page.$$eval('#audit-body > tr', (trs, wanted) => {
    const tr = trs.find((t) => t.querySelector('td[data-label=Event]')?.innerText === wanted);
    return [...tr.querySelectorAll('td[data-label=Details] .detail')].map((d) => ({
      text: d.innerText,
      markers: [...d.querySelectorAll('.hidden-char')].map((m) => m.textContent),
      isolated: [...d.querySelectorAll('bdi.user-text')].every((b) => getComputedStyle(b).unicodeBidi === 'isolate'),
    }));
  }, action);
  const clean = (values) => values.every((v) => v.isolated && !/[\r\n]/.test(v.text) && !hidden(v.text));
  const updated = await details('key.updated');
  check(updated.flatMap((v) => v.markers).includes('U+202E'), `key.updated markers: ${JSON.stringify(updated)}`);
  check(clean(updated), `a key.updated detail breaks or hides: ${JSON.stringify(updated)}`);
  const revoked = await details('key.revoked');
  const reason = revoked.find((v) => v.text.startsWith('reason'));
  check(reason && reason.markers.join(' ') === 'U+000D U+000A U+202E', `reason markers: ${JSON.stringify(revoked)}`);
  check(clean(revoked), `the legacy reason breaks a line or hides: ${JSON.stringify(revoked)}`);
  await screenshot('legacy-audit.png');
  await a11y(page, 'audit log with hostile reasons');

  step('tokens page: the legacy token name is isolated and marked');
  await page.goto(`${BASE}/dashboard/tokens`);
  await page.waitForSelector('#tokens-body tr[data-token-id]');
  const legacyToken = await rendered('#tokens-body tr[data-token-id="1"] td[data-label=Name]');
  check(legacyToken.markers.includes('U+200B') && !hidden(legacyToken.text), `token name: ${JSON.stringify(legacyToken)}`);

  step('create a token with chosen scopes: a wrong password is refused first');
  await page.click('#token-open');
  await page.fill('#token-name', 'ci reader');
  await page.check('#admin-keys-read');
  await page.check('#admin-usage-read');
  await page.selectOption('#token-grant', 'read_only');
  await page.selectOption('#token-expiry', '90');
  await page.fill('#token-password', 'not the password');
  await page.click('#token-form button[type=submit]');
  // The refusal sits next to the password field, which is marked invalid and has focus.
  await page.waitForSelector('#token-password-field-error');
  check((await page.textContent('#token-password-field-error')).includes('password is not correct'), 'no wrong-password message');
  check(await page.evaluate(() => document.activeElement?.id === 'token-password'
    && document.activeElement.getAttribute('aria-invalid') === 'true'), 'focus is not on the refused password');
  check((await page.inputValue('#token-password')) === '', 'the password field was not cleared');
  await page.fill('#token-password', PASSWORD);
  await page.click('#token-form button[type=submit]');
  await page.waitForSelector('#token-created:not([hidden])');
  const token = (await page.textContent('#token-created [data-secret]'))?.trim()
    ?? '';
  check(/^lnxm_[0-9a-f]{64}$/.test(token), `the shown token: ${token.slice(0, 8)}…`);
  await screenshot('token-created.png');
  await a11y(page, 'token created');
  await page.click('#token-created [data-done]');
  await page.waitForSelector('#tokens-body tr td[data-label=Name]:has-text("ci reader")');
  const chips = await page.$$eval('#tokens-body > tr', (trs) => {
    const tr = trs.find((t) => t.querySelector('td[data-label=Name]')?.innerText === 'ci reader');
    return [...tr.querySelectorAll('td[data-label=Scopes] .chip')].map((c) => c.textContent);
  });
  check(chips.join(' ') === 'keys:read usage:read', `the row's scopes: ${chips}`);

  step('the token can do what was chosen and nothing else');
  const call = async (path) => {
    const r = await fetch(`${BASE}${path}`, { headers: { Authorization: `Bearer ${token}` } });
    return { status: r.status, body: await r.json() };
  };
  check((await call('/v1/keys')).status === 200, 'keys:read refused');
  const audit = await call('/v1/audit-events');
  check(audit.status === 403 && audit.body.required_scope === 'audit:read', `audit: ${JSON.stringify(audit)}`);
  const list = await call('/v1/management-tokens');
  check(list.status === 403 && list.body.code === 'insufficient_scope', `list: ${list.status}`);

  step('a name with a bidi override is refused, and the answer says which and where');
  await page.click('#token-open');
  await page.fill('#token-name', '\u202Enoitcudorp');
  await page.check('#admin-keys-read');
  await page.fill('#token-password', PASSWORD);
  await page.click('#token-form button[type=submit]');
  await page.waitForSelector('#token-name-field-error');
  const refusal = await page.textContent('#token-name-field-error');
  for (const part of ['U+202E', 'RIGHT-TO-LEFT OVERRIDE', 'at character 0']) {
    check(refusal.includes(part), `the refusal does not say ${part}: ${refusal}`);
  }
  await screenshot('token-name-refused.png');
  await a11y(page, 'token name refused');

  check(problems.length === 0, `console errors: ${problems.join(' | ')}`);
  step('done');
  await context.close();
  rmSync(profile, { recursive: true, force: true });
} catch (e) {
  console.error(e.stack || String(e));
  await page.screenshot({ path: join(SHOTS, 'failure.png'), fullPage: true }).catch(() => {});
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}
