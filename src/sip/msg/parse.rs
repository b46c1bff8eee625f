//! Parsing a whole SIP message within limits (RFC 3261 §7, §18.3, §20.14, §25).
//!
//! The start line, the core headers and the framing are checked here, strictly where the RFC is
//! strict (RFC 4475 §3.1.2 lists the malformations a carrier may send us); individual header
//! values are parsed with `ezk-sip-types`.

use super::Method;
use super::headers::{Via, find_unquoted, is_balanced, split_outside_quotes};
use super::rejection::Rejection;
use super::{CSeq, CoreHeaders, Framing, Request, RequestUri, Response, SipMessage};
use super::{Headers, Name};
use bytes::Bytes;
use ezk_sip_types::msg::PullParser;
use ezk_sip_types::uri::SipUri;

/// Size limits applied before and during parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole message accepted (RFC 3261 §18.1.1 keeps UDP under the path MTU; carriers
    /// send large SDP and multipart bodies, so the default is the largest UDP payload).
    pub max_message_bytes: usize,
    /// Largest number of header lines.
    pub max_headers: usize,
    /// Longest single header line (after unfolding).
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 65_535,
            max_headers: 128,
            max_header_bytes: 8_192,
        }
    }
}

/// Why a message was not accepted.
#[derive(Debug, Clone)]
pub enum ParseError {
    /// Nothing can be answered: not SIP, a malformed response, or a request whose core headers
    /// are unreadable. The message is dropped (RFC 3261 §18.1.2 for responses).
    Drop(&'static str),
    /// A request that must be answered with an error status (400, 505, 513 ...).
    Reject(Box<Rejection>),
}

impl ParseError {
    /// A short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            ParseError::Drop(reason) => reason,
            ParseError::Reject(r) => r.detail,
        }
    }
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Drop(r) => write!(f, "dropped: {r}"),
            ParseError::Reject(r) => write!(f, "rejected with {}: {}", r.status, r.detail),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses one UDP datagram. Trailing bytes beyond Content-Length are ignored (RFC 3261 §18.3,
/// RFC 4475 §3.1.1.8); a Content-Length larger than the datagram is an error (400).
pub fn parse_datagram(buf: &[u8], limits: &Limits) -> Result<SipMessage, ParseError> {
    parse_message(buf, Framing::Datagram, limits)
}

/// Parses one complete message. For [`Framing::Stream`] the caller (the stream framer) has
/// already cut the message at Content-Length; a missing Content-Length means an empty body.
pub fn parse_message(buf: &[u8], framing: Framing, limits: &Limits) -> Result<SipMessage, ParseError> {
    // RFC 3261 §7.5: CRLFs before the start line are ignored.
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let buf = &buf[start..];
    if buf.is_empty() {
        return Err(ParseError::Drop("empty"));
    }
    let too_large = buf.len() > limits.max_message_bytes;

    let mut lines = PullParser::new(buf, 0);
    let mut raw_lines: Vec<&[u8]> = Vec::new();
    let mut head_complete = false;
    for line in lines.by_ref() {
        match line {
            Ok(l) => {
                raw_lines.push(l);
                if raw_lines.len() > limits.max_headers + 1 {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    if raw_lines.len() <= limits.max_headers + 1 && lines.next().is_none() {
        head_complete = true;
    }
    // `head_end` is only meaningful after the parser returned None.
    let head_end = if head_complete { lines.head_end() } else { buf.len() };
    if raw_lines.is_empty() {
        return Err(ParseError::Drop("no start line"));
    }
    let start_line = std::str::from_utf8(raw_lines[0]).map_err(|_| ParseError::Drop("start line not UTF-8"))?;

    // Collect headers as (name, unfolded value); errors are deferred until we know whether the
    // core headers are readable (so we can still answer).
    let mut headers = Headers::with_capacity(raw_lines.len());
    let mut header_error: Option<&'static str> = None;
    let mut raw_core = RawCore::default();
    for raw in raw_lines.iter().skip(1) {
        if raw.len() > limits.max_header_bytes {
            header_error.get_or_insert("header line too long");
            continue;
        }
        let Ok(line) = std::str::from_utf8(raw) else {
            header_error.get_or_insert("header not UTF-8");
            continue;
        };
        let Some((name, value)) = line.split_once(':') else {
            header_error.get_or_insert("header line without colon");
            continue;
        };
        let name = name.trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            header_error.get_or_insert("bad header name");
            continue;
        }
        let value = unfold(value);
        let name = Name::parse(name);
        if !raw_core.note(&name, &value) {
            headers.insert(name, value);
        }
    }
    if raw_lines.len() > limits.max_headers + 1 {
        header_error.get_or_insert("too many headers");
    }

    if start_line
        .as_bytes()
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        if too_large || header_error.is_some() || !head_complete {
            return Err(ParseError::Drop("malformed response"));
        }
        return parse_response(start_line, headers, raw_core, &buf[head_end..], framing);
    }

    let (method_str, rest) = start_line.split_once(' ').ok_or(ParseError::Drop("bad request line"))?;
    if method_str.is_empty() || !method_str.bytes().all(is_token_byte) {
        return Err(ParseError::Drop("bad method"));
    }
    let reject = |status: u16, detail: &'static str| -> ParseError {
        match raw_core.rejection(status, detail, method_str) {
            Some(r) => ParseError::Reject(Box::new(r)),
            None => ParseError::Drop(detail),
        }
    };
    if too_large {
        return Err(reject(513, "message too large"));
    }
    if !head_complete {
        return Err(reject(400, "incomplete header"));
    }
    if let Some(e) = header_error {
        return Err(reject(400, e));
    }

    // Request-Line = Method SP Request-URI SP SIP-Version (RFC 3261 §25.1): single spaces.
    let (uri_str, version) = rest.split_once(' ').ok_or_else(|| reject(400, "bad request line"))?;
    if uri_str.is_empty() || version.contains(' ') || version.is_empty() {
        return Err(reject(400, "bad request line"));
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return if is_sip_version(version) {
            Err(reject(505, "unsupported SIP version"))
        } else {
            Err(reject(400, "bad request line"))
        };
    }
    let uri = parse_request_uri(uri_str).ok_or_else(|| reject(400, "bad Request-URI"))?;
    let method = Method::from_token(method_str);

    let core = raw_core.parse().map_err(|e| reject(400, e))?;
    // RFC 4475 §3.1.2.18 prefers 501 to 400 for an unknown method with a mismatched CSeq.
    if core.cseq.method != method && !matches!(method, Method::Other(_)) {
        return Err(reject(400, "CSeq method does not match"));
    }
    let max_forwards = match raw_core.max_forwards.as_slice() {
        [] => None,
        [one] => Some(parse_max_forwards(one).ok_or_else(|| reject(400, "bad Max-Forwards"))?),
        _ => return Err(reject(400, "multiple Max-Forwards")),
    };
    let body = cut_body(&buf[head_end..], &raw_core, framing).map_err(|e| reject(400, e))?;
    Ok(SipMessage::Request(Request {
        method,
        uri,
        core,
        max_forwards,
        headers,
        body,
    }))
}

fn parse_response(
    line: &str,
    headers: Headers,
    raw_core: RawCore,
    rest: &[u8],
    framing: Framing,
) -> Result<SipMessage, ParseError> {
    // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (RFC 3261 §25.1); the reason
    // may be empty (RFC 4475 §3.1.1.13).
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    let reason = parts.next().unwrap_or("");
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(ParseError::Drop("unsupported response version"));
    }
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::Drop("bad status code"));
    }
    let code: u16 = code.parse().map_err(|_| ParseError::Drop("bad status code"))?;
    if !(100..=699).contains(&code) {
        return Err(ParseError::Drop("bad status code"));
    }
    let core = raw_core.parse().map_err(ParseError::Drop)?;
    let body = cut_body(rest, &raw_core, framing).map_err(ParseError::Drop)?;
    Ok(SipMessage::Response(Response {
        code,
        reason: reason.to_string(),
        core,
        headers,
        body,
    }))
}

