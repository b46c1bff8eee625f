//! PIN guessing across calls, against a real `tolk serve` and the shipped conference flow:
//! a caller who entered five wrong PINs (one per call) is not let in on the sixth call, not
//! even with the right PIN; another caller is. Digits go by SIP INFO (application/dtmf-relay).

mod common;
use common::{Gateway, Uac, sdp_offer};
use std::time::{Duration, Instant};

const DEMO: &str = "+18005550100";

fn wait_metric(gw: &Gateway, name: &str, want: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = gw.metric(name);
        if got >= want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A call to the demo conference from `caller`, answered and acknowledged.
fn call(gw: &Gateway, caller: &str) -> (Uac, std::net::UdpSocket) {
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut uac = Uac::from(gw.sip, DEMO, caller);
    let invite = uac.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    uac.send(&invite);
    let (code, msg) = uac.final_response(Duration::from_secs(5)).expect("an answer");
    assert_eq!(code, 200, "{msg}");
    let ack = uac.request("ACK", "", "");
    uac.send(&ack);
    (uac, rtp)
}

fn key(uac: &mut Uac, digits: &str) {
    common::key_by_info(uac, digits);
}

fn hang_up(uac: &mut Uac) {
    let bye = uac.request("BYE", "", "");
    uac.send(&bye);
    let _ = uac.recv(Duration::from_secs(2));
}

/// Waits for the gateway's BYE and answers it.
fn wait_bye(uac: &Uac, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(msg) = uac.recv(Duration::from_millis(500))
            && msg.starts_with("BYE ")
        {
            uac.respond_ok(&msg);
            return true;
        }
    }
    false
}

#[test]
fn a_sixth_call_after_five_wrong_pins_is_not_let_in_with_the_right_pin() {
    let gw = Gateway::start(&[]);
    let guesser = "+15557770001";
    for n in 1..=5u64 {
        let (mut uac, _rtp) = call(&gw, guesser);
        key(&mut uac, "0000#");
        assert_eq!(
            wait_metric(&gw, "pin_attempts_total{outcome=\"wrong\"}", n),
            n,
            "wrong PIN {n} counted; log:\n{}",
            gw.log_text()
        );
        hang_up(&mut uac);
    }
    assert_eq!(gw.metric("pin_lockouts_total{scope=\"caller\"}"), 1);
    let log = gw.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("tolk::security") && l.contains("pin_lockout") && l.contains("+1555777****")),
        "a security event names the masked caller:\n{log}"
    );
    assert!(!log.contains(guesser), "the full number is never logged");

    // The sixth call, with the right PIN: told it is locked out, and hung up on.
    let (mut uac, _rtp) = call(&gw, guesser);
    key(&mut uac, "1234#");
    assert!(
        wait_bye(&uac, Duration::from_secs(20)),
        "the flow says goodbye and hangs up"
    );
    assert!(gw.metric("pin_attempts_total{outcome=\"locked_out\"}") >= 1);
    assert!(!gw.log_text().contains("joined the room"), "the guesser never got in");

    // Someone else with the right PIN is let in.
    let (mut other, _rtp2) = call(&gw, "+15557770002");
    key(&mut other, "1234#");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !gw.log_text().contains("joined the room") {
        assert!(
            Instant::now() < deadline,
            "the other caller joins; log:\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    hang_up(&mut other);
}

#[test]
fn a_flow_cannot_join_a_pin_room_without_a_pin() {
    // A flow that skips room_role and asks for the moderator's role straight away.
    let dir = common::dialplan_with(&[(
        "conference",
        "answer();\nlet why = join_conference(\"demo\", #{ role: \"moderator\" });\nlog(`join: ${why}`);\n",
    )]);
    let gw = Gateway::start(&[("TOLK_DIALPLAN_DIR", dir.to_str().unwrap())]);
    let (uac, _rtp) = call(&gw, "+15557770003");
    assert!(wait_bye(&uac, Duration::from_secs(10)), "the failed flow ends the call");
    let log = gw.log_text();
    assert!(log.contains("join_without_pin"), "{log}");
    assert!(!log.contains("joined the room"), "{log}");
}
