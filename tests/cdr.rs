//! CDRs against real PostgreSQL: written and read back field for field; PostgreSQL stopped
//! and restarted during a stream of calls; the gateway killed with SIGKILL mid-stream and
//! restarted. Every call must be present exactly once.

mod common;

use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn wait_for(db: &TestDb, sql: &str, want: &str, within: Duration) -> String {
    db.wait_for(sql, want, within)
}

fn rtp_packet(seq: u16, ts: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0, (seq >> 8) as u8, seq as u8];
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend(std::iter::repeat_n(0xffu8, 160));
    p
}

#[test]
fn records_are_written_and_read_back_field_for_field() {
    let db = TestDb::new("fields");
    let gw = Gateway::start(&[("TOLK_DATABASE_URL", db.url.as_str())]);

    // An answered echo call: 1 s of RTP, then the caller hangs up.
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut uac = Uac::new(gw.sip, "+15550100300");
    let invite = uac.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0 101", ""));
    let call_id = header(&invite, "Call-ID").unwrap();
    uac.send(&invite);
    let (code, ok) = uac.final_response(Duration::from_secs(3)).unwrap();
    assert_eq!(code, 200);
    let media = SocketAddr::from(([127, 0, 0, 1], sdp_audio_port(body(&ok)).unwrap()));
    let ack = uac.request("ACK", "", "");
    uac.send(&ack);
    let answered = Instant::now();
    for i in 0..50u16 {
        rtp.send_to(&rtp_packet(i, i as u32 * 160), media).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let bye = uac.request("BYE", "", "");
    uac.send(&bye);
    let talk_ms = answered.elapsed().as_millis() as i64;
    assert_eq!(uac.final_response(Duration::from_secs(3)).map(|(c, _)| c), Some(200));

    // A refused call: an unknown number.
    let mut uac2 = Uac::new(gw.sip, "+18885550123");
    let invite2 = uac2.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    let call_id2 = header(&invite2, "Call-ID").unwrap();
    uac2.send(&invite2);
    assert_eq!(uac2.final_response(Duration::from_secs(3)).map(|(c, _)| c), Some(404));

    let done = wait_for(
        &db,
        "SELECT count(*) FROM calls WHERE disposition <> 'in_progress'",
        "2",
        Duration::from_secs(10),
    );
    assert_eq!(done, "2", "both calls final; log:\n{}", gw.log_text());

    let row = db.query(&format!(
        "SELECT dialled, dialled_kind, caller_masked, length(caller_pseudonym), caller_number IS NULL, \
         caller_anonymous, direction, disposition, sip_status, q850_cause, hangup_by, codec, \
         packets_received > 40, mos BETWEEN 3.5 AND 4.5, retention_class, \
         round(extract(epoch FROM expires_at - started_at) / 86400), revision >= 2, \
         answered_at >= started_at, ended_at > answered_at, billable_ms, duration_ms >= billable_ms \
         FROM calls WHERE sip_call_id = '{call_id}'"
    ));
    assert_eq!(row.len(), 1, "{row:?}");
    let f: Vec<&str> = row[0].split('|').collect();
    assert_eq!(
        &f[..19],
        &[
            "+15550100300",
            "geographic",
            "+1555123****",
            "64",
            "t",
            "f",
            "inbound",
            "answered",
            "200",
            "16",
            "caller",
            "PCMU",
            "t",
            "t",
            "standard",
            "395",
            "t",
            "t",
            "t"
        ],
        "{row:?}"
    );
    // Billable time is the talk time the caller saw (from the 200 to the BYE), within the
    // time messages take on loopback.
    let billable: i64 = f[19].parse().unwrap();
    assert!(
        (billable - talk_ms).abs() < 300,
        "billable {billable} ms, talked {talk_ms} ms"
    );
    assert_eq!(f[20], "t");

    let row2 = db.query(&format!(
        "SELECT dialled_kind, disposition, sip_status, q850_cause, hangup_by, billable_ms, answered_at IS NULL \
         FROM calls WHERE sip_call_id = '{call_id2}'"
    ));
    assert_eq!(row2, vec!["toll_free|rejected|404|1|gateway|0|t"]);

    // The number appears nowhere in clear: not in the database, not in the journal.
    let clear = db.query("SELECT count(*) FROM calls WHERE caller_number IS NOT NULL OR caller_masked LIKE '%4567'");
    assert_eq!(clear, vec!["0"]);
    let journal = std::fs::read_dir(gw.data_dir.join("cdr"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("segment-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(!journal.contains("+15551234567"), "the caller's number in the journal");
}

/// Runs `calls` basic calls at `rate`/s from another thread.
fn sipp_stream(target: SocketAddr, calls: u32, rate: u32) -> std::thread::JoinHandle<SippRun> {
    std::thread::spawn(move || {
        run_sipp_at(
            target,
            "basic_call.xml",
            &[
                "-m",
                &calls.to_string(),
                "-r",
                &rate.to_string(),
                "-l",
                "100",
                "-recv_timeout",
                "3000",
            ],
        )
    })
}

/// Every call once: as many rows as distinct Call-IDs and ids, none left in progress.
fn assert_each_call_once(db: &TestDb, at_least: u64) {
    let counts = db.query(
        "SELECT count(*), count(DISTINCT id), count(DISTINCT sip_call_id), \
         count(*) FILTER (WHERE disposition = 'in_progress') FROM calls",
    );
    let f: Vec<u64> = counts[0].split('|').map(|v| v.parse().unwrap()).collect();
    assert_eq!(f[0], f[1], "duplicate ids: {counts:?}");
    assert_eq!(f[0], f[2], "a call recorded twice: {counts:?}");
    assert_eq!(f[3], 0, "calls left in progress: {counts:?}");
    assert!(f[0] >= at_least, "{} records for at least {at_least} calls", f[0]);
}

/// A PostgreSQL cluster of the test's own (so stopping it disturbs no other test): the
/// cluster, its directory and its URL.
fn private_postgres(tag: &str) -> (tolk::cdr::embedded::EmbeddedPostgres, std::path::PathBuf, String) {
    let dir = unique_dir(tag);
    let pg = tolk::cdr::embedded::EmbeddedPostgres::start(&dir).expect("a private PostgreSQL cluster");
    let socket = match pg.target() {
        tolk::cdr::db::DbTarget::Socket { dir, .. } => dir,
        other => panic!("{other:?}"),
    };
    let url = format!("postgres://tolk@localhost/tolk?host={}", socket.display());
    (pg, dir, url)
}

#[test]
fn records_survive_postgresql_going_away_mid_stream() {
    // A cluster of our own, so stopping it does not disturb other tests.
    let (pg, pg_dir, url) = private_postgres("pg");
    let gw = Gateway::start(&[("TOLK_DATABASE_URL", url.as_str())]);
    let stream = sipp_stream(gw.sip, 120, 20);
    std::thread::sleep(Duration::from_secs(2));
    pg.stop().expect("stop PostgreSQL");
    std::thread::sleep(Duration::from_secs(3));
    let pg = tolk::cdr::embedded::EmbeddedPostgres::start(&pg_dir).expect("restart PostgreSQL");
    let run = stream.join().unwrap();
    assert!(run.success && run.failed_calls == 0, "{}", run.output);
    let db = ExistingDb::new(&url);
    let done = wait_for_url(&db, "SELECT count(*) FROM calls WHERE disposition = 'answered'", "120");
    assert_eq!(done, "120", "log:\n{}", gw.log_text());
    assert!(gw.log_text().contains("spooled"), "the outage was noticed");
    assert_each_call_once(&db.0, 120);
    // SIPp sends no RTP: a call with nothing received has no MOS (not a MOS of 0).
    assert_eq!(
        db.0.query("SELECT count(*) FROM calls WHERE mos IS NOT NULL OR packets_received <> 0"),
        vec!["0".to_string()]
    );
    drop(gw);
    pg.stop().ok();
    let _ = std::fs::remove_dir_all(&pg_dir);
}

/// Three rooms that record always, each joined straight away (with its PIN) by the flow of
/// its number.
fn recording_rooms_dialplan() -> std::path::PathBuf {
    let flows: Vec<(String, String)> = (1..=3)
        .map(|i| {
            (
                format!("r{i}"),
                format!(
                    "answer();\nlet role = room_role(\"r{i}\", \"{i}{i}{i}{i}\");\njoin_conference(\"r{i}\", #{{ role: role }});\nhangup();\n"
                ),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = flows.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect();
    let plan = dialplan_with(&refs);
    let mut numbers = String::from("region = \"US\"\n");
    let mut rooms = String::new();
    for i in 1..=3 {
        numbers.push_str(&format!(
            "\n[[route]]\nnumber = \"+1555010040{i}\"\nflow = \"r{i}\"\ntenant = \"t{i}\"\n"
        ));
        rooms.push_str(&format!("[room.r{i}]\npin = \"{i}{i}{i}{i}\"\nrecord = \"always\"\n\n"));
    }
    numbers.push_str("\n[default]\nreject = 404\n");
    std::fs::write(plan.join("numbers.toml"), numbers).unwrap();
    std::fs::write(plan.join("rooms.toml"), rooms).unwrap();
    plan
}

#[test]
fn room_sessions_and_recordings_survive_postgresql_going_away() {
    // Rooms start and end and recordings are filed while PostgreSQL is down: every room
    // session and recording row arrives once it is back (through the CDR journal).
    let (pg, pg_dir, url) = private_postgres("pg-rooms");
    let plan = recording_rooms_dialplan().display().to_string();
    let gw = Gateway::start(&[
        ("TOLK_DATABASE_URL", url.as_str()),
        ("TOLK_DIALPLAN_DIR", plan.as_str()),
    ]);
    const CALLS_PER_ROOM: u32 = 10;
    let target = gw.sip;
    // One caller at a time per room: each call is a session of its own, with its recording.
    let streams: Vec<_> = (1..=3)
        .map(|i| {
            std::thread::spawn(move || {
                let number = format!("+1555010040{i}");
                let calls = CALLS_PER_ROOM.to_string();
                run_sipp_at(
                    target,
                    "basic_call.xml",
                    &[
                        "-s",
                        &number,
                        "-m",
                        &calls,
                        "-r",
                        "2",
                        "-l",
                        "1",
                        "-recv_timeout",
                        "5000",
                    ],
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    pg.stop().expect("stop PostgreSQL");
    std::thread::sleep(Duration::from_secs(3));
    let pg = tolk::cdr::embedded::EmbeddedPostgres::start(&pg_dir).expect("restart PostgreSQL");
    for s in streams {
        let run = s.join().unwrap();
        assert!(run.success && run.failed_calls == 0, "{}", run.output);
    }
    let total = (3 * CALLS_PER_ROOM).to_string();
    let db = ExistingDb::new(&url);
    let ended = wait_for_url(
        &db,
        "SELECT count(*) FROM room_sessions WHERE ended_at IS NOT NULL",
        &total,
    );
    assert_eq!(ended, total, "every session ended and filed; log:\n{}", gw.log_text());
    let finished = wait_for_url(&db, "SELECT count(*) FROM recordings WHERE seconds IS NOT NULL", &total);
    assert_eq!(
        finished,
        total,
        "every recording finalised and filed; log:\n{}",
        gw.log_text()
    );
    assert!(gw.log_text().contains("spooled"), "the outage was noticed");
    // Exactly once: as many rows as sessions and recordings the gateway made, each whole.
    let sessions = db.0.query(
        "SELECT count(*), count(DISTINCT id), count(DISTINCT room_id), min(max_members), max(max_members), \
         count(*) FILTER (WHERE ended_at < started_at) FROM room_sessions",
    );
    assert_eq!(sessions, [format!("{total}|{total}|3|1|1|0")]);
    let recordings = db.0.query(
        "SELECT count(*), count(DISTINCT id), count(DISTINCT path), count(DISTINCT room_session), \
         count(*) FILTER (WHERE room_session IN (SELECT id FROM room_sessions)), \
         count(*) FILTER (WHERE call_id IS NULL AND room IS NOT NULL AND ended_at IS NOT NULL) FROM recordings",
    );
    assert_eq!(recordings, [format!("{total}|{total}|{total}|{total}|{total}|{total}")]);
    assert_eq!(
        db.0.query("SELECT id || ' ' || coalesce(tenant, '-') FROM rooms ORDER BY id"),
        ["r1 t1", "r2 t2", "r3 t3"]
    );
    // Every file the rows name is on disk.
    for path in db.0.query("SELECT path FROM recordings") {
        assert!(gw.data_dir.join("recordings").join(&path).is_file(), "{path} on disk");
    }
    drop(gw);
    pg.stop().ok();
    let _ = std::fs::remove_dir_all(&pg_dir);
}

/// A database we did not create (the private cluster's).
struct ExistingDb(TestDb);

impl ExistingDb {
    fn new(url: &str) -> ExistingDb {
        ExistingDb(TestDb {
            name: String::new(),
            url: url.to_string(),
        })
    }
}

impl Drop for ExistingDb {
    fn drop(&mut self) {
        // Not ours to drop: make the inner guard's DROP a no-op.
        self.0.name = "tolk_nonexistent_guard".into();
    }
}

fn wait_for_url(db: &ExistingDb, sql: &str, want: &str) -> String {
    wait_for(&db.0, sql, want, Duration::from_secs(20))
}

#[test]
fn records_survive_a_sigkill_mid_stream() {
    let db = TestDb::new("kill");
    let mut gw = Gateway::start(&[("TOLK_DATABASE_URL", db.url.as_str())]);
    gw.keep_data = true;
    let data_dir = gw.data_dir.clone();
    let stream = sipp_stream(gw.sip, 400, 40);
    std::thread::sleep(Duration::from_millis(2500));
    gw.kill9();
    let run = stream.join().unwrap();
    // Calls completed before the kill, and some cut off by it.
    assert!(run.successful_calls > 0 && run.failed_calls > 0, "{}", run.output);

    let gw2 = Gateway::start_in(data_dir.clone(), &[("TOLK_DATABASE_URL", db.url.as_str())]);
    let left = wait_for(
        &db,
        "SELECT count(*) FROM calls WHERE disposition = 'in_progress'",
        "0",
        Duration::from_secs(15),
    );
    assert_eq!(left, "0", "log:\n{}", gw2.log_text());
    assert_each_call_once(&db, run.successful_calls);
    let answered: u64 = db.query("SELECT count(*) FROM calls WHERE disposition = 'answered'")[0]
        .parse()
        .unwrap();
    assert!(
        answered >= run.successful_calls,
        "{answered} answered records for {} calls SIPp completed",
        run.successful_calls
    );
    // The cut-off calls are closed as interrupted, never left open or duplicated.
    let interrupted = db.query("SELECT count(*) FROM calls WHERE disposition = 'interrupted'");
    assert_ne!(
        interrupted,
        vec!["0"],
        "calls cut off by the kill are marked interrupted"
    );
    drop(gw2);
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[test]
fn without_a_database_url_serve_runs_its_own_postgresql() {
    let mut gw = Gateway::start(&[("TOLK_DATABASE_URL", "")]);
    let log = gw.log_text();
    assert!(
        log.contains("initialised a private PostgreSQL cluster")
            && log.contains("started the private PostgreSQL cluster"),
        "{log}"
    );
    let mut uac = Uac::new(gw.sip, "+18885550123");
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let invite = uac.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    uac.send(&invite);
    assert_eq!(uac.final_response(Duration::from_secs(3)).map(|(c, _)| c), Some(404));
    let socket = std::fs::canonicalize(gw.data_dir.join("pg")).unwrap();
    let db = ExistingDb::new(&format!("postgres://tolk@localhost/tolk?host={}", socket.display()));
    let got = wait_for_url(&db, "SELECT disposition, sip_status FROM calls", "rejected|404");
    assert_eq!(got, "rejected|404");
    // A clean stop stops the cluster too.
    gw.terminate();
    assert_eq!(gw.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(
        !gw.data_dir.join("pg/postmaster.pid").exists(),
        "the cluster was stopped"
    );
}

/// Issue 16: an erasure asked for while PostgreSQL is down waits in the journal, behind the
/// records it must erase, and is carried out when the database is back.
#[test]
fn an_erasure_asked_while_postgresql_is_down_is_carried_out_when_it_is_back() {
    let (pg, pg_dir, url) = private_postgres("pg-erase");
    let gw = Gateway::start(&[("TOLK_DATABASE_URL", url.as_str())]);
    let db = ExistingDb::new(&url);
    // SIPp calls from +15551230000.
    let run = run_sipp(&gw, "basic_call.xml", &["-s", "+15550100300", "-m", "2"]);
    assert!(run.success, "{}", run.output);
    wait_for_url(
        &db,
        "SELECT count(*) FROM calls WHERE caller_masked = '+1555123****' AND ended_at IS NOT NULL",
        "2",
    );
    pg.stop().expect("stop PostgreSQL");
    // A call during the outage is spooled; the erasure is queued behind it.
    let run = run_sipp(&gw, "basic_call.xml", &["-s", "+15550100300", "-m", "1"]);
    assert!(run.success, "{}", run.output);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tolk"))
        .args([
            "cdr",
            "erase",
            "--number",
            "+15551230000",
            "--requested-by",
            "outage test",
        ])
        .current_dir(&gw.data_dir)
        .env("TOLK_DATA_DIR", &gw.data_dir)
        .env("TOLK_DATABASE_URL", &url)
        .output()
        .expect("run tolk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("\"queued\":true"), "{text}");
    let pg = tolk::cdr::embedded::EmbeddedPostgres::start(&pg_dir).expect("restart PostgreSQL");
    wait_for_url(
        &db,
        "SELECT count(*) FROM erasure_requests WHERE requested_by = 'outage test'",
        "1",
    );
    assert_eq!(
        db.0.query("SELECT count(*) FROM calls WHERE caller_masked = '+1555123****'"),
        ["0"],
        "the three calls, the one spooled during the outage too, are erased"
    );
    assert_eq!(
        db.0.query("SELECT calls_affected FROM erasure_requests WHERE requested_by = 'outage test'"),
        ["3"]
    );
    // The journal is rotated away once caught up: no spooled copy of the caller stays.
    let journal = gw.data_dir.join("cdr");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left: Vec<String> = std::fs::read_dir(&journal)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("segment-"))
            .filter(|e| String::from_utf8_lossy(&std::fs::read(e.path()).unwrap_or_default()).contains("+1555123****"))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the caller is still spooled in {left:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(gw);
    pg.stop().ok();
    let _ = std::fs::remove_dir_all(&pg_dir);
}
