//! Runs a command beside a private PostgreSQL server ([`e2e::postgres::Server`]) and stops the
//! server after it, whatever the command's result; the command finds the server's
//! administrative URL in `LYNXO_TEST_POSTGRES` (`postgres://postgres@127.0.0.1:PORT/postgres`).
//! scripts/test.sh runs the control plane's suite and the end-to-end suite a second time so:
//! the same tests, on PostgreSQL (docs/postgres.md).
//!
//!   cargo run -p e2e --bin with_postgres -- cargo test -p control
//!   cargo run -p e2e --bin with_postgres -- cargo test -p e2e

use std::process::{Command, ExitCode};

use anyhow::Context as _;

fn main() -> anyhow::Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    let program = args
        .next()
        .context("usage: with_postgres <command> [args...]")?;
    let server = e2e::postgres::Server::start();
    let url = server.url("postgres");
    eprintln!("with_postgres: server on port {}", server.port());
    let status = Command::new(&program)
        .args(args)
        .env("LYNXO_TEST_POSTGRES", &url)
        .status()
        .with_context(|| format!("running {program}"))?;
    drop(server);
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}
