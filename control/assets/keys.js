// Developers → API Keys: the list with its filters, and the Create New API Key dialog.

import {
  api, busy, curlLine, dialog, el, emptyRow, ENVIRONMENTS, fill, leakBanner, num, PERMISSIONS, problemText,
  retireCandidate, RETIRE_MIN_AGE, row, showError, signingBanner, statusBadges, timeEl, userText,
} from './lib.js';
import { showSecret } from './secret.js';

const $ = (id) => document.getElementById(id);

export function initKeys() {
  const filters = $('filters');
  const body = $('keys-body');
  const more = $('keys-more');
  let cursor = null;
  let generation = 0;
  let summary = null;

  async function load(append = false) {
    const mine = ++generation;
    const q = new URLSearchParams({ limit: '100' });
    for (const name of ['search', 'environment', 'status']) {
      const value = filters.elements[name].value.trim();
      if (value) q.set(name, value);
    }
    if (append && cursor) q.set('cursor', cursor);
    const r = await api('GET', `/v1/keys?${q}`);
    if (mine !== generation) return;
    if (r.status !== 200) {
      fill(body, emptyRow(8, problemText(r)));
      return;
    }
    const rows = r.body.data.map(keyRow);
    if (append) body.append(...rows);
    else fill(body, rows.length ? rows : emptyRow(8, filtered() ? 'No key matches these filters.' : 'No keys yet. Create one to call the Lynxo API.'));
    cursor = r.body.next_cursor;
    more.hidden = !cursor;
    summary = r.body;
    fill($('signing-notice'), signingBanner(r.body.signing));
    const rotating = r.body.rotating_keys || 0;
    $('key-count').textContent =
      `${num(r.body.active_keys)} of ${num(r.body.max_active_keys)} keys in use` +
      (rotating ? ` (${num(rotating)} in a rotation grace period, counted until it ends).` : '.');
    await showLimit();
  }

  function filtered() {
    return ['search', 'environment', 'status'].some((n) => filters.elements[n].value.trim());
  }

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
      const keys = r.status === 200 ? r.body.data : [];
      // Never a key made in the last day (the server's rule: keys::RETIRE_MIN_AGE).
      const settled = keys.filter((k) => Date.now() / 1000 - k.created_at >= RETIRE_MIN_AGE);
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

  let timer = null;
  filters.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => load(), 250);
  });
  filters.addEventListener('submit', (e) => {
    e.preventDefault();
    load();
  });
  more.addEventListener('click', () => load(true));

  initCreate(load);
  initLeaks();
  load();
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

function keyRow(k) {
  const link = el('a', { href: `/dashboard/keys/${k.id}` }, userText(k.name));
  return row([
    ['Name', link, k.description ? el('span', { class: 'sub' }, userText(k.description)) : null],
    ['Environment', el('span', { class: `env env-${k.environment}` }, ENVIRONMENTS[k.environment] || k.environment)],
    ['Permission', PERMISSIONS[k.permission] || k.permission],
    ['Key', el('code', { class: 'hint-text' }, k.hint)],
    ['Created', timeEl(k.created_at)],
    ['Last used', timeEl(k.last_used_at, true)],
    ['Requests (24 h)', el('span', { class: 'numeric' }, num(k.requests_24h))],
    ['Status', el('span', { class: 'badges' }, statusBadges(k))],
  ], { 'data-key-id': k.id });
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
      showError(error, '');
    },
  });
  $('create-open').addEventListener('click', () => d.open($('key-name')));
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
    if (!name) {
      showError(error, 'Give the key a name.');
      f.name.focus();
      return;
    }
    const body = {
      name,
      environment: f.environment.value,
      permission: f.permission.value,
    };
    const description = f.description.value.trim();
    if (description) body.description = description;
    if (body.permission === 'custom') {
      body.scopes = [...form.querySelectorAll('input[name=scopes]:checked')].map((c) => c.value);
      if (!body.scopes.length) {
        showError(error, 'Pick at least one scope for a custom key.');
        return;
      }
    }
    if (f.expires.value) {
      body.expires_at = Math.floor(Date.parse(`${f.expires.value}T00:00:00Z`) / 1000);
    }
    if (f.rate_limit.value) {
      body.rate_limit = Number(f.rate_limit.value);
      // The window is sent only when it is not the default minute, so a server that predates
      // configurable windows still accepts a per-minute limit.
      if (f.rate_limit_window.value !== '60') body.rate_limit_window = Number(f.rate_limit_window.value);
    }
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
    showError(error, problemText(r));
  });
}
