//! Secret keys kept in files under `data_dir` (the caller-pseudonym key, the PIN key):
//! 32 bytes from the kernel's CSPRNG, created 0600 in 0700 folders, refused when others
//! can read them, and HMAC-SHA256 (RFC 2104) under them. The bottom of the crate: it
//! imports no other module of tolk.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::io::Read;
use std::path::Path;

/// A 32-byte HMAC key.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Errors loading or creating a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error(
        "{0}: the key file must hold 32 bytes (found {1}); restore it from backup - what was made with it depends on it"
    )]
    Length(String, usize),
    #[error("{0}: the key file is readable by others (mode {1:o}); chmod 600 it")]
    Permissions(String, u32),
}

/// Whether two secrets (tokens, CSRF values) are equal, compared in constant time by
/// `ctutils` (as `sip::auth` compares digest responses).
pub fn same_secret(a: &str, b: &str) -> bool {
    use ctutils::CtEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// `n` bytes from the kernel's CSPRNG as lowercase hex: one-time sign-in links, session
/// ids, CSRF tokens.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl SecretKey {
    /// A fixed key for tests.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(bytes)
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
                Ok(SecretKey(key))
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
                tracing::info!(file = %path.display(), "created a secret key; back it up with the database");
                Ok(SecretKey(key))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// HMAC-SHA256 of `data` under this key, in lowercase hex.
    pub fn hmac_hex(&self, data: &[u8]) -> String {
        self.hmac(data).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A key of its own for `label` (HMAC-SHA256 of the label under this key, as HKDF's
    /// expand step does, RFC 5869 §2.3, for one block): what is made under it cannot be
    /// linked to what is made under this key or another label's without this key.
    pub fn derive(&self, label: &[u8]) -> SecretKey {
        SecretKey(self.hmac(label))
    }

    fn hmac(&self, data: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}
