// Shared helpers of the dashboard: the API client, a DOM builder that never parses HTML, date
// and number formats, and dialogs.
//
// Every value from the API reaches the page through textContent or setAttribute, never through
// innerHTML, so a key named "<img onerror=...>" stays text.

/** Calls the JSON API on this origin with the session cookie. Returns {status, body}. */
export async function api(method, path, body) {
  const init = {
    method,
    credentials: 'same-origin',
    cache: 'no-store',
    headers: { Accept: 'application/json' },
  };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    return { status: 0, body: { title: 'The control plane did not answer', detail: String(e) } };
  }
  let parsed = null;
  const text = await response.text();
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = { title: text.slice(0, 200) };
    }
  }
  if (response.status === 401 && document.body.dataset.page !== 'sign-in') {
    location.assign('/sign-in');
  }
  return { status: response.status, body: parsed };
}

/** Whether an API answer says the route itself does not exist (a feature not deployed yet). */
export function missingRoute(r) {
  return r.status === 404 && typeof r.body?.detail === 'string' && r.body.detail.startsWith('no route');
}

/** A readable sentence from a problem+json body. */
export function problemText(r) {
  const b = r.body || {};
  const parts = [b.title || `Request failed (${r.status})`];
  if (b.detail) parts.push(b.detail);
  return parts.join(': ');
}

/** el('a', {href: '/x', class: 'y'}, 'text', child): an element; attributes set, children appended. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'text') node.textContent = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

/** The same for SVG elements. */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (name === 'text') node.textContent = value;
    else node.setAttribute(name, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(typeof child === 'string' || typeof child === 'number' ? String(child) : child);
  }
}

/** Replaces the children of `node`. */
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
}

/** A table row: each cell is [label, content] so narrow screens can show the label. */
export function row(cells, attrs = {}) {
  // One wrapper per cell: on phones the cell is a two-column grid (label, value).
  return el('tr', attrs, cells.map(([label, ...content]) => el('td', { 'data-label': label }, el('div', { class: 'cell' }, ...content))));
}

/** One row across the whole table, for "no keys" and similar. */
export function emptyRow(columns, text) {
  return el('tr', {}, el('td', { colspan: columns, class: 'empty' }, text));
}

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});
const dateOnly = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
const numbers = new Intl.NumberFormat();

/** Unix seconds as a local date and time; "—" for none. */
export function when(seconds) {
  if (seconds === undefined || seconds === null) return '—';
  return dateTime.format(new Date(seconds * 1000));
}

/** Unix seconds as a local date. */
export function day(seconds) {
  if (seconds === undefined || seconds === null) return '—';
  return dateOnly.format(new Date(seconds * 1000));
}

/** "3 min ago", "2 days ago"; "Never" for none. */
export function ago(seconds) {
  if (seconds === undefined || seconds === null) return 'Never';
  const diff = Math.max(0, Date.now() / 1000 - seconds);
  if (diff < 60) return 'just now';
  if (diff < 3600) return `${Math.floor(diff / 60)} min ago`;
  if (diff < 86400) return `${Math.floor(diff / 3600)} h ago`;
  return `${Math.floor(diff / 86400)} days ago`;
}

/** A <time> element with the absolute date as its title. */
export function timeEl(seconds, relative = false) {
  if (seconds === undefined || seconds === null) return relative ? 'Never' : '—';
  const iso = new Date(seconds * 1000).toISOString();
  return el('time', { datetime: iso, title: when(seconds) }, relative ? ago(seconds) : when(seconds));
}

/** A number with separators; "—" when the API did not send it. */
export function num(n) {
  return typeof n === 'number' ? numbers.format(n) : '—';
}

export const ENVIRONMENTS = { production: 'Production', staging: 'Staging', development: 'Development' };
export const PERMISSIONS = {
  read_only: 'Read Only', read_write: 'Read/Write', full_access: 'Full Access', custom: 'Custom',
};
const STATUS = { active: 'Active', rotating: 'Rotating', revoked: 'Revoked', expired: 'Expired' };

/** The status badge of a key, plus "due for rotation" and "idle" badges. */
export function statusBadges(key) {
  const out = [el('span', { class: `badge status-${key.status}` }, STATUS[key.status] || key.status)];
  if (key.rotation_due) {
    out.push(el('span', { class: 'badge due', title: 'Older than 90 days: rotate it' }, 'Due for rotation'));
  }
  if (key.idle) {
    out.push(el('span', { class: 'badge idle', title: 'Not used in 30 days' }, 'Idle'));
  }
  return out;
}

