//! A private PostgreSQL server per test: `initdb` on a temporary directory, `pg_ctl start` on a
//! free loopback port (and a unix socket in the same directory), stopped and deleted when
//! dropped, so a test that panics leaves nothing running and nothing on disk.
//!
//! `initdb` and `pg_ctl` refuse to run as root, and the tests run as root on these machines:
//! then the directory is given to the `postgres` system user (which Debian's package creates)
//! and both run through `runuser -u postgres --`. The server binaries are found on `PATH` or,
//! as Debian installs them, in `/usr/lib/postgresql/<version>/bin` (newest first);
//! `scripts/bootstrap.sh` installs them where missing. The server's fsync stays on: a later test
//! measures durability against it.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// The superuser `initdb` creates (trust authentication, loopback only).
pub const USER: &str = "lynxo";

/// Ports tried before giving up: another test may take a free port between our probe and the
/// server's bind.
const PORT_ATTEMPTS: usize = 5;

/// How long `pg_ctl -w` waits for the server to accept connections (it polls the server's own
/// readiness report in `postmaster.pid`; this is only the bound on a server that never starts).
const START_TIMEOUT_SECS: &str = "60";

/// A running private server.
pub struct Server {
    port: u16,
    /// `initdb`'s and `pg_ctl`'s directory (one installation, one version).
    bin: PathBuf,
    psql: PathBuf,
    /// Data directory, inside `root`.
    data: PathBuf,
    /// Whether the server programs run as the `postgres` user (we are root).
    as_postgres: bool,
    /// Holds the data directory, the unix socket and the server logs; deleted last on drop.
    root: TempDir,
}

impl Server {
    /// Creates a cluster in a new temporary directory and starts it; returns once it accepts
    /// connections. Panics (with the server's log) if it cannot.
    pub fn start() -> Self {
        Self::start_on(std::iter::repeat_with(free_port).take(PORT_ATTEMPTS))
    }

    /// [`Server::start`] on the first of `ports` the server can bind.
    fn start_on(ports: impl IntoIterator<Item = u16>) -> Self {
        let bin = server_bin_dir();
        let psql = if bin.join("psql").is_file() {
            bin.join("psql")
        } else {
            PathBuf::from("psql")
        };
        let root = tempfile::Builder::new()
            .prefix("lynxo-pg-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let dir = root.path().to_str().expect("a UTF-8 temp dir").to_owned();
        // pg_ctl hands `-o` to a shell: the directory goes in single quotes.
        assert!(!dir.contains('\''), "temp dir {dir:?} has a quote");
        // The directory was just created by this process, so it is owned by our effective user.
        let as_postgres = std::fs::metadata(root.path())
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .uid()
            == 0;
        if as_postgres {
            let out = Command::new("chown")
                .args(["postgres:postgres", &dir])
                .output()
                .unwrap_or_else(|e| panic!("chown: {e}"));
            assert!(
                out.status.success(),
                "chown postgres {dir} (is PostgreSQL installed? bash scripts/bootstrap.sh): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let data = root.path().join("data");
        let mut server = Server {
            port: 0,
            bin,
            psql,
            data,
            as_postgres,
            root,
        };
        let out = server
            .server_command("initdb")
            .arg("-D")
            .arg(&server.data)
            .args(["-A", "trust", "-U", USER, "-E", "UTF8", "--locale=C"])
            // initdb's final flush of the new cluster to disk guards against the machine
            // losing power during a test, which no test simulates; it costs seconds on a busy
            // disk. The server runs with fsync on: what it commits survives its being killed.
            .args(["--no-instructions", "--no-sync"])
            .output()
            .unwrap_or_else(|e| panic!("initdb (in {}): {e}", server.bin.display()));
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut ports = ports.into_iter().enumerate().peekable();
        while let Some((attempt, port)) = ports.next() {
            let log = server.root.path().join(format!("server-{attempt}.log"));
            let out = server
                .server_command("pg_ctl")
                .arg("-D")
                .arg(&server.data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", START_TIMEOUT_SECS, "-o"])
                .arg(format!(
                    "-k '{dir}' -h 127.0.0.1 -p {port} -c fsync=on -c synchronous_commit=on \
                     -c max_connections=400"
                ))
                .arg("start")
                .output()
                .unwrap_or_else(|e| panic!("pg_ctl start: {e}"));
            if out.status.success() {
                server.port = port;
                return server;
            }
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            let taken = log.contains("could not bind") || log.contains("already in use");
            if !taken || ports.peek().is_none() {
                // A server that failed to start may still hold the directory: stop it first.
                server.stop();
                panic!(
                    "pg_ctl start failed on port {port}: {}{}\n--- server log ---\n{log}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        panic!("no port to try")
    }

    /// The loopback TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates an empty database `name` (lowercase letters, digits, `_`) and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "database name {name:?}: lowercase letters, digits and _ only"
        );
        // CREATE DATABASE cannot run inside a transaction block, so not through `psql`.
        let out = self
            .psql_command("postgres")
            .arg("-c")
            .arg(format!("CREATE DATABASE {name}"))
            .output();
        check_psql(out).unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        self.url(name)
    }

    /// Runs `sql` (one or more statements) against database `db` in one transaction and returns
    /// what the queries print (unaligned, tuples only, `|` between fields, no command tags).
    /// Panics with psql's error if any statement fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("psql -d {db} failed: {e}\n--- sql ---\n{sql}"))
    }

    /// [`Server::psql`], returning psql's error output instead of panicking. The transaction
    /// is rolled back on the first error (`-1 -v ON_ERROR_STOP=1`), so a failure changes nothing.
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut child = self
            .psql_command(db)
            .args(["-1", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("psql: {e}"))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        // Written from a thread: a large result could fill stdout while we still write stdin.
        let sql = sql.to_owned();
        let writer =
            std::thread::spawn(move || std::io::Write::write_all(&mut stdin, sql.as_bytes()));
        let out = child.wait_with_output();
        writer
            .join()
            .expect("the stdin writer never panics")
            .map_err(|e| format!("writing to psql: {e}"))?;
        check_psql(out)
    }

    fn psql_command(&self, db: &str) -> Command {
        let mut cmd = Command::new(&self.psql);
        without_pg_env(&mut cmd);
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                db,
            ]);
        cmd
    }

    /// `initdb` or `pg_ctl`, as the `postgres` user when we are root, run from the temporary
    /// directory (the caller's directory may be closed to that user).
    fn server_command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            // util-linux puts it in /usr/sbin, which a user's PATH may lack.
            let runuser = on_path("runuser").unwrap_or_else(|| PathBuf::from("/usr/sbin/runuser"));
            let mut cmd = Command::new(runuser);
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        without_pg_env(&mut cmd);
        cmd.current_dir(self.root.path()).stdin(Stdio::null());
        cmd
    }

    /// Stops the server at once (no checkpoint: the directory is deleted next). If `pg_ctl`
    /// cannot, the postmaster named in `postmaster.pid` is killed.
    fn stop(&self) {
        let pid_file = self.data.join("postmaster.pid");
        if !pid_file.exists() {
            return;
        }
        let stopped = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", START_TIMEOUT_SECS, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped {
            let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
            if let Some(pid) = pid.lines().next().filter(|p| p.parse::<u32>().is_ok()) {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
    }

    /// The temporary directory (data directory, socket, logs).
    pub fn dir(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        // `root` (a TempDir) is dropped after this and deletes the directory.
    }
}

/// Only our arguments decide which server and directory a program uses: none of the caller's
/// PGHOST, PGPORT, PGDATA, PGOPTIONS, ...
fn without_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
}

fn check_psql(out: std::io::Result<Output>) -> Result<String, String> {
    let out = out.map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("a free port: {e}"))
        .port()
}

