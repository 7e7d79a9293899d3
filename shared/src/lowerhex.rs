//! Lowercase hex text, written a byte at a time from a table: what every signature header and
//! id in the wire formats spells its bytes in. `core::fmt` (`{:02x}`, `{:032x}`) goes through
//! the formatting machinery for each byte or digit, which the edge paid several times per
//! request (`docs/benchmarks.md`, "Edge: CPU per request").

use core::fmt;

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` to `out` as lowercase hex, two digits a byte, 32 bytes at a time through a
/// buffer on the stack.
pub fn write<W: fmt::Write + ?Sized>(out: &mut W, bytes: &[u8]) -> fmt::Result {
    let mut buf = [0_u8; 64];
    for chunk in bytes.chunks(32) {
        for (pair, &b) in buf.chunks_exact_mut(2).zip(chunk) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 15)];
        }
        // Only ASCII digits were written.
        out.write_str(core::str::from_utf8(&buf[..chunk.len() * 2]).map_err(|_| fmt::Error)?)?;
    }
    Ok(())
}

/// Appends `bytes` to `out` as lowercase hex, two digits a byte.
pub fn push(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    // Writing to a `String` cannot fail.
    let _ = write(out, bytes);
}

/// `bytes` as lowercase hex, two digits a byte.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push(&mut out, bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_what_core_fmt_writes() {
        let bytes: Vec<u8> = (0..=255).collect();
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(encode(&bytes), expected);
        let mut out = "t=1,".to_owned();
        push(&mut out, &[0x00, 0x0f, 0xa0, 0xff]);
        assert_eq!(out, "t=1,000fa0ff");
        assert_eq!(encode(&[]), "");
        // More than one buffer's worth.
        assert_eq!(encode(&[0xab; 70]), "ab".repeat(70));
    }
}
