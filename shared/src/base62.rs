//! Linear-time base62 in fixed-width chunks.
//!
//! Base62 keeps a key selectable with one double-click (no `-`, `+`, `/` or `=`), but a
//! big-integer conversion of a whole body is quadratic in its length. So the body is cut into
//! 8-byte chunks, each a big-endian `u64` written as exactly 11 digits (62^11 > 2^64); a final
//! partial chunk of `k` bytes takes [`chars_for_bytes`]`(k)` digits. Every chunk has one and only
//! one encoding: decoding rejects digits that would overflow the chunk's byte width, so a text
//! maps to at most one byte string.

/// The 62 digits in ascending order: `0-9`, `A-Z`, `a-z`.
pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Digits needed for a chunk of `k` bytes, `k` in `0..=8`: the least `n` with 62^n >= 256^k.
const CHARS_FOR_BYTES: [usize; 9] = [0, 2, 3, 5, 6, 7, 9, 10, 11];

/// Maps an ASCII byte to its digit value, or `0xFF` when it is not a base62 digit. A `static`,
/// so every lookup reads one table rather than a copy materialised per use.
static DECODE: [u8; 256] = {
    let mut table = [0xFF_u8; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Why a base62 text did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A byte at this offset is not one of the 62 digits.
    #[error("invalid base62 character at offset {0}")]
    InvalidCharacter(usize),
    /// The text's length is not the encoding of any byte length.
    #[error("invalid base62 length")]
    InvalidLength,
    /// A chunk's value does not fit the bytes it stands for (no encoder writes this).
    #[error("base62 chunk out of range")]
    Overflow,
}

/// Number of base62 digits that encode `len` bytes.
pub const fn encoded_len(len: usize) -> usize {
    (len / 8) * 11 + CHARS_FOR_BYTES[len % 8]
}

/// Number of bytes that `chars` digits decode to, if `chars` is a valid encoded length.
pub const fn decoded_len(chars: usize) -> Option<usize> {
    let full = chars / 11;
    let rest = chars % 11;
    let mut k = 0;
    while k < CHARS_FOR_BYTES.len() - 1 {
        if CHARS_FOR_BYTES[k] == rest {
            return Some(full * 8 + k);
        }
        k += 1;
    }
    None
}

/// Appends the encoding of `bytes` to `out`.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    out.reserve(encoded_len(bytes.len()));
    for chunk in bytes.chunks(8) {
        let mut value = 0_u64;
        for &b in chunk {
            value = (value << 8) | u64::from(b);
        }
        write_digits(value, CHARS_FOR_BYTES[chunk.len()], out);
    }
}

/// Encodes `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    encode_into(bytes, &mut out);
    out
}

/// Writes `value` as exactly `width` digits, most significant first.
pub(crate) fn write_digits(mut value: u64, width: usize, out: &mut String) {
    let mut digits = [0_u8; 11];
    for slot in digits[..width].iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    // Every byte written is an ASCII digit from ALPHABET, so this is valid UTF-8.
    out.extend(digits[..width].iter().map(|&d| d as char));
}

/// Reads at most 11 digits as a number: `Err(Some(offset))` names a non-digit, `Err(None)`
/// means the value does not fit 64 bits.
pub(crate) fn read_digits(text: &[u8]) -> Result<u64, Option<usize>> {
    let mut value = 0_u64;
    for (i, &c) in text.iter().enumerate() {
        let d = DECODE[c as usize];
        if d == 0xFF {
            return Err(Some(i));
        }
        value = value
            .checked_mul(62)
            .and_then(|v| v.checked_add(u64::from(d)))
            .ok_or(None)?;
    }
    Ok(value)
}

