//! Flows on real calls: SIPp keys the conference PIN as RFC 4733 events and lands in the demo
//! room (room listing and CDR); the assistant's 9 records an opt-out (registry, CDR, event);
//! a runaway flow ends with the apology and a CDR saying why; a broken dialplan reload keeps
//! the old plan, a good one (SIGHUP) takes effect without dropping calls.

mod common;
use common::{Gateway, TestDb, Uac, dialplan_with, http_request, run_sipp, sdp_offer};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

const TOKEN: &str = "flow-test-token-0123456789";

fn wait_for(db: &TestDb, sql: &str, want: &str) -> String {
    db.wait_for(sql, want, Duration::from_secs(20))
}

fn start(db: &TestDb, extra: &[(&str, &str)]) -> Gateway {
    let tokens = format!("[\"{TOKEN}\"]");
    let mut env = vec![
        ("TOLK_DATABASE_URL", db.url.as_str()),
        ("TOLK_ADMIN_TOKENS", tokens.as_str()),
    ];
    env.extend_from_slice(extra);
    Gateway::start(&env)
}

#[test]
fn the_conference_pin_as_rfc4733_digits_lands_in_the_demo_room() {
    let db = TestDb::new("flow_conf");
    let gw = start(&db, &[]);
    let sip = gw.sip;
    let sipp =
        std::thread::spawn(move || common::run_sipp_at(sip, "conference_pin.xml", &["-s", "+18005550100", "-m", "1"]));
    // The room listing shows the member (masked) while SIPp stays in the room.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut listing = String::new();
    while Instant::now() < deadline {
        let (status, body) = http_request(gw.admin, "GET", "/api/v1/rooms", Some(TOKEN), "");
        assert_eq!(status, 200, "{body}");
        if body.contains("\"participant\"") {
            listing = body;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let run = sipp.join().unwrap();
    assert!(
        run.success && run.failed_calls == 0,
        "{}\n{}",
        run.output,
        gw.log_text()
    );
    let rooms: serde_json::Value =
        serde_json::from_str(&listing).unwrap_or_else(|_| panic!("no member listed; log:\n{}", gw.log_text()));
    let room = &rooms["rooms"][0];
    assert_eq!(room["name"], "demo");
    assert_eq!(room["members"][0]["role"], "participant");
    assert_eq!(room["members"][0]["caller"], "+1555123****");
    assert!(!listing.contains("15551230000"), "a number in clear: {listing}");
    // After the hangup the room is empty.
    let (_, after) = http_request(gw.admin, "GET", "/api/v1/rooms", Some(TOKEN), "");
    assert_eq!(after.trim(), "{\"rooms\":[]}");
    // The CDR: flow, tenant, room, role, and the timeline.
    let row = wait_for(
        &db,
        "SELECT flow, tenant, room, role, dialled_kind, disposition, tags->>'product', room_session IS NOT NULL FROM calls",
        "conference|demo|demo|participant|toll_free|answered|conference|t",
    );
    assert_eq!(
        row,
        "conference|demo|demo|participant|toll_free|answered|conference|t",
        "{}",
        gw.log_text()
    );
    let events = wait_for(
        &db,
        "SELECT string_agg(kind, ',' ORDER BY at) FROM call_events",
        "joined_room,left_room",
    );
    assert_eq!(events, "joined_room,left_room");
}

#[test]
fn pressing_nine_in_the_assistant_records_an_opt_out() {
    let db = TestDb::new("flow_optout");
    let gw = start(&db, &[]);
    let run = run_sipp(&gw, "assistant_optout.xml", &["-s", "+15550100200", "-m", "1"]);
    assert!(
        run.success && run.failed_calls == 0,
        "{}\n{}",
        run.output,
        gw.log_text()
    );
    // The registry, by the caller's pseudonym (the same the CDR holds).
    let registry = wait_for(
        &db,
        "SELECT o.scope, o.source, o.pseudonym = c.caller_pseudonym FROM opt_outs o, calls c",
        "record|flow|t",
    );
    assert_eq!(registry, "record|flow|t", "{}", gw.log_text());
    let cdr = wait_for(
        &db,
        "SELECT flow, consent->>'record', disposition FROM calls",
        "assistant|false|answered",
    );
    assert_eq!(cdr, "assistant|false|answered");
    let event = wait_for(&db, "SELECT kind, detail->>'scope' FROM call_events", "opt_out|record");
    assert_eq!(event, "opt_out|record");
    // Listed by the CLI's registry view too (through the API here).
    let (status, body) = http_request(gw.admin, "GET", "/api/v1/optouts", Some(TOKEN), "");
    assert_eq!(status, 200);
    assert!(body.contains("\"record\""), "{body}");
}

#[test]
fn pressing_zero_in_the_assistant_transfers_the_call_by_refer() {
    let db = TestDb::new("flow_transfer");
    let gw = start(&db, &[]);
    // SIPp checks the Refer-To, accepts (202), reports success by NOTIFY, expects tolk's BYE.
    let run = run_sipp(&gw, "assistant_transfer.xml", &["-s", "+15550100200", "-m", "1"]);
    assert!(
        run.success && run.failed_calls == 0,
        "{}\n{}",
        run.output,
        gw.log_text()
    );
    let row = wait_for(
        &db,
        "SELECT tags->>'menu', hangup_by, disposition FROM calls",
        "operator|gateway|answered",
    );
    assert_eq!(row, "operator|gateway|answered", "{}", gw.log_text());
    let events = wait_for(
        &db,
        "SELECT kind, detail->>'to' FROM call_events",
        "transfer|+1555010****",
    );
    assert_eq!(events, "transfer|+1555010****");
    assert!(gw.metrics().contains("sip_requests_sent_total{method=\"REFER\"} 1"));
}

#[test]
fn a_runaway_flow_apologises_hangs_up_and_says_why_in_the_cdr() {
    let db = TestDb::new("flow_runaway");
    let dir = dialplan_with(&[("echo", "answer(); let n = 0; loop { n += 1; }")]);
    let gw = start(
        &db,
        &[
            ("TOLK_DIALPLAN_DIR", dir.to_str().unwrap()),
            ("TOLK_FLOW_STEP_BUDGET_MS", "200"),
        ],
    );
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut uac = Uac::new(gw.sip, "+15550100300");
    let invite = uac.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    uac.send(&invite);
    let (code, _) = uac.final_response(Duration::from_secs(5)).unwrap();
    assert_eq!(code, 200);
    let ack = uac.request("ACK", "", "");
    uac.send(&ack);
    // The apology prompt (about 4 s), then a BYE.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut bye = None;
    while Instant::now() < deadline {
        if let Some(m) = uac.recv(Duration::from_millis(500))
            && m.starts_with("BYE ")
        {
            bye = Some(m);
            break;
        }
    }
    let bye = bye.unwrap_or_else(|| panic!("no BYE; log:\n{}", gw.log_text()));
    uac.respond_ok(&bye);
    let row = wait_for(
        &db,
        "SELECT tags->>'flow_error' LIKE '%budget%', hangup_by FROM calls",
        "t|gateway",
    );
    assert_eq!(row, "t|gateway", "{}", gw.log_text());
    // Other calls are unaffected: the gateway still answers.
    let mut uac2 = Uac::new(gw.sip, "+15550100200");
    let invite = uac2.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    uac2.send(&invite);
    assert_eq!(uac2.final_response(Duration::from_secs(5)).map(|r| r.0), Some(200));
}

#[test]
fn a_broken_reload_keeps_the_old_plan_and_a_good_one_takes_effect() {
    let db = TestDb::new("flow_reload");
    let dir = dialplan_with(&[]);
    let gw = start(&db, &[("TOLK_DIALPLAN_DIR", dir.to_str().unwrap())]);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let status_of_call = |number: &str| {
        let mut uac = Uac::new(gw.sip, number);
        let invite = uac.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
        uac.send(&invite);
        let code = uac.final_response(Duration::from_secs(5)).map(|r| r.0);
        if code == Some(200) {
            let ack = uac.request("ACK", "", "");
            uac.send(&ack);
            let bye = uac.request("BYE", "", "");
            uac.send(&bye);
        }
        code
    };
    assert_eq!(status_of_call("+15550100400"), Some(404));
    // A broken file: rejected whole with file:line: reason; the old plan keeps serving.
    let numbers = dir.join("numbers.toml");
    let good = std::fs::read_to_string(&numbers).unwrap();
    std::fs::write(
        &numbers,
        format!("{good}\n[[route]]\nnumber = \"+15550100400\"\nflow = \"nope\"\n"),
    )
    .unwrap();
    let (status, body) = http_request(gw.admin, "POST", "/api/v1/dialplan/reload", Some(TOKEN), "");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("numbers.toml:") && body.contains("nope"), "{body}");
    assert_eq!(status_of_call("+15550100300"), Some(200));
    assert_eq!(status_of_call("+15550100400"), Some(404));
    // A good file, by SIGHUP: the new route answers.
    std::fs::write(
        &numbers,
        format!("{good}\n[[route]]\nnumber = \"+15550100400\"\nflow = \"echo\"\n"),
    )
    .unwrap();
    gw.hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log_text().contains("dialplan reloaded") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status_of_call("+15550100400"), Some(200), "{}", gw.log_text());
}

