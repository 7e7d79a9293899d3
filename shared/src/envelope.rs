//! Signed headers for messages between Lynxo's own parties: the control plane's pushes to the
//! edge's sync endpoint, and the identity the edge forwards to the origin.
//!
//! The header value is `t=<unix seconds>,kid=<kid>,<scheme>=<64 hex digits>`, like Stripe's
//! webhook signatures: the tag is HMAC-SHA256 over `"<t>."` followed by the message parts, each
//! part length-prefixed so no two part lists sign the same bytes. The scheme names the layout of
//! the parts (`v1` for [`sign`] and [`verify`]); a verifier accepts only the scheme it expects,
//! so a header of one layout is never read as another. The key is the keyring's subkey for the
//! [`Purpose`], so a sync signature can never pass as an identity signature. A verifier refuses a
//! timestamp more than `tolerance` seconds from its own clock, which bounds replay.

use crate::mac::{Keyring, Purpose, TAG_LEN};

/// Why a signed header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The header is not `t=…,kid=…,<scheme>=…` with the expected scheme.
    #[error("signature header is malformed")]
    Malformed,
    /// The kid is not in the keyring.
    #[error("signature by unknown kid {0}")]
    UnknownKid(u8),
    /// The timestamp is further from now than the tolerance allows.
    #[error("signature timestamp {timestamp} is outside the tolerance")]
    OutsideTolerance {
        /// The header's timestamp.
        timestamp: u64,
    },
    /// The signature does not match the message.
    #[error("signature does not match")]
    BadSignature,
}

/// The header that carries a signed push or read between the control plane and the edge's sync
/// endpoints (revocation shards, limits, usage batches, the audit checkpoint).
pub const SYNC_HEADER: &str = "lynxo-signature";

/// The scheme of [`sign`] and [`verify`]: the parts exactly as the caller gives them.
pub const SCHEME_V1: &str = "v1";

fn tag(
    keyring: &Keyring,
    kid: u8,
    purpose: Purpose,
    timestamp: u64,
    parts: &[&[u8]],
) -> Option<[u8; TAG_LEN]> {
    let mac = keyring.mac(kid, purpose)?;
    let mut framed: Vec<&[u8]> = Vec::with_capacity(2 + 2 * parts.len());
    let stamp = format!("{timestamp}.");
    framed.push(stamp.as_bytes());
    let lengths: Vec<[u8; 8]> = parts
        .iter()
        .map(|p| (p.len() as u64).to_be_bytes())
        .collect();
    for (part, len) in parts.iter().zip(&lengths) {
        framed.push(len);
        framed.push(part);
    }
    Some(mac.sign_parts(&framed))
}

/// Signs `parts` for `purpose` at `timestamp` with the keyring's active kid, as scheme `v1`.
pub fn sign(keyring: &Keyring, purpose: Purpose, timestamp: u64, parts: &[&[u8]]) -> String {
    sign_scheme(keyring, purpose, SCHEME_V1, timestamp, parts)
}

/// Signs `parts` for `purpose` at `timestamp` with the keyring's active kid, naming the tag's
/// field `scheme` (a short lowercase label such as `v2`, which the caller also signs among its
/// parts when the layout needs it).
pub fn sign_scheme(
    keyring: &Keyring,
    purpose: Purpose,
    scheme: &str,
    timestamp: u64,
    parts: &[&[u8]],
) -> String {
    let kid = keyring.active_kid();
    // The active kid is always in the ring.
    let tag = tag(keyring, kid, purpose, timestamp, parts).unwrap_or([0; TAG_LEN]);
    let mut header = format!("t={timestamp},kid={kid},{scheme}=");
    crate::lowerhex::push(&mut header, &tag);
    header
}

/// Checks a header made by [`sign`] against `parts`, at `now`, allowing `tolerance` seconds of
/// clock difference either way. Returns the signed timestamp.
pub fn verify(
    keyring: &Keyring,
    purpose: Purpose,
    header: &str,
    parts: &[&[u8]],
    now: u64,
    tolerance: u64,
) -> Result<u64, EnvelopeError> {
    verify_scheme(keyring, purpose, SCHEME_V1, header, parts, now, tolerance)
}

/// A signature header whose shape, kid and timestamp passed, not yet checked against any
/// message: what a receiver can tell before it reads a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The signed timestamp.
    pub timestamp: u64,
    /// The signing kid (in the keyring).
    pub kid: u8,
    tag: [u8; TAG_LEN],
}

