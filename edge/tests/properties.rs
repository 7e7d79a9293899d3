//! Property tests of the worker's request handling, natively: arbitrary `Authorization` headers,
//! query strings, paths, methods and sync pushes never panic, and every refusal is a well-formed
//! problem document.

use edge::cache::ShardCache;
use edge::config::Config;
use edge::decide::{Incoming, RevocationStatus, decide};
use edge::problem::{PROBLEM_JSON, Reply};
use edge::testing::config;
use edge::{forward, sync};
use proptest::prelude::*;
use shared::key::{self, Claims, Environment, KeyId};
use shared::revocation::shard_of;
use shared::scope::ScopeSet;

const NOW: u64 = 1_800_000_000;

fn valid_key(cfg: &Config, environment: Environment, scopes: u32) -> String {
    let claims = Claims {
        kid: 1,
        account_id: 5,
        key_id: KeyId([0x42; 16]),
        environment,
        scopes: ScopeSet::from_bits(scopes).unwrap_or(ScopeSet::FULL_ACCESS),
        issued_at: NOW - 10,
        expires_at: None,
    };
    key::issue(&claims, &cfg.keyring)
        .expect("issue")
        .into_inner()
}

/// An `Authorization` value: random text, or a real key with a random scheme and edits.
fn authorization() -> impl Strategy<Value = Option<String>> {
    let env = prop_oneof![
        Just(Environment::Production),
        Just(Environment::Development),
        Just(Environment::Staging)
    ];
    let real = (
        prop_oneof![
            "Bearer",
            "bearer",
            "BEARER",
            "Basic",
            "",
            "Bearer ",
            "[A-Za-z]{0,8}"
        ],
        env,
        any::<u32>(),
        proptest::collection::vec((any::<usize>(), any::<char>()), 0..3),
        prop_oneof![Just(""), Just(" "), Just(", Bearer x"), Just("\t")],
    )
        .prop_map(|(scheme, env, scopes, edits, suffix)| {
            let mut key: Vec<char> = valid_key(&config(), env, scopes).chars().collect();
            for (at, c) in edits {
                let at = at % key.len();
                key[at] = c;
            }
            let key: String = key.into_iter().collect();
            format!("{scheme} {key}{suffix}")
        });
    prop_oneof![
        Just(None),
        any::<String>().prop_map(Some),
        "(?i)bearer +[ -~]{0,120}".prop_map(Some),
        real.prop_map(Some),
        Just(Some("x".repeat(5_000))),
    ]
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_owned()),
        Just("HEAD".to_owned()),
        Just("POST".to_owned()),
        Just("DELETE".to_owned()),
        Just("PATCH".to_owned()),
        "[A-Za-z]{0,10}",
        any::<String>(),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/v1/jobs".to_owned()),
        "/v1/(jobs|files|webhooks|account|usage)(/[a-z0-9{}%.]{0,8}){0,3}",
        "/[ -~]{0,40}",
        any::<String>(),
    ]
}

fn status() -> impl Strategy<Value = RevocationStatus> {
    prop_oneof![
        Just(RevocationStatus::Clear),
        Just(RevocationStatus::Revoked),
        Just(RevocationStatus::Unavailable),
    ]
}

