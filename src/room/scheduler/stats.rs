//! Tick statistics of every mixer thread (atomics, no locks), rendered for `/metrics`.

use super::*;

/// Tick statistics for `/metrics`, shared by every mixer thread (atomics, no locks).
pub struct TickStats {
    pub(super) lateness: Histogram,
    pub(super) duration: Histogram,
    pub(super) overruns: AtomicU64,
    pub(super) catch_ups: AtomicU64,
    pub(super) members: AtomicU64,
    pub(super) rooms: AtomicU64,
    pub(super) encodes: AtomicU64,
    pub(super) sends: AtomicU64,
    pub(super) joins: AtomicU64,
    pub(super) decodes: AtomicU64,
    pub(super) decodes_skipped: AtomicU64,
}

/// A fixed-bucket histogram of seconds in atomics (Prometheus `histogram` semantics).
pub struct Histogram {
    pub(super) counts: [AtomicU64; BUCKETS.len() + 1],
    pub(super) sum_ns: AtomicU64,
}

/// Upper bounds, seconds: fine below 2 ms (the lateness a listener could notice starts
/// there) and in 2.5 ms steps across the 20 ms tick (how full a mixer thread is).
pub(super) const BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175, 0.02, 0.03, 0.05,
    0.1,
];

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn record(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS.iter().position(|&b| s <= b).unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

pub static TICK_STATS: TickStats = TickStats {
    lateness: Histogram::new(),
    duration: Histogram::new(),
    overruns: AtomicU64::new(0),
    catch_ups: AtomicU64::new(0),
    members: AtomicU64::new(0),
    rooms: AtomicU64::new(0),
    encodes: AtomicU64::new(0),
    sends: AtomicU64::new(0),
    joins: AtomicU64::new(0),
    decodes: AtomicU64::new(0),
    decodes_skipped: AtomicU64::new(0),
};

/// Appends the mixer threads' metrics in the Prometheus text format.
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write;
    let s = &TICK_STATS;
    s.lateness.render(
        "mixer_tick_lateness_seconds",
        "How late a mixer tick started after its 20 ms deadline",
        out,
    );
    s.duration.render(
        "mixer_tick_duration_seconds",
        "Time a mixer tick took (all its rooms)",
        out,
    );
    let counters = [
        (
            "mixer_tick_overruns_total",
            "Ticks skipped because the thread fell more than 3 ticks behind",
            &s.overruns,
        ),
        (
            "mixer_tick_catch_ups_total",
            "Ticks started after their deadline had passed (run late, back to back, after a slow tick)",
            &s.catch_ups,
        ),
        (
            "mixer_encodes_total",
            "Frames encoded by the mixer (one per group, not per member)",
            &s.encodes,
        ),
        (
            "mixer_decodes_total",
            "Frames the mixer decoded or concealed",
            &s.decodes,
        ),
        (
            "mixer_decodes_skipped_total",
            "Opus frames of quiet members left undecoded (their VAD flags said no speech)",
            &s.decodes_skipped,
        ),
        (
            "mixer_packets_sent_total",
            "RTP packets the mixer sent to members",
            &s.sends,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Ordering::Relaxed)
        );
    }
    for (name, help, v) in [
        ("mixer_members", "Members in rooms on the mixer threads", &s.members),
        ("mixer_rooms", "Rooms on the mixer threads", &s.rooms),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
            v.load(Ordering::Relaxed)
        );
    }
}
