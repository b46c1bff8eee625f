//! Conference rooms with real softphones: baresip callers dial the demo toll-free number,
//! key the room PIN, and talk (each sends its own tone). What each caller decoded is checked
//! by its spectrum: everyone hears everyone else and not themselves; a member on hold is not
//! heard (its hold audio stays out of the room); a member muted by keypad, and one muted
//! through the admin API, are not heard either.

mod common;
use common::baresip::{Phone, window, write_tone_wav};
use common::{Gateway, TestDb, http_request};
use std::time::{Duration, Instant};

const TOKEN: &str = "conference-test-token-0123456789";
const DEMO: &str = "+18005550100";
const PIN: &str = "1234#";

fn start() -> Gateway {
    let tokens = format!("[\"{TOKEN}\"]");
    Gateway::start(&[("TOLK_ADMIN_TOKENS", tokens.as_str())])
}

fn start_with(db: &TestDb) -> Gateway {
    let tokens = format!("[\"{TOKEN}\"]");
    Gateway::start(&[
        ("TOLK_ADMIN_TOKENS", tokens.as_str()),
        ("TOLK_DATABASE_URL", db.url.as_str()),
    ])
}

fn room(gw: &Gateway) -> serde_json::Value {
    let (status, body) = http_request(gw.admin, "GET", "/api/v1/rooms", Some(TOKEN), "");
    assert_eq!(status, 200, "{body}");
    let rooms: serde_json::Value = serde_json::from_str(&body).unwrap();
    rooms["rooms"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "demo").cloned())
        .unwrap_or(serde_json::Value::Null)
}

