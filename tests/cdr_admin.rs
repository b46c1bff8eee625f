//! Reading and governing CDRs through `tolk cdr ...`, `tolk optout ...` and `/api/v1`, against
//! real PostgreSQL: the list's JSON contract, report figures against a hand-built data set,
//! the sweeper's expiry and legal hold, opt-outs, and erasure that leaves no trace.

mod common;

use common::*;
use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN: &str = "test-token-0123456789";

/// Runs `tolk` with the test database and data directory; returns stdout (asserts success).
fn tolk(db: &TestDb, data_dir: &Path, args: &[&str]) -> String {
    tolk_env(db, data_dir, args, &[])
}

fn tolk_env(db: &TestDb, data_dir: &Path, args: &[&str], env: &[(&str, String)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tolk"))
        .args(args)
        .current_dir(data_dir)
        .env("TOLK_DATABASE_URL", &db.url)
        .env("TOLK_DATA_DIR", data_dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run tolk");
    assert!(
        out.status.success(),
        "tolk {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tolk_raw(db: &TestDb, data_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tolk"))
        .args(args)
        .current_dir(data_dir)
        .env("TOLK_DATABASE_URL", &db.url)
        .env("TOLK_DATA_DIR", data_dir)
        .output()
        .expect("run tolk")
}

/// Inserts a call row by hand (the schema exists once any `tolk cdr` command ran).
#[allow(clippy::too_many_arguments)]
fn insert(db: &TestDb, started: &str, answered: Option<&str>, ended: &str, tenant: &str, mos: f64, class: &str) {
    let answered_sql = answered.map(|a| format!("'{a}'")).unwrap_or_else(|| "NULL".into());
    db.query(&format!(
        "INSERT INTO calls (id, started_at, revision, node, tenant, direction, caller_masked, dialled, dialled_kind, \
           sip_call_id, answered_at, ended_at, duration_ms, billable_ms, disposition, retention_class, expires_at, mos) \
         VALUES (gen_random_uuid(), '{started}', 2, 'hand', '{tenant}', 'inbound', '+1555000****', '+18005550100', \
           'toll_free', 'hand-' || gen_random_uuid(), {answered_sql}, '{ended}', \
           (extract(epoch FROM '{ended}'::timestamptz - '{started}'::timestamptz) * 1000)::bigint, \
           coalesce((extract(epoch FROM '{ended}'::timestamptz - {answered_sql}::timestamptz) * 1000)::bigint, 0), \
           CASE WHEN {answered_sql} IS NULL THEN 'abandoned' ELSE 'answered' END, '{class}', \
           '{started}'::timestamptz + interval '1 day', {mos})"
    ));
}

#[test]
fn reports_match_a_hand_built_data_set() {
    let db = TestDb::new("report");
    let dir = unique_dir("report");
    tolk(&db, &dir, &["cdr", "list"]); // migrates
    db.query("SELECT tolk_ensure_partitions('2026-10-01', '2026-10-31')");
    // Day one, tenant a: three calls, two answered (60 s and 120 s); two overlap.
    insert(
        &db,
        "2026-10-01 10:00:00Z",
        Some("2026-10-01 10:00:05Z"),
        "2026-10-01 10:01:05Z",
        "a",
        4.2,
        "standard",
    );
    insert(
        &db,
        "2026-10-01 10:00:30Z",
        Some("2026-10-01 10:00:30Z"),
        "2026-10-01 10:02:30Z",
        "a",
        4.0,
        "standard",
    );
    insert(
        &db,
        "2026-10-01 11:00:00Z",
        None,
        "2026-10-01 11:00:20Z",
        "a",
        0.0,
        "standard",
    );
    // Day two, tenant b: three answered calls of 30 s at the same time.
    for _ in 0..3 {
        insert(
            &db,
            "2026-10-02 09:00:00Z",
            Some("2026-10-02 09:00:00Z"),
            "2026-10-02 09:00:30Z",
            "b",
            3.0,
            "standard",
        );
    }
    let out = tolk(
        &db,
        &dir,
        &[
            "cdr",
            "report",
            "--by",
            "day",
            "--format",
            "json",
            "--from",
            "2026-10-01",
            "--to",
            "2026-10-03",
        ],
    );
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2, "{out}");
    let r = &rows[0];
    assert_eq!(r["key"], "2026-10-01");
    assert_eq!(r["calls"], 3);
    assert_eq!(r["answered"], 2);
    assert_eq!(r["asr_percent"].as_f64(), Some(66.7));
    assert_eq!(r["billable_minutes"].as_f64(), Some(3.0));
    assert_eq!(r["avg_billable_minutes"].as_f64(), Some(1.5));
    assert_eq!(r["peak_concurrency"], 2);
    // MOS averages every call with a value: (4.2 + 4.0 + 0.0) / 3.
    assert_eq!(r["avg_mos"].as_f64(), Some(2.73));
    let r = &rows[1];
    assert_eq!(r["key"], "2026-10-02");
    assert_eq!(r["calls"], 3);
    assert_eq!(r["asr_percent"].as_f64(), Some(100.0));
    assert_eq!(r["billable_minutes"].as_f64(), Some(1.5));
    assert_eq!(r["peak_concurrency"], 3);
    // By tenant, as CSV.
    let csv = tolk(
        &db,
        &dir,
        &[
            "cdr",
            "report",
            "--by",
            "tenant",
            "--format",
            "csv",
            "--from",
            "2026-10-01",
        ],
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "key,calls,answered,asr_percent,billable_minutes,avg_billable_minutes,peak_concurrency,avg_mos,loss_percent"
    );
    assert!(lines[1].starts_with("a,3,2,66.7,3.0,1.5,2,2.73,"), "{csv}");
    assert!(lines[2].starts_with("b,3,3,100.0,1.5,0.5,3,3.0,"), "{csv}");
    // A bad grouping is a clear error, not a crash.
    let bad = tolk_raw(&db, &dir, &["cdr", "report", "--by", "caller"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("report by day, tenant"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_sweeper_honours_expiry_and_legal_hold() {
    let db = TestDb::new("sweep");
    let dir = unique_dir("sweep");
    tolk(&db, &dir, &["cdr", "list"]);
    db.query("SELECT tolk_ensure_partitions('2026-09-01', now())");
    // Expired (started 2026-09-01, kept a day): one deletable, one held, one to anonymise.
    insert(
        &db,
        "2026-09-01 10:00:00Z",
        Some("2026-09-01 10:00:01Z"),
        "2026-09-01 10:01:00Z",
        "a",
        4.0,
        "identifiable",
    );
    insert(
        &db,
        "2026-09-01 10:05:00Z",
        Some("2026-09-01 10:05:01Z"),
        "2026-09-01 10:06:00Z",
        "held",
        4.0,
        "identifiable",
    );
    db.query("UPDATE calls SET legal_hold = true WHERE tenant = 'held'");
    insert(
        &db,
        "2026-09-02 10:00:00Z",
        Some("2026-09-02 10:00:01Z"),
        "2026-09-02 10:01:00Z",
        "anon",
        4.0,
        "standard",
    );
    // Not expired.
    db.query("INSERT INTO calls (id, started_at, revision, node, direction, caller_masked, dialled, dialled_kind, sip_call_id, \
         disposition, retention_class, expires_at) VALUES (gen_random_uuid(), now(), 2, 'hand', 'inbound', '+1555000****', \
         '+18005550100', 'toll_free', 'fresh', 'answered', 'identifiable', now() + interval '30 days')");
    let out = tolk(&db, &dir, &["cdr", "sweep"]);
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["deleted"], 1, "{out}");
    assert_eq!(r["anonymised"], 1, "{out}");
    assert_eq!(
        db.query(
            "SELECT tenant, legal_hold, anonymised_at IS NOT NULL, caller_masked IS NULL FROM calls ORDER BY started_at"
        ),
        vec!["held|t|f|f", "anon|f|t|t", "|f|f|f"]
    );
    // Releasing the hold lets the next sweep take it; the emptied September partition is
    // then dropped whole.
    db.query("UPDATE calls SET legal_hold = false WHERE tenant = 'held'");
    db.query("UPDATE calls SET retention_class = 'identifiable' WHERE tenant = 'anon'");
    let out = tolk(&db, &dir, &["cdr", "sweep"]);
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(r["deleted"], 2, "{out}");
    assert_eq!(r["partitions_dropped"], 1, "{out}");
    assert_eq!(db.query("SELECT count(*) FROM calls"), vec!["1"]);
    let _ = std::fs::remove_dir_all(&dir);
}

fn echo_call(gw: &Gateway, caller: &str) -> String {
    echo_call_to(gw, "+15550100300", caller)
}

fn echo_call_to(gw: &Gateway, dialled: &str, caller: &str) -> String {
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut uac = Uac::from(gw.sip, dialled, caller);
    let invite = uac.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    uac.send(&invite);
    assert_eq!(uac.final_response(Duration::from_secs(3)).map(|(c, _)| c), Some(200));
    let ack = uac.request("ACK", "", "");
    uac.send(&ack);
    let bye = uac.request("BYE", "", "");
    uac.send(&bye);
    assert_eq!(uac.final_response(Duration::from_secs(3)).map(|(c, _)| c), Some(200));
    uac.call_id.clone()
}

fn wait_rows(db: &TestDb, sql: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.query(sql).join(",") != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(db.query(sql).join(","), want, "{sql}");
}

#[test]
fn list_contract_opt_outs_and_erasure_that_leaves_no_trace() {
    let db = TestDb::new("erase");
    let admin_env = format!("[\"{TOKEN}\"]");
    let mut gw = Gateway::start(&[
        ("TOLK_DATABASE_URL", db.url.as_str()),
        ("TOLK_ADMIN_TOKENS", admin_env.as_str()),
    ]);
    gw.keep_data = true;
    let dir = gw.data_dir.clone();
    let subject = "+14155550123";
    let other = "+442071234567";
    echo_call(&gw, subject);
    echo_call(&gw, subject);
    echo_call(&gw, other);
    wait_rows(&db, "SELECT count(*) FROM calls WHERE disposition = 'answered'", "3");

    // The list's JSON contract: one object per line with the documented fields.
    let out = tolk(&db, &dir, &["cdr", "list", "--format", "json", "--number", subject]);
    let records: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 2, "{out}");
    for field in [
        "id",
        "call_id",
        "caller",
        "dialled",
        "dialled_kind",
        "started_at",
        "answered_at",
        "ended_at",
        "duration_ms",
        "billable_ms",
        "disposition",
        "sip_status",
        "hangup_by",
        "room",
        "role",
        "language",
        "codec",
        "mos",
        "tags",
        "retention_class",
        "expires_at",
    ] {
        assert!(records[0].get(field).is_some(), "no `{field}` in {}", records[0]);
    }
    assert_eq!(records[0]["caller"], "+1415555****");
    assert!(!out.contains(subject));
    // Pagination: one at a time, the cursor carries on.
    let first = tolk(&db, &dir, &["cdr", "list", "--format", "json", "--limit", "1"]);
    let cursor = serde_json::from_str::<serde_json::Value>(first.trim()).unwrap()["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let second = tolk(
        &db,
        &dir,
        &["cdr", "list", "--format", "json", "--limit", "1", "--after", &cursor],
    );
    assert_ne!(first, second);

    // The API: a token is required; the same list comes back.
    assert!(http_get(gw.admin, "/api/v1/cdrs").is_none_or(|b| !b.contains("records")));
    let openapi = http_get(gw.admin, "/api/v1/openapi.json").unwrap();
    assert!(openapi.contains("\"openapi\""));

    // Opt-out of retention: the subject's next call is anonymised from the start.
    tolk(&db, &dir, &["optout", "add", "--number", subject, "--scope", "retain"]);
    let listed = tolk(&db, &dir, &["optout", "list", "--format", "json"]);
    assert!(listed.contains("\"retain\"") && !listed.contains(subject), "{listed}");
    std::thread::sleep(Duration::from_secs(11)); // the gateway refreshes the registry every 10 s
    let cid = echo_call(&gw, subject);
    wait_rows(
        &db,
        &format!(
            "SELECT caller_anonymous, caller_pseudonym IS NULL, consent->>'retain' FROM calls WHERE sip_call_id = '{cid}' AND disposition = 'answered'"
        ),
        "t|t|false",
    );

    // A recording of the subject's call, on disk and in the table.
    let pseudonym =
        db.query("SELECT caller_pseudonym FROM calls WHERE caller_masked = '+1415555****' LIMIT 1")[0].clone();
    let rec_dir = dir.join("recordings");
    std::fs::create_dir_all(&rec_dir).unwrap();
    std::fs::write(rec_dir.join("r1.wav"), b"RIFF....").unwrap();
    db.query(&format!(
        "INSERT INTO recordings (id, path, format, started_at, caller_pseudonym, retention_class) \
         VALUES (gen_random_uuid(), 'r1.wav', 'wav', now(), '{pseudonym}', 'standard')"
    ));

    // The request register through the API: an erasure request logged as it arrived.
    let body = format!(
        "{{\"kind\":\"erasure\",\"number\":\"{subject}\",\"received_at\":\"2026-11-20T09:00:00Z\",\"note\":\"asked by mail\"}}"
    );
    let (code, logged) = http_request(gw.admin, "POST", "/api/v1/requests", Some(TOKEN), &body);
    assert_eq!(code, 201, "{logged}");
    let logged: serde_json::Value = serde_json::from_str(&logged).unwrap();
    assert!(logged["due_at"].as_str().unwrap().starts_with("2026-12-20"), "{logged}");
    let (code, open) = http_request(gw.admin, "GET", "/api/v1/requests", Some(TOKEN), "");
    assert_eq!(code, 200, "{open}");
    assert!(
        open.contains(logged["id"].as_str().unwrap()) && !open.contains(subject),
        "{open}"
    );
    let (code, refused) = http_request(
        gw.admin,
        "POST",
        "/api/v1/corrections",
        Some(TOKEN),
        &format!("{{\"number\":\"{subject}\",\"set\":{{\"disposition\":\"answered\"}}}}"),
    );
    assert_eq!(code, 400, "{refused}");
    assert!(refused.contains("cannot be corrected"), "{refused}");

    // Subject access export, then erasure through the running gateway.
    let export = tolk(&db, &dir, &["cdr", "export", "--number", subject]);
    let export: serde_json::Value = serde_json::from_str(&export).unwrap();
    assert_eq!(export["calls"].as_array().unwrap().len(), 2);
    assert_eq!(export["recordings"].as_array().unwrap().len(), 1);
    // The export answered an access request (none was logged: registered as answered) and
    // lists the subject's requests, the open erasure among them.
    let kinds: Vec<(&str, bool)> = export["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["completed_at"].is_null()))
        .collect();
    assert!(
        kinds.contains(&("erasure", true)) && kinds.contains(&("access", false)),
        "{kinds:?}"
    );
    // The gateway holds the journal, so the CLI asks it (admin API, with the token).
    let out = tolk_env(
        &db,
        &dir,
        &["cdr", "erase", "--number", subject],
        &[
            ("TOLK_ADMIN_TOKENS", admin_env.clone()),
            ("TOLK_ADMIN_LISTEN", gw.admin.to_string()),
        ],
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["calls"], 2, "{out}");
    assert_eq!(report["recording_files"], 1, "{out}");
    assert!(!rec_dir.join("r1.wav").exists());

    // No trace: the number in clear or masked, anywhere in the database dump, the journal
    // or the recordings directory. The other caller is untouched.
    let dump = Command::new("pg_dump").arg(&db.url).output().expect("pg_dump");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let dump = String::from_utf8_lossy(&dump.stdout);
    for needle in [subject, "+1415555****", "4155550123"] {
        assert!(!dump.contains(needle), "`{needle}` is still in the database");
        for entry in walk(&dir) {
            let bytes = std::fs::read(&entry).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(needle),
                "`{needle}` is still in {}",
                entry.display()
            );
        }
    }
    assert_eq!(
        db.query("SELECT count(*) FROM calls WHERE caller_masked IS NOT NULL"),
        vec!["1"],
        "the other caller is kept"
    );
    assert_eq!(
        db.query("SELECT action, calls_affected, recordings_affected, status FROM erasure_requests"),
        vec!["delete|2|1|done"]
    );
    // The erasure answered the request logged for it: nothing is open any more.
    let (_, open) = http_request(gw.admin, "GET", "/api/v1/requests", Some(TOKEN), "");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&open).unwrap()["requests"],
        serde_json::json!([])
    );
    assert_eq!(
        db.query(&format!(
            "SELECT kind, received_at < completed_at, outcome ? 'erasure_id' FROM subject_requests WHERE id = '{}'",
            logged["id"].as_str().unwrap()
        )),
        vec!["erasure|t|t"]
    );
    gw.terminate();
    gw.wait_exit(Duration::from_secs(20));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file under `dir`, except the private PostgreSQL cluster and logs (tolk's logs hold
/// masked numbers only, and the test checks the stores, not stdout).
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_none_or(|x| x != "log") || p.to_string_lossy().contains("segment-") {
            out.push(p);
        }
    }
    out
}

