//! What a request is told about its budget: the [`Status`], the IETF RateLimit header fields,
//! and the 429 answers.

use shared::limits::CAP_SPAN;

use crate::problem::{Problem, Reply};

/// The numbers the RateLimit header fields and a 429 report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Requests per window.
    pub limit: u32,
    /// Window, seconds.
    pub window: u32,
    /// Requests left, as far as this isolate knows: in this window and under the cap.
    pub remaining: u32,
    /// When the window ends, Unix milliseconds.
    pub reset_ms: u64,
    /// When a refused request may succeed again (the window's end, or sooner when only the
    /// per-minute cap refused), Unix milliseconds.
    pub retry_ms: u64,
    /// The per-minute cap, if any.
    pub per_minute: Option<u32>,
}

impl Status {
    /// Whole seconds until the window ends, at least 1 while it lasts.
    pub fn seconds_to_reset(&self, now_ms: u64) -> u64 {
        self.reset_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
    }

    /// Whole seconds until a refused request may succeed, at least 1.
    pub fn seconds_to_retry(&self, now_ms: u64) -> u64 {
        self.retry_ms
            .min(self.reset_ms)
            .saturating_sub(now_ms)
            .div_ceil(1000)
            .max(1)
    }

    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers, structured
    /// fields) at `now_ms`. A key with a per-minute cap lists it as a second policy.
    pub fn headers(&self, now_ms: u64) -> [(&'static str, String); 2] {
        let mut policy = format!("\"default\";q={};w={}", self.limit, self.window);
        if let Some(cap) = self.per_minute {
            policy.push_str(&format!(", \"minute\";q={cap};w={CAP_SPAN}"));
        }
        let t = if self.remaining == 0 {
            self.seconds_to_retry(now_ms)
        } else {
            self.seconds_to_reset(now_ms)
        };
        [
            ("ratelimit-policy", policy),
            (
                "ratelimit",
                format!("\"default\";r={};t={t}", self.remaining),
            ),
        ]
    }
}

/// The window, in words.
fn window_words(window: u32) -> String {
    if window == 1 {
        "second".to_owned()
    } else {
        format!("{window} seconds")
    }
}

/// 429 `rate_limit_exceeded` at `now_ms`, with `Retry-After` and the RateLimit header fields.
pub fn exceeded(status: &Status, now_ms: u64) -> Reply {
    let retry_after = status.seconds_to_retry(now_ms);
    let reset = status.reset_ms.div_ceil(1000);
    let unit = window_words(status.window);
    let by_cap = status.retry_ms < status.reset_ms;
    let detail = match status.per_minute {
        Some(cap) if by_cap => format!(
            "This API key allows {} requests per {unit}, and at most {cap} in any {CAP_SPAN} \
             seconds, which are used up. Retry in {retry_after} s. To send more, contact \
             support for a higher plan.",
            status.limit
        ),
        _ => format!(
            "This API key allows {} requests per {unit}, and this window's requests are used up. \
             The limit resets in {retry_after} s (at {reset}, Unix time). To send more, raise the \
             key's rate limit in the dashboard or through the API, or contact support for a \
             higher plan.",
            status.limit
        ),
    };
    let mut problem = Problem::new(429, "rate_limit_exceeded", "Rate Limit Exceeded", detail)
        .field("limit", status.limit)
        .field("window", status.window)
        .field("reset", reset)
        .field("retry_after", retry_after)
        .header("retry-after", retry_after.to_string());
    if let Some(cap) = status.per_minute {
        problem = problem.field("max_per_minute", cap);
    }
    let limited = Status {
        remaining: 0,
        ..*status
    };
    for (name, value) in limited.headers(now_ms) {
        problem = problem.header(name, value);
    }
    problem.reply()
}

/// 429 for a request with a revoked or expired key over [`REFUSED_KEY_POLICY`]: `Retry-After`
/// only, no RateLimit fields (they would describe a policy the key no longer has) and nothing
/// about the key.
pub fn refused_exceeded(status: &Status, now_ms: u64) -> Reply {
    let retry_after = status.seconds_to_retry(now_ms);
    Problem::new(
        429,
        "rate_limit_exceeded",
        "Rate Limit Exceeded",
        format!(
            "Too many requests with a key that is not valid. Retry in {retry_after} s, with a \
             valid key."
        ),
    )
    .field("retry_after", retry_after)
    .header("retry-after", retry_after.to_string())
    .reply()
}
