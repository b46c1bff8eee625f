//! SIPp against a real `tolk serve` on loopback: the scenarios in `sipp-scenarios/`.

mod common;
use common::{Gateway, dialplan_with, run_sipp};

fn assert_all_passed(run: &common::SippRun, calls: u64) {
    assert!(
        run.success && run.failed_calls == 0 && run.successful_calls == calls,
        "SIPp: success={} successful={} failed={}\n{}",
        run.success,
        run.successful_calls,
        run.failed_calls,
        run.output
    );
}

#[test]
fn two_hundred_calls_at_20_per_second_complete_over_udp() {
    let gw = Gateway::start(&[]);
    let run = run_sipp(&gw, "basic_call.xml", &["-m", "200", "-r", "20", "-l", "100"]);
    assert_all_passed(&run, 200);
    let metrics = gw.metrics();
    assert!(
        metrics.contains("sip_requests_received_total{method=\"INVITE\"} 200"),
        "{metrics}"
    );
    assert!(metrics.contains("calls_total{outcome=\"answered\"} 200"), "{metrics}");
}

#[test]
fn basic_calls_complete_over_tcp() {
    let gw = Gateway::start(&[]);
    let run = run_sipp(&gw, "basic_call.xml", &["-t", "t1", "-m", "20", "-r", "10"]);
    assert_all_passed(&run, 20);
}

#[test]
fn cancel_while_ringing_gets_200_and_487() {
    // An echo flow that rings three seconds before answering.
    let dir = dialplan_with(&[("echo", "ring(3); answer(); echo(3600);")]);
    let gw = Gateway::start(&[("TOLK_DIALPLAN_DIR", dir.to_str().unwrap())]);
    let run = run_sipp(&gw, "cancel.xml", &["-m", "10", "-r", "5"]);
    assert_all_passed(&run, 10);
    assert!(gw.metrics().contains("sip_responses_sent_total{code=\"487\"} 10"));
}

#[test]
fn options_keepalive_is_answered_200() {
    let gw = Gateway::start(&[]);
    let run = run_sipp(&gw, "options.xml", &["-m", "10", "-r", "10"]);
    assert_all_passed(&run, 10);
}

#[test]
fn hold_and_resume_keep_the_dialog_over_udp_and_tcp() {
    let gw = Gateway::start(&[]);
    let run = run_sipp(&gw, "hold_resume.xml", &["-m", "10", "-r", "5"]);
    assert_all_passed(&run, 10);
    let run = run_sipp(&gw, "hold_resume.xml", &["-t", "t1", "-m", "5", "-r", "5"]);
    assert_all_passed(&run, 5);
    // Every BYE found its dialog: no 481 was sent.
    assert!(!gw.metrics().contains("code=\"481\""));
}

#[test]
fn gateway_sends_bye_when_rtp_stops() {
    let gw = Gateway::start(&[("TOLK_RTP_TIMEOUT_SECS", "1")]);
    let run = run_sipp(&gw, "bye_from_gateway.xml", &["-m", "5", "-r", "5"]);
    assert_all_passed(&run, 5);
    assert!(gw.metrics().contains("sip_requests_sent_total{method=\"BYE\"} 5"));
}

#[test]
fn all_twelve_rfc4733_digits_from_sipp_captures_are_received_in_order() {
    // Debian's sip-tester ships one capture per key; the scenario plays 1, 0, 2..9, *, #.
    // Digits are logged at debug level only (they may be a PIN).
    let gw = Gateway::start(&[("TOLK_LOG_LEVEL", "info,tolk::call::controller=debug")]);
    let run = run_sipp(&gw, "dtmf_rfc4733.xml", &["-m", "1"]);
    assert_all_passed(&run, 1);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = gw.log_text();
    let digits: String = log
        .lines()
        .filter(|l| l.contains(" digit ") && l.contains("rfc4733"))
        .filter_map(|l| l.split("digit=").nth(1)?.chars().next())
        .collect();
    assert_eq!(digits, "1023456789*#", "log:\n{log}");
    assert!(gw.metrics().contains("dtmf_digits_total{source=\"rfc4733\"} 12"));
}
