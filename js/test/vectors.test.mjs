// The committed vectors the Rust tests read (shared/tests/vectors/), through the package: every
// identity and key vector must give the same answer in JavaScript as in Rust
// (shared/tests/identity_vectors.rs, shared/tests/scan_vectors.rs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { Keyring, ReplayCache, verifyIdentity, inspectKey, findKeys, IdentityError, KeyFormatError } from '../pkg/index.mjs';

const read = (name) => JSON.parse(readFileSync(new URL(`../../shared/tests/vectors/${name}`, import.meta.url)));
const identity = read('identity-v2.json');
const keys = read('lynxo-v1.json');

// The vectors' keyring as the config text an origin is given.
const keyring = new Keyring(
  `active=${identity.keyring.active};` + identity.keyring.keys.map((k) => `${k.kid}:${k.secret}`).join(','),
);
const cache = () => new ReplayCache(identity.replay_cache);
const request = (r, headers) => ({ method: r.method, path: r.path, query: r.query, bodyLength: r.body_length, headers });

test('every signature the edge made verifies, as the identity it names', () => {
  assert.ok(identity.signatures.length >= 4);
  for (const c of identity.signatures) {
    const caller = verifyIdentity(request(c.request, c.headers), keyring, c.signed_at, cache());
    assert.equal(caller.requestId, c.request_id, c.name);
    assert.equal(caller.signedAt, c.signed_at, c.name);
    assert.equal(caller.accountId, c.headers['lynxo-account-id'], c.name);
    assert.equal(caller.keyId, c.headers['lynxo-key-id'], c.name);
    assert.equal(caller.environment, c.headers['lynxo-environment'], c.name);
  }
});

test('the origin answers the verifications in order, as Rust does', () => {
  const replay = cache();
  const seen = new Set();
  for (const c of identity.verifications) {
    let outcome;
    try {
      outcome = verifyIdentity(request(c.request, c.headers), keyring, c.now, replay);
    } catch (e) {
      assert.ok(e instanceof IdentityError, `${c.name}: ${e}`);
      assert.equal(e.code, c.result, c.name);
      assert.equal(c.verified, null, c.name);
      assert.equal(e.status, c.result === 'replay_cache_full' ? 503 : 401, c.name);
      seen.add(e.code);
      continue;
    }
    const want = c.verified;
    assert.equal(c.result, 'ok', c.name);
    assert.equal(outcome.accountId, String(want.account_id), c.name);
    assert.equal(outcome.keyId, want.key_id, c.name);
    assert.equal(outcome.environment, want.environment, c.name);
    assert.equal(outcome.fullAccess ? '*' : outcome.scopes.join(' '), want.scopes, c.name);
    assert.equal(outcome.requestId, want.request_id, c.name);
    assert.equal(outcome.signedAt, want.signed_at, c.name);
    seen.add('ok');
  }
  assert.ok(replay.size <= identity.replay_cache.capacity);
  for (const code of ['ok', 'replayed', 'bad_signature', 'malformed_header', 'missing_header',
    'malformed_signature', 'unknown_kid', 'outside_window', 'replay_cache_full']) {
    assert.ok(seen.has(code), `no vector for ${code}`);
  }
});

// The errors found without a secret (shared/tests/scan_vectors.rs names the same ones).
const FOUND_WITHOUT_SECRET = new Set(['surrounding_whitespace', 'missing_prefix', 'invalid_character',
  'invalid_length', 'invalid_checksum', 'unknown_environment']);
const inspects = (text) => {
  try {
    inspectKey(text);
    return true;
  } catch {
    return false;
  }
};

test('valid keys inspect with their environment and are found', () => {
  for (const c of keys.valid_keys) {
    const got = inspectKey(c.text);
    assert.equal(got.environment, c.claims.environment, c.name);
    assert.match(got.hint, /^lnx_(live|stage|dev)_….{4}$/u, c.name);
    assert.equal(got.hint.slice(-4), c.text.slice(-4), c.name);
    assert.deepEqual(findKeys(`token = "${c.text}"\n`).map((f) => [f.key, f.index, f.environment]),
      [[c.text, 9, c.claims.environment]], c.name);
  }
});

test('invalid keys fail inspection only for what needs no secret, as Rust does', () => {
  let pub = 0;
  for (const c of keys.invalid_keys) {
    if (FOUND_WITHOUT_SECRET.has(c.error)) {
      pub += 1;
      assert.throws(() => inspectKey(c.text), (e) => e instanceof KeyFormatError && e.code === c.error, c.name);
    } else {
      assert.doesNotThrow(() => inspectKey(c.text), c.name);
    }
    const words = c.text.split(/\s+/u).filter((w) => w !== '' && inspects(w));
    assert.deepEqual(findKeys(c.text).map((f) => f.key), words, c.name);
  }
  assert.ok(pub >= 10, `${pub} vectors fail without a secret`);
});
