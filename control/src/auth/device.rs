//! Device cookies (OWASP's "Slow Down Online Guessing Attacks with Device Cookies"): a browser
//! that signed in to an email before gets a signed cookie saying so, and sign-ins from it draw on
//! a budget of their own, so a guesser who spends the email's budget for unknown browsers does
//! not lock the owner out of the browsers they use.
//!
//! `__Host-lynxo_device=v1.<device id, 32 hex>.<issued at, decimal>.<tag, 32 hex>`, the tag being
//! the first 16 bytes of HMAC-SHA256 (the keyring's sign-in subkey) over the email, the device id
//! and the time. The email is not in the cookie: a cookie only counts for the email it was issued
//! for, and it proves nothing else (it is not a session and authorises no call).

use axum::http::HeaderMap;
use shared::mac::MacKey;

/// The cookie's name. `__Host-`: Secure, Path=/, no Domain, like the session cookie.
pub const COOKIE: &str = "__Host-lynxo_device";
/// How long a device stays known after its last sign-in, seconds (each sign-in renews it).
pub const LIFETIME: u64 = 180 * 24 * 3600;
const TAG_LEN: usize = 16;
/// Longest cookie value looked at: `v1.` + 32 + `.` + 20 + `.` + 32.
const MAX_LEN: usize = 3 + 32 + 1 + 20 + 1 + 32;

/// A known device's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceId(pub [u8; 16]);

fn message(email: &str, device: &DeviceId, issued: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + email.len() + 16 + 8);
    m.extend_from_slice(b"device-cookie/v1\0");
    m.extend_from_slice(email.as_bytes());
    m.push(0);
    m.extend_from_slice(&device.0);
    m.extend_from_slice(&issued.to_be_bytes());
    m
}

/// The cookie value for a new device that signed in to `email` at `now`.
pub fn issue(mac: &MacKey, email: &str, device: DeviceId, now: u64) -> String {
    let tag = mac.sign(&message(email, &device, now));
    format!(
        "v1.{}.{now}.{}",
        hex::encode(device.0),
        hex::encode(&tag[..TAG_LEN])
    )
}

/// The device a cookie value names, if it was issued for `email` less than [`LIFETIME`] ago.
pub fn verify(mac: &MacKey, value: &str, email: &str, now: u64) -> Option<DeviceId> {
    if value.len() > MAX_LEN {
        return None;
    }
    let mut parts = value.split('.');
    let (Some("v1"), Some(device), Some(issued), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let device = DeviceId(hex::decode(device).ok()?.try_into().ok()?);
    let issued: u64 = issued.parse().ok()?;
    let tag = hex::decode(tag).ok()?;
    // A cookie from the future (beyond a little clock skew) is not one we issued.
    (issued <= now.saturating_add(300)
        && now < issued.saturating_add(LIFETIME)
        && mac.verify(&message(email, &device, issued), &tag, TAG_LEN))
    .then_some(device)
}

/// The device cookie's value in a request, if it sent one.
pub fn from_headers(headers: &HeaderMap) -> Option<&str> {
    crate::auth::cookie(headers, COOKIE)
}

/// The `Set-Cookie` value that stores `value` for [`LIFETIME`].
pub fn set_cookie(value: &str) -> String {
    format!("{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={LIFETIME}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_good_for_its_email_and_its_lifetime_only() {
        let mac = MacKey::new(b"sign-in subkey");
        let device = DeviceId([7; 16]);
        let value = issue(&mac, "alice@example.com", device, 1000);
        assert!(value.len() <= MAX_LEN);
        assert_eq!(
            verify(&mac, &value, "alice@example.com", 1000),
            Some(device)
        );
        assert_eq!(
            verify(&mac, &value, "alice@example.com", 1000 + LIFETIME - 1),
            Some(device)
        );
        assert_eq!(
            verify(&mac, &value, "alice@example.com", 1000 + LIFETIME),
            None
        );
        assert_eq!(verify(&mac, &value, "bob@example.com", 1000), None);
        assert_eq!(verify(&mac, &value, "alice@example.com", 0), None);
        let other_key = MacKey::new(b"another keyring");
        assert_eq!(verify(&other_key, &value, "alice@example.com", 1000), None);
        let (head, tag) = value.rsplit_once('.').unwrap();
        let mut flipped = tag.to_owned();
        flipped.replace_range(0..1, if tag.starts_with('0') { "1" } else { "0" });
        for bad in [
            format!("{head}.{flipped}"),
            format!("{head}.{}", &tag[..30]),
            format!("{head}.{tag}.x"),
            value.replacen("v1", "v2", 1),
            value.replacen(".1000.", ".999.", 1),
            String::new(),
            "v1...".to_owned(),
            "x".repeat(5000),
        ] {
            assert_eq!(verify(&mac, &bad, "alice@example.com", 1000), None, "{bad}");
        }
    }
}
