//! RFC 4733 telephone-event receiver: turns event packets into one digit per key press.
//!
//! An event is identified by the RTP timestamp of its start (§2.5.1.1); its packets repeat
//! with a growing duration, and the end is sent three times with the E bit (§2.5.1.4). A new
//! timestamp starts a new event, except the segments of a very long event, which continue the
//! same key (§2.5.1.5). Packets older than the current event are late and ignored.

/// The event payload (§2.3): event code, end bit, volume, duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayload {
    pub event: u8,
    pub end: bool,
    /// Power level in -dBm0 (0-63).
    pub volume: u8,
    /// Duration in RTP timestamp units.
    pub duration: u16,
}

impl EventPayload {
    /// Parses the first event of a payload (4 bytes; redundant events after it, RFC 4733
    /// §2.5.1.6 / RFC 2198, are not needed to find digits).
    pub fn parse(payload: &[u8]) -> Option<EventPayload> {
        let b = payload.get(..4)?;
        Some(EventPayload {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [self.event, (self.end as u8) << 7 | (self.volume & 0x3f), d[0], d[1]]
    }
}

/// The key for an event code (§3.2: 0-9, *, #, A-D), or `None` for other events.
pub fn digit_of(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// The event code of a key.
pub fn event_of(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        _ => None,
    }
}

/// What the receiver reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigitEvent {
    /// A key went down (reported on the first packet seen, so menus react at once).
    Pressed { digit: char, volume: u8 },
    /// The key went up; `duration` in RTP timestamp units.
    Released { digit: char, duration: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Current {
    timestamp: u32,
    event: u8,
    /// Duration of the event up to the start of the current segment.
    base: u32,
    duration: u32,
    ended: bool,
}

/// Receive state for one RTP stream's telephone-events.
#[derive(Debug, Default, Clone)]
pub struct EventReceiver {
    current: Option<Current>,
}

impl EventReceiver {
    pub fn new() -> Self {
        EventReceiver::default()
    }

    /// Feeds one telephone-event packet (its RTP timestamp, marker bit and payload). Returns
    /// up to two events (a press and a release when a short event arrives in one packet).
    pub fn receive(&mut self, timestamp: u32, marker: bool, payload: &[u8]) -> Vec<DigitEvent> {
        let mut out = Vec::new();
        let Some(p) = EventPayload::parse(payload) else {
            return out;
        };
        let Some(digit) = digit_of(p.event) else { return out };
        match self.current {
            Some(cur) if cur.timestamp == timestamp => {
                // Same event: a continuation or a (repeated) end.
                if cur.ended {
                    return out;
                }
                let duration = cur.base + p.duration as u32;
                let cur = self.current.as_mut().expect("checked above");
                cur.duration = cur.duration.max(duration);
                if p.end {
                    cur.ended = true;
                    out.push(DigitEvent::Released {
                        digit,
                        duration: cur.duration,
                    });
                }
            }
            Some(cur) if is_before(timestamp, cur.timestamp) && !marker => {
                // Late packet of an older event. (With the marker bit it is the start of a new
                // event from a sender whose timestamps went back: a new digit.)
            }
            Some(cur)
                if !marker
                    && !cur.ended
                    && cur.event == p.event
                    && timestamp == cur.timestamp.wrapping_add(cur.duration.saturating_sub(cur.base)) =>
            {
                // §2.5.1.5: the next segment of a long event (new timestamp, no marker).
                let base = cur.duration;
                self.current = Some(Current {
                    timestamp,
                    event: p.event,
                    base,
                    duration: base + p.duration as u32,
                    ended: p.end,
                });
                if p.end {
                    out.push(DigitEvent::Released {
                        digit,
                        duration: base + p.duration as u32,
                    });
                }
            }
            previous => {
                // A new event. If the previous one never showed its end, close it now.
                if let Some(prev) = previous.filter(|c| !c.ended)
                    && let Some(d) = digit_of(prev.event)
                {
                    out.push(DigitEvent::Released {
                        digit: d,
                        duration: prev.duration,
                    });
                }
                self.current = Some(Current {
                    timestamp,
                    event: p.event,
                    base: 0,
                    duration: p.duration as u32,
                    ended: p.end,
                });
                out.push(DigitEvent::Pressed {
                    digit,
                    volume: p.volume,
                });
                if p.end {
                    out.push(DigitEvent::Released {
                        digit,
                        duration: p.duration as u32,
                    });
                }
            }
        }
        out
    }
}

/// One packet a sender emits for a key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// Set on the first packet of the event (RFC 4733 §2.5.1.1).
    pub marker: bool,
    /// The event's RTP timestamp: the same for all its packets.
    pub timestamp: u32,
    pub payload: [u8; 4],
}

/// Sends a key press as telephone-events (RFC 4733 §2.5.1): a first packet with the marker bit,
/// an update every 50 ms with the growing duration, then the end three times. Driven by the
/// caller's 20 ms tick (sans-IO): each call to [`EventSender::tick`] returns what to send now.
#[derive(Debug, Clone)]
pub struct EventSender {
    event: u8,
    timestamp: u32,
    /// Units of the RTP clock per 20 ms tick.
    tick_units: u32,
    total: u32,
    elapsed: u32,
    ticks: u32,
    ends_left: u8,
    started: bool,
}

impl EventSender {
    /// A press of `digit` lasting `duration_ms`, starting at RTP timestamp `timestamp`, on a
    /// stream whose clock is `clock_rate` Hz.
    pub fn new(digit: char, duration_ms: u32, timestamp: u32, clock_rate: u32) -> Option<Self> {
        let event = event_of(digit)?;
        let tick_units = clock_rate / 50;
        Some(EventSender {
            event,
            timestamp,
            tick_units,
            total: (duration_ms.clamp(40, 5000) * (clock_rate / 1000)).min(u16::MAX as u32),
            elapsed: 0,
            ticks: 0,
            ends_left: 3,
            started: false,
        })
    }

    /// The packet(s) for this 20 ms tick; empty when nothing is due; `None` when finished.
    pub fn tick(&mut self) -> Option<Vec<EventPacket>> {
        if self.ends_left == 0 {
            return None;
        }
        let mut out = Vec::new();
        self.elapsed = (self.elapsed + self.tick_units).min(self.total);
        self.ticks += 1;
        let payload = |end: bool, duration: u32| {
            EventPayload {
                event: self.event,
                end,
                volume: 10,
                duration: duration as u16,
            }
            .to_bytes()
        };
        if self.elapsed >= self.total {
            // §2.5.1.4: the final packet, sent three times.
            for _ in 0..self.ends_left {
                out.push(EventPacket {
                    marker: false,
                    timestamp: self.timestamp,
                    payload: payload(true, self.total),
                });
            }
            self.ends_left = 0;
        } else if !self.started {
            self.started = true;
            out.push(EventPacket {
                marker: true,
                timestamp: self.timestamp,
                payload: payload(false, self.elapsed),
            });
        } else if self.ticks % 3 == 1 {
            // An update about every 50 ms (every third 20 ms tick is 60 ms; §2.5.1.3 asks for
            // 50 ms "or so").
            out.push(EventPacket {
                marker: false,
                timestamp: self.timestamp,
                payload: payload(false, self.elapsed),
            });
        }
        Some(out)
    }
}

/// What a [`DigitSequence`] wants this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceTick {
    /// No event in progress: send audio as usual.
    Idle,
    /// An event is in progress: send these packets (maybe none this tick) instead of audio
    /// (§2.5.1.2 lets the sender suppress the audio the event replaces).
    Event(Vec<EventPacket>),
    /// The last digit of the sequence has been sent (returned once).
    Done(String),
}

/// Sends a string of digits one press after another, with a pause between presses
/// (sans-IO: driven by the caller's 20 ms tick and its RTP timestamp).
#[derive(Debug, Default)]
pub struct DigitSequence {
    queue: std::collections::VecDeque<char>,
    current: Option<EventSender>,
    /// Ticks of pause left before the next press.
    gap: u8,
    sent: String,
}

/// Each press lasts 100 ms and is followed by 60 ms without an event: comfortably above the
/// 40 ms minimum receivers must accept (Q.24) and quick enough for a 16-digit PIN in ~2.6 s.
const PRESS_MS: u32 = 100;
const GAP_TICKS: u8 = 3;

impl DigitSequence {
    /// Queues `digits`; characters that are not events are skipped. Returns how many queued.
    pub fn push(&mut self, digits: &str) -> usize {
        let before = self.queue.len();
        self.queue.extend(digits.chars().filter(|&c| event_of(c).is_some()));
        self.queue.len() - before
    }

