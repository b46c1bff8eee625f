//! Printing messages to the wire (RFC 3261 §7). Content-Length is always computed from the body.

use super::Headers;
use super::{CoreHeaders, Request, Response};
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt::Write as _;

pub(super) fn put(buf: &mut BytesMut, s: &str) {
    buf.put_slice(s.as_bytes());
}

pub(super) fn put_header(buf: &mut BytesMut, name: &str, value: &str) {
    put(buf, name);
    put(buf, ": ");
    put(buf, value);
    put(buf, "\r\n");
}

fn put_core(buf: &mut BytesMut, core: &CoreHeaders) {
    for via in &core.vias {
        put_header(buf, "Via", via);
    }
    put_header(buf, "From", &core.from);
    put_header(buf, "To", &core.to);
    put_header(buf, "Call-ID", &core.call_id);
    let mut cseq = String::with_capacity(16);
    let _ = write!(cseq, "{} {}", core.cseq.seq, core.cseq.method);
    put_header(buf, "CSeq", &cseq);
}

fn put_rest(buf: &mut BytesMut, headers: &Headers, body: &[u8]) {
    for (name, value) in headers.iter() {
        put_header(buf, name.as_print_str(), value);
    }
    put_header(buf, "Content-Length", &body.len().to_string());
    put(buf, "\r\n");
    buf.put_slice(body);
}

impl Request {
    /// The request as it goes on the wire.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(512 + self.body.len());
        put(&mut buf, &self.method.to_string());
        put(&mut buf, " ");
        put(&mut buf, self.uri.raw());
        put(&mut buf, " SIP/2.0\r\n");
        put_core(&mut buf, &self.core);
        if let Some(mf) = self.max_forwards {
            put_header(&mut buf, "Max-Forwards", &mf.to_string());
        }
        put_rest(&mut buf, &self.headers, &self.body);
        buf.freeze()
    }
}

impl Response {
    /// The response as it goes on the wire.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(512 + self.body.len());
        put(&mut buf, "SIP/2.0 ");
        put(&mut buf, &self.code.to_string());
        put(&mut buf, " ");
        put(&mut buf, &self.reason);
        put(&mut buf, "\r\n");
        put_core(&mut buf, &self.core);
        put_rest(&mut buf, &self.headers, &self.body);
        buf.freeze()
    }
}
