// Types of @lynxo/keys (every entry point: Node CommonJS and ESM, bundlers, `@lynxo/keys/web`).

/** Every error this package throws: `code` is stable, `message` is for people. */
export class LynxoError extends Error {
  readonly code: string;
}

/** Why the origin refused the identity headers. */
export type IdentityErrorCode =
  | 'missing_header'
  | 'malformed_header'
  | 'malformed_signature'
  | 'unknown_kid'
  | 'outside_window'
  | 'bad_signature'
  | 'replayed'
  | 'replay_cache_full';

/** The identity headers were refused: the request did not come through the edge, or was
 * changed or replayed. */
export class IdentityError extends LynxoError {
  readonly code: IdentityErrorCode;
  /** What the origin should answer: 401, or 503 when its replay cache is full. */
  readonly status: 401 | 503;
  /** The missing or malformed header, for `missing_header` and `malformed_header`. */
  readonly header?: string;
}

/** Why a text is not a well-formed Lynxo key (found without any secret). */
export type KeyFormatErrorCode =
  | 'surrounding_whitespace'
  | 'missing_prefix'
  | 'invalid_character'
  | 'invalid_length'
  | 'invalid_checksum'
  | 'unknown_environment';

/** The text is not a well-formed Lynxo key. */
export class KeyFormatError extends LynxoError {
  readonly code: KeyFormatErrorCode;
  /** How a person fixes it, exactly as the edge says it; absent where the edge says nothing. */
  readonly hint?: string;
}

/** A keyring, replay cache or argument this package cannot use. */
export class ConfigError extends LynxoError {
  readonly code: 'invalid_keyring' | 'invalid_replay_cache' | 'invalid_argument';
}

/** The identity header names, lowercase. */
export const HEADERS: Readonly<{
  signature: 'lynxo-identity-signature';
  accountId: 'lynxo-account-id';
  keyId: 'lynxo-key-id';
  environment: 'lynxo-environment';
  scopes: 'lynxo-scopes';
  requestId: 'lynxo-request-id';
}>;

export type Environment = 'development' | 'staging' | 'production';

/** The identity keyring shared by the edge and this origin (`ORIGIN_KEYRING`,
 * `active=KID;KID:HEX,...`). Its secrets never leave the wasm module. */
export class Keyring {
  constructor(config: string);
}

/** The request ids this origin accepted within its window. One per process. */
export class ReplayCache {
  /** capacity: ids held at most (default 65536); window: seconds, 1 to 30 (default 30). */
  constructor(options?: { capacity?: number; window?: number });
  readonly size: number;
  readonly window: number;
}

type HeaderBag =
  | { get(name: string): string | null }
  | Record<string, string | string[] | undefined>;

/** The request as the origin received it: explicit parts, or a Node / Express / Fetch request. */
export type IdentityRequest =
  | { method: string; path: string; query?: string; bodyLength?: number; headers: HeaderBag }
  | { method?: string; url: string; originalUrl?: string; headers: HeaderBag };

/** Who is calling, as the edge established it. */
export interface Caller {
  /** The account id, decimal (exact for every id; a JavaScript number is not). */
  readonly accountId: string;
  /** The key id, 32 lowercase hex digits. */
  readonly keyId: string;
  readonly environment: Environment;
  /** The key's scopes; for Full Access, every scope of today's catalog. */
  readonly scopes: readonly string[];
  /** Full Access: also every scope added later. */
  readonly fullAccess: boolean;
  /** The request id this check spent (for logs). */
  readonly requestId: string;
  /** When the edge signed it, Unix seconds. */
  readonly signedAt: number;
}

/** Checks the identity the edge signed on `request` at `now` (Unix seconds, default: the clock)
 * and spends its request id in `replayCache`. Throws IdentityError. The origin must then read
 * exactly `Content-Length` bytes of body (0 without one) and refuse the request otherwise. */
export function verifyIdentity(
  request: IdentityRequest,
  keyring: Keyring,
  now: number | undefined,
  replayCache: ReplayCache,
): Caller;

/** What is known about a key text without a secret. Throws KeyFormatError. */
export function inspectKey(text: string): { environment: Environment; hint: string };

/** The checksum-confirmed Lynxo keys in a text; `index` counts UTF-16 code units. */
export function findKeys(
  text: string,
): { key: string; index: number; environment: Environment; hint: string }[];