fn is_sip_version(v: &str) -> bool {
    let (Some(prefix), Some(num)) = (v.get(..4), v.get(4..)) else {
        return false;
    };
    prefix.eq_ignore_ascii_case("SIP/")
        && num.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && (a.to_string() + b).bytes().all(|c| c.is_ascii_digit())
        })
}

/// RFC 3261 §25.1 token characters.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Replaces folded line breaks (CRLF or LF followed by whitespace) with one space and trims
/// (RFC 3261 §7.3.1).
fn unfold(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut pending_space = false;
    for c in value.chars() {
        if c == '\r' || c == '\n' {
            pending_space = true;
            continue;
        }
        if pending_space {
            if c == ' ' || c == '\t' {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
        }
        out.push(c);
    }
    out.trim().to_string()
}

fn parse_max_forwards(v: &str) -> Option<u32> {
    // 1*DIGIT, 0-255; leading zeros are legal (RFC 4475 §3.1.1.1 sends `0068`).
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = v.trim_start_matches('0');
    if significant.len() > 3 {
        return None;
    }
    let n: u32 = if significant.is_empty() {
        0
    } else {
        significant.parse().ok()?
    };
    (n <= 255).then_some(n)
}

/// Parses the Request-URI: `sip`/`sips` through `ezk-sip-types`; `tel` checked loosely; any
/// other well-formed absoluteURI is kept for a 416 (RFC 3261 §8.2.2.1).
fn parse_request_uri(raw: &str) -> Option<RequestUri> {
    let (scheme, rest) = raw.split_once(':')?;
    let mut sc = scheme.bytes();
    let first_ok = sc.next().is_some_and(|b| b.is_ascii_alphabetic());
    if !first_ok || !sc.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) || rest.is_empty() {
        return None;
    }
    if raw
        .bytes()
        .any(|b| b <= b' ' || b == b'<' || b == b'>' || b == b'"' || b >= 0x7f)
    {
        return None;
    }
    let lower = scheme.to_ascii_lowercase();
    match lower.as_str() {
        "sip" | "sips" => {
            let parsed: SipUri = raw.parse().ok()?;
            // RFC 3261 §19.1.1: headers are not allowed in a Request-URI (RFC 4475 escruri).
            if !parsed.header_params.is_empty() {
                return None;
            }
            let host = parsed.host_port.host.to_string();
            Some(RequestUri::Sip {
                raw: raw.to_string(),
                user: super::headers::addr_spec_user(raw),
                host,
            })
        }
        "tel" => {
            let number = rest.split(';').next().unwrap_or("");
            if number.is_empty() {
                return None;
            }
            Some(RequestUri::Tel {
                raw: raw.to_string(),
                number: super::headers::percent_decode(number),
            })
        }
        _ => Some(RequestUri::Other {
            raw: raw.to_string(),
            scheme: lower,
        }),
    }
}

