//! Who may call: carrier trunks by source address and by digest credentials (RFC 8760),
//! `sip.allow_unknown`, per-trunk routes and limits, with SIPp from several loopback
//! addresses against a real `tolk serve`.

mod common;
use common::{Gateway, TestDb, Uac, dialplan_with, header, run_sipp, sdp_offer, status_of, unique_dir};
use std::path::Path;
use std::time::Duration;
use tolk::sip::auth::{Algorithm, answer_for};

/// A gateway whose `tolk.toml` (in its data directory) is `config`.
fn start_with(config: &str, env: &[(&str, &str)]) -> Gateway {
    let dir = unique_dir("trunks");
    std::fs::write(dir.join("tolk.toml"), config).expect("tolk.toml");
    Gateway::start_in(dir, env)
}

fn assert_calls(run: &common::SippRun, calls: u64, what: &str) {
    assert!(
        run.success && run.failed_calls == 0 && run.successful_calls == calls,
        "{what}: SIPp success={} successful={} failed={}\n{}",
        run.success,
        run.successful_calls,
        run.failed_calls,
        run.output
    );
}

const TRUNKS: &str = r#"
[sip]
allow_unknown = ["127.0.0.1/32"]

[[trunks]]
name = "carrier-a"
sources = ["127.0.0.2"]

[[trunks]]
name = "carrier-b"
sources = ["127.0.0.4/32"]
username = "carrier-b"
password = "right-password"
# SIPp 3.6 reads only the first challenge and knows only MD5.
digest_algorithms = ["MD5"]
"#;

/// A trunk that authenticates from any source: strangers are challenged, not refused.
const ROAMING: &str = r#"
# From anywhere, if it authenticates (RFC 8760: SHA-256 offered first, then MD5).
[[trunks]]
name = "roaming"
username = "roamer"
password = "roaming-password"
"#;

#[test]
fn a_trunk_source_is_answered_and_an_unknown_source_refused() {
    let db = TestDb::new("trunks");
    // A route only for carrier-a's calls: from anyone else the number is not in service.
    let dir = dialplan_with(&[]);
    let numbers = std::fs::read_to_string(dir.join("numbers.toml")).unwrap();
    let numbers = numbers.replace(
        "# Anything else.",
        "[[route]]\nnumber = \"+15550100999\"\ntrunk = \"carrier-a\"\nflow = \"echo\"\n\n# Anything else.",
    );
    std::fs::write(dir.join("numbers.toml"), numbers).unwrap();
    let plan = dir.to_string_lossy().into_owned();
    let gw = start_with(TRUNKS, &[("TOLK_DATABASE_URL", &db.url), ("TOLK_DIALPLAN_DIR", &plan)]);

    let from_trunk = run_sipp(&gw, "basic_call.xml", &["-i", "127.0.0.2", "-m", "5", "-r", "5"]);
    assert_calls(&from_trunk, 5, "carrier-a's source");
    let trunk_route = run_sipp(
        &gw,
        "basic_call.xml",
        &["-i", "127.0.0.2", "-s", "+15550100999", "-m", "2", "-r", "5"],
    );
    assert_calls(&trunk_route, 2, "carrier-a's own route");
    // The same number from a source taken without a trunk: no route, 404.
    let not_found = run_sipp(&gw, "refused.xml", &["-s", "+15550100999", "-m", "1", "-r", "5"]);
    assert!(
        !not_found.success && not_found.output.contains("404"),
        "the trunk's route must not serve other sources:\n{}",
        not_found.output
    );
    let stranger = run_sipp(&gw, "refused.xml", &["-i", "127.0.0.3", "-m", "5", "-r", "5"]);
    assert_calls(&stranger, 5, "an unknown source gets 403");
    assert_eq!(gw.metric("sip_security_events_total{reason=\"unknown_source\"}"), 5);
    let log = gw.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("tolk::security") && l.contains("127.0.0.3") && l.contains("unknown_source")),
        "a security event per refusal:\n{log}"
    );

    // The CDRs name the trunk; the loopback calls none.
    let by_trunk = db.wait_for(
        "SELECT coalesce(trunk, '-') || ' ' || count(*) FROM calls WHERE disposition <> 'in_progress' \
         GROUP BY trunk ORDER BY trunk NULLS LAST",
        "carrier-a 7\n- 1",
        Duration::from_secs(20),
    );
    assert_eq!(by_trunk, "carrier-a 7\n- 1", "log:\n{}", gw.log_text());
}

