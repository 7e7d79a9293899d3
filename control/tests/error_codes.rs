//! Every problem `code` the service can answer is listed in `docs/control-plane.md`: the codes
//! are found where they are made (`AppError::new(StatusCode::..., "code", ...)` in
//! `control/src`), so a new one without a line in the docs fails here.

use std::path::Path;

fn sources(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(std::fs::read_to_string(&path).unwrap());
        }
    }
}

/// The string literal right after each `StatusCode::NAME,`.
fn codes(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("StatusCode::") {
        rest = &rest[at + "StatusCode::".len()..];
        let name_end = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .unwrap_or(rest.len());
        let after = rest[name_end..].trim_start();
        let Some(after) = after.strip_prefix(',') else {
            continue;
        };
        let Some(literal) = after.trim_start().strip_prefix('"') else {
            continue;
        };
        if let Some(end) = literal.find('"') {
            let code = &literal[..end];
            if !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                found.push(code.to_owned());
            }
        }
    }
    found
}

#[test]
fn every_error_code_the_service_makes_is_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut texts = Vec::new();
    sources(&root.join("src"), &mut texts);
    let mut all: Vec<String> = texts.iter().flat_map(|t| codes(t)).collect();
    all.sort();
    all.dedup();
    assert!(
        all.len() >= 20,
        "the scan found too few codes to be right: {all:?}"
    );
    for known in [
        "validation_failed",
        "not_found",
        "internal_error",
        "not_ready",
    ] {
        assert!(all.iter().any(|c| c == known), "the scan misses {known}");
    }
    let docs = std::fs::read_to_string(root.join("../docs/control-plane.md")).unwrap();
    let missing: Vec<_> = all
        .iter()
        .filter(|c| !docs.contains(&format!("`{c}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "codes not in docs/control-plane.md: {missing:?}"
    );
}
