//! HMAC-SHA256 signing keys and the keyring that selects them by key id (kid).
//!
//! Each signing secret is never used directly: every purpose (key tags, revocation lists, the
//! edge's identity headers) gets its own subkey, `HMAC(secret, purpose label)`, so a tag made for
//! one purpose can never be replayed as another. Subkeys are pre-keyed once, when the keyring is
//! built: a verify then costs two SHA-256 compressions for a message of at most 55 bytes.
//!
//! Tags are compared in constant time and their length is checked exactly: RustCrypto's
//! `verify_truncated_left` accepts any non-empty prefix of the tag, which would let a forger
//! guess a one-byte tag. [`MacKey::verify`] does not.
//!
//! Key format v2 seals its claims with two more subkeys per secret, each a [`Prf`]: SHA-256
//! keyed through its chaining value, for inputs of one fixed length that fit one block. That is
//! one compression per call where HMAC needs two; `docs/key-format.md` gives the argument.

use core::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Full length of an HMAC-SHA256 tag in bytes.
pub const TAG_LEN: usize = 32;

/// Shortest secret the keyring accepts, in bytes (256 bits).
pub const MIN_SECRET_LEN: usize = 32;

/// What a subkey signs. The label is part of the derivation and must never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Tags of API keys (`key::issue` / `key::verify`).
    KeyTag,
    /// Tags of revocation-list shards.
    RevocationList,
    /// Tags of the identity headers the edge forwards to the origin.
    Identity,
    /// Tags of the control plane's pushes to the edge's sync endpoint.
    Sync,
    /// Tags of the usage batches the edge sends to the control plane.
    Usage,
    /// The control plane's sign-in defences: keyed names for attempt budgets (so an email is
    /// never held in clear) and the device cookies of browsers that signed in before.
    SignIn,
}

impl Purpose {
    const fn label(self) -> &'static [u8] {
        match self {
            Self::KeyTag => b"lynxo-keys/v1/key-tag",
            Self::RevocationList => b"lynxo-keys/v1/revocation-list",
            Self::Identity => b"lynxo-keys/v1/identity",
            Self::Sync => b"lynxo-keys/v1/sync",
            Self::Usage => b"lynxo-keys/v1/usage",
            Self::SignIn => b"lynxo-keys/v1/sign-in",
        }
    }
}

/// What a [`Prf`] subkey computes. The label is part of the derivation and must never change;
/// each subkey only ever sees inputs of one length (its purpose fixes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrfPurpose {
    /// The synthetic IV and tag of a v2 key: 48 bytes in (version, kid, claims).
    KeySiv,
    /// The keystream that seals a v2 key's claims: 17 bytes in (tag, block counter).
    KeyStream,
}

impl PrfPurpose {
    const fn label(self) -> &'static [u8] {
        match self {
            Self::KeySiv => b"lynxo-keys/v2/key-siv",
            Self::KeyStream => b"lynxo-keys/v2/key-stream",
        }
    }
}

/// Secret key material. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps raw secret bytes; at least [`MIN_SECRET_LEN`] bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Self, KeyringError> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(KeyringError::SecretTooShort { len: bytes.len() });
        }
        Ok(Self(bytes))
    }

    /// The raw bytes, for deriving subkeys or storing the secret.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

const BLOCK_LEN: usize = 64;

/// HMAC-SHA256 (RFC 2104) with the key's two pad blocks compressed once, up front.
///
/// Built directly on the SHA-256 compression function rather than on `hmac::Hmac`: a tag then
/// costs exactly `ceil((len + 9) / 64) + 1` compressions with no buffering or state copies, which
/// halves the cost of a key verify (48 bytes: two compressions). Checked against every Wycheproof
/// HMAC-SHA256 vector and, by property test, against the `hmac` crate for arbitrary inputs.
#[derive(Clone)]
pub struct MacKey {
    /// State after compressing `key ^ ipad`.
    inner: [u32; 8],
    /// State after compressing `key ^ opad`.
    outer: [u32; 8],
}

impl MacKey {
    /// Keys HMAC-SHA256 with `key` (any length, as RFC 2104 allows).
    pub fn new(key: &[u8]) -> Self {
        Self {
            inner: padded_key_state(key, IPAD),
            outer: padded_key_state(key, OPAD),
        }
    }

