// Sessions and password: the signed-in user's sessions (end one, sign out everywhere else) and
// the password change. Every value reaches the page as text (lib.js `el`), the user agent
// isolated in a <bdi>.

import {
  api, busy, el, emptyRow, fill, problemText, row, showError, timeEl,
} from './lib.js';

const $ = (id) => document.getElementById(id);

export function initSessions() {
  const body = $('sessions-body');
  const ok = $('sessions-ok');
  const error = $('sessions-error');
  const endOthers = $('sessions-end-others');

  async function load() {
    const r = await api('GET', '/v1/sessions');
    if (r.status !== 200) {
      fill(body, emptyRow(6, problemText(r)));
      return;
    }
    const others = r.body.data.filter((s) => !s.current).length;
    endOthers.disabled = others === 0;
    fill(body, r.body.data.map((s) => row([
      ['Browser', el('bdi', {}, s.user_agent || 'Unknown browser'),
        s.current ? ' ' : null,
        s.current ? el('span', { class: 'badge status-active' }, 'This browser') : null],
      ['Signed in', timeEl(s.created_at)],
      ['Last seen', timeEl(s.last_seen_at, true)],
      ['Address', el('bdi', { title: s.created_ip ? `Signed in from ${s.created_ip}` : undefined },
        s.last_seen_ip || s.created_ip || '—')],
      ['Ends', timeEl(Math.min(s.idle_expires_at, s.expires_at))],
      ['Actions', s.current ? '' : el('button', {
        type: 'button', class: 'secondary small', 'data-session': s.id,
        'aria-label': `End session: ${s.user_agent || 'an unknown browser'}, signed in ${new Date(s.created_at * 1000).toISOString()}`,
      }, 'End session')],
    ], { 'data-session-row': s.id })));
  }

  body.addEventListener('click', async (e) => {
    const b = e.target.closest('button[data-session]');
    if (!b) return;
    showError(error, '');
    b.disabled = true;
    const r = await api('DELETE', `/v1/sessions/${b.dataset.session}`);
    if (r.status !== 204) {
      b.disabled = false;
      showError(error, problemText(r));
      return;
    }
    ok.textContent = 'Session ended.';
    load();
  });

  endOthers.addEventListener('click', async () => {
    showError(error, '');
    endOthers.disabled = true;
    const r = await api('DELETE', '/v1/sessions/others');
    if (r.status !== 200) {
      showError(error, problemText(r));
      endOthers.disabled = false;
      return;
    }
    const n = r.body.ended.length;
    ok.textContent = n === 1 ? 'Signed out of 1 other session.' : `Signed out of ${n} other sessions.`;
    load();
  });

  const form = $('password-form');
  const pwError = $('password-error');
  const pwOk = $('password-ok');
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError(pwError, '');
    pwOk.textContent = '';
    const current = form.elements.current_password.value;
    const next = form.elements.new_password.value;
    if (!current || !next) {
      showError(pwError, 'Enter your current password and a new one.');
      return;
    }
    if (next !== form.elements.repeat_password.value) {
      showError(pwError, 'The two new passwords differ.');
      form.elements.repeat_password.focus();
      return;
    }
    const r = await busy(form, () => api('POST', '/v1/user/password', {
      current_password: current, new_password: next,
    }));
    if (r.status !== 200) {
      form.elements.current_password.value = '';
      showError(pwError, r.body?.code === 'wrong_password'
        ? 'The current password is wrong.' : problemText(r));
      form.elements.current_password.focus();
      return;
    }
    form.reset();
    const n = r.body.sessions_ended.length;
    pwOk.textContent = `Password changed. ${n === 1 ? '1 other session was' : `${n} other sessions were`} signed out.`;
    load();
  });

  load();
}
