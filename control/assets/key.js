// One key: details, settings (PATCH), usage chart, activity log, unused scopes, its audit
// events, Rotate (shown-once new key) and Revoke (typed-name confirmation).

import {
  api, busy, catalog, curlLine, detailsList, dialog, el, emptyRow, ENVIRONMENTS, fill, leakBanner, missingRoute, num,
  PERMISSIONS, plainText, problemText, row, showError, statusBadges, timeEl, userText, when,
  fieldErrors, rateLimitRefusal, refusedField, textRefusal,
} from './lib.js';
import { drawUsage } from './chart.js';
import { showSecret } from './secret.js';

const $ = (id) => document.getElementById(id);

const RANGES = {
  '24h': { seconds: 86400, granularity: 'hour', label: 'last 24 hours' },
  '7d': { seconds: 7 * 86400, granularity: 'hour', label: 'last 7 days' },
  '30d': { seconds: 30 * 86400, granularity: 'day', label: 'last 30 days' },
};

export function initKey() {
  const id = document.body.dataset.keyId;
  let key = null;
  let range = '24h';

  async function loadKey() {
    const r = await api('GET', `/v1/keys/${id}`);
    if (r.status !== 200) {
      showError($('key-error'), r.status === 404 ? 'No key with this id in your account.' : problemText(r));
      return;
    }
    key = r.body;
    renderKey(key);
  }

  function renderKey(k) {
    document.title = `${plainText(k.name)} · Lynxo Keys`;
    fill($('key-title'), userText(k.name));
    fill($('crumb-name'), userText(k.name));
    fill($('key-status'), el('span', { class: 'badges' }, statusBadges(k)));
    const dd = (term, ...value) => [el('dt', {}, term), el('dd', {}, ...value)];
    const link = (other) => el('a', { href: `/dashboard/keys/${other}` }, other);
    fill($('key-details'),
      dd('Key', el('code', {}, k.hint)),
      dd('Key id', el('code', {}, k.id)),
      k.description ? dd('Description', userText(k.description)) : null,
      dd('Environment', ENVIRONMENTS[k.environment] || k.environment),
      dd('Permission', PERMISSIONS[k.permission] || k.permission),
      dd('Scopes', el('span', { class: 'chips' }, (k.scopes || []).map((s) => el('code', { class: 'chip' }, s === '*' ? 'all scopes' : s)))),
      dd('Rate limit', rateText(k)),
      dd('Created', timeEl(k.created_at)),
      dd('Expires', k.expires_at ? timeEl(k.expires_at) : 'Never'),
      dd('Last used', timeEl(k.last_used_at, true),
        k.last_used_ip ? el('span', { class: 'sub' }, `from ${k.last_used_ip}`) : null,
        k.last_used_user_agent ? el('span', { class: 'sub' }, userText(k.last_used_user_agent)) : null),
      dd('Requests (24 h)', num(k.requests_24h)),
      k.rotated_from ? dd('Replaces', link(k.rotated_from)) : null,
      k.rotated_to ? dd('Replaced by', link(k.rotated_to)) : null,
      k.grace_until && k.status === 'rotating' ? dd('Stops working', timeEl(k.grace_until)) : null,
      k.rate_limit_budget && k.rate_limit_budget !== k.id
        ? dd('Rate limit shared with', 'its rotation chain, from ', link(k.rate_limit_budget)) : null,
      k.revoked_at && k.status === 'revoked' ? dd('Revoked', timeEl(k.revoked_at), k.revoke_reason ? el('span', { class: 'sub' }, userText(k.revoke_reason)) : null) : null,
    );
    const f = $('settings-form').elements;
    f.name.value = k.name;
    f.description.value = k.description || '';
    f.rate_limit.value = k.rate_limit ?? '';
    f.rate_limit_window.value = String(k.rate_limit_window ?? 60);
    const pending = $('rate-pending');
    pending.hidden = !k.rate_limit_pending;
    pending.textContent = k.rate_limit_pending ? 'The new rate limit is on its way to the edge.' : '';
    $('rotate-open').disabled = k.status !== 'active';
    $('revoke-open').disabled = k.status === 'revoked';
    fill($('revoke-name'), userText(k.name));
    renderUnused(k);
  }

  function rateText(k) {
    if (typeof k.rate_limit !== 'number') return '—';
    const w = k.rate_limit_window ?? 60;
    const per = { 1: 'second', 60: 'minute', 3600: 'hour', 86400: 'day' }[w] || `${w} s`;
    return `${num(k.rate_limit)} requests per ${per}`;
  }

  function renderUnused(k) {
    const box = $('unused-scopes');
    if (!Array.isArray(k.unused_scopes)) {
      fill(box, el('p', {}, '—'));
      return;
    }
    if (!k.unused_scopes.length) {
      fill(box, el('p', {}, 'Every scope of this key was used in the last 30 days.'));
      return;
    }
    const about = Object.fromEntries(catalog().map((s) => [s.name, s.description]));
    fill(box,
      el('p', {}, `This key holds scopes it has not used${k.unused_scopes_since ? ` since ${when(k.unused_scopes_since)}` : ' in 30 days'}. A key with fewer scopes does less harm if it leaks: consider creating a narrower one.`),
      el('ul', { class: 'unused' }, k.unused_scopes.map((s) => el('li', {}, el('code', {}, s), about[s] ? ` ${about[s]}` : ''))));
  }

  async function loadUsage() {
    const spec = RANGES[range];
    const step = spec.granularity === 'day' ? 86400 : 3600;
    const to = Math.ceil(Date.now() / 1000 / step) * step;
    const from = to - spec.seconds;
    const q = new URLSearchParams({ from, to, granularity: spec.granularity });
    const r = await api('GET', `/v1/keys/${id}/usage?${q}`);
    const totals = $('usage-totals');
    if (r.status !== 200) {
      totals.textContent = missingRoute(r) ? 'Usage is not available from this control plane yet.' : problemText(r);
      fill($('usage-chart'));
      return;
    }
    const t = r.body.totals || {};
    totals.textContent = `${num(t.requests)} requests in the ${spec.label}: ${num(t.allowed)} allowed, ${num(t.denied)} denied.`;
    drawUsage($('usage-chart'), $('usage-table'), r.body, spec.label);
    const scopes = Object.entries(r.body.by_scope || {}).sort((a, b) => b[1] - a[1]);
    fill($('usage-scopes'), scopes.length
      ? el('ul', { class: 'by-scope' }, scopes.map(([s, n]) => el('li', {}, el('code', {}, s), `: ${num(n)}`)))
      : el('p', {}, 'No requests reached a route in this range.'));
  }

  for (const b of document.querySelectorAll('[data-range]')) {
    b.addEventListener('click', () => {
      range = b.dataset.range;
      for (const other of document.querySelectorAll('[data-range]')) {
        other.setAttribute('aria-pressed', String(other === b));
      }
      loadUsage();
    });
  }

  let activityCursor = null;
  async function loadActivity(more = false) {
    const q = new URLSearchParams({ limit: '50' });
    const outcome = $('activity-outcome').value;
    if (outcome) q.set('outcome', outcome);
    if (more && activityCursor) q.set('before', activityCursor);
    const r = await api('GET', `/v1/keys/${id}/activity?${q}`);
    const body = $('activity-body');
    if (r.status !== 200) {
      fill(body, emptyRow(6, missingRoute(r) ? 'Activity is not available from this control plane yet.' : problemText(r)));
      return;
    }
    const rows = (r.body.data || []).map((a) => row([
      ['Time', timeEl(Math.floor(a.at_ms / 1000))],
      ['Request', el('code', {}, userText(`${a.method} ${a.path}`))],
      ['Status', el('span', { class: `badge outcome o-${a.outcome}` }, String(a.status))],
      ['Client', a.client_ip ? userText(a.client_ip) : '—'],
      ['Where', userText([a.country, a.colo].filter(Boolean).join(' · ') || '—')],
      ['User agent', el('span', { class: 'ua' }, a.user_agent ? userText(a.user_agent) : '—')],
    ], { class: 'activity' }));
    if (more) body.append(...rows);
    else fill(body, rows.length ? rows : emptyRow(6, outcome ? 'No request with this outcome.' : 'No requests recorded yet.'));
    activityCursor = r.body.next_cursor;
    $('activity-more').hidden = !activityCursor;
  }
  $('activity-more').addEventListener('click', () => loadActivity(true));
  $('activity-outcome').addEventListener('change', () => loadActivity());

  // This key's events, and the rotation that made it (an event of the key it replaces).
  async function loadEvents() {
    const body = $('events-body');
    const q = (target) => api('GET', `/v1/audit-events?limit=1000&target=${encodeURIComponent(target)}`);
    const [own, parent] = await Promise.all([q(id), key?.rotated_from ? q(key.rotated_from) : null]);
    const failed = [own, parent].find((r) => r && r.status !== 200);
    if (failed) {
      fill(body, emptyRow(4, problemText(failed)));
      return;
    }
    const made = parent ? parent.body.data.filter((e) => e.details?.new_key_id === id) : [];
    const mine = own.body.data.concat(made).sort((a, b) => b.seq - a.seq);
    fill(body, mine.length ? mine.map((e) => row([
      ['Time', timeEl(e.at)],
      ['Event', el('code', {}, userText(e.action))],
      ['By', userText(e.actor)],
      ['Details', detailsList(e.details)],
    ])) : emptyRow(4, 'No events.'));
  }

  // Where this key was found in public, and what was done (docs/secret-scanning.md).
  async function loadLeaks() {
    const r = await api('GET', `/v1/keys/${id}/leaks`);
    fill($('key-leaks'), r.status === 200 ? leakBanner(r.body) : null);
  }

  async function loadAll() {
    await loadKey();
    await Promise.all([loadUsage(), loadActivity(), loadEvents(), loadLeaks()]);
  }

  initSettings(id, () => key, loadAll);
  initRotate(id, () => key, loadAll);
  initRevoke(id, () => key, loadAll);
  loadAll();
}

