//! Typed views of the headers the transaction and dialog layers need.

use super::{Headers, Name};
use bytes::Bytes;
use ezk_sip_types::header::HeaderParse;
use ezk_sip_types::host::Host;
use std::net::IpAddr;

/// A parsed Via hop (RFC 3261 §20.42, §18.2.1; `rport` from RFC 3581 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, `TLS`, `SCTP`, ... upper-cased.
    pub transport: String,
    /// The sent-by host as printed (IPv6 in brackets).
    pub host: String,
    /// The sent-by host as an address, when it is one.
    pub host_ip: Option<IpAddr>,
    pub port: Option<u16>,
    pub branch: Option<String>,
    pub received: Option<String>,
    /// `None`: no rport; `Some(None)`: `;rport` without a value (a request for it).
    pub rport: Option<Option<u16>>,
    pub maddr: Option<String>,
}

impl Via {
    /// Parses one Via hop value (not a comma-joined list).
    pub fn parse(value: &str) -> Option<Via> {
        let src = Bytes::copy_from_slice(value.as_bytes());
        // Safe: `src` holds exactly the bytes of `value`, so it is valid UTF-8.
        let text = std::str::from_utf8(&src).ok()?;
        let (rest, via) = ezk_sip_types::header::typed::Via::parse(&src, text).ok()?;
        if !rest.trim().is_empty() {
            return None;
        }
        if via.transport.is_empty() {
            return None;
        }
        let (host, host_ip) = match &via.sent_by.host {
            Host::IP4(a) => (a.to_string(), Some(IpAddr::V4(*a))),
            Host::IP6(a) => (format!("[{a}]"), Some(IpAddr::V6(*a))),
            Host::Name(n) => (n.to_string(), None),
        };
        if host.is_empty() {
            return None;
        }
        let param = |name: &str| via.params.get(name).map(|p| p.value.as_ref().map(|v| v.to_string()));
        let rport = match param("rport") {
            None => None,
            Some(None) => Some(None),
            Some(Some(v)) => Some(Some(v.parse().ok()?)),
        };
        Some(Via {
            transport: via.transport.to_ascii_uppercase(),
            host,
            host_ip,
            port: via.sent_by.port,
            branch: param("branch").flatten(),
            received: param("received").flatten(),
            rport,
            maddr: param("maddr").flatten(),
        })
    }

    /// `host[:port]` as used for transaction matching (RFC 3261 §17.2.3).
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{}", self.host.to_ascii_lowercase(), p),
            None => self.host.to_ascii_lowercase(),
        }
    }

    /// True when the branch carries the RFC 3261 magic cookie (§8.1.1.7).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch.as_deref().is_some_and(|b| b.starts_with("z9hG4bK"))
    }
}

/// Rewrites a Via value with `received` and `rport` filled in, as a server transport does on
/// receipt (RFC 3261 §18.2.1, RFC 3581 §4). Other parameters are kept byte for byte.
pub(crate) fn stamp_via(value: &str, via: &Via, source_ip: IpAddr, source_port: u16) -> String {
    let mut out = String::with_capacity(value.len() + 40);
    // Parameters are separated by ';' and none of the Via parameters we touch is quoted, so a
    // split on ';' outside quotes is exact.
    for (i, part) in split_outside_quotes(value, ';').into_iter().enumerate() {
        if i == 0 {
            out.push_str(part);
            continue;
        }
        let name = part.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("received") {
            continue;
        }
        if name.eq_ignore_ascii_case("rport") {
            out.push_str(";rport=");
            out.push_str(&source_port.to_string());
            continue;
        }
        out.push(';');
        out.push_str(part);
    }
    let host_matches = via.host_ip == Some(source_ip);
    if !host_matches || via.rport.is_some() {
        out.push_str(";received=");
        out.push_str(&source_ip.to_string());
    }
    out
}

/// The characters of a header value that are outside quoted strings (RFC 3261 §25.1
/// `quoted-string`, with backslash escapes), with their byte offsets. The quotes themselves
/// are skipped. One scanner serves every quote-aware search in this module and in `parse`.
pub(crate) struct Unquoted<'a> {
    chars: std::str::CharIndices<'a>,
    in_quotes: bool,
    escaped: bool,
}

impl<'a> Unquoted<'a> {
    pub(crate) fn new(value: &'a str) -> Self {
        Unquoted {
            chars: value.char_indices(),
            in_quotes: false,
            escaped: false,
        }
    }

    /// True when the scan so far ended inside an unterminated quoted string.
    pub(crate) fn in_quotes(&self) -> bool {
        self.in_quotes
    }
}

