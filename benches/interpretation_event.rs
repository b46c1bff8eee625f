//! One interpretation event end to end (`scripts/bench.sh event`): a release `tolk serve`
//! with one mixer thread, and this process as the phones. A speaker on the floor (G.711),
//! BOOTHS interpreters (G.722), each live in its own booth, and LISTENERS listeners placed
//! over SIP into the room `event` by the flow (the role and channel come from the number
//! dialled), listener i on channel i % (BOOTHS + 1) (0 the floor), a third each on G.711,
//! G.722 and Opus, crossed with the channels. The speaker and the interpreters send their own tones every 20 ms,
//! listeners line noise; every leg reads its mix. Over a steady window: tolk's CPU, the
//! mixer's tick lateness and duration (p50/p99 from `/metrics`), catch-ups, skipped ticks,
//! encodes per tick (one per mix and codec heard, not one per listener) and loss.
//!
//!   LISTENERS=1000 BOOTHS=4 WARMUP=10 SECS=10 cargo bench --bench interpretation_event
//!
//! The window starts WARMUP seconds after the last call is placed: each listener first
//! hears its channel announced (its own encoder while the prompt plays), and a G.722 or
//! Opus listener then joins its group's shared encoding at a quiet frame of the mix, which
//! the generator's unbroken tones never give, so after `HANDOVER_MAX_TICKS` (5 s). A
//! window that starts earlier measures the join storm.
//!
//! The pure costs of the same event (no sockets) are `benches/interpretation.rs`; the
//! machinery is `support/load.rs`.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/load.rs"]
mod load;

use load::{Calls, LegCodec, Window, env_number, machine_line, machine_noise, start_gateway};
use std::time::Instant;

const CODECS: [LegCodec; 3] = [LegCodec::Pcmu, LegCodec::G722, LegCodec::Opus];

/// The event's dialplan: `+15550191000` the speaker, `+155501920NN` booth NN's interpreter,
/// `+15550193NNN` a listener of channel NNN % 100 (0 the floor; no PIN for listeners).
fn dialplan(plan: &std::path::Path, booths: usize) {
    std::fs::create_dir_all(plan.join("flows")).unwrap();
    std::fs::write(
        plan.join("numbers.toml"),
        "region = \"US\"\n[[route]]\npattern = \"+1555019XXXX\"\nflow = \"event\"\n[default]\nreject = 404\n",
    )
    .unwrap();
    let channels: Vec<String> = (1..=booths)
        .map(|n| format!("  {{ number = {n}, language = \"language {n}\", interpreter_pin = \"20{n:02}\" }},"))
        .collect();
    std::fs::write(
        plan.join("rooms.toml"),
        format!(
            "[room.event]\nfloor = \"English\"\nbleed_db = -18\nspeaker_pin = \"1111\"\nmax_members = 5000\nchannels = [\n{}\n]\n",
            channels.join("\n")
        ),
    )
    .unwrap();
    std::fs::write(
        plan.join("flows/event.rhai"),
        r#"answer();
let d = caller().dialled;
let role = d.sub_string(d.len() - 4, 1);
let n = d.sub_string(d.len() - 2, 2).parse_int();
if role == "1" {
    room_role("event", "1111");
    join_interpretation("event", #{ role: "speaker" });
} else if role == "2" {
    room_role("event", d.sub_string(d.len() - 4, 4));
    join_interpretation("event", #{ role: "interpreter" });
} else {
    join_interpretation("event", #{ role: "listener", language: `${n}` });
}
"#,
    )
    .unwrap();
}

/// Runs one event and prints its line.
fn run(listeners: usize, booths: usize, warmup: u64, secs: u64) -> Window {
    let dir = common::unique_dir("bench-event");
    let plan = dir.join("dialplan");
    dialplan(&plan, booths);
    let gw = start_gateway(dir, &plan, &[("TOLK_ROOM_MAX_MEMBERS", "5000")]);
    let mut calls = Calls::default();
    let setup = Instant::now();
    // Tones of whole cycles per 20 ms frame (multiples of 50 Hz): the speaker's, then each
    // booth's.
    let mut legs = vec![calls.place(&gw, "+15550191000", LegCodec::Pcmu, LegCodec::Pcmu.payload(Some(400.0)))];
    for b in 1..=booths {
        let tone = 400.0 + 100.0 * b as f64;
        legs.push(calls.place(
            &gw,
            &format!("+155501920{b:02}"),
            LegCodec::G722,
            LegCodec::G722.payload(Some(tone)),
        ));
    }
    let quiet: Vec<Vec<u8>> = CODECS.iter().map(|c| c.payload(None)).collect();
    for i in 0..listeners {
        let channel = i % (booths + 1);
        // Codec by block, so that channels and codecs cross (listener i's channel cycles
        // faster than its codec).
        let k = (i / (booths + 1)) % 3;
        let codec = CODECS[k];
        let number = format!("+15550193{:01}{channel:02}", (i / 100) % 10);
        legs.push(calls.place(&gw, &number, codec, quiet[k].clone()));
    }
    let setup_secs = setup.elapsed().as_secs_f64();
    let w = load::drive(&gw, &mut legs, warmup, secs);
    println!("{:>9} {:>6} {:>7.1} {}", listeners, booths, setup_secs, w.row());
    calls.hang_up();
    drop(gw);
    w
}

fn main() {
    // `cargo bench` passes --bench. Without it (`cargo test --all-targets`, a debug build)
    // this is a smoke run: two booths and ten listeners for two seconds; every leg hears
    // its mix (what each hears is `tests/interpretation.rs`).
    if !std::env::args().any(|a| a == "--bench") {
        let w = run(10, 2, 2, 2);
        assert_eq!(w.silent_legs, 0, "every leg receives its mix");
        return;
    }
    let listeners = env_number("LISTENERS", 1000);
    let booths = env_number("BOOTHS", 4).clamp(1, 32);
    let secs = env_number("SECS", 10) as u64;
    let warmup = env_number("WARMUP", 10) as u64;
    println!("{}", machine_noise(10));
    println!("{}", machine_line());
    println!(
        "speaker {}, interpreters {}, listeners {} (a third each)",
        LegCodec::Pcmu.name(),
        LegCodec::G722.name(),
        CODECS.map(LegCodec::name).join("/")
    );
    println!(
        "{:>9} {:>6} {:>7} {}",
        "listeners",
        "booths",
        "setup_s",
        Window::headings()
    );
    run(listeners, booths, warmup, secs);
}
