// Browsers and Deno without a bundler: `await init()` once (it fetches lynxo_keys_bg.wasm next
// to this file, or takes the module or its bytes), then use the API.
import initModule, * as raw from './wasm/lynxo_keys_web.js';
import { bind } from './core.mjs';

export { LynxoError, IdentityError, KeyFormatError, ConfigError, HEADERS } from './core.mjs';
export const { Keyring, ReplayCache, verifyIdentity, inspectKey, findKeys } = bind(raw);

export default async function init(input) {
  await initModule(input === undefined ? undefined : { module_or_path: input });
}