function initSettings(id, current, reload) {
  const form = $('settings-form');
  const error = $('settings-error');
  const ok = $('settings-ok');
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError(error, '');
    ok.textContent = '';
    const k = current();
    if (!k) return;
    const f = form.elements;
    // Only what changed: the API refuses fields it does not know, and a name-only change must
    // not depend on rate-limit support.
    const body = {};
    if (f.name.value.trim() !== k.name) body.name = f.name.value.trim();
    if (f.description.value.trim() !== (k.description || '')) body.description = f.description.value.trim();
    if (f.rate_limit.value && Number(f.rate_limit.value) !== k.rate_limit) body.rate_limit = Number(f.rate_limit.value);
    if (Number(f.rate_limit_window.value) !== (k.rate_limit_window ?? 60)) {
      body.rate_limit_window = Number(f.rate_limit_window.value);
      if (!body.rate_limit && f.rate_limit.value) body.rate_limit = Number(f.rate_limit.value);
    }
    if (settingsErrors(form, body, null)) return;
    if (!Object.keys(body).length) {
      ok.textContent = 'Nothing changed.';
      return;
    }
    const r = await busy(form, () => api('PATCH', `/v1/keys/${id}`, body));
    if (r.status !== 200) {
      if (!settingsErrors(form, body, r)) showError(error, problemText(r));
      return;
    }
    ok.textContent = 'Saved.';
    reload();
  });
}

