//! SIP messages (RFC 3261 §7): parse within limits, print, build responses.
//!
//! Owns: the message model the rest of tolk sees ([`Request`], [`Response`]), the datagram and
//! stream framing rules (RFC 3261 §18.3, §20.14) and the limits that keep a hostile peer from
//! costing us memory. Header values are parsed by `ezk-sip-types` behind this module's API, so the
//! parser can be swapped without touching the transaction or dialog layers.
//!
//! Must not: keep state between messages (framing of a TCP stream lives in [`stream`]), do I/O.

mod headers;
mod method;
mod name;
mod parse;
mod print;
mod rejection;
pub mod stream;

pub use headers::{HeaderLookup, Via, addr_spec_user, param_of, uri_of_name_addr};
pub use parse::{Limits, ParseError, parse_datagram, parse_message};
pub use rejection::Rejection;

use bytes::Bytes;
pub use method::Method;
pub use name::{Headers, Name};

/// How a message arrived: datagram framing allows a trailing body without Content-Length,
/// stream framing does not (RFC 3261 §18.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    Datagram,
    Stream,
}

/// The Request-URI (RFC 3261 §19.1, §25.1 `Request-URI = SIP-URI / SIPS-URI / absoluteURI`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestUri {
    /// `sip:` or `sips:`; `user` is the percent-decoded user part, if any.
    Sip {
        raw: String,
        user: Option<String>,
        host: String,
    },
    /// `tel:` (RFC 3966): the number.
    Tel { raw: String, number: String },
    /// Any other scheme: legal syntax, but we answer 416 (RFC 3261 §8.2.2.1).
    Other { raw: String, scheme: String },
}

impl RequestUri {
    pub fn raw(&self) -> &str {
        match self {
            RequestUri::Sip { raw, .. } | RequestUri::Tel { raw, .. } | RequestUri::Other { raw, .. } => raw,
        }
    }

    /// The dialled digits or user: the user part of a SIP URI or a tel number.
    pub fn user(&self) -> Option<&str> {
        match self {
            RequestUri::Sip { user, .. } => user.as_deref(),
            RequestUri::Tel { number, .. } => Some(number),
            RequestUri::Other { .. } => None,
        }
    }
}

/// CSeq (RFC 3261 §20.16): a number below 2^31 and a method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

/// The headers every request and response must carry (RFC 3261 §8.1.1), parsed once.
///
/// `From` and `To` are kept as their raw values (any URI scheme is legal there, RFC 4475
/// §3.3.8) with the `tag` parameter extracted.
#[derive(Debug, Clone)]
pub struct CoreHeaders {
    /// Every Via hop, topmost first, as printed values (comma-joined lines are split).
    pub vias: Vec<String>,
    /// The topmost Via, parsed.
    pub top_via: Via,
    pub from: String,
    pub from_tag: Option<String>,
    pub to: String,
    pub to_tag: Option<String>,
    pub call_id: String,
    pub cseq: CSeq,
}

/// A SIP request. Headers other than the core ones stay in `headers` in arrival order.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub uri: RequestUri,
    pub core: CoreHeaders,
    pub max_forwards: Option<u32>,
    pub headers: Headers,
    pub body: Bytes,
}

/// A SIP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    pub core: CoreHeaders,
    pub headers: Headers,
    pub body: Bytes,
}

/// A parsed SIP message.
#[derive(Debug, Clone)]
pub enum SipMessage {
    Request(Request),
    Response(Response),
}

impl Request {
    /// The value of the `tag` on To, if any: present means the request is inside a dialog
    /// (RFC 3261 §12.2).
    pub fn to_tag(&self) -> Option<&str> {
        self.core.to_tag.as_deref()
    }

    pub fn header(&self, name: &Name) -> Option<&str> {
        self.headers.first(name)
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header(&Name::CONTENT_TYPE)
    }

    /// Option tags listed in `Require` (RFC 3261 §20.32).
    pub fn required(&self) -> Vec<String> {
        self.headers.tokens(&Name::REQUIRE)
    }

