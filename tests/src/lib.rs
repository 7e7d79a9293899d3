//! End-to-end test harness for Lynxo Keys.
//!
//! - [`origin`]: the demo origin (binary `demo_origin`), which checks the edge's signed identity.

pub mod origin;
