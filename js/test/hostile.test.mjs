// What a hostile caller can feed the package. verifyIdentity, from a caller who reaches the
// origin directly: each request
// here is either signed by the edge for something else, or not signed at all, and must be
// refused as an IdentityError (a 401 the origin answers), never accepted and never a
// ConfigError (a 500 the origin logs). findKeys and inspectKey, megabytes of text from anyone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { signIdentity } from '../test-support/sign.mjs';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

import { Keyring, ReplayCache, verifyIdentity, findKeys, inspectKey, IdentityError, ConfigError, KeyFormatError } from '../pkg/index.mjs';

const SECRET = '5a'.repeat(32);
const keyring = new Keyring(`active=3;3:${SECRET}`);
const NOW = 1_750_000_000;

// Signed as the edge signs (sign.mjs), at NOW.
function sign(request = {}) {
  return signIdentity(SECRET, { ...request, t: NOW });
}

// A Node `IncomingMessage` as the package reads it: lowercase header names, rawHeaders.
const node = (method, url, headers) => ({ method, url, headers, rawHeaders: [] });
const verify = (request) => verifyIdentity(request, keyring, NOW, new ReplayCache());

test('the signer here is the edge: an untouched request passes', () => {
  assert.equal(verify(node('GET', '/v1/jobs?limit=5', sign({ query: 'limit=5' }))).accountId, '42');
});

test('an absolute-form target is not read as the origin-form one the edge signed', () => {
  // Node hands `GET http://host?drop=all HTTP/1.1` to the app as req.url verbatim: the app sees
  // a query the edge never signed, so the signature for `GET /` must not cover it.
  for (const [signed, target] of [
    [{ path: '/' }, 'http://origin.internal?drop=all'],
    [{ path: '/v1/jobs' }, 'http://origin.internal/v1/jobs'],
    [{ path: '/v1/jobs', query: 'limit=5' }, 'https://other.example/v1/jobs?limit=5'],
  ]) {
    assert.throws(() => verify(node('GET', target, sign(signed))),
      (e) => e instanceof IdentityError && e.code === 'bad_signature', target);
  }
  // A Fetch Request's url is absolute by definition: its origin is not part of what was signed.
  const headers = sign({ path: '/', query: 'a/b' });
  assert.equal(verify({ method: 'GET', url: 'http://origin.internal?a/b', headers: new Headers(headers) }).accountId, '42');
});

test('a chunked body is refused: its length was never signed', () => {
  // The edge always forwards a Content-Length; a body of unknown length is one it did not sign,
  // whether or not the origin's own code remembers to check.
  const headers = { ...sign({ method: 'POST' }), 'transfer-encoding': 'chunked' };
  assert.throws(() => verify(node('POST', '/v1/jobs', headers)),
    (e) => e instanceof IdentityError && e.code === 'malformed_header' && e.header === 'transfer-encoding');
  assert.throws(() => verify({ method: 'POST', url: 'http://o/v1/jobs', headers: new Headers(headers) }),
    (e) => e instanceof IdentityError && e.header === 'transfer-encoding');
});

test('what a caller controls is refused as an IdentityError, never a ConfigError', () => {
  const headers = sign();
  for (const [label, request, header] of [
    // Node accepts any Content-Length up to 2^64 - 1; above 2^53 a JavaScript number rounds it.
    ['a Content-Length above 2^53', node('GET', '/v1/jobs', { ...headers, 'content-length': '9007199254740993' }), 'content-length'],
    ['a Content-Length of 2^64 - 1', node('GET', '/v1/jobs', { ...headers, 'content-length': '18446744073709551615' }), 'content-length'],
    // A serverless event's header object holds what the platform decoded.
    ['a line break in a header value', { method: 'GET', url: '/v1/jobs', headers: { ...headers, 'lynxo-scopes': 'jobs:read\nx' } }, 'lynxo-scopes'],
    ['a line break in the path', { method: 'GET', path: '/v1/jobs\n', headers }, undefined],
    ['a line break in the query', { method: 'GET', path: '/v1/jobs', query: 'a\nb', headers }, undefined],
  ]) {
    assert.throws(() => verify(request), (e) => e instanceof IdentityError && !(e instanceof ConfigError) &&
      e.status === 401 && e.header === header, label);
  }
});

test('a lone surrogate is not read as the U+FFFD the edge may have signed', () => {
  // Crossing into wasm, a lone surrogate becomes U+FFFD: two strings the origin tells apart
  // would share one signature.
  const headers = sign({ path: '/v1/jobs/\uFFFD' });
  assert.equal(verify({ method: 'GET', path: '/v1/jobs/\uFFFD', headers }).accountId, '42');
  for (const path of ['/v1/jobs/\uD800', '/v1/jobs/\uDFFF']) {
    assert.throws(() => verify({ method: 'GET', path, headers: sign({ path: '/v1/jobs/\uFFFD' }) }),
      (e) => e instanceof IdentityError && e.code === 'bad_signature', JSON.stringify(path));
  }
  const id = sign();
  assert.throws(() => verify({ method: 'GET', path: '/v1/jobs', headers: { ...id, 'lynxo-scopes': 'jobs:read\uD800' } }),
    (e) => e instanceof IdentityError && e.code === 'malformed_header' && e.header === 'lynxo-scopes');
});

