// Sign-in, the account's audit log, and management tokens.

import {
  api, busy, detailsList, dialog, el, emptyRow, fill, plainText, problemText, row, showError, timeEl,
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

export function initAudit() {
  const body = $('audit-body');
  const more = $('audit-more');
  let before = null;
  async function load(append) {
    const q = new URLSearchParams({ limit: '100' });
    if (append && before) q.set('before', before);
    const r = await api('GET', `/v1/audit-events?${q}`);
    if (r.status !== 200) {
      fill(body, emptyRow(7, problemText(r)));
      return;
    }
    const rows = r.body.data.map((e) => row([
      ['#', String(e.seq)],
      ['Time', timeEl(e.at)],
      ['Event', el('code', {}, userText(e.action))],
      ['Target', e.target && e.action.startsWith('key.') && /^[0-9a-f]{32}$/.test(e.target)
        ? el('a', { href: `/dashboard/keys/${e.target}`, title: e.target }, el('code', {}, `${e.target.slice(0, 12)}…`))
        : (e.target ? userText(e.target) : '—')],
      ['By', userText(e.actor)],
      ['From', e.source ? userText(e.source) : '—'],
      ['Details', detailsList(e.details)],
    ]));
    if (append) body.append(...rows);
    else fill(body, rows.length ? rows : emptyRow(7, 'No events yet.'));
    before = r.body.next_before;
    more.hidden = !before;
  }
  more.addEventListener('click', () => load(true));
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
    revoke.open(revokeForm.querySelector('[type=submit]'));
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
