//! Lynxo Keys control plane.
//!
//! The admin API, dashboard and revocation publisher land with the control-plane issue; until
//! then this binary only reports the key-format version it was built against.

fn main() {
    println!(
        "lynxo control plane (key format v{}): admin API not built yet",
        shared::key::FORMAT_VERSION
    );
}
