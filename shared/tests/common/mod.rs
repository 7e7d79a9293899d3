//! What the vectors files share: the keyring they are signed with, as JSON.

use serde::Deserialize;
use shared::mac::{Keyring, Secret};

/// `{"active": KID, "keys": [{"kid": KID, "secret": "<hex>"}, ...]}`.
#[derive(Deserialize)]
pub struct KeyringJson {
    active: u8,
    keys: Vec<SecretJson>,
}

#[derive(Deserialize)]
struct SecretJson {
    kid: u8,
    secret: String,
}

impl KeyringJson {
    /// The keyring itself.
    pub fn keyring(&self) -> Keyring {
        let secrets: Vec<(u8, Secret)> = self
            .keys
            .iter()
            .map(|k| (k.kid, Secret::new(hex::decode(&k.secret).unwrap()).unwrap()))
            .collect();
        Keyring::new(self.active, &secrets).unwrap()
    }
}
