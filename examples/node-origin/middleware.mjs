// An Express-style middleware (`(req, res, next)`, no framework needed) that admits only the
// requests the Lynxo edge signed: it checks the identity with @lynxo/keys before anything reads
// the body, refuses everything else with an RFC 9457 problem, and hands the caller on as
// `req.lynxo`. Works as is with Express, Connect, Polka, or a plain node:http server.
import { Keyring, ReplayCache, verifyIdentity, IdentityError } from '@lynxo/keys';

/** Writes an RFC 9457 problem document. */
export function problem(res, status, code, reason, detail) {
  res.writeHead(status, { 'content-type': 'application/problem+json' });
  res.end(JSON.stringify({ type: `https://docs.lynxo.ai/errors/${code}`, status, code, reason, detail }));
}

/**
 * options.keyring: the edge's ORIGIN_KEYRING text (or a Keyring);
 * options.replayCache: shared by every request of this process (default: a new one, 30 s).
 */
export function lynxoIdentity({ keyring, replayCache = new ReplayCache() }) {
  const ring = keyring instanceof Keyring ? keyring : new Keyring(keyring);
  return function checkIdentity(req, res, next) {
    // A body of unknown length was not signed: the edge always forwards a Content-Length.
    if (req.headers['transfer-encoding'] !== undefined) {
      problem(res, 400, 'identity_rejected', 'unsigned_body', 'Send the body with a Content-Length.');
      return;
    }
    try {
      req.lynxo = verifyIdentity(req, ring, undefined, replayCache);
    } catch (e) {
      if (!(e instanceof IdentityError)) return next(e);
      problem(res, e.status, 'identity_rejected', e.code, e.message);
      return;
    }
    next();
  };
}
