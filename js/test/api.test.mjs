// The package's JavaScript surface: error classes and codes, the request forms it reads, its
// entry points, and that no keyring secret ever comes back out of the module.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { inspect } from 'node:util';

import * as esm from '../pkg/index.mjs';

const { Keyring, ReplayCache, verifyIdentity, inspectKey, findKeys } = esm;
const { LynxoError, IdentityError, KeyFormatError, ConfigError } = esm;
const require = createRequire(import.meta.url);
const vectors = JSON.parse(readFileSync(new URL('../../shared/tests/vectors/identity-v2.json', import.meta.url)));
const CONFIG = `active=3;3:${vectors.keyring.keys[0].secret}`;
const signed = vectors.signatures[0];
const url = `${signed.request.path}?${signed.request.query}`;

test('errors are LynxoError subclasses with a stable code', () => {
  assert.throws(() => verifyIdentity({ url, headers: {} }, new Keyring(CONFIG), signed.signed_at, new ReplayCache()),
    (e) => e instanceof IdentityError && e instanceof LynxoError && e instanceof Error &&
      e.name === 'IdentityError' && e.code === 'missing_header' && e.header === 'lynxo-identity-signature' &&
      e.status === 401);
  assert.throws(() => inspectKey('lnx_live_abc'), (e) => e instanceof KeyFormatError &&
    e.code === 'invalid_length' && /characters but a key has/u.test(e.hint));
  assert.throws(() => new Keyring('nope'), (e) => e instanceof ConfigError && e.code === 'invalid_keyring');
  assert.throws(() => new ReplayCache({ window: 31 }), (e) => e instanceof ConfigError && e.code === 'invalid_replay_cache');
  assert.throws(() => verifyIdentity({ url, headers: signed.headers }, {}, 0, new ReplayCache()),
    (e) => e instanceof ConfigError && e.code === 'invalid_argument');
  assert.throws(() => verifyIdentity({ url, headers: signed.headers }, new Keyring(CONFIG), -1, new ReplayCache()),
    (e) => e instanceof ConfigError && e.code === 'invalid_argument');
});

test('reads a Node request, a Fetch request and explicit parts alike', () => {
  const keyring = new Keyring(CONFIG);
  const now = signed.signed_at;
  const forms = [
    { method: 'GET', url, headers: signed.headers },
    { method: 'GET', url: `http://origin.internal:8080${url}`, headers: new Headers(signed.headers) },
    { method: 'GET', originalUrl: url, url: '/jobs', headers: signed.headers },
    { method: 'GET', path: signed.request.path, query: signed.request.query, headers: signed.headers },
    // Header names in any case, as a serverless event may carry them.
    { method: 'GET', url, headers: Object.fromEntries(Object.entries(signed.headers).map(([n, v]) => [n.toUpperCase(), v])) },
  ];
  for (const form of forms) {
    const caller = verifyIdentity(form, keyring, now, new ReplayCache());
    assert.equal(caller.accountId, '42');
    assert.deepEqual(caller.scopes, signed.headers['lynxo-scopes'].split(' '));
  }
  // Another query, a body, another method: each is refused.
  for (const form of [
    { method: 'GET', url: `${signed.request.path}?limit=500`, headers: signed.headers },
    { method: 'GET', url, headers: { ...signed.headers, 'content-length': '5' } },
    { method: 'DELETE', url, headers: signed.headers },
  ]) {
    assert.throws(() => verifyIdentity(form, keyring, now, new ReplayCache()), (e) => e.code === 'bad_signature');
  }
  assert.throws(() => verifyIdentity({ url, headers: { ...signed.headers, 'content-length': '5x' } }, keyring, now,
    new ReplayCache()), (e) => e.code === 'malformed_header' && e.header === 'content-length');
  // Full Access lists today's catalog.
  const full = vectors.signatures.find((c) => c.headers['lynxo-scopes'] === '*');
  const caller = verifyIdentity({ method: full.request.method, path: full.request.path, bodyLength: full.request.body_length,
    headers: full.headers }, keyring, full.signed_at, new ReplayCache());
  assert.ok(caller.fullAccess && caller.scopes.includes('jobs:write'), inspect(caller));
});

