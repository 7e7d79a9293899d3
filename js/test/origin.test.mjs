// The example Node origin (examples/node-origin/server.mjs, with the package as `npm pack` built
// it, installed by js/build.sh) on loopback, sent raw HTTP/1.1 by a caller who reaches it
// directly: what Node's parser lets through must be refused by the origin, and a caller must not
// be able to make it log errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { signIdentity } from '../test-support/sign.mjs';
import net from 'node:net';

const SECRET = '6b'.repeat(32);
// The identity headers the edge would send for this request, signed now (sign.mjs).
function sign(request = {}) {
  const headers = signIdentity(SECRET, { ...request, t: Math.floor(Date.now() / 1000) });
  return Object.entries(headers).map(([n, v]) => `${n}: ${v}\r\n`).join('');
}

let server;
let port;
let logged = '';

before(async () => {
  server = spawn(process.execPath, [new URL('../../examples/node-origin/server.mjs', import.meta.url).pathname, '--port', '0'],
    { env: { ...process.env, ORIGIN_KEYRING: `active=3;3:${SECRET}` }, stdio: ['ignore', 'pipe', 'pipe'] });
  server.stderr.on('data', (d) => { logged += d; });
  port = await new Promise((resolve, reject) => {
    server.on('exit', (code) => reject(new Error(`node-origin exited ${code}: ${logged}`)));
    server.stdout.on('data', (d) => {
      const m = /listening on http:\/\/[^:]+:(\d+)/u.exec(String(d));
      if (m) resolve(Number(m[1]));
    });
  });
});

after(() => server.kill());

// Sends `text` on a fresh connection; `abort` closes it after writing, before any answer.
function send(text, { abort = false } = {}) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(text);
      if (abort) setTimeout(() => socket.destroy(), 100);
    });
    let out = '';
    socket.setEncoding('latin1');
    socket.on('data', (d) => { out += d; });
    socket.on('close', () => resolve(out));
    socket.on('error', reject);
  });
}

const status = (response) => Number(response.split(' ')[1]);
// The problem document's reason (the body is chunked: read the field, not the framing).
const reason = (response) => /"reason":"([a-z_]+)"/u.exec(response)?.[1];

test('a signed request straight to the origin is answered', async () => {
  const r = await send(`GET /v1/jobs?n=1 HTTP/1.1\r\nhost: o\r\n${sign({ query: 'n=1' })}connection: close\r\n\r\n`);
  assert.equal(status(r), 200, r);
});

test('an absolute-form target cannot add a query the edge did not sign', async () => {
  const r = await send(`GET http://o?drop=all HTTP/1.1\r\nhost: o\r\n${sign({ path: '/' })}connection: close\r\n\r\n`);
  assert.equal(status(r), 401, r);
  assert.equal(reason(r), 'bad_signature');
});

test('a Content-Length past 2^53 is the caller\'s fault, not the origin\'s', async () => {
  const r = await send(`POST /v1/jobs HTTP/1.1\r\nhost: o\r\n${sign({ method: 'POST' })}` +
    'content-length: 9007199254740993\r\nconnection: close\r\n\r\n');
  assert.equal(status(r), 401, r);
  assert.equal(reason(r), 'malformed_header');
});

test('a caller who hangs up mid-body makes the origin log nothing', async () => {
  const mark = logged.length;
  await send(`POST /v1/jobs HTTP/1.1\r\nhost: o\r\n${sign({ method: 'POST', bodyLength: 10 })}content-length: 10\r\n\r\nhalf`,
    { abort: true });
  // Give the origin the moment it takes to see the close.
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(logged.slice(mark), '');
});