    /// The full 32-byte tag of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; TAG_LEN] {
        if message.len() > BLOCK_LEN - 9 {
            return self.sign_parts(&[message]);
        }
        // One padded block each for the inner and the outer hash: the key-verify hot path.
        let mut block = [0_u8; BLOCK_LEN];
        block[..message.len()].copy_from_slice(message);
        let inner = last_block(self.inner, &mut block, message.len());
        block = [0_u8; BLOCK_LEN];
        block[..TAG_LEN].copy_from_slice(&inner);
        last_block(self.outer, &mut block, TAG_LEN)
    }

    /// The tag of the concatenation of `parts`, without copying them together.
    pub fn sign_parts(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let inner = finish(self.inner, BLOCK_LEN, parts);
        finish(self.outer, BLOCK_LEN, &[&inner])
    }

    /// Whether `tag` is exactly the first `tag_len` bytes of `message`'s tag.
    ///
    /// `tag_len` is the length the format defines, never `tag.len()`: a tag of any other length
    /// is rejected, so a short tag cannot be brute-forced. The comparison is constant-time.
    pub fn verify(&self, message: &[u8], tag: &[u8], tag_len: usize) -> bool {
        tag_matches(&self.sign(message), tag, tag_len)
    }
}

/// Whether `tag` is exactly the first `tag_len` bytes of `expected`, compared in constant time.
/// `tag_len` comes from the format, never from the input: a tag of any other length, or an
/// empty one, is refused.
pub fn tag_matches(expected: &[u8; TAG_LEN], tag: &[u8], tag_len: usize) -> bool {
    if tag_len == 0 || tag_len > TAG_LEN || tag.len() != tag_len {
        return false;
    }
    // Every byte pair is XORed into one accumulator with no branch, and only the accumulator
    // goes through `subtle`'s optimisation barrier: the same guarantee as a byte-wise `ct_eq`
    // on slices, which pays the barrier once per byte.
    let diff = expected[..tag_len]
        .iter()
        .zip(tag)
        .fold(0_u8, |acc, (e, t)| acc | (e ^ t));
    diff.ct_eq(&0).into()
}

const IPAD: u8 = 0x36;
const OPAD: u8 = 0x5c;

/// The SHA-256 state after compressing RFC 2104's key block (`key` zero-padded to a block, or
/// hashed first when longer) XORed with `pad`.
fn padded_key_state(key: &[u8], pad: u8) -> [u32; 8] {
    let mut block = [0_u8; BLOCK_LEN];
    if key.len() > BLOCK_LEN {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    block.iter_mut().for_each(|b| *b ^= pad);
    let mut state = SHA256_IV;
    compress(&mut state, &block);
    state
}

/// A pseudo-random function of one SHA-256 compression: `SHA-256((key ^ ipad) || input)`, the
/// inner hash of HMAC-SHA256 without the outer one.
///
/// Only for inputs of one fixed length per subkey, at most 55 bytes (one block with padding):
/// then the compression function keyed through its chaining value is the PRF (the assumption
/// HMAC's own proof rests on), and length extension has nothing to extend, since no other
/// length is ever evaluated. The type has no other operation, so a `Prf` subkey can never also
/// serve as an HMAC key.
#[derive(Clone)]
pub struct Prf {
    /// State after compressing `key ^ ipad`.
    state: [u32; 8],
}

impl Prf {
    /// Keys the PRF with `key` (RFC 2104's key block, as [`MacKey::new`]). Private: the only
    /// `Prf`s are the keyring's subkeys.
    fn new(key: &[u8]) -> Self {
        Self {
            state: padded_key_state(key, IPAD),
        }
    }

    /// The 32-byte output for `input`. The length is a type parameter, checked at compile time,
    /// so each call site evaluates exactly one length.
    pub fn eval<const N: usize>(&self, input: &[u8; N]) -> [u8; 32] {
        const { assert!(N <= BLOCK_LEN - 9, "a Prf input must fit one padded block") };
        let mut block = [0_u8; BLOCK_LEN];
        block[..N].copy_from_slice(input);
        last_block(self.state, &mut block, N)
    }
}

impl fmt::Debug for Prf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Prf(<redacted>)")
    }
}

/// Pads a block holding the last `len` (at most 55) message bytes after one key block, and
/// returns the digest.
fn last_block(mut state: [u32; 8], block: &mut [u8; BLOCK_LEN], len: usize) -> [u8; 32] {
    block[len] = 0x80;
    let bits = ((BLOCK_LEN + len) as u64) * 8;
    block[BLOCK_LEN - 8..].copy_from_slice(&bits.to_be_bytes());
    compress(&mut state, block);
    digest_bytes(state)
}