#[test]
fn say_speaks_through_espeak_ng_on_a_call() {
    let db = TestDb::new("flow_say");
    let dir = dialplan_with(&[("echo", "answer(); say(\"Welcome to tolk.\"); hangup();")]);
    let gw = start(&db, &[("TOLK_DIALPLAN_DIR", dir.to_str().unwrap())]);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    rtp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut uac = Uac::new(gw.sip, "+15550100300");
    let invite = uac.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    uac.send(&invite);
    assert_eq!(uac.final_response(Duration::from_secs(5)).map(|r| r.0), Some(200));
    let ack = uac.request("ACK", "", "");
    uac.send(&ack);
    // Count RTP frames that carry sound (PCMU silence is 0xFF/0x7F).
    let mut loud = 0;
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut bye = None;
    while Instant::now() < deadline && bye.is_none() {
        if let Ok((n, _)) = rtp.recv_from(&mut buf)
            && n > 12
            && buf[12..n].iter().filter(|&&b| b != 0xFF && b != 0x7F).count() > 80
        {
            loud += 1;
        }
        if let Some(m) = uac.recv(Duration::from_millis(1))
            && m.starts_with("BYE ")
        {
            bye = Some(m);
        }
    }
    // What was sent before the BYE waits in the socket (the SIP reads above are slow).
    while let Ok((n, _)) = rtp.recv_from(&mut buf) {
        if n > 12 && buf[12..n].iter().filter(|&&b| b != 0xFF && b != 0x7F).count() > 80 {
            loud += 1;
        }
    }
    let bye = bye.unwrap_or_else(|| panic!("no BYE after speaking; log:\n{}", gw.log_text()));
    uac.respond_ok(&bye);
    // "Welcome to tolk." is about a second of speech: dozens of 20 ms frames.
    assert!(loud > 25, "only {loud} frames with sound; log:\n{}", gw.log_text());
    let cached: Vec<_> = std::fs::read_dir(gw.data_dir.join("tts")).unwrap().flatten().collect();
    assert_eq!(cached.len(), 1, "one cached WAV");
    // The cached speech may be personal (its name is the text's hash): private files.
    common::assert_private(&cached[0].path());
}

