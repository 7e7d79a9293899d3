// Sign-in, the account's audit log, and management tokens.

import {
  api, busy, dialog, el, emptyRow, fill, plainText, problemText, readableDetails, row, showError, timeEl,
  userText,
  fieldErrors, refusedField, textRefusal,
} from './lib.js';
import { showSecret } from './secret.js';

const $ = (id) => document.getElementById(id);

export function initSignIn() {
  const form = $('sign-in-form');
  const error = $('sign-in-error');
  $('email').focus();
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError(error, '');
    const email = form.elements.email.value.trim();
    const password = form.elements.password.value;
    if (!email || !password) {
      showError(error, 'Enter your email and password.');
      return;
    }
    const r = await busy(form, () => postSignIn(email, password));
    if (r.status === 200) {
      location.assign('/dashboard/keys');
      return;
    }
    form.elements.password.value = '';
    showError(error, r.status === 401 ? 'The email or password is wrong.' : problemText(r));
    form.elements.password.focus();
  });
}

// `sign_in_busy` means every password-hashing slot was taken at that instant (the server
// refuses rather than queues): try again a couple of times, a second apart, before saying so.
async function postSignIn(email, password) {
  for (let attempt = 1; ; attempt += 1) {
    const r = await api('POST', '/v1/sessions', { email, password });
    if (r.status !== 429 || r.body?.code !== 'sign_in_busy' || attempt === 3) return r;
    await new Promise((resolve) => { setTimeout(resolve, 1000); });
  }
}

export async function signOut() {
  await api('DELETE', '/v1/sessions/current');
  location.assign('/sign-in');
}

/** The audit page's filters, in the URL's query: event type, key (target), actor, UTC days. */
const AUDIT_FILTERS = ['action', 'target', 'actor', 'from', 'to'];

/** A `YYYY-MM-DD` day as Unix seconds at its UTC start; null for none or nonsense. */
function utcDay(text) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text || '');
  return m ? Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])) / 1000 : null;
}

/** The audit API's query for the page's filters (`to` is inclusive: the end of that day). */
function auditQuery(filters) {
  const q = new URLSearchParams();
  for (const name of ['action', 'target', 'actor']) if (filters[name]) q.set(name, filters[name]);
  const from = utcDay(filters.from);
  const to = utcDay(filters.to);
  if (from !== null) q.set('from', String(from));
  if (to !== null) q.set('to', String(to + 86400));
  return q;
}

