//! A request too malformed to parse but still answerable (RFC 3261 §8.2.6.2): what the parser
//! kept of its core headers, and the error response printed from them.

use super::default_reason;
use super::headers::Via;
use super::print::{put, put_header};
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;

/// A request that is malformed but answerable: the raw core headers to echo (RFC 3261
/// §8.2.6.2) and the status to send.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub status: u16,
    /// What was wrong, sent in the reason phrase after the standard one.
    pub detail: &'static str,
    pub method: String,
    pub vias: Vec<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub call_id: Option<String>,
    pub cseq: Option<String>,
}

impl Rejection {
    /// The error response, with the top Via stamped for `source` (RFC 3581 §4).
    pub fn response_bytes(&self, source: SocketAddr) -> Bytes {
        let mut vias = self.vias.clone();
        if let Some(top) = vias.first_mut()
            && let Some(parsed) = Via::parse(top)
        {
            *top = super::headers::stamp_via(top, &parsed, source.ip(), source.port());
        }
        write_raw_response(self, &vias)
    }

    /// The parsed top Via, for routing the response (RFC 3261 §18.2.2).
    pub fn top_via(&self) -> Option<Via> {
        self.vias.first().and_then(|v| Via::parse(v))
    }
}

/// An error response to a request that did not parse, from its raw core headers.
fn write_raw_response(r: &Rejection, vias: &[String]) -> Bytes {
    let mut buf = BytesMut::with_capacity(512);
    put(&mut buf, "SIP/2.0 ");
    put(&mut buf, &r.status.to_string());
    put(&mut buf, " ");
    put(&mut buf, default_reason(r.status));
    put(&mut buf, " (");
    put(&mut buf, r.detail);
    put(&mut buf, ")\r\n");
    for via in vias {
        put_header(&mut buf, "Via", via);
    }
    // RFC 3261 §8.2.6.2: a final response carries a To tag.
    let to = r.to.as_ref().map(|to| match super::param_of(to, "tag") {
        Some(_) => to.clone(),
        None => format!(
            "{to};tag={}",
            super::stateless_tag((&r.call_id, &r.from, &r.cseq, r.vias.first()))
        ),
    });
    for (name, value) in [
        ("From", &r.from),
        ("To", &to),
        ("Call-ID", &r.call_id),
        ("CSeq", &r.cseq),
    ] {
        if let Some(v) = value {
            put_header(&mut buf, name, v);
        }
    }
    if r.status == 505 {
        put_header(&mut buf, "Warning", "399 tolk \"only SIP/2.0 is supported\"");
    }
    put_header(&mut buf, "Content-Length", "0");
    put(&mut buf, "\r\n");
    buf.freeze()
}
