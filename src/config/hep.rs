//! `[hep]`: a copy of every SIP message to a Homer collector (HEP v3 over UDP).

use serde::Deserialize;

/// `[hep]`
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HepConfig {
    /// `host:port` of the collector (Homer's heplify-server listens on 9060); empty: off.
    pub destination: String,
    /// The capture agent id Homer shows for this node.
    pub capture_id: u32,
    /// The collector's authentication key (HEP chunk 0x000e), if it asks for one.
    pub password: String,
}

impl Default for HepConfig {
    fn default() -> Self {
        HepConfig {
            destination: String::new(),
            capture_id: 2001,
            password: String::new(),
        }
    }
}

/// Printed by `tolk check-config`: the key is a secret.
impl std::fmt::Debug for HepConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HepConfig")
            .field("destination", &self.destination)
            .field("capture_id", &self.capture_id)
            .field("password", &if self.password.is_empty() { "(none)" } else { "(set)" })
            .finish()
    }
}

impl HepConfig {
    /// The collector's address, when export is on; an error names what is wrong.
    pub fn collector(&self) -> Result<Option<std::net::SocketAddr>, String> {
        let d = self.destination.trim();
        if d.is_empty() {
            return Ok(None);
        }
        d.parse()
            .map(Some)
            .map_err(|_| format!("`{d}` is not an address:port (e.g. 127.0.0.1:9060)"))
    }
}
