//! The key cap under concurrency, over real sockets (finding 3 of issue 10): many clients
//! creating, rotating and revoking keys at once against the real service on loopback, each
//! request its own HTTP connection, with the real database and its group commit.
//!
//! Whatever the interleaving: creates stop at the plan's cap counting keys in a rotation's
//! grace, rotations at the cap succeed, a chain never has more than one key in grace, every key
//! of a chain spends one budget, and `active_keys` is the number of keys that work.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use common::TestApp;
use control::app;
use serde_json::{Value, json};

/// The service on a loopback port, served by the test's runtime.
async fn serve(app_: &TestApp) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(app_.state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    format!("http://{addr}")
}

/// A blocking client: one connection per request, statuses as values.
struct Http {
    base: String,
    token: String,
}

impl Http {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections(0)
            .build()
            .into();
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let sent = match (method, body) {
            ("GET", _) => agent.get(&url).header("authorization", &auth).call(),
            (_, body) => agent
                .post(&url)
                .header("authorization", &auth)
                .content_type("application/json")
                .send(body.unwrap_or(json!({})).to_string()),
        };
        let mut response = sent.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn create(&self, name: &str) -> (u16, Value) {
        self.call(
            "POST",
            "/v1/keys",
            Some(json!({ "name": name, "environment": "production", "permission": "read_only" })),
        )
    }

    fn rotate(&self, id: &str) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/v1/keys/{id}/rotate"),
            Some(json!({ "grace_period_seconds": 30 * 86_400 })),
        )
    }

    fn revoke(&self, id: &str) -> u16 {
        self.call(
            "POST",
            &format!("/v1/keys/{id}/revoke"),
            Some(json!({ "reason": "test" })),
        )
        .0
    }

    /// Every key, and the list's counts.
    fn keys(&self) -> (Vec<Value>, u64, u64) {
        let (status, list) = self.call("GET", "/v1/keys?limit=1000", None);
        assert_eq!(status, 200, "{list}");
        (
            list["data"].as_array().cloned().unwrap_or_default(),
            list["active_keys"].as_u64().unwrap_or(0),
            list["rotating_keys"].as_u64().unwrap_or(0),
        )
    }
}

/// The first key of each key's rotation chain, by the `rotated_from` links.
fn roots(keys: &[Value]) -> HashMap<String, String> {
    let from: HashMap<&str, &str> = keys
        .iter()
        .filter_map(|k| Some((k["id"].as_str()?, k["rotated_from"].as_str()?)))
        .collect();
    keys.iter()
        .filter_map(|k| k["id"].as_str())
        .map(|id| {
            let mut root = id;
            while let Some(parent) = from.get(root) {
                root = parent;
            }
            (id.to_owned(), root.to_owned())
        })
        .collect()
}

/// Checks the rule on the stored keys; returns (working keys, chains with a working key).
fn check_the_rule(http: &Http) -> (u64, u64) {
    let (keys, active_keys, rotating_keys) = http.keys();
    let roots = roots(&keys);
    let mut per_chain: HashMap<&str, (u32, u32)> = HashMap::new();
    let mut working = 0;
    let mut rotating = 0;
    for k in &keys {
        let status = k["status"].as_str().unwrap_or_default();
        if status != "active" && status != "rotating" {
            continue;
        }
        working += 1;
        let entry = per_chain
            .entry(roots[k["id"].as_str().unwrap_or_default()].as_str())
            .or_default();
        if status == "active" {
            entry.0 += 1;
        } else {
            rotating += 1;
            entry.1 += 1;
        }
    }
    for (root, (active, in_grace)) in &per_chain {
        assert!(*active <= 1, "chain {root} has {active} active keys");
        assert!(*in_grace <= 1, "chain {root} has {in_grace} keys in grace");
    }
    assert_eq!(active_keys, working, "active_keys is every key that works");
    assert_eq!(rotating_keys, rotating);
    assert!(per_chain.len() <= 50, "{} chains", per_chain.len());
    (working, per_chain.len() as u64)
}

