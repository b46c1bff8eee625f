//! `http(...)` for flows: a small HTTP/1.1 client (RFC 9112) for clients who must consult
//! their own system mid-call. Only `http://` URLs that start with an entry of
//! `flow.http_allow` are reached; the whole exchange is bounded by a timeout (at most 10 s)
//! and the answer by 1 MiB. It runs on the flow's own thread, so a slow endpoint holds only
//! that call.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The most a response may hold.
const MAX_RESPONSE: usize = 1 << 20;
/// The longest a flow may wait for an answer.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// Why there is no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("`{0}` is not on the allow-list (flow.http_allow)")]
    NotAllowed(String),
    #[error("only http:// URLs of the form http://host[:port]/path are supported: `{0}`")]
    BadUrl(String),
    #[error("{0}")]
    Io(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("the answer is not HTTP/1.x: {0}")]
    BadResponse(String),
}

/// Splits `http://host[:port]/path` into (host:port, host, path).
fn split_url(url: &str) -> Option<(String, String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || path.contains(['\r', '\n', ' ']) {
        return None;
    }
    // A port follows the last ':' outside an IPv6 literal's brackets.
    let has_port = match authority.rfind(']') {
        Some(i) => authority[i..].contains(':'),
        None => authority.contains(':'),
    };
    let (addr, host) = match authority.rsplit_once(':') {
        Some((h, _)) if has_port => (authority.to_string(), h),
        _ => (format!("{authority}:80"), authority),
    };
    Some((addr, host.to_string(), path.to_string()))
}

/// Whether `url` starts with one of the allowed prefixes.
pub fn allowed(url: &str, allow: &[String]) -> bool {
    allow.iter().any(|p| !p.is_empty() && url.starts_with(p.as_str()))
}

/// Sends one request and reads the answer.
pub fn request(
    method: &str,
    url: &str,
    body: Option<(&str, &str)>,
    allow: &[String],
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    if !allowed(url, allow) {
        return Err(HttpError::NotAllowed(url.to_string()));
    }
    send(method, url, &[], body, timeout)
}

/// Sends one request with extra `headers` (no allow-list: for tolk's own clients, such as
/// `tolk rooms` talking to the admin API) and reads the answer.
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    let (addr, host, path) = split_url(url).ok_or_else(|| HttpError::BadUrl(url.to_string()))?;
    let timeout = timeout.min(MAX_TIMEOUT);
    let deadline = Instant::now() + timeout;
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| HttpError::Io(format!("{host}: {e}")))?
        .next()
        .ok_or_else(|| HttpError::Io(format!("{host}: no address")))?;
    let mut stream = TcpStream::connect_timeout(&sock, timeout).map_err(|e| match e.kind() {
        std::io::ErrorKind::TimedOut => HttpError::Timeout(timeout),
        _ => HttpError::Io(format!("connecting to {addr}: {e}")),
    })?;
    let left = |d: Instant| {
        d.saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    stream
        .set_write_timeout(Some(left(deadline)))
        .map_err(|e| HttpError::Io(e.to_string()))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tolk\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some((content_type, b)) = body {
        req.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some((_, b)) = body {
        req.push_str(b);
    }
    stream
        .write_all(req.as_bytes())
        .map_err(|e| HttpError::Io(format!("sending: {e}")))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if Instant::now() >= deadline {
            return Err(HttpError::Timeout(timeout));
        }
        stream
            .set_read_timeout(Some(left(deadline)))
            .map_err(|e| HttpError::Io(e.to_string()))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_RESPONSE {
                    return Err(HttpError::BadResponse("larger than 1 MiB".into()));
                }
                if let Some(done) = complete(&raw) {
                    raw.truncate(done);
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(HttpError::Timeout(timeout));
            }
            Err(e) => return Err(HttpError::Io(format!("reading: {e}"))),
        }
    }
    parse_response(&raw)
}

/// The end of a response whose length is known from its headers, once all of it is in.
fn complete(raw: &[u8]) -> Option<usize> {
    let head_end = find(raw, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())?;
    (raw.len() >= head_end + len).then_some(head_end + len)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a whole response (RFC 9112 §4-7): status line, headers, a body framed by
/// Content-Length, chunked transfer coding, or the end of the connection.
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse, HttpError> {
    let bad = |m: &str| HttpError::BadResponse(m.to_string());
    let head_end = find(raw, b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| bad("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(bad(status_line));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| bad(status_line))?;
    let mut content_type = String::new();
    let mut chunked = false;
    let mut length: Option<usize> = None;
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            return Err(bad("a header line without a colon"));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-type" => content_type = value.to_string(),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "content-length" => length = Some(value.parse().map_err(|_| bad("bad Content-Length"))?),
            _ => {}
        }
    }
    let rest = &raw[head_end + 4..];
    let body: Vec<u8> = if chunked {
        dechunk(rest).ok_or_else(|| bad("bad chunked body"))?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or_else(|| bad("body shorter than Content-Length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse {
        status,
        content_type,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// RFC 9112 §7.1 chunked transfer coding (extensions and trailers ignored).
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_the_allow_list() {
        assert_eq!(
            split_url("http://127.0.0.1:9000/pin?x=1"),
            Some(("127.0.0.1:9000".into(), "127.0.0.1".into(), "/pin?x=1".into()))
        );
        assert_eq!(
            split_url("http://example.com"),
            Some(("example.com:80".into(), "example.com".into(), "/".into()))
        );
        assert_eq!(split_url("https://example.com/"), None);
        assert_eq!(split_url("http://user@example.com/"), None);
        assert_eq!(split_url("http://h/a b"), None);
        let allow = vec!["http://127.0.0.1:9000/".to_string()];
        assert!(allowed("http://127.0.0.1:9000/pin", &allow));
        assert!(!allowed("http://127.0.0.1:9001/pin", &allow));
        assert!(!allowed("http://127.0.0.1:9000/", &[]));
        assert!(matches!(
            request("GET", "http://10.0.0.1/", None, &allow, Duration::from_secs(1)),
            Err(HttpError::NotAllowed(_))
        ));
    }

    #[test]
    fn responses_by_length_chunks_and_close() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "{\"ok\":true}"));
        assert_eq!(r.content_type, "application/json");
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, "Wikipedia");
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!((r.status, r.body.as_str()), (404, "nope"));
        for junk in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 999 X\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n",
            b"",
        ] {
            assert!(parse_response(junk).is_err(), "{:?}", String::from_utf8_lossy(junk));
        }
    }
}