#[test]
fn a_flow_recording_is_filed_with_the_call_and_erased_with_the_caller() {
    let db = TestDb::new("flow_record");
    let dir = dialplan_with(&[(
        "echo",
        "answer(); let r = record(#{ max_secs: 2, beep: false }); log(`recorded ${r.secs}`); hangup();",
    )]);
    let gw = start(&db, &[("TOLK_DIALPLAN_DIR", dir.to_str().unwrap())]);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut uac = Uac::from(gw.sip, "+15550100300", "+14155550123");
    let invite = uac.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    uac.send(&invite);
    let (code, ok) = uac.final_response(Duration::from_secs(5)).unwrap();
    assert_eq!(code, 200);
    let media = std::net::SocketAddr::from(([127, 0, 0, 1], common::sdp_audio_port(common::body(&ok)).unwrap()));
    let ack = uac.request("ACK", "", "");
    uac.send(&ack);
    // 3 s of a tone, so there is something to record; the flow stops after 2 s.
    for i in 0..150u16 {
        let mut pkt = vec![0x80, 0, (i >> 8) as u8, i as u8];
        pkt.extend_from_slice(&(i as u32 * 160).to_be_bytes());
        pkt.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        pkt.extend((0..160).map(|n| if (n / 10) % 2 == 0 { 0x20u8 } else { 0xA0 }));
        rtp.send_to(&pkt, media).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        if let Some(m) = uac.recv(Duration::from_millis(0))
            && m.starts_with("BYE ")
        {
            uac.respond_ok(&m);
            break;
        }
    }
    let filed = wait_for(
        &db,
        "SELECT r.caller_pseudonym = c.caller_pseudonym, c.recording_id = r.id FROM recordings r, calls c WHERE c.disposition <> 'in_progress'",
        "t|t",
    );
    assert_eq!(filed, "t|t", "{}", gw.log_text());
    let file = db.query("SELECT path FROM recordings").join("");
    let path = gw.data_dir.join("recordings").join(&file);
    assert!(path.exists(), "{}", path.display());
    assert!(
        std::fs::metadata(&path).unwrap().len() > 44 + 16_000,
        "about 2 s of 8 kHz audio"
    );
    // The recording and the CDR journal (clear numbers until they are in PostgreSQL) are
    // private files.
    common::assert_private(&path);
    let segment = std::fs::read_dir(gw.data_dir.join("cdr"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("segment-"))
        })
        .expect("a journal segment");
    common::assert_private(&segment);
    // Erasure of the caller removes the recording file too.
    let (status, body) = http_request(
        gw.admin,
        "POST",
        "/api/v1/erasures",
        Some(TOKEN),
        "{\"number\": \"+14155550123\", \"requested_by\": \"test\"}",
    );
    assert_eq!(status, 200, "{body}");
    assert!(!path.exists(), "the recording is gone after erasure: {body}");
}

