//! Sign-in under attack, over real sockets: the control plane serves on loopback, clients connect
//! from chosen loopback addresses (127.0.0.2, 127.0.0.3, ...) so each is a different "address",
//! and the proxy tests put a real reverse proxy (a few lines of tokio) in front of it.
//!
//! Parallel guesses, floods of made-up emails, oversized emails, a guesser spread over many
//! addresses, and forged forwarding headers. See `docs/sign-in.md`.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use argon2::Params;
use common::{PASSWORD, TestApp};
use control::Clock as _;
use control::Settings;
use control::auth::hasher::HashStats;
use control::auth::limit::Census;
use control::auth::{self, EMAIL_FAILURES, PAIR_FAILURES};
use control::client_addr::{ForwardedHeader, TrustedProxies};
use control::store::StoreError;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A control plane serving on loopback, with alice and bob signed up. Its sign-in budgets are
/// in the ledger `serve` would use: memory on SQLite, the database on PostgreSQL.
struct Server {
    addr: SocketAddr,
    app: TestApp,
}

impl Server {
    fn stats(&self) -> HashStats {
        self.app.state.sign_in.hasher.stats()
    }

    /// What the sign-in ledger holds.
    async fn ledger(&self) -> Census {
        self.app.state.sign_in.ledger.census().await.unwrap()
    }
}

/// A hash slow enough that parallel requests overlap (a few ms in a debug build).
fn slow_params() -> Params {
    Params::new(2048, 1, 1, None).unwrap()
}

async fn serve(configure: impl FnOnce(&mut Settings) + 'static) -> Server {
    let app = TestApp::builder()
        .settings(|s| {
            s.argon2 = slow_params();
            s.sign_in_hashes = 4;
            configure(s);
        })
        .build();
    let addr = listen(app.state.clone()).await;
    Server { addr, app }
}

/// Serves `state`'s router on a loopback port.
async fn listen(state: control::AppState) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = control::app(state).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    addr
}

/// An HTTP answer.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }

    /// The `name=value` pair of a cookie this answer sets.
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.split(';').next().unwrap_or_default())
            .find(|pair| pair.starts_with(&format!("{name}=")))
            .map(str::to_owned)
    }

    /// Asserts a 429 problem with this code and a positive Retry-After.
    #[track_caller]
    fn assert_refused(&self, code: &str) {
        assert_eq!(self.status, 429, "{self:?}");
        assert_eq!(self.code(), code, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let retry: u64 = self.header("retry-after").unwrap().parse().unwrap();
        assert!(retry >= 1, "{self:?}");
    }
}

