// Times @lynxo/keys' verifyIdentity per call in Node, beside a hand-written node:crypto check
// of the same headers (the HMAC-SHA256 envelope of shared/src/envelope.rs, a window check and a
// Map of spent request ids), in one run, on the same requests.
//
//   node bench/js-identity.mjs [path to the built package's index.mjs]
//
// The hand-written check is first held to the committed vectors (it must accept the edge's
// signatures byte for byte and refuse a changed one), so both sides do the same work.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const pkg = process.argv[2] ?? new URL('../js/pkg/index.mjs', import.meta.url).pathname;
const { Keyring, ReplayCache, verifyIdentity } = await import(pathToFileURL(path.resolve(pkg)).href);
const vectors = JSON.parse(readFileSync(new URL('../shared/tests/vectors/identity-v2.json', import.meta.url)));

const N = 20_000;
const SAMPLES = 15;
const WINDOW = 30;
const config = `active=${vectors.keyring.active};` + vectors.keyring.keys.map((k) => `${k.kid}:${k.secret}`).join(',');

// --- The hand-written check ---------------------------------------------------------------------
const subkeys = new Map(vectors.keyring.keys.map((k) => [
  k.kid, createHmac('sha256', Buffer.from(k.secret, 'hex')).update('lynxo-keys/v1/identity').digest(),
]));
const SIGNATURE = /^t=([0-9]{1,19}),kid=([0-9]{1,3}),v2=([0-9a-f]{64})$/;
const NAMES = ['lynxo-account-id', 'lynxo-key-id', 'lynxo-environment', 'lynxo-scopes', 'lynxo-request-id'];

// One buffer for the whole framed message ("<t>." then each part with its 8-byte big-endian
// length), one HMAC call: the straightforward way to write it with node:crypto.
function tag(subkey, t, parts) {
  const bytes = parts.map((p) => Buffer.from(p));
  const head = `${t}.`;
  const message = Buffer.allocUnsafe(head.length + bytes.reduce((n, b) => n + 8 + b.length, 0));
  let at = message.write(head, 0, 'latin1');
  for (const b of bytes) {
    message.writeUInt32BE(0, at);
    message.writeUInt32BE(b.length, at + 4);
    at += 8 + b.copy(message, at + 8);
  }
  return createHmac('sha256', subkey).update(message).digest();
}

function parts(h, r) {
  return ['v2', ...NAMES.map((n) => h[n]), r.method, r.path, r.query, String(r.bodyLength)];
}

function handCheck(r, now, spent) {
  const h = r.headers;
  const m = SIGNATURE.exec(h['lynxo-identity-signature'] ?? '');
  if (m === null || NAMES.some((n) => typeof h[n] !== 'string')) throw new Error('malformed');
  const t = Number(m[1]);
  const subkey = subkeys.get(Number(m[2]));
  if (subkey === undefined) throw new Error('unknown_kid');
  if (Math.abs(now - t) > WINDOW) throw new Error('outside_window');
  if (!timingSafeEqual(tag(subkey, t, parts(h, r)), Buffer.from(m[3], 'hex'))) throw new Error('bad_signature');
  for (const [id, at] of spent) {
    if (at + WINDOW >= now) break;
    spent.delete(id);
  }
  const id = h['lynxo-request-id'];
  if (spent.has(id)) throw new Error('replayed');
  spent.set(id, t);
  return { accountId: h['lynxo-account-id'], keyId: h['lynxo-key-id'], signedAt: t };
}

// Held to the vectors: the edge's signatures verify, and a changed query does not.
for (const c of vectors.signatures) {
  const r = { method: c.request.method, path: c.request.path, query: c.request.query, bodyLength: c.request.body_length, headers: c.headers };
  handCheck(r, c.signed_at, new Map());
  const resigned = `t=${c.signed_at},kid=${vectors.keyring.active},v2=${tag(subkeys.get(vectors.keyring.active), c.signed_at, parts(c.headers, r)).toString('hex')}`;
  if (resigned !== c.headers['lynxo-identity-signature']) throw new Error(`${c.name}: the hand-written signer disagrees`);
  let refused = false;
  try {
    handCheck({ ...r, query: `${r.query}x` }, c.signed_at, new Map());
  } catch {
    refused = true;
  }
  if (!refused) throw new Error(`${c.name}: the hand-written check accepted a changed query`);
}

// --- N distinct requests, signed as the edge signs them -----------------------------------------
const base = vectors.signatures[0];
const now = base.signed_at;
const requests = Array.from({ length: N }, () => {
  const headers = { ...base.headers, 'lynxo-request-id': randomBytes(16).toString('hex') };
  const r = { method: 'GET', path: base.request.path, query: base.request.query, bodyLength: 0, headers };
  headers['lynxo-identity-signature'] = `t=${now},kid=${vectors.keyring.active},v2=${tag(subkeys.get(vectors.keyring.active), now, parts(headers, r)).toString('hex')}`;
  return r;
});

const keyring = new Keyring(config);
function nsPerCall(check) {
  const samples = [];
  for (let s = 0; s < SAMPLES + 3; s++) {
    const state = check.fresh();
    const start = process.hrtime.bigint();
    for (const r of requests) check.run(r, state);
    const ns = Number(process.hrtime.bigint() - start) / N;
    if (s >= 3) samples.push(ns); // the first samples warm up the JIT tiers
  }
  samples.sort((a, b) => a - b);
  return { median: samples[samples.length >> 1], min: samples[0], max: samples[samples.length - 1] };
}
const wasm = { fresh: () => new ReplayCache({ capacity: 2 * N, window: WINDOW }), run: (r, cache) => verifyIdentity(r, keyring, now, cache) };
const hand = { fresh: () => new Map(), run: (r, spent) => handCheck(r, now, spent) };

// Interleaved, twice each, keeping the better median: machine noise hits both alike.
const better = (a, b) => (a.median <= b.median ? a : b);
const w1 = nsPerCall(wasm);
const h1 = nsPerCall(hand);
const w2 = nsPerCall(wasm);
const h2 = nsPerCall(hand);
const w = better(w1, w2);
const h = better(h1, h2);
const fmt = (r) => `median ${r.median.toFixed(0)} ns (min ${r.min.toFixed(0)}, max ${r.max.toFixed(0)})`;
console.log(`node ${process.version}, ${N} distinct signed requests x ${SAMPLES} samples, replay cache included`);
console.log(`@lynxo/keys verifyIdentity        : ${fmt(w)}`);
console.log(`hand-written node:crypto check    : ${fmt(h)}`);
console.log(`verifyIdentity / hand-written     : ${(w.median / h.median).toFixed(2)}`);
