//! A minimal HTTP/1.1 client over a loopback `TcpStream`.
//!
//! The tests need what ordinary clients refuse to send: two `Authorization` headers, oversized
//! or oddly spaced values, arbitrary methods. One request per connection (`Connection: close`),
//! so the response is simply everything read until the server closes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response as received.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercase, in order.
    pub headers: Vec<(String, String)>,
    /// Body, with chunked transfer coding removed.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// Sends one request and reads the whole response. `target` is the path and query.
pub fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    send_on(&mut stream, addr, method, target, headers, body)
}

/// Sends one request on a connected `stream` (to `addr`, named in `Host`) and reads the whole
/// response.
pub fn send_on(
    stream: &mut TcpStream,
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut head = head_lines(addr, method, target, headers);
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    receive(stream, method == "HEAD")
}

/// The request line and headers, with `Host` and `Connection: close`, without the blank line
/// that ends the head.
pub fn head_lines(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> String {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head
}

/// Reads one whole response from `stream` (`head_only` for the answer to a `HEAD`).
pub fn receive(stream: &mut TcpStream, head_only: bool) -> std::io::Result<Response> {
    // Read until the response is complete: servers may keep the connection open regardless.
    let mut raw = Vec::new();
    let mut buf = [0_u8; 16 * 1024];
    loop {
        if complete(&raw, head_only) {
            break;
        }
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            // A server that answers before reading the whole request may reset the connection
            // after its answer: keep what arrived.
            Err(_) if raw.windows(4).any(|w| w == b"\r\n\r\n") => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    parse(&raw, head_only)
}

/// How a streamed body ([`send_streamed`]) is framed and paced.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Body bytes to send in all (zeros).
    pub total: usize,
    /// Bytes per write (and per chunk when chunked).
    pub chunk: usize,
    /// A `Content-Length` to declare, true or not; `None` sends the body chunked.
    pub content_length: Option<usize>,
    /// Whether to end the body (the last chunk of a chunked body). `false` leaves it open, as a
    /// slow or stalled client does.
    pub finish: bool,
    /// Pause between writes.
    pub pause: Duration,
}

/// Sends a request whose body is written while the response is read: the writer stops as soon
/// as a complete response has arrived or the server stops reading. Returns the response and how
/// many body bytes were written before it came. `None` for the response if none came within
/// `wait` after the last write.
pub fn send_streamed(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &Stream,
    wait: Duration,
) -> std::io::Result<(Option<Response>, usize)> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = stream.try_clone()?;
    let mut head = head_lines(addr, method, target, headers);
    match body.content_length {
        Some(n) => head.push_str(&format!("Content-Length: {n}\r\n")),
        None => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let answered = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&answered);
    let head_only = method == "HEAD";
    let read = std::thread::spawn(move || {
        let mut raw = Vec::new();
        let mut buf = [0_u8; 16 * 1024];
        let _ = reader.set_read_timeout(Some(Duration::from_millis(200)));
        let mut idle_since: Option<std::time::Instant> = None;
        loop {
            if complete(&raw, head_only) {
                break;
            }
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    // `wait` counts from when the writer is done (or gave up).
                    if done.load(Ordering::SeqCst) {
                        let since = *idle_since.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() > wait {
                            break;
                        }
                    }
                }
                Err(_) => break,
            }
        }
        done.store(true, Ordering::SeqCst);
        (!raw.is_empty())
            .then(|| parse(&raw, head_only))
            .transpose()
    });
    let chunk = vec![0_u8; body.chunk.max(1)];
    let mut written = 0;
    while written < body.total && !answered.load(Ordering::SeqCst) {
        let n = chunk.len().min(body.total - written);
        let sent = if body.content_length.is_some() {
            stream.write_all(&chunk[..n])
        } else {
            stream
                .write_all(format!("{n:x}\r\n").as_bytes())
                .and_then(|()| stream.write_all(&chunk[..n]))
                .and_then(|()| stream.write_all(b"\r\n"))
        };
        if sent.is_err() {
            break;
        }
        written += n;
        if !body.pause.is_zero() {
            std::thread::sleep(body.pause);
        }
    }
    if body.finish && body.content_length.is_none() && !answered.load(Ordering::SeqCst) {
        let _ = stream.write_all(b"0\r\n\r\n");
    }
    answered.store(true, Ordering::SeqCst);
    let response = read
        .join()
        .map_err(|_| invalid("reader thread panicked"))??;
    Ok((response, written))
}

/// Whether `raw` holds a whole response (false while unsure: the caller reads on until EOF).
fn complete(raw: &[u8], head_only: bool) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    if head_only || head.starts_with("http/1.1 204") || head.starts_with("http/1.1 304") {
        return true;
    }
    let value = |name: &str| {
        head.split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim() == name)
            .map(|(_, v)| v.trim().to_owned())
    };
    if value("transfer-encoding").is_some_and(|v| v == "chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    match value("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(len) => body.len() >= len,
        None => false,
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

fn parse(raw: &[u8], head_only: bool) -> std::io::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| invalid("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| invalid("no status line"))?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if head_only {
        Vec::new()
    } else if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("truncated chunk size"))?;
        let size_text =
            std::str::from_utf8(&rest[..line_end]).map_err(|_| invalid("chunk size"))?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| invalid("chunk size"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err(invalid("truncated chunk"));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let plain = parse(
            b"HTTP/1.1 401 Unauthorized\r\nA: b\r\nWWW-Authenticate: Bearer x\r\n\r\nhi",
            false,
        )
        .unwrap();
        assert_eq!(plain.status, 401);
        assert_eq!(plain.header("www-authenticate"), Some("Bearer x"));
        assert_eq!(plain.body, b"hi");
        let chunked = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(chunked.body, b"abcde");
    }
}