test('a replay cache is as bounded as it says, or refused', () => {
  // ToUint32 would make -1 a cache of 4,294,967,295 ids, 2^32 + 1 a cache of one, and 30.9 s a
  // window of 30.
  for (const options of [{ capacity: -1 }, { capacity: 2 ** 32 + 1 }, { capacity: 1.5 }, { capacity: NaN },
    { capacity: '7' }, { window: 30.9 }, { window: 2 ** 32 + 30 }, { window: -1 }, { capacity: null }]) {
    assert.throws(() => new ReplayCache(options), (e) => e instanceof ConfigError && e.code === 'invalid_replay_cache',
      JSON.stringify(options) + String(options.capacity));
  }
  assert.equal(new ReplayCache({ capacity: 1, window: 1 }).window, 1);
  assert.equal(new ReplayCache({ capacity: 2 ** 32 - 1 }).window, 30);
});

test('findKeys on a long text finds every key, wherever the slices fall', () => {
  const keys = JSON.parse(readFileSync(new URL('../../shared/tests/vectors/lynxo-v1.json', import.meta.url)));
  const key = keys.valid_keys[0].text;
  // Keys near every multiple of 2^20 units (the slice length), after a surrogate pair, inside a
  // word longer than a slice (not a key), and at the very end.
  const pieces = [];
  let length = 0;
  const add = (piece) => { pieces.push(piece); length += piece.length; };
  const expected = [];
  for (let n = 1; n <= 4; n++) {
    add(' '.repeat(n * 2 ** 20 - length - 50 + n));
    add('😀');
    expected.push(length);
    add(`${key}.`);
  }
  add(' ');
  add('x'.repeat(2 ** 21));
  add(key);
  add(' ');
  expected.push(length);
  add(key);
  const text = pieces.join('');
  assert.deepEqual(findKeys(text).map((f) => f.index), expected);
  assert.ok(expected.every((i) => text.startsWith(key, i)));
});

test('findKeys on a long text does not pin its size in wasm memory', () => {
  // Wasm memory never shrinks: whatever one call needs, the process keeps.
  const script = `
    const { findKeys } = require(${JSON.stringify(new URL('../pkg/index.cjs', import.meta.url).pathname)});
    const rss = () => process.memoryUsage().rss;
    findKeys('warm up'); gc();
    const before = rss();
    (() => findKeys('a '.repeat(32 * 2 ** 20)))();
    gc(); gc(); // twice: one collection does not always free the text
    console.log(Math.round((rss() - before) / 2 ** 20));`;
  const grown = Number(execFileSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' }));
  assert.ok(grown < 24, `a 64 MiB text left the process ${grown} MiB larger`);
});

test('inspectKey on a long text answers from its length, without copying it into wasm memory', () => {
  // Past 512 bytes a text is `invalid_length` by its UTF-8 length alone (a lone surrogate counts
  // as the three bytes of the U+FFFD it becomes).
  for (const [text, bytes] of [['a'.repeat(513), 513], ['é'.repeat(600), 1200], ['😀'.repeat(300), 1200],
    ['\uD800'.repeat(600), 1800], [`lnx_live_${'b'.repeat(2 ** 20)}`, 9 + 2 ** 20]]) {
    assert.throws(() => inspectKey(text), (e) => e instanceof KeyFormatError && e.code === 'invalid_length' &&
      e.hint.includes(`has ${bytes} characters`), `${text.slice(0, 12)}… (${text.length} units)`);
  }
  const script = `
    const { inspectKey } = require(${JSON.stringify(new URL('../pkg/index.cjs', import.meta.url).pathname)});
    const rss = () => process.memoryUsage().rss;
    try { inspectKey('warm up'); } catch {}
    gc();
    const before = rss();
    (() => { try { inspectKey('a '.repeat(32 * 2 ** 20)); } catch {} })();
    gc(); gc();
    console.log(Math.round((rss() - before) / 2 ** 20));`;
  const grown = Number(execFileSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' }));
  assert.ok(grown < 24, `a 64 MiB text left the process ${grown} MiB larger`);
});

test('a huge identity header value is refused without copying it into wasm memory', () => {
  // Node caps a request's headers at 16 KiB; a serverless event's header object may not.
  const script = `
    const { Keyring, ReplayCache, verifyIdentity } = require(${JSON.stringify(new URL('../pkg/index.cjs', import.meta.url).pathname)});
    const keyring = new Keyring('active=3;3:${SECRET}');
    const rss = () => process.memoryUsage().rss;
    const check = (scopes) => {
      try {
        verifyIdentity({ method: 'GET', path: '/', headers: { 'lynxo-identity-signature': 't=1,kid=3,v2=${'0'.repeat(64)}',
          'lynxo-account-id': '1', 'lynxo-key-id': '${'a'.repeat(32)}', 'lynxo-environment': 'production',
          'lynxo-scopes': scopes, 'lynxo-request-id': '${'b'.repeat(32)}' } }, keyring, 1, new ReplayCache());
      } catch (e) {
        return e.code + ' ' + e.header;
      }
    };
    check('jobs:read'); gc();
    const before = rss();
    const refused = (() => check('jobs:read '.repeat(6.4 * 2 ** 20)))();
    gc(); gc();
    console.log(JSON.stringify([refused, Math.round((rss() - before) / 2 ** 20)]));`;
  const [refused, grown] = JSON.parse(execFileSync(process.execPath, ['--expose-gc', '-e', script], { encoding: 'utf8' }));
  assert.equal(refused, 'malformed_header lynxo-scopes');
  assert.ok(grown < 24, `a 64 MiB header value left the process ${grown} MiB larger`);
});