/// Every key spends its chain's budget: its first key's.
fn check_budgets(http: &Http) {
    let (keys, _, _) = http.keys();
    let roots = roots(&keys);
    for k in &keys {
        let id = k["id"].as_str().unwrap_or_default();
        assert_eq!(k["rate_limit_budget"], roots[id].as_str(), "{k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creates_and_rotations_at_the_cap_in_parallel_never_multiply_keys_or_budgets() {
    let test = TestApp::new();
    let http = Http {
        base: serve(&test).await,
        token: test.alice_token.clone(),
    };
    tokio::task::spawn_blocking(move || {
        // 70 creates from 14 clients at once: exactly the plan's 50 succeed.
        let created = Mutex::new(Vec::new());
        let refused = Mutex::new(0);
        std::thread::scope(|s| {
            for c in 0..14 {
                let (http, created, refused) = (&http, &created, &refused);
                s.spawn(move || {
                    for i in 0..5 {
                        match http.create(&format!("key {c}.{i}")) {
                            (201, k) => created
                                .lock()
                                .unwrap()
                                .push(k["id"].as_str().unwrap().to_owned()),
                            (409, p) => {
                                assert_eq!(p["code"], "active_key_limit_reached", "{p}");
                                *refused.lock().unwrap() += 1;
                            }
                            (status, body) => panic!("create: {status} {body}"),
                        }
                    }
                });
            }
        });
        let ids = created.into_inner().unwrap();
        assert_eq!((ids.len(), refused.into_inner().unwrap()), (50, 20));
        assert_eq!(check_the_rule(&http), (50, 50));

        // At the cap, at once: 8 clients each rotate their own chain five times, 2 clients
        // race to rotate the same key, 3 clients keep creating.
        let rotated = Mutex::new(0);
        let raced = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for chain in ids.iter().take(8) {
                let (http, rotated) = (&http, &rotated);
                s.spawn(move || {
                    let mut newest = chain.clone();
                    for _ in 0..5 {
                        let (status, body) = http.rotate(&newest);
                        assert_eq!(status, 201, "rotation at the cap: {body}");
                        newest = body["key"]["id"].as_str().unwrap().to_owned();
                        *rotated.lock().unwrap() += 1;
                    }
                });
            }
            for _ in 0..2 {
                let (http, raced, id) = (&http, &raced, &ids[20]);
                s.spawn(move || raced.lock().unwrap().push(http.rotate(id)));
            }
            for c in 0..3 {
                let http = &http;
                s.spawn(move || {
                    for i in 0..10 {
                        let (status, body) = http.create(&format!("late {c}.{i}"));
                        assert_eq!(status, 409, "a create past the cap: {body}");
                    }
                });
            }
        });
        assert_eq!(rotated.into_inner().unwrap(), 40);
        let mut raced: Vec<u16> = raced.into_inner().unwrap().iter().map(|r| r.0).collect();
        raced.sort_unstable();
        assert_eq!(raced, [201, 409], "one rotation of a key wins");
        // 50 budgets; 9 chains with one key in grace each (the 32 earlier graces ended).
        assert_eq!(check_the_rule(&http), (59, 50));
        check_budgets(&http);

        // Revoking frees slots only once the count, graces included, is below the cap: revoke
        // 14 of the keys that work, then 20 creates at once get exactly the 5 free slots.
        let (keys, _, _) = http.keys();
        let victims: Vec<String> = keys
            .iter()
            .filter(|k| k["status"] == "rotating")
            .chain(keys.iter().filter(|k| k["status"] == "active"))
            .take(14)
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect();
        let won = Mutex::new(0);
        std::thread::scope(|s| {
            for id in &victims {
                let http = &http;
                s.spawn(move || assert_eq!(http.revoke(id), 200));
            }
        });
        assert_eq!(check_the_rule(&http).0, 45);
        std::thread::scope(|s| {
            for c in 0..20 {
                let (http, won) = (&http, &won);
                s.spawn(move || match http.create(&format!("refill {c}")) {
                    (201, _) => *won.lock().unwrap() += 1,
                    (409, _) => {}
                    (status, body) => panic!("create: {status} {body}"),
                });
            }
        });
        assert_eq!(won.into_inner().unwrap(), 5);
        assert_eq!(check_the_rule(&http).0, 50);
    })
    .await
    .unwrap();
}