#[test]
fn digest_credentials_right_and_wrong_password() {
    let gw = start_with(TRUNKS, &[]);
    let right = run_sipp(
        &gw,
        "auth_call.xml",
        &[
            "-i",
            "127.0.0.4",
            "-au",
            "carrier-b",
            "-ap",
            "right-password",
            "-m",
            "3",
            "-r",
            "5",
        ],
    );
    assert_calls(&right, 3, "the right password");
    let wrong = run_sipp(
        &gw,
        "auth_refused.xml",
        &[
            "-i",
            "127.0.0.4",
            "-au",
            "carrier-b",
            "-ap",
            "wrong-password",
            "-m",
            "3",
            "-r",
            "5",
        ],
    );
    assert_calls(&wrong, 3, "a wrong password gets 403");
    let unknown = run_sipp(
        &gw,
        "auth_refused.xml",
        &[
            "-i",
            "127.0.0.4",
            "-au",
            "nobody",
            "-ap",
            "right-password",
            "-m",
            "2",
            "-r",
            "5",
        ],
    );
    assert_calls(&unknown, 2, "an unknown user gets the same 403");
    assert_eq!(gw.metric("sip_security_events_total{reason=\"bad_credentials\"}"), 5);
    assert_eq!(gw.metric("calls_total{outcome=\"answered\"}"), 3);
    // Every INVITE without credentials was challenged once.
    assert_eq!(gw.metric("sip_auth_challenges_total{reason=\"challenged\"}"), 8);
}

/// The ACK of a non-2xx final response (RFC 3261 §17.1.1.3): the INVITE's Via (branch),
/// Request-URI, From, Call-ID and CSeq number, the response's To.
fn ack_for(invite: &str, response: &str) -> String {
    let uri = invite
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or_default();
    let cseq = header(invite, "CSeq").unwrap_or_default();
    let number = cseq.split(' ').next().unwrap_or("1");
    format!(
        "ACK {uri} SIP/2.0\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {number} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(invite, "Via").unwrap_or_default(),
        header(invite, "From").unwrap_or_default(),
        header(response, "To").unwrap_or_default(),
        header(invite, "Call-ID").unwrap_or_default(),
    )
}

/// The nonce of a `WWW-Authenticate` value.
fn nonce_of(challenge: &str) -> String {
    challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_stranger_is_challenged_sha256_first_and_let_in_with_the_right_answer() {
    let gw = start_with(&format!("{TRUNKS}{ROAMING}"), &[]);
    let rtp = std::net::UdpSocket::bind("127.0.0.5:0").unwrap();
    let offer = sdp_offer(rtp.local_addr().unwrap(), "0", "");
    let mut uac = Uac::new_at(gw.sip, "+15550100300", "127.0.0.5");
    let invite = uac.request("INVITE", "", &offer);
    uac.send(&invite);
    let (code, challenge) = uac.final_response(Duration::from_secs(3)).expect("a challenge");
    assert_eq!(code, 401, "{challenge}");
    let offered: Vec<&str> = challenge
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))
        .collect();
    assert_eq!(offered.len(), 2, "{challenge}");
    assert!(
        offered[0].contains("algorithm=SHA-256") && offered[1].contains("algorithm=MD5"),
        "{challenge}"
    );
    assert!(
        offered[0].contains("qop=\"auth\"") && offered[0].contains("realm=\"tolk\""),
        "{challenge}"
    );
    uac.send(&ack_for(&invite, &challenge));

    let nonce = nonce_of(offered[0]);
    let uri = format!("sip:+15550100300@{}", gw.sip);
    let answer = |password: &str, nc: u32| {
        answer_for(
            Algorithm::Sha256,
            "roamer",
            "tolk",
            password,
            "INVITE",
            &uri,
            &nonce,
            nc,
            "abc123",
        )
    };
    // A wrong password: 403, the same as an unknown user.
    uac.to_tag = None;
    let wrong = uac.request(
        "INVITE",
        &format!("Authorization: {}\r\n", answer("not-the-password", 1)),
        &offer,
    );
    uac.send(&wrong);
    let (code, refused) = uac.final_response(Duration::from_secs(3)).expect("an answer");
    assert_eq!(code, 403, "{refused}");
    uac.send(&ack_for(&wrong, &refused));
    // The right one: the call is answered, as from the trunk `roaming`.
    uac.to_tag = None;
    let right = uac.request(
        "INVITE",
        &format!("Authorization: {}\r\n", answer("roaming-password", 2)),
        &offer,
    );
    uac.send(&right);
    let (code, ok) = uac.final_response(Duration::from_secs(5)).expect("an answer");
    assert_eq!(code, 200, "{ok}");
    let ack = uac.request("ACK", "", "");
    uac.send(&ack);
    // The same answer again (a replay, even in a new call) is refused.
    let mut replay = Uac::new_at(gw.sip, "+15550100300", "127.0.0.5");
    replay.cseq = 2;
    let again = replay.request(
        "INVITE",
        &format!("Authorization: {}\r\n", answer("roaming-password", 2)),
        &offer,
    );
    replay.send(&again);
    let (code, _) = replay.final_response(Duration::from_secs(3)).expect("an answer");
    assert_eq!(code, 403);
    let bye = uac.request("BYE", "", "");
    uac.send(&bye);
    let bye_ok = uac.recv(Duration::from_secs(3)).unwrap_or_default();
    assert_eq!(status_of(&bye_ok), Some(200), "{bye_ok}");
    let log = gw.log_text();
    assert!(
        log.contains("trunk=roaming"),
        "the call is logged as from the trunk:\n{log}"
    );
}

