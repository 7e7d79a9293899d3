// The package's JavaScript around the wasm module (js/src/lib.rs): error classes, reading a
// request and its headers, and the opaque Keyring and ReplayCache. Every entry point (Node CJS,
// Node ESM, bundlers, browsers) binds the same code to its own build of the module.

/** Every error this package throws: `code` is stable, `message` is for people. */
export class LynxoError extends Error {
  constructor(code, message) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/** The identity headers were refused: the request did not come through the edge, or was
 * changed or replayed. `status` is what the origin should answer (401, or 503 when its replay
 * cache is full); `header` names the missing or malformed header, if that is the reason. */
export class IdentityError extends LynxoError {
  constructor(code, message, header) {
    super(code, message);
    this.status = code === 'replay_cache_full' ? 503 : 401;
    if (header !== undefined) this.header = header;
  }
}

/** The text is not a well-formed Lynxo key; `hint` is the edge's advice, where it gives one. */
export class KeyFormatError extends LynxoError {
  constructor(code, message, hint) {
    super(code, message);
    if (hint !== undefined) this.hint = hint;
  }
}

/** A keyring, replay cache or argument this package cannot use. */
export class ConfigError extends LynxoError {}

/** The identity header names, lowercase as Node and Fetch `Headers` read them. */
export const HEADERS = Object.freeze({
  signature: 'lynxo-identity-signature',
  accountId: 'lynxo-account-id',
  keyId: 'lynxo-key-id',
  environment: 'lynxo-environment',
  scopes: 'lynxo-scopes',
  requestId: 'lynxo-request-id',
});

// shared::key::MAX_INPUT_LEN: a text of more UTF-16 units has more UTF-8 bytes than that too.
const LONG_KEY_TEXT = 512;

// The length in bytes of `text` as it would cross into the module: UTF-8, with each lone
// surrogate replaced by U+FFFD (three bytes), as TextEncoder does.
function utf8Length(text) {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length &&
      text.charCodeAt(i + 1) >= 0xdc00 && text.charCodeAt(i + 1) <= 0xdfff) {
      bytes += 4;
      i++;
    } else bytes += 3;
  }
  return bytes;
}

// The longest slice of a text findKeys hands the module at once, in UTF-16 units.
const SCAN_CHUNK = 1 << 20;

// Whether a slice may end before this UTF-16 unit: it is no key character (`[0-9A-Za-z_]`, the
// scanner's word) and not the second half of a surrogate pair.
function splits(unit) {
  const word = (unit >= 48 && unit <= 57) || (unit >= 65 && unit <= 90) || (unit >= 97 && unit <= 122) || unit === 95;
  return !word && (unit < 0xdc00 || unit > 0xdfff);
}

// Longer than any identity header value the edge writes (every scope's name, space-separated,
// is 110 characters today): a longer one is refused before it is copied into wasm memory,
// which never shrinks.
const MAX_IDENTITY_VALUE = 4096;

// HEADERS in the order verifyIdentity hands their values to the module.
const HEADER_ORDER = [HEADERS.signature, HEADERS.accountId, HEADERS.keyId, HEADERS.environment, HEADERS.scopes,
  HEADERS.requestId];

const DIGITS = /^[0-9]+$/;
// What the module cannot be handed faithfully: a line break separates the fields it receives
// (js/src/lib.rs), and a lone surrogate becomes U+FFFD on the way in, so two strings the origin
// tells apart would share one signature. No request the edge signed holds either.
const UNSIGNABLE = /[\n\uD800-\uDFFF]/u;

// The codes the module throws for what the caller configured, not for the request or text.
const CONFIG_CODES = new Set(['invalid_keyring', 'invalid_replay_cache', 'invalid_argument']);

// Turns what the module threw (`code \n detail \n message`, js/src/lib.rs) into this package's
// class for it; anything else (a bug) is passed on as it is.
function convert(error, Type) {
  if (typeof error !== 'string') return error;
  const first = error.indexOf('\n');
  const second = error.indexOf('\n', first + 1);
  if (first < 0 || second < 0) return new Error(error);
  const code = error.slice(0, first);
  const detail = error.slice(first + 1, second);
  const message = error.slice(second + 1);
  if (CONFIG_CODES.has(code)) return new ConfigError(code, message);
  return new Type(code, message, detail === '' ? undefined : detail);
}

