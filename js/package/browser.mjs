// Bundlers (webpack, Vite, esbuild...): the bundler loads the wasm module.
import * as raw from './wasm/lynxo_keys.js';
import { bind } from './core.mjs';

export { LynxoError, IdentityError, KeyFormatError, ConfigError, HEADERS } from './core.mjs';
export const { Keyring, ReplayCache, verifyIdentity, inspectKey, findKeys } = bind(raw);