/// The raw values of the core headers as they arrived, before validation.
#[derive(Default)]
struct RawCore {
    vias: Vec<String>,
    from: Vec<String>,
    to: Vec<String>,
    call_id: Vec<String>,
    cseq: Vec<String>,
    max_forwards: Vec<String>,
    content_length: Vec<String>,
}

impl RawCore {
    /// Takes the value when `name` is a core header; returns whether it did.
    fn note(&mut self, name: &Name, value: &str) -> bool {
        let slot = if name == &Name::VIA {
            for hop in split_outside_quotes(value, ',') {
                self.vias.push(hop.trim().to_string());
            }
            return true;
        } else if name == &Name::FROM {
            &mut self.from
        } else if name == &Name::TO {
            &mut self.to
        } else if name == &Name::CALL_ID {
            &mut self.call_id
        } else if name == &Name::CSEQ {
            &mut self.cseq
        } else if name == &Name::MAX_FORWARDS {
            &mut self.max_forwards
        } else if name == &Name::CONTENT_LENGTH {
            &mut self.content_length
        } else {
            return false;
        };
        slot.push(value.to_string());
        true
    }

    /// Enough to answer: at least one readable Via. Missing From, To, Call-ID or CSeq are left
    /// out of the response (RFC 4475 §3.3.1: the 400 to `insuf` can copy only Via and CSeq).
    fn rejection(&self, status: u16, detail: &'static str, method: &str) -> Option<Rejection> {
        // RFC 3261 §17.2.1, §17.2.3: an ACK is never answered, however broken (the method
        // is a token here: a request line without one is dropped before).
        if method.eq_ignore_ascii_case("ACK") {
            return None;
        }
        let vias: Vec<String> = self.vias.iter().filter(|v| !v.is_empty()).cloned().collect();
        if vias.is_empty() {
            return None;
        }
        Some(Rejection {
            status,
            detail,
            method: method.to_string(),
            vias,
            from: self.from.first().cloned(),
            to: self.to.first().cloned(),
            call_id: self.call_id.first().cloned(),
            cseq: self.cseq.first().cloned(),
        })
    }

    fn parse(&self) -> Result<CoreHeaders, &'static str> {
        let single = |v: &Vec<String>, missing: &'static str, many: &'static str| match v.len() {
            0 => Err(missing),
            1 => Ok(v[0].clone()),
            _ => Err(many),
        };
        if self.vias.is_empty() {
            return Err("missing Via");
        }
        let top_via = Via::parse(&self.vias[0]).ok_or("bad Via")?;
        // RFC 4475 §3.2.1: a branch that is only the magic cookie is no transaction id.
        if top_via.branch.as_deref() == Some("z9hG4bK") {
            return Err("bad Via branch");
        }
        for v in &self.vias[1..] {
            if v.is_empty() {
                return Err("empty Via");
            }
        }
        let from = single(&self.from, "missing From", "multiple From")?;
        let to = single(&self.to, "missing To", "multiple To")?;
        let call_id = single(&self.call_id, "missing Call-ID", "multiple Call-ID")?;
        let cseq = single(&self.cseq, "missing CSeq", "multiple CSeq")?;
        validate_name_addr(&from).map_err(|_| "bad From")?;
        validate_name_addr(&to).map_err(|_| "bad To")?;
        if call_id.is_empty() || call_id.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return Err("bad Call-ID");
        }
        let cseq = parse_cseq(&cseq).ok_or("bad CSeq")?;
        Ok(CoreHeaders {
            vias: self.vias.clone(),
            top_via,
            from_tag: super::headers::param_of(&from, "tag"),
            from,
            to_tag: super::headers::param_of(&to, "tag"),
            to,
            call_id,
            cseq,
        })
    }
}