// One header's value from a Node headers object or a Fetch `Headers`; undefined when absent.
// Node lowercases names (`lowercased`: a Node or Express request); a plain object from elsewhere
// (a serverless event, a test) may not, so there a miss looks again ignoring case. Node joins repeated headers with ", " (never a valid identity
// value) and keeps arrays only for a few names: an array is passed on joined, so it is refused
// as malformed.
function headerReader(headers, lowercased) {
  if (headers == null) return () => undefined;
  if (typeof headers.get === 'function') return (name) => headers.get(name) ?? undefined;
  return (name) => {
    let value = headers[name];
    if (value === undefined && !lowercased) {
      const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
      if (key !== undefined) value = headers[key];
    }
    return Array.isArray(value) ? value.join(', ') : value;
  };
}

// method, path, query and body length as the origin received them: from explicit parts
// ({ method, path, query, bodyLength }), a Node or Express request ({ method, url, headers }),
// or a Fetch Request (absolute url). The path and query are taken as sent, never normalised:
// the edge signed them byte for byte.
function requestParts(request, header) {
  const method = request.method ?? 'GET';
  if (typeof request.path === 'string' && request.url === undefined) {
    return { method, path: request.path, query: request.query ?? '', bodyLength: request.bodyLength ?? 0 };
  }
  let target = request.originalUrl ?? request.url ?? '/';
  // Only a Fetch Request's url is absolute, and always with a path (`http://host/`), so its
  // origin is dropped. A Node request's url is the request target verbatim: the edge sends the
  // origin form, and an absolute form (`GET http://host?drop=all`) sent straight to the origin
  // is what the app will read, so it is checked as it is, and refused.
  if (typeof request.headers?.get === 'function') {
    const scheme = target.indexOf('://');
    if (scheme >= 0 && scheme < target.indexOf('/')) {
      // The authority ends at the first `/`, `?` or `#` (`http://host?q` is `/` with query `q`).
      const end = target.slice(scheme + 3).search(/[/?#]/u);
      target = end < 0 ? '/' : target.slice(scheme + 3 + end);
      if (!target.startsWith('/')) target = `/${target}`;
    }
  }
  const q = target.indexOf('?');
  // The edge refuses a body without a Content-Length and forwards none: a body of unknown
  // length (chunked) is one whose length it did not sign, and the app would read all of it.
  if (header('transfer-encoding') !== undefined) {
    throw new IdentityError('malformed_header', 'a body without a Content-Length was not signed', 'transfer-encoding');
  }
  const length = header('content-length');
  // Node accepts any Content-Length below 2^64; past 2^53 a number rounds it, and the module
  // would refuse it as a bad argument (a 500) rather than as the caller's malformed header.
  if (length !== undefined && (!DIGITS.test(length) || Number(length) > Number.MAX_SAFE_INTEGER)) {
    throw new IdentityError('malformed_header', 'Content-Length is not a number up to 2^53 - 1', 'content-length');
  }
  return {
    method,
    path: q < 0 ? target : target.slice(0, q),
    query: q < 0 ? '' : target.slice(q + 1),
    bodyLength: length === undefined ? 0 : Number(length),
  };
}

/** Binds the API to one build of the wasm module. */
export function bind(raw) {
  let rawKeyring;
  let rawCache;
  let allScopes;

  /** An identity keyring, the edge's `ORIGIN_KEYRING` (`active=KID;KID:HEX,...`). Its secrets
   * stay inside the wasm module: nothing reads, prints or serializes them. */
  class Keyring {
    #raw;
    constructor(config) {
      if (typeof config !== 'string') throw new ConfigError('invalid_keyring', 'the keyring config must be a string');
      try {
        this.#raw = new raw.Keyring(config);
      } catch (e) {
        throw convert(e, ConfigError);
      }
    }
    toJSON() {
      return '[Keyring]';
    }
    toString() {
      return '[Keyring]';
    }
    static {
      rawKeyring = (k) => {
        if (!(k instanceof Keyring)) throw new ConfigError('invalid_argument', 'keyring must be a Keyring');
        return k.#raw;
      };
    }
  }

  /** The request ids this origin accepted within its window: what makes an identity
   * single-use. One per origin process, shared by every request. */
  class ReplayCache {
    #raw;
    constructor({ capacity = 65536, window = 30 } = {}) {
      // The module takes u32s, and wasm-bindgen would wrap anything else (ToUint32): -1 would
      // become a cache of 4,294,967,295 ids, 2^32 + 1 a cache of one, 30.9 s a window of 30.
      for (const [name, value] of [['capacity', capacity], ['window', window]]) {
        if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
          throw new ConfigError('invalid_replay_cache', `${name} must be a whole number`);
        }
      }
      try {
        this.#raw = new raw.ReplayCache(capacity, window);
      } catch (e) {
        throw convert(e, ConfigError);
      }
    }
    /** How many request ids it holds. */
    get size() {
      return this.#raw.size;
    }
    /** The window in seconds: the oldest signature accepted, and how long ids are kept. */
    get window() {
      return this.#raw.window;
    }
    static {
      rawCache = (c) => {
        if (!(c instanceof ReplayCache)) throw new ConfigError('invalid_argument', 'replayCache must be a ReplayCache');
        return c.#raw;
      };
    }
  }

  /** Checks the identity the edge signed on `request`, at `now` (Unix seconds, default: the
   * clock), and spends its request id. Returns the caller; throws IdentityError. */
  function verifyIdentity(request, keyring, now, replayCache) {
    const header = headerReader(request.headers, Array.isArray(request.rawHeaders));
    const { method, path, query, bodyLength } = requestParts(request, header);
    const signature = header(HEADERS.signature);
    const accountId = header(HEADERS.accountId);
    const keyId = header(HEADERS.keyId);
    const environment = header(HEADERS.environment);
    const scopes = header(HEADERS.scopes);
    const requestId = header(HEADERS.requestId);
    // One string crosses into the module (js/src/lib.rs, verify_identity), with a bit per header
    // sent.
    const values = [signature, accountId, keyId, environment, scopes, requestId];
    let present = 0;
    for (let i = 0; i < values.length; i++) {
      if (values[i] === undefined) continue;
      present |= 1 << i;
      if (String(values[i]).length > MAX_IDENTITY_VALUE || UNSIGNABLE.test(values[i])) {
        throw new IdentityError('malformed_header', `identity header \`${HEADER_ORDER[i]}\` is malformed`, HEADER_ORDER[i]);
      }
    }
    if (UNSIGNABLE.test(method) || UNSIGNABLE.test(path) || UNSIGNABLE.test(query)) {
      throw new IdentityError('bad_signature', 'identity signature refused: the request holds what no signed request does');
    }
    const fields = `${method}\n${path}\n${query}\n${values.map((v) => v ?? '').join('\n')}`;
    let signedAt;
    try {
      signedAt = raw.verifyIdentity(
        rawKeyring(keyring),
        rawCache(replayCache),
        now ?? Math.floor(Date.now() / 1000),
        bodyLength,
        present,
        fields,
      );
    } catch (e) {
      throw convert(e, IdentityError);
    }
    // Accepted headers are in their canonical forms (the module refuses any other spelling).
    const fullAccess = scopes === '*';
    allScopes ??= Object.freeze(raw.scopeNames());
    return Object.freeze({
      accountId,
      keyId,
      environment,
      scopes: fullAccess ? allScopes : Object.freeze(scopes === '' ? [] : scopes.split(' ')),
      fullAccess,
      requestId,
      signedAt,
    });
  }

  /** What can be known about `text` without a secret: `{ environment, hint }`; throws
   * KeyFormatError (with the edge's `hint`) when it is not a well-formed Lynxo key. */
  function inspectKey(text) {
    if (typeof text !== 'string') throw new ConfigError('invalid_argument', 'text must be a string');
    try {
      // Past 512 bytes the answer is the length's (shared::key::too_long): the text is measured
      // here rather than copied into wasm memory, which would keep its size for good.
      if (text.length > LONG_KEY_TEXT) raw.inspectLongKey(utf8Length(text));
      return raw.inspectKey(text);
    } catch (e) {
      throw convert(e, KeyFormatError);
    }
  }

  /** The checksum-confirmed Lynxo keys in `text`: `[{ key, index, environment, hint }]`. */
  function findKeys(text) {
    if (typeof text !== 'string') throw new ConfigError('invalid_argument', 'text must be a string');
    if (text.length <= SCAN_CHUNK) return raw.findKeys(text);
    // A long text crosses into the module a slice at a time: wasm memory grows to hold what it
    // is handed and never shrinks, so one large text would pin its size (up to three times its
    // length) for the life of the process. Slices end just before a character that is not part
    // of a word, so a key (a whole word) is never cut and its boundaries read as in one piece.
    const found = [];
    let start = 0;
    while (start < text.length) {
      let end = Math.min(start + SCAN_CHUNK, text.length);
      if (end < text.length) {
        let cut = end;
        while (cut > start && !splits(text.charCodeAt(cut))) cut--;
        if (cut === start) {
          // One word longer than a slice, so longer than any key: skip to its end.
          while (end < text.length && !splits(text.charCodeAt(end))) end++;
          start = end;
          continue;
        }
        end = cut;
      }
      for (const key of raw.findKeys(text.slice(start, end))) {
        key.index += start;
        found.push(key);
      }
      start = end;
    }
    return found;
  }

  return { Keyring, ReplayCache, verifyIdentity, inspectKey, findKeys };
}
