//! HEP v3 export: a copy of every SIP message tolk receives or sends, to a Homer collector
//! (`hep.destination`), so operators see ladders of their calls. The encapsulation is
//! HEP3 ("HEP3 Network Protocol Specification", sipcapture/HEP, rev. 41): the ASCII id
//! `HEP3`, the total length, then chunks of vendor 0 (generic), each `vendor u16, type u16,
//! length u16` (the 6-byte chunk header included) and the value, all big-endian.
//!
//! Best effort by design: one non-blocking `send_to` per message on its own socket; a copy
//! that cannot go is counted (`hep_send_errors_total`) and dropped; SIP never waits for it.
//! The copy is the message as on the wire, numbers included: point it only at a collector
//! you run (docs/operations.md).

use crate::sip::dialog::TransportKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{SystemTime, UNIX_EPOCH};

/// HEP3 chunk types of the generic vendor (spec §3, table "Chunk types").
mod chunk {
    pub const IP_FAMILY: u16 = 0x0001;
    pub const IP_PROTOCOL: u16 = 0x0002;
    pub const IPV4_SRC: u16 = 0x0003;
    pub const IPV4_DST: u16 = 0x0004;
    pub const IPV6_SRC: u16 = 0x0005;
    pub const IPV6_DST: u16 = 0x0006;
    pub const SRC_PORT: u16 = 0x0007;
    pub const DST_PORT: u16 = 0x0008;
    pub const TIME_SECS: u16 = 0x0009;
    pub const TIME_MICROS: u16 = 0x000a;
    pub const PROTOCOL_TYPE: u16 = 0x000b;
    pub const CAPTURE_ID: u16 = 0x000c;
    pub const AUTH_KEY: u16 = 0x000e;
    pub const PAYLOAD: u16 = 0x000f;
    pub const CORRELATION_ID: u16 = 0x0011;
}

/// The protocol type of a SIP payload (chunk 0x000b).
pub const PROTOCOL_SIP: u8 = 1;

/// One captured message.
#[derive(Debug, Clone)]
pub struct Captured<'a> {
    pub transport: TransportKind,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub time: SystemTime,
    pub payload: &'a [u8],
}

/// The HEP3 packet of `m` from capture agent `capture_id`, with `auth` when not empty and
/// the SIP Call-ID as the correlation id when the payload has one. None when the message
/// is too big for one HEP3 packet (its length field is 16 bits) or its two addresses are
/// of different families.
pub fn encode(m: &Captured<'_>, capture_id: u32, auth: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(m.payload.len() + 128);
    out.extend_from_slice(b"HEP3");
    out.extend_from_slice(&[0, 0]); // total length, filled in below
    let put = |out: &mut Vec<u8>, kind: u16, value: &[u8]| {
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&((value.len() + 6) as u16).to_be_bytes());
        out.extend_from_slice(value);
    };
    // A v4-mapped peer of a dual-stack socket is told as the IPv4 address it is.
    let octets = |ip: IpAddr| match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a
            .to_ipv4_mapped()
            .map_or_else(|| a.octets().to_vec(), |v4| v4.octets().to_vec()),
    };
    let (src, dst) = (octets(m.src.ip()), octets(m.dst.ip()));
    let (family, src_kind, dst_kind) = match (src.len(), dst.len()) {
        (4, 4) => (2u8, chunk::IPV4_SRC, chunk::IPV4_DST),
        (16, 16) => (10u8, chunk::IPV6_SRC, chunk::IPV6_DST),
        _ => return None,
    };
    put(&mut out, chunk::IP_FAMILY, &[family]);
    let protocol: u8 = match m.transport {
        TransportKind::Udp => 17,
        TransportKind::Tcp | TransportKind::Tls => 6,
    };
    put(&mut out, chunk::IP_PROTOCOL, &[protocol]);
    put(&mut out, src_kind, &src);
    put(&mut out, dst_kind, &dst);
    put(&mut out, chunk::SRC_PORT, &m.src.port().to_be_bytes());
    put(&mut out, chunk::DST_PORT, &m.dst.port().to_be_bytes());
    let since = m.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    put(&mut out, chunk::TIME_SECS, &(since.as_secs() as u32).to_be_bytes());
    put(&mut out, chunk::TIME_MICROS, &since.subsec_micros().to_be_bytes());
    put(&mut out, chunk::PROTOCOL_TYPE, &[PROTOCOL_SIP]);
    put(&mut out, chunk::CAPTURE_ID, &capture_id.to_be_bytes());
    if !auth.is_empty() {
        put(&mut out, chunk::AUTH_KEY, auth.as_bytes());
    }
    if let Some(id) = call_id_of(m.payload) {
        put(&mut out, chunk::CORRELATION_ID, id.as_bytes());
    }
    put(&mut out, chunk::PAYLOAD, m.payload);
    let total = u16::try_from(out.len()).ok()?;
    out[4..6].copy_from_slice(&total.to_be_bytes());
    Some(out)
}

/// The Call-ID header's value (long form or compact `i:`, RFC 3261 §20.8), if the head of
/// the message has one.
pub fn call_id_of(message: &[u8]) -> Option<&str> {
    let head_end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(message.len());
    let head = std::str::from_utf8(&message[..head_end]).ok()?;
    head.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("call-id") || name.eq_ignore_ascii_case("i"))
            .then(|| value.trim())
            .filter(|v| !v.is_empty())
    })
}

/// Sends the copies.
#[derive(Debug)]
pub struct HepSender {
    socket: UdpSocket,
    collector: SocketAddr,
    capture_id: u32,
    auth: String,
}