/// CSeq = 1*DIGIT LWS Method, the number below 2^31 (RFC 3261 §8.1.1.5, §20.16).
fn parse_cseq(v: &str) -> Option<CSeq> {
    let v = v.trim();
    let split = v.find([' ', '\t'])?;
    let (num, method) = (&v[..split], v[split..].trim());
    if num.is_empty() || num.len() > 10 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seq: u64 = num.parse().ok()?;
    if seq >= 1 << 31 || method.is_empty() || !method.bytes().all(is_token_byte) {
        return None;
    }
    Some(CSeq {
        seq: seq as u32,
        method: Method::from_token(method),
    })
}

/// Checks a From/To value: `[display-name] <URI> *(;param)` or `addr-spec *(;param)` with
/// balanced quotes, a token or quoted display name, no spaces inside the URI and no empty
/// parameters (RFC 3261 §20.20, §20.39, §25.1; RFC 4475 §3.1.2.1, .11, .13, .14).
fn validate_name_addr(value: &str) -> Result<(), ()> {
    if value.is_empty() || !is_balanced(value) {
        return Err(());
    }
    let params_part;
    let uri;
    if let Some(lt) = find_unquoted(value, '<') {
        let display = value[..lt].trim();
        if !display.is_empty() {
            let quoted = display.starts_with('"') && display.ends_with('"') && display.len() >= 2;
            let tokens = display
                .split([' ', '\t'])
                .filter(|t| !t.is_empty())
                .all(|t| t.bytes().all(is_token_byte));
            if !quoted && !tokens {
                return Err(());
            }
        }
        let gt = value[lt..].find('>').ok_or(())? + lt;
        uri = &value[lt + 1..gt];
        if uri.starts_with([' ', '\t']) || uri.ends_with([' ', '\t']) {
            return Err(());
        }
        params_part = &value[gt + 1..];
    } else {
        let end = value.find(';').unwrap_or(value.len());
        uri = value[..end].trim();
        params_part = &value[end..];
        if uri.contains([' ', '\t', ',', '"']) {
            return Err(());
        }
    }
    if uri.is_empty() || !uri.contains(':') || uri.contains([' ', '\t']) {
        return Err(());
    }
    let scheme = uri.split(':').next().unwrap_or("").to_ascii_lowercase();
    if (scheme == "sip" || scheme == "sips") && uri.parse::<SipUri>().is_err() {
        return Err(());
    }
    let params_part = params_part.trim();
    if params_part.is_empty() {
        return Ok(());
    }
    if !params_part.starts_with(';') {
        return Err(());
    }
    for p in split_outside_quotes(&params_part[1..], ';') {
        let p = p.trim();
        let name = p.split('=').next().unwrap_or("").trim();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(());
        }
    }
    Ok(())
}

/// Cuts the body at Content-Length (RFC 3261 §18.3, §20.14).
fn cut_body(rest: &[u8], raw: &RawCore, framing: Framing) -> Result<Bytes, &'static str> {
    let declared = match raw.content_length.as_slice() {
        [] => None,
        values => {
            let mut parsed = None;
            for v in values {
                let v = v.trim();
                if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("bad Content-Length");
                }
                let n: usize = v.parse().map_err(|_| "bad Content-Length")?;
                if parsed.is_some_and(|p| p != n) {
                    return Err("conflicting Content-Length");
                }
                if parsed.is_some() {
                    return Err("multiple Content-Length");
                }
                parsed = Some(n);
            }
            parsed
        }
    };
    match (declared, framing) {
        (Some(n), _) if n > rest.len() => Err("Content-Length exceeds message"),
        (Some(n), _) => Ok(Bytes::copy_from_slice(&rest[..n])),
        (None, Framing::Datagram) => Ok(Bytes::copy_from_slice(rest)),
        (None, Framing::Stream) => Ok(Bytes::new()),
    }
}
