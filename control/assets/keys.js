// Developers → API Keys: the list with its filters, and the Create New API Key dialog.

import {
  api, busy, curlLine, day, dialog, el, emptyRow, ENVIRONMENTS, fieldErrors, fill, firstExpiryDay, leakBanner, num,
  PERMISSIONS, plainText, problemText, rateLimitRefusal, refusedField, retireCandidate, RETIRE_MIN_AGE, row, showError,
  signingBanner, statusBadges, textRefusal, timeEl, userText, when,
} from './lib.js';
import { showSecret } from './secret.js';

const $ = (id) => document.getElementById(id);

// What the list shows when the URL says nothing: active keys, newest first.
const DEFAULTS = { search: '', environment: '', status: 'active', sort: 'created-desc' };
const FIELDS = Object.keys(DEFAULTS);
// Days before its expiry from which a working key carries a warning badge.
const EXPIRY_WARNING_DAYS = 14;

export function initKeys() {
  const filters = $('filters');
  const body = $('keys-body');
  const more = $('keys-more');
  const selectAll = $('select-all');
  let cursor = null;
  let generation = 0;
  let summary = null;
  let keys = [];
  const selected = new Map();

  // The filters live in the URL: reload, Back and Forward restore them, and the controls always
  // say what the list shows.
  function fromUrl() {
    const q = new URLSearchParams(location.search);
    for (const name of FIELDS) {
      const control = filters.elements[name];
      const wanted = q.get(name) ?? DEFAULTS[name];
      const known = control.tagName !== 'SELECT' || [...control.options].some((o) => o.value === wanted);
      control.value = known ? wanted.slice(0, 100) : DEFAULTS[name];
    }
  }
  function current() {
    return Object.fromEntries(FIELDS.map((n) => [n, filters.elements[n].value.trim()]));
  }
  function toUrl(push) {
    const q = new URLSearchParams();
    for (const [name, value] of Object.entries(current())) {
      if (value !== DEFAULTS[name]) q.set(name, value);
    }
    const target = q.size ? `${location.pathname}?${q}` : location.pathname;
    if (target === `${location.pathname}${location.search}`) return;
    history[push ? 'pushState' : 'replaceState'](null, '', target);
  }

  async function load(append = false) {
    const mine = ++generation;
    const state = current();
    const q = new URLSearchParams({ limit: '100' });
    if (state.search) q.set('search', state.search);
    if (state.environment) q.set('environment', state.environment);
    if (state.status !== 'all') q.set('status', state.status);
    if (append && cursor) q.set('cursor', cursor);
    const r = await api('GET', `/v1/keys?${q}`);
    if (mine !== generation) return;
    if (r.status !== 200) {
      fill(body, emptyRow(11, problemText(r)));
      $('match-count').textContent = '';
      return;
    }
    keys = append ? keys.concat(r.body.data) : r.body.data;
    cursor = r.body.next_cursor;
    more.hidden = !cursor;
    summary = r.body;
    fill($('signing-notice'), signingBanner(r.body.signing));
    // A selection never reaches beyond what is listed: nothing hidden gets revoked.
    for (const id of [...selected.keys()]) {
      if (!keys.some((k) => k.id === id && revocable(k))) selected.delete(id);
    }
    render();
    const n = keys.length;
    $('match-count').textContent = `${num(n)} ${n === 1 ? 'key matches' : 'keys match'}${cursor ? ' so far (more below)' : ''}.`;
    const rotating = r.body.rotating_keys || 0;
    $('key-count').textContent =
      `${num(r.body.active_keys)} of ${num(r.body.max_active_keys)} keys in use` +
      (rotating ? ` (${num(rotating)} in a rotation grace period, counted until it ends).` : '.');
    await showLimit();
  }

  function render() {
    const [by, dir] = filters.elements.sort.value.split('-');
    const sorted = sortKeys(keys, by, dir);
    for (const th of document.querySelectorAll('#keys-table th[data-sort]')) {
      if (th.dataset.sort === by) th.setAttribute('aria-sort', dir === 'asc' ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
    $('keys-caption').textContent = `API keys, sorted by ${SORT_NAMES[by]} (${dir === 'asc' ? 'ascending' : 'descending'})`;
    const empty = filtered()
      ? 'No key matches these filters.'
      : 'No active keys. Create one to call the Lynxo API, or show all statuses.';
    fill(body, sorted.length ? sorted.map((k) => keyRow(k, selected.has(k.id), { toggle, revokeOne })) : emptyRow(11, empty));
    syncSelection();
  }

  function filtered() {
    const state = current();
    return Boolean(state.search || state.environment || state.status !== DEFAULTS.status);
  }

  function toggle(key, on) {
    if (on) selected.set(key.id, key);
    else selected.delete(key.id);
    syncSelection();
  }

  function syncSelection() {
    const choosable = keys.filter(revocable);
    const n = selected.size;
    selectAll.checked = n > 0 && n === choosable.length;
    selectAll.indeterminate = n > 0 && n < choosable.length;
    selectAll.disabled = choosable.length === 0;
    $('bulk-bar').hidden = n === 0;
    $('bulk-count').textContent = `${num(n)} ${n === 1 ? 'key' : 'keys'} selected`;
  }

  selectAll.addEventListener('change', () => {
    for (const k of keys.filter(revocable)) {
      if (selectAll.checked) selected.set(k.id, k);
      else selected.delete(k.id);
    }
    for (const box of body.querySelectorAll('input[data-select]')) box.checked = selected.has(box.dataset.select);
    syncSelection();
  });
  $('bulk-clear').addEventListener('click', () => {
    selected.clear();
    render();
    selectAll.focus();
  });

  const bulk = initBulkRevoke(async (revoked) => {
    selected.clear();
    const done = $('bulk-done');
    done.textContent = `${num(revoked.length)} ${revoked.length === 1 ? 'key' : 'keys'} revoked: ${revoked.map((k) => plainText(k.name)).join(', ')}.`;
    await load();
    done.focus();
  });
  function revokeOne(key) {
    bulk.open([key]);
  }
  $('bulk-open').addEventListener('click', () => bulk.open([...selected.values()]));

  // At the plan's limit, say so on the page and in the create form, and point at idle keys.
  async function showLimit(candidates) {
    const notice = $('limit-notice');
    const inForm = $('create-limit');
    const full = summary && summary.active_keys >= summary.max_active_keys;
    if (!full && !candidates) {
      notice.hidden = true;
      inForm.hidden = true;
      $('create-submit').disabled = false;
      return;
    }
    let list = candidates;
    if (!list) {
      const r = await api('GET', '/v1/keys?status=active&limit=1000');
      const active = r.status === 200 ? r.body.data : [];
      // Never a key made in the last day (the server's rule: keys::RETIRE_MIN_AGE).
      const settled = active.filter((k) => Date.now() / 1000 - k.created_at >= RETIRE_MIN_AGE);
      list = settled
        .filter((k) => k.idle || k.last_used_at === null || k.last_used_at === undefined)
        .sort((a, b) => (a.last_used_at ?? 0) - (b.last_used_at ?? 0) || a.created_at - b.created_at)
        .slice(0, 5);
      if (!list.length) list = settled.sort((a, b) => a.created_at - b.created_at).slice(0, 5);
    }
    const max = summary?.max_active_keys ?? 50;
    const explain = () => [
      el('p', {}, el('strong', {}, `Your plan allows ${max} keys, and all of them are in use.`),
        ' Revoke a key you no longer need before creating another; revoked and expired keys do not count.',
        ' A rotated key counts until its grace period ends (rotate its replacement, or revoke it, to end it now).'),
      list.length ? el('p', {}, 'Keys that are idle or oldest:') : null,
      list.length ? el('ul', {}, list.map(retireCandidate)) : null,
    ];
    fill(notice, explain());
    fill(inForm, explain());
    notice.hidden = false;
    inForm.hidden = false;
    $('create-submit').disabled = true;
  }

  // Typing in the search box is one history entry per burst; every other change is its own.
  let timer = null;
  let typing = false;
  filters.addEventListener('input', (e) => {
    if (e.target.name !== 'search') return;
    clearTimeout(timer);
    timer = setTimeout(() => {
      toUrl(!typing);
      typing = true;
      load();
    }, 250);
  });
  filters.addEventListener('change', (e) => {
    if (e.target.name === 'search') return;
    typing = false;
    toUrl(true);
    if (e.target.name === 'sort') render();
    else load();
  });
  filters.addEventListener('submit', (e) => {
    e.preventDefault();
    clearTimeout(timer);
    typing = false;
    toUrl(true);
    load();
  });
  for (const th of document.querySelectorAll('#keys-table th[data-sort]')) {
    th.querySelector('button').addEventListener('click', () => {
      const [by, dir] = filters.elements.sort.value.split('-');
      const next = by === th.dataset.sort ? (dir === 'asc' ? 'desc' : 'asc') : FIRST_DIRECTION[th.dataset.sort];
      filters.elements.sort.value = `${th.dataset.sort}-${next}`;
      typing = false;
      toUrl(true);
      render();
    });
  }
  window.addEventListener('popstate', () => {
    fromUrl();
    typing = false;
    load();
  });
  more.addEventListener('click', () => load(true));

  fromUrl();
  initCreate(load);
  initLeaks();
  load();
}

const SORT_NAMES = {
  name: 'name', environment: 'environment', created: 'creation date', expires: 'expiry date',
  last_used: 'last use', requests: 'requests in 24 hours',
};
const FIRST_DIRECTION = { name: 'asc', environment: 'asc', created: 'desc', expires: 'asc', last_used: 'desc', requests: 'desc' };

/** Whether a key can still be revoked (selected for a bulk revoke, or from its row). */
function revocable(k) {
  return k.status !== 'revoked';
}

/** The keys ordered by one column; keys without a value (never expires, never used) last. */
function sortKeys(list, by, dir) {
  const value = {
    name: (k) => k.name.toLocaleLowerCase(),
    environment: (k) => ENVIRONMENTS[k.environment] || k.environment,
    created: (k) => k.created_at,
    expires: (k) => k.expires_at,
    last_used: (k) => k.last_used_at,
    requests: (k) => k.requests_24h,
  }[by] || ((k) => k.created_at);
  const sign = dir === 'asc' ? 1 : -1;
  return [...list].sort((a, b) => {
    const [x, y] = [value(a), value(b)];
    const missing = (x === null || x === undefined) - (y === null || y === undefined);
    if (missing) return missing;
    const order = typeof x === 'string' ? x.localeCompare(y) : x - y;
    return order * sign || b.created_at - a.created_at || a.id.localeCompare(b.id);
  });
}

/** The Expires cell: the date, and a warning badge when a working key ends soon. */
function expiresCell(k) {
  if (k.expires_at === null || k.expires_at === undefined) return el('span', { class: 'muted' }, 'Never');
  const left = k.expires_at - Date.now() / 1000;
  const days = Math.ceil(left / 86400);
  const soon = (k.status === 'active' || k.status === 'rotating') && left > 0 && days <= EXPIRY_WARNING_DAYS;
  return [
    el('time', { datetime: new Date(k.expires_at * 1000).toISOString(), title: when(k.expires_at) }, day(k.expires_at)),
    // Flat: row() flattens one level only.
    soon ? ' ' : null,
    soon ? el('span', { class: 'badge warn' }, days <= 1 ? 'Expires within a day' : `Expires in ${days} days`) : null,
  ];
}

// The account's leak banner and its "notify only" switch (docs/secret-scanning.md).
function initLeaks() {
  const box = $('leak-notify');
  async function loadLeaks() {
    const [leaks, account] = await Promise.all([api('GET', '/v1/leaks'), api('GET', '/v1/account')]);
    fill($('account-leaks'), leaks.status === 200 ? leakBanner(leaks.body, true) : null);
    if (account.status === 200) box.checked = account.body.leak_response === 'notify';
  }
  box.addEventListener('change', async () => {
    const wanted = box.checked ? 'notify' : 'revoke';
    const r = await api('PUT', '/v1/account/leak-response', { leak_response: wanted });
    showError($('leak-error'), r.status === 200 ? '' : problemText(r));
    $('leak-ok').textContent = r.status === 200
      ? (wanted === 'notify' ? 'Reported keys will be kept working; you will see a banner.' : 'Reported keys will be revoked at once.')
      : '';
    if (r.status !== 200) box.checked = !box.checked;
  });
  loadLeaks();
}

function keyRow(k, checked, { toggle, revokeOne }) {
  const name = plainText(k.name);
  const link = el('a', { href: `/dashboard/keys/${k.id}` }, userText(k.name));
  const box = revocable(k)
    ? el('input', { type: 'checkbox', 'data-select': k.id, 'aria-label': `Select ${name}`, checked })
    : null;
  if (box) box.addEventListener('change', () => toggle(k, box.checked));
  const actions = [];
  if (revocable(k)) {
    const revoke = el('button', { type: 'button', class: 'secondary small', 'aria-label': `Revoke ${name}` }, 'Revoke');
    revoke.addEventListener('click', () => revokeOne(k));
    actions.push(revoke);
  }
  const copy = el('button', { type: 'button', class: 'secondary small', 'aria-label': `Copy ID of ${name}` }, 'Copy ID');
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(k.id);
      copy.textContent = 'Copied';
    } catch {
      copy.textContent = k.id;
    }
  });
  actions.push(copy);
  return row([
    ['Select', box || el('span', { class: 'muted' }, '—')],
    ['Name', link, k.description ? el('span', { class: 'sub' }, userText(k.description)) : null],
    ['Environment', el('span', { class: `env env-${k.environment}` }, ENVIRONMENTS[k.environment] || k.environment)],
    ['Permission', PERMISSIONS[k.permission] || k.permission],
    ['Key', el('code', { class: 'hint-text' }, k.hint)],
    ['Created', timeEl(k.created_at)],
    ['Expires', expiresCell(k)],
    ['Last used', timeEl(k.last_used_at, true)],
    ['Requests (24 h)', el('span', { class: 'numeric' }, num(k.requests_24h))],
    ['Status', el('span', { class: 'badges' }, statusBadges(k))],
    ['Actions', el('span', { class: 'row-actions' }, actions)],
  ], { 'data-key-id': k.id });
}

