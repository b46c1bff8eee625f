//! Adaptive jitter buffer, sans-IO: packets in with their arrival time, one frame out per
//! 20 ms tick.
//!
//! - Order: packets are kept by RTP timestamp (unwrapped), so reordering is undone and
//!   duplicates are dropped; packets older than the playout point are late and dropped.
//! - Delay: playout starts once the first packet has waited the target delay. The target
//!   follows the RFC 3550 §6.4.1 interarrival jitter estimate (one frame plus three times the
//!   jitter), bounded by a floor (20 ms) and a ceiling (200 ms). When more audio is buffered
//!   than the target plus two frames, one frame is dropped (the delay comes down); when the
//!   buffer runs dry, playout waits one tick with concealment (the delay goes up).
//! - Gaps: a missing frame with the next ones present is a loss, reported for concealment
//!   (Opus FEC/PLC, G.711 repetition). A gap of more than five frames in the timestamps is a
//!   silence (DTX, a new talkspurt) and is skipped; a long dry spell (hold) or a timestamp jump
//!   of seconds resynchronises on the next packet.
//!
//! Must not: read a clock (time comes in), allocate per tick beyond the payload it returns.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// RTP clock rate of the stream (8000 for G.711 and G.722's RTP clock, 48000 for Opus).
    pub clock_rate: u32,
    /// Duration of one frame (the tick).
    pub frame: Duration,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Packets kept at most (a burst beyond it drops the oldest).
    pub capacity: usize,
}

impl JitterConfig {
    pub fn new(clock_rate: u32) -> Self {
        JitterConfig {
            clock_rate,
            frame: Duration::from_millis(20),
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            capacity: 64,
        }
    }

    fn ts_of(&self, d: Duration) -> i64 {
        (d.as_micros() as i64 * self.clock_rate as i64) / 1_000_000
    }
}

/// What one tick plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// The frame's payload.
    Frame(Vec<u8>),
    /// The frame is lost (later ones are here): conceal it; `next` is the following payload,
    /// if buffered, for codecs with in-band FEC (Opus carries the lost frame in it).
    Lost { next: Option<Vec<u8>> },
    /// Nothing to play (before start, or the buffer ran dry): conceal or play silence.
    Empty,
}

/// Counters for quality reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub played: u64,
    pub lost: u64,
    pub late: u64,
    pub duplicates: u64,
    pub underruns: u64,
    /// Frames dropped to bring the delay down.
    pub shrunk: u64,
    pub resyncs: u64,
}

/// Buffered payloads by unwrapped timestamp, oldest first: a sorted deque. Packets nearly
/// always arrive in order (appended at the back) and leave from the front, and once warm it
/// does not allocate. (The `BTreeMap` it replaced allocated a node whenever it went from
/// empty to one packet, which a steady stream does for nearly every packet: 2-3% of a
/// conference mixer thread's time.)
#[derive(Debug, Clone)]
struct Queue(VecDeque<(i64, Vec<u8>)>);

impl Queue {
    fn with_capacity(n: usize) -> Queue {
        Queue(VecDeque::with_capacity(n))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn first_ts(&self) -> Option<i64> {
        self.0.front().map(|e| e.0)
    }

    fn last_ts(&self) -> Option<i64> {
        self.0.back().map(|e| e.0)
    }

    fn pop_first(&mut self) -> Option<Vec<u8>> {
        self.0.pop_front().map(|e| e.1)
    }

    /// The index holding `ts`, or where it would go.
    fn find(&self, ts: i64) -> Result<usize, usize> {
        match self.0.back() {
            None => Err(0),
            Some(&(last, _)) if ts > last => Err(self.0.len()),
            _ => self.0.binary_search_by_key(&ts, |e| e.0),
        }
    }

    fn contains(&self, ts: i64) -> bool {
        self.find(ts).is_ok()
    }

    /// Adds a payload; an existing timestamp is left as it is (the caller checks first).
    fn insert(&mut self, ts: i64, payload: Vec<u8>) {
        match self.find(ts) {
            Err(i) if i == self.0.len() => self.0.push_back((ts, payload)),
            Err(i) => self.0.insert(i, (ts, payload)),
            Ok(_) => {}
        }
    }

    fn remove(&mut self, ts: i64) -> Option<Vec<u8>> {
        let i = self.find(ts).ok()?;
        self.0.remove(i).map(|e| e.1)
    }

    fn get(&self, ts: i64) -> Option<&[u8]> {
        let i = self.find(ts).ok()?;
        self.0.get(i).map(|e| &e.1[..])
    }
}

/// The buffer for one incoming stream.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    frame_ts: i64,
    packets: Queue,
    /// Last received timestamp, raw and unwrapped, for unwrapping the next.
    last_ts: Option<(u32, i64)>,
    /// Next timestamp to play (unwrapped); `None` until playout starts.
    playout: Option<i64>,
    first_arrival: Option<Instant>,
    /// Jitter estimate in timestamp units, scaled by 16 (RFC 3550 A.8).
    jitter_q4: i64,
    last_transit: Option<i64>,
    /// Arrival clock origin, to express arrivals in timestamp units.
    epoch: Option<Instant>,
    empty_ticks: u32,
    stats: JitterStats,
    /// Payload buffers handed back by the consumer, reused so a warm buffer does not allocate
    /// per packet.
    spare: Vec<Vec<u8>>,
}