const REPORTERS = { github: 'GitHub secret scanning', gitlab: 'GitLab secret detection', holder: 'someone holding the key' };
const LEAK_ACTIONS = {
  revoked: 'revoked at once',
  notified: 'not revoked (your account is set to notify only)',
  already_revoked: 'it was already revoked',
  expired: 'it had already expired',
};

/**
 * The leak banner (docs/secret-scanning.md): where keys were found and what was done, from
 * `GET /v1/leaks` or `GET /v1/keys/{id}/leaks`; null when there are none. `withKey` links each
 * leak to its key (the account's banner).
 */
export function leakBanner(list, withKey = false) {
  if (!list || !list.total) return null;
  const items = list.leaks.slice(0, 5).map((l) => el('li', {},
    withKey ? [el('a', { href: `/dashboard/keys/${l.key_id}` }, l.key_id), ': '] : null,
    'found by ', REPORTERS[l.reporter] || l.reporter,
    l.url ? [' in ', el('code', {}, userText(l.url))] : null,
    l.source ? [' (', userText(l.source), ')'] : null,
    ', ', timeEl(l.reported_at), ': ', LEAK_ACTIONS[l.action] || l.action, '.'));
  const title = list.total === 1 ? 'A key was found in public' : `Keys were found in public ${list.total} times`;
  return el('div', { class: 'error leak-banner', role: 'alert' },
    el('strong', {}, title), el('ul', {}, items),
    el('p', {}, 'Create a new key, deploy it, and remove the leaked one from where it was found and from the history.'));
}

// Signing-key rollover (docs/operations.md): why keys stopped working, or should move.
const RETIRE_REASONS = {
  compromised: 'its secret may have been exposed, so every key it signed was stopped at once to protect you',
  scheduled: 'it reached its planned end of life',
};

/** The account's banner from a key list's `signing` notice: retired keys, or keys to rotate. */
export function signingBanner(notice) {
  if (!notice) return null;
  const waiting = (notice.retired_keys || []).filter((k) => !k.replaced_by);
  if (waiting.length) {
    const first = waiting[0];
    const items = waiting.slice(0, 10).map((k) => el('li', {},
      el('a', { href: `/dashboard/keys/${k.id}` }, userText(k.name)), ' ', el('code', {}, k.hint)));
    const more = waiting.length > 10 ? el('p', {}, `and ${waiting.length - 10} more.`) : null;
    return el('div', { class: 'error signing-banner', role: 'alert' },
      el('strong', {}, waiting.length === 1 ? 'A key stopped working: its signing key was retired'
        : `${waiting.length} keys stopped working: their signing key was retired`),
      el('p', {}, 'On ', timeEl(first.retired.retired_at), ' Lynxo retired the signing key that sealed ',
        waiting.length === 1 ? 'this key' : 'these keys', ': ', RETIRE_REASONS[first.retired.reason] || first.retired.reason,
        '. Requests with ', waiting.length === 1 ? 'it are' : 'them are', ' refused (401 invalid_token).'),
      el('ul', {}, items), more,
      el('p', {}, 'What to do: open each key and choose Rotate to create its replacement with the same settings (or create a new key), deploy the new key, and delete the old one from where it is used.'));
  }
  if (notice.keys_on_previous_kid) {
    return el('div', { class: 'notice signing-banner', role: 'status' },
      el('strong', {}, `${num(notice.keys_on_previous_kid)} of your keys use an older signing key.`),
      el('p', {}, 'They keep working. Rotate them when convenient to move them to the current signing key.'));
  }
  return null;
}

/** A key page's banner about its signing key. */
export function keySigningBanner(k) {
  if (k.signing_key === 'retired' && k.signing_key_retired) {
    const r = k.signing_key_retired;
    return el('div', { class: 'error signing-banner', role: 'alert' },
      el('strong', {}, 'This key no longer works: its signing key was retired'),
      el('p', {}, 'On ', timeEl(r.retired_at), ' Lynxo retired the signing key that sealed this key: ',
        RETIRE_REASONS[r.reason] || r.reason, '. Requests with it are refused (401 invalid_token).'),
      el('p', {}, k.rotated_to
        ? ['It was replaced by ', el('a', { href: `/dashboard/keys/${k.rotated_to}` }, k.rotated_to), '.']
        : 'What to do: choose Rotate to create its replacement with the same settings (this key stays revoked), deploy it, and delete this key from where it is used.'));
  }
  if (k.signing_key === 'previous' && (k.status === 'active' || k.status === 'rotating')) {
    return el('div', { class: 'notice signing-banner', role: 'status' },
      el('p', {}, 'This key uses an older signing key. It keeps working; rotate it when convenient to move it to the current one.'));
  }
  return null;
}

