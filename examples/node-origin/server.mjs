#!/usr/bin/env node
// A Node origin behind the Lynxo edge, on node:http alone: every request must carry the identity
// the edge signed (checked by ./middleware.mjs with @lynxo/keys), then exactly the signed number
// of body bytes. It answers with who is calling and what it received, as JSON, like the Rust demo
// origin (tests/src/origin.rs), so the end-to-end tests can hold either behind the edge.
//
//   ORIGIN_KEYRING='active=1;1:<64 hex>' node examples/node-origin/server.mjs --port 8789
//
// Prints `node-origin listening on http://<addr>` once it accepts connections (`--port 0` picks
// a free port).
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import { lynxoIdentity, problem } from './middleware.mjs';

const MAX_BODY = 1 << 20;

const { values } = parseArgs({ options: { port: { type: 'string', default: process.env.NODE_ORIGIN_PORT ?? '8789' } } });
if (!process.env.ORIGIN_KEYRING) {
  console.error('node-origin: set ORIGIN_KEYRING to the edge\'s identity keyring');
  process.exit(2);
}
const checkIdentity = lynxoIdentity({ keyring: process.env.ORIGIN_KEYRING });

// Reads exactly `expected` bytes of body; null when more or fewer arrive.
async function readBody(req, expected) {
  const chunks = [];
  let length = 0;
  for await (const chunk of req) {
    length += chunk.length;
    if (length > expected) return null;
    chunks.push(chunk);
  }
  return length === expected ? Buffer.concat(chunks) : null;
}

async function answer(req, res) {
  const caller = req.lynxo;
  const expected = Number(req.headers['content-length'] ?? 0);
  if (expected > MAX_BODY) return problem(res, 413, 'payload_too_large', 'payload_too_large', 'At most 1 MiB.');
  const body = await readBody(req, expected);
  if (body === null) {
    return problem(res, 400, 'body_length_mismatch', 'body_length_mismatch', 'The body is not the length the edge signed.');
  }
  const q = req.url.indexOf('?');
  const headers = { ...req.headers };
  delete headers['lynxo-identity-signature'];
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({
    origin: 'node',
    account_id: caller.accountId,
    key_id: caller.keyId,
    environment: caller.environment,
    scopes: caller.fullAccess ? '*' : caller.scopes.join(' '),
    request_id: caller.requestId,
    signed_at: caller.signedAt,
    method: req.method,
    path: q < 0 ? req.url : req.url.slice(0, q),
    query: q < 0 ? null : req.url.slice(q + 1),
    body_len: body.length,
    headers,
  }));
}

const server = createServer((req, res) => {
  if (req.url === '/healthz') {
    res.end('ok');
    return;
  }
  checkIdentity(req, res, (err) => {
    if (err) {
      console.error('node-origin:', err);
      problem(res, 500, 'internal', 'internal', 'Internal error.');
      return;
    }
    answer(req, res).catch((e) => {
      // A caller who hangs up mid-body is not the origin's fault: nothing to answer or log.
      if (req.destroyed && e.code === 'ECONNRESET') return;
      console.error('node-origin:', e);
      if (!res.headersSent) problem(res, 500, 'internal', 'internal', 'Internal error.');
    });
  });
});
server.listen(Number(values.port), '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(`node-origin listening on http://${address}:${port}`);
});