/// A call row in an interpretation room with its events (offsets in seconds from `t0`).
fn insert_member(db: &TestDb, t0: &str, role: &str, ends_after: i64, events: &[(i64, &str, &str)]) {
    let id = db.query("SELECT gen_random_uuid()::text")[0].clone();
    db.query(&format!(
        "INSERT INTO calls (id, started_at, revision, node, tenant, direction, caller_masked, dialled, dialled_kind, \
           sip_call_id, answered_at, ended_at, duration_ms, billable_ms, disposition, retention_class, expires_at, room, role) \
         VALUES ('{id}', '{t0}', 2, 'hand', 'demo', 'inbound', '+1555000****', '+18005550300', 'toll_free', \
           'hand-' || gen_random_uuid(), '{t0}', '{t0}'::timestamptz + interval '{ends_after} seconds', \
           {ends_after}000, {ends_after}000, 'answered', 'standard', '{t0}'::timestamptz + interval '1 day', 'summit', '{role}')"
    ));
    for (at, kind, detail) in events {
        db.query(&format!(
            "INSERT INTO call_events (id, call_id, at, kind, detail) VALUES (gen_random_uuid(), '{id}', \
               '{t0}'::timestamptz + interval '{at} seconds', '{kind}', '{detail}')"
        ));
    }
}

