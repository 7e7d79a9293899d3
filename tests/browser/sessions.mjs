// The Sessions page and the password change in real headless Chromium (Debian's `chromium`,
// driven by playwright-core), against the real control plane. Run by
// tests/tests/account_sessions.rs, which starts it and passes:
//
//   LYNXO_DASHBOARD_URL  the control plane (its public origin)
//   LYNXO_EMAIL, LYNXO_PASSWORD   the user `control init` created
//   LYNXO_NEW_PASSWORD   the password the script changes to
//   LYNXO_SCREENSHOTS    folder for the screenshots
//   LYNXO_CHROMIUM       the browser (default /usr/bin/chromium)
//
// Two browsers (two contexts: separate cookie jars, different user agents) sign in as the same
// user. From the second: the page lists both and marks its own; "End session" on the first
// signs it out; "Sign out everywhere else" does too; a wrong current password and mismatched new
// ones are refused on the page; a right change signs the other out, and the old password stops
// working. Exits 0 when every check passed.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS, a11y, check, env, since, step } from './lib.mjs';

const BASE = env('LYNXO_DASHBOARD_URL').replace(/\/$/, '');
const EMAIL = env('LYNXO_EMAIL');
const PASSWORD = env('LYNXO_PASSWORD');
const NEW_PASSWORD = env('LYNXO_NEW_PASSWORD');
const SHOTS = env('LYNXO_SCREENSHOTS');


mkdirSync(SHOTS, { recursive: true });
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: CHROMIUM_ARGS,
});
const problems = [];

