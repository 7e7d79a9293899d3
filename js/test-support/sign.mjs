// The identity headers the edge sends, signed here with node:crypto exactly as the edge signs
// them (shared/src/identity.rs, envelope v2), for the tests that play the edge. Kid 3, the
// account, key and scopes of the vectors' example request; a fresh request id each call.
import { createHmac, randomBytes } from 'node:crypto';

export function signIdentity(secret, { t, method = 'GET', path = '/v1/jobs', query = '', bodyLength = 0 } = {}) {
  const subkey = createHmac('sha256', Buffer.from(secret, 'hex')).update('lynxo-keys/v1/identity').digest();
  const headers = {
    'lynxo-account-id': '42',
    'lynxo-key-id': 'a1'.repeat(16),
    'lynxo-environment': 'production',
    'lynxo-scopes': 'jobs:read',
    'lynxo-request-id': randomBytes(16).toString('hex'),
  };
  const mac = createHmac('sha256', subkey).update(`${t}.`);
  for (const part of ['v2', ...Object.values(headers), method, path, query, String(bodyLength)]) {
    const bytes = Buffer.from(part);
    const length = Buffer.alloc(8);
    length.writeBigUInt64BE(BigInt(bytes.length));
    mac.update(length).update(bytes);
  }
  headers['lynxo-identity-signature'] = `t=${t},kid=3,v2=${mac.digest('hex')}`;
  return headers;
}
