//! Framing SIP messages on a byte stream (TCP, TLS): RFC 3261 §18.3 and RFC 5626 §3.5.1.
//!
//! A message ends Content-Length bytes after the blank line that ends its head. Bytes that
//! cannot start a message are skipped line by line until a start line appears again, so one
//! garbled message costs that message only, not the connection. CRLF keep-alives are reported
//! so the transport can answer a ping (`CRLFCRLF`) with a pong (`CRLF`).

use super::parse::{Limits, is_token_byte};
use bytes::{Buf, Bytes, BytesMut};

/// What the framer found next in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// One complete message (head and body), ready for [`super::parse_message`].
    Message(Bytes),
    /// A `CRLFCRLF` keep-alive ping; answer with `CRLF` (RFC 5626 §3.5.1).
    Ping,
    /// Bytes skipped while resynchronising on a start line.
    Garbage(usize),
}

/// Incremental framer for one connection.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    limits: Limits,
}

impl StreamFramer {
    pub fn new(limits: Limits) -> Self {
        StreamFramer {
            buf: BytesMut::with_capacity(4096),
            limits,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete item, or `None` until more bytes arrive.
    pub fn next_item(&mut self) -> Option<StreamItem> {
        // Keep-alives between messages.
        if self.buf.starts_with(b"\r\n\r\n") {
            self.buf.advance(4);
            return Some(StreamItem::Ping);
        }
        if self.buf.starts_with(b"\r\n") {
            if self.buf.len() < 4 && b"\r\n\r\n".starts_with(&self.buf) {
                return None; // could still become a ping
            }
            self.buf.advance(2); // a pong, or a stray CRLF before a start line
            return self.next_item();
        }
        // The first line must look like a start line; otherwise skip it.
        match memchr_newline(&self.buf) {
            Some(eol) => {
                let line = &self.buf[..eol];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !looks_like_start_line(line) {
                    self.buf.advance(eol + 1);
                    return Some(StreamItem::Garbage(eol + 1));
                }
            }
            None => {
                if self.buf.len() > self.limits.max_header_bytes {
                    let n = self.buf.len();
                    self.buf.clear();
                    return Some(StreamItem::Garbage(n));
                }
                return None;
            }
        }
        let Some((head_len, body_start)) = find_head_end(&self.buf) else {
            if self.buf.len() > self.limits.max_message_bytes {
                // A head that never ends: drop its first line and resynchronise.
                let eol = memchr_newline(&self.buf).unwrap_or(self.buf.len() - 1);
                self.buf.advance(eol + 1);
                return Some(StreamItem::Garbage(eol + 1));
            }
            return None;
        };
        let content_length = content_length_of(&self.buf[..head_len]).unwrap_or(0);
        if body_start + content_length > self.limits.max_message_bytes {
            // Too large to buffer: skip the head; the body is skipped as garbage line by line.
            self.buf.advance(body_start);
            return Some(StreamItem::Garbage(body_start));
        }
        if self.buf.len() < body_start + content_length {
            return None;
        }
        let msg = self.buf.split_to(body_start + content_length).freeze();
        Some(StreamItem::Message(msg))
    }
}

fn memchr_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// `SIP/2.0 ...` or `METHOD SP uri SP SIP/...`.
fn looks_like_start_line(line: &[u8]) -> bool {
    if line.len() >= 8 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        return true;
    }
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return false;
    };
    sp > 0
        && line[..sp].iter().all(|&b| is_token_byte(b))
        && line[sp..].windows(5).any(|w| w.eq_ignore_ascii_case(b" SIP/"))
}

/// Returns (length of the head without the blank line, offset of the body).
fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    for i in 0..buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i + 1, i + 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some((i + 1, i + 3));
            }
        }
    }
    None
}

/// The Content-Length (or compact `l`) value in a head, when it is a valid number.
fn content_length_of(head: &[u8]) -> Option<usize> {
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim(&line[..colon]);
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let value = trim(&line[colon + 1..]);
            if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
                return None;
            }
            return std::str::from_utf8(value).ok()?.parse().ok();
        }
    }
    None
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] =
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 4\r\n\r\nbody";

    fn framer() -> StreamFramer {
        StreamFramer::new(Limits::default())
    }

    #[test]
    fn frames_a_message_split_across_reads() {
        let mut f = framer();
        for chunk in OPTIONS.chunks(7) {
            assert!(f.next_item().is_none());
            f.push(chunk);
        }
        assert_eq!(f.next_item(), Some(StreamItem::Message(Bytes::from_static(OPTIONS))));
        assert_eq!(f.next_item(), None);
    }

    #[test]
    fn frames_two_messages_in_one_read() {
        let mut f = framer();
        f.push(OPTIONS);
        f.push(OPTIONS);
        assert!(matches!(f.next_item(), Some(StreamItem::Message(_))));
        assert!(matches!(f.next_item(), Some(StreamItem::Message(_))));
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn crlf_crlf_is_a_ping() {
        // RFC 5626 §3.5.1
        let mut f = framer();
        f.push(b"\r\n\r\n");
        assert_eq!(f.next_item(), Some(StreamItem::Ping));
        f.push(b"\r\n");
        assert_eq!(f.next_item(), None);
        f.push(OPTIONS);
        assert!(matches!(f.next_item(), Some(StreamItem::Message(_))));
    }

    #[test]
    fn garbage_is_skipped_until_a_start_line() {
        let mut f = framer();
        f.push(b"\x00\x01garbage line\r\nmore junk\r\n");
        f.push(OPTIONS);
        assert_eq!(f.next_item(), Some(StreamItem::Garbage(16)));
        assert_eq!(f.next_item(), Some(StreamItem::Garbage(11)));
        assert_eq!(f.next_item(), Some(StreamItem::Message(Bytes::from_static(OPTIONS))));
    }

    #[test]
    fn endless_line_is_discarded_at_the_header_limit() {
        let mut f = StreamFramer::new(Limits {
            max_header_bytes: 100,
            ..Limits::default()
        });
        f.push(&[b'x'; 101]);
        assert_eq!(f.next_item(), Some(StreamItem::Garbage(101)));
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn oversized_body_is_skipped_and_framing_recovers() {
        let mut f = StreamFramer::new(Limits {
            max_message_bytes: 200,
            ..Limits::default()
        });
        f.push(b"INVITE sip:a@b SIP/2.0\r\nl: 100000\r\n\r\nline1\r\nline2\r\n");
        f.push(OPTIONS);
        let mut skipped = 0;
        loop {
            match f.next_item() {
                Some(StreamItem::Garbage(n)) => skipped += n,
                Some(StreamItem::Message(m)) => {
                    assert_eq!(&m[..], OPTIONS);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(skipped > 0);
    }
}
