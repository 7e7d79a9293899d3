// The shown-once panel for a new key or management token.
//
// The secret lives only in this module's variable and in the panel's DOM text while the panel
// is open. It is never put in the URL, history state, web storage or a cookie; closing the
// dialog, or leaving or hiding the page, wipes both. The pages are served `no-store`, so going
// back reloads them from the server, which never has the secret.
//
// Until the secret was copied, Escape and the dialog's × ask first (the panel's [data-confirm]
// part): a key thrown away by one keystroke is a key to rotate. "I have stored the key" closes
// without asking: it says the key was kept.

import { el, ENVIRONMENTS, fill, PERMISSIONS, userText } from './lib.js';

const open = new Set();

/**
 * Shows `secret` in `panel` (a .secret section) with copy buttons and a curl line. `about`
 * (a key's record: name, environment, permission) says which key it is, beside the secret.
 */
export function showSecret(panel, secret, curl, about) {
  const value = panel.querySelector('[data-secret]');
  const status = panel.querySelector('[data-copy-status]');
  value.textContent = secret;
  const curlNode = panel.querySelector('[data-curl]');
  if (curlNode) curlNode.textContent = curl || '';
  status.textContent = '';
  const meta = panel.querySelector('[data-meta]');
  if (meta) {
    const dd = (term, text) => [el('dt', {}, term), el('dd', {}, text)];
    if (about) {
      fill(meta,
        dd('Name', userText(about.name)),
        dd('Environment', ENVIRONMENTS[about.environment] || about.environment),
        dd('Permission', PERMISSIONS[about.permission] || about.permission));
    }
    meta.hidden = !about;
  }
  panel.querySelector('[data-confirm]').hidden = true;
  panel.hidden = false;
  const state = { panel, secret, copied: false, discarded: false };
  open.add(state);
  guard(panel.closest('dialog'));
  panel.querySelector('[data-copy]').onclick = () => copy(state, state.secret, true);
  const env = panel.querySelector('[data-copy-env]');
  if (env) env.onclick = () => copy(state, `LYNXO_API_KEY=${state.secret}`, false);
  const heading = panel.querySelector('h3');
  if (heading) heading.focus();
  return () => clear(state);
}

/** Copies `text` to the clipboard; `selectable` text can fall back to a selection. */
async function copy(state, text, selectable) {
  if (!state.secret) return;
  const { panel } = state;
  const status = panel.querySelector('[data-copy-status]');
  let copied = false;
  try {
    await navigator.clipboard.writeText(text);
    copied = true;
  } catch {
    // No clipboard access (permissions, an insecure context): select the key so that
    // Ctrl+C / the context menu copies it.
    if (selectable) {
      const range = document.createRange();
      range.selectNodeContents(panel.querySelector('[data-secret]'));
      const selection = getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      try {
        copied = document.execCommand('copy');
      } catch {
        copied = false;
      }
    }
  }
  if (copied) {
    state.copied = true;
    panel.querySelector('[data-confirm]').hidden = true;
    status.textContent = text === state.secret ? 'Copied to the clipboard.' : 'Copied to the clipboard as LYNXO_API_KEY=….';
  } else {
    status.textContent = selectable ? 'Selected: press Ctrl+C (⌘C) to copy.' : 'The clipboard refused: copy the key itself instead.';
  }
}

const guarded = new WeakSet();

/** Makes Escape and the × of `dialog` ask first while it shows a secret not yet copied. */
function guard(dialog) {
  if (!dialog || guarded.has(dialog)) return;
  guarded.add(dialog);
  const pending = () => [...open].find((s) => dialog.contains(s.panel) && s.secret && !s.copied && !s.discarded);
  const ask = (s) => {
    const confirm = s.panel.querySelector('[data-confirm]');
    confirm.hidden = false;
    confirm.querySelector('[data-keep]').focus();
  };
  // Capture phase: runs before the × button's own handler (lib.js `dialog`), which it stops.
  dialog.addEventListener('click', (e) => {
    const s = pending();
    if (s && e.target.closest('[data-close]')) {
      e.stopPropagation();
      e.preventDefault();
      ask(s);
    }
  }, true);
  // Escape: stopped at the key (so Chromium's close-watcher never fires) and at `cancel`.
  dialog.addEventListener('keydown', (e) => {
    const s = e.key === 'Escape' && pending();
    if (s) {
      e.preventDefault();
      ask(s);
    }
  });
  dialog.addEventListener('cancel', (e) => {
    const s = pending();
    if (s) {
      e.preventDefault();
      ask(s);
    }
  });
  dialog.addEventListener('click', (e) => {
    const s = [...open].find((x) => dialog.contains(x.panel));
    if (!s) return;
    if (e.target.closest('[data-keep]')) {
      s.panel.querySelector('[data-confirm]').hidden = true;
      s.panel.querySelector('[data-copy]').focus();
    } else if (e.target.closest('[data-discard]')) {
      s.discarded = true;
      // Wiped now, not at the dialog's `close` event (a later task).
      clear(s);
      dialog.close();
    }
  });
}

function clear(state) {
  const { panel } = state;
  state.secret = null;
  panel.querySelector('[data-secret]').textContent = '';
  const curlNode = panel.querySelector('[data-curl]');
  if (curlNode) curlNode.textContent = '';
  const meta = panel.querySelector('[data-meta]');
  if (meta) fill(meta);
  panel.querySelector('[data-copy-status]').textContent = '';
  panel.querySelector('[data-confirm]').hidden = true;
  panel.hidden = true;
  const selection = getSelection();
  if (selection) selection.removeAllRanges();
  open.delete(state);
}

/** Wipes every secret on the page. */
export function clearAll() {
  for (const state of [...open]) clear(state);
}

// Leaving the page (navigation, closing the tab, or the page being frozen into the
// back/forward cache) wipes the secret first.
addEventListener('pagehide', clearAll);
addEventListener('pageshow', (e) => {
  if (e.persisted) clearAll();
});
