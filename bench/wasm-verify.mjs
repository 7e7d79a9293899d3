// Runs the exports of bench/wasm: node bench/wasm-verify.mjs <path to bench_wasm.js>.
// Each sample is one call that loops inside wasm, so the JS<->wasm crossing is amortised.
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);
const { Bench, EdgeStages } = require(path.resolve(process.argv[2]));

const REVOKED = 1_000_000;
const N = 200_000;
const SAMPLES = 15;

const bench = new Bench(REVOKED);

function nsPerOp(fn, expect, n = N) {
  const samples = [];
  for (let s = 0; s < SAMPLES + 3; s++) {
    const start = process.hrtime.bigint();
    const result = fn(n);
    const ns = Number(process.hrtime.bigint() - start) / n;
    if (expect !== undefined && result !== expect) throw new Error(`unexpected result ${result}`);
    if (s >= 3) samples.push(ns); // the first samples warm up the JIT tiers
  }
  samples.sort((a, b) => a - b);
  return { median: samples[samples.length >> 1], min: samples[0], max: samples[samples.length - 1] };
}

// Interleave the measurements so machine noise hits each alike; the full paths run twice and
// keep their better median.
const v2a = nsPerOp((n) => bench.verify(n), N);
const v1a = nsPerOp((n) => bench.verify_v1(n), N);
const hmac = nsPerOp((n) => bench.hmac(n));
const prf = nsPerOp((n) => bench.prf(n));
const v2b = nsPerOp((n) => bench.verify(n), N);
const v1b = nsPerOp((n) => bench.verify_v1(n), N);
const better = (a, b) => (a.median <= b.median ? a : b);
const v2 = better(v2a, v2b);
const v1 = better(v1a, v1b);

const fmt = (r) => `median ${r.median.toFixed(0)} ns (min ${r.min.toFixed(0)}, max ${r.max.toFixed(0)})`;
console.log(`node ${process.version}, ${REVOKED} revoked ids, ${N} ops x ${SAMPLES} samples`);
console.log(`wasm full verify, v2 key       : ${fmt(v2)}`);
console.log(`wasm full verify, v1 key       : ${fmt(v1)}`);
console.log(`wasm HMAC-SHA256 48 B (v1 tag) : ${fmt(hmac)}`);
console.log(`wasm PRF 48 B (one compression): ${fmt(prf)}`);
console.log(`v2 - v1                        : ${(v2.median - v1.median).toFixed(0)} ns`);

// The edge worker's own work per authenticated request, stage by stage (edge::testing::stages):
// our code in wasm, without the runtime's calls. Each sample loops inside wasm.
const stages = new EdgeStages();
const keyCheck = nsPerOp((n) => stages.key_check(n), N);
const leaseTake = nsPerOp((n) => stages.lease_take(n), undefined, 10 * N);
const meter = nsPerOp((n) => stages.meter(n), undefined, 10 * N);
const rateFields = nsPerOp((n) => stages.rate_fields(n), undefined, 10 * N);
const forwardPlan = nsPerOp((n) => stages.forward_plan(n), undefined, N / 10);
console.log('edge stages, per request (wasm):');
console.log(`  key check (verify, revocation, route, scope): ${fmt(keyCheck)}`);
console.log(`  lease take                                  : ${fmt(leaseTake)}`);
console.log(`  meter push                                  : ${fmt(meter)}`);
console.log(`  RateLimit field values                      : ${fmt(rateFields)}`);
console.log(`  auth-only total                             : ${(keyCheck.median + leaseTake.median + meter.median + rateFields.median).toFixed(0)} ns`);
console.log(`  forward plan (every build, bare proxy too)  : ${fmt(forwardPlan)}`);
