//! Keys in git history: the lines that the commits of a range add (`git log -p`), or that the
//! index adds (`git diff --cached`), with the commit, the file and the line in that file.
//!
//! The patch is read as a stream; each hunk's added lines are scanned together, so a key split
//! across string literals on consecutive added lines is found, and the hunk header's counts tell
//! where a hunk ends (a line added as `++ x` is not mistaken for a file header).

use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::find::{Located, Scanner};

/// What to read from git.
pub enum Source<'a> {
    /// The commits of a revision range (`origin/main..HEAD`; or revisions and `^exclusions`,
    /// as `git log` takes them).
    Range(&'a [String]),
    /// The changes staged for the next commit.
    Staged,
}

/// A key in an added line.
pub struct GitFinding {
    /// The commit that added it (`None` for staged changes).
    pub commit: Option<String>,
    /// The file, as git names it in the new tree.
    pub path: String,
    /// Where in it.
    pub located: Located,
}

/// Why the history could not be scanned.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The range looks like an option (git would read it as one), or is empty.
    #[error("the git range {0:?} is empty or starts with `-`")]
    RangeIsAnOption(String),
    /// git could not be run.
    #[error("running git: {0}")]
    Spawn(io::Error),
    /// git's output could not be read.
    #[error("reading git's output: {0}")]
    Read(io::Error),
    /// git ran and refused (a bad range, not a repository).
    #[error("git failed ({status}): {stderr}")]
    Failed {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
}

/// Runs git in `dir` and calls `found` for each key in an added line, in git's order (newest
/// commit first). `paths` limit the history to those paths, as git's pathspecs.
pub fn scan(
    dir: &Path,
    source: Source<'_>,
    paths: &[String],
    mut found: impl FnMut(GitFinding),
) -> Result<(), GitError> {
    let mut git = Command::new("git");
    git.current_dir(dir).args(["-c", "core.quotePath=false"]);
    // Fixed `a/` and `b/` prefixes whatever the user's diff configuration says.
    let patch_options = [
        "--src-prefix=a/",
        "--dst-prefix=b/",
        "--unified=0",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--no-renames",
    ];
    match source {
        Source::Range(range) => {
            if let Some(option) = range.iter().find(|r| r.starts_with('-') || r.is_empty()) {
                return Err(GitError::RangeIsAnOption(option.clone()));
            }
            // Each commit's own changes against its parent; `%x00` cannot start a patch line,
            // so it marks commits. A merge adds nothing of its own but conflict resolutions,
            // which its parents' commits do not show: a scan of the merged tree finds those.
            git.args(["log", "--format=%x00%H", "--patch", "--no-merges"])
                .args(patch_options)
                .arg("--end-of-options")
                .args(range);
        }
        Source::Staged => {
            git.args(["diff", "--cached"]).args(patch_options);
        }
    }
    git.arg("--")
        .args(paths)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = git.spawn().map_err(GitError::Spawn)?;
    let stdout = child.stdout.take().ok_or_else(|| {
        GitError::Spawn(io::Error::other("git's standard output was not captured"))
    })?;
    // git's complaints are short; read them on a thread so a full pipe cannot block it.
    let stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut e) = stderr {
            let _ = io::Read::read_to_string(&mut e, &mut text);
        }
        text
    });
    let parsed = read_patch(BufReader::new(stdout), &mut found);
    let status = child.wait().map_err(GitError::Spawn)?;
    let stderr = errors.join().unwrap_or_default();
    parsed.map_err(GitError::Read)?;
    if !status.success() {
        return Err(GitError::Failed {
            status,
            stderr: stderr.trim().to_owned(),
        });
    }
    Ok(())
}

/// Where the reader is in a patch.
struct Hunk {
    /// Old-side and new-side lines still to come.
    old_left: u64,
    new_left: u64,
    /// New-side number of the first line in `added`.
    first_line: u64,
    /// The hunk's added lines so far, each with its newline.
    added: Vec<u8>,
}

/// Reads a patch stream and calls `found` for each key in its added lines.
fn read_patch(mut reader: impl BufRead, found: &mut impl FnMut(GitFinding)) -> io::Result<()> {
    let mut scanner = Scanner::default();
    let mut commit: Option<String> = None;
    let mut path: Option<String> = None;
    let mut hunk: Option<Hunk> = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if let Some(h) = hunk.as_mut() {
            match line.first() {
                Some(b'+') => {
                    h.added.extend_from_slice(&line[1..]);
                    if !line.ends_with(b"\n") {
                        h.added.push(b'\n');
                    }
                    h.new_left = h.new_left.saturating_sub(1);
                    // A huge hunk (a generated file) is scanned in parts, at line ends, so
                    // memory stays bounded by the longest line.
                    if h.added.len() >= crate::find::CHUNK {
                        if let Some(path) = path.as_ref() {
                            scan_hunk(&mut scanner, h, commit.as_deref(), path, found)?;
                        }
                        let lines = memchr::memchr_iter(b'\n', &h.added).count() as u64;
                        h.first_line += lines;
                        h.added.clear();
                    }
                }
                Some(b'-') => h.old_left = h.old_left.saturating_sub(1),
                Some(b' ') => {
                    h.old_left = h.old_left.saturating_sub(1);
                    h.new_left = h.new_left.saturating_sub(1);
                }
                // `\ No newline at end of file`: no line of either side.
                _ => {}
            }
            if h.old_left == 0 && h.new_left == 0 {
                if let (Some(h), Some(path)) = (hunk.take(), path.as_ref()) {
                    scan_hunk(&mut scanner, &h, commit.as_deref(), path, found)?;
                }
            }
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if let Some(hash) = text.strip_prefix('\0') {
            commit = Some(hash.to_owned());
            path = None;
        } else if text.starts_with("diff --git ") {
            path = None;
        } else if let Some(new) = text.strip_prefix("+++ ") {
            path = new_path(new);
        } else if let Some(header) = text.strip_prefix("@@ ") {
            if let Some((first_line, old_left, new_left)) = hunk_counts(header) {
                let h = Hunk {
                    old_left,
                    new_left,
                    first_line,
                    added: Vec::new(),
                };
                if old_left == 0 && new_left == 0 {
                    continue;
                }
                hunk = Some(h);
            }
        }
    }
    Ok(())
}