function initRotate(id, current, reload) {
  const node = $('rotate-dialog');
  const form = $('rotate-form');
  const panel = $('rotated');
  const error = $('rotate-error');
  let forget = null;
  let rotated = false;
  const d = dialog(node, {
    onClose() {
      if (forget) forget();
      forget = null;
      form.hidden = false;
      showError(error, '');
      if (rotated) reload();
      rotated = false;
    },
  });
  $('rotate-open').addEventListener('click', () => d.open($('grace')));
  panel.querySelector('[data-done]').addEventListener('click', () => d.close());
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError(error, '');
    const grace = Number(form.elements.grace_period_seconds.value);
    const r = await busy(form, () => api('POST', `/v1/keys/${id}/rotate`, { grace_period_seconds: grace }));
    if (r.status !== 201) {
      showError(error, problemText(r));
      return;
    }
    rotated = true;
    form.hidden = true;
    const fresh = r.body.key;
    forget = showSecret(panel, fresh.key, curlLine(fresh.key, fresh.scopes || current()?.scopes || []));
    const more = panel.querySelector('[data-new-key]') || el('p', { 'data-new-key': '' });
    fill(more, 'The new key has its own page: ', el('a', { href: `/dashboard/keys/${fresh.id}` }, fresh.name), '.');
    panel.querySelector('[data-done]').parentElement.before(more);
  });
}

function initRevoke(id, current, reload) {
  const node = $('revoke-dialog');
  const form = $('revoke-form');
  const confirm = $('revoke-confirm');
  const submit = $('revoke-submit');
  const error = $('revoke-error');
  const d = dialog(node, {
    onClose() {
      confirm.value = '';
      submit.disabled = true;
      showError(error, '');
    },
  });
  $('revoke-open').addEventListener('click', () => d.open(confirm));
  confirm.addEventListener('input', () => {
    submit.disabled = confirm.value !== current()?.name;
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (confirm.value !== current()?.name) return;
    const reason = form.elements.reason.value.trim() || 'Revoked in the dashboard';
    const r = await busy(form, () => api('POST', `/v1/keys/${id}/revoke`, { reason }));
    if (r.status !== 200) {
      showError(error, problemText(r));
      return;
    }
    d.close();
    reload();
  });
}

// Field-level errors of the settings form (`fieldErrors`): what is wrong before sending, or
// the field the API refused (`r`), in plain words. Returns whether there was any.
function settingsErrors(form, body, r) {
  const f = form.elements;
  if (!r) {
    const problems = [];
    if (!f.name.value.trim()) problems.push([f.name, 'The key needs a name.']);
    const limit = Number(f.rate_limit.value);
    if (f.rate_limit.validity.badInput || (f.rate_limit.value && (!Number.isInteger(limit) || limit < 1))) {
      problems.push([f.rate_limit, 'Enter a whole number of requests, 1 or more.']);
    }
    return fieldErrors(form, problems);
  }
  const plain = {
    name: [f.name, textRefusal('name', 100, true, r.body)],
    description: [f.description, textRefusal('description', 1000, false, r.body)],
    rate_limit: [f.rate_limit, rateLimitRefusal(r.body)],
    rate_limit_window: [f.rate_limit_window, 'Choose one of the windows in the list.'],
  }[refusedField(r)];
  return plain ? fieldErrors(form, [plain]) : false;
}
