//! What the end-to-end room loads share (`benches/conference.rs`,
//! `benches/interpretation_event.rs`): a release `tolk serve` pinned to one core with this
//! process as the load generator on the other, legs placed over SIP (one UDP socket each,
//! INVITE/200/ACK), the 20 ms send/receive loop, and a steady window read off tolk's
//! `/metrics` (mixer tick lateness and duration histograms, catch-ups, skipped ticks,
//! decodes, encodes) and `/proc` (CPU).
//!
//! The generator runs on the same machine as tolk (its ~2 syscalls per leg per tick are a
//! cost tolk does not pay on a real deployment), so the figures are a floor.

use crate::common::{Gateway, Uac, body, sdp_audio_port, sdp_offer};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tolk::media::codec::pair::encoder;
use tolk::media::session::Codec;

/// The numbers in an environment variable (`LEGS="250 500"`), or in `default`.
pub fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// One number from the environment (the first of a list), or `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    env_list(name, &default.to_string()).first().copied().unwrap_or(default)
}

/// A leg's codec as offered (payload types per RFC 3551 §6; Opus dynamic, RFC 7587).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegCodec {
    Pcmu,
    G722,
    Opus,
}

impl LegCodec {
    pub fn name(self) -> &'static str {
        match self {
            LegCodec::Pcmu => "pcmu",
            LegCodec::G722 => "g722",
            LegCodec::Opus => "opus",
        }
    }

    fn codec(self) -> Codec {
        match self {
            LegCodec::Pcmu => Codec::Pcmu,
            LegCodec::G722 => Codec::G722,
            LegCodec::Opus => Codec::Opus,
        }
    }

    pub fn payload_type(self) -> u8 {
        match self {
            LegCodec::Pcmu => 0,
            LegCodec::G722 => 9,
            LegCodec::Opus => 111,
        }
    }

    /// The SDP offer's payload-type list and extra attribute lines.
    fn offer(self) -> (&'static str, &'static str) {
        match self {
            LegCodec::Pcmu => ("0 101", ""),
            LegCodec::G722 => ("9 101", "a=rtpmap:9 G722/8000\r\n"),
            LegCodec::Opus => (
                "111 101",
                "a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n",
            ),
        }
    }

    /// (PCM samples per 20 ms frame at the codec's rate, RTP timestamp step). G.722's RTP
    /// clock is 8 kHz though it samples at 16 (RFC 3551 §4.5.2).
    fn framing(self) -> (usize, u32) {
        match self {
            LegCodec::Pcmu => (160, 160),
            LegCodec::G722 => (320, 160),
            LegCodec::Opus => (960, 960),
        }
    }

    /// A steady 20 ms payload: a tone of `freq` Hz (whole cycles per frame, so the repeated
    /// frame is a continuous tone), or line noise far below the talk threshold (`None`). The
    /// sixth frame of a fresh encoder, past its start-up.
    pub fn payload(self, freq: Option<f64>) -> Vec<u8> {
        let (n, _) = self.framing();
        let rate = (n * 50) as f64;
        let pcm: Vec<i16> = (0..n)
            .map(|i| match freq {
                Some(f) => (6000.0 * (2.0 * std::f64::consts::PI * f * i as f64 / rate).sin()) as i16,
                None => ((i * 7919) % 41) as i16 - 20,
            })
            .collect();
        let mut enc = encoder(self.codec(), rate as u32, None).expect("encoder");
        let mut out = Vec::new();
        for _ in 0..6 {
            out.clear();
            enc.encode(&pcm, &mut out);
        }
        out
    }
}

/// One leg of the load: its RTP socket, what it sends each tick, what it received.
pub struct Leg {
    rtp: UdpSocket,
    to: SocketAddr,
    payload_type: u8,
    ts_step: u32,
    payload: Vec<u8>,
    seq: u16,
    pub received: u64,
    /// First sequence number received (None: nothing came).
    pub first_seq: Option<u16>,
}

/// The placed calls of a load (hung up by [`Calls::hang_up`]).
#[derive(Default)]
pub struct Calls {
    uacs: Vec<Uac>,
}

impl Calls {
    /// Places one call to `number` offering `codec` only; the leg will send `payload`.
    pub fn place(&mut self, gw: &Gateway, number: &str, codec: LegCodec, payload: Vec<u8>) -> Leg {
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        rtp.set_nonblocking(true).unwrap();
        let mut uac = Uac::new(gw.sip, number);
        let (pts, extra) = codec.offer();
        let offer = sdp_offer(rtp.local_addr().unwrap(), pts, extra);
        let invite = uac.request("INVITE", "", &offer);
        uac.send(&invite);
        let Some((200, ok)) = uac.final_response(Duration::from_secs(5)) else {
            panic!("a call to {number} was not answered; tolk log:\n{}", gw.log_text());
        };
        let port = sdp_audio_port(body(&ok)).expect("answer has a port");
        let ack = uac.request("ACK", "", "");
        uac.send(&ack);
        self.uacs.push(uac);
        Leg {
            rtp,
            to: SocketAddr::from(([127, 0, 0, 1], port)),
            payload_type: codec.payload_type(),
            ts_step: codec.framing().1,
            payload,
            seq: fastrand::u16(..),
            received: 0,
            first_seq: None,
        }
    }

