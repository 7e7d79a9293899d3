// One key: details, settings (PATCH), usage chart, activity log, unused scopes, its audit
// events, Rotate (shown-once new key) and Revoke (typed-name confirmation).

import {
  api, busy, catalog, curlLine, day, detailsList, dialog, el, emptyRow, ENVIRONMENTS, fill, keySigningBanner, leakBanner, missingRoute, num,
  PERMISSIONS, plainText, problemText, refusalReason, row, scopeCounts, showError, statusBadges, timeEl, timeSecondsEl, userText, when,
  fieldErrors, rateLimitRefusal, refusedField, textRefusal,
} from './lib.js';
import { drawUsage } from './chart.js';
import { showSecret } from './secret.js';

const $ = (id) => document.getElementById(id);

/** Rows the key page shows of its activity and of its events before "View all". */
const FIRST_ROWS = 10;
/** Keys are due for rotation this long after their creation (a rotated key is created anew). */
const ROTATE_AFTER = 90 * 86400;

/**
 * Why the edge refused a request: the activity entry's `reason` when the control plane names one
 * (lib.js, `refusalReason`), else from its outcome (shared::usage::Outcome) and the key's state
 * at the time; '' for a request it forwarded.
 */
export function denialReason(a, k) {
  if (a.reason) return refusalReason(a.reason);
  const at = a.at_ms / 1000;
  switch (a.outcome) {
    case '401':
      if (k?.revoked_at && k.status === 'revoked' && at >= k.revoked_at) return 'Key revoked';
      if (k?.expires_at && at >= k.expires_at) return 'Key expired';
      return 'Key refused: revoked, expired or for another environment';
    case '403': return 'The key lacks the scope this route needs';
    case '429': return 'Over the key\'s rate limit';
    case 'edge_4xx': return 'No such route or method at the edge';
    case 'edge_5xx': return 'The edge could not serve it';
    default: return '';
  }
}