fn assert_problem(reply: &Reply) {
    assert!(
        matches!(reply.status, 400 | 401 | 403 | 404 | 405 | 500 | 503),
        "{reply:?}"
    );
    assert_eq!(reply.header("content-type"), Some(PROBLEM_JSON));
    let body: serde_json::Value = serde_json::from_str(&reply.body).expect("problem is JSON");
    assert_eq!(body["status"], reply.status);
    assert!(body["code"].is_string() && body["type"].is_string());
    if reply.status == 401 {
        assert!(reply.header("www-authenticate").is_some());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn request_handling_never_panics(
        method in method(),
        path in path(),
        authorization in authorization(),
        query in proptest::option::of(prop_oneof![any::<String>(), "(api_key|access_token|a)=[ -~]{0,110}(&api_key=x)?"]),
        status in status(),
        now in prop_oneof![Just(NOW), any::<u64>()],
    ) {
        let cfg = config();
        let req = Incoming {
            method: &method,
            path: &path,
            query: query.as_deref(),
            authorization: authorization.as_deref(),
        };
        match decide(&req, &cfg, now, |id| {
            assert!(shard_of(id, cfg.shard_count) < cfg.shard_count);
            status
        }).answer {
            Ok(admitted) => {
                prop_assert_eq!(status, RevocationStatus::Clear);
                prop_assert_eq!(admitted.identity.environment, Environment::Production);
                let client = vec![
                    ("Lynxo-Account-Id".to_owned(), "1".to_owned()),
                    ("x-lynxo-anything".to_owned(), "1".to_owned()),
                    ("authorization".to_owned(), authorization.clone().unwrap_or_default()),
                ];
                let id = shared::identity::RequestId([1; 16]);
                let plan = forward::plan(&cfg, &req, &admitted, client, 0, id, now);
                prop_assert!(plan.is_some(), "an admitted request has an origin URL");
                let plan = plan.unwrap_or_else(|| unreachable!());
                let accounts = plan.headers.iter().filter(|(n, _)| n == "lynxo-account-id").count();
                prop_assert_eq!(accounts, 1);
                prop_assert!(plan.headers.iter().all(|(n, _)| n != "authorization" && n != "x-lynxo-anything"));
                prop_assert!(!plan.url.contains("api_key=") && !plan.url.contains("access_token="));
            }
            Err(reply) => assert_problem(&reply),
        }
    }

    #[test]
    fn sync_pushes_never_panic(
        method in prop_oneof![Just("PUT".to_owned()), method()],
        index in prop_oneof!["[0-9]{1,6}", any::<String>()],
        signature in proptest::option::of(prop_oneof![any::<String>(), "t=[0-9]{1,12},kid=[0-9]{1,3},v1=[0-9a-f]{64}"]),
        body in proptest::collection::vec(any::<u8>(), 0..200),
        now in any::<u64>(),
    ) {
        let cfg = config();
        let framing = edge::body::Framing {
            content_length: Some(index.as_str()),
            transfer_encoding: signature.as_deref(),
        };
        let _ = sync::check_before_body(&cfg, framing, signature.as_deref(), now);
        let _ = edge::body::request_body_length(&method, framing, body.is_empty());
        let _ = sync::check_push(&cfg, &method, &index, signature.as_deref(), &body, now);
        let signed = sync::sign_push(&cfg.keyring, 0, &body, NOW);
        prop_assert!(sync::check_push(&cfg, "PUT", "0", Some(&signed), &body, NOW).is_err());
        let mut cache = ShardCache::default();
        let _ = cache.record_read(0, cfg.shard_count, Some(&body), &cfg.keyring, now);
        let _ = cache.status(0, KeyId([0; 16]), now);
    }

    /// Arbitrary limits pushes never panic; a signed one is either refused with a problem or
    /// yields only entries that are valid (a key id and a checked policy).
    #[test]
    fn limits_pushes_never_panic(
        method in prop_oneof![Just("PUT".to_owned()), method()],
        signature in proptest::option::of(any::<String>()),
        body in prop_oneof![
            any::<String>(),
            r#"\{"limits":\[(\{"key_id":"[0-9a-fA-F]{0,33}","limit":-?[0-9]{1,11},"window":-?[0-9]{1,7},"version":[0-9]{1,21}\},?){0,3}\]\}"#,
        ],
        now in any::<u64>(),
    ) {
        let cfg = config();
        let _ = sync::check_limits_push(&cfg, &method, signature.as_deref(), body.as_bytes(), now);
        let signed = shared::limits::sign_push(&cfg.keyring, body.as_bytes(), NOW);
        match sync::check_limits_push(&cfg, "PUT", Some(&signed), body.as_bytes(), NOW) {
            Ok(entries) => {
                for entry in entries {
                    prop_assert!(entry.policy.check().is_ok());
                    prop_assert!(body.contains(&entry.key_id.to_string()));
                }
            }
            Err(reply) => {
                prop_assert_eq!(reply.status, 400);
                assert_problem(&reply);
            }
        }
    }

    /// The RateLimit header fields and the 429 are well-formed for any numbers.
    #[test]
    fn rate_limit_answers_are_well_formed(
        limit in 1..u32::MAX,
        window in 1..=shared::limits::MAX_WINDOW,
        remaining in any::<u32>(),
        reset_ms in any::<u64>(),
        retry_ms in any::<u64>(),
        per_minute in proptest::option::of(1..u32::MAX),
        now_ms in any::<u64>(),
    ) {
        let status = edge::limit::Status { limit, window, remaining, reset_ms, retry_ms, per_minute };
        let [(_, policy), (_, current)] = status.headers(now_ms);
        let mut expected = format!("\"default\";q={limit};w={window}");
        if let Some(cap) = per_minute {
            expected.push_str(&format!(", \"minute\";q={cap};w=60"));
        }
        prop_assert_eq!(policy, expected);
        prop_assert!(current.starts_with("\"default\";r="));
        let reply = edge::limit::exceeded(&status, now_ms);
        prop_assert_eq!(reply.status, 429);
        prop_assert_eq!(reply.header("content-type"), Some(PROBLEM_JSON));
        let retry: u64 = reply.header("retry-after").unwrap_or("").parse().unwrap_or(0);
        prop_assert!(retry >= 1);
        let body: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
        prop_assert_eq!(&body["code"], "rate_limit_exceeded");
        prop_assert_eq!(body["retry_after"].as_u64(), Some(retry));
        let refused = edge::limit::refused_exceeded(&status, now_ms);
        prop_assert_eq!(refused.status, 429);
        prop_assert!(refused.header("retry-after").is_some());
        prop_assert!(refused.header("ratelimit").is_none());
    }
}
