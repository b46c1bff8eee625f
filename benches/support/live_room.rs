//! What the room benches share: the signals members send (a voice, line noise), a member's
//! far end over real loopback sockets, and the timed loop that writes every member's
//! packet, then runs one room tick.

use std::net::UdpSocket;
use std::time::{Duration, Instant};
use tolk::media::session::{Codec, Direction, NegotiatedMedia};
use tolk::media::stream::{MediaStream, StreamStart};
use tolk::room::scheduler::{LiveRoom, Scratch, Seat, TICK};

/// Talker `v`'s voice: a tone of its own, `n` samples at `rate`.
pub fn voice(v: usize, n: usize, rate: f64) -> Vec<i16> {
    (0..n)
        .map(|i| (6000.0 * (2.0 * std::f64::consts::PI * (300.0 + 170.0 * v as f64) * i as f64 / rate).sin()) as i16)
        .collect()
}

/// Line noise far below the talk threshold, `n` samples.
pub fn hush(n: usize) -> Vec<i16> {
    (0..n).map(|i| ((i * 7919) % 41) as i16 - 20).collect()
}

/// A member's far end: where it sends from (and where the mix goes, unread).
pub struct Far {
    pub sock: UdpSocket,
    pub to: std::net::SocketAddr,
    /// Held so the member counts as having a leg (the room drops members whose leg is gone).
    _back: tokio::sync::oneshot::Receiver<Box<MediaStream>>,
}

/// A member's seat (its stream on loopback sockets) and its far end.
pub fn seat(call: u64, codec: Codec, payload_type: u8, now: Instant) -> (Box<Seat>, Far) {
    let gw = UdpSocket::bind("127.0.0.1:0").unwrap();
    gw.set_nonblocking(true).unwrap();
    let rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
    rtcp.set_nonblocking(true).unwrap();
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    let media = NegotiatedMedia {
        remote_rtp: Some(phone.local_addr().unwrap()),
        codec,
        payload_type,
        // Trunks offer RFC 4733 events, so no in-band DTMF detector runs.
        telephone_event: Some(101),
        ptime_ms: 20,
        direction: Direction::SendRecv,
        fmtp: None,
        srtp: None,
    };
    let to = gw.local_addr().unwrap();
    let (give_back, back) = tokio::sync::oneshot::channel();
    let start = StreamStart {
        id: call,
        local_port: to.port(),
        now,
        ntp: 0,
        seed: call,
    };
    let seat = Seat {
        call,
        stream: Box::new(MediaStream::new(start, Some(media))),
        rtp: gw,
        rtcp,
        give_back,
        reports: Box::new(|_| true),
        rtp_timeout: Duration::from_secs(3600),
    };
    (
        Box::new(seat),
        Far {
            sock: phone,
            to,
            _back: back,
        },
    )
}

/// Runs room ticks, counting only the ticks (not the packets written before each).
pub struct Ticker {
    start: Instant,
    tick: u64,
    pkt: Vec<u8>,
    scratch: Scratch,
}

impl Ticker {
    pub fn new() -> Ticker {
        Ticker {
            start: Instant::now(),
            tick: 0,
            pkt: Vec::new(),
            scratch: Scratch::default(),
        }
    }

    /// `iters` ticks; member i sends `packet(i)`: (payload, payload type, timestamp step).
    pub fn run<'a>(
        &mut self,
        room: &mut LiveRoom,
        far: &[Far],
        iters: u64,
        packet: impl Fn(usize) -> (&'a [u8], u8, u32),
    ) -> Duration {
        let mut spent = Duration::ZERO;
        for _ in 0..iters {
            let tick = self.tick;
            for (i, f) in far.iter().enumerate() {
                let (payload, pt, step) = packet(i);
                tolk::rtp::packet::build(
                    &mut self.pkt,
                    pt,
                    tick == 0,
                    tick as u16,
                    (tick as u32).wrapping_mul(step),
                    i as u32,
                    payload,
                );
                let _ = f.sock.send_to(&self.pkt, f.to);
            }
            let now = self.start + TICK * tick as u32;
            let t = Instant::now();
            room.tick(now, tick, &mut self.scratch);
            spent += t.elapsed();
            self.tick += 1;
        }
        spent
    }

    /// Ticks run so far.
    pub fn ticks(&self) -> u64 {
        self.tick
    }
}
