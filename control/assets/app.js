// The dashboard's entry module: runs the code of the page named by <body data-page>.

import { initAudit, initSignIn, initTokens, signOut } from './account.js';
import { initKey } from './key.js';
import { initKeys } from './keys.js';
import { initSessions } from './sessions.js';

const pages = {
  'sign-in': initSignIn,
  keys: initKeys,
  key: initKey,
  audit: initAudit,
  tokens: initTokens,
  sessions: initSessions,
};

const out = document.getElementById('sign-out');
if (out) out.addEventListener('click', signOut);

const init = pages[document.body.dataset.page];
if (init) init();
