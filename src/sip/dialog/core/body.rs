//! Helpers of the core: message bodies (SDP, DTMF relay), content checks, response labels,
//! session-timer headers, and in-dialog requests with a given CSeq.

use super::*;

impl Call {
    /// An ACK (or any request) with a given CSeq number, not advancing the local sequence.
    pub(crate) fn new_request_with_cseq(&mut self, method: Method, cseq: u32, cfg: &UasConfig) -> Request {
        let saved = self.local_cseq;
        self.local_cseq = cseq.saturating_sub(1).max(1);
        let mut req = self.new_request(method, cfg);
        req.core.cseq.seq = cseq;
        self.local_cseq = saved;
        req
    }
}

/// `Session-Expires`, and `Require: timer` when the peer supports timers (RFC 4028 §9).
pub(super) fn session_timer_headers(timer: Option<&SessionTimer>, headers: &mut Vec<(Name, String)>) {
    if let Some(st) = timer {
        headers.push((Name::SESSION_EXPIRES, st.header_value()));
        if st.peer_supports {
            headers.push((Name::REQUIRE, "timer".into()));
        }
    }
}

/// Bounded label for metrics.
pub(super) fn code_label(code: u16) -> &'static str {
    match code {
        100 => "100",
        180 => "180",
        183 => "183",
        200 => "200",
        400 => "400",
        404 => "404",
        405 => "405",
        406 => "406",
        408 => "408",
        415 => "415",
        416 => "416",
        420 => "420",
        422 => "422",
        480 => "480",
        481 => "481",
        482 => "482",
        486 => "486",
        487 => "487",
        488 => "488",
        491 => "491",
        500 => "500",
        501 => "501",
        503 => "503",
        505 => "505",
        513 => "513",
        c if c < 200 => "1xx",
        c if c < 300 => "2xx",
        c if c < 400 => "3xx",
        c if c < 500 => "4xx",
        c if c < 600 => "5xx",
        _ => "6xx",
    }
}

/// The body's media type, lower case and without parameters (RFC 3261 §20.15), "" for none.
pub(super) fn media_type(req: &Request) -> String {
    let ctype = req.content_type().unwrap_or("");
    ctype.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// RFC 3261 §8.2.3: bodies we can handle, by method.
pub(super) fn check_content(req: &Request) -> Result<(), u16> {
    if req.body.is_empty() {
        return Ok(());
    }
    if let Some(enc) = req.header(&Name::CONTENT_ENCODING)
        && !enc.trim().eq_ignore_ascii_case("identity")
    {
        return Err(415);
    }
    let ctype = media_type(req);
    match req.method {
        Method::Invite | Method::Update | Method::Prack | Method::Ack => {
            if ctype == "application/sdp" || (ctype == "multipart/mixed" && sdp_body(req).is_some()) {
                Ok(())
            } else {
                Err(415)
            }
        }
        // INFO bodies are checked by the INFO handler; OPTIONS/BYE bodies are ignored.
        _ => Ok(()),
    }
}

/// The SDP of a request: the body when it is `application/sdp`, or the first
/// `application/sdp` part of a `multipart/mixed` body (RFC 2046 §5.1; RFC 5621).
pub(super) fn sdp_body(req: &Request) -> Option<Bytes> {
    if req.body.is_empty() {
        return None;
    }
    let ctype = req.content_type().unwrap_or("");
    let main = ctype.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if main == "application/sdp" {
        return Some(req.body.clone());
    }
    if main != "multipart/mixed" {
        return None;
    }
    let boundary = ctype
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_string())?;
    let delim = format!("--{boundary}");
    let body = &req.body[..];
    let mut pos = 0;
    let mut starts = Vec::new();
    while let Some(i) = find(&body[pos..], delim.as_bytes()) {
        starts.push(pos + i);
        pos += i + delim.len();
    }
    for w in starts.windows(2) {
        let part = &body[w[0] + delim.len()..w[1]];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let Some(split) = find(part, b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&part[..split]).to_ascii_lowercase();
        if head
            .lines()
            .any(|l| l.starts_with("content-type:") && l.contains("application/sdp"))
        {
            let content = &part[split + 4..];
            let content = content.strip_suffix(b"\r\n").unwrap_or(content);
            return Some(Bytes::copy_from_slice(content));
        }
    }
    None
}

pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// RFC 3261 §20.1: does the caller accept an SDP answer? No Accept means application/sdp.
pub(super) fn accepts_sdp(req: &Request) -> bool {
    let accepted: Vec<String> = req.headers.tokens(&Name::ACCEPT);
    if !req.headers.contains(&Name::ACCEPT) {
        return true;
    }
    accepted.iter().any(|a| {
        let t = a.split(';').next().unwrap_or("").trim();
        t == "application/sdp" || t == "application/*" || t == "*/*"
    })
}

/// `application/dtmf-relay`: `Signal=5` and `Duration=160` lines.
pub(super) fn parse_dtmf_relay(body: &[u8]) -> Option<(char, u32)> {
    let text = std::str::from_utf8(body).ok()?;
    let mut digit = None;
    let mut duration = 100;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        match k.trim().to_ascii_lowercase().as_str() {
            "signal" => digit = dtmf_digit(v.trim()),
            "duration" => duration = v.trim().parse().unwrap_or(100).min(60_000),
            _ => {}
        }
    }
    digit.map(|d| (d, duration))
}

pub(super) fn dtmf_digit(s: &str) -> Option<char> {
    match s {
        "10" => Some('*'),
        "11" => Some('#'),
        s if s.len() == 1 => {
            let c = s.chars().next()?.to_ascii_uppercase();
            matches!(c, '0'..='9' | '*' | '#' | 'A'..='D').then_some(c)
        }
        _ => None,
    }
}
