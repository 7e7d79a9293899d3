// What every browser script shares: its settings from the environment, step logging that
// says how long each step took, checks that fail loudly, and the flags Chromium needs on these
// machines (headless, as root, and no background connections: the network is closed).

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
