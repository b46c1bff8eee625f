//! Caller pseudonyms: HMAC-SHA256 of the E.164 number under a key kept outside the database
//! (a file under `data_dir`, created on first run with mode 0600). The same number always
//! gives the same pseudonym under one key, so opt-outs, erasure and reports work by pseudonym
//! while the database never needs the number itself.
//!
//! Per tenant (`cdr.tenant_pseudonyms`, on by default) a call's pseudonym is made again
//! under that tenant's key, derived from the gateway's: `HMAC(K_tenant, pseudonym)` with
//! `K_tenant = HMAC(K, "tolk tenant\0" + tenant)`. One caller of two tenants then has two
//! pseudonyms nobody without the key can link; with the key (the gateway answering an
//! erasure or access request by number) both are found, and from the gateway's pseudonym
//! alone, so a request queued while PostgreSQL is down needs no number.

use crate::keys::SecretKey;
use std::path::Path;

/// The pseudonymisation key.
#[derive(Clone, Debug)]
pub struct PseudonymKey {
    key: SecretKey,
    per_tenant: bool,
}

pub use crate::keys::KeyError;

/// The key `cfg` names (`cdr.key_file`), per tenant or not (`cdr.tenant_pseudonyms`).
pub fn pseudonym_key(cfg: &crate::config::Config) -> Result<PseudonymKey, KeyError> {
    PseudonymKey::load_or_create(&cfg.key_file()).map(|k| k.per_tenant(cfg.cdr.tenant_pseudonyms))
}

impl PseudonymKey {
    /// A fixed key for tests.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PseudonymKey {
            key: SecretKey::from_bytes(bytes),
            per_tenant: true,
        }
    }

    /// Loads the key at `path`, or creates it ([`SecretKey::load_or_create`]).
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        SecretKey::load_or_create(path).map(|key| PseudonymKey { key, per_tenant: true })
    }

    /// With `per_tenant` false (`cdr.tenant_pseudonyms = false`) every tenant's calls get
    /// the gateway's pseudonym.
    pub fn per_tenant(self, per_tenant: bool) -> Self {
        PseudonymKey { per_tenant, ..self }
    }

    /// The gateway's pseudonym of a number (hex HMAC-SHA256 of its E.164 form): the one of
    /// calls without a tenant, and the subject's name for requests and audits.
    pub fn pseudonym(&self, e164: &str) -> String {
        self.key.hmac_hex(e164.as_bytes())
    }

    /// The pseudonym the records of `tenant` give the subject whose gateway pseudonym is
    /// `pseudonym` (the same without a tenant, or when tenants share it).
    pub fn in_tenant(&self, pseudonym: &str, tenant: Option<&str>) -> String {
        match tenant {
            Some(t) if self.per_tenant => {
                let label = [b"tolk tenant\0".as_slice(), t.as_bytes()].concat();
                self.key.derive(&label).hmac_hex(pseudonym.as_bytes())
            }
            _ => pseudonym.to_string(),
        }
    }

    /// Every pseudonym the subject can have: the gateway's, and each of `tenants`'.
    pub fn all_pseudonyms(&self, pseudonym: &str, tenants: &[String]) -> Vec<String> {
        let mut all = vec![pseudonym.to_string()];
        for t in tenants {
            let p = self.in_tenant(pseudonym, Some(t));
            if !all.contains(&p) {
                all.push(p);
            }
        }
        all
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
    fn tenants_give_one_caller_unlinkable_pseudonyms_that_the_key_finds_again() {
        let k = PseudonymKey::from_bytes([9; 32]);
        let p = k.pseudonym("+15550100300");
        let (a, b) = (k.in_tenant(&p, Some("acme")), k.in_tenant(&p, Some("globex")));
        assert!(a != b && a != p && b != p);
        assert_eq!(a, k.in_tenant(&p, Some("acme")), "stable");
        assert_eq!(k.in_tenant(&p, None), p);
        assert_eq!(a.len(), 64);
        let tenants = ["acme".to_string(), "globex".to_string()];
        assert_eq!(k.all_pseudonyms(&p, &tenants), [p.clone(), a, b]);
        let shared = k.clone().per_tenant(false);
        assert_eq!(shared.in_tenant(&p, Some("acme")), p);
        assert_eq!(shared.all_pseudonyms(&p, &tenants), [p]);
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