    /// Option tags listed in `Supported` (RFC 3261 §20.37).
    pub fn supported(&self) -> Vec<String> {
        self.headers.tokens(&Name::SUPPORTED)
    }
}

impl Request {
    /// Stamps the top Via with `received` and `rport` for the address the request came from
    /// (RFC 3261 §18.2.1, RFC 3581 §4), so responses carry them back.
    pub fn stamp_received(&mut self, source: std::net::SocketAddr) {
        if let Some(top) = self.core.vias.first_mut() {
            *top = headers::stamp_via(top, &self.core.top_via, source.ip(), source.port());
        }
    }

    /// Where responses go over an unreliable transport (RFC 3261 §18.2.2, RFC 3581 §4): the
    /// source address when the request asked for rport, else the source IP and the Via port.
    pub fn response_destination(&self, source: std::net::SocketAddr) -> std::net::SocketAddr {
        response_destination(&self.core.top_via, source)
    }
}

/// See [`Request::response_destination`].
pub fn response_destination(via: &Via, source: std::net::SocketAddr) -> std::net::SocketAddr {
    if via.rport.is_some() {
        source
    } else {
        std::net::SocketAddr::new(source.ip(), via.port.unwrap_or(5060))
    }
}

impl Response {
    pub fn header(&self, name: &Name) -> Option<&str> {
        self.headers.first(name)
    }

    pub fn is_provisional(&self) -> bool {
        self.code < 200
    }
}

/// Splits a comma-separated header value into its elements, respecting quotes and angle
/// brackets (RFC 3261 §7.3.1), e.g. a Record-Route line holding several routes.
pub fn split_list(value: &str) -> Vec<String> {
    headers::split_outside_quotes(value, ',')
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A fresh tag for From/To (RFC 3261 §19.3: at least 32 bits of randomness), drawn from the
/// caller's seeded generator (the core is sans-IO: its randomness is passed in as a seed).
pub fn new_tag(ids: &mut fastrand::Rng) -> String {
    format!("{:016x}", ids.u64(..))
}

/// The To tag of a stateless answer: a hash of what identifies the request (Call-ID, From,
/// CSeq, top Via), so its retransmissions get the same tag (RFC 3261 §8.2.6.2) and no
/// generator or state is needed. `DefaultHasher::new()` has fixed keys: the same request
/// hashes the same in one build, which is all a retransmission needs.
pub fn stateless_tag(identity: impl std::hash::Hash) -> String {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    identity.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// A fresh branch with the RFC 3261 magic cookie (§8.1.1.7).
pub fn new_branch(ids: &mut fastrand::Rng) -> String {
    format!("z9hG4bK{:016x}", ids.u64(..))
}

/// Builds a response to `req` per RFC 3261 §8.2.6.2: Via, From, To, Call-ID and CSeq copied;
/// a To tag added when the request had none and `to_tag` is given (never on 100 Trying).
pub fn response_to(req: &Request, code: u16, reason: &str, to_tag: Option<&str>) -> Response {
    let mut core = req.core.clone();
    if core.to_tag.is_none()
        && code > 100
        && let Some(tag) = to_tag
    {
        core.to = format!("{};tag={}", core.to, tag);
        core.to_tag = Some(tag.to_string());
    }
    let mut headers = Headers::new();
    // RFC 3261 §8.2.6.2: a 100 Trying copies Timestamp.
    if code == 100
        && let Some(ts) = req.header(&Name::TIMESTAMP)
    {
        headers.insert(Name::TIMESTAMP, ts);
    }
    Response {
        code,
        reason: if reason.is_empty() {
            default_reason(code).to_string()
        } else {
            reason.to_string()
        },
        core,
        headers,
        body: Bytes::new(),
    }
}

/// The reason phrases of RFC 3261 §21 (and extensions) for the codes tolk sends.
pub fn default_reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        422 => "Session Interval Too Small",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        603 => "Decline",
        _ => match code / 100 {
            1 => "Progress",
            2 => "OK",
            3 => "Redirect",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

#[cfg(test)]
mod tests;