/** "2 h 5 min", "3 min 20 s": what is left until `seconds` (Unix), never negative. */
export function countdown(seconds, now = Date.now() / 1000) {
  let left = Math.max(0, Math.round(seconds - now));
  const d = Math.floor(left / 86400); left -= d * 86400;
  const h = Math.floor(left / 3600); left -= h * 3600;
  const m = Math.floor(left / 60); const sec = left - m * 60;
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  return m ? `${m} min ${sec} s` : `${sec} s`;
}

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
    await loadRelated(key);
  }

  // The keys this one is linked to, by name: ids in links tell a person nothing.
  const names = new Map();
  async function loadRelated(k) {
    const ids = [k.rotated_from, k.rotated_to, k.rate_limit_budget].filter((x) => x && x !== k.id && !names.has(x));
    const found = await Promise.all(ids.map((other) => api('GET', `/v1/keys/${other}`)));
    found.forEach((res, i) => names.set(ids[i], res.status === 200 ? res.body : null));
    if (ids.length && key === k) renderKey(k);
  }

  /** A link to another key of the account, by its name (its id only if it cannot be read). */
  function keyLink(other) {
    const o = names.get(other);
    return el('a', { href: `/dashboard/keys/${other}` }, o ? userText(o.name) : el('code', {}, other),
      o ? el('span', { class: 'sub' }, ` (${o.hint})`) : null);
  }

  let ticking = null;
  /** The old key's "stops working in" countdown, each second while it is in its grace. */
  function tick() {
    const node = $('grace-countdown');
    if (!node || !key?.grace_until || key.status !== 'rotating') {
      clearInterval(ticking);
      ticking = null;
      return;
    }
    node.textContent = countdown(key.grace_until);
    if (key.grace_until <= Date.now() / 1000) {
      clearInterval(ticking);
      ticking = null;
      loadAll();
    }
  }

  function renderKey(k) {
    document.title = `${plainText(k.name)} · Lynxo Keys`;
    fill($('key-title'), userText(k.name));
    fill($('crumb-name'), userText(k.name));
    const chips = [];
    if (k.rotated_to) chips.push(el('span', { class: 'badge rotated' }, 'Rotated: replaced by ', keyLink(k.rotated_to)));
    if (k.rotated_from) chips.push(el('span', { class: 'badge rotated' }, 'Rotated: replaces ', keyLink(k.rotated_from)));
    fill($('key-status'), el('span', { class: 'badges' }, statusBadges(k), chips));
    const rotateBy = k.created_at + ROTATE_AFTER;
    const working = k.status === 'active' || k.status === 'rotating';
    fill($('key-facts'),
      el('span', {}, ENVIRONMENTS[k.environment] || k.environment), ' · ',
      el('span', {}, PERMISSIONS[k.permission] || k.permission), ' · ',
      el('code', {}, k.hint),
      working && k.status === 'active' ? [' · ', el('span', { class: k.rotation_due ? 'due-text' : null, id: 'rotate-by' }, `Rotate by ${day(rotateBy)}`)] : null,
      k.status === 'rotating' && k.grace_until
        ? [' · ', el('strong', { class: 'due-text' }, 'Stops working in ', el('span', { id: 'grace-countdown' }, countdown(k.grace_until)))] : null);
    if (k.status === 'rotating' && k.grace_until && !ticking) ticking = setInterval(tick, 1000);
    const dd = (term, ...value) => [el('dt', {}, term), el('dd', {}, ...value)];
    const link = keyLink;
    fill($('key-details'),
      dd('Key', el('code', {}, k.hint)),
      dd('Key id', el('code', {}, k.id)),
      k.description ? dd('Description', userText(k.description)) : null,
      dd('Environment', ENVIRONMENTS[k.environment] || k.environment),
      dd('Permission', PERMISSIONS[k.permission] || k.permission),
      dd('Scopes', el('span', { class: 'chips' }, (k.scopes || []).map((s) => el('code', { class: 'chip' }, s === '*' ? 'all scopes' : s)))),
      dd('Rate limit', rateText(k)),
      dd('Created', timeEl(k.created_at)),
      working ? dd('Rotate by', timeEl(rotateBy), el('span', { class: 'sub' }, k.rotated_from ? '90 days after its rotation' : '90 days after its creation')) : null,
      dd('Expires', k.expires_at ? timeEl(k.expires_at) : 'Never'),
      dd('Last used', timeEl(k.last_used_at, true),
        k.last_used_ip ? el('span', { class: 'sub' }, `from ${k.last_used_ip}`) : null,
        k.last_used_user_agent ? el('span', { class: 'sub' }, userText(k.last_used_user_agent)) : null),
      dd('Requests (24 h)', num(k.requests_24h), k.status === 'revoked' ? el('span', { class: 'sub' }, 'before the revocation') : null),
      k.status === 'revoked' ? dd('Refused since revocation', num(k.refused_since_revocation)) : null,
      dd('Signing key', `kid ${k.kid} (${k.signing_key})`),
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
    fill($('key-signing'), keySigningBanner(k));
    // A key whose signing key was retired is revoked; rotating it makes its one replacement.
    const replaceable = k.signing_key === 'retired' && k.revoke_reason === 'signing_key_retired' && !k.rotated_to;
    $('rotate-open').disabled = k.status !== 'active' && !replaceable;
    $('rotate-open').hidden = k.status === 'revoked' && !replaceable;
    $('revoke-open').hidden = k.status === 'revoked';
    fill($('revoke-name'), userText(k.name));
    renderRevoked(k);
    renderUnused(k);
  }

  // A revoked key: the banner (when, why, attempts since), read-only settings.
  function renderRevoked(k) {
    const revoked = k.status === 'revoked';
    const banner = $('revoked-banner');
    banner.hidden = !revoked;
    const f = $('settings-form');
    for (const control of f.elements) control.disabled = revoked;
    $('settings-save').hidden = revoked;
    $('settings-readonly').hidden = !revoked;
    if (!revoked) return;
    const n = k.refused_since_revocation ?? 0;
    fill($('revoked-text'),
      'Revoked ', timeEl(k.revoked_at), '. ',
      k.revoke_reason === 'rotated' && k.rotated_to
        ? ['Its rotation ended; it was replaced by ', keyLink(k.rotated_to), '. ']
        : ['Reason: ', userText(k.revoke_reason || '—'), '. '],
      el('strong', {}, n === 1 ? '1 attempt' : `${num(n)} attempts`), n === 1 ? ' with it was refused since then.' : ' with it were refused since then.');
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
    // Too young, or no request answered yet: a list of unused scopes would say nothing.
    if (k.unused_scopes_advice === false) {
      fill(box, el('p', { id: 'unused-wait' }, k.unused_scopes_advice_from * 1000 > Date.now()
        ? ['Too early to tell which scopes this key does not need: the advice starts on ', timeEl(k.unused_scopes_advice_from),
          ', when the key is a week old, once it has served requests. A key\'s first days say little about what it needs.']
        : 'No request of this key was answered in the last 30 days, so its scopes cannot be judged yet.'));
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
    fill($('usage-scopes'), scopeCounts(r.body, key?.scopes));
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

  // Ten rows first; "View all" pages through the rest, 50 at a time. A revoked key's log ends
  // at its revocation: the refused attempts after it have their own table.
  let activityCursor = null;
  let activityAll = false;
  async function loadActivity(more = false) {
    const q = new URLSearchParams({ limit: String(activityAll ? 50 : FIRST_ROWS) });
    const outcome = $('activity-outcome').value;
    if (outcome) q.set('outcome', outcome);
    if (key?.status === 'revoked' && key.revoked_at) q.set('to_ms', String(key.revoked_at * 1000));
    if (more && activityCursor) q.set('before', activityCursor);
    const r = await api('GET', `/v1/keys/${id}/activity?${q}`);
    const body = $('activity-body');
    if (r.status !== 200) {
      fill(body, emptyRow(7, missingRoute(r) ? 'Activity is not available from this control plane yet.' : problemText(r)));
      return;
    }
    const rows = (r.body.data || []).map((a) => activityRow(a, true));
    if (more) body.append(...rows);
    else fill(body, rows.length ? rows : emptyRow(7, outcome ? 'No request with this outcome.' : 'No requests recorded yet.'));
    activityCursor = r.body.next_cursor;
    $('activity-all').hidden = activityAll || !activityCursor;
    $('activity-more').hidden = !activityAll || !activityCursor;
  }

  function activityRow(a, withReason) {
    return row([
      ['Time', timeSecondsEl(a.at_ms)],
      ['Request', el('code', {}, userText(`${a.method} ${a.path}`))],
      ['Status', el('span', { class: `badge outcome o-${a.outcome}` }, String(a.status))],
      withReason ? ['Reason', denialReason(a, key) || '—'] : null,
      ['Client', a.client_ip ? userText(a.client_ip) : '—'],
      ['Where', userText([a.country, a.colo].filter(Boolean).join(' · ') || '—')],
      ['User agent', el('span', { class: 'ua' }, a.user_agent ? userText(a.user_agent) : '—')],
    ].filter(Boolean), { class: 'activity' });
  }

  async function loadAttempts() {
    const section = $('attempts');
    section.hidden = key?.status !== 'revoked' || !key.revoked_at;
    if (section.hidden) return;
    const n = key.refused_since_revocation ?? 0;
    const q = new URLSearchParams({ limit: String(FIRST_ROWS), from_ms: String(key.revoked_at * 1000) });
    const r = await api('GET', `/v1/keys/${id}/activity?${q}`);
    const body = $('attempts-body');
    if (r.status !== 200) {
      fill(body, emptyRow(6, problemText(r)));
      return;
    }
    $('attempts-count').textContent = `${n === 1 ? '1 request was' : `${num(n)} requests were`} refused since ${when(key.revoked_at)}; the latest ${FIRST_ROWS} at most are listed.`;
    const rows = (r.body.data || []).map((a) => activityRow(a, false));
    fill(body, rows.length ? rows : emptyRow(6, 'No attempt since the revocation.'));
  }
  $('activity-more').addEventListener('click', () => loadActivity(true));
  $('activity-all').addEventListener('click', () => {
    activityAll = true;
    $('activity-all').hidden = true;
    loadActivity(true);
  });
  $('activity-outcome').addEventListener('change', () => loadActivity());

  // This key's events, and the rotation that made it (an event of the key it replaces).
  let eventsAll = false;
  $('events-all').addEventListener('click', () => {
    eventsAll = true;
    loadEvents();
  });
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
    const all = own.body.data.concat(made).sort((a, b) => b.seq - a.seq);
    const mine = eventsAll ? all : all.slice(0, FIRST_ROWS);
    $('events-all').hidden = eventsAll || all.length <= FIRST_ROWS;
    fill(body, mine.length ? mine.map((e) => row([
      ['Time', timeSecondsEl(e.at * 1000)],
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
    await Promise.all([loadUsage(), loadActivity(), loadAttempts(), loadEvents(), loadLeaks()]);
  }

  initSettings(id, () => key, loadAll);
  initRotate(id, () => key, loadAll);
  // After a revocation, focus goes to the banner that says so (not to <body>).
  initRevoke(id, () => key, async () => {
    await loadAll();
    $('revoked-banner').focus();
  });
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
    forget = showSecret(panel, fresh.key, curlLine(fresh.key, fresh.scopes || current()?.scopes || [], fresh.environment || current()?.environment), fresh);
    const more = panel.querySelector('[data-new-key]') || el('p', { 'data-new-key': '' });
    fill(more, 'The new key has its own page: ', el('a', { href: `/dashboard/keys/${fresh.id}` }, fresh.name), '.');
    panel.querySelector('[data-done]').parentElement.before(more);
  });
}

function initRevoke(id, current, reload) {
  const node = $('revoke-dialog');
  const form = $('revoke-form');
  const reasonField = form.elements.reason;
  const confirm = $('revoke-confirm');
  const submit = $('revoke-submit');
  const error = $('revoke-error');
  const d = dialog(node, {
    onClose() {
      confirm.value = '';
      reasonField.value = '';
      submit.disabled = true;
      showError(error, '');
    },
  });
  // Revoke needs the exact name and a reason the person wrote: none is filled in for them.
  const ready = () => confirm.value === current()?.name && reasonField.value.trim() !== '';
  $('revoke-open').addEventListener('click', () => d.open(reasonField));
  for (const field of [confirm, reasonField]) {
    field.addEventListener('input', () => {
      submit.disabled = !ready();
    });
  }
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!ready()) return;
    const reason = reasonField.value.trim();
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
