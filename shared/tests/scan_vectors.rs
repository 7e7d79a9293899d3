//! Holds `shared::scan` to the committed key vectors (`tests/vectors/lynxo-v1.json`): what is
//! known without a secret. The JavaScript package's tests (`js/test/vectors.test.mjs`) expect the
//! same answers from the same file, so `inspectKey` and `findKeys` answer as this crate does.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::Value;
use shared::key::{self, Environment};
use shared::mac::{Keyring, Secret};
use shared::scan::{find_keys, inspect};

const VECTORS: &str = include_str!("vectors/lynxo-v1.json");

/// The cases of one list of the vectors file, as (name, text, the rest).
fn cases(list: &str) -> Vec<(String, String, Value)> {
    let v: Value = serde_json::from_str(VECTORS).expect("vectors file parses");
    let text = |c: &Value, field: &str| c[field].as_str().expect(field).to_owned();
    v[list]
        .as_array()
        .expect(list)
        .iter()
        .map(|c| (text(c, "name"), text(c, "text"), c.clone()))
        .collect()
}

#[test]
fn valid_keys_inspect_and_are_found() {
    for (name, text, case) in cases("valid_keys") {
        let environment = case["claims"]["environment"].as_str().expect("environment");
        let inspection = inspect(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            Some(inspection.environment),
            Environment::from_name(environment),
            "{name}"
        );
        assert_eq!(inspection.hint, key::hint(&text), "{name}");
        let within = format!("token = \"{text}\"\n");
        let found = find_keys(&within);
        assert_eq!(found.len(), 1, "{name}");
        assert_eq!(
            (found[0].text, found[0].start),
            (text.as_str(), 9),
            "{name}"
        );
    }
}

#[test]
fn invalid_keys_fail_inspection_only_for_what_needs_no_secret() {
    let foreign = Keyring::new(1, &[(1, Secret::new(vec![0x5a; 32]).unwrap())]).unwrap();
    let mut public = 0;
    for (name, text, case) in cases("invalid_keys") {
        match inspect(&text) {
            // A refusal is the vector's own error: the first check the text fails.
            Err(e) => {
                public += 1;
                assert_eq!(e.code(), case["error"], "{name}");
            }
            // A text that passes inspection is refused only with a secret: under a keyring
            // that holds none of the vectors' secrets it looks forged.
            Ok(_) => {
                let now = case["now"].as_u64().expect("now");
                let e = key::verify(&text, &foreign, now).expect_err(&name);
                assert!(e.is_forgery_class(), "{name}: {e:?}");
            }
        }
        // The scanner finds exactly the words that inspect as keys (a key pasted with
        // `Bearer `, or with a space around it, is still a key; a forgery looks like one).
        let words: Vec<&str> = text
            .split_whitespace()
            .filter(|w| inspect(w).is_ok())
            .collect();
        let found: Vec<&str> = find_keys(&text).iter().map(|f| f.text).collect();
        assert_eq!(found, words, "{name}");
    }
    assert!(public >= 10, "{public} vectors fail without a secret");
}