/// Waits until the demo room has `n` members; returns their calls in joining order.
fn wait_members(gw: &Gateway, n: usize, phones: &[&Phone]) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let r = room(gw);
        let members = r["members"].as_array().cloned().unwrap_or_default();
        if members.len() == n {
            let mut members: Vec<(i64, u64)> = members
                .iter()
                .map(|m| (m["joined_at"].as_i64().unwrap(), m["call"].as_u64().unwrap()))
                .collect();
            members.sort();
            return members.into_iter().map(|(_, c)| c).collect();
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = phones.iter().map(|p| p.log()).collect();
            panic!(
                "the room did not reach {n} members: {r}\ntolk log:\n{}\nbaresip logs:\n{}",
                gw.log_text(),
                logs.join("\n----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Power of `freq` in `samples`, relative to the window's length.
fn power(samples: &[i16], freq: f64, rate: u32) -> f64 {
    tolk::media::analysis::tone_power(samples, freq, rate)
}

/// Dials the demo room from a phone sending `freq`, and keys the PIN once it is connected.
fn caller(gw: &Gateway, name: &str, freq: f64) -> Phone {
    caller_as(gw, name, freq, "tester")
}

/// The same, calling from the number `user`.
fn caller_as(gw: &Gateway, name: &str, freq: f64, user: &str) -> Phone {
    caller_with(gw, name, freq, user, false)
}

/// The same, sending media in SRTP only when `srtp`.
fn caller_with(gw: &Gateway, name: &str, freq: f64, user: &str, srtp: bool) -> Phone {
    let dir = gw.data_dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let tone = dir.join("tone.wav");
    write_tone_wav(&tone, freq, 40, 8000, 1);
    Phone::dial_with(&dir, &format!("sip:{DEMO}@{}", gw.sip), "PCMU", &tone, 8000, user, srtp)
}

/// A dialplan directory whose demo room records always.
fn recorded_demo_plan() -> String {
    let plan = common::dialplan_with(&[]);
    std::fs::write(
        plan.join("rooms.toml"),
        "[room.demo]\npin = \"1234\"\nmoderator_pin = \"9999\"\nrecord = \"always\"\n",
    )
    .unwrap();
    plan.display().to_string()
}

fn key_pin_when_connected(phone: &Phone) {
    phone.key_when_connected(PIN);
}

const TONES: [f64; 4] = [400.0, 650.0, 1100.0, 1700.0];

/// Asserts `heard` has every tone in `present` well above every tone in `absent`.
fn assert_hears(who: &str, heard: &[i16], present: &[f64], absent: &[f64]) {
    let weakest = present
        .iter()
        .map(|&f| power(heard, f, 8000))
        .fold(f64::INFINITY, f64::min);
    let loudest_absent = absent.iter().map(|&f| power(heard, f, 8000)).fold(0.0, f64::max);
    let all: Vec<String> = TONES
        .iter()
        .map(|&f| format!("{f} Hz {:.0}", power(heard, f, 8000)))
        .collect();
    eprintln!("{who}: {}", all.join(", "));
    assert!(
        weakest > 100.0 * loudest_absent.max(1.0),
        "{who} should hear {present:?} and not {absent:?}: {}",
        all.join(", ")
    );
}

#[test]
fn three_callers_each_hear_the_other_two_and_not_themselves() {
    let gw = start();
    let phones: Vec<Phone> = (0..3).map(|i| caller(&gw, &format!("p{i}"), TONES[i])).collect();
    for p in &phones {
        key_pin_when_connected(p);
    }
    wait_members(&gw, 3, &phones.iter().collect::<Vec<_>>());
    // Everyone talks for three seconds.
    std::thread::sleep(Duration::from_secs(3));
    let metrics = gw.metrics();
    let heard: Vec<(Vec<i16>, u32)> = phones.into_iter().map(|p| p.finish()).collect();
    for (i, (samples, rate)) in heard.iter().enumerate() {
        assert_eq!(*rate, 8000);
        let w = window(samples, *rate, 0.5, 2.0);
        let others: Vec<f64> = (0..3).filter(|&j| j != i).map(|j| TONES[j]).collect();
        assert_hears(&format!("caller {i}"), w, &others, &[TONES[i], TONES[3]]);
    }
    // The mixer ticked on its threads and reported its lateness.
    assert!(metrics.contains("mixer_tick_lateness_seconds_count"), "{metrics}");
}

#[test]
fn held_and_muted_members_are_not_heard() {
    let db = TestDb::new("conf_hold");
    let gw = start_with(&db);
    let phones: Vec<Phone> = (0..4).map(|i| caller(&gw, &format!("p{i}"), TONES[i])).collect();
    for p in &phones {
        key_pin_when_connected(p);
    }
    let calls = wait_members(&gw, 4, &phones.iter().collect::<Vec<_>>());
    // Phase one: all four talk.
    std::thread::sleep(Duration::from_secs(3));
    // Phase two: 1 mutes itself with the keypad (1), 2 puts the room on hold (its tone keeps
    // coming, as hold music would), 3 is muted by an admin. Only 0 is heard.
    phones[1].command("/sndcode 1");
    phones[2].command("/hold");
    let muted = calls[3];
    let (status, body) = http_request(
        gw.admin,
        "POST",
        &format!("/api/v1/rooms/demo/members/{muted}/mute"),
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"muted\":true"), "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = room(&gw);
        let members = r["members"].as_array().cloned().unwrap_or_default();
        let flags: Vec<(bool, bool)> = members
            .iter()
            .map(|m| (m["muted"].as_bool().unwrap(), m["held"].as_bool().unwrap()))
            .collect();
        if flags.iter().filter(|f| f.0).count() == 2 && flags.iter().filter(|f| f.1).count() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "mute and hold did not reach the room: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let heard: Vec<(Vec<i16>, u32)> = phones.into_iter().map(|p| p.finish()).collect();
    // Caller 0 heard 1, 2 and 3 before, and none of them after.
    let (samples, rate) = &heard[0];
    let before = window(samples, *rate, 4.5, 1.5);
    assert_hears("caller 0 before", before, &TONES[1..], &[TONES[0]]);
    let after = window(samples, *rate, 0.5, 2.0);
    for f in &TONES[1..] {
        assert!(
            power(after, *f, 8000) * 100.0 < power(before, *f, 8000),
            "caller 0 still hears {f} Hz after mute/hold: before {:.0}, after {:.0}",
            power(before, *f, 8000),
            power(after, *f, 8000)
        );
    }
    // Caller 1 (muted) still hears caller 0.
    let (samples, rate) = &heard[1];
    assert_hears(
        "caller 1 (muted)",
        window(samples, *rate, 0.5, 2.0),
        &[TONES[0]],
        &[TONES[1]],
    );
}

/// Reads server-sent events from the admin API into a shared list of `event: ...` names.
fn follow_events(gw: &Gateway) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::{BufRead, BufReader, Write};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut conn = std::net::TcpStream::connect(gw.admin).unwrap();
    write!(
        conn,
        "GET /api/v1/rooms/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let out = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(conn).lines() {
            let Ok(line) = line else { break };
            if let Some(e) = line.strip_prefix("event: ") {
                out.lock().unwrap().push(e.to_string());
            }
        }
    });
    seen
}

