//! `lynxo-keys`: the command people run before they push.
//!
//! `lynxo-keys scan` finds Lynxo keys in files, directory trees, standard input and git history,
//! confirms each with what `shared` can check without a secret (the checksum above all, so
//! random text never matches), and prints where each is with its hint, never the key.
//! Exit status: 1 when a key is found, 0 when none is, 2 when the scan failed.
//!
//! - `find`: the scan of one stream (chunked, lines and columns);
//! - `git`: the lines a range of commits, or the index, adds;
//! - `live`: `--check-live`, the control plane's verify endpoint.
//!
//! Design and usage: `docs/secret-scanning.md`.

mod find;
mod git;
mod live;

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::{Args, Parser, Subcommand};
use ignore::{WalkBuilder, WalkState};

use crate::find::{Located, Scanned, Scanner};
use crate::live::{Checker, Liveness};

#[derive(Parser)]
#[command(name = "lynxo-keys", version, about = "Lynxo Keys tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Find Lynxo API keys in files, directories, standard input or git history.
    ///
    /// Exits 1 when it finds a key, 0 when it finds none, 2 when the scan failed (and found
    /// none).
    Scan(ScanArgs),
}

#[derive(Args)]
struct ScanArgs {
    /// Files and directories to scan, `-` for standard input (default: the current
    /// directory). With --git or --staged: git pathspecs that limit the history scanned.
    paths: Vec<String>,
    /// Scan the lines added by the commits of a revision range, e.g. `origin/main..HEAD`.
    /// Repeat it to give git several revisions: `--git NEW --git ^origin/main`.
    #[arg(long, value_name = "RANGE")]
    git: Vec<String>,
    /// Scan the lines added by the changes staged for the next commit.
    #[arg(long, conflicts_with = "git")]
    staged: bool,
    /// Print one JSON object per key found (JSON Lines) instead of text.
    #[arg(long)]
    json: bool,
    /// Scan files that .gitignore, .ignore and git's excludes leave out.
    #[arg(long)]
    no_ignore: bool,
    /// Scan binary files too (a NUL byte in the first 8000 bytes, as git decides).
    #[arg(long)]
    binary: bool,
    /// Ask the control plane at URL whether each key found is still active (its
    /// `/v1/keys/verify`, with the management token in LYNXO_MANAGEMENT_TOKEN).
    #[arg(long, value_name = "URL")]
    check_live: Option<String>,
    /// Threads that read files (default: one per CPU).
    #[arg(long, short = 'j', value_name = "N")]
    threads: Option<usize>,
}

/// A key found, with where.
struct Finding {
    commit: Option<String>,
    path: String,
    located: Located,
    live: Option<Liveness>,
}

fn main() -> ExitCode {
    let Command::Scan(args) = Cli::parse().command;
    match scan(&args) {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("lynxo-keys: {}", printable(&error.to_string()));
            ExitCode::from(2)
        }
    }
}