/// Silence longer than this (in ticks with an empty buffer) restarts playout.
const RESYNC_EMPTY_TICKS: u32 = 10;
/// A timestamp gap of more than this many frames ahead of playout is silence, not loss.
const SILENCE_GAP_FRAMES: i64 = 5;
/// A timestamp this far from the playout point (in seconds) is a new stream.
const JUMP_SECONDS: i64 = 2;

impl JitterBuffer {
    pub fn new(cfg: JitterConfig) -> Self {
        JitterBuffer {
            frame_ts: cfg.ts_of(cfg.frame).max(1),
            cfg,
            packets: Queue::with_capacity(cfg.capacity + 1),
            last_ts: None,
            playout: None,
            first_arrival: None,
            jitter_q4: 0,
            last_transit: None,
            epoch: None,
            empty_ticks: 0,
            stats: JitterStats::default(),
            spare: Vec::new(),
        }
    }

    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// RFC 3550 interarrival jitter, in timestamp units.
    pub fn jitter(&self) -> u32 {
        (self.jitter_q4 >> 4) as u32
    }

    /// The delay the buffer aims for now.
    pub fn target_delay(&self) -> Duration {
        let jitter_s = (self.jitter_q4 >> 4) as f64 / self.cfg.clock_rate as f64;
        let target = self.cfg.frame.as_secs_f64() + 3.0 * jitter_s;
        Duration::from_secs_f64(target).clamp(self.cfg.min_delay, self.cfg.max_delay)
    }

    /// Audio buffered ahead of the playout point.
    pub fn buffered(&self) -> Duration {
        match (self.playout, self.packets.last_ts()) {
            (Some(p), Some(last)) if last >= p => {
                let ts = last - p + self.frame_ts;
                Duration::from_micros((ts * 1_000_000 / self.cfg.clock_rate as i64) as u64)
            }
            _ => Duration::ZERO,
        }
    }

    fn unwrap_ts(&mut self, ts: u32) -> i64 {
        let ext = match self.last_ts {
            None => ts as i64,
            Some((raw, ext)) => ext + ts.wrapping_sub(raw) as i32 as i64,
        };
        self.last_ts = Some((ts, ext));
        ext
    }