#[test]
fn a_full_flow_pool_refuses_new_calls_with_503_and_retry_after() {
    let db = TestDb::new("flow_full");
    let gw = start(&db, &[("TOLK_FLOW_MAX_CONCURRENT", "1")]);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    // The first call holds the only flow slot (the echo flow runs until hangup).
    let mut first = Uac::new(gw.sip, "+15550100300");
    let invite = first.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    first.send(&invite);
    assert_eq!(first.final_response(Duration::from_secs(5)).map(|r| r.0), Some(200));
    let ack = first.request("ACK", "", "");
    first.send(&ack);
    let mut second = Uac::new(gw.sip, "+15550100300");
    let invite = second.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    second.send(&invite);
    let (code, resp) = second.final_response(Duration::from_secs(5)).unwrap();
    assert_eq!(code, 503);
    assert!(common::header(&resp, "Retry-After").is_some(), "{resp}");
    assert!(gw.metrics().contains("calls_total{outcome=\"flows_busy\"} 1"));
    // Once the first call ends, its slot serves the next.
    let bye = first.request("BYE", "", "");
    first.send(&bye);
    std::thread::sleep(Duration::from_millis(500));
    let mut third = Uac::new(gw.sip, "+15550100300");
    let invite = third.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    third.send(&invite);
    assert_eq!(third.final_response(Duration::from_secs(5)).map(|r| r.0), Some(200));
}