impl Iterator for Unquoted<'_> {
    type Item = (usize, char);

    fn next(&mut self) -> Option<(usize, char)> {
        loop {
            let (i, c) = self.chars.next()?;
            if self.in_quotes {
                if self.escaped {
                    self.escaped = false;
                } else if c == '\\' {
                    self.escaped = true;
                } else if c == '"' {
                    self.in_quotes = false;
                }
                continue;
            }
            if c == '"' {
                self.in_quotes = true;
                continue;
            }
            return Some((i, c));
        }
    }
}

/// Splits on `sep` where it is not inside a quoted string or angle brackets.
pub(crate) fn split_outside_quotes(value: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut angle = 0u32;
    let mut start = 0;
    for (i, c) in Unquoted::new(value) {
        match c {
            '<' => angle += 1,
            '>' => angle = angle.saturating_sub(1),
            c if c == sep && angle == 0 => {
                parts.push(&value[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

/// True when `value` has balanced quotes and angle brackets.
pub(crate) fn is_balanced(value: &str) -> bool {
    let mut angle = 0i32;
    let mut scan = Unquoted::new(value);
    for (_, c) in scan.by_ref() {
        match c {
            '<' => angle += 1,
            '>' => {
                angle -= 1;
                if angle < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    !scan.in_quotes() && angle == 0
}

/// Byte offset of the first `needle` outside quoted strings.
pub(crate) fn find_unquoted(value: &str, needle: char) -> Option<usize> {
    Unquoted::new(value).find(|&(_, c)| c == needle).map(|(i, _)| i)
}

/// The header parameters of a `name-addr` or `addr-spec` value (RFC 3261 §20.10: without angle
/// brackets, everything after the first `;` is a header parameter, not a URI parameter).
fn header_params(value: &str) -> &str {
    match find_unquoted(value, '<') {
        Some(lt) => match value[lt..].find('>') {
            Some(gt) => &value[lt + gt + 1..],
            None => "",
        },
        None => match value.find(';') {
            Some(i) => &value[i..],
            None => "",
        },
    }
}

/// The value of header parameter `name` (e.g. `tag`) of a From/To/Contact value.
pub fn param_of(value: &str, name: &str) -> Option<String> {
    for part in split_outside_quotes(header_params(value), ';').into_iter().skip(1) {
        let mut kv = part.splitn(2, '=');
        let k = kv.next().unwrap_or("").trim();
        if k.eq_ignore_ascii_case(name) {
            return Some(kv.next().unwrap_or("").trim().trim_matches('"').to_string());
        }
    }
    None
}

/// The URI inside a `name-addr` (`"Alice" <sip:a@b>;tag=1` -> `sip:a@b`) or an `addr-spec`.
pub fn uri_of_name_addr(value: &str) -> &str {
    let v = value.trim();
    if let (Some(lt), Some(gt)) = (v.rfind('<'), v.rfind('>'))
        && lt < gt
    {
        return v[lt + 1..gt].trim();
    }
    match v.find(';') {
        Some(i) => v[..i].trim(),
        None => v,
    }
}

/// The user part of a SIP URI (`sip:+15550100@host` -> `+15550100`), or the number of a tel
/// URI (`tel:+15550100;phone-context=..` -> `+15550100`); percent-decoded.
pub fn addr_spec_user(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once(':')?;
    let raw = if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        let at = rest.rfind('@')?;
        let user = &rest[..at];
        // user[:password]; user parameters (RFC 4475 semiuri) stay in the user.
        user.split(':').next().unwrap_or(user)
    } else if scheme.eq_ignore_ascii_case("tel") {
        rest.split(';').next().unwrap_or(rest)
    } else {
        return None;
    };
    Some(percent_decode(raw))
}

/// Percent-decodes, keeping invalid escapes as they are (RFC 3986 §2.1).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Convenience lookups on a header map.
pub trait HeaderLookup {
    /// The first value of `name`.
    fn first(&self, name: &Name) -> Option<&str>;
    /// All comma-separated tokens of every `name` header, trimmed and lower-cased.
    fn tokens(&self, name: &Name) -> Vec<String>;
    /// The same tokens as sent (for echoing them, e.g. in Unsupported).
    fn tokens_as_sent(&self, name: &Name) -> Vec<String>;
}

impl HeaderLookup for Headers {
    fn first(&self, name: &Name) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn tokens(&self, name: &Name) -> Vec<String> {
        self.iter()
            .filter(|(n, _)| *n == name)
            .flat_map(|(_, v)| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    }

    fn tokens_as_sent(&self, name: &Name) -> Vec<String> {
        self.iter()
            .filter(|(n, _)| *n == name)
            .flat_map(|(_, v)| v.split(','))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect()
    }
}