impl HepSender {
    /// A sender to `collector` (a non-blocking UDP socket of its family).
    pub fn new(collector: SocketAddr, capture_id: u32, auth: &str) -> std::io::Result<HepSender> {
        let any: SocketAddr = if collector.is_ipv4() {
            "0.0.0.0:0".parse().expect("address")
        } else {
            "[::]:0".parse().expect("address")
        };
        let socket = UdpSocket::bind(any)?;
        socket.set_nonblocking(true)?;
        Ok(HepSender {
            socket,
            collector,
            capture_id,
            auth: auth.to_string(),
        })
    }

    /// Sends the copy of one message, or counts why it could not.
    pub fn capture(&self, transport: TransportKind, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        let captured = Captured {
            transport,
            src,
            dst,
            time: SystemTime::now(),
            payload,
        };
        let sent =
            encode(&captured, self.capture_id, &self.auth).map(|packet| self.socket.send_to(&packet, self.collector));
        match sent {
            Some(Ok(_)) => metrics::counter!("hep_packets_sent_total").increment(1),
            _ => metrics::counter!("hep_send_errors_total").increment(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a HEP3 packet back into (type, value) chunks, as a collector does.
    fn chunks(packet: &[u8]) -> Vec<(u16, Vec<u8>)> {
        assert_eq!(&packet[..4], b"HEP3");
        assert_eq!(u16::from_be_bytes([packet[4], packet[5]]) as usize, packet.len());
        let mut at = 6;
        let mut out = Vec::new();
        while at < packet.len() {
            let vendor = u16::from_be_bytes([packet[at], packet[at + 1]]);
            let kind = u16::from_be_bytes([packet[at + 2], packet[at + 3]]);
            let len = u16::from_be_bytes([packet[at + 4], packet[at + 5]]) as usize;
            assert_eq!(vendor, 0);
            out.push((kind, packet[at + 6..at + len].to_vec()));
            at += len;
        }
        assert_eq!(at, packet.len());
        out
    }

    const INVITE: &[u8] = b"INVITE sip:+15550100300@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK1\r\ni: abc@192.0.2.9\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn a_message_is_encapsulated_chunk_by_chunk_as_hep3_says() {
        let m = Captured {
            transport: TransportKind::Udp,
            src: "192.0.2.9:5070".parse().unwrap(),
            dst: "192.0.2.1:5060".parse().unwrap(),
            time: UNIX_EPOCH + std::time::Duration::from_micros(1_800_000_000_123_456),
            payload: INVITE,
        };
        let c = chunks(&encode(&m, 2001, "secret").unwrap());
        let get = |k: u16| c.iter().find(|(t, _)| *t == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get(chunk::IP_FAMILY), [2]);
        assert_eq!(get(chunk::IP_PROTOCOL), [17]);
        assert_eq!(get(chunk::IPV4_SRC), [192, 0, 2, 9]);
        assert_eq!(get(chunk::IPV4_DST), [192, 0, 2, 1]);
        assert_eq!(get(chunk::SRC_PORT), 5070u16.to_be_bytes());
        assert_eq!(get(chunk::DST_PORT), 5060u16.to_be_bytes());
        assert_eq!(get(chunk::TIME_SECS), 1_800_000_000u32.to_be_bytes());
        assert_eq!(get(chunk::TIME_MICROS), 123_456u32.to_be_bytes());
        assert_eq!(get(chunk::PROTOCOL_TYPE), [PROTOCOL_SIP]);
        assert_eq!(get(chunk::CAPTURE_ID), 2001u32.to_be_bytes());
        assert_eq!(get(chunk::AUTH_KEY), b"secret");
        assert_eq!(get(chunk::CORRELATION_ID), b"abc@192.0.2.9", "the compact form is read");
        assert_eq!(get(chunk::PAYLOAD), INVITE);
    }

    #[test]
    fn v6_and_v4_mapped_peers_and_oversized_messages() {
        let m = Captured {
            transport: TransportKind::Tls,
            src: "[2001:db8::1]:5061".parse().unwrap(),
            dst: "[2001:db8::2]:5061".parse().unwrap(),
            time: SystemTime::now(),
            payload: b"OPTIONS sip:x SIP/2.0\r\n\r\n",
        };
        let c = chunks(&encode(&m, 1, "").unwrap());
        assert!(c.contains(&(chunk::IP_FAMILY, vec![10])) && c.contains(&(chunk::IP_PROTOCOL, vec![6])));
        assert!(c.iter().any(|(t, v)| *t == chunk::IPV6_SRC && v.len() == 16));
        assert!(
            !c.iter()
                .any(|(t, _)| *t == chunk::AUTH_KEY || *t == chunk::CORRELATION_ID)
        );
        let mapped = Captured {
            src: "[::ffff:192.0.2.9]:5060".parse().unwrap(),
            dst: "[::ffff:192.0.2.1]:5060".parse().unwrap(),
            ..m.clone()
        };
        let c = chunks(&encode(&mapped, 1, "").unwrap());
        assert!(c.contains(&(chunk::IP_FAMILY, vec![2])) && c.contains(&(chunk::IPV4_SRC, vec![192, 0, 2, 9])));
        let big = vec![b'x'; 70_000];
        assert!(encode(&Captured { payload: &big, ..m }, 1, "").is_none());
    }

    #[test]
    fn the_call_id_is_found_in_the_head_only() {
        assert_eq!(
            call_id_of(b"BYE sip:a SIP/2.0\r\nCall-ID:  x1@h \r\n\r\n"),
            Some("x1@h")
        );
        assert_eq!(call_id_of(b"BYE sip:a SIP/2.0\r\nVia: v\r\n\r\nCall-ID: body"), None);
        assert_eq!(call_id_of(b"\xff\xfe"), None);
    }
}
