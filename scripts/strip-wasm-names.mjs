// Drops the `name` custom section (function names, for stack traces only) from a wasm module,
// in place; every other section is kept byte for byte. The section is a quarter of the edge's
// module: worker-build's own wasm-opt step would drop it too, but that step is off here (it
// downloads its binary). Execution does not read it, so the worker runs the same code.
//
//   node scripts/strip-wasm-names.mjs <module.wasm>
import { readFileSync, writeFileSync } from "node:fs";

const path = process.argv[2];
if (!path) {
  console.error("usage: node scripts/strip-wasm-names.mjs <module.wasm>");
  process.exit(2);
}
const wasm = readFileSync(path);
if (wasm.length < 8 || wasm.readUInt32LE(0) !== 0x6d736100) {
  console.error(`strip-wasm-names: ${path} is not a wasm module`);
  process.exit(1);
}

// An unsigned LEB128 at `at`: [value, offset after it].
function leb(at) {
  let value = 0;
  let shift = 0;
  for (;;) {
    if (at >= wasm.length) throw new Error("truncated LEB128");
    const byte = wasm[at++];
    value += (byte & 0x7f) * 2 ** shift;
    shift += 7;
    if (byte < 0x80) return [value, at];
  }
}

const kept = [wasm.subarray(0, 8)];
let at = 8;
let dropped = 0;
while (at < wasm.length) {
  const start = at;
  const id = wasm[at++];
  const [size, body] = leb(at);
  const end = body + size;
  if (end > wasm.length) throw new Error(`section at ${start} runs past the end`);
  at = end;
  if (id === 0) {
    const [nameLength, nameAt] = leb(body);
    if (wasm.toString("utf8", nameAt, nameAt + nameLength) === "name") {
      dropped += end - start;
      continue;
    }
  }
  kept.push(wasm.subarray(start, end));
}
writeFileSync(path, Buffer.concat(kept));
console.log(`strip-wasm-names: ${path}: ${dropped} bytes of function names dropped`);