/// Decodes `text` into `out`, which must be exactly [`decoded_len`] bytes long.
pub fn decode_into(text: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    if decoded_len(text.len()) != Some(out.len()) {
        return Err(DecodeError::InvalidLength);
    }
    // Digits are looked up without branching; any non-digit sets bit 7 of `seen`, and the slow
    // search for its position only runs then.
    let mut seen = 0_u8;
    let mut overflow = false;
    let full = out.len() / 8;
    let (full_text, tail_text) = text.split_at(full * 11);
    let (full_out, tail_out) = out.split_at_mut(full * 8);
    for (digits, bytes) in full_text.chunks_exact(11).zip(full_out.chunks_exact_mut(8)) {
        // Each digit times its place value: eleven independent multiplies, no carried chain.
        let mut high = 0_u64;
        let mut low = 0_u64;
        for (i, &c) in digits.iter().enumerate() {
            let v = DECODE[usize::from(c)];
            seen |= v;
            let term = u64::from(v & 0x3F) * PLACE[i];
            if i < 5 {
                high += term;
            } else {
                low += term;
            }
        }
        let value = join(high, low);
        overflow |= value.is_none();
        bytes.copy_from_slice(&value.unwrap_or(0).to_be_bytes());
    }
    if !tail_out.is_empty() {
        let mut value = 0_u64;
        for &c in tail_text {
            let v = DECODE[usize::from(c)];
            seen |= v;
            value = value * 62 + u64::from(v & 0x3F);
        }
        // At most 10 digits: no u64 overflow, but the value may exceed the tail's bytes.
        overflow |= value >> (8 * tail_out.len()) != 0;
        tail_out.copy_from_slice(&value.to_be_bytes()[8 - tail_out.len()..]);
    }
    if seen & 0x80 != 0 {
        let position = text
            .iter()
            .position(|&c| DECODE[usize::from(c)] == 0xFF)
            .unwrap_or(0);
        return Err(DecodeError::InvalidCharacter(position));
    }
    if overflow {
        return Err(DecodeError::Overflow);
    }
    Ok(())
}

/// Place values of a full chunk's digits within its high (first 5) and low (last 6) halves.
const PLACE: [u64; 11] = {
    let mut place = [0_u64; 11];
    let mut i = 0;
    while i < 11 {
        let exponent = if i < 5 { 4 - i } else { 10 - i };
        place[i] = 62_u64.pow(exponent as u32);
        i += 1;
    }
    place
};

/// `high * 62^6 + low` for a chunk read as 5 high and 6 low digits, or `None` past `u64::MAX`.
/// Splitting the chunk halves the multiply-add chain; the bound is decided without a widening
/// multiply (a `u128` multiply is a libcall in wasm32).
fn join(high: u64, low: u64) -> Option<u64> {
    const LOW_RANGE: u64 = 62_u64.pow(6);
    const MAX_HIGH: u64 = u64::MAX / LOW_RANGE;
    const MAX_LOW: u64 = u64::MAX % LOW_RANGE;
    (high < MAX_HIGH || (high == MAX_HIGH && low <= MAX_LOW)).then(|| high * LOW_RANGE + low)
}

/// Decodes `text`.
pub fn decode(text: &str) -> Result<Vec<u8>, DecodeError> {
    let len = decoded_len(text.len()).ok_or(DecodeError::InvalidLength)?;
    let mut out = vec![0; len];
    decode_into(text.as_bytes(), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chars_for_bytes_is_minimal() {
        for (k, &n) in CHARS_FOR_BYTES.iter().enumerate() {
            let capacity = 62_f64.powi(n as i32);
            let needed = 256_f64.powi(k as i32);
            assert!(capacity >= needed, "{k} bytes do not fit {n} digits");
            if n > 0 {
                assert!(
                    62_f64.powi(n as i32 - 1) < needed,
                    "{k} bytes fit fewer digits"
                );
            }
        }
    }

    #[test]
    fn round_trips_every_length() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 255) as u8).collect();
            let text = encode(&bytes);
            assert_eq!(text.len(), encoded_len(len));
            assert_eq!(decode(&text).unwrap(), bytes);
            let all_ones = vec![0xFF; len];
            assert_eq!(decode(&encode(&all_ones)).unwrap(), all_ones);
        }
    }

    #[test]
    fn rejects_non_canonical_and_bad_input() {
        // 11 'z' digits exceed u64::MAX.
        assert_eq!(decode("zzzzzzzzzzz"), Err(DecodeError::Overflow));
        // u64::MAX is the largest 11-digit chunk; one more overflows.
        let max = encode(&[0xFF; 8]);
        assert_eq!(decode(&max), Ok(vec![0xFF; 8]));
        let last = ALPHABET
            .iter()
            .position(|&d| d == max.as_bytes()[10])
            .unwrap();
        let over = format!("{}{}", &max[..10], ALPHABET[last + 1] as char);
        assert_eq!(decode(&over), Err(DecodeError::Overflow));
        // 2 digits encode one byte; "zz" = 3843 > 255.
        assert_eq!(decode("zz"), Err(DecodeError::Overflow));
        assert_eq!(decode("4"), Err(DecodeError::InvalidLength));
        assert_eq!(decode("0_"), Err(DecodeError::InvalidCharacter(1)));
        assert_eq!(decode("0000000000é"), Err(DecodeError::InvalidLength));
    }
}