// The bulk revoke dialog: the chosen keys, one reason, and one typed confirmation for the set,
// sent as one `POST /v1/keys/bulk-revoke` (all or none).
function initBulkRevoke(done) {
  const node = $('bulk-dialog');
  const form = $('bulk-form');
  const error = $('bulk-error');
  let chosen = [];
  const phrase = () => (chosen.length === 1 ? 'revoke 1 key' : `revoke ${chosen.length} keys`);
  const d = dialog(node, {
    onClose() {
      form.reset();
      fieldErrors(form, []);
      showError(error, '');
    },
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError(error, '');
    const f = form.elements;
    const reason = f.reason.value.trim();
    const problems = [];
    if (!reason) problems.push([f.reason, 'Say why these keys are revoked; it is kept with each key.']);
    if (f.confirm.value.trim().toLowerCase() !== phrase()) {
      problems.push([f.confirm, `Type “${phrase()}” exactly, to confirm.`]);
    }
    if (fieldErrors(form, problems)) return;
    const r = await busy(form, () => api('POST', '/v1/keys/bulk-revoke', { ids: chosen.map((k) => k.id), reason }));
    if (r.status === 200) {
      const revoked = chosen;
      d.close();
      await done(revoked);
      return;
    }
    if (refusedField(r) === 'reason') {
      fieldErrors(form, [[f.reason, textRefusal('reason', 500, true, r.body)]]);
      return;
    }
    showError(error, r.status === 404
      ? 'Some of these keys are no longer in your account, so none was revoked. Close this, reload the list and choose again.'
      : problemText(r));
  });
  return {
    open(keys) {
      chosen = keys;
      const n = keys.length;
      $('bulk-title').textContent = n === 1 ? 'Revoke 1 key' : `Revoke ${n} keys`;
      $('bulk-submit').textContent = n === 1 ? 'Revoke key' : `Revoke ${n} keys`;
      $('bulk-summary').textContent = n === 1
        ? 'This key stops working for every request.'
        : `These ${n} keys stop working for every request.`;
      fill($('bulk-list'), keys.map((k) => el('li', {}, userText(k.name), ' ', el('code', { class: 'hint-text' }, k.hint), ' ',
        el('span', { class: `env env-${k.environment}` }, ENVIRONMENTS[k.environment] || k.environment))));
      $('bulk-phrase').textContent = phrase();
      d.open($('bulk-reason'));
    },
  };
}