// What the API refuses in text people give it (control/src/text.rs; a test checks the two sets
// are one): control, format, line and paragraph separators, default-ignorable, noncharacters.
const REFUSED = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Default_Ignorable_Code_Point}\p{Noncharacter_Code_Point}]/gu;

/** A refused character's visible stand-in, e.g. "U+202E". */
function codePoint(c) {
  return `U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, '0')}`;
}

/**
 * Text a person or a client gave us (names, descriptions, reasons, user agents, audit details),
 * ready to show: isolated in a <bdi> so it cannot reorder what is around it, and every
 * character the API refuses today (stored before the rule, or from the edge) shown as a marked
 * "U+XXXX" instead of acting, so no stored string can hide, reorder or break a line.
 */
export function userText(text, attrs = {}) {
  const node = el('bdi', { ...attrs, class: attrs.class ? `user-text ${attrs.class}` : 'user-text' });
  const value = text === undefined || text === null ? '' : String(text);
  let at = 0;
  for (const m of value.matchAll(REFUSED)) {
    if (m.index > at) node.append(value.slice(at, m.index));
    node.append(el('span', { class: 'hidden-char', title: 'Invisible or control character, shown by its code' }, codePoint(m[0])));
    at = m.index + m[0].length;
  }
  if (at < value.length) node.append(value.slice(at));
  return node;
}

/** The same as one line of plain text (a document title): refused characters as "⟨U+XXXX⟩". */
export function plainText(text) {
  return String(text ?? '').replace(REFUSED, (c) => `⟨${codePoint(c)}⟩`);
}

/** An audit event's details, one "name: value" line each, every value isolated. */
export function detailsList(details) {
  if (!details || typeof details !== 'object') return '';
  return el('span', { class: 'details-text' }, Object.entries(details).map(([k, v]) => el(
    'span',
    { class: 'detail' },
    userText(k),
    ': ',
    userText(v === null ? '—' : typeof v === 'object' ? (Array.isArray(v) ? v.join(', ') : JSON.stringify(v)) : v),
  )));
}

/** Shows or hides an error paragraph. */
export function showError(node, text) {
  node.textContent = text || '';
  node.hidden = !text;
}

/** The scope catalog the page carries (shared::scope), or []. */
export function catalog() {
  const node = document.getElementById('scope-catalog');
  if (!node) return [];
  try {
    return JSON.parse(node.textContent);
  } catch {
    return [];
  }
}

/**
 * The curl line for a key: a route of the catalog that its scopes allow, at the API base URL of
 * the key's environment (another environment's edge would refuse it as `wrong_environment`).
 */
export function curlLine(secret, scopes, environment) {
  const full = scopes.includes('*');
  const entry = catalog().find((s) => full || scopes.includes(s.name));
  const [method, path] = (entry?.example || 'GET /v1/jobs').split(' ');
  const dash = method === 'GET' ? '' : `-X ${method} `;
  return `curl ${dash}-H "Authorization: Bearer ${secret}" ${apiBase(environment)}${path}`;
}

/**
 * Wires a <dialog>: [data-close] buttons close it, focus returns to the opener, and
 * `onClose` runs once however it closed (button, Escape, or code). Closing from code runs it
 * at once, not in the later `close` event, so a secret is gone as soon as `close()` returns.
 */
export function dialog(node, { onClose } = {}) {
  let opener = null;
  let active = false;
  function finish() {
    if (!active) return;
    active = false;
    if (onClose) onClose();
    if (opener && document.contains(opener)) opener.focus();
  }
  function close() {
    if (node.open) node.close();
    finish();
  }
  for (const b of node.querySelectorAll('[data-close]')) {
    b.addEventListener('click', close);
  }
  node.addEventListener('close', finish);
  return {
    open(first) {
      opener = document.activeElement;
      node.showModal();
      active = true;
      const target = first || node.querySelector('input:not([type=hidden]), select, textarea, button');
      if (target) target.focus();
    },
    close,
  };
}

