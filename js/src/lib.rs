//! `@lynxo/keys`: what an origin or a tool needs from `shared`, for JavaScript, through
//! wasm-bindgen. This crate is the raw wasm surface; the package's JavaScript (`js/package/`)
//! turns its failures into `Error` subclasses and reads requests and headers, so each call
//! crosses into wasm once.
//!
//! - [`Keyring`]: an identity keyring, built inside the module from its config text and never
//!   handed back: no method returns, prints or serializes a secret.
//! - [`ReplayCache`] and [`verify_identity`]: the origin's check of the identity the edge signed,
//!   [`shared::identity::Identity::verify`] itself, so Node origins apply the Rust origin's rules.
//! - [`inspect_key`] and [`find_keys`]: [`shared::scan`], what is known without a secret.
//!
//! A failure is thrown as a string carrying a stable `code` (the Rust error's code), the `header`
//! or the edge's `hint` where there is one, and the message ([`failure`]).
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use js_sys::{Array, Object, Reflect};
use shared::identity::{self, Identity, IdentityError};
use shared::scan;
use wasm_bindgen::prelude::*;

/// The largest integer a JavaScript number holds exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// A failure, thrown as the string `code \n detail \n message` (detail: the header or hint, or
/// empty). The package's JavaScript turns it into its `Error` subclass: a string costs nothing
/// to throw, where an `Error` made here would capture a stack trace that is then thrown away.
fn failure(code: &str, message: &str, detail: Option<&str>) -> JsValue {
    JsValue::from_str(&format!("{code}\n{}\n{message}", detail.unwrap_or("")))
}

fn set(target: &JsValue, name: &str, value: &JsValue) {
    // Setting a property of an object this module just made cannot fail.
    let _ = Reflect::set(target, &JsValue::from_str(name), value);
}

/// A whole number of at most 2^53 - 1, as a JavaScript number argument must be here.
fn whole(value: f64, what: &str) -> Result<u64, JsValue> {
    if (0.0..=MAX_SAFE_INTEGER).contains(&value) && value.fract() == 0.0 {
        // Exact: a whole number in range.
        return Ok(value as u64);
    }
    Err(failure(
        "invalid_argument",
        &format!("{what} must be a whole number from 0 to 2^53 - 1"),
        None,
    ))
}

/// An identity keyring (`active=KID;KID:HEX,...`, the edge's `ORIGIN_KEYRING`). Opaque: once
/// built, nothing reads its secrets back out of the module.
#[wasm_bindgen]
pub struct Keyring(shared::mac::Keyring);

#[wasm_bindgen]
impl Keyring {
    /// Parses the keyring text; throws `invalid_keyring` (the message names the entry, never
    /// its secret).
    #[wasm_bindgen(constructor)]
    pub fn new(config: &str) -> Result<Keyring, JsValue> {
        shared::mac::Keyring::from_config(config)
            .map(Self)
            .map_err(|e| failure("invalid_keyring", &e.to_string(), None))
    }
}

/// The request ids this origin accepted within its window ([`identity::ReplayCache`]).
#[wasm_bindgen]
pub struct ReplayCache(identity::ReplayCache);

#[wasm_bindgen]
impl ReplayCache {
    /// A cache of at most `capacity` ids for signatures at most `window` seconds old (1 to 30).
    #[wasm_bindgen(constructor)]
    pub fn new(capacity: u32, window: u32) -> Result<ReplayCache, JsValue> {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        identity::ReplayCache::new(capacity, u64::from(window))
            .map(Self)
            .map_err(|e| failure("invalid_replay_cache", &e.to_string(), None))
    }

    /// How many request ids it holds now.
    #[wasm_bindgen(getter)]
    pub fn size(&self) -> u32 {
        u32::try_from(self.0.len()).unwrap_or(u32::MAX)
    }

    /// The window, in seconds.
    #[wasm_bindgen(getter)]
    pub fn window(&self) -> u32 {
        u32::try_from(self.0.window()).unwrap_or(u32::MAX)
    }
}

/// The identity headers, in the order [`verify_identity`] receives their values.
const HEADERS: [&str; 6] = [
    identity::SIGNATURE_HEADER,
    identity::ACCOUNT_HEADER,
    identity::KEY_ID_HEADER,
    identity::ENVIRONMENT_HEADER,
    identity::SCOPES_HEADER,
    identity::REQUEST_ID_HEADER,
];