export function initAudit() {
  const body = $('audit-body');
  const more = $('audit-more');
  const form = $('audit-filters');
  const count = $('audit-count');
  const error = $('audit-error');
  const actors = new Map();
  let before = null;
  let shown = 0;

  const current = () => Object.fromEntries(
    AUDIT_FILTERS.map((n) => [n, new URLSearchParams(location.search).get(n) || '']),
  );

  /** Adds an option once (a better label replaces a bare id); keeps the select's value. */
  function option(select, value, label) {
    if (!value) return;
    const had = [...select.options].find((o) => o.value === value);
    if (had) {
      if (had.textContent === value) had.textContent = plainText(label);
      return;
    }
    select.append(el('option', { value }, plainText(label)));
  }

  function showFilters(filters) {
    option($('audit-actor'), filters.actor, filters.actor);
    option($('audit-key'), filters.target, filters.target);
    for (const name of AUDIT_FILTERS) form.elements[name].value = filters[name];
    const q = auditQuery(filters);
    for (const format of ['csv', 'json']) {
      const link = $(`audit-export-${format}`);
      link.href = `/v1/audit-events/export?${new URLSearchParams([['format', format], ...q])}`;
    }
  }

  async function load(append) {
    const filters = current();
    showFilters(filters);
    showError(error, '');
    const q = auditQuery(filters);
    q.set('limit', '100');
    if (append && before) q.set('before', before);
    const r = await api('GET', `/v1/audit-events?${q}`);
    if (r.status !== 200) {
      fill(body, emptyRow(7, problemText(r)));
      showError(error, problemText(r));
      return;
    }
    for (const e of r.body.data) {
      if (!actors.has(e.actor)) {
        actors.set(e.actor, e.actor_name || e.actor);
        option($('audit-actor'), e.actor, e.actor_name ? `${e.actor_name} (${e.actor})` : e.actor);
      }
    }
    const rows = r.body.data.map((e) => row([
      ['#', String(e.seq)],
      ['Time', timeEl(e.at)],
      ['Event', el('code', {}, userText(e.action))],
      ['Target', e.target && e.action.startsWith('key.') && /^[0-9a-f]{32}$/.test(e.target)
        ? el('a', { href: `/dashboard/keys/${e.target}`, title: e.target }, el('code', {}, `${e.target.slice(0, 12)}…`))
        : (e.target ? userText(e.target) : '—')],
      ['By', el('span', { class: 'actor', title: e.actor, 'data-actor': e.actor }, userText(e.actor_name || e.actor))],
      ['From', e.source ? userText(e.source) : '—'],
      ['Details', readableDetails(e.details)],
    ], { 'data-seq': e.seq }));
    if (append) body.append(...rows);
    else fill(body, rows.length ? rows : emptyRow(7, 'No events match these filters.'));
    shown = (append ? shown : 0) + rows.length;
    before = r.body.next_before;
    more.hidden = !before;
    count.textContent = `${shown} event${shown === 1 ? '' : 's'} shown${before ? ' (older ones: "Older events")' : ''}`;
  }

  async function loadKeys() {
    const r = await api('GET', '/v1/keys?limit=100');
    if (r.status !== 200) return;
    for (const k of r.body.data) option($('audit-key'), k.id, `${k.name} (${k.environment}, ${k.hint})`);
    form.elements.target.value = current().target;
  }

  /** A changed filter is a new history entry: Back shows the previous filters again. */
  function apply() {
    const q = new URLSearchParams();
    for (const name of AUDIT_FILTERS) if (form.elements[name].value) q.set(name, form.elements[name].value);
    const search = q.toString() ? `?${q}` : '';
    if (search !== location.search) history.pushState(null, '', `${location.pathname}${search}`);
    load(false);
  }
  form.addEventListener('change', apply);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    apply();
  });
  form.addEventListener('reset', () => setTimeout(apply, 0));
  window.addEventListener('popstate', () => load(false));
  more.addEventListener('click', () => load(true));
  loadKeys();
  load(false);
}

const GRANTS = {
  read_only: 'Read Only keys', read_write: 'Read Only and Read/Write keys', full_access: 'Any key', custom: 'Custom',
};