/** Disables a form's submit button while `work` runs. */
export async function busy(form, work) {
  const submit = form.querySelector('[type=submit]');
  const was = submit?.disabled;
  if (submit) submit.disabled = true;
  form.setAttribute('aria-busy', 'true');
  try {
    return await work();
  } finally {
    if (submit) submit.disabled = was;
    form.removeAttribute('aria-busy');
  }
}

const dateTimeSeconds = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
});

/** A <time> element for Unix milliseconds, to the second (activity and audit rows). */
export function timeSecondsEl(ms) {
  if (ms === undefined || ms === null) return '—';
  const at = new Date(ms);
  return el('time', { datetime: at.toISOString() }, dateTimeSeconds.format(at));
}

/**
 * The API's base URL for an environment, from the page's `api-bases` data block (the control
 * plane's --api-base-<environment> settings); production's when the environment is unknown.
 */
export function apiBase(environment) {
  const node = document.getElementById('api-bases');
  let bases = {};
  try {
    bases = node ? JSON.parse(node.textContent) : {};
  } catch {
    bases = {};
  }
  return bases[environment] || bases.production || 'https://api.lynxo.ai';
}

/**
 * Why the edge answered a request itself (an activity entry's `reason`, the edge's own), in
 * words; '' for none. A code this page does not know is shown as it is.
 */
export function refusalReason(reason) {
  const words = {
    wrong_environment: 'Sent to the wrong environment',
    revoked: 'Key revoked',
    expired: 'Key expired',
    insufficient_scope: 'The key lacks the scope this route needs',
    rate_limit_exceeded: 'Over the key\'s rate limit',
    not_found: 'No such route',
    method_not_allowed: 'Method not allowed on this route',
    invalid_path: 'Path not canonical',
    revocation_list_unavailable: 'Revocation status unavailable at the edge',
    origin_unavailable: 'API unreachable from the edge',
    internal_error: 'Edge error',
  };
  if (!reason) return '';
  return el('span', { class: 'reason', 'data-reason': reason }, words[reason] || reason);
}

/**
 * An audit event's details as text a person reads: one "name: value" line each, times (fields
 * `at`, `*_at`, `*_until` holding a number) as local dates, lists joined, every value isolated.
 * The CSV export writes the same rule in UTC (control/src/audit.rs, `readable_details`).
 */
export function readableDetails(details) {
  if (!details || typeof details !== 'object') return details ? userText(String(details)) : '';
  const time = (k) => k === 'at' || k.endsWith('_at') || k.endsWith('_until');
  return el('span', { class: 'details-text' }, Object.entries(details).map(([k, v]) => {
    let value;
    if (typeof v === 'number' && time(k)) value = timeEl(v);
    else if (v === null) value = 'none';
    else if (Array.isArray(v)) value = userText(v.join(', '));
    else if (typeof v === 'object') value = userText(JSON.stringify(v));
    else value = userText(v);
    return el('span', { class: 'detail', 'data-detail': k }, userText(k.replaceAll('_', ' ')), ': ', value);
  }));
}

/**
 * "Requests by scope" of a usage answer: the requests the origin answered, by scope (what the
 * key used), then the ones the edge refused, by scope, apart: a 403 names a scope the key
 * lacks, marked as such, so it is never read as a scope in use. `keyScopes`: the key's scopes
 * (`*` for all), when known.
 */
export function scopeCounts(usage, keyScopes) {
  const sorted = (m) => Object.entries(m || {}).sort((a, b) => b[1] - a[1]);
  const allowed = sorted(usage.by_scope_allowed ?? usage.by_scope);
  const refused = sorted(usage.by_scope_refused);
  const held = (s) => !keyScopes || keyScopes.includes('*') || keyScopes.includes(s);
  return el('div', {},
    allowed.length
      ? el('ul', { class: 'by-scope', id: 'scopes-allowed' }, allowed.map(([s, n]) => el('li', { 'data-scope': s }, el('code', {}, s), `: ${num(n)}`)))
      : el('p', {}, 'No request reached the API in this range.'),
    refused.length ? [
      el('h3', { id: 'scopes-refused-title' }, 'Refused by the edge, by scope'),
      el('ul', { class: 'by-scope', id: 'scopes-refused', 'aria-labelledby': 'scopes-refused-title' }, refused.map(([s, n]) => el('li', { 'data-scope': s },
        el('code', {}, s), `: ${num(n)} refused`, held(s) ? '' : el('span', { class: 'muted' }, ' (not a scope of this key)')))),
    ] : null);
}