/// Checks the identity headers against the request as the origin received it, at `now` (Unix
/// seconds), and spends the request id in `replay`: [`Identity::verify`]. Returns when the edge
/// signed it; the headers it accepted are canonical, so the caller reads the identity from them.
///
/// `fields` is the method, path and query, then the value of each of [`HEADERS`], joined by
/// `\n` (which no HTTP request line or header value holds): one string crosses into wasm, not
/// nine. Bit `i` of `present` says whether header `i` was sent at all.
#[wasm_bindgen(js_name = verifyIdentity)]
pub fn verify_identity(
    keyring: &Keyring,
    replay: &mut ReplayCache,
    now: f64,
    body_length: f64,
    present: u32,
    fields: &str,
) -> Result<f64, JsValue> {
    let mut parts = fields.split('\n');
    let mut next = || parts.next().unwrap_or_default();
    let (method, path, query) = (next(), next(), next());
    let values = [next(), next(), next(), next(), next(), next()];
    if parts.next().is_some() {
        return Err(failure(
            "invalid_argument",
            "request parts and header values hold no line breaks",
            None,
        ));
    }
    let request = identity::Request {
        method,
        path,
        query,
        body_length: whole(body_length, "bodyLength")?,
    };
    let now = whole(now, "now")?;
    let header = |name: &str| {
        let i = HEADERS.iter().position(|h| *h == name)?;
        (present & (1 << i) != 0).then_some(values[i])
    };
    match Identity::verify(&keyring.0, header, &request, now, &mut replay.0) {
        // Signing times are Unix seconds the edge wrote: far below 2^53.
        Ok(verified) => Ok(verified.signed_at as f64),
        Err(e) => {
            let header = match e {
                IdentityError::Missing(name) | IdentityError::Malformed(name) => Some(name),
                _ => None,
            };
            Err(failure(e.code(), &e.to_string(), header))
        }
    }
}

/// The names of every scope in the catalog: what a Full Access key may do today.
#[wasm_bindgen(js_name = scopeNames)]
pub fn scope_names() -> Array {
    shared::Scope::ALL
        .iter()
        .map(|s| JsValue::from_str(s.name()))
        .collect()
}

/// What is known about `text` without a secret ([`scan::inspect`]): `{ environment, hint }`, or
/// a thrown error with the check's `code` and, where the edge gives one, its `hint`.
#[wasm_bindgen(js_name = inspectKey)]
pub fn inspect_key(text: &str) -> Result<Object, JsValue> {
    match scan::inspect(text) {
        Ok(found) => {
            let out = Object::new();
            set(
                &out,
                "environment",
                &JsValue::from_str(found.environment.name()),
            );
            set(&out, "hint", &JsValue::from_str(&found.hint));
            Ok(out)
        }
        Err(e) => {
            let hint = scan::error_hint(&e);
            Err(failure(e.code(), &e.to_string(), hint.as_deref()))
        }
    }
}

/// [`inspect_key`] for a text of `length` UTF-8 bytes that the package did not copy into the
/// module: past [`shared::key::MAX_INPUT_LEN`] the length alone is the answer, and wasm memory,
/// which never shrinks, would otherwise keep the size of the largest text ever inspected.
#[wasm_bindgen(js_name = inspectLongKey)]
pub fn inspect_long_key(length: f64) -> Result<(), JsValue> {
    let length = usize::try_from(whole(length, "length")?).unwrap_or(usize::MAX);
    let Some(e) = shared::key::too_long(length) else {
        return Err(failure(
            "invalid_argument",
            "only a text longer than the longest key input is inspected by its length",
            None,
        ));
    };
    let hint = scan::error_hint(&e);
    Err(failure(e.code(), &e.to_string(), hint.as_deref()))
}

/// The checksum-confirmed keys in `text` ([`scan::find_keys`]), in order, each as
/// `{ key, index, environment, hint }` with `index` in UTF-16 code units, as JavaScript
/// strings count.
#[wasm_bindgen(js_name = findKeys)]
pub fn find_keys(text: &str) -> Array {
    let mut index = 0;
    let mut counted = 0;
    scan::find_keys(text)
        .into_iter()
        .map(|found| {
            index += text[counted..found.start].encode_utf16().count();
            counted = found.start;
            let out = Object::new();
            set(&out, "key", &JsValue::from_str(found.text));
            set(&out, "index", &JsValue::from(index));
            set(
                &out,
                "environment",
                &JsValue::from_str(found.environment.name()),
            );
            set(
                &out,
                "hint",
                &JsValue::from_str(&shared::key::hint(found.text)),
            );
            JsValue::from(out)
        })
        .collect()
}