/// Connects to `to` from the loopback address `from`.
async fn connect(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// One HTTP/1.1 exchange on `stream`; the connection closes after it.
async fn exchange(mut stream: TcpStream, head: &str, body: &[u8]) -> Reply {
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let body = serde_json::from_slice(&raw[split + 4..]).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

fn request(body: &Value, extra: &[(&str, &str)]) -> (String, Vec<u8>) {
    let body = body.to_string().into_bytes();
    let mut head = format!(
        "POST /v1/sessions HTTP/1.1\r\nhost: keys.lynxo.test\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    (head, body)
}

/// `POST /v1/sessions` to `to`, from the address `from`, with extra headers.
async fn sign_in(to: SocketAddr, from: &str, body: Value, extra: &[(&str, &str)]) -> Reply {
    let (head, body) = request(&body, extra);
    exchange(connect(from.parse().unwrap(), to).await, &head, &body).await
}

fn creds(email: &str, password: &str) -> Value {
    json!({ "email": email, "password": password })
}

/// `n` sign-ins at once; the answers in order.
async fn burst(to: SocketAddr, requests: Vec<(String, Value)>) -> Vec<Reply> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(from, body)| tokio::spawn(async move { sign_in(to, &from, body, &[]).await }))
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_guesses_from_one_address_hash_at_most_the_limit() {
    let server = serve(|_| {}).await;
    let wrong = creds("alice@example.com", "wrong password!!");
    let mut failures = 0;
    let mut bursts = 0;
    // 15 wrong guesses at once, again and again: the budget is counted before each hash, so
    // however they interleave no more than the limit are ever hashed.
    loop {
        let replies = burst(
            server.addr,
            (0..15)
                .map(|_| ("127.0.0.2".to_owned(), wrong.clone()))
                .collect(),
        )
        .await;
        for r in &replies {
            match r.status {
                401 => failures += 1,
                429 => assert!(
                    ["too_many_sign_in_attempts", "sign_in_busy"].contains(&r.code()),
                    "{r:?}"
                ),
                _ => panic!("unexpected answer {r:?}"),
            }
        }
        let hashed = server.stats().started;
        assert!(
            failures <= PAIR_FAILURES && hashed <= u64::from(PAIR_FAILURES),
            "{failures} wrong guesses answered, {hashed} hashed, limit {PAIR_FAILURES}"
        );
        bursts += 1;
        if replies
            .iter()
            .all(|r| r.code() == "too_many_sign_in_attempts")
            || bursts == 30
        {
            break;
        }
    }
    assert_eq!(failures, PAIR_FAILURES, "the budget was spent");
    // The right password, alone or fifteen times at once, does not sign in from there now.
    sign_in(
        server.addr,
        "127.0.0.2",
        creds("alice@example.com", PASSWORD),
        &[],
    )
    .await
    .assert_refused("too_many_sign_in_attempts");
    let right = burst(
        server.addr,
        (0..15)
            .map(|_| ("127.0.0.2".to_owned(), creds("alice@example.com", PASSWORD)))
            .collect(),
    )
    .await;
    for r in &right {
        r.assert_refused("too_many_sign_in_attempts");
    }
    assert_eq!(server.stats().started, u64::from(PAIR_FAILURES));
    // The owner, from another address, still signs in: one address cannot lock them out.
    let owner = sign_in(
        server.addr,
        "127.0.0.3",
        creds("alice@example.com", PASSWORD),
        &[],
    )
    .await;
    assert_eq!(owner.status, 200, "{owner:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_guess_whose_client_hangs_up_is_counted_all_the_same() {
    let server = serve(|s| s.argon2 = Params::new(4096, 4, 1, None).unwrap()).await;
    let (head, body) = request(&creds("alice@example.com", "wrong password!!"), &[]);
    for i in 1..=u64::from(PAIR_FAILURES) {
        // Send a guess, and hang up once its hash has started.
        let mut stream = connect("127.0.0.2".parse().unwrap(), server.addr).await;
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&body).await.unwrap();
        let mut waited = 0;
        while server.stats().started != i {
            waited += 1;
            assert!(waited < 5000, "the hash never started");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        drop(stream);
        while server.stats().in_flight != 0 || server.ledger().await.in_flight != 0 {
            waited += 1;
            assert!(waited < 10_000, "the guess never settled");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    // Once the last one has settled, the address is out of guesses for alice.
    for _ in 0..200 {
        let r = sign_in(
            server.addr,
            "127.0.0.2",
            creds("alice@example.com", PASSWORD),
            &[],
        )
        .await;
        if r.code() != "sign_in_busy" {
            r.assert_refused("too_many_sign_in_attempts");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the last guess never settled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hashes_at_once_are_bounded_and_the_rest_are_refused_not_queued() {
    let server = serve(|s| s.sign_in_hashes = 2).await;
    let made_up = |i: usize| creds(&format!("nobody{i}@example.com"), "some password");
    // One address: it gets half the hashing slots (here one), the rest is refused at once.
    let one = burst(
        server.addr,
        (0..12)
            .map(|i| ("127.0.0.2".to_owned(), made_up(i)))
            .collect(),
    )
    .await;
    let stats = server.stats();
    assert_eq!(stats.peak_in_flight, 1, "{stats:?}");
    // Many addresses: never more than the global bound at once.
    let many = burst(
        server.addr,
        (0..40)
            .map(|i| (format!("127.0.1.{}", 10 + i), made_up(100 + i)))
            .collect(),
    )
    .await;
    let stats = server.stats();
    assert!(stats.peak_in_flight <= 2, "{stats:?}");
    assert!(stats.buffers <= 2, "argon2 memory is reused: {stats:?}");
    assert_eq!(stats.in_flight, 0);
    let mut hashed = 0;
    let mut busy = 0;
    for r in one.iter().chain(&many) {
        match r.status {
            401 => hashed += 1,
            _ => {
                r.assert_refused("sign_in_busy");
                assert_eq!(r.header("retry-after"), Some("1"));
                busy += 1;
            }
        }
    }
    assert_eq!(hashed, stats.started, "every 401 was hashed, nothing else");
    assert!(busy > 0, "a flood is refused, not queued");
    assert!(
        one.iter().any(|r| r.status == 429),
        "one address is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_known_device_signs_in_while_a_distributed_guesser_has_spent_the_email() {
    let server = serve(|_| {}).await;
    let owner = sign_in(
        server.addr,
        "127.0.0.2",
        creds("alice@example.com", PASSWORD),
        &[],
    )
    .await;
    assert_eq!(owner.status, 200, "{owner:?}");
    let device = owner.cookie("__Host-lynxo_device").unwrap();
    let set = owner
        .headers
        .iter()
        .find(|(n, v)| n.eq_ignore_ascii_case("set-cookie") && v.starts_with("__Host-lynxo_device"))
        .unwrap()
        .1
        .clone();
    for attribute in [
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=Strict",
        "Max-Age=",
    ] {
        assert!(set.contains(attribute), "{set}");
    }
    // A guesser on several addresses spends the budget unknown browsers share for this email.
    let wrong = creds("alice@example.com", "wrong password!!");
    let mut spent = 0;
    for from in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        loop {
            let r = sign_in(server.addr, from, wrong.clone(), &[]).await;
            if r.status == 429 {
                r.assert_refused("too_many_sign_in_attempts");
                break;
            }
            assert_eq!(r.status, 401, "{r:?}");
            spent += 1;
        }
    }
    assert_eq!(
        spent, EMAIL_FAILURES,
        "no more guesses than the email's budget"
    );
    // An unknown browser anywhere is now refused, right password or not...
    sign_in(
        server.addr,
        "127.0.0.6",
        creds("alice@example.com", PASSWORD),
        &[],
    )
    .await
    .assert_refused("too_many_sign_in_attempts");
    // ...but the owner's known browser signs in, even from the guesser's own address.
    let cookie = [("cookie", device.as_str())];
    let again = sign_in(
        server.addr,
        "127.0.0.5",
        creds("alice@example.com", PASSWORD),
        &cookie,
    )
    .await;
    assert_eq!(again.status, 200, "{again:?}");
    // The cookie counts for alice only: bob's budget is untouched, alice's cookie gives
    // nothing for bob, and it is no session.
    let bob = sign_in(
        server.addr,
        "127.0.0.6",
        creds("bob@example.com", PASSWORD),
        &cookie,
    )
    .await;
    assert_eq!(bob.status, 200, "{bob:?}");
    // A stolen device cookie is worth its own small budget, no more.
    let mut stolen = 0;
    loop {
        let r = sign_in(server.addr, "127.0.0.7", wrong.clone(), &cookie).await;
        if r.status == 429 {
            break;
        }
        assert_eq!(r.status, 401, "{r:?}");
        stolen += 1;
    }
    assert_eq!(stolen, auth::DEVICE_FAILURES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_emails_are_refused_before_any_work() {
    let server = serve(|_| {}).await;
    let long = |n: usize| format!("{}@example.com", "a".repeat(n - "@example.com".len()));
    for body in [
        creds(&"x".repeat(60_000), "some password"),
        creds(&long(255), "some password"),
        creds("not an email", "some password"),
        creds("alice@example.com", &"p".repeat(1025)),
        creds("alice@example.com", ""),
    ] {
        let r = sign_in(server.addr, "127.0.0.2", body, &[]).await;
        assert_eq!(r.status, 422, "{r:?}");
        assert_eq!(r.code(), "validation_failed");
    }
    assert_eq!(server.stats().started, 0);
    assert_eq!(
        server.ledger().await.entries,
        0,
        "no budget was named after them"
    );
    // 254 bytes is an email like any other: hashed, counted, 401.
    let r = sign_in(
        server.addr,
        "127.0.0.2",
        creds(&long(254), "some password"),
        &[],
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(server.stats().started, 1);
    assert_eq!(
        server.ledger().await.entries,
        2,
        "the email's budget and its pair's"
    );
}

/// A reverse proxy on 127.0.0.1 that forwards each connection to `backend`, appending the
/// client's address to `X-Forwarded-For` as nginx's `$proxy_add_x_forwarded_for` does.
async fn reverse_proxy(backend: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut client, peer) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0_u8; 4096];
                let split = loop {
                    let n = client.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the client closed before its headers ended");
                    raw.extend_from_slice(&buf[..n]);
                    if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i;
                    }
                };
                let head = String::from_utf8(raw[..split].to_vec()).unwrap();
                let mut forwarded = None;
                let mut lines: Vec<String> = Vec::new();
                for line in head.split("\r\n") {
                    match line.split_once(':') {
                        Some((n, v)) if n.eq_ignore_ascii_case("x-forwarded-for") => {
                            forwarded = Some(v.trim().to_owned());
                        }
                        _ => lines.push(line.to_owned()),
                    }
                }
                let chain = match forwarded {
                    Some(earlier) => format!("{earlier}, {}", peer.ip()),
                    None => peer.ip().to_string(),
                };
                lines.push(format!("x-forwarded-for: {chain}"));
                let mut upstream = TcpStream::connect(backend).await.unwrap();
                upstream
                    .write_all(format!("{}\r\n\r\n", lines.join("\r\n")).as_bytes())
                    .await
                    .unwrap();
                upstream.write_all(&raw[split + 4..]).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    addr
}

/// Alice's failed sign-ins in her audit trail: their `source`s, oldest first.
async fn failed_sign_in_sources(server: &Server, count: usize) -> Vec<Value> {
    let account = server.app.alice_account;
    for _ in 0..500 {
        let sources: Vec<Value> = server
            .app
            .state
            .store
            .read_blocking::<_, StoreError, _>(move |c| {
                control::store::audit::list(c, account, None, None, 1000)
            })
            .unwrap()
            .into_iter()
            .rev()
            .filter(|e| e.action == "user.sign_in_failed")
            .map(|e| e.source.map_or(Value::Null, Value::String))
            .collect();
        if sources.len() >= count {
            return sources;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{count} failed sign-ins were not recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_a_trusted_proxy_each_client_has_its_own_address() {
    let server = serve(|s| {
        s.proxies = TrustedProxies::new(
            vec!["127.0.0.1".parse().unwrap()],
            ForwardedHeader::XForwardedFor,
        );
    })
    .await;
    let proxy = reverse_proxy(server.addr).await;
    // 25 failures through the proxy from one client, over made-up emails and alice's...
    for i in 0..20 {
        let r = sign_in(
            proxy,
            "127.0.0.2",
            creds(&format!("x{i}@example.com"), "guess guess"),
            &[],
        )
        .await;
        assert_eq!(r.status, 401, "{r:?}");
    }
    for _ in 0..PAIR_FAILURES {
        let r = sign_in(
            proxy,
            "127.0.0.2",
            creds("alice@example.com", "guess guess"),
            &[],
        )
        .await;
        assert_eq!(r.status, 401, "{r:?}");
    }
    sign_in(
        proxy,
        "127.0.0.2",
        creds("alice@example.com", PASSWORD),
        &[],
    )
    .await
    .assert_refused("too_many_sign_in_attempts");
    // ...block nobody else behind the same proxy, and not another email from that client.
    for (from, email) in [
        ("127.0.0.3", "bob@example.com"),
        ("127.0.0.3", "alice@example.com"),
        ("127.0.0.2", "bob@example.com"),
    ] {
        let r = sign_in(proxy, from, creds(email, PASSWORD), &[]).await;
        assert_eq!(r.status, 200, "{from} {email}: {r:?}");
    }
    // The audit trail names the client, not the proxy; a client's own X-Forwarded-For is
    // believed neither through the proxy (its entry is left of the proxy's) nor directly.
    let spoof = [("x-forwarded-for", "198.51.100.7")];
    let r = sign_in(
        proxy,
        "127.0.0.4",
        creds("alice@example.com", "guess guess"),
        &spoof,
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = sign_in(
        server.addr,
        "127.0.0.5",
        creds("alice@example.com", "guess guess"),
        &spoof,
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    let sources =
        failed_sign_in_sources(&server, usize::try_from(PAIR_FAILURES).unwrap() + 2).await;
    assert_eq!(
        sources[sources.len() - 3..],
        [json!("127.0.0.2"), json!("127.0.0.4"), json!("127.0.0.5")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_trusted_proxy_forwarding_headers_are_ignored() {
    let server = serve(|_| {}).await;
    let proxy = reverse_proxy(server.addr).await;
    let r = sign_in(
        proxy,
        "127.0.0.2",
        creds("alice@example.com", "guess guess"),
        &[("x-forwarded-for", "198.51.100.7")],
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = sign_in(
        server.addr,
        "127.0.0.3",
        creds("alice@example.com", "guess guess"),
        &[("forwarded", "for=198.51.100.7")],
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    let sources = failed_sign_in_sources(&server, 2).await;
    assert_eq!(sources, [json!("127.0.0.1"), json!("127.0.0.3")]);
}

// ---------------------------------------------------------------------------------------------
// Two replicas on one PostgreSQL database

/// Two control planes ("replicas") on one PostgreSQL database, each with its own store
/// connections, sign-in guard and hasher, serving on its own loopback port; they share the
/// manual clock. The database is a fresh one on the suite's server when `LYNXO_TEST_POSTGRES`
/// names one, else on a private server started here (so this runs in the SQLite pass too).
struct Replicas {
    a: Server,
    b: SocketAddr,
    b_state: control::AppState,
    _postgres: Option<e2e::postgres::Server>,
}

impl Replicas {
    /// Hashes started by both.
    fn hashed(&self) -> u64 {
        self.a.stats().started + self.b_state.sign_in.hasher.stats().started
    }
}

async fn two_replicas() -> Replicas {
    let private = match e2e::postgres::test_server() {
        Some(_) => None,
        None => Some(
            tokio::task::spawn_blocking(|| {
                let server = e2e::postgres::Server::start();
                let url = server.create_database("replicas");
                (server, url)
            })
            .await
            .unwrap(),
        ),
    };
    let mut builder = TestApp::builder().settings(|s| {
        s.argon2 = slow_params();
        s.sign_in_hashes = 4;
    });
    if let Some((_, url)) = &private {
        builder = builder.database(url.as_str());
    }
    let app = builder.build();
    assert!(app.state.store.is_postgres());
    let b_state = app.replica();
    let a = Server {
        addr: listen(app.state.clone()).await,
        app,
    };
    let b = listen(b_state.clone()).await;
    Replicas {
        a,
        b,
        b_state,
        _postgres: private.map(|(server, _)| server),
    }
}

/// Sign-ins at once, each to its replica from its address; the answers in order.
async fn burst_over(requests: Vec<(SocketAddr, String, Value)>) -> Vec<Reply> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(to, from, body)| tokio::spawn(async move { sign_in(to, &from, body, &[]).await }))
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    replies
}

/// Bursts of wrong guesses for alice, each request to one replica or the other, from `from(i)`,
/// until `limit` were answered (401; `spent` of them before this call), checked against `limit` and against the hashes both
/// replicas started after every burst; then one more burst, which none may pass. (A burst's
/// refusals may be `sign_in_busy` rather than the lock: each replica has four hashing slots,
/// and a slot is held while the database answers the reservation.)
async fn guess_until_spent(r: &Replicas, from: impl Fn(usize) -> String, spent: u32, limit: u32) {
    let wrong = creds("alice@example.com", "wrong password!!");
    let replicas = [r.a.addr, r.b];
    let mut failures = spent;
    let mut bursts = 0;
    let mut after_spent = 0;
    while after_spent < 2 {
        let replies = burst_over(
            (0..16)
                .map(|i| (replicas[i % 2], from(i), wrong.clone()))
                .collect(),
        )
        .await;
        for reply in &replies {
            match reply.status {
                401 => failures += 1,
                429 => assert!(
                    ["too_many_sign_in_attempts", "sign_in_busy"].contains(&reply.code()),
                    "{reply:?}"
                ),
                _ => panic!("unexpected answer {reply:?}"),
            }
        }
        let hashed = r.hashed();
        assert!(
            failures <= limit && hashed <= u64::from(limit),
            "{failures} wrong guesses answered, {hashed} hashed over both replicas, limit {limit}"
        );
        bursts += 1;
        assert!(
            bursts < 200,
            "the budget was never spent: {failures} failures"
        );
        if failures == limit {
            after_spent += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_guesses_split_over_two_replicas_draw_on_one_budget() {
    let r = two_replicas().await;
    // One address, half its guesses to each replica: one pair budget between them.
    guess_until_spent(&r, |_| "127.0.0.2".to_owned(), 0, PAIR_FAILURES).await;
    // Sixteen more addresses, each to both replicas: the email's budget for unknown browsers
    // (which the first address's failures drew on too) holds over both.
    guess_until_spent(
        &r,
        |i| format!("127.0.1.{}", 10 + i),
        PAIR_FAILURES,
        EMAIL_FAILURES,
    )
    .await;
    assert_eq!(
        r.hashed(),
        u64::from(EMAIL_FAILURES),
        "nothing else was hashed"
    );
    // Locked on both: the right password from an address neither has seen.
    for replica in [r.a.addr, r.b] {
        sign_in(
            replica,
            "127.0.0.99",
            creds("alice@example.com", PASSWORD),
            &[],
        )
        .await
        .assert_refused("too_many_sign_in_attempts");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_or_a_guess_in_flight_on_one_replica_holds_on_the_other() {
    use control::auth::limit::{Outcome, RESERVATION_TTL, WINDOW};

    let r = two_replicas().await;
    let wrong = creds("alice@example.com", "wrong password!!");
    // An address spends its budget for alice through the first replica only...
    for _ in 0..PAIR_FAILURES {
        let reply = sign_in(r.a.addr, "127.0.0.2", wrong.clone(), &[]).await;
        assert_eq!(reply.status, 401, "{reply:?}");
    }
    // ...and the second refuses it the right password, for the whole lock.
    let refused = sign_in(r.b, "127.0.0.2", creds("alice@example.com", PASSWORD), &[]).await;
    refused.assert_refused("too_many_sign_in_attempts");
    assert_eq!(
        refused.header("retry-after"),
        Some(WINDOW.to_string().as_str())
    );
    // The owner, from elsewhere, signs in through the second.
    let owner = sign_in(r.b, "127.0.0.3", creds("alice@example.com", PASSWORD), &[]).await;
    assert_eq!(owner.status, 200, "{owner:?}");

    // A guess for bob being hashed on the first replica (its reservation taken as the sign-in
    // takes it) makes bob busy on the second: one attempt per email in flight, across replicas.
    let guard = Arc::clone(&r.a.app.state.sign_in);
    let lost = guard.attempt(
        "bob@example.com",
        auth::Client::Address(Some("127.0.0.4".parse().unwrap())),
    );
    let held = guard
        .ledger
        .reserve(&lost, r.a.app.clock.now())
        .await
        .unwrap();
    let bob = creds("bob@example.com", PASSWORD);
    sign_in(r.b, "127.0.0.5", bob.clone(), &[])
        .await
        .assert_refused("sign_in_busy");
    // The first replica dies mid-hash: the reservation is never settled. Once its time is up
    // the second admits bob again...
    r.a.app
        .clock
        .advance(std::time::Duration::from_secs(RESERVATION_TTL));
    let reply = sign_in(r.b, "127.0.0.5", bob.clone(), &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // ...and the lost answer was counted as a failure: a late answer, even a success, settles
    // nothing twice and refunds nothing.
    guard
        .ledger
        .settle(&lost, held, Outcome::Succeeded, r.a.app.clock.now())
        .await;
    let mut failures = 0;
    loop {
        let reply = sign_in(
            r.b,
            "127.0.0.4",
            creds("bob@example.com", "wrong password!!"),
            &[],
        )
        .await;
        if reply.status == 429 {
            reply.assert_refused("too_many_sign_in_attempts");
            break;
        }
        assert_eq!(reply.status, 401, "{reply:?}");
        failures += 1;
    }
    assert_eq!(
        failures,
        PAIR_FAILURES - 1,
        "the lost guess was one of them"
    );
    let census = r.b_state.sign_in.ledger.census().await.unwrap();
    assert_eq!(census.in_flight, 0, "{census:?}");
}