#[test]
fn a_trunk_over_its_call_limit_gets_503() {
    let config = r#"
[sip]
allow_unknown = []

[[trunks]]
name = "small"
sources = ["127.0.0.6"]
max_calls = 2
"#;
    // Calls that stay up for three seconds, so the third overlaps the first two.
    let dir = dialplan_with(&[("echo", "answer(); echo(3);")]);
    let plan = dir.to_string_lossy().into_owned();
    let gw = start_with(config, &[("TOLK_DIALPLAN_DIR", &plan)]);
    let sip = gw.sip;
    let long = |n: &'static str| {
        std::thread::spawn(move || {
            common::run_sipp_at(sip, "bye_from_gateway.xml", &["-i", "127.0.0.6", "-m", n, "-r", "10"])
        })
    };
    let first = long("2");
    std::thread::sleep(Duration::from_millis(1000));
    let third = run_sipp(&gw, "refused.xml", &["-i", "127.0.0.6", "-m", "1"]);
    assert!(
        !third.success && third.output.contains("503"),
        "the third call at once must get 503:\n{}",
        third.output
    );
    let first = first.join().unwrap();
    assert_calls(&first, 2, "the two calls within the limit");
    assert_eq!(gw.metric("sip_security_events_total{reason=\"trunk_max_calls\"}"), 1);
    // Once they ended, the trunk takes calls again.
    let again = run_sipp(&gw, "basic_call.xml", &["-i", "127.0.0.6", "-m", "1"]);
    assert_calls(&again, 1, "after the first two ended");
    // Loopback is not allowed without a trunk here.
    let lo = run_sipp(&gw, "refused.xml", &["-m", "1"]);
    assert_calls(&lo, 1, "allow_unknown = [] refuses loopback too");
}

#[test]
fn a_bad_trunk_config_names_file_line_and_key() {
    let dir = unique_dir("trunk-config");
    let path = dir.join("tolk.toml");
    std::fs::write(
        &path,
        "[[trunks]]\nname = \"a\"\nsources = [\"10.0.0.0/8\"]\n\n[[trunks]]\nname = \"b\"\nusername = \"b\"\npassword = \"tiny-pw\"\n",
    )
    .unwrap();
    let (passed, text) = common::check_config(&path);
    assert!(!passed, "{text}");
    assert!(
        text.contains(&format!("{}:8", Path::new(&path).display())) && text.contains("trunks[1].password"),
        "{text}"
    );
    assert!(!text.contains("tiny-pw"), "the password is not repeated: {text}");
}

#[test]
fn a_refused_stranger_is_banned_and_a_scanner_dropped_while_the_trunk_gets_through() {
    let config = r#"
[sip]
allow_unknown = []

[[trunks]]
name = "carrier-a"
sources = ["127.0.0.2"]
"#;
    let gw = start_with(config, &[]);
    let rtp = std::net::UdpSocket::bind("127.0.0.7:0").unwrap();
    let offer = sdp_offer(rtp.local_addr().unwrap(), "0", "");
    let mut answered = Vec::new();
    for _ in 0..15 {
        let mut uac = Uac::new_at(gw.sip, "+15550100300", "127.0.0.7");
        let invite = uac.request("INVITE", "", &offer);
        uac.send(&invite);
        answered.push(uac.final_response(Duration::from_millis(400)).map(|(c, _)| c));
    }
    // sip.ban_after = 10: ten 403s, then silence.
    assert_eq!(answered.iter().filter(|c| **c == Some(403)).count(), 10, "{answered:?}");
    assert!(answered[10..].iter().all(|c| c.is_none()), "{answered:?}");
    assert_eq!(gw.metric("sip_bans_total{why=\"refused\"}"), 1);
    assert!(gw.metric("sip_dropped_total{reason=\"banned\"}") >= 5);
    let log = gw.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("tolk::security") && l.contains("source banned") && l.contains("127.0.0.7")),
        "{log}"
    );
    // A scanner gets no answer at all, the first time already.
    let mut scanner = Uac::new_at(gw.sip, "100", "127.0.0.8");
    let options = scanner.request("OPTIONS", "User-Agent: friendly-scanner\r\n", "");
    scanner.send(&options);
    assert_eq!(scanner.recv(Duration::from_millis(800)), None);
    assert_eq!(gw.metric("sip_bans_total{why=\"scanner\"}"), 1);
    // Meanwhile the trunk's calls go through.
    let trunk = run_sipp(&gw, "basic_call.xml", &["-i", "127.0.0.2", "-m", "5", "-r", "10"]);
    assert_calls(&trunk, 5, "the trunk during the ban");
}