/** A browser of its own (cookie jar, user agent) with one page. */
async function person(agent) {
  const context = await browser.newContext({ userAgent: agent, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`${agent}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`${agent}: uncaught: ${e.message}`));
  return page;
}

async function signIn(page, password) {
  await page.goto(`${BASE}/sign-in`);
  await page.fill('#email', EMAIL);
  await page.fill('#password', password);
  await page.click('#sign-in-form [type=submit]');
}

async function signedIn(page, password) {
  await signIn(page, password);
  await page.waitForURL(`${BASE}/dashboard/keys`);
}

/** Whether the page's session still works: the dashboard sends a signed-out browser to sign-in. */
async function stillSignedIn(page) {
  await page.goto(`${BASE}/dashboard/keys`);
  return page.url() === `${BASE}/dashboard/keys`;
}

/** The session rows of the Sessions page, once loaded. */
async function rows(page) {
  await page.waitForSelector('#sessions-body tr[data-session-row]');
  return page.$$eval('#sessions-body tr[data-session-row]', (trs) => trs.map((tr) => ({
    id: tr.dataset.sessionRow,
    text: tr.textContent,
    current: tr.textContent.includes('This browser'),
    agentIsolated: Boolean(tr.querySelector('bdi')),
  })));
}

const first = await person('Lynxo test browser A');
const second = await person('Lynxo test browser B');
try {
  await signedIn(first, PASSWORD);
  await signedIn(second, PASSWORD);
  step('two browsers signed in');

  await second.click('nav a[href="/dashboard/sessions"]');
  await second.waitForURL(`${BASE}/dashboard/sessions`);
  let list = await rows(second);
  check(list.length === 2, `two sessions listed, got ${list.length}`);
  check(list[0].current && list[0].text.includes('browser B'), 'the newest is this browser, marked');
  check(!list[1].current && list[1].text.includes('browser A'), 'the other browser listed, not marked');
  check(list.every((r) => r.agentIsolated), 'user agents are isolated in <bdi>');
  check(list.every((r) => r.text.includes('127.0.0.1')), 'the address is shown');
  check(await second.isVisible(`button[data-session="${list[0].id}"]`) === false, 'no End button on this browser');
  await second.screenshot({ path: join(SHOTS, 'sessions.png'), fullPage: true });
  await a11y(second, 'sessions page');
  await second.setViewportSize({ width: 375, height: 800 });
  const width = await second.evaluate(() => document.documentElement.scrollWidth);
  check(width <= 375, `the Sessions page fits 375 px (scroll width ${width})`);
  await second.screenshot({ path: join(SHOTS, 'sessions-375px.png'), fullPage: true });
  await second.setViewportSize({ width: 1280, height: 800 });
  step('the Sessions page lists both browsers (and fits 375 px)');

  // End one.
  await second.click(`button[data-session="${list[1].id}"]`);
  await second.waitForFunction(() => document.querySelectorAll('#sessions-body tr[data-session-row]').length === 1);
  check(await second.textContent('#sessions-ok') === 'Session ended.', 'the page says so');
  check(!(await stillSignedIn(first)), 'the ended browser is signed out');
  check(await stillSignedIn(second), 'this browser stays signed in');
  step('End session signed the other browser out');

  // Sign out everywhere else.
  await signedIn(first, PASSWORD);
  await second.goto(`${BASE}/dashboard/sessions`);
  list = await rows(second);
  check(list.length === 2, 'the browser is back');
  await second.click('#sessions-end-others');
  await second.waitForFunction(() => document.getElementById('sessions-ok').textContent.startsWith('Signed out of 1'));
  check(!(await stillSignedIn(first)), 'signed out everywhere else');
  check(await stillSignedIn(second), 'this browser stays signed in');
  step('Sign out everywhere else signed the other browser out');

  // Change the password.
  await signedIn(first, PASSWORD);
  await second.goto(`${BASE}/dashboard/sessions`);
  await rows(second);
  await second.fill('#current-password', PASSWORD);
  await second.fill('#new-password', NEW_PASSWORD);
  await second.fill('#repeat-password', `${NEW_PASSWORD}!`);
  await second.click('#password-form [type=submit]');
  check(await second.textContent('#password-error') === 'The two new passwords differ.', 'a mismatch is refused on the page');
  await second.fill('#current-password', 'not the password at all');
  await second.fill('#repeat-password', NEW_PASSWORD);
  await second.click('#password-form [type=submit]');
  await second.waitForFunction(() => !document.getElementById('password-error').hidden
    && document.getElementById('password-error').textContent === 'The current password is wrong.');
  check(second.url() === `${BASE}/dashboard/sessions`, 'a wrong current password does not sign this browser out');
  check(await stillSignedIn(first), 'a refused change ends nothing');
  await second.goto(`${BASE}/dashboard/sessions`);
  await rows(second);
  await second.fill('#current-password', PASSWORD);
  await second.fill('#new-password', NEW_PASSWORD);
  await second.fill('#repeat-password', NEW_PASSWORD);
  await second.click('#password-form [type=submit]');
  await second.waitForFunction(() => document.getElementById('password-ok').textContent.startsWith('Password changed. 1 other session was'));
  check(await second.inputValue('#new-password') === '', 'the form is cleared');
  await second.screenshot({ path: join(SHOTS, 'password-changed.png'), fullPage: true });
  await a11y(second, 'password changed');
  check(!(await stillSignedIn(first)), 'the password change signed the other browser out');
  check(await stillSignedIn(second), 'this browser stays signed in');
  await signIn(first, PASSWORD);
  await first.waitForSelector('#sign-in-error:not([hidden])');
  check((await first.textContent('#sign-in-error')).includes('wrong'), 'the old password is refused');
  await signedIn(first, NEW_PASSWORD);
  step('the password change signed the other browser out; the old password stopped working');

  check(problems.length === 0, `console errors (CSP violations, script errors): ${problems.join(' | ')}`);
  console.log(`sessions browser test passed in ${since()}`);
} catch (e) {
  console.error(`FAILED after ${since()}: ${e.stack || e}`);
  if (problems.length) console.error(`console errors: ${problems.join(' | ')}`);
  await second.screenshot({ path: join(SHOTS, 'sessions-failure.png'), fullPage: true }).catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
