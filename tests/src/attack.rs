//! What a hostile client does on the wire, and what it measures on the other side.
//!
//! - connections from a chosen loopback source address (`127.0.0.0/8` is all loopback on
//!   Linux), so limits keyed by the client's address can be attacked from "many" clients;
//! - bodies without a length (chunked) of any size, written while the answer is read, so a server
//!   that answers early is seen answering early;
//! - requests left half-sent (slowloris on the head or on the body), held open by the caller;
//! - the memory (`VmRSS`, peak), threads of a process from `/proc`, with the peak reset first
//!   (`clear_refs`), and a sampler as well, so a body read whole and freed is still seen.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::http;

/// How long a hostile request may take before the client gives up on it.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// The loopback address `127.0.0.<n>`.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// Connects to `addr`, from `from` if given.
pub fn connect(addr: SocketAddr, from: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    if let Some(ip) = from {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&addr.into(), Duration::from_secs(5))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Sends one request from `from` and reads the answer (see [`http::send`]).
pub fn send_from(
    from: IpAddr,
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<http::Response> {
    let mut stream = connect(addr, Some(from))?;
    http::send_on(&mut stream, addr, method, target, headers, body)
}

/// What came of a request whose body was streamed.
#[derive(Debug)]
pub struct Streamed {
    /// The answer, if one came.
    pub response: std::io::Result<http::Response>,
    /// Body bytes the client managed to write (some may still sit in socket buffers).
    pub sent: u64,
}

impl Streamed {
    /// The status, or 0 when no answer came.
    pub fn status(&self) -> u16 {
        self.response.as_ref().map_or(0, |r| r.status)
    }

    /// One line for the report: the answer and how much of the body went out before it.
    pub fn describe(&self) -> String {
        let answer = match &self.response {
            Ok(r) => format!("{} {}", r.status, code_of(r)),
            Err(e) => format!("no answer ({e})"),
        };
        format!("{answer} after {} of body written", mib(self.sent))
    }
}

/// The problem document's `code`, or the start of any other body of a refusal: what the report
/// shows next to a status.
pub fn code_of(r: &http::Response) -> String {
    let code = serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned));
    match code {
        Some(code) => code,
        None if r.status >= 400 && !r.body.is_empty() => {
            let text = r.text().replace(['\r', '\n'], " ");
            format!("{:?}", text.chars().take(80).collect::<String>())
        }
        None => String::new(),
    }
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Sends `total` body bytes with `Transfer-Encoding: chunked` (no length), in 64 KiB chunks,
/// while reading the answer: a server that answers before the end is seen doing so, and the
/// client stops writing once it has the answer.
pub fn chunked(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    total: u64,
) -> Streamed {
    let mut all = headers.to_vec();
    all.push(("Transfer-Encoding", "chunked"));
    let mut head = http::head_lines(addr, method, target, &all);
    head.push_str("\r\n");
    let sent = Arc::new(AtomicU64::new(0));
    let mut stream = match connect(addr, None) {
        Ok(s) => s,
        Err(e) => {
            return Streamed {
                response: Err(e),
                sent: 0,
            };
        }
    };
    let writer = stream.try_clone().map(|mut w| {
        let sent = Arc::clone(&sent);
        std::thread::spawn(move || {
            let chunk = vec![b'x'; 64 * 1024];
            if w.write_all(head.as_bytes()).is_err() {
                return;
            }
            let mut left = total;
            while left > 0 {
                let n = left.min(chunk.len() as u64);
                let len = usize::try_from(n).unwrap_or(chunk.len());
                let framed = [
                    format!("{n:x}\r\n").as_bytes(),
                    &chunk[..len],
                    b"\r\n".as_slice(),
                ]
                .concat();
                if w.write_all(&framed).is_err() {
                    return;
                }
                left -= n;
                sent.fetch_add(n, Ordering::Relaxed);
            }
            let _ = w.write_all(b"0\r\n\r\n");
        })
    });
    let response = http::receive(&mut stream, method == "HEAD");
    // The answer is in: stop the writer (its next write fails).
    let _ = stream.shutdown(std::net::Shutdown::Both);
    if let Ok(writer) = writer {
        let _ = writer.join();
    }
    Streamed {
        response,
        sent: sent.load(Ordering::Relaxed),
    }
}

/// Opens a connection and writes `first` (a partial request) without finishing it; the caller
/// holds the stream open. `None` if the connection was refused.
pub fn hold(addr: SocketAddr, from: Option<IpAddr>, first: &[u8]) -> Option<TcpStream> {
    let mut stream = connect(addr, from).ok()?;
    stream.write_all(first).ok()?;
    Some(stream)
}

/// Whether the server has closed (or reset) a held connection: a read sees EOF or an error
/// within `wait`. Anything the server sent is discarded.
pub fn closed_by_server(stream: &mut TcpStream, wait: Duration) -> bool {
    let _ = stream.set_read_timeout(Some(wait));
    let mut buf = [0_u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// A process, read from `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc(pub u32);

impl Proc {
    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// Resident memory, KiB (0 if the process is gone).
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS").unwrap_or(0)
    }

    /// Peak resident memory since start or the last [`Self::reset_peak`], KiB.
    pub fn peak_kib(&self) -> u64 {
        self.status_kib("VmHWM").unwrap_or(0)
    }

    /// Threads.
    pub fn threads(&self) -> u64 {
        self.status_kib("Threads").unwrap_or(0)
    }

    /// Open file descriptors.
    pub fn fds(&self) -> u64 {
        std::fs::read_dir(format!("/proc/{}/fd", self.0))
            .map(|d| d.count() as u64)
            .unwrap_or(0)
    }

    /// Resets the peak resident memory to the current (Linux `clear_refs` 5); false if refused.
    pub fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.0), "5").is_ok()
    }

    /// Whether the process exists.
    pub fn alive(&self) -> bool {
        std::path::Path::new(&format!("/proc/{}", self.0)).exists()
    }
}

