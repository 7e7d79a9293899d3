//! A wiretap between the worker and the demo origin: a loopback TCP relay that copies both
//! directions untouched and keeps every byte the worker sent, so a test sees exactly what the
//! origin received (the signed identity included) without relying on what the origin chooses to
//! echo, and can replay it straight to the origin as an attacker who captured it would.
//!
//! Start it before the stack (its address is the worker's `ORIGIN_URL`), then point it at the
//! demo origin with [`Capture::set_upstream`]. Its threads live as long as the test process.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};

/// What the worker sent, one byte string per connection.
type Streams = Arc<Mutex<Vec<Vec<u8>>>>;

/// The relay.
pub struct Capture {
    /// Where the worker sends origin requests.
    pub addr: SocketAddr,
    upstream: Arc<OnceLock<SocketAddr>>,
    /// The bytes the worker sent, per connection, in arrival order.
    streams: Streams,
}

/// One request as the origin received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Method.
    pub method: String,
    /// Request target (path and query).
    pub target: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, chunked coding removed.
    pub body: Vec<u8>,
}

impl Captured {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path (target without the query).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The headers to replay this request with: every captured header but the connection's own
    /// (`Host`, `Connection`, framing), which the replaying client sets.
    pub fn replay_headers(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .filter(|(n, _)| {
                !["host", "connection", "content-length", "transfer-encoding"]
                    .iter()
                    .any(|d| n.eq_ignore_ascii_case(d))
            })
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, keep: Option<(Streams, usize)>) {
    let mut buf = [0_u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((streams, i)) = &keep {
            if let Ok(mut s) = streams.lock() {
                s[*i].extend_from_slice(&buf[..n]);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Capture {
    /// Listens on a free loopback port; relays nothing until [`Self::set_upstream`].
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("capture relay: no loopback port: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("capture relay: {e}"));
        let upstream: Arc<OnceLock<SocketAddr>> = Arc::default();
        let streams: Streams = Arc::default();
        let (up, kept) = (Arc::clone(&upstream), Arc::clone(&streams));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Some(to) = up.get().copied() else {
                    continue;
                };
                let Ok(origin) = TcpStream::connect(to) else {
                    continue;
                };
                let i = match kept.lock() {
                    Ok(mut s) => {
                        s.push(Vec::new());
                        s.len() - 1
                    }
                    Err(_) => continue,
                };
                let (Ok(c2), Ok(o2)) = (client.try_clone(), origin.try_clone()) else {
                    continue;
                };
                let kept = Arc::clone(&kept);
                std::thread::spawn(move || pipe(client, origin, Some((kept, i))));
                std::thread::spawn(move || pipe(o2, c2, None));
            }
        });
        Self {
            addr,
            upstream,
            streams,
        }
    }

    /// Relays to `origin` from now on.
    pub fn set_upstream(&self, origin: SocketAddr) {
        let _ = self.upstream.set(origin);
    }

    /// Every request relayed so far.
    pub fn requests(&self) -> Vec<Captured> {
        let streams = self.streams.lock().map(|s| s.clone()).unwrap_or_default();
        streams.iter().flat_map(|s| parse_all(s)).collect()
    }

    /// The last relayed request whose target contains `marker`.
    pub fn find(&self, marker: &str) -> Option<Captured> {
        self.requests()
            .into_iter()
            .rev()
            .find(|r| r.target.contains(marker))
    }
}

/// Splits a connection's bytes into requests (`Content-Length` or chunked bodies); stops at the
/// first incomplete one.
fn parse_all(mut rest: &[u8]) -> Vec<Captured> {
    let mut found = Vec::new();
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or("").split(' ');
        let method = request_line.next().unwrap_or("").to_owned();
        let target = request_line.next().unwrap_or("").to_owned();
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
        let mut body_bytes = &rest[end + 4..];
        let mut body = Vec::new();
        if value("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let Some(line_end) = body_bytes.windows(2).position(|w| w == b"\r\n") else {
                    return found;
                };
                let size = std::str::from_utf8(&body_bytes[..line_end])
                    .ok()
                    .and_then(|t| usize::from_str_radix(t.split(';').next()?.trim(), 16).ok());
                let Some(size) = size else {
                    return found;
                };
                body_bytes = &body_bytes[line_end + 2..];
                if size == 0 {
                    // No trailers from the worker: the blank line ends the body.
                    if body_bytes.len() < 2 {
                        return found;
                    }
                    body_bytes = &body_bytes[2..];
                    break;
                }
                if body_bytes.len() < size + 2 {
                    return found;
                }
                body.extend_from_slice(&body_bytes[..size]);
                body_bytes = &body_bytes[size + 2..];
            }
        } else {
            let len = value("content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body_bytes.len() < len {
                return found;
            }
            body.extend_from_slice(&body_bytes[..len]);
            body_bytes = &body_bytes[len..];
        }
        found.push(Captured {
            method,
            target,
            headers,
            body,
        });
        rest = body_bytes;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_requests_of_one_connection() {
        let wire = b"GET /v1/jobs?a=1 HTTP/1.1\r\nHost: o\r\nLynxo-Key-Id: k\r\n\r\n\
POST /v1/jobs HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n\
GET /partial HTTP/1.1\r\nContent-Length: 9\r\n\r\nab";
        let all = parse_all(wire);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].path(), "/v1/jobs");
        assert_eq!(all[0].query(), Some("a=1"));
        assert_eq!(all[0].header("lynxo-key-id"), Some("k"));
        assert_eq!(all[1].body, b"abc");
        assert_eq!(all[2].body, b"hi");
        assert_eq!(all[0].replay_headers(), vec![("Lynxo-Key-Id", "k")]);
    }
}