/** Keys younger than this (seconds) are never suggested for retiring (control: keys::RETIRE_MIN_AGE). */
export const RETIRE_MIN_AGE = 86400;

/**
 * A key suggested for retiring at the key limit: its name, environment and age beside its last
 * use, so a production key made this week is not mistaken for an idle one.
 */
export function retireCandidate(k) {
  return el('li', { 'data-candidate': k.id },
    el('a', { href: `/dashboard/keys/${k.id}` }, userText(k.name)), ' ',
    el('span', { class: 'muted' },
      ENVIRONMENTS[k.environment] || k.environment || '', k.environment ? ' · ' : '',
      'made ', timeEl(k.created_at, true), ' · ',
      k.last_used_at ? ['last used ', timeEl(k.last_used_at, true)] : 'never used'));
}

// Ids given to fields that had none, so a message can describe them.
let unnamedFields = 0;

/**
 * Field-level errors, the one rule of every form: each message in plain language right after
 * its field, the field marked `aria-invalid` and described by the message, and focus on the
 * first invalid field (its closed <details> opened). `errors` is a list of [field, message];
 * a field is an input, select or textarea, or a fieldset for a group of checkboxes (the group
 * is described by the message and its first box gets focus). An empty list clears the form.
 * Returns whether there was any error.
 */
export function fieldErrors(form, errors) {
  for (const note of form.querySelectorAll('.field-error')) {
    const owner = form.querySelector(`[aria-describedby~="${note.id}"]`);
    if (owner) {
      const rest = owner.getAttribute('aria-describedby').split(/\s+/).filter((id) => id && id !== note.id);
      if (rest.length) owner.setAttribute('aria-describedby', rest.join(' '));
      else owner.removeAttribute('aria-describedby');
      owner.removeAttribute('aria-invalid');
    }
    note.remove();
  }
  let first = null;
  for (const [field, message] of errors) {
    if (!field.id) field.id = `field-${++unnamedFields}`;
    const id = `${field.id}-field-error`;
    const note = el('span', { class: 'field-error', id }, message);
    const group = field.tagName === 'FIELDSET';
    if (group) field.querySelector('legend').after(note);
    else field.after(note);
    if (!group) field.setAttribute('aria-invalid', 'true');
    const described = (field.getAttribute('aria-describedby') || '').split(/\s+/).filter(Boolean);
    field.setAttribute('aria-describedby', [id, ...described].join(' '));
    if (!first) first = group ? field.querySelector('input, select, textarea') : field;
  }
  if (first) {
    const folded = first.closest('details');
    if (folded) folded.open = true;
    first.focus();
  }
  return errors.length > 0;
}

/** The field an API refusal names (`field` of a 422), if any. */
export function refusedField(r) {
  return r.status === 422 && typeof r.body?.field === 'string' ? r.body.field : null;
}

const WINDOWS = { 1: 'second', 60: 'minute', 3600: 'hour', 86400: 'day' };

/** A rate limit the plan refused, in plain words. */
export function rateLimitRefusal(body) {
  const max = body?.max_rate_limit_for_window;
  const per = WINDOWS[body?.rate_limit_window] || `${body?.rate_limit_window} seconds`;
  return typeof max === 'number'
    ? `Your plan allows up to ${num(max)} requests per ${per}. Enter a number from 1 to ${num(max)}.`
    : 'Enter a whole number of requests, 1 or more.';
}

/**
 * A name, description or reason the API refused, in plain words: the hidden character it
 * holds and where (from the refusal `body`), or the length allowed.
 */
export function textRefusal(what, max, required = true, body = null) {
  if (body?.character) {
    const name = body.character_name ? ` ${body.character_name}` : '';
    return `The ${what} holds an invisible or control character, ${body.character}${name}, at character ${body.position}. Remove it and try again.`;
  }
  return `Use ${required ? '1' : 'up'} to ${max} characters for the ${what}.`;
}

/** The first day (UTC, `YYYY-MM-DD`) a key may expire on: tomorrow, as a key stops at the start of its day. */
export function firstExpiryDay(now = Date.now()) {
  return new Date(now + 86400000).toISOString().slice(0, 10);
}
