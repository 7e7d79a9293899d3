//! End-to-end test harness for Lynxo Keys: the real worker under `wrangler dev` (workerd) in
//! front of the demo origin, on loopback, started and stopped by the tests themselves.
//!
//! - [`stack`]: starts and stops the processes, writes local KV;
//! - [`control`]: the real control plane (binary `control`) publishing to the stack's worker;
//! - [`http`]: a raw HTTP/1.1 client that can send what ordinary clients refuse to;
//! - [`origin`]: the demo origin (binary `demo_origin`), which checks the edge's signed identity;
//! - [`keys`]: keys and revocation shards signed with the test keyring;
//! - [`capture`]: a recording proxy in front of the demo origin (what reached it, to replay).

pub mod capture;
pub mod control;
pub mod http;
pub mod keys;
pub mod origin;
pub mod stack;