    /// True when nothing is queued or being sent.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.current.is_none() && self.sent.is_empty()
    }

    /// What to do on this tick; `timestamp` is the stream's RTP timestamp now and
    /// `clock_rate` the telephone-event clock (the audio codec's RTP clock).
    pub fn tick(&mut self, timestamp: u32, clock_rate: u32) -> SequenceTick {
        if let Some(sender) = self.current.as_mut() {
            match sender.tick() {
                Some(packets) => return SequenceTick::Event(packets),
                None => {
                    self.current = None;
                    self.gap = GAP_TICKS;
                }
            }
        }
        if self.gap > 0 {
            self.gap -= 1;
            return SequenceTick::Idle;
        }
        if let Some(digit) = self.queue.pop_front()
            && let Some(mut sender) = EventSender::new(digit, PRESS_MS, timestamp, clock_rate)
        {
            self.sent.push(digit);
            let first = sender.tick().unwrap_or_default();
            self.current = Some(sender);
            return SequenceTick::Event(first);
        }
        if self.sent.is_empty() {
            SequenceTick::Idle
        } else {
            SequenceTick::Done(std::mem::take(&mut self.sent))
        }
    }
}

/// Serial number arithmetic on RTP timestamps (RFC 1982 style): `a` before `b`.
fn is_before(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(event: u8, end: bool, duration: u16) -> [u8; 4] {
        EventPayload {
            event,
            end,
            volume: 10,
            duration,
        }
        .to_bytes()
    }

    /// A key press as a sender following RFC 4733 §2.5.1 emits it: start with marker, updates
    /// every 50 ms, three end packets.
    fn press(rx: &mut EventReceiver, ts: u32, event: u8, total: u16) -> Vec<DigitEvent> {
        let mut out = rx.receive(ts, true, &pkt(event, false, 400));
        let mut d = 800;
        while d < total {
            out.extend(rx.receive(ts, false, &pkt(event, false, d)));
            d += 400;
        }
        for _ in 0..3 {
            out.extend(rx.receive(ts, false, &pkt(event, true, total)));
        }
        out
    }

    #[test]
    fn one_press_is_one_digit_despite_repeated_end_packets() {
        let mut rx = EventReceiver::new();
        let out = press(&mut rx, 1000, 5, 1600);
        assert_eq!(
            out,
            vec![
                DigitEvent::Pressed { digit: '5', volume: 10 },
                DigitEvent::Released {
                    digit: '5',
                    duration: 1600
                }
            ]
        );
    }

    #[test]
    fn all_sixteen_events_map_to_keys() {
        let keys: String = (0..16).filter_map(digit_of).collect();
        assert_eq!(keys, "0123456789*#ABCD");
        for k in keys.chars() {
            assert_eq!(digit_of(event_of(k).unwrap()), Some(k));
        }
        assert_eq!(digit_of(16), None, "flash and other events are not digits");
    }

    #[test]
    fn the_same_key_twice_is_two_digits() {
        let mut rx = EventReceiver::new();
        let mut out = press(&mut rx, 1000, 1, 800);
        out.extend(press(&mut rx, 5000, 1, 800));
        let pressed = out.iter().filter(|e| matches!(e, DigitEvent::Pressed { .. })).count();
        assert_eq!(pressed, 2);
    }

    #[test]
    fn lost_start_packets_still_give_the_digit() {
        let mut rx = EventReceiver::new();
        let out = rx.receive(2000, false, &pkt(9, true, 1200));
        assert_eq!(
            out,
            vec![
                DigitEvent::Pressed { digit: '9', volume: 10 },
                DigitEvent::Released {
                    digit: '9',
                    duration: 1200
                }
            ]
        );
    }

    #[test]
    fn lost_end_packets_are_closed_by_the_next_event() {
        let mut rx = EventReceiver::new();
        rx.receive(1000, true, &pkt(2, false, 400));
        let out = rx.receive(3000, true, &pkt(3, false, 400));
        assert_eq!(
            out,
            vec![
                DigitEvent::Released {
                    digit: '2',
                    duration: 400
                },
                DigitEvent::Pressed { digit: '3', volume: 10 }
            ]
        );
    }

    #[test]
    fn late_packets_of_an_older_event_are_ignored() {
        let mut rx = EventReceiver::new();
        press(&mut rx, 1000, 4, 800);
        press(&mut rx, 3000, 6, 800);
        assert!(rx.receive(1000, false, &pkt(4, true, 800)).is_empty());
    }

    #[test]
    fn long_press_segments_continue_the_same_digit() {
        // §2.5.1.5: a press longer than the 16-bit duration continues in a new segment.
        let mut rx = EventReceiver::new();
        let mut out = rx.receive(10_000, true, &pkt(0, false, 65_535));
        out.extend(rx.receive(10_000 + 65_535, false, &pkt(0, false, 4000)));
        out.extend(rx.receive(10_000 + 65_535, false, &pkt(0, true, 8000)));
        assert_eq!(
            out,
            vec![
                DigitEvent::Pressed { digit: '0', volume: 10 },
                DigitEvent::Released {
                    digit: '0',
                    duration: 65_535 + 8000
                }
            ]
        );
    }

    #[test]
    fn a_marked_start_with_an_older_timestamp_is_a_new_digit() {
        // Senders that restart their clock (or replayed captures) go back in time; the marker
        // bit says a new event begins (RFC 4733 §2.5.1.1).
        let mut rx = EventReceiver::new();
        press(&mut rx, 13_280, 1, 800);
        let out = press(&mut rx, 10_000, 0, 800);
        assert_eq!(out[0], DigitEvent::Pressed { digit: '0', volume: 10 });
    }

    #[test]
    fn timestamps_wrap() {
        let mut rx = EventReceiver::new();
        press(&mut rx, u32::MAX - 100, 7, 800);
        let out = press(&mut rx, 500, 8, 800);
        assert_eq!(out[0], DigitEvent::Pressed { digit: '8', volume: 10 });
    }

    #[test]
    fn a_sequence_of_digits_reaches_the_receiver_in_order_with_distinct_timestamps() {
        let mut seq = DigitSequence::default();
        assert_eq!(seq.push("12x#"), 3);
        let mut rx = EventReceiver::new();
        let mut pressed = String::new();
        let mut ts = 1000u32;
        let mut done = None;
        let mut event_ticks = 0;
        for _ in 0..200 {
            match seq.tick(ts, 8000) {
                SequenceTick::Event(packets) => {
                    event_ticks += 1;
                    for p in packets {
                        for e in rx.receive(p.timestamp, p.marker, &p.payload) {
                            if let DigitEvent::Pressed { digit, .. } = e {
                                pressed.push(digit);
                            }
                        }
                    }
                }
                SequenceTick::Done(s) => {
                    done = Some(s);
                    break;
                }
                SequenceTick::Idle => {}
            }
            ts = ts.wrapping_add(160);
        }
        assert_eq!(pressed, "12#");
        assert_eq!(done.as_deref(), Some("12#"));
        // 100 ms presses are 5-6 ticks each.
        assert!((15..=20).contains(&event_ticks), "{event_ticks}");
        assert!(seq.is_idle());
        assert_eq!(seq.tick(ts, 8000), SequenceTick::Idle);
    }

    #[test]
    fn what_the_sender_sends_the_receiver_reads_as_one_digit_of_the_right_length() {
        for digit in "0123456789*#ABCD".chars() {
            let mut tx = EventSender::new(digit, 120, 4000, 8000).unwrap();
            let mut rx = EventReceiver::new();
            let mut events = Vec::new();
            let mut packets = 0;
            while let Some(batch) = tx.tick() {
                for p in batch {
                    packets += 1;
                    events.extend(rx.receive(p.timestamp, p.marker, &p.payload));
                }
            }
            assert_eq!(
                events,
                vec![
                    DigitEvent::Pressed { digit, volume: 10 },
                    DigitEvent::Released { digit, duration: 960 }
                ],
                "{digit}"
            );
            assert!(packets >= 4, "start, updates and three ends");
        }
        assert!(EventSender::new('x', 100, 0, 8000).is_none());
    }

    #[test]
    fn short_or_junk_payloads_are_ignored() {
        let mut rx = EventReceiver::new();
        assert!(rx.receive(1, true, &[1, 2]).is_empty());
        assert!(rx.receive(1, true, &[]).is_empty());
    }
}