test('findKeys counts positions as JavaScript strings do', () => {
  const keys = JSON.parse(readFileSync(new URL('../../shared/tests/vectors/lynxo-v1.json', import.meta.url)));
  const [a, b] = keys.valid_keys.map((k) => k.text);
  const text = `é😀 ${a}\n“${b}”, x${a} ${a}_y`;
  assert.deepEqual(findKeys(text).map((f) => [f.key, f.index]), [[a, text.indexOf(a)], [b, text.indexOf(b)]]);
  assert.equal(findKeys(text)[1].hint, inspectKey(b).hint);
});

test('the CommonJS and ES module entries are one instance', () => {
  const cjs = require('../pkg/index.cjs');
  assert.equal(cjs.Keyring, Keyring);
  assert.equal(cjs.IdentityError, IdentityError);
  assert.equal(cjs.verifyIdentity({ url, headers: signed.headers }, new Keyring(CONFIG), signed.signed_at,
    new cjs.ReplayCache()).keyId, signed.headers['lynxo-key-id']);
});

test('the web entry runs the same module once initialised', async () => {
  const web = await import('../pkg/web.mjs');
  await web.default(readFileSync(new URL('../pkg/wasm/lynxo_keys_bg.wasm', import.meta.url)));
  const caller = web.verifyIdentity({ url, headers: signed.headers }, new web.Keyring(CONFIG), signed.signed_at,
    new web.ReplayCache());
  assert.equal(caller.requestId, signed.request_id);
  assert.deepEqual(web.findKeys('x').length, 0);
});

test('the bundler entry loads the module as a WebAssembly ES module import', () => {
  // What a bundler does with `import * as wasm from './lynxo_keys_bg.wasm'`; Node does it behind
  // a flag.
  const script = `
    const k = await import(${JSON.stringify(new URL('../pkg/browser.mjs', import.meta.url).href)});
    const caller = k.verifyIdentity(${JSON.stringify({ url, headers: signed.headers })},
      new k.Keyring(${JSON.stringify(CONFIG)}), ${signed.signed_at}, new k.ReplayCache());
    let code;
    try { k.inspectKey('lnx_live_abc'); } catch (e) { code = e instanceof k.KeyFormatError && e.code; }
    console.log(JSON.stringify([caller.keyId, code]));`;
  const out = execFileSync(process.execPath, ['--experimental-wasm-modules', '--no-warnings', '--input-type=module',
    '-e', script], { encoding: 'utf8' });
  assert.deepEqual(JSON.parse(out), [signed.headers['lynxo-key-id'], 'invalid_length']);
});

test('no keyring secret ever leaves the module', () => {
  // A secret that no message could contain by chance.
  const SECRET = 'c0ffee5eed'.repeat(6) + 'b0a7';
  const keyring = new Keyring(`active=3;3:${SECRET}`);
  const views = [inspect(keyring, { showHidden: true, depth: 5 }), JSON.stringify(keyring), String(keyring),
    JSON.stringify(Object.getOwnPropertyNames(keyring)), inspect(Object.getOwnPropertyDescriptors(keyring))];
  // Refusals name the entry, never the secret (one too short to use, one malformed).
  for (const config of [`active=3;3:${SECRET.slice(0, 20)}`, `active=3;3:${SECRET}zz`, `active=4;3:${SECRET}`]) {
    try {
      new Keyring(config);
      assert.fail(`accepted ${config}`);
    } catch (e) {
      views.push(e.message, String(e.stack), inspect(e));
    }
  }
  // A refused identity says nothing about the keyring either.
  try {
    verifyIdentity({ url, headers: signed.headers }, keyring, signed.signed_at, new ReplayCache());
    assert.fail('signed by another keyring, accepted');
  } catch (e) {
    views.push(e.message, inspect(e));
  }
  for (const view of views) {
    for (const part of [SECRET, SECRET.slice(0, 20)]) {
      assert.ok(!view.includes(part), `secret in ${view}`);
    }
  }
});
