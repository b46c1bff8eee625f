//! Reaching the running gateway from the CLI: through its control socket in `data_dir`
//! (owner only, no token; `tolk::admin::control`), else through the admin API with a token,
//! else a message that says what is missing.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::time::Duration;
use tolk::config::Config;

/// How this command reaches the gateway.
pub enum Reach {
    /// The control socket at this path (a gateway answered there).
    Socket(PathBuf),
    Api {
        addr: std::net::SocketAddr,
        token: String,
    },
}

/// The running gateway, if one answers on the control socket of this configuration.
pub fn running(cfg: &Config) -> Option<Reach> {
    let path = cfg.control_socket()?;
    std::os::unix::net::UnixStream::connect(&path).ok()?;
    Some(Reach::Socket(path))
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

/// A stream to the gateway with one HTTP/1.1 request written on it (`Connection: close`, so
/// the answer ends with the stream).
fn send_request(
    reach: &Reach,
    method: &str,
    path: &str,
    body: Option<&str>,
    read_timeout: Duration,
) -> anyhow::Result<Box<dyn Read>> {
    let body = body.unwrap_or("");
    let auth = match reach {
        Reach::Socket(_) => String::new(),
        Reach::Api { token, .. } => format!("Authorization: Bearer {token}\r\n"),
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: tolk\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let stream: Box<dyn Read> = match reach {
        Reach::Socket(p) => {
            let mut s = std::os::unix::net::UnixStream::connect(p)
                .map_err(|e| anyhow::anyhow!("the gateway's control socket {}: {e}", p.display()))?;
            s.set_read_timeout(Some(read_timeout))?;
            s.write_all(head.as_bytes())?;
            Box::new(s)
        }
        Reach::Api { addr, .. } => {
            let mut s = std::net::TcpStream::connect_timeout(addr, Duration::from_secs(5))
                .map_err(|e| anyhow::anyhow!("{addr}: {e} (is `tolk serve` running with this configuration?)"))?;
            s.set_read_timeout(Some(read_timeout))?;
            s.write_all(head.as_bytes())?;
            Box::new(s)
        }
    };
    Ok(stream)
}

impl Reach {
    /// One request; a status outside 2xx becomes an error with the gateway's message.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<serde_json::Value> {
        let mut raw = Vec::new();
        send_request(self, method, path, body, Duration::from_secs(60))?.read_to_end(&mut raw)?;
        let reply = tolk::flow::http::parse_response(&raw).map_err(|e| anyhow::anyhow!("the gateway's answer: {e}"))?;
        let json = serde_json::from_str(&reply.body).unwrap_or_else(|_| serde_json::Value::String(reply.body.clone()));
        if !(200..300).contains(&reply.status) {
            let why = json["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| reply.body.trim().to_string());
            anyhow::bail!("the gateway answered {}: {why}", reply.status);
        }
        Ok(if reply.body.trim().is_empty() {
            serde_json::Value::Null
        } else {
            json
        })
    }

    /// Prints the `data:` lines of a server-sent event stream until it ends.
    pub fn follow(&self, path: &str) -> anyhow::Result<()> {
        let stream = send_request(self, "GET", path, None, Duration::from_secs(24 * 3600))?;
        let mut lines = BufReader::new(stream).lines();
        let status_line = lines.next().transpose()?.unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
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
