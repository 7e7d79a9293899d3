//! End-to-end test harness for Lynxo Keys.
//!
//! The suites that start the control plane and the worker under `wrangler dev` land with the
//! edge issue; this crate holds their shared harness.
