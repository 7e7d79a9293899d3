// The shown-once panel for a new key or management token.
//
// The secret lives only in this module's variable and in the panel's DOM text while the panel
// is open. It is never put in the URL, history state, web storage or a cookie; closing the
// dialog, or leaving or hiding the page, wipes both. The pages are served `no-store`, so going
// back reloads them from the server, which never has the secret.

const open = new Set();

/** Shows `secret` in `panel` (a .secret section) with a copy button and a curl line. */
export function showSecret(panel, secret, curl) {
  const value = panel.querySelector('[data-secret]');
  const status = panel.querySelector('[data-copy-status]');
  value.textContent = secret;
  const curlNode = panel.querySelector('[data-curl]');
  if (curlNode) curlNode.textContent = curl || '';
  status.textContent = '';
  panel.hidden = false;
  const state = { panel, secret };
  open.add(state);
  const copy = panel.querySelector('[data-copy]');
  copy.onclick = async () => {
    if (!state.secret) return;
    try {
      await navigator.clipboard.writeText(state.secret);
      status.textContent = 'Copied to the clipboard.';
    } catch {
      // No clipboard access (permissions, an insecure context): select the text so that
      // Ctrl+C / the context menu copies it.
      const range = document.createRange();
      range.selectNodeContents(value);
      const selection = getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      let copied = false;
      try {
        copied = document.execCommand('copy');
      } catch {
        copied = false;
      }
      status.textContent = copied ? 'Copied to the clipboard.' : 'Selected: press Ctrl+C (⌘C) to copy.';
    }
  };
  const heading = panel.querySelector('h3');
  if (heading) heading.focus();
  return () => clear(state);
}

function clear(state) {
  const { panel } = state;
  state.secret = null;
  panel.querySelector('[data-secret]').textContent = '';
  const curlNode = panel.querySelector('[data-curl]');
  if (curlNode) curlNode.textContent = '';
  panel.querySelector('[data-copy-status]').textContent = '';
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