fn digest_bytes(state: [u32; 8]) -> [u8; 32] {
    let mut digest = [0_u8; 32];
    for (out, word) in digest.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&word.to_be_bytes());
    }
    digest
}

fn compress(state: &mut [u32; 8], block: &[u8; BLOCK_LEN]) {
    sha2::compress256(state, &[(*block).into()]);
}

/// Hashes `parts` onto `state`, which has already absorbed `prefix_len` bytes (whole blocks),
/// and returns the SHA-256 digest.
fn finish(mut state: [u32; 8], prefix_len: usize, parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0_u8; BLOCK_LEN];
    let mut filled = 0;
    let mut total = prefix_len as u64;
    for part in parts {
        total += part.len() as u64;
        let mut rest = *part;
        while !rest.is_empty() {
            let take = rest.len().min(BLOCK_LEN - filled);
            block[filled..filled + take].copy_from_slice(&rest[..take]);
            filled += take;
            rest = &rest[take..];
            if filled == BLOCK_LEN {
                compress(&mut state, &block);
                filled = 0;
            }
        }
    }
    // FIPS 180-4 padding: 0x80, zeros, then the message length in bits, big-endian.
    block[filled] = 0x80;
    block[filled + 1..].fill(0);
    if filled + 1 > BLOCK_LEN - 8 {
        compress(&mut state, &block);
        block.fill(0);
    }
    block[BLOCK_LEN - 8..].copy_from_slice(&(total * 8).to_be_bytes());
    compress(&mut state, &block);
    digest_bytes(state)
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

/// The subkeys of one signing secret.
#[derive(Clone)]
struct SigningKey {
    kid: u8,
    key_tag: MacKey,
    revocation_list: MacKey,
    identity: MacKey,
    sync: MacKey,
    usage: MacKey,
    sign_in: MacKey,
    key_siv: Prf,
    key_stream: Prf,
}

impl SigningKey {
    fn new(kid: u8, secret: &Secret) -> Self {
        let root = MacKey::new(secret.expose());
        let derive = |purpose: Purpose| MacKey::new(&root.sign(purpose.label()));
        let derive_prf = |purpose: PrfPurpose| Prf::new(&root.sign(purpose.label()));
        Self {
            kid,
            key_tag: derive(Purpose::KeyTag),
            revocation_list: derive(Purpose::RevocationList),
            identity: derive(Purpose::Identity),
            sync: derive(Purpose::Sync),
            usage: derive(Purpose::Usage),
            sign_in: derive(Purpose::SignIn),
            key_siv: derive_prf(PrfPurpose::KeySiv),
            key_stream: derive_prf(PrfPurpose::KeyStream),
        }
    }

    fn prf(&self, purpose: PrfPurpose) -> &Prf {
        match purpose {
            PrfPurpose::KeySiv => &self.key_siv,
            PrfPurpose::KeyStream => &self.key_stream,
        }
    }

    fn mac(&self, purpose: Purpose) -> &MacKey {
        match purpose {
            Purpose::KeyTag => &self.key_tag,
            Purpose::RevocationList => &self.revocation_list,
            Purpose::Identity => &self.identity,
            Purpose::Sync => &self.sync,
            Purpose::Usage => &self.usage,
            Purpose::SignIn => &self.sign_in,
        }
    }
}

/// Why a keyring could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// A secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("signing secret is {len} bytes; at least {MIN_SECRET_LEN} are required")]
    SecretTooShort {
        /// The secret's length in bytes.
        len: usize,
    },
    /// Two secrets were given for the same kid.
    #[error("kid {0} is listed twice")]
    DuplicateKid(u8),
    /// The active kid has no secret.
    #[error("active kid {0} has no secret")]
    MissingActive(u8),
    /// A keyring text line is not `kid:hex-secret`.
    #[error("keyring entry {0} is not `kid:hex-secret`")]
    InvalidEntry(usize),
}

/// Signing keys by kid, one of them active for issuing and signing.
///
/// Old kids stay in the ring after a signing-key rotation so keys issued under them keep
/// verifying; removing a kid invalidates every key it signed.
#[derive(Clone)]
pub struct Keyring {
    active: u8,
    // Indexed by kid: a verify is one array lookup, no hashing.
    keys: Box<[Option<SigningKey>; 256]>,
}

