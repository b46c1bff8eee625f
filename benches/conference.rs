//! End-to-end conference load (`scripts/bench.sh conference`): a release `tolk serve` with
//! one mixer thread, and this process as the load generator: N legs placed over SIP (one
//! UDP socket each, INVITE/200/ACK), straight into rooms of ROOM members, every leg then
//! sending 20 ms RTP (TALKERS per room talk, default 1; near-silence from the rest) and receiving its
//! mix. Over a steady window it reports tolk's CPU, the mixer's tick lateness (p50/p99 from
//! tolk's `/metrics` histogram), ticks run late to catch up after a slow one, ticks skipped
//! (the thread fell too far behind), and loss (mix packets a leg did not receive).
//!
//!   LEGS="250 500 1000" CODEC=pcmu ROOM=10 TALKERS=1 SECS=10 cargo bench --bench conference
//!   (SKIP_QUIET=false: tolk decodes every Opus packet, `room.skip_quiet_opus`)
//!
//! The generator runs on the same cores as tolk (its ~2 syscalls per leg per tick are a cost
//! tolk does not pay on a real deployment), so the figures are a floor.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{Gateway, Uac, body, sdp_audio_port, sdp_offer};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use tolk::media::codec::Encoder;
use tolk::media::codec::g711::{G711Encoder, Law};
use tolk::media::codec::opus::OpusEncoder;

struct Leg {
    rtp: UdpSocket,
    to: SocketAddr,
    talker: bool,
    seq: u16,
    received: u64,
    /// First sequence number received (None: nothing came).
    first_seq: Option<u16>,
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect()
}

