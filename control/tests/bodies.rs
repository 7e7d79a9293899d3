//! Request bodies from callers the service has not authenticated, over a real socket: whatever
//! the framing (a length over the limit, chunked without end, slow), the service reads at most a
//! route's limit, answers before the body ends, lets go of slow senders, refuses bodies where a
//! method takes none, and reads only a bounded number of bodies at once.
//!
//! One test, run in order: the body budget is one per process.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{START, TestApp};
use serde_json::Value;

/// How a test body is sent.
struct Req {
    method: &'static str,
    target: &'static str,
    headers: Vec<(&'static str, String)>,
    /// `Some` declares this length; `None` sends chunked.
    content_length: Option<usize>,
    /// Body bytes to write (zeros), then the sender waits without ending the body.
    total: usize,
}

/// What came back: status and problem code (`None` when the service answered nothing before
/// the sender gave up), how many body bytes were written, how long the answer took.
struct Answer {
    status: Option<u16>,
    code: Option<String>,
    written: usize,
    took: Duration,
}

/// Writes the request while reading the answer; stops writing once an answer is complete.
fn send(addr: SocketAddr, req: &Req, wait: Duration) -> Answer {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let mut head = format!("{} {} HTTP/1.1\r\nHost: x\r\n", req.method, req.target);
    for (name, value) in &req.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match req.content_length {
        Some(n) => head.push_str(&format!("Content-Length: {n}\r\n")),
        None => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let read = std::thread::spawn(move || {
        reader.set_read_timeout(Some(wait)).unwrap();
        let mut raw = Vec::new();
        let mut buf = [0_u8; 8192];
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if raw.len() >= end + 4 + length {
                    return Some((head, raw[end + 4..end + 4 + length].to_vec()));
                }
            }
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    });
    let chunk = [0_u8; 16 * 1024];
    let mut written = 0;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    while written < req.total && !read.is_finished() {
        let n = chunk.len().min(req.total - written);
        let ok = match req.content_length {
            Some(_) => stream.write_all(&chunk[..n]),
            None => stream
                .write_all(format!("{n:x}\r\n").as_bytes())
                .and_then(|()| stream.write_all(&chunk[..n]))
                .and_then(|()| stream.write_all(b"\r\n")),
        };
        if ok.is_err() {
            break;
        }
        written += n;
    }
    let answer = read.join().unwrap();
    let took = started.elapsed();
    let (status, code) = match answer {
        Some((head, body)) => (
            head.split(' ').nth(1).and_then(|s| s.parse().ok()),
            serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["code"].as_str().map(str::to_owned)),
        ),
        None => (None, None),
    };
    Answer {
        status,
        code,
        written,
        took,
    }
}

#[track_caller]
fn expect(answer: &Answer, status: u16, code: &str) {
    assert_eq!(
        (answer.status, answer.code.as_deref()),
        (Some(status), Some(code)),
        "after {} bytes in {:?}",
        answer.written,
        answer.took
    );
}

fn forged_signature() -> String {
    format!("t={START},kid=1,v1={}", "00".repeat(32))
}

#[test]
fn bodies_are_bounded_however_framed() {
    let app = TestApp::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router();
    runtime.spawn(async move { axum::serve(listener, router).await });
    let wait = Duration::from_secs(20);
    let json = || vec![("Content-Type", "application/json".to_owned())];
    let forged = || vec![("Lynxo-Signature", forged_signature())];
    let endless = 48 << 20;

    // Usage ingestion: no signature, or one that cannot be genuine: refused before reading.
    let unsigned = Req {
        method: "POST",
        target: "/_lynxo/usage",
        headers: vec![],
        content_length: None,
        total: endless,
    };
    expect(&send(addr, &unsigned, wait), 401, "invalid_signature");
    let stale = Req {
        headers: vec![(
            "Lynxo-Signature",
            format!("t=1,kid=1,v1={}", "00".repeat(32)),
        )],
        ..unsigned
    };
    expect(&send(addr, &stale, wait), 401, "invalid_signature");
    // A fresh-looking signature: the body is read, to its limit and no further.
    let chunked = Req {
        headers: forged(),
        ..stale
    };
    let a = send(addr, &chunked, wait);
    expect(&a, 413, "payload_too_large");
    assert!(a.written < endless, "the whole body was read");
    let declared = Req {
        content_length: Some(endless),
        total: 0,
        headers: forged(),
        ..chunked
    };
    expect(&send(addr, &declared, wait), 413, "payload_too_large");

    // A JSON route (sign-in, before any authentication): the same, at the service's limit.
    let sign_in = Req {
        method: "POST",
        target: "/v1/sessions",
        headers: json(),
        content_length: None,
        total: endless,
    };
    let a = send(addr, &sign_in, wait);
    expect(&a, 413, "payload_too_large");
    assert!(a.written < endless, "the whole body was read");

    // Methods without a body: refused before reading it.
    for (method, target) in [
        ("GET", "/healthz"),
        ("GET", "/v1/keys"),
        ("DELETE", "/v1/sessions/current"),
    ] {
        let with_body = Req {
            method,
            target,
            headers: vec![],
            content_length: None,
            total: endless,
        };
        expect(&send(addr, &with_body, wait), 400, "body_not_allowed");
    }

    // Many at once: stalled batches (declared 4 MiB, 1 KiB sent) fill all but one batch's worth
    // of the body budget, and a slow sign-in stalls too; the next batch is turned away at once.
    let batches = control::body::BUDGET_BYTES / control::usage::MAX_BATCH_BYTES - 1;
    let stalled: Vec<_> = (0..batches)
        .map(|_| {
            std::thread::spawn(move || {
                let req = Req {
                    method: "POST",
                    target: "/_lynxo/usage",
                    headers: vec![("Lynxo-Signature", forged_signature())],
                    content_length: Some(4 << 20),
                    total: 1024,
                };
                send(addr, &req, Duration::from_secs(30))
            })
        })
        .collect();
    let slow = std::thread::spawn(move || {
        let req = Req {
            method: "POST",
            target: "/v1/sessions",
            headers: vec![("Content-Type", "application/json".to_owned())],
            content_length: Some(100),
            total: 10,
        };
        send(addr, &req, Duration::from_secs(30))
    });
    std::thread::sleep(Duration::from_secs(2));
    let one_more = Req {
        method: "POST",
        target: "/_lynxo/usage",
        headers: forged(),
        content_length: Some(control::usage::MAX_BATCH_BYTES),
        total: 1024,
    };
    let busy = send(addr, &one_more, wait);
    expect(&busy, 503, "busy");
    // Slow senders are cut off, which frees the budget.
    for handle in stalled {
        expect(&handle.join().unwrap(), 408, "body_timeout");
    }
    expect(&slow.join().unwrap(), 408, "body_timeout");
    let fine = Req {
        method: "POST",
        target: "/v1/sessions",
        headers: json(),
        content_length: Some(2),
        total: 2,
    };
    // Two zero bytes are not JSON: the body was read and parsed.
    expect(&send(addr, &fine, wait), 400, "invalid_json");

    // A body framed two ways at once (request smuggling's shape): read by its transfer coding
    // only, and the connection is closed after the answer, so nothing after it is read as
    // another request.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        )
        .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(text.contains("validation_failed"), "{text}");
}