impl Keyring {
    /// Builds a keyring from `(kid, secret)` pairs; `active` signs new keys and lists.
    pub fn new(active: u8, secrets: &[(u8, Secret)]) -> Result<Self, KeyringError> {
        let mut keys: Box<[Option<SigningKey>; 256]> = Box::new([const { None }; 256]);
        for (kid, secret) in secrets {
            let slot = &mut keys[usize::from(*kid)];
            if slot.is_some() {
                return Err(KeyringError::DuplicateKid(*kid));
            }
            *slot = Some(SigningKey::new(*kid, secret));
        }
        if keys[usize::from(active)].is_none() {
            return Err(KeyringError::MissingActive(active));
        }
        Ok(Self { active, keys })
    }

    /// Parses `active=KID;KID:HEX,KID:HEX` — the form secrets take in an environment variable
    /// or a Worker secret. Example: `active=1;1:00112233...`.
    pub fn from_config(text: &str) -> Result<Self, KeyringError> {
        let (active, secrets) = parse_config(text)?;
        Self::new(active, &secrets)
    }

    /// The kid that signs new keys and lists.
    pub fn active_kid(&self) -> u8 {
        self.active
    }

    /// Whether `kid` is in the ring.
    pub fn contains(&self, kid: u8) -> bool {
        self.keys[usize::from(kid)].is_some()
    }

    /// The kids in the ring, ascending.
    pub fn kids(&self) -> impl Iterator<Item = u8> + '_ {
        self.keys.iter().flatten().map(|k| k.kid)
    }

    /// The pre-keyed MAC for `purpose` under `kid`, if the kid is in the ring.
    pub fn mac(&self, kid: u8, purpose: Purpose) -> Option<&MacKey> {
        self.keys[usize::from(kid)].as_ref().map(|k| k.mac(purpose))
    }

    /// The PRF subkey for `purpose` under `kid`, if the kid is in the ring.
    pub fn prf(&self, kid: u8, purpose: PrfPurpose) -> Option<&Prf> {
        self.keys[usize::from(kid)].as_ref().map(|k| k.prf(purpose))
    }

    /// The pre-keyed MAC for `purpose` under the active kid.
    pub fn active_mac(&self, purpose: Purpose) -> &MacKey {
        // `new` guarantees the active kid is present.
        self.mac(self.active, purpose)
            .unwrap_or_else(|| unreachable!())
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("kids", &self.kids().collect::<Vec<_>>())
            .finish()
    }
}

