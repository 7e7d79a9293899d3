// What every browser script shares: its settings from the environment, step logging that
// says how long each step took, checks that fail loudly, and the flags Chromium needs on these
// machines (headless, as root, and no background connections: the network is closed), the
// launch of a fresh browser profile, and the accessibility audit every visited state goes through.

import { mkdtempSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

/** The environment variable `name`, or `fallback`; throws when neither is there. */
export const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};

/** Debian's Chromium unless LYNXO_CHROMIUM names another. */
export const CHROMIUM = env('LYNXO_CHROMIUM', '/usr/bin/chromium');

/** Chromium's flags for a headless run as root on a machine with no internet. */
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const started = Date.now();
let stepStart = started;

/** Logs a step with the seconds since the script started. */
export function step(text) {
  const now = Date.now();
  console.log(`[${((now - started) / 1000).toFixed(1)} s] ${text}`);
  stepStart = now;
}

/** Throws `check failed: message` unless `condition` holds. */
export function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

/** Seconds since the script started, as "12.3 s". */
export function since() {
  return `${((Date.now() - started) / 1000).toFixed(1)} s`;
}

/** "after N s (step took M ms)": for the failure line. */
export function elapsed() {
  return `after ${since()} (step took ${Date.now() - stepStart} ms)`;
}

/**
 * A persistent Chromium context in a fresh profile, and its first page with a 15 s default
 * timeout. Every console error and uncaught exception of the page lands in `problems` (a refused
 * resource does not: a 4xx answer of the API is expected in many steps).
 */
export async function launch({ width = 1280, height = 800 } = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'lynxo-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width, height },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15000);
  const problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(`uncaught: ${e.message}`));
  return { context, page, problems, profile };
}

// --- Accessibility ------------------------------------------------------------------------------

/** The widths every audited state is checked at: a laptop and a small phone. */
export const AUDIT_WIDTHS = [1280, 375];

let axeSource;
/** Every state `a11y` audited, for the summary line. */
export const audited = [];

/**
 * Runs axe-core (node_modules/axe-core, installed by the bootstrap) on the page as it is now, at
 * each of AUDIT_WIDTHS, and throws on any violation of impact serious or critical, naming the
 * rule, the state and the offending elements. The viewport is put back afterwards.
 *
 * axe is evaluated through the DevTools protocol, so the dashboard's Content-Security-Policy
 * (which refuses inline scripts, rightly) stays on for the rest of the test.
 */
export async function a11y(page, state) {
  if (axeSource === undefined) {
    axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
  }
  const before = page.viewportSize();
  const found = [];
  for (const width of AUDIT_WIDTHS) {
    await page.setViewportSize({ width, height: before?.height ?? 800 });
    const loaded = await page.evaluate(() => typeof window.axe !== 'undefined');
    if (!loaded) await page.evaluate(axeSource);
    const violations = await page.evaluate(async () => {
      const r = await window.axe.run(document, { resultTypes: ['violations'] });
      return r.violations.map((v) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        targets: v.nodes.slice(0, 5).map((n) => n.target.join(' ')),
      }));
    });
    for (const v of violations) {
      if (v.impact === 'serious' || v.impact === 'critical') found.push({ width, ...v });
    }
  }
  if (before) await page.setViewportSize(before);
  audited.push(state);
  if (found.length) {
    const lines = found.map((v) => `  ${v.width} px ${v.impact} ${v.id}: ${v.help} [${v.targets.join(', ')}]`);
    throw new Error(`axe found ${found.length} serious or critical violation(s) in "${state}":\n${lines.join('\n')}`);
  }
}