/// `program`'s path in a directory of `PATH`.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The directory of `initdb` and `pg_ctl`: that of `initdb` on `PATH` (symlinks resolved, so
/// `pg_ctl` comes from the same installation), else the newest `/usr/lib/postgresql/<n>/bin`.
fn server_bin_dir() -> PathBuf {
    if let Some(dir) = on_path("initdb")
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .filter(|dir| dir.join("pg_ctl").is_file())
    {
        return dir;
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .max_by_key(|(version, _): &(u32, PathBuf)| *version);
    newest.map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL's initdb and pg_ctl are neither on PATH nor in /usr/lib/postgresql/*/bin: \
             bash scripts/bootstrap.sh installs them"
        )
    })
}

/// The database a test serves: a SQLite file `control.sqlite3` in `dir`; or, when
/// `LYNXO_TEST_POSTGRES` names a PostgreSQL server (`postgres://USER@HOST:PORT/postgres`; the
/// `with_postgres` runner sets it), a new empty database of its own there. One suite, both
/// backends: the control plane takes either as `--database`.
pub fn test_database(dir: &Path) -> PathBuf {
    match test_server() {
        Some(admin) => fresh_database(&admin).into(),
        None => dir.join("control.sqlite3"),
    }
}

/// `LYNXO_TEST_POSTGRES`, if set.
pub fn test_server() -> Option<String> {
    std::env::var("LYNXO_TEST_POSTGRES")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Creates a database on the server `admin` names and returns its URL. On a thread of its own:
/// the blocking client runs a runtime, which cannot start on an async test's thread.
fn fresh_database(admin: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("t{}_{n}", std::process::id());
    let admin = admin.to_owned();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&admin, postgres::NoTls)
            .unwrap_or_else(|e| panic!("LYNXO_TEST_POSTGRES={admin}: {e}"));
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        format!("{base}/{name}")
    })
    .join()
    .unwrap_or_else(|_| panic!("creating a test database"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port taken between our probe and the server's bind: the next one is tried.
    #[test]
    fn a_taken_port_is_skipped() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let free = free_port();
        let server = Server::start_on([taken_port, free]);
        assert_eq!(server.port(), free);
        assert_eq!(server.psql("postgres", "SELECT 1").trim(), "1");
        let dir = server.dir().to_owned();
        drop(server);
        assert!(!dir.exists(), "{} is left on disk", dir.display());
    }
}