/// Parses the keyring text `active=KID;KID:HEX,KID:HEX` into the active kid and the secrets,
/// without deriving anything: [`Keyring::from_config`] builds the signing keyring from it, and
/// other keyrings of the same form (the control plane's audit keyring) reuse it.
pub fn parse_config(text: &str) -> Result<(u8, Vec<(u8, Secret)>), KeyringError> {
    let text = text.trim();
    let (active, entries) = text
        .strip_prefix("active=")
        .and_then(|rest| rest.split_once(';'))
        .ok_or(KeyringError::InvalidEntry(0))?;
    let active: u8 = active
        .trim()
        .parse()
        .map_err(|_| KeyringError::InvalidEntry(0))?;
    let mut secrets = Vec::new();
    for (i, entry) in entries.split(',').enumerate() {
        let invalid = || KeyringError::InvalidEntry(i + 1);
        let (kid, hex) = entry.trim().split_once(':').ok_or_else(invalid)?;
        let kid: u8 = kid.parse().map_err(|_| invalid())?;
        let bytes = decode_hex(hex).ok_or_else(invalid)?;
        secrets.push((kid, Secret::new(bytes)?));
    }
    Ok((active, secrets))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if text.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16);
    text.chunks(2)
        .map(|pair| Some((nibble(pair[0])? << 4 | nibble(pair[1])?) as u8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> Secret {
        Secret::new(vec![byte; 32]).unwrap()
    }

    #[test]
    fn verify_checks_length_exactly() {
        let key = MacKey::new(b"k");
        let tag = key.sign(b"message");
        assert!(key.verify(b"message", &tag[..16], 16));
        assert!(key.verify(b"message", &tag, 32));
        for len in 0..16 {
            assert!(
                !key.verify(b"message", &tag[..len], 16),
                "prefix of {len} bytes accepted"
            );
        }
        assert!(!key.verify(b"message", &tag[..17], 16));
        assert!(!key.verify(b"message", &[], 0));
        assert!(!key.verify(b"other", &tag[..16], 16));
    }

    #[test]
    fn matches_the_hmac_crate_for_every_length_around_block_edges() {
        use hmac::Mac;
        for key_len in [0, 1, 32, 63, 64, 65, 200] {
            let key: Vec<u8> = (0..key_len).map(|i| i as u8).collect();
            let ours = MacKey::new(&key);
            for len in 0..300 {
                let message: Vec<u8> = (0..len).map(|i| (i * 7 + key_len) as u8).collect();
                let mut reference = hmac::Hmac::<Sha256>::new_from_slice(&key).unwrap();
                reference.update(&message);
                let want: [u8; 32] = reference.finalize().into_bytes().into();
                assert_eq!(ours.sign(&message), want, "key {key_len} message {len}");
                let split = len / 3;
                assert_eq!(
                    ours.sign_parts(&[&message[..split], &message[split..]]),
                    want
                );
            }
        }
    }

    const PURPOSES: [Purpose; 6] = [
        Purpose::KeyTag,
        Purpose::RevocationList,
        Purpose::Identity,
        Purpose::Sync,
        Purpose::Usage,
        Purpose::SignIn,
    ];

    #[test]
    fn purposes_use_distinct_subkeys() {
        let ring = Keyring::new(1, &[(1, secret(7))]).unwrap();
        let tags: Vec<_> = PURPOSES
            .iter()
            .map(|&p| ring.active_mac(p).sign(b"same message"))
            .collect();
        for (i, a) in tags.iter().enumerate() {
            for b in &tags[i + 1..] {
                assert_ne!(a, b);
            }
        }
        // The PRF subkeys differ from each other and from every MAC subkey.
        let mut states: Vec<[u32; 8]> =
            PURPOSES.iter().map(|&p| ring.active_mac(p).inner).collect();
        states.extend(
            [PrfPurpose::KeySiv, PrfPurpose::KeyStream].map(|p| ring.prf(1, p).unwrap().state),
        );
        for (i, a) in states.iter().enumerate() {
            for b in &states[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn prf_is_the_inner_hash_of_hmac() {
        // SHA-256((key ^ ipad) || input), computed with the plain SHA-256 API: what another
        // implementation of the format would write.
        fn reference(key: &[u8], input: &[u8]) -> [u8; 32] {
            let mut block = [0x36_u8; 64];
            block.iter_mut().zip(key).for_each(|(b, k)| *b ^= k);
            let mut h = Sha256::new();
            h.update(block);
            h.update(input);
            h.finalize().into()
        }
        let key: Vec<u8> = (0..32).collect();
        let prf = Prf::new(&key);
        let input: Vec<u8> = (100..155).collect();
        assert_eq!(prf.eval(&[0_u8; 0]), reference(&key, &[]));
        assert_eq!(prf.eval(&[9_u8; 17]), reference(&key, &[9; 17]));
        let forty_eight: [u8; 48] = input[..48].try_into().unwrap();
        assert_eq!(prf.eval(&forty_eight), reference(&key, &forty_eight));
        let most: [u8; 55] = input[..55].try_into().unwrap();
        assert_eq!(prf.eval(&most), reference(&key, &most));
        assert_eq!(prf.state, MacKey::new(&key).inner);
        assert_eq!(format!("{prf:?}"), "Prf(<redacted>)");
    }

    #[test]
    fn keyring_validates_its_input() {
        assert_eq!(
            Secret::new(vec![0; 31]).unwrap_err(),
            KeyringError::SecretTooShort { len: 31 }
        );
        assert_eq!(
            Keyring::new(1, &[(1, secret(1)), (1, secret(2))]).unwrap_err(),
            KeyringError::DuplicateKid(1)
        );
        assert_eq!(
            Keyring::new(2, &[(1, secret(1))]).unwrap_err(),
            KeyringError::MissingActive(2)
        );
    }

    #[test]
    fn keyring_parses_config_and_redacts_debug() {
        let hex = "ab".repeat(32);
        let ring = Keyring::from_config(&format!("active=3;3:{hex},9:{hex}")).unwrap();
        assert_eq!(ring.active_kid(), 3);
        assert_eq!(ring.kids().collect::<Vec<_>>(), [3, 9]);
        let debug = format!(
            "{ring:?} {:?} {:?}",
            secret(0xab),
            ring.active_mac(Purpose::KeyTag)
        );
        assert!(!debug.to_lowercase().contains("abab"), "{debug}");
        for bad in [
            "",
            "active=1",
            "active=x;1:00",
            "active=1;1:zz",
            "active=1;1",
            "active=1;300:00",
        ] {
            assert!(Keyring::from_config(bad).is_err(), "{bad:?} accepted");
        }
    }
}
