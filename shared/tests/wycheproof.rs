//! Google's Wycheproof HMAC-SHA256 vectors (Apache-2.0, `vectors/WYCHEPROOF-LICENSE`) against the
//! MAC this crate signs and verifies with, truncated tags included: a valid vector must verify at
//! its tag size and an invalid one (modified tag) must not.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde::Deserialize;
use shared::mac::MacKey;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    number_of_tests: usize,
    test_groups: Vec<Group>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Group {
    tag_size: usize,
    tests: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    tc_id: u32,
    key: String,
    msg: String,
    tag: String,
    result: String,
}

#[test]
fn all_wycheproof_hmac_sha256_vectors() {
    let file: File =
        serde_json::from_str(include_str!("vectors/wycheproof_hmac_sha256_test.json")).unwrap();
    let mut checked = 0;
    let mut truncated = 0;
    for group in &file.test_groups {
        let tag_len = group.tag_size / 8;
        for case in &group.tests {
            let key = MacKey::new(&hex::decode(&case.key).unwrap());
            let msg = hex::decode(&case.msg).unwrap();
            let tag = hex::decode(&case.tag).unwrap();
            let valid = case.result == "valid";
            assert_eq!(
                key.verify(&msg, &tag, tag_len),
                valid,
                "tcId {}",
                case.tc_id
            );
            if valid {
                assert_eq!(&key.sign(&msg)[..tag_len], &tag[..], "tcId {}", case.tc_id);
            }
            truncated += usize::from(tag_len < 32);
            checked += 1;
        }
    }
    assert_eq!(checked, 174);
    assert_eq!(checked, file.number_of_tests);
    assert!(truncated > 0);
}