fn steady_payload(opus: bool, freq: Option<f64>) -> Vec<u8> {
    let (rate, n) = if opus { (48_000.0, 960) } else { (8_000.0, 160) };
    let pcm: Vec<i16> = (0..n)
        .map(|i| match freq {
            // Whole cycles per frame, so the repeated frame is a continuous tone.
            Some(f) => (6000.0 * (2.0 * std::f64::consts::PI * f * i as f64 / rate).sin()) as i16,
            None => ((i * 7919) % 41) as i16 - 20,
        })
        .collect();
    let mut enc: Box<dyn Encoder> = if opus {
        Box::new(OpusEncoder::new(48_000).unwrap())
    } else {
        Box::new(G711Encoder::new(Law::Ulaw))
    };
    let mut out = Vec::new();
    for _ in 0..6 {
        out.clear();
        enc.encode(&pcm, &mut out);
    }
    out
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

/// The upper bound of the bucket holding quantile `q` of the samples between two snapshots.
fn quantile(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> f64 {
    let deltas: Vec<(f64, u64)> = after.iter().zip(before).map(|((le, a), (_, b))| (*le, a - b)).collect();
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

/// Runs one load and prints its line; returns how many legs received nothing.
fn run(legs_n: usize, opus: bool, room: usize, talkers: usize, secs: u64) -> usize {
    let dir = common::unique_dir("bench-conf");
    let plan = dir.join("dialplan");
    std::fs::create_dir_all(plan.join("flows")).unwrap();
    std::fs::write(
        plan.join("numbers.toml"),
        "region = \"US\"\n[[route]]\npattern = \"+1555019XXXX\"\nflow = \"bench\"\n[default]\nreject = 404\n",
    )
    .unwrap();
    std::fs::write(
        plan.join("flows/bench.rhai"),
        "answer();\nlet d = caller().dialled;\njoin_conference(\"bench-\" + d.sub_string(d.len() - 4), #{});\n",
    )
    .unwrap();
    let plan_dir = plan.display().to_string();
    let skip_quiet = std::env::var("SKIP_QUIET").unwrap_or_else(|_| "true".into());
    let gw = Gateway::start_in(
        dir,
        &[
            ("TOLK_DIALPLAN_DIR", plan_dir.as_str()),
            ("TOLK_CDR_ENABLED", "false"),
            ("TOLK_ROOM_MIXER_THREADS", "1"),
            ("TOLK_ROOM_JOIN_TONE", ""),
            ("TOLK_ROOM_LEAVE_TONE", ""),
            ("TOLK_LOG_LEVEL", "warn"),
            ("TOLK_RTP_PORTS", "20000-40000"),
            ("TOLK_SIP_MAX_CALLS", "20000"),
            ("TOLK_FLOW_MAX_CONCURRENT", "20000"),
            ("TOLK_ROOM_SKIP_QUIET_OPUS", skip_quiet.as_str()),
            ("TOLK_SIP_TLS", "{ listen = [] }"),
        ],
    );
    // tolk (every thread) on one core, this generator on the other: "legs per core" is then
    // what the core running tolk sustains.
    let pin = |cpu: &str, pid: u32| {
        let _ = std::process::Command::new("taskset")
            .args(["-a", "-cp", cpu, &pid.to_string()])
            .output();
    };
    pin("1", gw.pid());
    pin("0", std::process::id());
    let (pts, extra) = if opus {
        (
            "111 101",
            "a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n",
        )
    } else {
        ("0 101", "")
    };
    let mut legs: Vec<Leg> = Vec::with_capacity(legs_n);
    let mut uacs = Vec::with_capacity(legs_n);
    let setup = Instant::now();
    for i in 0..legs_n {
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        rtp.set_nonblocking(true).unwrap();
        let number = format!("+1555019{:04}", i / room);
        let mut uac = Uac::new(gw.sip, &number);
        let offer = sdp_offer(rtp.local_addr().unwrap(), pts, extra);
        let invite = uac.request("INVITE", "", &offer);
        uac.send(&invite);
        let Some((200, ok)) = uac.final_response(Duration::from_secs(5)) else {
            panic!("leg {i} was not answered; tolk log:\n{}", gw.log_text());
        };
        let port = sdp_audio_port(body(&ok)).expect("answer has a port");
        let ack = uac.request("ACK", "", "");
        uac.send(&ack);
        legs.push(Leg {
            rtp,
            to: SocketAddr::from(([127, 0, 0, 1], port)),
            talker: i % room < talkers,
            seq: fastrand::u16(..),
            received: 0,
            first_seq: None,
        });
        uacs.push(uac);
    }
    let setup_secs = setup.elapsed().as_secs_f64();
    let payload_pt = if opus { 111 } else { 0 };
    let voices: Vec<Vec<u8>> = [400.0, 600.0, 800.0]
        .iter()
        .map(|&f| steady_payload(opus, Some(f)))
        .collect();
    let quiet = steady_payload(opus, None);
    let ts_step: u32 = if opus { 960 } else { 160 };
    let pid = gw.pid();
    let hz = 100.0; // CLK_TCK on Linux
    let mut pkt = Vec::with_capacity(1500);
    let mut buf = [0u8; 2048];
    let warmup = 100; // ticks before the window
    let window_ticks = secs * 50;
    let mut snap = None;
    let start = Instant::now();
    for tick in 0..(warmup + window_ticks) {
        let deadline = start + Duration::from_millis(20 * tick);
        if let Some(wait) = deadline.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if tick == warmup {
            for l in &mut legs {
                l.received = 0;
                l.first_seq = None;
            }
            snap = Some((gw.metrics(), cpu_ticks(pid), Instant::now()));
        }
        for (i, l) in legs.iter_mut().enumerate() {
            let payload = if l.talker { &voices[i % room % 3] } else { &quiet };
            tolk::rtp::packet::build(
                &mut pkt,
                payload_pt,
                tick == 0,
                l.seq,
                (tick as u32).wrapping_mul(ts_step),
                i as u32 + 1,
                payload,
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
    let cpu = (c1 - c0) as f64 / hz / elapsed * 100.0;
    let late0 = buckets(&m0, "mixer_tick_lateness_seconds");
    let late1 = buckets(&m1, "mixer_tick_lateness_seconds");
    let dur0 = buckets(&m0, "mixer_tick_duration_seconds");
    let dur1 = buckets(&m1, "mixer_tick_duration_seconds");
    let overruns = counter(&m1, "mixer_tick_overruns_total") - counter(&m0, "mixer_tick_overruns_total");
    let catch_ups = counter(&m1, "mixer_tick_catch_ups_total") - counter(&m0, "mixer_tick_catch_ups_total");
    let decodes = counter(&m1, "mixer_decodes_total") - counter(&m0, "mixer_decodes_total");
    let skipped = counter(&m1, "mixer_decodes_skipped_total") - counter(&m0, "mixer_decodes_skipped_total");
    let skipped_pct = skipped as f64 * 100.0 / (decodes + skipped).max(1) as f64;
    // Loss: mix packets the legs should have had (one per 20 ms each over the window) and did
    // not (lost on the way, or never sent because the mixer skipped a tick).
    let got: u64 = legs.iter().map(|l| l.received).sum();
    let expected = (elapsed * 50.0) as u64 * legs_n as u64;
    let silent_legs = legs.iter().filter(|l| l.first_seq.is_none()).count();
    let rate = got as f64 / elapsed / legs_n as f64;
    println!(
        "{:<5} {:>6} {:>5} {:>7} {:>9.1} {:>10.1} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>8} {:>8} {:>7.3} {:>6} {:>7.1} {:>9.1}",
        if opus { "opus" } else { "pcmu" },
        legs_n,
        room,
        talkers,
        cpu,
        rate,
        quantile(&late0, &late1, 0.5) * 1000.0,
        quantile(&late0, &late1, 0.99) * 1000.0,
        quantile(&dur0, &dur1, 0.5) * 1000.0,
        quantile(&dur0, &dur1, 0.99) * 1000.0,
        catch_ups,
        overruns,
        if expected > 0 {
            (expected.saturating_sub(got)) as f64 / expected as f64 * 100.0
        } else {
            100.0
        },
        silent_legs,
        setup_secs,
        skipped_pct,
    );
    for mut uac in uacs {
        let bye = uac.request("BYE", "", "");
        uac.send(&bye);
    }
    drop(gw);
    silent_legs
}

/// The machine's own noise on tolk's core, before any load: the same fixed work (calibrated
/// to ~12 ms) every 20 ms for `secs` on CPU 1, and how long it took, tick by tick. On a
/// quiet machine the spread is small; on a shared one it says how much of a tick's tail
/// is the machine's (its figure goes with each run's results in docs/PERFORMANCE.md).
fn machine_noise(secs: u64) -> String {
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

fn main() {
    // `cargo bench` passes --bench. Without it (`cargo test --all-targets`, a debug build)
    // this is a smoke run: a few legs for two seconds, every leg must hear its room.
    if !std::env::args().any(|a| a == "--bench") {
        let silent = run(20, false, 10, 1, 2);
        assert_eq!(silent, 0, "every leg receives its room's mix");
        return;
    }
    let codec = std::env::var("CODEC").unwrap_or_else(|_| "pcmu".into());
    let room = env_list("ROOM", "10").first().copied().unwrap_or(10).max(1);
    let talkers = env_list("TALKERS", "1").first().copied().unwrap_or(1).min(room);
    let secs = env_list("SECS", "10").first().copied().unwrap_or(10) as u64;
    let default_legs = if codec == "opus" {
        "100 250 500"
    } else {
        "250 500 1000 1500"
    };
    let legs = env_list("LEGS", default_legs);
    println!("{}", machine_noise(10));
    println!(
        "date: {}  machine: {} cores; tolk with one mixer thread; generator on the same machine",
        std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%MZ"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!(
        "{:<5} {:>6} {:>5} {:>7} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>7} {:>6} {:>7} {:>9}",
        "codec",
        "legs",
        "room",
        "talkers",
        "tolk_cpu%",
        "pkts/s/leg",
        "late_p50ms",
        "late_p99ms",
        "tick_p50ms",
        "tick_p99ms",
        "catchups",
        "skipped",
        "loss%",
        "silent",
        "setup_s",
        "undecoded%"
    );
    if codec == "opus" {
        use tolk::media::codec::opus_packet::activity;
        println!(
            "generator's Opus packets (VAD flags, RFC 6716 4.2.3): talkers {:?}, quiet legs {:?}; SKIP_QUIET={}",
            [400.0, 600.0, 800.0].map(|f| activity(&steady_payload(true, Some(f)))),
            activity(&steady_payload(true, None)),
            std::env::var("SKIP_QUIET").unwrap_or_else(|_| "true".into())
        );
    }
    for n in legs {
        run(n, codec == "opus", room, talkers, secs);
    }
}