/// Runs `scan` and prints what it found; the exit status.
fn scan(args: &ScanArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    // Refuse a bad --check-live before reading anything.
    let checker = args
        .check_live
        .as_deref()
        .map(|url| Checker::new(url, std::env::var(live::TOKEN_VAR).ok()))
        .transpose()?;
    let errors = AtomicU64::new(0);
    let mut findings = if !args.git.is_empty() {
        from_git(git::Source::Range(&args.git), &args.paths)?
    } else if args.staged {
        from_git(git::Source::Staged, &args.paths)?
    } else {
        from_paths(args, &errors)
    };
    if let Some(checker) = &checker {
        check_live(checker, &mut findings, &errors);
    }
    // A closed standard output (`| head`) must not turn a found key into a mere error.
    let mut out = io::stdout().lock();
    let printed = findings
        .iter()
        .try_for_each(|finding| print(&mut out, finding, args.json))
        .and_then(|()| out.flush());
    if let Err(e) = printed {
        eprintln!("lynxo-keys: writing the findings: {e}");
        errors.fetch_add(1, Ordering::Relaxed);
    }
    let errors = errors.load(Ordering::Relaxed);
    if !findings.is_empty() {
        let files = {
            let mut paths: Vec<(&Option<String>, &str)> = findings
                .iter()
                .map(|f| (&f.commit, f.path.as_str()))
                .collect();
            paths.dedup();
            paths.len()
        };
        eprintln!(
            "lynxo-keys: {} Lynxo key{} found in {files} file{}: revoke {} in the dashboard \
             and remove {} (docs/secret-scanning.md)",
            findings.len(),
            plural(findings.len()),
            plural(files),
            if findings.len() == 1 { "it" } else { "them" },
            if findings.len() == 1 { "it" } else { "them" },
        );
        return Ok(ExitCode::from(1));
    }
    if errors > 0 {
        eprintln!("lynxo-keys: no key found, but {errors} error(s): the scan is incomplete");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Scans the lines git adds in `source`.
fn from_git(source: git::Source<'_>, paths: &[String]) -> Result<Vec<Finding>, git::GitError> {
    let mut findings = Vec::new();
    git::scan(Path::new("."), source, paths, |f| {
        findings.push(Finding {
            commit: f.commit,
            path: f.path,
            located: f.located,
            live: None,
        });
    })?;
    Ok(findings)
}

/// Scans files, trees and standard input; findings sorted by path and position.
fn from_paths(args: &ScanArgs, errors: &AtomicU64) -> Vec<Finding> {
    let findings = Mutex::new(Vec::new());
    let report = |path: &str, located: Located| {
        let finding = Finding {
            commit: None,
            path: path.to_owned(),
            located,
            live: None,
        };
        findings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(finding);
    };
    let fail = |what: &dyn std::fmt::Display| {
        eprintln!("lynxo-keys: {what}");
        errors.fetch_add(1, Ordering::Relaxed);
    };
    let (stdin, roots): (Vec<&String>, Vec<&String>) = args.paths.iter().partition(|p| *p == "-");
    if !stdin.is_empty() {
        let scanned = Scanner::default().scan(io::stdin().lock(), false, |l| report("-", l));
        if let Err(e) = scanned {
            fail(&format_args!("reading standard input: {e}"));
        }
    }
    // No path at all: the current directory, named as `rg` names it (without `./`).
    let implicit = args.paths.is_empty();
    let roots: Vec<&str> = if implicit {
        vec!["."]
    } else {
        roots.iter().map(|s| s.as_str()).collect()
    };
    if let Some((first, rest)) = roots.split_first() {
        let mut walk = WalkBuilder::new(first);
        for root in rest {
            walk.add(root);
        }
        let respect = !args.no_ignore;
        walk.hidden(false)
            .git_ignore(respect)
            .git_exclude(respect)
            .git_global(respect)
            .ignore(respect)
            .parents(respect)
            // A repository's own database is git's, not the project's files.
            .filter_entry(|entry| entry.file_name() != ".git")
            .threads(args.threads.unwrap_or(0));
        walk.build_parallel().run(|| {
            let mut scanner = Scanner::default();
            let (report, fail) = (&report, &fail);
            Box::new(move |entry| {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) => {
                        fail(&printable(&e.to_string()));
                        return WalkState::Continue;
                    }
                };
                if !entry.file_type().is_some_and(|t| t.is_file()) {
                    return WalkState::Continue;
                }
                let path = entry.path();
                let shown = path.to_string_lossy();
                let shown = match shown.strip_prefix("./") {
                    Some(rest) if implicit => rest,
                    _ => &shown,
                };
                let scanned = File::open(path)
                    .and_then(|file| scanner.scan(file, !args.binary, |l| report(shown, l)));
                match scanned {
                    Ok(Scanned::Whole | Scanned::Binary) => {}
                    Err(e) => fail(&format_args!("{}: {e}", printable(shown))),
                }
                WalkState::Continue
            })
        });
    }
    let mut findings = findings
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    findings.sort_by(|a, b| {
        (&a.path, a.located.line, a.located.column).cmp(&(
            &b.path,
            b.located.line,
            b.located.column,
        ))
    });
    findings
}

/// Asks the control plane about each distinct key once. After a failed call (a refused token,
/// the budget spent, no answer) it asks nothing more: the rest are `unknown`.
fn check_live(checker: &Checker, findings: &mut [Finding], errors: &AtomicU64) {
    let mut asked: Vec<(String, Liveness)> = Vec::new();
    let mut failed = false;
    for finding in findings.iter_mut() {
        let key = finding.located.hit.expose();
        let live = match asked.iter().find(|(k, _)| k == key) {
            Some((_, live)) => *live,
            None if failed => Liveness::Unknown,
            None => {
                let live = checker.check(key).unwrap_or_else(|e| {
                    eprintln!("lynxo-keys: {}", printable(&e.to_string()));
                    errors.fetch_add(1, Ordering::Relaxed);
                    failed = true;
                    Liveness::Unknown
                });
                asked.push((key.to_owned(), live));
                live
            }
        };
        finding.live = Some(live);
    }
}

/// `text` with control characters escaped: a file name (or an answer) from someone else's tree
/// cannot move the cursor or forge a line of output.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Prints one finding: `[commit ]path:line:column: hint (...)`, or a JSON line.
fn print(out: &mut impl Write, f: &Finding, json: bool) -> io::Result<()> {
    let hit = &f.located.hit;
    if json {
        let mut value = serde_json::json!({
            "path": f.path,
            "line": f.located.line,
            "column": f.located.column,
            "hint": hit.hint(),
            "environment": hit.environment.name(),
            "pieces": hit.pieces,
        });
        if let Some(commit) = &f.commit {
            value["commit"] = commit.as_str().into();
        }
        if let Some(live) = f.live {
            value["live"] = live.name().into();
        }
        return writeln!(out, "{value}");
    }
    let mut notes = vec![format!("{} key", hit.environment.tag())];
    if hit.pieces > 1 {
        notes.push(format!("split across {} string literals", hit.pieces));
    }
    if let Some(live) = f.live {
        notes.push(live.name().to_owned());
    }
    let commit = f
        .commit
        .as_deref()
        .map(|c| format!("{} ", &c[..c.len().min(12)]))
        .unwrap_or_default();
    writeln!(
        out,
        "{commit}{}:{}:{}: {} ({})",
        printable(&f.path),
        f.located.line,
        f.located.column,
        hit.hint(),
        notes.join(", ")
    )
}
