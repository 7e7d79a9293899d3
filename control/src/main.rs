//! Lynxo Keys control plane.

fn main() {
    println!(
        "lynxo control plane (key format v{})",
        shared::key::FORMAT_VERSION
    );
}