/// The file a `+++` header names: `b/src/x.rs` gives `src/x.rs`; `/dev/null` (a deletion) none.
fn new_path(header: &str) -> Option<String> {
    let header = header.trim_end_matches('\t');
    if header == "/dev/null" {
        return None;
    }
    // A name git had to quote (a quote, a backslash or a control character in it).
    let unquoted = match header.strip_prefix('"').and_then(|h| h.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => header.to_owned(),
    };
    Some(
        unquoted
            .strip_prefix("b/")
            .map_or(unquoted.clone(), str::to_owned),
    )
}

/// `-a[,b] +c[,d] @@ ...` gives (c, b, d): the new side's first line and both sides' counts.
fn hunk_counts(header: &str) -> Option<(u64, u64, u64)> {
    let mut words = header.split(' ');
    let count = |range: &str| -> Option<(u64, u64)> {
        let (start, len) = range.split_once(',').unwrap_or((range, "1"));
        Some((start.parse().ok()?, len.parse().ok()?))
    };
    let (_, old_len) = count(words.next()?.strip_prefix('-')?)?;
    let (new_start, new_len) = count(words.next()?.strip_prefix('+')?)?;
    Some((new_start, old_len, new_len))
}

/// Scans one hunk's added lines and reports each key with its line in the new file.
fn scan_hunk(
    scanner: &mut Scanner,
    hunk: &Hunk,
    commit: Option<&str>,
    path: &str,
    found: &mut impl FnMut(GitFinding),
) -> io::Result<()> {
    scanner.scan(&hunk.added[..], false, |mut located| {
        located.line += hunk.first_line - 1;
        found(GitFinding {
            commit: commit.map(str::to_owned),
            path: path.to_owned(),
            located,
        });
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunk_headers_and_paths_read_as_git_writes_them() {
        assert_eq!(hunk_counts("-3,2 +4,5 @@ fn x()"), Some((4, 2, 5)));
        assert_eq!(hunk_counts("-0,0 +1 @@"), Some((1, 0, 1)));
        assert_eq!(hunk_counts("-1 +0,0 @@"), Some((0, 1, 0)));
        assert_eq!(hunk_counts("nonsense"), None);
        assert_eq!(new_path("b/src/a b.rs"), Some("src/a b.rs".to_owned()));
        assert_eq!(new_path("\"b/q\\\"x\""), Some("q\"x".to_owned()));
        assert_eq!(new_path("/dev/null"), None);
    }

    #[test]
    fn added_lines_only_with_their_new_line_numbers() {
        let key = crate::find::tests::key(3);
        let (a, b) = key.split_at(40);
        let patch = format!(
            "\0c0ffee\n\ndiff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -10,2 +10,3 @@\n-{key}\n-old\n+++ {key}\n+\"{a}\"\n+  \"{b}\"\n@@ -30 +31,0 @@\n-{key}\ndiff --git a/y b/y\n--- a/y\n+++ /dev/null\n@@ -1 +0,0 @@\n-{key}\n"
        );
        let mut got = Vec::new();
        read_patch(patch.as_bytes(), &mut |f: GitFinding| {
            got.push((
                f.commit.unwrap(),
                f.path,
                f.located.line,
                f.located.column,
                f.located.hit.pieces,
            ))
        })
        .unwrap();
        assert_eq!(
            got,
            [
                ("c0ffee".to_owned(), "x".to_owned(), 10, 4, 1),
                ("c0ffee".to_owned(), "x".to_owned(), 11, 2, 2),
            ]
        );
    }

    #[test]
    fn a_huge_hunk_is_scanned_in_parts_with_its_line_numbers() {
        let key = crate::find::tests::key(4);
        let filler = 1_000_000_u64;
        let mut patch = format!("\0abc\n+++ b/gen\n@@ -0,0 +1,{} @@\n", filler + 2);
        patch.push_str(&"+0123456789\n".repeat(filler as usize));
        patch.push_str(&format!("+{key}\n+ {key}\n"));
        let mut got = Vec::new();
        read_patch(patch.as_bytes(), &mut |f: GitFinding| {
            got.push((f.located.line, f.located.column))
        })
        .unwrap();
        assert!(patch.len() > crate::find::CHUNK);
        assert_eq!(got, [(filler + 1, 1), (filler + 2, 2)]);
    }
}