    pub fn hang_up(self) {
        for mut uac in self.uacs {
            let bye = uac.request("BYE", "", "");
            uac.send(&bye);
        }
    }
}

/// A release gateway for a load: one mixer thread, no CDRs, no tones, room for 20,000
/// calls, the `plan` dialplan directory, `extra` settings on top; tolk (every thread)
/// pinned to CPU 1 and this generator to CPU 0, so "legs per core" is what the core running
/// tolk sustains.
pub fn start_gateway(dir: PathBuf, plan: &std::path::Path, extra: &[(&str, &str)]) -> Gateway {
    let plan_dir = plan.display().to_string();
    let mut env = vec![
        ("TOLK_DIALPLAN_DIR", plan_dir.as_str()),
        ("TOLK_CDR_ENABLED", "false"),
        ("TOLK_ROOM_MIXER_THREADS", "1"),
        ("TOLK_ROOM_JOIN_TONE", ""),
        ("TOLK_ROOM_LEAVE_TONE", ""),
        ("TOLK_LOG_LEVEL", "warn"),
        ("TOLK_RTP_PORTS", "20000-40000"),
        ("TOLK_SIP_MAX_CALLS", "20000"),
        ("TOLK_FLOW_MAX_CONCURRENT", "20000"),
        ("TOLK_SIP_TLS", "{ listen = [] }"),
    ];
    env.extend_from_slice(extra);
    let gw = Gateway::start_in(dir, &env);
    let pin = |cpu: &str, pid: u32| {
        let _ = std::process::Command::new("taskset")
            .args(["-a", "-cp", cpu, &pid.to_string()])
            .output();
    };
    pin("1", gw.pid());
    pin("0", std::process::id());
    gw
}

/// What a steady window measured.
pub struct Window {
    /// tolk's CPU over the window, % of one core.
    pub cpu_pct: f64,
    /// Mix packets received per leg per second (50 when nothing is lost).
    pub packets_per_leg: f64,
    pub late_p50_ms: f64,
    pub late_p99_ms: f64,
    pub tick_p50_ms: f64,
    pub tick_p99_ms: f64,
    /// Mean tick duration (the histogram's sum over its count).
    pub tick_mean_ms: f64,
    /// Ticks run late to catch up after a slow one.
    pub catch_ups: u64,
    /// Ticks skipped (the thread fell too far behind).
    pub overruns: u64,
    /// Mix packets the legs should have had and did not, %.
    pub loss_pct: f64,
    /// Legs that received nothing.
    pub silent_legs: usize,
    pub encodes_per_tick: f64,
    /// Packets left undecoded, % of those that came (`room.skip_quiet_opus`).
    pub undecoded_pct: f64,
}

impl Window {
    /// The column headings of [`Window::row`].
    pub fn headings() -> String {
        format!(
            "{:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>8} {:>8} {:>12} {:>7} {:>6} {:>10}",
            "tolk_cpu%",
            "pkts/s/leg",
            "late_p50ms",
            "late_p99ms",
            "tick_p50ms",
            "tick_p99ms",
            "tick_mean_ms",
            "catchups",
            "skipped",
            "encodes/tick",
            "loss%",
            "silent",
            "undecoded%"
        )
    }

    /// The window's figures as one line of a results table.
    pub fn row(&self) -> String {
        format!(
            "{:>9.1} {:>10.1} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>12.2} {:>8} {:>8} {:>12.1} {:>7.3} {:>6} {:>10.1}",
            self.cpu_pct,
            self.packets_per_leg,
            self.late_p50_ms,
            self.late_p99_ms,
            self.tick_p50_ms,
            self.tick_p99_ms,
            self.tick_mean_ms,
            self.catch_ups,
            self.overruns,
            self.encodes_per_tick,
            self.loss_pct,
            self.silent_legs,
            self.undecoded_pct
        )
    }
}

