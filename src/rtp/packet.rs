//! RTP packets (RFC 3550 §5.1) through `rtp-rs`: a zero-copy view for parsing, a builder for
//! sending.

use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};

/// The fields of a received RTP packet that the media path uses, borrowing the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpView<'a> {
    pub payload_type: u8,
    pub marker: bool,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

/// Why a datagram is not RTP we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("not an RTP version 2 packet, or truncated")]
    Malformed,
    #[error("payload type {0} is RTCP (RFC 5761 §4)")]
    LooksLikeRtcp(u8),
}

/// Parses a datagram as RTP. Packets whose second byte is an RTCP packet type (200-204, i.e.
/// payload types 72-76 with the marker bit) are refused, as RFC 5761 §4 recommends.
pub fn parse(buf: &[u8]) -> Result<RtpView<'_>, RtpError> {
    if buf.len() >= 2 && (200..=204).contains(&buf[1]) {
        return Err(RtpError::LooksLikeRtcp(buf[1]));
    }
    let r = RtpReader::new(buf).map_err(|_| RtpError::Malformed)?;
    if r.version() != 2 {
        return Err(RtpError::Malformed);
    }
    Some(RtpView {
        payload_type: r.payload_type(),
        marker: r.mark(),
        sequence: u16::from(r.sequence_number()),
        timestamp: r.timestamp(),
        ssrc: r.ssrc(),
        payload: r.payload(),
    })
    .ok_or(RtpError::Malformed)
}

/// Builds an RTP packet into `out` (cleared first), without allocating once `out` has grown
/// to packet size.
pub fn build(
    out: &mut Vec<u8>,
    payload_type: u8,
    marker: bool,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
    payload: &[u8],
) {
    out.clear();
    let builder = RtpPacketBuilder::new()
        .payload_type(payload_type & 0x7f)
        .marked(marker)
        .sequence(Seq::from(sequence))
        .timestamp(timestamp)
        .ssrc(ssrc)
        .payload(payload);
    out.resize(12 + payload.len(), 0);
    match builder.build_into(out) {
        Ok(n) => out.truncate(n),
        // Only an oversized payload fails; the media path never builds one.
        Err(_) => out.clear(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_parse_round_trips() {
        let mut buf = Vec::new();
        build(&mut buf, 8, true, 65_535, 0xdead_beef, 42, &[1, 2, 3]);
        let v = parse(&buf).unwrap();
        assert_eq!(
            (v.payload_type, v.marker, v.sequence, v.timestamp, v.ssrc, v.payload),
            (8, true, 65_535, 0xdead_beef, 42, &[1u8, 2, 3][..])
        );
    }

    #[test]
    fn junk_and_rtcp_are_refused() {
        assert_eq!(parse(&[0x80]), Err(RtpError::Malformed));
        assert_eq!(parse(&[0x40; 20]), Err(RtpError::Malformed), "version 1");
        // An RTCP receiver report: V=2, PT=201.
        assert_eq!(parse(&[0x81, 201, 0, 7, 0, 0, 0, 1]), Err(RtpError::LooksLikeRtcp(201)));
        // CSRC count larger than the packet.
        assert_eq!(
            parse(&[0x8f, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]),
            Err(RtpError::Malformed)
        );
    }
}