    /// A packet arrived at `now`.
    pub fn push(&mut self, now: Instant, timestamp: u32, payload: &[u8]) {
        let ts = self.unwrap_ts(timestamp);
        // Jitter (RFC 3550 A.8) on the arrival clock in timestamp units.
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = self.cfg.ts_of(now.saturating_duration_since(epoch));
        let transit = arrival - ts;
        if let Some(prev) = self.last_transit {
            let d = (transit - prev).abs();
            self.jitter_q4 += d - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);

        if let Some(p) = self.playout {
            if (ts - p).abs() > JUMP_SECONDS * self.cfg.clock_rate as i64 {
                // A new stream (source restart, long hold): start over with this packet.
                self.restart();
                self.stats.resyncs += 1;
            } else if ts < p {
                self.stats.late += 1;
                return;
            }
        }
        if self.packets.contains(ts) {
            self.stats.duplicates += 1;
            return;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(payload);
        self.packets.insert(ts, buf);
        while self.packets.len() > self.cfg.capacity {
            if let Some(p) = self.packets.pop_first() {
                self.recycle(p);
            }
        }
        if self.first_arrival.is_none() {
            self.first_arrival = Some(now);
        }
    }

    /// Forgets the stream (a new SSRC: RFC 3550 §8.2, a new source starts its own sequence
    /// and timing); playout restarts with the next packet.
    pub fn reset(&mut self) {
        self.restart();
        self.last_ts = None;
        self.last_transit = None;
        self.epoch = None;
    }

    /// Gives a played payload back for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.spare.len() < self.cfg.capacity {
            self.spare.push(buf);
        }
    }

    fn restart(&mut self) {
        while let Some(p) = self.packets.pop_first() {
            self.recycle(p);
        }
        self.playout = None;
        self.first_arrival = None;
        self.empty_ticks = 0;
    }

    /// The frame for the tick at `now`.
    pub fn pop(&mut self, now: Instant) -> Playout {
        let playout = match self.playout {
            Some(p) => p,
            None => {
                let (Some(first), Some(oldest)) = (self.first_arrival, self.packets.first_ts()) else {
                    return Playout::Empty;
                };
                if now.saturating_duration_since(first) + self.cfg.frame <= self.target_delay() {
                    return Playout::Empty;
                }
                self.playout = Some(oldest);
                oldest
            }
        };
        if self.packets.is_empty() {
            // Dry: wait (the delay grows by a frame) unless the silence is long (DTX, hold).
            self.empty_ticks += 1;
            self.stats.underruns += 1;
            if self.empty_ticks >= RESYNC_EMPTY_TICKS {
                self.restart();
            }
            return Playout::Empty;
        }
        self.empty_ticks = 0;
        // Too much buffered: drop the oldest frame to bring the delay down.
        if self.buffered() > self.target_delay() + 2 * self.cfg.frame {
            if self.packets.first_ts().is_some_and(|ts| ts <= playout)
                && let Some(p) = self.packets.pop_first()
            {
                self.recycle(p);
            }
            self.stats.shrunk += 1;
            self.playout = Some(playout + self.frame_ts);
            return self.pop_at(playout + self.frame_ts);
        }
        self.pop_at(playout)
    }

    fn pop_at(&mut self, playout: i64) -> Playout {
        self.playout = Some(playout + self.frame_ts);
        // Anything older than the playout point is stale.
        while self.packets.first_ts().is_some_and(|ts| ts < playout) {
            if let Some(p) = self.packets.pop_first() {
                self.recycle(p);
            }
        }
        match self.packets.remove(playout) {
            Some(p) => {
                self.stats.played += 1;
                Playout::Frame(p)
            }
            None => {
                // A gap longer than a few frames is a silence in the timestamps (DTX, the
                // start of a new talkspurt), not loss: skip to the next packet.
                if let Some(next_ts) = self.packets.first_ts()
                    && next_ts - playout > SILENCE_GAP_FRAMES * self.frame_ts
                {
                    self.playout = Some(next_ts);
                    return Playout::Empty;
                }
                self.stats.lost += 1;
                let next = self.packets.get(playout + self.frame_ts).map(<[u8]>::to_vec);
                Playout::Lost { next }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(20);

    /// A simulated network: sends a 20 ms packet stream, delivers each after `base + jitter`
    /// (uniform), drops with probability `loss`, and ticks the buffer every 20 ms.
    struct Sim {
        jb: JitterBuffer,
        rng: fastrand::Rng,
        start: Instant,
        in_flight: Vec<(Duration, u32, Vec<u8>)>,
        played: Vec<u32>,
        events: Vec<Playout>,
    }

    impl Sim {
        fn new(seed: u64) -> Sim {
            Sim {
                jb: JitterBuffer::new(JitterConfig::new(8000)),
                rng: fastrand::Rng::with_seed(seed),
                start: crate::test_clock::epoch(),
                in_flight: Vec::new(),
                played: Vec::new(),
                events: Vec::new(),
            }
        }

        /// Runs `frames` frames of 20 ms; packet i carries timestamp `ts0 + 160 i` and its
        /// number as payload.
        fn run(&mut self, frames: u32, ts0: u32, jitter_ms: u64, loss: f64, send_from: u32) {
            for i in 0..frames {
                let sent = FRAME * (send_from + i);
                if self.rng.f64() >= loss {
                    let delay = Duration::from_millis(30 + if jitter_ms > 0 { self.rng.u64(0..=jitter_ms) } else { 0 });
                    self.in_flight.push((
                        sent + delay,
                        ts0.wrapping_add(160 * i),
                        (send_from + i).to_be_bytes().to_vec(),
                    ));
                }
                // Deliver everything due before this tick, in arrival order.
                let tick = sent + FRAME;
                self.in_flight.sort_by_key(|p| p.0);
                let due: Vec<_> = self.in_flight.iter().filter(|p| p.0 <= tick).cloned().collect();
                self.in_flight.retain(|p| p.0 > tick);
                for (at, ts, payload) in due {
                    self.jb.push(self.start + at, ts, &payload);
                }
                let out = self.jb.pop(self.start + tick);
                if let Playout::Frame(p) = &out {
                    self.played.push(u32::from_be_bytes([p[0], p[1], p[2], p[3]]));
                }
                self.events.push(out);
            }
        }
    }

    #[test]
    fn steady_stream_plays_every_frame_in_order_at_the_floor_delay() {
        let mut s = Sim::new(1);
        s.run(500, 1000, 0, 0.0, 0);
        let st = s.jb.stats();
        assert_eq!(st.lost, 0);
        assert_eq!(st.underruns, 0);
        assert!(s.played.windows(2).all(|w| w[1] == w[0] + 1), "in order, no gaps");
        assert_eq!(s.jb.target_delay(), Duration::from_millis(20));
        assert!(st.played >= 495);
    }

    #[test]
    fn jitter_up_to_60_ms_is_absorbed_without_underruns_once_adapted() {
        let mut s = Sim::new(2);
        s.run(250, 0, 60, 0.0, 0); // adaptation
        let before = s.jb.stats();
        s.run(1500, 250 * 160, 60, 0.0, 250);
        let after = s.jb.stats();
        let underruns = after.underruns - before.underruns;
        let lost = after.lost - before.lost;
        assert!(
            underruns + lost <= 3,
            "after adapting: {underruns} underruns, {lost} lost (late {})",
            after.late - before.late
        );
        // The target followed the jitter: uniform 0-60 ms has RFC 3550 jitter ~20 ms.
        let target = s.jb.target_delay();
        assert!(
            target >= Duration::from_millis(60) && target <= Duration::from_millis(120),
            "target {target:?}"
        );
        // Delay converged: what is buffered stays within two frames of the target.
        assert!(
            s.jb.buffered() <= target + 3 * FRAME,
            "buffered {:?} target {target:?}",
            s.jb.buffered()
        );
    }

    #[test]
    fn target_never_exceeds_the_ceiling() {
        let mut s = Sim::new(3);
        s.run(500, 0, 600, 0.0, 0);
        assert_eq!(s.jb.target_delay(), Duration::from_millis(200));
    }

    #[test]
    fn lost_packets_are_reported_once_each_with_the_next_payload_for_fec() {
        let mut s = Sim::new(4);
        s.run(2000, 0, 0, 0.05, 0);
        let st = s.jb.stats();
        let sent_lost = 2000 - st.played - st.lost;
        // Every frame is either played or reported lost (plus the few at the start/end).
        assert!(sent_lost <= 5, "played {} lost {}", st.played, st.lost);
        assert!((60..=140).contains(&st.lost), "about 5% of 2000 lost: {}", st.lost);
        assert!(s.events.iter().any(|e| matches!(e, Playout::Lost { next: Some(_) })));
    }

    #[test]
    fn the_queue_keeps_timestamp_order_like_a_sorted_map() {
        // Random inserts (mostly in order, some reordered and repeated), removals and pops,
        // checked against a BTreeMap as the model.
        let mut rng = fastrand::Rng::with_seed(7);
        let mut q = Queue::with_capacity(8);
        let mut model = std::collections::BTreeMap::new();
        let mut ts = 0i64;
        for _ in 0..20_000 {
            match rng.u8(..10) {
                0..=5 => {
                    ts += 160;
                    let t = ts - 160 * rng.i64(0..4);
                    if !q.contains(t) {
                        q.insert(t, t.to_le_bytes().to_vec());
                    }
                    model.entry(t).or_insert_with(|| t.to_le_bytes().to_vec());
                }
                6 | 7 => assert_eq!(q.pop_first(), model.pop_first().map(|e| e.1)),
                8 => {
                    let t = ts - 160 * rng.i64(0..6);
                    assert_eq!(q.remove(t), model.remove(&t));
                }
                _ => {
                    let t = ts - 160 * rng.i64(0..6);
                    assert_eq!(q.get(t), model.get(&t).map(|v| &v[..]));
                }
            }
            assert_eq!(q.len(), model.len());
            assert_eq!(q.first_ts(), model.keys().next().copied());
            assert_eq!(q.last_ts(), model.keys().next_back().copied());
        }
    }

    #[test]
    fn reordered_and_duplicated_packets_come_out_in_order_once() {
        let mut jb = JitterBuffer::new(JitterConfig::new(8000));
        let t0 = crate::test_clock::epoch();
        // Arrive 2, 1, 1, 3, 0 (0 too is before playout starts).
        for (i, ts) in [2u32, 1, 1, 3, 0].iter().enumerate() {
            jb.push(t0 + Duration::from_millis(i as u64), ts * 160, &[*ts as u8]);
        }
        assert_eq!(jb.stats().duplicates, 1);
        let mut out = Vec::new();
        for k in 1..=6 {
            if let Playout::Frame(p) = jb.pop(t0 + FRAME * k) {
                out.push(p[0]);
            }
        }
        assert_eq!(out, vec![0, 1, 2, 3]);
    }

    #[test]
    fn reset_starts_a_new_stream_cleanly() {
        let mut jb = JitterBuffer::new(JitterConfig::new(8000));
        let t0 = crate::test_clock::epoch();
        jb.push(t0, 1_000_000, &[1]);
        jb.pop(t0 + FRAME * 2);
        jb.reset();
        // The new source's timestamps are unrelated to the old ones.
        jb.push(t0 + FRAME * 3, 5, &[2]);
        assert_eq!(jb.pop(t0 + FRAME * 5), Playout::Frame(vec![2]));
        assert_eq!(jb.stats().late, 0);
    }

    #[test]
    fn late_packets_are_dropped() {
        let mut jb = JitterBuffer::new(JitterConfig::new(8000));
        let t0 = crate::test_clock::epoch();
        jb.push(t0, 0, &[0]);
        jb.push(t0, 160, &[1]);
        assert_eq!(jb.pop(t0 + FRAME * 2), Playout::Frame(vec![0]));
        assert_eq!(jb.pop(t0 + FRAME * 3), Playout::Frame(vec![1]));
        jb.push(t0 + FRAME * 3, 0, &[0]);
        assert_eq!(jb.stats().late, 1);
    }

    #[test]
    fn timestamp_wrap_is_seamless() {
        let mut s = Sim::new(5);
        s.run(300, u32::MAX - 160 * 100, 0, 0.0, 0);
        assert_eq!(s.jb.stats().lost, 0);
        assert!(s.played.windows(2).all(|w| w[1] == w[0] + 1));
    }

    #[test]
    fn a_timestamp_jump_resynchronises() {
        let mut s = Sim::new(6);
        s.run(100, 0, 0, 0.0, 0);
        // The sender restarts with a timestamp 10 minutes away.
        s.run(100, 8000 * 600, 0, 0.0, 100);
        assert_eq!(s.jb.stats().resyncs, 1);
        assert!(s.played.len() >= 190, "played {}", s.played.len());
    }

    #[test]
    fn a_dtx_silence_restarts_playout_without_garbage() {
        let mut s = Sim::new(7);
        s.run(100, 0, 0, 0.0, 0);
        // Two seconds without packets (DTX): ticks only.
        for k in 0..100u32 {
            let out = s.jb.pop(s.start + FRAME * (101 + k));
            assert!(matches!(out, Playout::Empty), "{out:?}");
        }
        // Talk resumes with timestamps that moved on by the silence.
        s.run(50, 160 * 200, 0, 0.0, 200);
        assert!(s.played.len() >= 145, "played {}", s.played.len());
        assert_eq!(s.jb.stats().lost, 0, "a DTX gap is not loss");
    }
}