export function initTokens() {
  const body = $('tokens-body');
  const form = $('token-form');
  const panel = $('token-created');
  const error = $('token-error');
  const more = $('tokens-more');
  let forget = null;
  let cursor = null;

  function tokenRow(t) {
    const status = el('span', { class: `badge status-${t.status}` }, { active: 'Active', expired: 'Expired', revoked: 'Revoked' }[t.status] || t.status);
    return row([
      ['Name', userText(t.name)],
      ['Token', el('code', {}, t.hint)],
      ['Scopes', el('span', { class: 'chips' }, t.scopes.map((s) => el('code', { class: 'chip' }, s)))],
      ['Keys it may manage', t.key_grant === 'custom' ? t.key_grant_scopes.join(', ') : GRANTS[t.key_grant] || t.key_grant],
      ['Expires', t.expires_at ? timeEl(t.expires_at) : 'Never'],
      ['Last used', timeEl(t.last_used_at, true)],
      ['Status', el('span', { class: 'badges' }, status, t.legacy ? el('span', { class: 'badge idle', title: 'Made before tokens had scopes: every scope, any key, and an expiry from the upgrade' }, 'Legacy') : null)],
      ['Actions', t.revoked_at ? '' : el('button', {
        type: 'button', class: 'destructive small', 'data-token': t.id, 'data-name': t.name,
        'aria-label': `Revoke token ${plainText(t.name)}`,
      }, 'Revoke…')],
    ], { 'data-token-id': t.id });
  }

  async function load(append) {
    const q = new URLSearchParams({ limit: '100' });
    if (append && cursor) q.set('cursor', cursor);
    const r = await api('GET', `/v1/management-tokens?${q}`);
    if (r.status !== 200) {
      fill(body, emptyRow(8, problemText(r)));
      return;
    }
    const rows = r.body.data.map(tokenRow);
    if (append) body.append(...rows);
    else fill(body, rows.length ? rows : emptyRow(8, 'No tokens.'));
    cursor = r.body.next_cursor;
    more.hidden = !cursor;
    const { plan } = r.body;
    $('tokens-count').textContent = `${r.body.active_tokens} of ${plan.max_tokens} tokens work now.`;
    const expiry = $('token-expiry');
    for (const option of [...expiry.options]) {
      const days = Number(option.value);
      option.disabled = plan.max_ttl !== null && days * 86400 > plan.max_ttl;
    }
    if (plan.max_ttl === null && !expiry.querySelector('option[value=never]')) {
      expiry.append(el('option', { value: 'never' }, 'never'));
    }
  }
  more.addEventListener('click', () => load(true));

  const create = dialog($('token-dialog'), {
    onClose() {
      if (forget) forget();
      forget = null;
      form.reset();
      form.hidden = false;
      fieldErrors(form, []);
      showError(error, '');
    },
  });
  $('token-open').addEventListener('click', () => create.open($('token-name')));
  panel.querySelector('[data-done]').addEventListener('click', () => create.close());
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError(error, '');
    const f = form.elements;
    const name = f.name.value.trim();
    const scopes = [...form.querySelectorAll('input[name=scopes]:checked')].map((c) => c.value);
    const password = f.password.value;
    const scopeGroup = form.querySelector('fieldset.scope-group');
    const problems = [];
    if (!name) problems.push([f.name, 'Give the token a name, e.g. the script that uses it.']);
    if (!scopes.length) problems.push([scopeGroup, 'Choose at least one scope: what the script needs, and no more.']);
    if (!password) problems.push([f.password, 'Enter your password to confirm.']);
    if (fieldErrors(form, problems)) return;
    const request = { name, password, scopes, key_grant: f.key_grant.value };
    const expiry = f.expiry.value;
    if (expiry === 'never') request.never_expires = true;
    // 30 days is the plan's default; other lifetimes a minute short, so a clock ahead of the
    // server's never asks past the plan's maximum.
    else if (expiry !== '30') request.expires_at = Math.floor(Date.now() / 1000) + Number(expiry) * 86400 - 60;
    const r = await busy(form, () => api('POST', '/v1/management-tokens', request));
    f.password.value = '';
    if (r.status !== 201) {
      const plain = r.body?.code === 'wrong_password'
        ? [f.password, 'The password is not correct.']
        : { name: [f.name, textRefusal('name', 100, true, r.body)], scopes: [scopeGroup, 'Choose scopes from the list.'] }[refusedField(r)];
      if (plain) fieldErrors(form, [plain]);
      else showError(error, problemText(r));
      return;
    }
    form.hidden = true;
    const curl = `curl -H "Authorization: Bearer ${r.body.token}" ${location.origin}/v1/keys`;
    forget = showSecret(panel, r.body.token, curl);
    load(false);
  });

  let revoking = null;
  const revokeForm = $('token-revoke-form');
  const revokeError = $('token-revoke-error');
  const revoke = dialog($('token-revoke-dialog'), {
    onClose() {
      revoking = null;
      showError(revokeError, '');
    },
  });
  body.addEventListener('click', (e) => {
    const b = e.target.closest('button[data-token]');
    if (!b) return;
    revoking = b.dataset.token;
    fill($('token-revoke-name'), userText(b.dataset.name));
    // Focus on Cancel: Enter alone must not revoke (a token's scripts stop at once).
    revoke.open(revokeForm.querySelector('[data-close]'));
  });
  revokeForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!revoking) return;
    const r = await busy(revokeForm, () => api('POST', `/v1/management-tokens/${revoking}/revoke`));
    if (r.status !== 200) {
      showError(revokeError, problemText(r));
      return;
    }
    revoke.close();
    load(false);
  });
  load(false);
}
