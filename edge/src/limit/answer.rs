//! What a request is told about its budget: the [`Status`], the IETF RateLimit header fields,
//! and the 429 answers.

use shared::limits::CAP_SPAN;
use shared::usage::Reason;

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
    /// fields) at `now_ms`. A key with a per-minute cap lists it as a second policy. Written
    /// digit by digit into strings of their final size: these go on every answer to a key,
    /// and `format!` would run the formatting machinery and grow each string as it goes.
    pub fn headers(&self, now_ms: u64) -> [(&'static str, String); 2] {
        let mut policy = String::with_capacity(64);
        policy.push_str("\"default\";q=");
        push_decimal(&mut policy, self.limit.into());
        policy.push_str(";w=");
        push_decimal(&mut policy, self.window.into());
        if let Some(cap) = self.per_minute {
            policy.push_str(", \"minute\";q=");
            push_decimal(&mut policy, cap.into());
            policy.push_str(";w=");
            push_decimal(&mut policy, CAP_SPAN.into());
        }
        let t = if self.remaining == 0 {
            self.seconds_to_retry(now_ms)
        } else {
            self.seconds_to_reset(now_ms)
        };
        let mut rate = String::with_capacity(48);
        rate.push_str("\"default\";r=");
        push_decimal(&mut rate, self.remaining.into());
        rate.push_str(";t=");
        push_decimal(&mut rate, t);
        [("ratelimit-policy", policy), ("ratelimit", rate)]
    }
}

/// Appends `n` in decimal, without the formatting machinery.
fn push_decimal(out: &mut String, n: u64) {
    let mut digits = [0_u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        // `n % 10` is below 10: the cast keeps every value.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits: one copy (a `char` at a time was most of formatting the two fields).
    if let Ok(digits) = std::str::from_utf8(&digits[at..]) {
        out.push_str(digits);
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
        .because(Reason::RateLimitExceeded)
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
    .because(Reason::RateLimitExceeded)
    .reply()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The fields written digit by digit read as `format!` would write them.
        #[test]
        fn header_values_are_the_formatted_numbers(
            limit: u32,
            window: u32,
            remaining: u32,
            cap: Option<u32>,
            reset in 0_u64..u64::MAX / 2,
            retry in 0_u64..u64::MAX / 2,
            now in 0_u64..u64::MAX / 2,
        ) {
            let s = Status { limit, window, remaining, reset_ms: reset, retry_ms: retry, per_minute: cap };
            let t = if remaining == 0 { s.seconds_to_retry(now) } else { s.seconds_to_reset(now) };
            let mut policy = format!("\"default\";q={limit};w={window}");
            if let Some(cap) = cap {
                policy.push_str(&format!(", \"minute\";q={cap};w={CAP_SPAN}"));
            }
            prop_assert_eq!(
                s.headers(now),
                [("ratelimit-policy", policy), ("ratelimit", format!("\"default\";r={remaining};t={t}"))]
            );
        }
    }

    #[test]
    fn decimals_at_the_ends() {
        for n in [0, 1, 9, 10, 99, 100, u64::from(u32::MAX), u64::MAX] {
            let mut s = String::from("x");
            push_decimal(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }
}