/// Sends every leg's payload each 20 ms and reads what came back, for `warmup_secs` and
/// then a window of `secs`, and measures the window.
pub fn drive(gw: &Gateway, legs: &mut [Leg], warmup_secs: u64, secs: u64) -> Window {
    let pid = gw.pid();
    let hz = 100.0; // CLK_TCK on Linux
    let mut pkt = Vec::with_capacity(1500);
    let mut buf = [0u8; 2048];
    let warmup = warmup_secs * 50;
    let window_ticks = secs * 50;
    let mut snap = None;
    let start = Instant::now();
    for tick in 0..(warmup + window_ticks) {
        let deadline = start + Duration::from_millis(20 * tick);
        if let Some(wait) = deadline.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if tick == warmup {
            for l in legs.iter_mut() {
                l.received = 0;
                l.first_seq = None;
            }
            snap = Some((gw.metrics(), cpu_ticks(pid), Instant::now()));
        }
        for (i, l) in legs.iter_mut().enumerate() {
            tolk::rtp::packet::build(
                &mut pkt,
                l.payload_type,
                tick == 0,
                l.seq,
                (tick as u32).wrapping_mul(l.ts_step),
                i as u32 + 1,
                &l.payload,
            );
            l.seq = l.seq.wrapping_add(1);
            let _ = l.rtp.send_to(&pkt, l.to);
            while let Ok(n) = l.rtp.recv(&mut buf) {
                if let Ok(p) = tolk::rtp::packet::parse(&buf[..n]) {
                    l.received += 1;
                    if l.first_seq.is_none() {
                        l.first_seq = Some(p.sequence);
                    }
                }
            }
        }
    }
    let (m0, c0, t0) = snap.expect("window started");
    let m1 = gw.metrics();
    let c1 = cpu_ticks(pid);
    let elapsed = t0.elapsed().as_secs_f64();
    let delta = |name: &str| counter(&m1, name).saturating_sub(counter(&m0, name));
    let q = |name: &str, p: f64| quantile(&buckets(&m0, name), &buckets(&m1, name), p) * 1000.0;
    let decodes = delta("mixer_decodes_total");
    let skipped = delta("mixer_decodes_skipped_total");
    let got: u64 = legs.iter().map(|l| l.received).sum();
    let expected = (elapsed * 50.0) as u64 * legs.len() as u64;
    Window {
        cpu_pct: (c1 - c0) as f64 / hz / elapsed * 100.0,
        packets_per_leg: got as f64 / elapsed / legs.len().max(1) as f64,
        late_p50_ms: q("mixer_tick_lateness_seconds", 0.5),
        late_p99_ms: q("mixer_tick_lateness_seconds", 0.99),
        tick_p50_ms: q("mixer_tick_duration_seconds", 0.5),
        tick_p99_ms: q("mixer_tick_duration_seconds", 0.99),
        tick_mean_ms: {
            let sum = |m: &str| gauge(m, "mixer_tick_duration_seconds_sum");
            (sum(&m1) - sum(&m0)) * 1000.0 / delta("mixer_tick_duration_seconds_count").max(1) as f64
        },
        catch_ups: delta("mixer_tick_catch_ups_total"),
        overruns: delta("mixer_tick_overruns_total"),
        loss_pct: if expected > 0 {
            expected.saturating_sub(got) as f64 / expected as f64 * 100.0
        } else {
            100.0
        },
        silent_legs: legs.iter().filter(|l| l.first_seq.is_none()).count(),
        encodes_per_tick: delta("mixer_encodes_total") as f64 / (elapsed * 50.0),
        undecoded_pct: skipped as f64 * 100.0 / (decodes + skipped).max(1) as f64,
    }
}

/// Cumulative bucket counts of a Prometheus histogram in `/metrics` text.
fn buckets(metrics: &str, name: &str) -> Vec<(f64, u64)> {
    metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&format!("{name}_bucket{{le=\""))?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
        .unwrap_or(0)
}

fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The upper bound of the bucket holding quantile `q` of the samples between two snapshots.
fn quantile(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> f64 {
    let deltas: Vec<(f64, u64)> = after
        .iter()
        .zip(before)
        .map(|((le, a), (_, b))| (*le, a.saturating_sub(*b)))
        .collect();
    let total = deltas.last().map(|d| d.1).unwrap_or(0);
    if total == 0 {
        return f64::NAN;
    }
    let want = (q * total as f64).ceil() as u64;
    deltas
        .iter()
        .find(|(_, c)| *c >= want)
        .map(|(le, _)| *le)
        .unwrap_or(f64::INFINITY)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the command.
    fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// The heading line of a load's results: the date and the machine.
pub fn machine_line() -> String {
    format!(
        "date: {}  machine: {} cores; tolk with one mixer thread; generator on the same machine",
        std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%MZ"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    )
}

/// The machine's own noise on tolk's core, before any load: the same fixed work (calibrated
/// to ~12 ms) every 20 ms for `secs` on CPU 1, and how long it took, tick by tick. On a
/// quiet machine the spread is small; on a shared one it says how much of a tick's tail
/// is the machine's (its figure goes with each run's results in docs/PERFORMANCE.md).
pub fn machine_noise(secs: u64) -> String {
    std::thread::spawn(move || {
        // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity take it by
        // pointer for this thread only.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(1, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
        let work = |n: u64| {
            let mut x = 0u64;
            for i in 0..n {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
            }
            x
        };
        let t = Instant::now();
        work(1_000_000);
        let n = (1_000_000.0 * 0.012 / t.elapsed().as_secs_f64()) as u64;
        let mut took = Vec::new();
        let start = Instant::now();
        for tick in 0..secs * 50 {
            if let Some(wait) = (start + Duration::from_millis(20 * tick)).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let t = Instant::now();
            work(n);
            took.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        took.sort_by(f64::total_cmp);
        let q = |p: f64| took[((took.len() - 1) as f64 * p) as usize];
        format!(
            "machine noise on CPU 1 (fixed ~12 ms of work every 20 ms, {secs} s, no load): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} of {} over 20 ms",
            q(0.5),
            q(0.99),
            q(1.0),
            took.iter().filter(|&&d| d > 20.0).count(),
            took.len()
        )
    })
    .join()
    .unwrap_or_default()
}
