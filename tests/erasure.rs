//! Erasure by number reaches every store (issue 16's Must show): a caller who called the
//! assistant, was spoken to by `say()` and spoke in a recorded conference is erased while
//! the gateway runs, through the CLI and the control socket (no admin token); afterwards
//! their number (clear or masked) and pseudonym are nowhere in `pg_dump`, under `data_dir`
//! (the journal, recordings, the TTS cache, `rejected.jsonl`) or in the gateway's log.

mod common;

use common::baresip::{Phone, write_tone_wav};
use common::{Gateway, TestDb, unique_dir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SUBJECT: &str = "+14155550123";
const OTHER: &str = "+15551230002";
const ASSISTANT: &str = "+15550100200";

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The shipped assistant, greeting the caller with `say()` first (the text names the caller,
/// masked, as a careless flow might), and a demo room that records always.
fn plan() -> PathBuf {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dialplans/flows/assistant.rhai")).unwrap();
    let greeting = shipped.replacen(
        "answer();\n",
        "answer();\nsay(`Hello, caller ${caller().masked}`);\n",
        1,
    );
    assert_ne!(greeting, shipped, "the assistant answers with answer();");
    let plan = common::dialplan_with(&[("assistant", &greeting)]);
    let rooms = std::fs::read_to_string(plan.join("rooms.toml")).unwrap();
    let rooms = rooms.replacen("[room.demo]\n", "[room.demo]\nrecord = \"always\"\n", 1);
    assert!(rooms.contains("record = \"always\""), "{rooms}");
    std::fs::write(plan.join("rooms.toml"), rooms).unwrap();
    plan
}

fn wait_rows(db: &TestDb, sql: &str, what: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = db.query(sql);
        if !rows.is_empty() || Instant::now() > deadline {
            assert!(!rows.is_empty(), "{what}: nothing for {sql}");
            return rows;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Calls the assistant as `user`, takes the conference (1, PIN), talks for a while, hangs up.
fn join_through_the_assistant(gw: &Gateway, phones: &Path, user: &str, freq: f64) -> Phone {
    let dir = phones.join(user.trim_start_matches('+'));
    std::fs::create_dir_all(&dir).unwrap();
    let tone = dir.join("tone.wav");
    write_tone_wav(&tone, freq, 40, 8000, 1);
    let phone = Phone::dial_as(&dir, &format!("sip:{ASSISTANT}@{}", gw.sip), "PCMU", &tone, 8000, user);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !phone.log().contains("Call established") {
        assert!(Instant::now() < deadline, "no call: {}", phone.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Keys typed ahead are kept through the greeting and the menu prompt.
    std::thread::sleep(Duration::from_millis(500));
    phone.command("/sndcode 1");
    std::thread::sleep(Duration::from_millis(800));
    phone.command("/sndcode 1234#");
    phone
}

#[test]
fn erasure_leaves_no_trace_of_the_caller_anywhere() {
    let db = TestDb::new("erase_all");
    let plan = plan();
    let gw = Gateway::start(&[
        ("TOLK_DATABASE_URL", db.url.as_str()),
        ("TOLK_DIALPLAN_DIR", plan.to_str().unwrap()),
    ]);
    let phones = unique_dir("erase-phones");
    let subject = join_through_the_assistant(&gw, &phones, SUBJECT, 400.0);
    let other = join_through_the_assistant(&gw, &phones, OTHER, 1100.0);
    wait_rows(
        &db,
        "SELECT count(*) FROM call_events WHERE kind = 'joined_room' HAVING count(*) >= 2",
        "both callers in the room",
    );
    std::thread::sleep(Duration::from_secs(2));
    subject.finish();
    other.finish();

    // What the caller left: a call, its greeting in the TTS cache, a room recording.
    let pseudonym = wait_rows(
        &db,
        "SELECT caller_pseudonym FROM calls WHERE caller_masked = '+1415555****' AND ended_at IS NOT NULL",
        "the subject's call",
    )[0]
    .clone();
    assert!(pseudonym.len() >= 16, "{pseudonym}");
    let spoken = wait_rows(
        &db,
        &format!(
            "SELECT e.detail->>'file' FROM call_events e JOIN calls c ON c.id = e.call_id \
             WHERE e.kind = 'spoken' AND c.caller_pseudonym = '{pseudonym}'"
        ),
        "the greeting",
    );
    let others_greeting = wait_rows(
        &db,
        &format!(
            "SELECT e.detail->>'file' FROM call_events e JOIN calls c ON c.id = e.call_id \
             WHERE e.kind = 'spoken' AND c.caller_pseudonym <> '{pseudonym}'"
        ),
        "the other caller's greeting",
    );
    let tts_dir = gw.data_dir.join("tts");
    let greeting: Vec<PathBuf> = spoken.iter().map(|f| tts_dir.join(f)).collect();
    assert!(greeting.iter().all(|f| f.exists()), "{greeting:?}");
    let room_file = wait_rows(
        &db,
        "SELECT path FROM recordings WHERE room = 'demo' AND seconds IS NOT NULL",
        "the room recording",
    )[0]
    .clone();
    let room_file = gw.data_dir.join("recordings").join(room_file);
    assert!(room_file.exists(), "{}", room_file.display());
    // A record PostgreSQL refused, kept in rejected.jsonl (as the writer keeps them).
    let refused_id = "01a25053-0000-7000-8000-00000000beef";
    let rejected = gw.data_dir.join("cdr").join("rejected.jsonl");
    std::fs::write(
        &rejected,
        format!(
            "{{\"error\":\"test\",\"entry\":{{\"entry\":\"call\",\"id\":\"{refused_id}\",\"caller_pseudonym\":\"{pseudonym}\",\"caller_number\":\"{SUBJECT}\"}}}}\n\
             {{\"error\":\"test\",\"entry\":{{\"entry\":\"event\",\"id\":\"01a25053-0000-7000-8000-000000000001\",\"call_id\":\"{refused_id}\",\"kind\":\"muted\"}}}}\n\
             {{\"error\":\"test\",\"entry\":{{\"entry\":\"event\",\"id\":\"01a25053-0000-7000-8000-000000000002\",\"call_id\":\"01a25053-0000-7000-8000-00000000cafe\",\"kind\":\"muted\"}}}}\n"
        ),
    )
    .unwrap();

    // Erased while the gateway runs: the CLI goes through the control socket.
    let out = Command::new(env!("CARGO_BIN_EXE_tolk"))
        .args(["cdr", "erase", "--number", SUBJECT, "--requested-by", "ticket 16"])
        .current_dir(&gw.data_dir)
        .env("TOLK_DATA_DIR", &gw.data_dir)
        .env("TOLK_DATABASE_URL", &db.url)
        .output()
        .expect("run tolk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    eprintln!("erasure: {report}");
    assert_eq!(report["calls"], 1, "{report}");
    assert_eq!(report["room_recordings"], 1, "{report}");
    assert_eq!(report["room_recordings_policy"], "delete", "{report}");
    assert_eq!(report["rejected"], 2, "{report}");
    assert!(report["tts_files"].as_u64() >= Some(1), "{report}");
    assert!(!room_file.exists(), "the room recording is gone");
    assert!(
        greeting.iter().all(|f| !f.exists()),
        "the greeting is gone from the TTS cache"
    );
    assert!(
        tts_dir.join(&others_greeting[0]).exists(),
        "the other caller's greeting stays"
    );
    let audit = db.query("SELECT room_recordings_policy, room_recordings_affected, requested_by FROM erasure_requests");
    assert_eq!(audit, ["delete|1|ticket 16"]);
    // The other caller's call stays; the refused line of someone else stays.
    assert_eq!(
        db.query("SELECT count(*) FROM calls WHERE caller_masked = '+1555123****'"),
        ["1"]
    );
    assert!(std::fs::read_to_string(&rejected).unwrap().contains("00000000cafe"));

    // No trace: clear, masked, national digits or pseudonym.
    let dump = Command::new("pg_dump").arg(&db.url).output().expect("pg_dump");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    let needles = [SUBJECT, "+1415555****", "4155550123", pseudonym.as_str()];
    for needle in needles {
        assert!(!dump.contains(needle), "`{needle}` is still in the database");
        for file in walk(&gw.data_dir)
            .iter()
            .filter(|f| !f.starts_with(gw.data_dir.join("pg")))
        {
            let bytes = std::fs::read(file).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).take(5).collect();
            assert!(
                lines.is_empty(),
                "`{needle}` is still in {}: {lines:#?}",
                file.display()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&phones);
    let _ = std::fs::remove_dir_all(&plan);
}