#[test]
fn the_interpretation_report_gives_listener_minutes_per_channel_and_live_minutes_per_booth() {
    let db = TestDb::new("interp_report");
    let dir = unique_dir("interp-report");
    tolk(&db, &dir, &["cdr", "list"]); // migrates
    db.query("SELECT tolk_ensure_partitions('2026-10-01', '2026-10-31')");
    let t0 = "2026-10-05 09:00:00Z";
    let room = r#"{"room": "summit", "role": "listener", "muted": false}"#;
    let ch = |c: u8, language: &str| format!(r#"{{"room": "summit", "channel": {c}, "language": "{language}"}}"#);
    let (es, fr) = (ch(1, "Spanish"), ch(2, "French"));
    // A listener: 60 s on the floor, 300 s Spanish, 240 s French, left at 600 s.
    insert_member(
        &db,
        t0,
        "listener",
        620,
        &[
            (0, "joined_room", room),
            (60, "channel_chosen", &es),
            (360, "channel_chosen", &fr),
            (600, "left_room", "{}"),
        ],
    );
    // Another: Spanish from the start (same instant as the join) and hangs up at 120 s.
    insert_member(
        &db,
        t0,
        "listener",
        120,
        &[(0, "joined_room", room), (0, "channel_chosen", &es)],
    );
    // Two Spanish interpreters hand over at 900 s; the second stays live to its call's end.
    let live = r#"{"room": "summit", "booth": 1, "language": "Spanish"}"#;
    let off = r#"{"room": "summit", "booth": 1}"#;
    insert_member(
        &db,
        t0,
        "interpreter",
        1000,
        &[(0, "interpreter_live", live), (900, "interpreter_off", off)],
    );
    insert_member(&db, t0, "interpreter", 1500, &[(900, "interpreter_live", live)]);
    let out = tolk(
        &db,
        &dir,
        &[
            "cdr",
            "report",
            "--by",
            "interpretation",
            "--format",
            "json",
            "--from",
            "2026-10-01",
            "--to",
            "2026-10-31",
        ],
    );
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let got: Vec<(String, i64, String, f64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["who"].as_str().unwrap().to_string(),
                r["channel"].as_i64().unwrap(),
                r["language"].as_str().unwrap_or("(none)").to_string(),
                r["minutes"].as_f64().unwrap(),
                r["calls"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("interpreter".into(), 1, "Spanish".into(), 25.0, 2), // 900 s + 600 s
            ("listener".into(), 0, "floor".into(), 1.0, 1),       // 60 s
            ("listener".into(), 1, "Spanish".into(), 7.0, 2),     // 300 s + 120 s
            ("listener".into(), 2, "French".into(), 4.0, 1),      // 240 s
        ],
        "{out}"
    );
    assert!(rows.iter().all(|r| r["room"] == "summit"), "{out}");
}

/// A room recording the caller was heard in: listed in their subject access export, kept
/// by a legal hold on the recording itself through their erasure, erased with them without.
#[test]
fn room_recordings_are_exported_held_and_erased_with_their_members() {
    let db = TestDb::new("room_rec_hold");
    let dir = unique_dir("room_rec_hold");
    let number = "+14155550177";
    // The registry turns the number into this installation's pseudonym: read it from there.
    tolk(&db, &dir, &["optout", "add", "--number", number, "--scope", "contact"]);
    let pseudonym = db.query("SELECT pseudonym FROM opt_outs")[0].clone();
    db.query("SELECT tolk_ensure_partitions(now() - interval '1 day', now() + interval '1 day')");
    let (now, ended) = ("2026-12-07 10:00:00Z", "2026-12-07 10:05:00Z");
    db.query(&format!("SELECT tolk_ensure_partitions('{now}', '{ended}')"));
    let recording = "01a25060-0000-7000-8000-0000000000aa";
    let file = dir.join("recordings").join("room-demo-1.wav");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"RIFF....").unwrap();
    let member_of_room = |hold: bool| {
        insert(&db, now, Some(now), ended, "demo", 4.2, "standard");
        db.query(&format!(
            "UPDATE calls SET caller_pseudonym = '{pseudonym}' WHERE caller_pseudonym IS NULL"
        ));
        db.query(&format!(
            "INSERT INTO call_events (id, call_id, at, kind, detail) SELECT gen_random_uuid(), id, '{now}', \
             'room_recording', '{{\"id\": \"{recording}\", \"room\": \"demo\"}}' FROM calls WHERE caller_pseudonym = '{pseudonym}'"
        ));
        db.query(&format!(
            "INSERT INTO recordings (id, room, path, format, started_at, ended_at, seconds, retention_class, legal_hold) \
             VALUES ('{recording}', 'demo', 'room-demo-1.wav', 'wav', '{now}', '{ended}', 300, 'standard', {hold}) \
             ON CONFLICT (id) DO NOTHING"
        ));
    };
    member_of_room(false);
    let export: serde_json::Value =
        serde_json::from_str(&tolk(&db, &dir, &["cdr", "export", "--number", number])).unwrap();
    assert_eq!(export["room_recordings"][0]["id"], recording, "{export}");
    assert_eq!(export["room_recordings"][0]["room"], "demo", "{export}");

    // The call's own recording, held by its id too: its event names the file, which stays.
    let own = "01a25060-0000-7000-8000-0000000000bb";
    let own_file = dir.join("recordings").join("own-1.wav");
    std::fs::write(&own_file, b"RIFF....").unwrap();
    db.query(&format!(
        "INSERT INTO recordings (id, call_id, path, format, started_at, ended_at, seconds, caller_pseudonym, retention_class) \
         SELECT '{own}', id, 'own-1.wav', 'wav', '{now}', '{ended}', 300, '{pseudonym}', 'standard' FROM calls WHERE caller_pseudonym = '{pseudonym}'"
    ));
    db.query(&format!(
        "INSERT INTO call_events (id, call_id, at, kind, detail) SELECT gen_random_uuid(), id, '{now}', \
         'recording', '{{\"id\": \"{own}\", \"file\": \"own-1.wav\"}}' FROM calls WHERE caller_pseudonym = '{pseudonym}'"
    ));
    tolk(&db, &dir, &["cdr", "hold", "--id", own]);
    // On hold: the caller's erasure keeps the room recording (and its file).
    let held = tolk(&db, &dir, &["cdr", "hold", "--id", recording]);
    assert!(held.starts_with("1 record(s) on hold"), "{held}");
    let report: serde_json::Value =
        serde_json::from_str(tolk(&db, &dir, &["cdr", "erase", "--number", number]).trim()).unwrap();
    assert_eq!(report["calls"], 1, "{report}");
    assert_eq!(report["room_recordings"], 0, "{report}");
    assert!(file.exists());
    assert!(own_file.exists(), "a held recording keeps its file");
    assert_eq!(
        db.query(&format!("SELECT count(*) FROM recordings WHERE id = '{recording}'")),
        ["1"]
    );

    // Released, the next member's erasure takes it.
    tolk(&db, &dir, &["cdr", "hold", "--id", recording, "--release"]);
    member_of_room(false);
    let report: serde_json::Value =
        serde_json::from_str(tolk(&db, &dir, &["cdr", "erase", "--number", number]).trim()).unwrap();
    assert_eq!(report["room_recordings"], 1, "{report}");
    assert!(!file.exists(), "the room recording's file is gone");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The subject request register (`tolk cdr requests`) and corrections (`tolk cdr correct`),
/// on the database directly: due dates, overdue requests, answers by the operations, and an
/// audit that names fields and counts, never values, pseudonyms or numbers.
#[test]
fn requests_are_registered_with_due_dates_and_corrections_are_audited_without_values() {
    let db = TestDb::new("requests");
    let dir = unique_dir("requests");
    let subject = "+15550001111";
    let json_lines =
        |out: String| -> Vec<serde_json::Value> { out.lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    let add = |kind: &str, extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["cdr", "requests", "add", "--kind", kind, "--number", subject];
        args.extend_from_slice(extra);
        serde_json::from_str(tolk(&db, &dir, &args).trim()).unwrap()
    };
    // Received five weeks ago: overdue; its note is masked.
    let late = add(
        "access",
        &["--received", "2026-11-01", "--note", "called back on +15550001111"],
    );
    assert!(late["due_at"].as_str().unwrap().starts_with("2026-12-01"), "{late}");
    assert_eq!(late["overdue"], true, "{late}");
    assert_eq!(late["note"], "called back on +1555000****", "{late}");
    let fresh = add("correction", &[]);
    assert_eq!(fresh["overdue"], false, "{fresh}");
    assert!((29..=30).contains(&fresh["days_left"].as_i64().unwrap()), "{fresh}");
    let open = json_lines(tolk(&db, &dir, &["cdr", "requests", "--format", "json"]));
    assert_eq!(open.len(), 2);
    assert_eq!(open[0]["id"], late["id"], "the most urgent first");
    // Mistakes get an answer and change nothing.
    for (args, says) in [
        (
            vec!["--kind", "delete", "--number", subject],
            "access, erasure, correction, objection",
        ),
        (
            vec!["--kind", "access", "--number", subject, "--received", "last week"],
            "is not a time",
        ),
        (
            vec!["--kind", "access", "--number", "not-a-number"],
            "is not a phone number",
        ),
    ] {
        let mut all = vec!["cdr", "requests", "add"];
        all.extend(args);
        let out = tolk_raw(&db, &dir, &all);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{all:?}: {err}");
    }
    assert_eq!(db.query("SELECT count(*) FROM subject_requests"), vec!["2"]);

    // The subject's records: an opt-out made on request answers an objection (registered
    // as answered now) and tells us the pseudonym under this data_dir's key.
    tolk(&db, &dir, &["optout", "add", "--number", subject, "--scope", "contact"]);
    let pseudonym = db.query("SELECT pseudonym FROM opt_outs")[0].clone();
    for (sip, ended, hold) in [
        ("done", "now()", false),
        ("live", "NULL", false),
        ("held", "now()", true),
    ] {
        db.query(&format!(
            "INSERT INTO calls (id, started_at, revision, node, direction, caller_pseudonym, caller_masked, dialled, \
               dialled_kind, sip_call_id, ended_at, disposition, retention_class, language, tags, legal_hold) \
             VALUES (gen_random_uuid(), now(), 2, 'hand', 'inbound', '{pseudonym}', '+1555000****', '+18005550100', \
               'toll_free', '{sip}', {ended}, 'answered', 'standard', 'en', '{{\"account\":\"A-1\",\"note\":\"x\"}}', {hold})"
        ));
    }
    let out = tolk_raw(
        &db,
        &dir,
        &["cdr", "correct", "--number", subject, "--set", "disposition=failed"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be corrected"));
    let out = tolk(
        &db,
        &dir,
        &[
            "cdr",
            "correct",
            "--number",
            subject,
            "--set",
            "tags.account=A-17",
            "--set",
            "language=fr",
            "--clear",
            "tags.note",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (
            report["calls"].as_u64(),
            report["held"].as_u64(),
            report["live"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(
        report["requests"],
        serde_json::json!([fresh["id"]]),
        "it answers the open correction request"
    );
    assert_eq!(
        db.query("SELECT sip_call_id, language, tags::text FROM calls ORDER BY sip_call_id"),
        vec![
            "done|fr|{\"account\": \"A-17\"}",
            "held|en|{\"note\": \"x\", \"account\": \"A-1\"}",
            "live|en|{\"note\": \"x\", \"account\": \"A-1\"}",
        ]
    );
    assert_eq!(
        db.query("SELECT fields::text, calls_affected, held_skipped, live_skipped FROM corrections"),
        vec!["{language,tags.account,tags.note}|1|1|1"]
    );

    // The export answers the overdue access request; nothing is open then.
    let export: serde_json::Value =
        serde_json::from_str(&tolk(&db, &dir, &["cdr", "export", "--number", subject])).unwrap();
    assert_eq!(export["calls"].as_array().unwrap().len(), 3);
    assert_eq!(tolk(&db, &dir, &["cdr", "requests", "--format", "json"]), "");
    let all = json_lines(tolk(&db, &dir, &["cdr", "requests", "--all", "--format", "json"]));
    let mut kinds: Vec<&str> = all.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["access", "correction", "objection"]);
    assert!(
        all.iter()
            .all(|r| !r["completed_at"].is_null() && r["overdue"] == false)
    );

    // A request closed without an operation, with the reason.
    let refused = add("erasure", &[]);
    let id = refused["id"].as_str().unwrap();
    tolk(
        &db,
        &dir,
        &["cdr", "requests", "close", "--id", id, "--note", "identity not proved"],
    );
    assert_eq!(tolk(&db, &dir, &["cdr", "requests", "--format", "json"]), "");
    assert!(
        !tolk_raw(&db, &dir, &["cdr", "requests", "close", "--id", id, "--note", "again"])
            .status
            .success()
    );

    // The register and the audit name the subject by a hash only, and hold no value.
    let dump = Command::new("pg_dump")
        .args(["--data-only", "-t", "subject_requests", "-t", "corrections", &db.url])
        .output()
        .expect("pg_dump");
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("identity not proved"), "the dump holds the tables");
    for needle in [pseudonym.as_str(), subject, "5550001111", "A-17"] {
        assert!(!dump.contains(needle), "`{needle}` is in the register or the audit");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// What has no retention class still has a clock: the privacy audit and answered requests,
/// opt-outs (when `cdr.opt_out_keep_days` is set) and `rejected.jsonl`.
#[test]
fn the_sweep_expires_audits_opt_outs_and_rejected_rows_but_never_open_requests() {
    let db = TestDb::new("sweep_unclassed");
    let dir = unique_dir("sweep_unclassed");
    let env = [("TOLK_CDR_OPT_OUT_KEEP_DAYS", "365".to_string())];
    tolk(&db, &dir, &["cdr", "list"]);
    db.query(
        "INSERT INTO erasure_requests (id, subject_ref, requested_at, completed_at, requested_by, action, status) VALUES \
           (gen_random_uuid(), 'old', now() - interval '4 years', now() - interval '4 years', 't', 'delete', 'done'), \
           (gen_random_uuid(), 'new', now() - interval '1 day', now() - interval '1 day', 't', 'delete', 'done')",
    );
    db.query(
        "INSERT INTO corrections (id, subject_ref, at, requested_by, fields, calls_affected, held_skipped, live_skipped) \
         VALUES (gen_random_uuid(), 'old', now() - interval '4 years', 't', '{language}', 1, 0, 0)",
    );
    db.query(
        "INSERT INTO subject_requests (id, kind, subject_ref, received_at, due_at, completed_at, requested_by) VALUES \
           (gen_random_uuid(), 'access', 'answered-long-ago', now() - interval '4 years', now() - interval '4 years', \
            now() - interval '4 years', 't'), \
           (gen_random_uuid(), 'access', 'never-answered', now() - interval '4 years', now() - interval '4 years', NULL, 't')",
    );
    db.query(
        "INSERT INTO opt_outs (pseudonym, scope, source, created_at) VALUES \
           ('p-old', 'record', 't', now() - interval '2 years'), ('p-new', 'record', 't', now())",
    );
    db.query(
        "INSERT INTO room_sessions (id, room_id, started_at, ended_at) VALUES \
           (gen_random_uuid(), 'old', now() - interval '20 years', now() - interval '20 years'), \
           (gen_random_uuid(), 'recent', now() - interval '1 day', now() - interval '1 day'), \
           (gen_random_uuid(), 'live', now() - interval '20 years', NULL)",
    );
    let journal = dir.join("cdr");
    std::fs::create_dir_all(&journal).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let lines = [
        format!(
            "{{\"error\":\"x\",\"rejected_at\":{},\"entry\":{{\"id\":\"old\"}}}}",
            now - 40 * 86_400
        ),
        format!(
            "{{\"error\":\"x\",\"rejected_at\":{},\"entry\":{{\"id\":\"young\"}}}}",
            now - 86_400
        ),
        "{\"error\":\"x\",\"entry\":{\"id\":\"undated\"}}".to_string(),
    ];
    std::fs::write(journal.join("rejected.jsonl"), lines.join("\n") + "\n").unwrap();
    let out = tolk_env(&db, &dir, &["cdr", "sweep"], &env);
    let r: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (&r["audit_rows_deleted"], &r["opt_outs_expired"], &r["rejected_expired"]),
        (&serde_json::json!(3), &serde_json::json!(1), &serde_json::json!(1)),
        "{out}"
    );
    assert_eq!(db.query("SELECT subject_ref FROM erasure_requests"), vec!["new"]);
    assert_eq!(db.query("SELECT count(*) FROM corrections"), vec!["0"]);
    assert_eq!(
        db.query("SELECT subject_ref FROM subject_requests"),
        vec!["never-answered"]
    );
    assert_eq!(db.query("SELECT pseudonym FROM opt_outs"), vec!["p-new"]);
    assert_eq!(r["room_sessions_deleted"], 1, "{out}");
    assert_eq!(
        db.query("SELECT room_id FROM room_sessions ORDER BY room_id"),
        vec!["live", "recent"],
        "kept as long as the longest class (10 years by default); a running one stays"
    );
    let kept = std::fs::read_to_string(journal.join("rejected.jsonl")).unwrap();
    let kept: Vec<serde_json::Value> = kept.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0]["entry"]["id"], "young");
    assert_eq!(kept[1]["entry"]["id"], "undated");
    assert!(
        kept[1]["rejected_at"].as_u64().unwrap() >= now,
        "an undated line is dated at the first sweep"
    );
    // By default opt-outs stand until withdrawn.
    db.query("UPDATE opt_outs SET created_at = now() - interval '20 years'");
    let r: serde_json::Value = serde_json::from_str(tolk(&db, &dir, &["cdr", "sweep"]).trim()).unwrap();
    assert_eq!(r["opt_outs_expired"], 0);
    assert_eq!(db.query("SELECT count(*) FROM opt_outs"), vec!["1"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Tenants: one caller of two tenants has two pseudonyms (found again by number), a tenant's
/// own policy of a class sets its records' expiry, an opt-out may be one tenant's, and a
/// closed account's data goes `cdr.account_closed_days` after it closed.
#[test]
fn tenants_have_their_own_pseudonyms_policies_opt_outs_and_account_clock() {
    let db = TestDb::new("tenants");
    let plan = dialplan_with(&[]);
    let mut numbers = std::fs::read_to_string(plan.join("numbers.toml")).unwrap();
    numbers = numbers.replace(
        "# Anything else.",
        "[[route]]\nnumber = \"+15550100301\"\nflow = \"echo\"\ntenant = \"acme\"\n\n# Anything else.",
    );
    std::fs::write(plan.join("numbers.toml"), numbers).unwrap();
    let plan_dir = plan.display().to_string();
    let tokens = format!("[\"{TOKEN}\"]");
    let acme_policy = "[{ name = \"standard\", tenant = \"acme\", keep_days = 30, action = \"delete\" }]";
    let mut gw = Gateway::start(&[
        ("TOLK_DATABASE_URL", db.url.as_str()),
        ("TOLK_DIALPLAN_DIR", plan_dir.as_str()),
        ("TOLK_ADMIN_TOKENS", tokens.as_str()),
        ("TOLK_CDR_POLICIES", acme_policy),
    ]);
    gw.keep_data = true;
    let dir = gw.data_dir.clone();
    let subject = "+14155550199";
    echo_call_to(&gw, "+15550100300", subject); // tenant demo
    echo_call_to(&gw, "+15550100301", subject); // tenant acme
    wait_rows(&db, "SELECT count(*) FROM calls WHERE disposition = 'answered'", "2");

    let rows = db.query("SELECT tenant, caller_pseudonym FROM calls ORDER BY tenant");
    let pseudonyms: Vec<&str> = rows.iter().map(|r| r.split('|').nth(1).unwrap()).collect();
    assert_ne!(
        pseudonyms[0], pseudonyms[1],
        "one caller, two tenants, two pseudonyms: {rows:?}"
    );
    assert_eq!(
        db.query("SELECT tenant, extract(day FROM expires_at - started_at)::int FROM calls ORDER BY tenant"),
        vec!["acme|30", "demo|395"],
        "acme's own `standard`"
    );
    // By number, both are found (the writer filed both tenants).
    let env = [("TOLK_CDR_POLICIES", acme_policy.to_string())];
    let listed = tolk_env(
        &db,
        &dir,
        &["cdr", "list", "--number", subject, "--format", "json"],
        &env,
    );
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let tenants = tolk_env(&db, &dir, &["cdr", "tenants", "--format", "json"], &env);
    assert!(
        tenants.contains("\"acme\"") && tenants.contains("\"demo\""),
        "{tenants}"
    );

    // An opt-out for acme's calls only is filed under acme's pseudonym.
    let body = format!("{{\"number\":\"{subject}\",\"scope\":\"record\",\"tenant\":\"acme\"}}");
    let (code, answer) = http_request(gw.admin, "POST", "/api/v1/optouts", Some(TOKEN), &body);
    assert_eq!(code, 204, "{answer}");
    assert_eq!(
        db.query("SELECT o.tenant, c.tenant FROM opt_outs o JOIN calls c ON c.caller_pseudonym = o.pseudonym"),
        vec!["acme|acme"]
    );

    // acme's account closed two months ago: its 30 days are up, so the sweep takes its
    // calls and opt-outs, and leaves demo's.
    let closed = tolk_env(
        &db,
        &dir,
        &["cdr", "tenants", "close", "--tenant", "acme", "--at", "2026-10-01"],
        &env,
    );
    let closed: serde_json::Value = serde_json::from_str(closed.trim()).unwrap();
    assert!(
        closed["delete_after"].as_str().unwrap().starts_with("2026-10-31"),
        "{closed}"
    );
    let (code, listed) = http_request(gw.admin, "GET", "/api/v1/tenants", Some(TOKEN), "");
    assert_eq!(code, 200, "{listed}");
    assert!(listed.contains("2026-10-01"), "{listed}");
    let swept = tolk_env(&db, &dir, &["cdr", "sweep"], &env);
    let r: serde_json::Value = serde_json::from_str(swept.trim()).unwrap();
    assert_eq!(
        (&r["closed_accounts"], &r["deleted"]),
        (&serde_json::json!(1), &serde_json::json!(1)),
        "{swept}"
    );
    assert_eq!(db.query("SELECT tenant FROM calls"), vec!["demo"]);
    assert_eq!(db.query("SELECT count(*) FROM opt_outs"), vec!["0"]);
    // Reopened, the clock stops; reopening an open account is refused.
    let (code, _) = http_request(gw.admin, "POST", "/api/v1/tenants/acme/reopen", Some(TOKEN), "");
    assert_eq!(code, 204);
    assert!(
        !tolk_raw(&db, &dir, &["cdr", "tenants", "reopen", "--tenant", "acme"])
            .status
            .success()
    );
    gw.terminate();
    gw.wait_exit(Duration::from_secs(20));
    let _ = std::fs::remove_dir_all(&dir);
}
