//! End-to-end conference load (`scripts/bench.sh conference`): a release `tolk serve` with
//! one mixer thread, and this process as the load generator: N legs placed over SIP (one
//! UDP socket each, INVITE/200/ACK), straight into rooms of ROOM members, every leg then
//! sending 20 ms RTP (TALKERS per room talk, default 1; near-silence from the rest) and receiving its
//! mix. Over a steady window it reports tolk's CPU, the mixer's tick lateness (p50/p99 from
//! tolk's `/metrics` histogram), ticks run late to catch up after a slow one, ticks skipped
//! (the thread fell too far behind), and loss (mix packets a leg did not receive).
//!
//!   LEGS="250 500 1000" CODEC=pcmu|g722|opus ROOM=10 TALKERS=1 SECS=10 cargo bench --bench conference
//!   (SKIP_QUIET=false: tolk decodes every Opus packet, `room.skip_quiet_opus`)
//!
//! The machinery (placing legs, the send loop, the window's figures) is `support/load.rs`.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/load.rs"]
mod load;

use load::{Calls, LegCodec, Window, env_list, env_number, machine_line, machine_noise, start_gateway};
use std::time::Instant;

/// Runs one load and prints its line; returns how many legs received nothing.
fn run(legs_n: usize, codec: LegCodec, room: usize, talkers: usize, secs: u64) -> usize {
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
    let skip_quiet = std::env::var("SKIP_QUIET").unwrap_or_else(|_| "true".into());
    let gw = start_gateway(dir, &plan, &[("TOLK_ROOM_SKIP_QUIET_OPUS", skip_quiet.as_str())]);
    let voices: Vec<Vec<u8>> = [400.0, 600.0, 800.0].iter().map(|&f| codec.payload(Some(f))).collect();
    let quiet = codec.payload(None);
    let mut calls = Calls::default();
    let setup = Instant::now();
    let mut legs: Vec<_> = (0..legs_n)
        .map(|i| {
            let payload = if i % room < talkers {
                voices[i % room % 3].clone()
            } else {
                quiet.clone()
            };
            calls.place(&gw, &format!("+1555019{:04}", i / room), codec, payload)
        })
        .collect();
    let setup_secs = setup.elapsed().as_secs_f64();
    let w = load::drive(&gw, &mut legs, 2, secs);
    println!(
        "{:<5} {:>6} {:>5} {:>7} {:>7.1} {}",
        codec.name(),
        legs_n,
        room,
        talkers,
        setup_secs,
        w.row()
    );
    calls.hang_up();
    drop(gw);
    w.silent_legs
}

fn main() {
    // `cargo bench` passes --bench. Without it (`cargo test --all-targets`, a debug build)
    // this is a smoke run: a few legs for two seconds, every leg must hear its room.
    if !std::env::args().any(|a| a == "--bench") {
        let silent = run(20, LegCodec::Pcmu, 10, 1, 2);
        assert_eq!(silent, 0, "every leg receives its room's mix");
        return;
    }
    let codec = match std::env::var("CODEC").as_deref() {
        Ok("opus") => LegCodec::Opus,
        Ok("g722") => LegCodec::G722,
        _ => LegCodec::Pcmu,
    };
    let room = env_number("ROOM", 10).max(1);
    let talkers = env_number("TALKERS", 1).min(room);
    let secs = env_number("SECS", 10) as u64;
    let default_legs = if codec == LegCodec::Opus {
        "100 250 500"
    } else {
        "250 500 1000 1500"
    };
    let legs = env_list("LEGS", default_legs);
    println!("{}", machine_noise(10));
    println!("{}", machine_line());
    println!(
        "{:<5} {:>6} {:>5} {:>7} {:>7} {}",
        "codec",
        "legs",
        "room",
        "talkers",
        "setup_s",
        Window::headings()
    );
    if codec == LegCodec::Opus {
        use tolk::media::codec::opus_packet::activity;
        println!(
            "generator's Opus packets (VAD flags, RFC 6716 4.2.3): talkers {:?}, quiet legs {:?}; SKIP_QUIET={}",
            [400.0, 600.0, 800.0].map(|f| activity(&LegCodec::Opus.payload(Some(f)))),
            activity(&LegCodec::Opus.payload(None)),
            std::env::var("SKIP_QUIET").unwrap_or_else(|_| "true".into())
        );
    }
    for n in legs {
        run(n, codec, room, talkers, secs);
    }
}