#[test]
fn admins_set_pins_lock_and_eject_and_watch_the_event_stream() {
    let gw = start();
    let events = follow_events(&gw);
    // New PINs through the API replace rooms.toml's at once; bad ones are refused.
    let (status, body) = http_request(
        gw.admin,
        "PUT",
        "/api/v1/rooms/demo/pins",
        Some(TOKEN),
        r#"{"pin": "12a"}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("digits"), "{body}");
    let (status, body) = http_request(
        gw.admin,
        "PUT",
        "/api/v1/rooms/demo/pins",
        Some(TOKEN),
        r#"{"pin": "4321", "moderator_pin": "8888"}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("4321"), "PINs are not echoed: {body}");
    let first = caller(&gw, "first", TONES[0]);
    first.key_when_connected("4321#");
    let calls = wait_members(&gw, 1, &[&first]);
    // Locked: a second caller with the participant PIN is turned away.
    let (status, body) = http_request(gw.admin, "POST", "/api/v1/rooms/demo/lock", Some(TOKEN), "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"locked\":true"), "{body}");
    let second = caller(&gw, "second", TONES[1]);
    second.key_when_connected("4321#");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(room(&gw)["members"].as_array().map(|m| m.len()), Some(1));
    assert!(gw.log_text().contains("reason=\"locked\""), "{}", gw.log_text());
    // Unknown members and rooms get 404 with a message.
    let (status, body) = http_request(
        gw.admin,
        "POST",
        "/api/v1/rooms/demo/members/999999/mute",
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no such member"), "{body}");
    let (status, _) = http_request(gw.admin, "POST", "/api/v1/rooms/nowhere/lock", Some(TOKEN), "");
    assert_eq!(status, 404);
    // The CLI talks to the same API.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tolk"))
            .arg("rooms")
            .args(args)
            .args(["--token", TOKEN])
            .env("TOLK_ADMIN_LISTEN", gw.admin.to_string())
            .current_dir(&gw.data_dir)
            .output()
            .expect("run tolk rooms");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + String::from_utf8_lossy(&out.stderr).as_ref(),
        )
    };
    let (ok, listing) = cli(&["list"]);
    assert!(ok && listing.contains("demo  1 members locked"), "{listing}");
    assert!(
        listing.contains("participant") && !listing.contains("+15551234567"),
        "{listing}"
    );
    let (ok, out) = cli(&["mute", "demo", &calls[0].to_string()]);
    assert!(ok && out.contains("\"muted\":true"), "{out}");
    let (ok, out) = cli(&["deaf", "demo", &calls[0].to_string()]);
    assert!(ok && out.contains("\"deaf\":true"), "{out}");
    let (ok, out) = cli(&["mute", "demo", "424242"]);
    assert!(!ok && out.contains("404"), "{out}");
    // Ejected: the member's flow sees join_conference return and says goodbye; the room empties.
    let (status, body) = http_request(
        gw.admin,
        "POST",
        &format!("/api/v1/rooms/demo/members/{}/eject", calls[0]),
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !room(&gw).is_null() {
        assert!(Instant::now() < deadline, "the room did not empty: {}", room(&gw));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gw.log_text().contains("left the room: ejected"), "{}", gw.log_text());
    std::thread::sleep(Duration::from_millis(300));
    let seen = events.lock().unwrap().clone();
    for want in ["joined", "locked", "left"] {
        assert!(seen.iter().any(|e| e == want), "event {want} in {seen:?}");
    }
    drop((first, second));
    // The PINs set through the API outlive a restart (data_dir/rooms/pins.json, 0600 in a
    // 0700 folder), kept as keyed digests: the file holds no PIN, the key is private too.
    let pins_file = gw.data_dir.join("rooms").join("pins.json");
    common::assert_private(&pins_file);
    common::assert_private(&gw.data_dir.join("keys").join("pins.key"));
    let kept = std::fs::read_to_string(&pins_file).unwrap();
    assert!(!kept.contains("4321") && kept.contains("hmac-sha256:"), "{kept}");
    let mut gw = gw;
    gw.keep_data = true;
    let dir = gw.data_dir.clone();
    drop(gw);
    let tokens = format!("[\"{TOKEN}\"]");
    let gw = Gateway::start_in(dir, &[("TOLK_ADMIN_TOKENS", tokens.as_str())]);
    let third = caller(&gw, "third", TONES[2]);
    third.key_when_connected("4321#");
    wait_members(&gw, 1, &[&third]);
}

#[test]
fn participants_wait_for_the_moderator_and_leave_with_the_last_one() {
    let plan = common::dialplan_with(&[]);
    std::fs::write(
        plan.join("rooms.toml"),
        "[room.demo]\npin = \"1234\"\nmoderator_pin = \"9999\"\nwait_for_moderator = true\nend_with_moderator = true\n",
    )
    .unwrap();
    let tokens = format!("[\"{TOKEN}\"]");
    let plan_dir = plan.display().to_string();
    let gw = Gateway::start(&[
        ("TOLK_ADMIN_TOKENS", tokens.as_str()),
        ("TOLK_DIALPLAN_DIR", plan_dir.as_str()),
    ]);
    let participant = caller(&gw, "participant", TONES[0]);
    key_pin_when_connected(&participant);
    wait_members(&gw, 1, &[&participant]);
    assert_eq!(room(&gw)["waiting"], true, "{}", room(&gw));
    std::thread::sleep(Duration::from_secs(2));
    let dir = gw.data_dir.join("moderator");
    std::fs::create_dir_all(&dir).unwrap();
    let tone = dir.join("tone.wav");
    write_tone_wav(&tone, TONES[1], 40, 8000, 1);
    let moderator = Phone::dial(&dir, &format!("sip:{DEMO}@{}", gw.sip), "PCMU", &tone, 8000);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !moderator.log().contains("Call established") {
        assert!(Instant::now() < deadline, "no call: {}", moderator.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    moderator.command("/sndcode 9999#");
    wait_members(&gw, 2, &[&participant, &moderator]);
    assert_eq!(room(&gw)["waiting"], false, "{}", room(&gw));
    std::thread::sleep(Duration::from_secs(3));
    // The moderator hangs up: the room ends and the participant's flow hears why.
    let _ = moderator.finish();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !room(&gw).is_null() {
        assert!(Instant::now() < deadline, "the room did not end: {}", room(&gw));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gw.log_text().contains("left the room: ended"), "{}", gw.log_text());
    // While it lasted, the participant heard the moderator.
    let (samples, rate) = participant.finish();
    assert!(
        power(&samples, TONES[1], rate) > 100.0 * power(&samples, TONES[3], rate).max(1.0),
        "the participant heard the moderator's tone"
    );
}

#[test]
fn the_room_recording_leaves_out_a_caller_who_opted_out() {
    let db = TestDb::new("conf_rec");
    let tokens = format!("[\"{TOKEN}\"]");
    // A first run registers the opt-out (the registry is read at start).
    let mut first = start_with(&db);
    first.keep_data = true;
    let (status, body) = http_request(
        first.admin,
        "POST",
        "/api/v1/optouts",
        Some(TOKEN),
        r#"{"number": "+15551230002", "scope": "record"}"#,
    );
    assert!(status == 204 || status == 200, "{status} {body}");
    let data = first.data_dir.clone();
    drop(first);
    let plan_dir = recorded_demo_plan();
    let gw = Gateway::start_in(
        data,
        &[
            ("TOLK_ADMIN_TOKENS", tokens.as_str()),
            ("TOLK_DATABASE_URL", db.url.as_str()),
            ("TOLK_DIALPLAN_DIR", plan_dir.as_str()),
        ],
    );
    let phones: Vec<Phone> = (0..3)
        .map(|i| caller_as(&gw, &format!("p{i}"), TONES[i], &format!("+1555123000{}", i + 1)))
        .collect();
    for p in &phones {
        key_pin_when_connected(p);
    }
    wait_members(&gw, 3, &phones.iter().collect::<Vec<_>>());
    let r = room(&gw);
    assert!(r["recording"].is_string(), "recording from the first member: {r}");
    std::thread::sleep(Duration::from_secs(3));
    let (status, body) = http_request(gw.admin, "POST", "/api/v1/rooms/demo/stop-recording", Some(TOKEN), "");
    assert_eq!(status, 200, "{body}");
    // The file is finalised and filed with its length.
    let sql = "select room || ' ' || (seconds > 2)::text from recordings where room = 'demo' and seconds is not null";
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut rows = Vec::new();
    while Instant::now() < deadline {
        rows = db.query(sql);
        if !rows.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(rows, ["demo true"], "{}", gw.log_text());
    let named = db.query("select count(*) from call_events where kind = 'room_recording'");
    assert_eq!(named, ["3"], "each member's CDR names the recording");
    let file = std::fs::read_dir(gw.data_dir.join("recordings"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("room-")))
        .expect("a room recording");
    let (pcm, rate) = tolk::media_files::prompts::read_mono_wav(&file).unwrap();
    assert_eq!(rate, 16_000);
    let last = window(&pcm, rate, 0.2, 2.0);
    let all: Vec<String> = TONES
        .iter()
        .map(|&f| format!("{f} Hz {:.0}", power(last, f, rate)))
        .collect();
    eprintln!("recording: {}", all.join(", "));
    let (a, b, c) = (
        power(last, TONES[0], rate),
        power(last, TONES[1], rate),
        power(last, TONES[2], rate),
    );
    assert!(
        a > 100.0 * b.max(1.0) && c > 100.0 * b.max(1.0),
        "caller 2 opted out: {}",
        all.join(", ")
    );
    // Live, everyone heard the caller who opted out.
    let heard: Vec<(Vec<i16>, u32)> = phones.into_iter().map(|p| p.finish()).collect();
    let (samples, rate) = &heard[0];
    assert_hears(
        "caller 0",
        window(samples, *rate, 0.5, 2.0),
        &[TONES[1], TONES[2]],
        &[TONES[0]],
    );
}

/// A caller whose media is SRTP (RTP/SAVP with SDES keys) is mixed and recorded like the
/// plain ones: the room and its recorder see decoded audio (issue 14: "recording and mixing
/// work unchanged on SRTP calls").
#[test]
fn an_srtp_member_is_mixed_and_recorded_like_the_others() {
    let tokens = format!("[\"{TOKEN}\"]");
    let plan_dir = recorded_demo_plan();
    let gw = Gateway::start(&[
        ("TOLK_ADMIN_TOKENS", tokens.as_str()),
        ("TOLK_DIALPLAN_DIR", plan_dir.as_str()),
    ]);
    let phones: Vec<Phone> = (0..3)
        .map(|i| caller_with(&gw, &format!("p{i}"), TONES[i], "tester", i == 1))
        .collect();
    for p in &phones {
        key_pin_when_connected(p);
    }
    wait_members(&gw, 3, &phones.iter().collect::<Vec<_>>());
    std::thread::sleep(Duration::from_secs(3));
    let (status, body) = http_request(gw.admin, "POST", "/api/v1/rooms/demo/stop-recording", Some(TOKEN), "");
    assert_eq!(status, 200, "{body}");
    let heard: Vec<(Vec<i16>, u32)> = phones.into_iter().map(|p| p.finish()).collect();
    for (i, (samples, rate)) in heard.iter().enumerate() {
        let w = window(samples, *rate, 0.5, 2.0);
        let others: Vec<f64> = (0..3).filter(|&j| j != i).map(|j| TONES[j]).collect();
        assert_hears(&format!("caller {i}"), w, &others, &[TONES[i], TONES[3]]);
    }
    // One of the three streams ran SRTP, and none of its packets failed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let quality_lines = |log: &str| log.lines().filter(|l| l.contains("media quality")).count();
    while quality_lines(&gw.log_text()) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = gw.log_text();
    let srtp_streams = log
        .lines()
        .filter(|l| l.contains("media quality") && l.contains("srtp=true"))
        .count();
    assert_eq!(srtp_streams, 1, "{log}");
    assert_eq!(gw.metric("srtp_packets_rejected_total{reason=\"auth\"}"), 0);
    // The recording holds all three, the SRTP caller's tone included.
    let deadline = Instant::now() + Duration::from_secs(10);
    let recording = loop {
        let file = std::fs::read_dir(gw.data_dir.join("recordings"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("room-")));
        let read = file.and_then(|f| tolk::media_files::prompts::read_mono_wav(&f).ok());
        match read {
            Some((pcm, rate)) if pcm.len() > 2 * rate as usize => break (pcm, rate),
            _ if Instant::now() > deadline => panic!("no finished room recording:\n{log}"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let (pcm, rate) = recording;
    let last = window(&pcm, rate, 0.2, 2.0);
    let powers: Vec<f64> = TONES.iter().map(|&f| power(last, f, rate)).collect();
    eprintln!("recording: {powers:?}");
    let weakest = powers[..3].iter().cloned().fold(f64::INFINITY, f64::min);
    assert!(
        weakest > 100.0 * powers[3].max(1.0),
        "every caller is in the recording: {powers:?}"
    );
}
