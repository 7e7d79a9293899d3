//! `lynxo-keys scan`, the real binary: what it finds in a tree, in git history and on standard
//! input, what it never finds, what it prints (never a key) and how it exits.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use shared::key::{self, Claims, Environment, KeyId};
use shared::mac::{Keyring, Secret};
use shared::scope::Permission;

fn key(environment: Environment, n: u8) -> String {
    let ring = Keyring::new(1, &[(1, Secret::new(vec![9; 32]).unwrap())]).unwrap();
    let claims = Claims {
        kid: 1,
        account_id: 7,
        key_id: KeyId([n; 16]),
        environment,
        scopes: Permission::ReadOnly.scopes(),
        issued_at: 1_700_000_000,
        expires_at: None,
    };
    key::issue(&claims, &ring).unwrap().into_inner()
}

fn lynxo_keys(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lynxo-keys"))
        .current_dir(dir)
        .args(args)
        .env_remove("LYNXO_MANAGEMENT_TOKEN")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || pipe.write_all(&input).unwrap());
    }
    child.wait_with_output().unwrap()
}

/// The findings of a `--json` run, as (path, line, column, hint, pieces, commit).
fn findings(output: &Output) -> BTreeSet<(String, u64, u64, String, u64, String)> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            (
                v["path"].as_str().unwrap().to_owned(),
                v["line"].as_u64().unwrap(),
                v["column"].as_u64().unwrap(),
                v["hint"].as_str().unwrap().to_owned(),
                v["pieces"].as_u64().unwrap(),
                v["commit"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Fails if any of `keys` appears whole, or by a long piece, in what the run printed.
fn assert_no_key_printed(output: &Output, keys: &[&str]) {
    let printed = [&output.stdout[..], &output.stderr[..]].concat();
    let printed = String::from_utf8_lossy(&printed);
    for key in keys {
        for piece in key.as_bytes()[9..key.len() - 4].chunks(12) {
            let piece = std::str::from_utf8(piece).unwrap();
            assert!(!printed.contains(piece), "a piece of a key was printed");
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_run(dir, args);
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs git with a fixed identity, no user configuration, and `lynxo-keys` first on PATH (for
/// the hooks).
fn git_run(dir: &Path, args: &[&str]) -> Output {
    let bin = Path::new(env!("CARGO_BIN_EXE_lynxo-keys"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("git")
        .current_dir(dir)
        .env("PATH", path)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap()
}

fn write(dir: &Path, path: &str, content: impl AsRef<[u8]>) {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn row(
    path: &str,
    line: u64,
    column: u64,
    key: &str,
    pieces: u64,
) -> (String, u64, u64, String, u64, String) {
    (
        path.to_owned(),
        line,
        column,
        key::hint(key),
        pieces,
        String::new(),
    )
}

#[test]
fn finds_every_key_planted_in_a_tree_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys: Vec<String> = (1..=8)
        .map(|n| key(Environment::ALL[usize::from(n) % 3], n))
        .collect();
    let k = |i: usize| keys[i].as_str();
    git(d, &["init", "-q"]);
    // A hidden file: where keys live.
    write(d, ".env", format!("# local\nLYNXO_KEY={}\n", k(0)));
    // One minified line of two megabytes, the key deep inside it.
    let mut minified = "var a=function(){return 1};".repeat(40_000);
    let at = minified.len();
    minified.push_str(&format!("var k=\"{}\";", k(1)));
    minified.push_str(&"b.c(d,e);".repeat(100_000));
    write(d, "static/app.min.js", &minified);
    // Split across nothing but quotes: C/Python adjacent literals and shell quoting.
    let (a, b) = k(2).split_at(44);
    write(
        d,
        "src/client.py",
        format!("KEY = (\n    \"{a}\"\n    \"{b}\"\n)\n"),
    );
    let (a, b) = k(3).split_at(20);
    write(d, "deploy/run.sh", format!("export K='{a}''{b}'\n"));
    write(
        d,
        "deep/er/notes.md",
        format!("one\ntwo\nthree {} four\n", k(4)),
    );
    // Skipped: a binary file, a git-ignored file; never found: a mistyped key.
    write(d, "blob.bin", format!("\0\0\0{}", k(5)));
    write(d, ".gitignore", "ignored.txt\n");
    write(d, "ignored.txt", k(6));
    let mut typo = keys[7].clone();
    let swap = if &typo[50..51] == "a" { "b" } else { "a" };
    typo.replace_range(50..51, swap);
    write(d, "typo.txt", format!("{typo}\n{}\n", &keys[7][..90]));

    let out = lynxo_keys(d, &["scan", "--json"], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let want: BTreeSet<_> = [
        row(".env", 2, 11, k(0), 1),
        row("static/app.min.js", 1, at as u64 + 8, k(1), 1),
        row("src/client.py", 2, 6, k(2), 2),
        row("deploy/run.sh", 1, 11, k(3), 2),
        row("deep/er/notes.md", 3, 7, k(4), 1),
    ]
    .into();
    assert_eq!(findings(&out), want);
    let all: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert_no_key_printed(&out, &all);

    // Text output names each place and hint; --no-ignore and --binary add the skipped ones.
    let out = lynxo_keys(d, &["scan"], None);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert!(
        text.contains(&format!("deep/er/notes.md:3:7: {} (", key::hint(k(4)))),
        "{text}"
    );
    assert!(text.contains("split across 2 string literals"), "{text}");
    assert_no_key_printed(&out, &all);
    let out = lynxo_keys(d, &["scan", "--json", "--no-ignore", "--binary", "."], None);
    let paths: BTreeSet<String> = findings(&out).into_iter().map(|f| f.0).collect();
    assert!(
        paths.contains("./ignored.txt") && paths.contains("./blob.bin"),
        "{paths:?}"
    );
    assert_eq!(paths.len(), 7, "{paths:?}");

    // Files named on the command line, as a pre-commit hook passes them.
    let out = lynxo_keys(d, &["scan", "--json", "deep/er/notes.md", "typo.txt"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        findings(&out),
        [row("deep/er/notes.md", 3, 7, k(4), 1)].into()
    );
    let out = lynxo_keys(d, &["scan", "typo.txt"], None);
    assert_eq!(
        (out.status.code(), out.stdout.len()),
        (Some(0), 0),
        "{out:?}"
    );
}

#[test]
fn finds_a_key_that_only_git_history_holds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let leaked = key(Environment::Production, 20);
    let (a, b) = leaked.split_at(60);
    git(d, &["init", "-q"]);
    write(d, "README", "hello\n");
    git(d, &["add", "."]);
    git(d, &["commit", "-qm", "base"]);
    let base = git(d, &["rev-parse", "HEAD"]);
    write(d, "README", format!("hello\nkey: {leaked}\n"));
    write(
        d,
        "src/split.js",
        format!("const k = \"{a}\" +\n  \"{b}\";\n"),
    );
    git(d, &["add", "."]);
    git(d, &["commit", "-qm", "oops"]);
    let oops = git(d, &["rev-parse", "HEAD"]);
    write(d, "README", "hello\n");
    std::fs::remove_file(d.join("src/split.js")).unwrap();
    git(d, &["add", "-A"]);
    git(d, &["commit", "-qm", "remove the key"]);

    // The tree is clean; the history is not.
    let out = lynxo_keys(d, &["scan"], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let range = format!("{base}..HEAD");
    let out = lynxo_keys(d, &["scan", "--json", "--git", &range], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let with_commit = |mut r: (String, u64, u64, String, u64, String)| {
        r.5 = oops.clone();
        r
    };
    assert_eq!(
        findings(&out),
        [
            with_commit(row("README", 2, 6, &leaked, 1)),
            with_commit(row("src/split.js", 1, 12, &leaked, 2)),
        ]
        .into()
    );
    assert_no_key_printed(&out, &[&leaked]);
    let out = lynxo_keys(d, &["scan", "--git", &range, "--", "src"], None);
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with(&format!("{} src/split.js:1:12: ", &oops[..12])),
        "{text}"
    );
    // A range with nothing added since the removal is clean.
    let out = lynxo_keys(d, &["scan", "--git", "HEAD~1..HEAD"], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // What is staged for the next commit.
    write(d, "new.txt", format!("x\n{leaked}\n"));
    git(d, &["add", "new.txt"]);
    let out = lynxo_keys(d, &["scan", "--json", "--staged"], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(findings(&out), [row("new.txt", 2, 1, &leaked, 1)].into());

    // Bad ranges are errors, never a clean result.
    for bad in ["no-such-ref..HEAD", "--all", "-p"] {
        let out = lynxo_keys(d, &["scan", "--git", bad], None);
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
    }
}

#[test]
fn reads_standard_input_and_exits_by_what_it_found() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dev = key(Environment::Development, 30);
    let out = lynxo_keys(
        d,
        &["scan", "--json", "-"],
        Some(format!("a\nb {dev}\n").as_bytes()),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(findings(&out), [row("-", 2, 3, &dev, 1)].into());
    let out = lynxo_keys(d, &["scan", "-"], Some(b"lnx_dev_nothing here\n"));
    assert_eq!(
        (out.status.code(), out.stdout.len()),
        (Some(0), 0),
        "{out:?}"
    );
    // An empty directory is clean; a missing path is an error; a key still wins.
    let out = lynxo_keys(d, &["scan"], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = lynxo_keys(d, &["scan", "missing"], None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    write(d, "k.txt", &dev);
    let out = lynxo_keys(d, &["scan", "missing", "k.txt"], None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = lynxo_keys(d, &["scan", "--bogus"], None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    // A reader that stops early (`| head -1`) does not turn found keys into an error.
    write(d, "many.txt", format!("{dev}\n").repeat(50_000));
    let mut child = Command::new(env!("CARGO_BIN_EXE_lynxo-keys"))
        .current_dir(d)
        .args(["scan", "many.txt"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("many.txt:1:1: "), "{first}");
    assert_eq!(child.wait().unwrap().code(), Some(1));
    std::fs::remove_file(d.join("many.txt")).unwrap();
    // A file name cannot forge output lines or send escape sequences to the terminal.
    std::fs::remove_file(d.join("k.txt")).unwrap();
    write(d, "a\n\u{1b}[2Jb.txt", &dev);
    let out = lynxo_keys(d, &["scan"], None);
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(
        (out.status.code(), text.lines().count()),
        (Some(1), 1),
        "{text}"
    );
    assert!(text.starts_with("a\\n\\u{1b}[2Jb.txt:1:1: "), "{text}");
}

/// A million random strings of a key's exact shape, each environment, whole and split across
/// quotes: the checksum (with the encoding and version checks) lets none through. One genuine
/// key planted among them shows the scan ran.
#[test]
fn a_million_random_look_alikes_yield_nothing() {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    // SplitMix64, seeded: the same corpus on every run.
    let mut state = 0x5eed_1ee7_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut corpus = Vec::with_capacity(110 << 20);
    let mut body = [0_u8; key::BODY_CHARS];
    let count = 1_000_000;
    for i in 0..count {
        for chunk in body.chunks_mut(10) {
            let mut r = next();
            for b in chunk {
                *b = ALPHABET[(r % 62) as usize];
                r /= 62;
            }
        }
        let env = Environment::ALL[i % 3].tag();
        corpus.extend_from_slice(b"lnx_");
        corpus.extend_from_slice(env.as_bytes());
        corpus.push(b'_');
        if i % 10 == 9 {
            // Split across quotes, as a key in code might be.
            corpus.extend_from_slice(&body[..47]);
            corpus.extend_from_slice(b"\" \"");
            corpus.extend_from_slice(&body[47..]);
        } else {
            corpus.extend_from_slice(&body);
        }
        corpus.push(b'\n');
    }
    let planted = key(Environment::Staging, 40);
    corpus.extend_from_slice(format!("{planted}\n").as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let out = lynxo_keys(dir.path(), &["scan", "--json", "-"], Some(&corpus));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        findings(&out),
        [row("-", count as u64 + 1, 1, &planted, 1)].into()
    );
}

/// `--check-live` asks the verify endpoint (control/src/verify.rs) with the management token and
/// reads its verdict; a loopback server answers as the control plane does.
#[test]
fn check_live_asks_the_verify_endpoint_and_never_prints_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let active = key(Environment::Production, 50);
    let revoked = key(Environment::Production, 51);
    write(d, "a.txt", format!("{active}\n{revoked}\n{active}\n"));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = {
        let (active, revoked) = (active.clone(), revoked.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            // One request per distinct key: two.
            for _ in 0..2 {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let (mut head, mut length) = (String::new(), 0);
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let body: Value = serde_json::from_slice(&body).unwrap();
                assert!(head.starts_with("POST /v1/keys/verify "), "{head}");
                assert!(
                    head.to_ascii_lowercase()
                        .contains("authorization: bearer lnxm_test")
                );
                let verdict = if body["key"] == active.as_str() {
                    r#"{"valid":true,"account_id":7}"#
                } else {
                    assert_eq!(body["key"], revoked.as_str());
                    r#"{"valid":false,"status":401,"code":"invalid_token"}"#
                };
                seen.push(body["path"].as_str().unwrap().to_owned());
                write!(
                    reader.get_mut(),
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{verdict}",
                    verdict.len()
                )
                .unwrap();
            }
            seen
        })
    };
    let out = Command::new(env!("CARGO_BIN_EXE_lynxo-keys"))
        .current_dir(d)
        .args(["scan", "--json", "--check-live", &url])
        .env("LYNXO_MANAGEMENT_TOKEN", "lnxm_test")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(server.join().unwrap(), ["/", "/"]);
    let lives: Vec<(u64, String)> = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["line"].as_u64().unwrap(),
                v["live"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        lives,
        [
            (1, "active".into()),
            (2, "inactive".into()),
            (3, "active".into())
        ]
    );
    assert_no_key_printed(&out, &[&active, &revoked]);
    // No token, or a URL that would send keys in the clear: refused before any scan.
    let out = lynxo_keys(d, &["scan", "--check-live", &url], None);
    assert_eq!(
        (out.status.code(), out.stdout.len()),
        (Some(2), 0),
        "{out:?}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_lynxo-keys"))
        .current_dir(d)
        .args(["scan", "--check-live", "http://control.example.com"])
        .env("LYNXO_MANAGEMENT_TOKEN", "lnxm_test")
        .output()
        .unwrap();
    assert_eq!(
        (out.status.code(), out.stdout.len()),
        (Some(2), 0),
        "{out:?}"
    );
}

/// The hooks of `examples/git-hooks/`, installed in a repository, refuse a commit and a push (to
/// an existing branch and to a new one) that add a key, and let a clean one through.
#[test]
fn the_example_git_hooks_refuse_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let (remote, d) = (dir.path().join("remote.git"), dir.path().join("work"));
    std::fs::create_dir_all(&d).unwrap();
    git(dir.path(), &["init", "-q", "--bare", "remote.git"]);
    git(&d, &["init", "-q"]);
    write(&d, "README", "hello\n");
    git(&d, &["add", "."]);
    git(&d, &["commit", "-qm", "base"]);
    git(&d, &["remote", "add", "origin", remote.to_str().unwrap()]);
    git(&d, &["push", "-q", "origin", "HEAD:refs/heads/main"]);
    git(&d, &["fetch", "-q", "origin"]);
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/git-hooks");
    for hook in ["pre-commit", "pre-push"] {
        std::fs::copy(hooks.join(hook), d.join(".git/hooks").join(hook)).unwrap();
    }
    let leaked = key(Environment::Production, 60);
    write(&d, "app.env", format!("KEY={leaked}\n"));
    git(&d, &["add", "app.env"]);
    let refused = git_run(&d, &["commit", "-qm", "add a key"]);
    assert!(!refused.status.success(), "{refused:?}");
    let printed = |o: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(
        printed(&refused).contains(&key::hint(&leaked)),
        "{refused:?}"
    );
    // Committed past the hook, then deleted: the push still carries it.
    git(&d, &["commit", "--no-verify", "-qm", "add a key"]);
    write(&d, "app.env", "KEY=\n");
    git(&d, &["commit", "-qam", "remove it"]);
    for target in ["HEAD:refs/heads/main", "HEAD:refs/heads/feature"] {
        let refused = git_run(&d, &["push", "-q", "origin", target]);
        assert!(!refused.status.success(), "{target}: {refused:?}");
        assert!(
            printed(&refused).contains(&key::hint(&leaked)),
            "{refused:?}"
        );
    }
    let branches = ["for-each-ref", "--format=%(refname)", "refs/heads"];
    assert_eq!(git(&remote, &branches), "refs/heads/main");
    // A clean history goes through both hooks.
    git(&d, &["reset", "-q", "--hard", "origin/main"]);
    write(&d, "b.txt", "clean\n");
    git(&d, &["add", "b.txt"]);
    git(&d, &["commit", "-qm", "clean"]);
    git(
        &d,
        &[
            "push",
            "-q",
            "origin",
            "HEAD:refs/heads/main",
            "HEAD:refs/heads/feature",
        ],
    );
}
