//! Caller pseudonyms: HMAC-SHA256 of the E.164 number under a key kept outside the database
//! (a file under `data_dir`, created on first run with mode 0600). The same number always
//! gives the same pseudonym under one key, so opt-outs, erasure and reports work by pseudonym
//! while the database never needs the number itself.

use crate::keys::SecretKey;
use std::path::Path;

/// The pseudonymisation key.
#[derive(Clone, Debug)]
pub struct PseudonymKey(SecretKey);

pub use crate::keys::KeyError;

impl PseudonymKey {
    /// A fixed key for tests.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PseudonymKey(SecretKey::from_bytes(bytes))
    }

    /// Loads the key at `path`, or creates it ([`SecretKey::load_or_create`]).
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        SecretKey::load_or_create(path).map(PseudonymKey)
    }

    /// The pseudonym of a number (hex HMAC-SHA256 of its E.164 form).
    pub fn pseudonym(&self, e164: &str) -> String {
        self.0.hmac_hex(e164.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn hmac_sha256_matches_rfc_4231_test_case_2() {
        // RFC 4231 §4.3: key "Jefe", data "what do ya want for nothing?" (our key is 32
        // bytes, so pad "Jefe" with zeros: HMAC pads short keys with zeros the same way).
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let k = PseudonymKey::from_bytes(key);
        assert_eq!(
            k.pseudonym("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_key_is_created_private_and_reloaded_the_same() {
        let dir = std::env::temp_dir().join(format!("tolk-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("keys/pseudonym.key");
        let a = PseudonymKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = PseudonymKey::load_or_create(&path).unwrap();
        assert_eq!(a.pseudonym("+15550100300"), b.pseudonym("+15550100300"));
        assert_ne!(a.pseudonym("+15550100300"), a.pseudonym("+15550100301"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            PseudonymKey::load_or_create(&path),
            Err(KeyError::Permissions(..))
        ));
        std::fs::write(dir.join("short.key"), b"abc").unwrap();
        std::fs::set_permissions(dir.join("short.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            PseudonymKey::load_or_create(&dir.join("short.key")),
            Err(KeyError::Length(_, 3))
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
