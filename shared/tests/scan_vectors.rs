//! Holds `shared::scan` to the committed key vectors (`tests/vectors/lynxo-v1.json`): what is
//! known without a secret. The JavaScript package's tests (`js/test/vectors.test.mjs`) apply the
//! same rule to the same file, so `inspectKey` and `findKeys` answer as this crate does.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde::Deserialize;
use shared::key::Environment;
use shared::scan::{find_keys, inspect};

const VECTORS: &str = include_str!("vectors/lynxo-v1.json");

/// The errors found without a secret: an invalid key vector with one of these fails
/// inspection with it; any other (forged, tampered, expired, ...) passes inspection.
const FOUND_WITHOUT_SECRET: [&str; 6] = [
    "surrounding_whitespace",
    "missing_prefix",
    "invalid_character",
    "invalid_length",
    "invalid_checksum",
    "unknown_environment",
];

#[derive(Deserialize)]
struct Vectors {
    valid_keys: Vec<Valid>,
    invalid_keys: Vec<Invalid>,
}

#[derive(Deserialize)]
struct Valid {
    name: String,
    text: String,
    claims: ValidClaims,
}

#[derive(Deserialize)]
struct ValidClaims {
    environment: String,
}

#[derive(Deserialize)]
struct Invalid {
    name: String,
    text: String,
    error: String,
}

fn vectors() -> Vectors {
    serde_json::from_str(VECTORS).expect("vectors file parses")
}

#[test]
fn valid_keys_inspect_and_are_found() {
    for case in vectors().valid_keys {
        let want = Environment::from_name(&case.claims.environment).unwrap();
        let inspection = inspect(&case.text).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(inspection.environment, want, "{}", case.name);
        assert_eq!(
            inspection.hint,
            shared::key::hint(&case.text),
            "{}",
            case.name
        );
        let text = format!("token = \"{}\"\n", case.text);
        let found = find_keys(&text);
        assert_eq!(found.len(), 1, "{}", case.name);
        assert_eq!((found[0].text, found[0].start), (case.text.as_str(), 9));
    }
}

#[test]
fn invalid_keys_fail_inspection_only_for_what_needs_no_secret() {
    let v = vectors();
    let mut public = 0;
    for case in &v.invalid_keys {
        let outcome = inspect(&case.text);
        if FOUND_WITHOUT_SECRET.contains(&case.error.as_str()) {
            public += 1;
            assert_eq!(
                outcome.map_err(|e| e.code()),
                Err(case.error.as_str()),
                "{}",
                case.name
            );
        } else {
            assert!(outcome.is_ok(), "{}: {outcome:?}", case.name);
        }
        // The scanner finds exactly the words that inspect as keys (a key pasted with
        // `Bearer `, or with a space around it, is still a key; a forgery looks like one).
        let words: Vec<&str> = case
            .text
            .split_whitespace()
            .filter(|w| inspect(w).is_ok())
            .collect();
        let found: Vec<&str> = find_keys(&case.text).iter().map(|f| f.text).collect();
        assert_eq!(found, words, "{}", case.name);
    }
    assert!(public >= 10, "{public} vectors fail without a secret");
}
