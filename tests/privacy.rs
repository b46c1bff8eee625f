//! Privacy promises that hold outside a call (issue 16): secrets are not shown, files that
//! hold personal data are private to the gateway's user.

mod common;

use common::unique_dir;

/// `tolk check-config` prints the whole configuration: never a token or a password.
#[test]
fn check_config_shows_no_secret() {
    let dir = unique_dir("check-config-secrets");
    let path = dir.join("tolk.toml");
    std::fs::write(
        &path,
        r#"[admin]
tokens = ["admin-token-secret-0123456789"]

[database]
url = "postgres://tolk:db-pass-secret@127.0.0.1:5432/tolk?sslmode=disable&password=query-pass-secret"

[[trunks]]
name = "carrier"
sources = ["10.0.0.0/8"]
username = "carrier"
password = "trunk-pass-secret-0123456789"

[hep]
destination = "127.0.0.1:9060"
password = "hep-key-secret-0123"
"#,
    )
    .unwrap();
    let (passed, text) = common::check_config(&path);
    assert!(passed, "{text}");
    assert!(text.contains("configuration OK"), "{text}");
    for secret in [
        "admin-token-secret",
        "db-pass-secret",
        "query-pass-secret",
        "trunk-pass-secret",
        "hep-key-secret",
    ] {
        assert!(!text.contains(secret), "check-config shows `{secret}`:\n{text}");
    }
    // What is not secret is still shown, so the output stays useful.
    assert!(
        text.contains("127.0.0.1:5432/tolk") && text.contains("carrier") && text.contains("(1 set, not shown)"),
        "{text}"
    );
}

/// What a flow writes (its `log()`, its error) reaches the gateway's log with every phone
/// number masked, whatever form the script wrote it in.
#[test]
fn numbers_a_flow_logs_or_fails_with_are_masked() {
    let dir = common::dialplan_with(&[(
        "echo",
        r#"answer();
log("callback +14155550123, office (415) 555-0199, dialled " + caller().dialled);
throw "CRM lookup https://crm.example/find?n=%2B14155550177 failed";"#,
    )]);
    let gw = common::Gateway::start(&[("TOLK_DIALPLAN_DIR", dir.to_str().unwrap())]);
    // The failed flow plays the apology and hangs up; its log lines are written by then.
    call_until_hung_up(&gw, common::Uac::new(gw.sip, "+15550100300"));
    let log = gw.log_text();
    assert!(
        log.contains("callback +1415555****") && log.contains("CRM lookup https://crm.example/find?n=%2B1415555****"),
        "the flow's lines are there, masked:\n{log}"
    );
    for clear in ["4155550123", "555-0199", "4155550177", "15550100300"] {
        assert!(!log.contains(clear), "`{clear}` is in the log:\n{log}");
    }
}

/// With the opt-out registry unreadable (its database unreachable from the start), a call
/// is not recorded: the registry might name the caller, so the gateway fails closed.
#[test]
fn an_unreachable_opt_out_registry_means_not_recorded() {
    let dir = common::dialplan_with(&[(
        "echo",
        r#"answer();
try { record(#{ max_secs: 2, beep: false }); log("recorded"); } catch (e) { log(`not recorded: ${e}`); }
hangup();"#,
    )]);
    // Nothing listens on the discard port: every connection is refused at once.
    let gw = common::Gateway::start(&[
        ("TOLK_DIALPLAN_DIR", dir.to_str().unwrap()),
        ("TOLK_DATABASE_URL", "postgres://tolk@127.0.0.1:9/tolk"),
    ]);
    call_until_hung_up(&gw, common::Uac::from(gw.sip, "+15550100300", "+14155550123"));
    let log = gw.log_text();
    assert!(
        log.contains("not recorded: ") && log.contains("opted out of recording"),
        "{log}"
    );
    assert!(!log.contains("flow log: recorded"), "{log}");
    let files = std::fs::read_dir(gw.data_dir.join("recordings")).map_or(0, |d| d.count());
    assert_eq!(files, 0, "no recording file");
}

/// Places `uac`'s call (G.711), answers the gateway's BYE, and returns once the flow hung up
/// (at most 15 s).
fn call_until_hung_up(gw: &common::Gateway, mut uac: common::Uac) {
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let invite = uac.request("INVITE", "", &common::sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    uac.send(&invite);
    assert_eq!(
        uac.final_response(std::time::Duration::from_secs(5)).map(|r| r.0),
        Some(200),
        "{}",
        gw.log_text()
    );
    let ack = uac.request("ACK", "", "");
    uac.send(&ack);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if let Some(m) = uac.recv(std::time::Duration::from_millis(100))
            && m.starts_with("BYE ")
        {
            uac.respond_ok(&m);
            return;
        }
    }
}

/// A caller treated as opted out of recording (here: the registry unreadable, so every
/// caller is) is not opted back in by a flow's `consent("record")` alone; the caller's own
/// key in the same step does it, and the flow may then record.
#[test]
fn consent_undoes_an_opt_out_only_with_the_callers_key() {
    let dir = common::dialplan_with(&[(
        "echo",
        r#"answer();
try { consent("record"); log("consented without a key"); } catch (e) { log(`refused: ${e}`); }
let k = gather(#{ digits: 1, timeout: 5 });
consent("record");
log(`consented with key ${k}`);
let r = record(#{ max_secs: 1, beep: false });
log(`recorded ${r.secs}`);
hangup();"#,
    )]);
    let gw = common::Gateway::start(&[
        ("TOLK_DIALPLAN_DIR", dir.to_str().unwrap()),
        ("TOLK_DATABASE_URL", "postgres://tolk@127.0.0.1:9/tolk"),
    ]);
    let mut uac = common::Uac::from(gw.sip, "+15550100300", "+14155550123");
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let invite = uac.request("INVITE", "", &common::sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    uac.send(&invite);
    assert_eq!(
        uac.final_response(std::time::Duration::from_secs(5)).map(|r| r.0),
        Some(200)
    );
    let ack = uac.request("ACK", "", "");
    uac.send(&ack);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !gw.log_text().contains("refused: ") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    common::key_by_info(&mut uac, "1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !gw.log_text().contains("flow log: recorded") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let log = gw.log_text();
    assert!(
        log.contains("refused: ") && log.contains("only the caller can undo that"),
        "{log}"
    );
    assert!(!log.contains("consented without a key"), "{log}");
    assert!(
        log.contains("consented with key 1") && log.contains("flow log: recorded"),
        "{log}"
    );
}
