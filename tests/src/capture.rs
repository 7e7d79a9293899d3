//! A recording proxy between the worker and the demo origin: it keeps every request exactly as
//! the worker sent it (head and body bytes) and relays it to the origin, so a test can see what
//! reached the origin, and replay it as an attacker who captured it would.
//!
//! One request per connection: the proxy relays the origin's answer with `connection: close`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request as the worker sent it.
#[derive(Debug, Clone)]
pub struct Captured {
    /// The request line: `GET /v1/jobs?limit=5 HTTP/1.1`.
    pub request_line: String,
    /// Header lines as sent (names as the worker wrote them).
    pub headers: Vec<(String, String)>,
    /// The body (chunked transfer coding removed).
    pub body: Vec<u8>,
    /// Whether the body came chunked.
    pub chunked: bool,
}

impl Captured {
    /// The method.
    pub fn method(&self) -> &str {
        self.request_line.split(' ').next().unwrap_or("")
    }

    /// The request target (path and query).
    pub fn target(&self) -> &str {
        self.request_line.split(' ').nth(1).unwrap_or("")
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The running proxy; it stops with the test process.
pub struct Capture {
    /// Where the worker should send requests (its `ORIGIN_URL`).
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Captured>>>,
    origin: Arc<Mutex<Option<SocketAddr>>>,
}

impl Capture {
    /// Listens on a free loopback port; relays nowhere until [`Capture::relay_to`].
    pub fn start() -> Self {
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("capture bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("capture addr: {e}"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let origin = Arc::new(Mutex::new(None));
        let (s, o) = (Arc::clone(&seen), Arc::clone(&origin));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, o) = (Arc::clone(&s), Arc::clone(&o));
                std::thread::spawn(move || {
                    let _ = serve(conn, &s, &o);
                });
            }
        });
        Self { addr, seen, origin }
    }

    /// Relays every request to `origin` from now on.
    pub fn relay_to(&self, origin: SocketAddr) {
        *self.origin.lock().unwrap_or_else(|e| e.into_inner()) = Some(origin);
    }

    /// Every request so far.
    pub fn all(&self) -> Vec<Captured> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The latest request; panics if there was none.
    pub fn last(&self) -> Captured {
        self.all()
            .pop()
            .unwrap_or_else(|| panic!("no request reached the origin"))
    }

    /// How many requests reached the origin so far.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

fn read_until(stream: &mut TcpStream, raw: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) -> bool {
    let mut buf = [0_u8; 16 * 1024];
    while !done(raw) {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    true
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&rest[..end])
                .ok()?
                .split(';')
                .next()?
                .trim(),
            16,
        )
        .ok()?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

fn serve(
    mut conn: TcpStream,
    seen: &Mutex<Vec<Captured>>,
    origin: &Mutex<Option<SocketAddr>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut raw = Vec::new();
    let head_end = |raw: &[u8]| raw.windows(4).position(|w| w == b"\r\n\r\n");
    if !read_until(&mut conn, &mut raw, |r| head_end(r).is_some()) {
        return Ok(());
    }
    let end = head_end(&raw).unwrap_or(0);
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let value = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let chunked = value("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length: usize = value("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let body_start = end + 4;
    let body = if chunked {
        read_until(&mut conn, &mut raw, |r| r.ends_with(b"0\r\n\r\n"));
        dechunk(&raw[body_start..]).unwrap_or_default()
    } else {
        read_until(&mut conn, &mut raw, |r| r.len() >= body_start + length);
        raw[body_start..(body_start + length).min(raw.len())].to_vec()
    };
    let captured = Captured {
        request_line: request_line.clone(),
        headers: headers.clone(),
        body: body.clone(),
        chunked,
    };
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(captured);
    let Some(to) = *origin.lock().unwrap_or_else(|e| e.into_inner()) else {
        conn.write_all(
            b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )?;
        return Ok(());
    };
    // The same request, one per connection, with its body re-framed by length.
    let mut out = format!("{request_line}\r\n");
    for (name, value) in &headers {
        let lower = name.to_ascii_lowercase();
        if !matches!(
            lower.as_str(),
            "connection" | "transfer-encoding" | "content-length" | "keep-alive"
        ) {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    if value("content-length").is_some() || chunked {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("connection: close\r\n\r\n");
    let mut upstream = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    upstream.set_read_timeout(Some(Duration::from_secs(30)))?;
    upstream.write_all(out.as_bytes())?;
    upstream.write_all(&body)?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer)?;
    conn.write_all(&answer)?;
    Ok(())
}
