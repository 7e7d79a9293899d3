export * from './index.js';
/** Loads the wasm module: fetched next to this file by default, or from the URL, Response,
 * bytes or WebAssembly.Module given. Call once before anything else. */
export default function init(
  input?: string | URL | Response | BufferSource | WebAssembly.Module,
): Promise<void>;