/// The processes of process group `pgid`, with their command names.
pub fn group_members(pgid: u32) -> Vec<(Proc, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let group = stat[close + 1..]
            .split_whitespace()
            .nth(2)
            .and_then(|g| g.parse::<u32>().ok());
        if group == Some(pgid) {
            found.push((Proc(pid), comm));
        }
    }
    found
}

/// The growth of a process's memory over an attack: the peak (reset at the start, and sampled
/// every few milliseconds as well) minus the resident memory at the start.
pub struct Growth {
    proc: Proc,
    start_kib: u64,
    peak_reset: bool,
    sampled_peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
}

impl Growth {
    /// Starts measuring `proc`.
    pub fn start(proc: Proc) -> Self {
        let peak_reset = proc.reset_peak();
        let start_kib = proc.rss_kib();
        let sampled_peak = Arc::new(AtomicU64::new(start_kib));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, stop) = (Arc::clone(&sampled_peak), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(proc.rss_kib(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Self {
            proc,
            start_kib,
            peak_reset,
            sampled_peak,
            stop,
            sampler: Some(sampler),
        }
    }

    /// Peak growth so far, KiB.
    pub fn peak_kib(&self) -> u64 {
        let mut peak = self.sampled_peak.load(Ordering::Relaxed);
        if self.peak_reset {
            peak = peak.max(self.proc.peak_kib());
        }
        peak.saturating_sub(self.start_kib)
    }

    /// Resident memory now minus at the start, KiB (negative as 0).
    pub fn now_kib(&self) -> u64 {
        self.proc.rss_kib().saturating_sub(self.start_kib)
    }

    /// Resident memory at the start, KiB.
    pub fn start_kib(&self) -> u64 {
        self.start_kib
    }

    /// Stops sampling; returns the peak growth, KiB.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(s) = self.sampler.take() {
            let _ = s.join();
        }
        self.peak_kib()
    }
}

impl Drop for Growth {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs `f(i)` for `i` in `0..n` on at most `parallel` threads at once; results in order of `i`.
pub fn parallel<T: Send>(n: usize, parallel: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicU64::new(0);
    let results: std::sync::Mutex<Vec<Option<T>>> =
        std::sync::Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..parallel.min(n).max(1) {
            s.spawn(|| {
                loop {
                    let i = usize::try_from(next.fetch_add(1, Ordering::Relaxed)).unwrap_or(n);
                    if i >= n {
                        break;
                    }
                    let r = f(i);
                    if let Ok(mut all) = results.lock() {
                        all[i] = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect()
}

/// Runs `f(i)` for `i` in `0..n` all at once, released together by a barrier so they truly
/// race; results in order of `i`.
pub fn race<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, f) = (&barrier, &f);
                s.spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    })
}