function initCreate(reload) {
  const node = $('create-dialog');
  const form = $('create-form');
  const panel = $('created');
  const custom = $('custom-scopes');
  const error = $('create-error');
  let forget = null;

  const d = dialog(node, {
    onClose() {
      // The key leaves the page with the dialog.
      if (forget) forget();
      forget = null;
      form.reset();
      syncPermission();
      form.hidden = false;
      fieldErrors(form, []);
      showError(error, '');
    },
  });
  $('create-open').addEventListener('click', () => {
    // A key stops at the start of its expiry day (UTC): the picker offers tomorrow onward.
    $('key-expiry').min = firstExpiryDay();
    d.open($('key-name'));
  });
  panel.querySelector('[data-done]').addEventListener('click', () => d.close());

  function syncPermission() {
    const level = form.elements.permission.value;
    custom.hidden = level !== 'custom';
  }
  for (const radio of form.querySelectorAll('input[name=permission]')) {
    radio.addEventListener('change', syncPermission);
  }
  syncPermission();

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError(error, '');
    const f = form.elements;
    const name = f.name.value.trim();
    const body = {
      name,
      environment: f.environment.value,
      permission: f.permission.value,
    };
    const description = f.description.value.trim();
    if (description) body.description = description;
    const problems = [];
    if (!name) problems.push([f.name, 'Give the key a name, e.g. where it is used.']);
    if (body.permission === 'custom') {
      body.scopes = [...form.querySelectorAll('input[name=scopes]:checked')].map((c) => c.value);
      if (!body.scopes.length) problems.push([$('custom-scopes').querySelector('fieldset'), 'Pick at least one scope for a custom key.']);
    }
    if (f.expires.value) {
      if (f.expires.value < firstExpiryDay()) {
        problems.push([f.expires, 'Pick a date after today: a key stops working at the start of the day you pick.']);
      }
      body.expires_at = Math.floor(Date.parse(`${f.expires.value}T00:00:00Z`) / 1000);
    } else if (f.expires.validity.badInput) {
      problems.push([f.expires, 'Enter a whole date, or leave it empty for a key that does not expire.']);
    }
    if (f.rate_limit.value || f.rate_limit.validity.badInput) {
      const limit = Number(f.rate_limit.value);
      if (!Number.isInteger(limit) || limit < 1) {
        problems.push([f.rate_limit, 'Enter a whole number of requests, 1 or more, or leave it empty for the plan\'s default.']);
      }
      body.rate_limit = limit;
      // The window is sent only when it is not the default minute, so a server that predates
      // configurable windows still accepts a per-minute limit.
      if (f.rate_limit_window.value !== '60') body.rate_limit_window = Number(f.rate_limit_window.value);
    }
    if (fieldErrors(form, problems)) return;
    const r = await busy(form, () => api('POST', '/v1/keys', body));
    if (r.status === 201) {
      form.hidden = true;
      forget = showSecret(panel, r.body.key, curlLine(r.body.key, r.body.scopes || [], r.body.environment), r.body);
      reload();
      return;
    }
    if (r.body?.code === 'active_key_limit_reached') {
      showError(error, problemText(r));
      const notice = $('create-limit');
      fill(notice,
        el('p', {}, el('strong', {}, `${r.body.active_keys} of ${r.body.max_active_keys} keys are in use.`),
          ' Revoke a key you no longer use before creating another.',
          r.body.rotating_keys ? ` ${r.body.rotating_keys} of them are rotated keys in their grace period; they count until it ends.` : ''),
        el('ul', {}, (r.body.candidates || []).map(retireCandidate)));
      notice.hidden = false;
      return;
    }
    const field = refusedField(r);
    const plain = {
      name: [f.name, textRefusal('name', 100, true, r.body)],
      description: [f.description, textRefusal('description', 1000, false, r.body)],
      scopes: [$('custom-scopes').querySelector('fieldset'), 'Pick scopes from the list.'],
      expires_at: [f.expires, 'Pick a date after today and within ten years.'],
      rate_limit: [f.rate_limit, rateLimitRefusal(r.body)],
      rate_limit_window: [f.rate_limit_window, 'Choose one of the windows in the list.'],
    }[field];
    if (plain) {
      fieldErrors(form, [plain]);
      return;
    }
    showError(error, problemText(r));
  });
}
