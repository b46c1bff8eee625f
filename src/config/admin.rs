//! `[admin]`: the admin HTTP listener (API, `/metrics`, web console) and the control socket.

use serde::Deserialize;

/// `[admin]`
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The admin HTTP API, `/metrics` and the web console (`/console/`).
    pub listen: String,
    /// Bearer tokens accepted by `/api/v1` (none: the API answers 403 and says so;
    /// `/metrics` and `/healthz` need no token).
    pub tokens: Vec<String>,
    /// The local control socket the CLI reaches the running gateway through (owner only,
    /// no token): relative to `data_dir`, or absolute; empty turns it off.
    pub control_socket: String,
    /// The console's address as operators' browsers reach it, for the links `tolk console
    /// url` prints (behind a TLS proxy: `https://ops.example.com/console/`); empty:
    /// `http://LISTEN/console/`.
    pub console_url: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:8080".into(),
            tokens: Vec::new(),
            control_socket: "control.sock".into(),
            console_url: String::new(),
        }
    }
}
