// A CPU profile of one worker of a running `workerd` (started with --inspector-addr), through
// its DevTools inspector, while a load runs: where the isolate's own time goes, by stage of the
// request path (bench/cpu.sh profile).
//
//   node bench/cpu-profile.mjs <inspector host:port> <service name> <requests served> <out.json> -- <load command...>
//
// Starts the V8 sampling profiler (50 us interval) on the service's isolate, runs the load
// command, stops the profiler, writes the raw profile to <out.json> and prints, per request:
// each stage's inclusive time (the time inside the functions matching it, and everything they
// call), and the top functions by self time. Only the isolate's thread is sampled: the
// runtime's own work outside JavaScript and wasm (HTTP parsing, sockets, subrequests in C++) is
// not in it, which is why bench/cpu.sh measures the whole process as well.
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import WebSocket from "ws";

const [inspector, service, servedArg, outFile, dashdash, ...load] = process.argv.slice(2);
if (!inspector || !service || !servedArg || !outFile || dashdash !== "--" || load.length === 0) {
  console.error("usage: cpu-profile.mjs <host:port> <service> <requests> <out.json> -- <load...>");
  process.exit(2);
}

// The stages of the request path, by the Rust function (a wasm name) or JS glue that does each.
// A sample counts for the first stage whose pattern an enclosing frame matches, innermost first.
const STAGES = [
  ["config read (isolate::load_config)", /isolate::load_config/],
  ["framing headers (body::framing_headers)", /framing_headers|framed_length/],
  ["key check (decide::authenticate)", /decide::authenticate|gate::authenticate/],
  ["revocation shard (refresh_shard, status)", /refresh_shard|ShardCache/],
  ["route + scope (decide::admit)", /decide::admit|Verified.*admit/],
  ["attribution (request::seen)", /request::seen|request::attribution/],
  ["rate limit (stubs::rate_limit, leases)", /stubs::rate_limit|stubs::refill|Leases/],
  ["meter (stubs::record, buffer, flush)", /stubs::record|stubs::flush|stubs::deliver|meter::buffer/],
  ["identity signature (Identity::sign)", /identity::Identity::sign|Identity.*with_parts/],
  ["forward plan, rest (forward::plan)", /forward::plan/],
  ["request id (random_request_id)", /random_request_id/],
  ["origin request built (Headers, RequestInit)", /request::answer/],
  ["RateLimit fields on the response (respond::origin_with_rate_headers)", /origin_with_rate_headers/],
  ["edge answer to a response (respond::to_response)", /respond::to_response/],
  ["KeyLimiter object (same isolate: leases)", /KeyLimiter|limit::counter/],
  ["UsageMeter object (same isolate: deliveries, storage, alarm)", /UsageMeter|objects::put_all|objects::list_strings|meter::aggregate|meter::store/],
];

async function target() {
  const list = await (await fetch(`http://${inspector}/json/list`)).json();
  const found = list.find((t) => t.id === service || t.title === service || String(t.url).endsWith(`:${service}`));
  if (!found) throw new Error(`no inspector target for ${service}: ${JSON.stringify(list)}`);
  let url = found.webSocketDebuggerUrl;
  if (!url) url = `ws://${inspector}/${found.id}`;
  return url;
}

function session(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    let next = 1;
    const waiting = new Map();
    ws.on("message", (data) => {
      const msg = JSON.parse(data);
      const w = msg.id && waiting.get(msg.id);
      if (!w) return;
      waiting.delete(msg.id);
      if (msg.error) w.reject(new Error(JSON.stringify(msg.error)));
      else w.resolve(msg.result);
    });
    ws.on("error", reject);
    ws.on("open", () =>
      resolve({
        send(method, params = {}) {
          const id = next++;
          ws.send(JSON.stringify({ id, method, params }));
          return new Promise((res, rej) => waiting.set(id, { resolve: res, reject: rej }));
        },
        close: () => ws.close(),
      }),
    );
  });
}

const s = await session(await target());
await s.send("Profiler.enable");
await s.send("Profiler.setSamplingInterval", { interval: 50 });
await s.send("Profiler.start");
const ran = spawnSync(load[0], load.slice(1), { stdio: ["ignore", "pipe", "inherit"] });
const { profile } = await s.send("Profiler.stop");
s.close();
if (ran.status !== 0) throw new Error(`load command failed: ${ran.status}`);
writeFileSync(outFile, JSON.stringify(profile));
// The load command may print how many requests it served ("<n> requests in ..." from wrk).
const servedMatch = /(\d+) requests in/.exec(String(ran.stdout));
const served = servedMatch ? Number(servedMatch[1]) : Number(servedArg);

// Self time of each node, from the samples and their time deltas (microseconds).
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of profile.nodes) for (const c of n.children || []) parent.set(c, n.id);
const self = new Map();
profile.samples.forEach((id, i) => {
  const dt = profile.timeDeltas[i + 1] ?? 0;
  self.set(id, (self.get(id) || 0) + dt);
});
const name = (n) => n.callFrame.functionName || `(anonymous ${n.callFrame.url}:${n.callFrame.lineNumber})`;
const IDLE = new Set(["(idle)", "(program)", "(root)"]);

const stage = new Map();
const fn = new Map();
let busy = 0;
for (const [id, us] of self) {
  const node = byId.get(id);
  const own = name(node);
  if (IDLE.has(own)) {
    stage.set(own, (stage.get(own) || 0) + us);
    continue;
  }
  busy += us;
  fn.set(own, (fn.get(own) || 0) + us);
  let label = null;
  for (let at = id; at !== undefined && !label; at = parent.get(at)) {
    const f = name(byId.get(at));
    for (const [l, re] of STAGES) if (re.test(f)) { label = l; break; }
  }
  label ??= own === "(garbage collector)" ? "(garbage collector)" : "in no stage: the runtime's builtins (fetch, Request, Response), bindgen glue, futures";
  stage.set(label, (stage.get(label) || 0) + us);
}

const per = (us) => (us / served).toFixed(2).padStart(8);
console.log(`profile ${service}: ${served} requests, ${(busy / 1e3).toFixed(0)} ms busy in the isolate = ${per(busy)} us/request`);
for (const [l, us] of [...stage].sort((a, b) => b[1] - a[1])) {
  if (IDLE.has(l)) continue;
  console.log(`  ${per(us)} us  ${(100 * us / busy).toFixed(1).padStart(5)}%  ${l}`);
}
console.log("  top functions by self time:");
for (const [f, us] of [...fn].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
  console.log(`  ${per(us)} us  ${f.slice(0, 140)}`);
}
