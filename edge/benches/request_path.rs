//! The worker's own per-request work, stage by stage, natively (issue 16): what our code costs
//! besides the runtime, without the noise of a whole `workerd` (`bash bench/cpu.sh`). The
//! stages and their fixtures are `edge::testing::stages`, which `bash bench/wasm-verify.sh` also
//! times in wasm under V8.
//!
//! - `key_check`: credential, key verify (HMAC tag), revocation status, route and scope;
//! - `lease_take`: one token from the isolate's lease;
//! - `meter`: one `Buffer::push`, a flush's take every 5,000 requests amortised in;
//! - `rate_fields`: the two RateLimit field values;
//! - `forward_plan`: the origin's request (allow-listed headers, identity signature), in every
//!   build, the bare proxy's too: for scale.
//!
//! Run: `cargo bench -p edge`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use edge::testing::stages::Stages;

fn request_path(c: &mut Criterion) {
    let mut stages = Stages::new();
    let mut group = c.benchmark_group("request_path");
    group.bench_function("key_check", |b| b.iter(|| black_box(&stages).key_check()));
    group.bench_function("lease_take", |b| b.iter(|| stages.lease_take()));
    group.bench_function("meter", |b| b.iter(|| stages.meter()));
    group.bench_function("rate_fields", |b| {
        b.iter(|| black_box(&stages).rate_fields())
    });
    group.bench_function("forward_plan", |b| {
        b.iter(|| black_box(&stages).forward_plan())
    });
    group.finish();
}

criterion_group!(benches, request_path);
criterion_main!(benches);
