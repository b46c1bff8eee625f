//! Reaching the running gateway from the CLI: through its control socket in `data_dir`
//! (owner only, no token; `tolk::admin::control`), else through the admin API with a token,
//! else a message that says what is missing.

use std::time::Duration;
use tolk::admin::control::{Client, Reply};
use tolk::config::Config;

/// How this command reaches the gateway.
pub enum Reach {
    Socket(Client),
    Api { addr: std::net::SocketAddr, token: String },
}

/// The running gateway, if one answers on the control socket of this configuration.
pub fn running(cfg: &Config) -> Option<Reach> {
    cfg.control_socket()
        .and_then(|p| Client::connect(&p))
        .map(Reach::Socket)
}

/// The running gateway: its control socket, else the admin API when a token is at hand
/// (`--token`, `TOLK_API_TOKEN`, `admin.tokens`), else why neither works.
pub fn reach(cfg: &Config, token: Option<String>) -> anyhow::Result<Reach> {
    if let Some(r) = running(cfg) {
        return Ok(r);
    }
    let token = token
        .or_else(|| std::env::var("TOLK_API_TOKEN").ok())
        .or_else(|| cfg.admin.tokens.first().cloned());
    match token {
        Some(token) => Ok(Reach::Api {
            addr: cfg.admin_listen(),
            token,
        }),
        None => anyhow::bail!("{}", not_running(cfg)),
    }
}

/// The message for "no gateway to talk to".
pub fn not_running(cfg: &Config) -> String {
    match cfg.control_socket() {
        Some(p) => format!(
            "no gateway is running with this configuration (nothing answers on its control socket {}): start `tolk serve`, or pass --token to reach a gateway's admin API at {}",
            p.display(),
            cfg.admin_listen()
        ),
        None => format!(
            "admin.control_socket is off: pass --token (or set TOLK_API_TOKEN) to reach the gateway's admin API at {}",
            cfg.admin_listen()
        ),
    }
}

impl Reach {
    /// One request; a status outside 2xx becomes an error with the gateway's message.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<serde_json::Value> {
        let reply = match self {
            Reach::Socket(c) => c
                .request(method, path, body)
                .map_err(|e| anyhow::anyhow!("the gateway's control socket: {e}"))?,
            Reach::Api { addr, token } => {
                let auth = format!("Bearer {token}");
                let url = format!("http://{addr}{path}");
                let r = tolk::flow::http::send(
                    method,
                    &url,
                    &[("Authorization", &auth)],
                    body.map(|b| ("application/json", b)),
                    Duration::from_secs(60),
                )
                .map_err(|e| anyhow::anyhow!("{url}: {e} (is `tolk serve` running with this configuration?)"))?;
                Reply {
                    status: r.status,
                    body: r.body,
                }
            }
        };
        if !(200..300).contains(&reply.status) {
            anyhow::bail!("the gateway answered {}: {}", reply.status, reply.error_text());
        }
        Ok(if reply.body.trim().is_empty() {
            serde_json::Value::Null
        } else {
            reply.json()
        })
    }

    /// Prints the `data:` lines of a server-sent event stream until it ends.
    pub fn follow(&self, path: &str) -> anyhow::Result<()> {
        use std::io::{BufRead, BufReader, Write};
        let (status, lines): (u16, Box<dyn Iterator<Item = std::io::Result<String>>>) = match self {
            Reach::Socket(c) => {
                let (status, lines) = c.stream(path)?;
                (status, Box::new(lines))
            }
            Reach::Api { addr, token } => {
                let mut conn = std::net::TcpStream::connect(addr)
                    .map_err(|e| anyhow::anyhow!("{addr}: {e} (is `tolk serve` running with this configuration?)"))?;
                write!(
                    conn,
                    "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
                )?;
                let mut lines = BufReader::new(conn).lines();
                let status_line = lines.next().transpose()?.unwrap_or_default();
                let status = status_line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                (status, Box::new(lines))
            }
        };
        if status != 200 {
            anyhow::bail!("the gateway answered {status}");
        }
        for line in lines {
            if let Some(data) = line?.strip_prefix("data: ") {
                println!("{data}");
            }
        }
        Ok(())
    }
}
