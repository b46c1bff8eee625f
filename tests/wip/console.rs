//! The web console in a real browser (Debian's headless Chromium through chromedriver):
//! signed in with `tolk console url` through the control socket, three baresip callers in
//! the demo room shown masked, a mute click that reaches the mixer (the others stop
//! hearing the muted caller's tone), the reports page drawing its charts from real CDRs,
//! and the sign-in and CSRF rules checked over raw HTTP.
//!
//! With `TOLK_CONSOLE_SHOTS=DIR` the tests save a screenshot of each page there
//! (`scripts/console-screenshots.sh` refreshes `docs/console/`).

mod common;
use common::baresip::{Phone, window, write_tone_wav};
use common::webdriver::Browser;
use common::{Gateway, TestDb, http_request, run_sipp};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN: &str = "console-test-token-0123456789abc";
const DEMO: &str = "+18005550100";
const TONES: [f64; 3] = [400.0, 650.0, 1100.0];
/// The numbers the three callers call from (never shown in full).
const CALLERS: [&str; 3] = ["+15550100201", "+15550100202", "+15550100203"];

/// `tolk console url` against the gateway's data_dir (its control socket): the link.
fn console_url(gw: &Gateway, next: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tolk"))
        .args(["console", "url", "--next", next])
        .current_dir(&gw.data_dir)
        .env("TOLK_DATA_DIR", &gw.data_dir)
        .env_remove("TOLK_API_TOKEN")
        .output()
        .expect("run tolk console url");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && stdout.starts_with("http://"),
        "tolk console url: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Saves a screenshot as `NAME.png` under `TOLK_CONSOLE_SHOTS`, when it is set.
fn keep_screenshot(browser: &Browser, name: &str) {
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG screenshot");
    if let Ok(dir) = std::env::var("TOLK_CONSOLE_SHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

fn demo_room(gw: &Gateway) -> serde_json::Value {
    let (status, body) = http_request(gw.admin, "GET", "/api/v1/rooms/demo", Some(TOKEN), "");
    if status != 200 {
        return serde_json::Value::Null;
    }
    serde_json::from_str(&body).unwrap_or_default()
}

fn power(samples: &[i16], freq: f64) -> f64 {
    tolk::media::analysis::tone_power(samples, freq, 8000)
}

#[test]
fn the_rooms_page_shows_three_masked_callers_and_a_mute_click_reaches_the_mixer() {
    let tokens = format!("[\"{TOKEN}\"]");
    let gw = Gateway::start(&[("TOLK_ADMIN_TOKENS", tokens.as_str())]);
    // The browser first: its first start can take longer than the phones' calls last.
    let browser = Browser::start();
    let phones: Vec<Phone> = (0..3)
        .map(|i| {
            let dir = gw.data_dir.join(format!("p{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let tone = dir.join("tone.wav");
            write_tone_wav(&tone, TONES[i], 40, 8000, 1);
            Phone::dial_as(&dir, &format!("sip:{DEMO}@{}", gw.sip), "PCMU", &tone, 8000, CALLERS[i])
        })
        .collect();
    for p in &phones {
        p.key_when_connected("1234#");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let members = loop {
        let members = demo_room(&gw)["members"].as_array().cloned().unwrap_or_default();
        if members.len() == 3 {
            break members;
        }
        assert!(Instant::now() < deadline, "the demo room never had 3 members:\n{}", gw.log_text());
        std::thread::sleep(Duration::from_millis(100));
    };
    // Which call is caller 0 (by its masked number: the three differ in their last digit,
    // which the mask hides, so by join order instead).
    let mut by_join: Vec<(i64, u64)> = members
        .iter()
        .map(|m| (m["joined_at"].as_i64().unwrap(), m["call"].as_u64().unwrap()))
        .collect();
    by_join.sort();
    let first_call = by_join[0].1;

    browser.open(&console_url(&gw, "rooms"));
    let rows = browser.wait_for("article.room table.members tbody tr", 3, Duration::from_secs(15));
    assert_eq!(rows.len(), 3);
    // Read in one go by the page itself (a live refresh may swap the rows between calls).
    let raw = browser.run("return [...document.querySelectorAll('article.room td.caller')].map(e => e.textContent)");
    let callers: Vec<String> = raw
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    assert_eq!(callers.len(), 3, "{raw} in {}", browser.run("return document.body.innerHTML"));
    for c in &callers {
        assert!(c.starts_with("+1555010") && c.ends_with("****"), "not masked: {c}");
    }
    let html = browser.run("return document.documentElement.outerHTML").as_str().unwrap_or("").to_string();
    for n in CALLERS {
        assert!(!html.contains(n) && !html.contains(&n[1..]), "the page shows {n}");
    }
    // The session cookie is HttpOnly and SameSite=Strict, and scripts cannot read it.
    let cookies = browser.cookies();
    let cookie = cookies
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "tolk_console"))
        .cloned()
        .unwrap_or_else(|| panic!("no session cookie: {cookies}"));
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    assert_eq!(browser.run("return document.cookie"), "");
    keep_screenshot(&browser, "rooms");

    // Everyone talks for three seconds; then the operator mutes caller 0.
    std::thread::sleep(Duration::from_secs(3));
    let mute = browser.wait_for(&format!("tr[data-call=\"{first_call}\"] button.mute"), 1, Duration::from_secs(5));
    browser.click(&mute[0]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let room = demo_room(&gw);
        let muted = room["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["call"] == first_call))
            .map(|m| m["muted"] == true);
        if muted == Some(true) {
            break;
        }
        assert!(Instant::now() < deadline, "the mute click did not reach the room: {room}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The page follows the room's events: the row now offers Unmute.
    browser.wait_for(&format!("tr[data-call=\"{first_call}\"] button.unmute"), 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    drop(browser);

    // The mixer stopped mixing caller 0: caller 1 heard its tone before, not after; caller 0
    // (muted) still hears caller 1.
    let heard: Vec<(Vec<i16>, u32)> = phones.into_iter().map(|p| p.finish()).collect();
    let (samples, rate) = &heard[1];
    let before = power(window(samples, *rate, 4.5, 1.5), TONES[0]);
    let after = power(window(samples, *rate, 0.5, 2.0), TONES[0]);
    let other = power(window(samples, *rate, 0.5, 2.0), TONES[2]);
    eprintln!("caller 1 hears caller 0: before {before:.0}, after {after:.0}; caller 2 after {other:.0}");
    assert!(before > 100.0 * after.max(1.0), "caller 0 still heard after the mute: {before:.0} -> {after:.0}");
    assert!(other > 100.0 * after.max(1.0), "caller 2 should still be heard: {other:.0}");
    let (samples, rate) = &heard[0];
    let muted_hears = power(window(samples, *rate, 0.5, 2.0), TONES[1]);
    assert!(muted_hears > 100.0 * power(window(samples, *rate, 0.5, 2.0), TONES[0]).max(1.0));
}

/// A raw HTTP/1.1 request with extra headers: (status, headers, body).
fn request(gw: &Gateway, method: &str, path: &str, headers: &str, body: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(gw.admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (status, head.to_string(), body.to_string())
}

/// The value of `name="csrf-token"` in a page.
fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn every_page_renders_the_reports_draw_charts_and_sign_in_and_csrf_hold() {
    let db = TestDb::new("console");
    let tokens = format!("[\"{TOKEN}\"]");
    let gw = Gateway::start(&[
        ("TOLK_ADMIN_TOKENS", tokens.as_str()),
        ("TOLK_DATABASE_URL", db.url.as_str()),
    ]);
    // Four echo calls and one to a number that does not exist: records to report on.
    let run = run_sipp(&gw, "basic_call.xml", &["-s", "+15550100300", "-m", "4", "-r", "4"]);
    assert!(run.success, "{}", run.output);
    // refused.xml expects 403: an unknown number gets 404, which SIPp counts as a failure.
    let refused = run_sipp(&gw, "refused.xml", &["-s", "+15550109999", "-m", "1"]);
    assert!(!refused.success && refused.output.contains("404"), "{}", refused.output);
    db.wait_for("SELECT count(*) FROM calls WHERE ended_at IS NOT NULL", "5", Duration::from_secs(20));

    // Not signed in: the sign-in page (401), and the console's API refuses.
    let (status, _, body) = request(&gw, "GET", "/console/rooms", "", "");
    assert_eq!(status, 401);
    assert!(body.contains("tolk console url"), "{body}");
    let (status, _, _) = request(&gw, "GET", "/console/api/v1/rooms", "", "");
    assert_eq!(status, 401);
    // A link signs in once.
    let link = console_url(&gw, "records");
    let path = link.trim_start_matches(&format!("http://{}", gw.admin));
    let (status, head, _) = request(&gw, "GET", path, "", "");
    assert_eq!(status, 200, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no cookie: {head}"))
        .to_string();
    assert!(head.contains("HttpOnly") && head.contains("SameSite=Strict"), "{head}");
    assert_eq!(request(&gw, "GET", path, "", "").0, 401, "a link must work only once");
    let with_cookie = format!("Cookie: {cookie}\r\n");
    let (status, _, page) = request(&gw, "GET", "/console/rooms", &with_cookie, "");
    assert_eq!(status, 200);
    let csrf = csrf_of(&page);
    assert_eq!(csrf.len(), 64, "{page}");
    // Changes need the CSRF token and must not come from another site.
    let lock = "/console/api/v1/rooms/nosuch/lock";
    assert_eq!(request(&gw, "POST", lock, &with_cookie, "").0, 403);
    let wrong = format!("{with_cookie}X-CSRF-Token: {}\r\n", "0".repeat(64));
    assert_eq!(request(&gw, "POST", lock, &wrong, "").0, 403);
    let good = format!("{with_cookie}X-CSRF-Token: {csrf}\r\n");
    let cross = format!("{good}Sec-Fetch-Site: cross-site\r\n");
    assert_eq!(request(&gw, "POST", lock, &cross, "").0, 403);
    // With the token the request reaches the API (no such room: 404).
    assert_eq!(request(&gw, "POST", lock, &good, "").0, 404);
    // A search by number is a POST; the form's own csrf field is checked.
    let form = "Content-Type: application/x-www-form-urlencoded\r\n";
    let search = format!("csrf={csrf}&number=%2B15551230000&from=&to=&dialled=&disposition=&room=&tenant=");
    let (status, _, page) = request(&gw, "POST", "/console/records", &format!("{with_cookie}{form}"), &search);
    assert_eq!(status, 200, "{page}");
    // The four echo calls and the refused one all came from SIPp's +15551230000.
    assert_eq!(page.matches("<td class=\"caller\">+1555123****</td>").count(), 5, "{page}");
    // The number comes back only in the form's own fields (the operator typed it; the
    // page is no-store), never in the table.
    let outside_form = page.replace("value=\"+15551230000\"", "");
    assert!(!outside_form.contains("15551230000"), "the number is shown outside the form: {page}");
    let (status, _, _) = request(
        &gw,
        "POST",
        "/console/records",
        &format!("{with_cookie}{form}"),
        "number=%2B15551230000",
    );
    assert_eq!(status, 403, "a form without its csrf field must be refused");
    let (status, head, csv) = request(&gw, "POST", "/console/records.csv", &format!("{with_cookie}{form}"), &search);
    assert_eq!(status, 200);
    assert!(head.contains("text/csv"), "{head}");
    assert_eq!(csv.lines().count(), 6, "a header and five records: {csv}");
    // An admin token works as a bearer header.
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    assert_eq!(request(&gw, "GET", "/console/reports", &bearer, "").0, 200);

    // In the browser: every page, a record's timeline, and the reports' charts.
    let browser = Browser::start();
    browser.open(&console_url(&gw, "reports"));
    let bars = browser.wait_for("svg.chart rect.bar", 2, Duration::from_secs(10));
    assert!(!bars.is_empty());
    let charts = browser.find_all("svg.chart[data-chart]");
    assert_eq!(charts.len(), 3, "calls, billable minutes and ASR by day");
    let table = browser.text(&browser.find_all("table.report")[0]);
    assert!(table.contains('5') && table.contains("80"), "5 calls, ASR 80%: {table}");
    keep_screenshot(&browser, "reports");
    browser.open(&format!("http://{}/console/reports?by=number", gw.admin));
    let bars = browser.wait_for("svg.chart[data-chart=\"Calls by number\"] rect.bar", 2, Duration::from_secs(10));
    assert_eq!(bars.len(), 2, "two dialled numbers");

    browser.open(&format!("http://{}/console/", gw.admin));
    let cards = browser.wait_for(".card", 8, Duration::from_secs(10));
    let text: Vec<String> = cards.iter().map(|c| browser.text(c)).collect();
    assert!(text.iter().any(|t| t.contains("ASR, last hour") && t.contains("80.0")), "{text:?}");
    assert!(browser.find_all("svg.chart").len() >= 4);
    keep_screenshot(&browser, "dashboard");

    browser.open(&format!("http://{}/console/records", gw.admin));
    let links = browser.wait_for("table.records tbody tr td a", 5, Duration::from_secs(10));
    keep_screenshot(&browser, "records");
    browser.click(&links[0]);
    let events = browser.wait_for("ol.timeline li", 2, Duration::from_secs(10));
    let first = browser.text(&events[0]);
    assert!(!first.is_empty());
    keep_screenshot(&browser, "record");

    browser.open(&format!("http://{}/console/calls", gw.admin));
    browser.wait_for("section#calls", 1, Duration::from_secs(10));
    assert!(browser.run("return document.body.innerText").as_str().unwrap_or("").contains("No call in progress"));
    keep_screenshot(&browser, "calls");

    browser.open(&format!("http://{}/console/privacy", gw.admin));
    browser.wait_for("section.forms form", 3, Duration::from_secs(10));
    keep_screenshot(&browser, "privacy");
}