/// Reads a header made by [`sign_scheme`] with `scheme`: its shape, that its kid is in the
/// keyring, and that its timestamp is within `tolerance` seconds of `now`. No message needed.
pub fn check_header(
    keyring: &Keyring,
    scheme: &str,
    header: &str,
    now: u64,
    tolerance: u64,
) -> Result<Checked, EnvelopeError> {
    let mut fields = header.trim().split(',');
    let mut field = |name: &str| {
        fields
            .next()
            .and_then(|f| f.trim().strip_prefix(name))
            .and_then(|f| f.strip_prefix('='))
            .ok_or(EnvelopeError::Malformed)
    };
    let timestamp: u64 = field("t")?.parse().map_err(|_| EnvelopeError::Malformed)?;
    let kid: u8 = field("kid")?
        .parse()
        .map_err(|_| EnvelopeError::Malformed)?;
    let signature = field(scheme)?;
    if fields.next().is_some() || signature.len() != 2 * TAG_LEN {
        return Err(EnvelopeError::Malformed);
    }
    // Bytes, not `&str` slices: a header may hold a multi-byte character, and slicing through
    // one would panic.
    let mut tag = [0_u8; TAG_LEN];
    let nibble = |c: u8| (c as char).to_digit(16).ok_or(EnvelopeError::Malformed);
    for (byte, pair) in tag.iter_mut().zip(signature.as_bytes().chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4 | nibble(pair[1])?) as u8;
    }
    if !keyring.contains(kid) {
        return Err(EnvelopeError::UnknownKid(kid));
    }
    if now.abs_diff(timestamp) > tolerance {
        return Err(EnvelopeError::OutsideTolerance { timestamp });
    }
    Ok(Checked {
        timestamp,
        kid,
        tag,
    })
}

/// Checks a header made by [`sign_scheme`] with `scheme` against `parts`, at `now`, allowing
/// `tolerance` seconds of clock difference either way. Returns the signed timestamp.
pub fn verify_scheme(
    keyring: &Keyring,
    purpose: Purpose,
    scheme: &str,
    header: &str,
    parts: &[&[u8]],
    now: u64,
    tolerance: u64,
) -> Result<u64, EnvelopeError> {
    let Checked {
        timestamp,
        kid,
        tag: given,
    } = check_header(keyring, scheme, header, now, tolerance)?;
    let expected =
        tag(keyring, kid, purpose, timestamp, parts).ok_or(EnvelopeError::UnknownKid(kid))?;
    if subtle::ConstantTimeEq::ct_eq(&expected[..], &given[..]).into() {
        Ok(timestamp)
    } else {
        Err(EnvelopeError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mac::Secret;

    fn ring(byte: u8) -> Keyring {
        Keyring::new(3, &[(3, Secret::new(vec![byte; 32]).unwrap())]).unwrap()
    }

    #[test]
    fn round_trip_and_each_refusal() {
        let ring = ring(1);
        let header = sign(&ring, Purpose::Sync, 1_000, &[b"shard", b"bytes"]);
        assert!(header.starts_with("t=1000,kid=3,v1="));
        let check =
            |h: &str, parts: &[&[u8]], now| verify(&ring, Purpose::Sync, h, parts, now, 300);
        assert_eq!(check(&header, &[b"shard", b"bytes"], 1_200), Ok(1_000));
        assert_eq!(check(&header, &[b"shard", b"bytes"], 700), Ok(1_000));
        // Moving a byte between parts changes the signed bytes.
        assert_eq!(
            check(&header, &[b"shar", b"dbytes"], 1_000),
            Err(EnvelopeError::BadSignature)
        );
        assert_eq!(
            check(&header, &[b"shard", b"bytes"], 1_301),
            Err(EnvelopeError::OutsideTolerance { timestamp: 1_000 })
        );
        assert_eq!(
            verify(
                &ring,
                Purpose::Identity,
                &header,
                &[b"shard", b"bytes"],
                1_000,
                300
            ),
            Err(EnvelopeError::BadSignature)
        );
        assert_eq!(
            verify(
                &ring_other(),
                Purpose::Sync,
                &header,
                &[b"shard", b"bytes"],
                1_000,
                300
            ),
            Err(EnvelopeError::BadSignature)
        );
        // 64 bytes of signature, but with multi-byte characters straddling the hex pairs.
        let straddling = format!("t=1000,kid=3,v1=0{}", "é".repeat(31) + "0");
        assert_eq!(
            check(&straddling, &[b"shard", b"bytes"], 1_000),
            Err(EnvelopeError::Malformed)
        );
        for bad in [
            "",
            "t=1000",
            "t=x,kid=3,v1=00",
            "t=1000,kid=3,v1=zz",
            &format!("{header},x=1"),
            &header.replace("kid=3", "kid=4"),
            &header.replace("v1=", "v2="),
        ] {
            assert!(check(bad, &[b"shard", b"bytes"], 1_000).is_err(), "{bad:?}");
        }
    }

    fn ring_other() -> Keyring {
        ring(2)
    }
}
