//! Caller pseudonyms: HMAC-SHA256 of the E.164 number under a key kept outside the database
//! (a file under `data_dir`, created on first run with mode 0600). The same number always
//! gives the same pseudonym under one key, so opt-outs, erasure and reports work by pseudonym
//! while the database never needs the number itself.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::io::Read;
use std::path::Path;

/// The pseudonymisation key.
#[derive(Clone)]
pub struct PseudonymKey([u8; 32]);

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PseudonymKey(..)")
    }
}

/// Errors loading or creating the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{0}: the key file must hold 32 bytes (found {1}); restore it from backup - pseudonyms depend on it")]
    Length(String, usize),
    #[error("{0}: the key file is readable by others (mode {1:o}); chmod 600 it")]
    Permissions(String, u32),
}

impl PseudonymKey {
    /// A fixed key for tests.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PseudonymKey(bytes)
    }

    /// Loads the key at `path`, or creates it (32 bytes from the kernel's CSPRNG, mode 0600,
    /// parent directories 0700) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let name = path.display().to_string();
        let io = |e| KeyError::Io(name.clone(), e);
        match std::fs::read(path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyError::Permissions(name, mode));
                }
                let key: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyError::Length(name.clone(), bytes.len()))?;
                Ok(PseudonymKey(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)
                        .map_err(io)?;
                }
                let mut key = [0u8; 32];
                std::fs::File::open("/dev/urandom")
                    .and_then(|mut f| f.read_exact(&mut key))
                    .map_err(io)?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                std::io::Write::write_all(&mut f, &key).map_err(io)?;
                f.sync_all().map_err(io)?;
                tracing::info!(file = %path.display(), "created the caller pseudonym key; back it up with the database");
                Ok(PseudonymKey(key))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The pseudonym of a number (hex HMAC-SHA256 of its E.164 form).
    pub fn pseudonym(&self, e164: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(e164.as_bytes());
        let out = mac.finalize().into_bytes();
        let mut hex = String::with_capacity(64);
        for b in out.iter() {
            hex.push_str(&format!("{b:02x}"));
        }
        hex
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
