//! Virtual-time tests of the four transaction machines: every timer of RFC 3261 Table 4 and
//! RFC 6026 §8.11 (A-M) fires when the RFC says, and not before.

use super::*;
use crate::sip::msg::{Limits, Request, Response, SipMessage, parse_datagram};
use std::time::{Duration, Instant};

const INVITE: &str = "INVITE sip:+15550100300@tolk SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKabc\r\n\
From: <sip:a@b>;tag=f\r\nTo: <sip:+15550100300@tolk>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
const BYE: &str = "BYE sip:a@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKbye\r\n\
From: <sip:b@c>;tag=t\r\nTo: <sip:a@b>;tag=f\r\nCall-ID: c1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";

fn request(s: &str) -> Request {
    match parse_datagram(s.as_bytes(), &Limits::default()) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn response(req: &Request, code: u16) -> Response {
    crate::sip::msg::response_to(req, code, "", Some("totag"))
}

fn t() -> TimerConfig {
    TimerConfig::default()
}

/// Steps `txn` through every wake-up until `until`, returning (offset, output) for each.
fn run<T: Transaction>(txn: &mut T, start: Instant, until: Duration) -> Vec<(Duration, TxnOutput)> {
    let mut outs = Vec::new();
    while let Some(at) = txn.poll_timeout() {
        if at > start + until {
            break;
        }
        let out = txn.handle_timeout(at);
        outs.push((at - start, out));
    }
    outs
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---- INVITE server (RFC 3261 §17.2.1, RFC 6026 §7.1) ----

#[test]
fn timer_g_retransmits_non_2xx_doubling_to_t2_until_timer_h() {
    let now = crate::test_clock::epoch();
    let mut txn = InviteServerTxn::new(false, t());
    let out = txn.send_response(486, Bytes::from_static(b"486"), now);
    assert!(out.transmit.is_some());
    assert_eq!(txn.state(), ServerInviteState::Completed);
    let outs = run(&mut txn, now, Duration::from_secs(40));
    let resends: Vec<u64> = outs
        .iter()
        .filter(|(_, o)| o.retransmission)
        .map(|(d, _)| d.as_millis() as u64)
        .collect();
    // 0.5, 1.5, 3.5, 7.5, then every 4 s until H at 32 s.
    assert_eq!(&resends[..5], &[500, 1500, 3500, 7500, 11500]);
    assert!(resends.iter().all(|&r| r < 32_000));
    let (at, last) = outs.last().unwrap();
    assert_eq!(*at, ms(32_000), "timer H = 64*T1");
    assert_eq!(last.event, Some(TxnEvent::Timeout));
    assert!(txn.is_terminated());
}

#[test]
fn ack_in_completed_moves_to_confirmed_and_timer_i_ends_it() {
    let now = crate::test_clock::epoch();
    let mut txn = InviteServerTxn::new(false, t());
    txn.send_response(404, Bytes::from_static(b"404"), now);
    txn.on_ack(now + ms(100));
    assert_eq!(txn.state(), ServerInviteState::Confirmed);
    // Retransmitted ACKs and INVITEs are absorbed in Confirmed.
    assert_eq!(txn.on_retransmitted_request(), TxnOutput::none());
    let outs = run(&mut txn, now, Duration::from_secs(10));
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].0, ms(100) + t().t4, "timer I = T4");
    assert_eq!(outs[0].1.event, Some(TxnEvent::Terminated));
}

#[test]
fn reliable_transport_has_no_timer_g_and_ack_terminates_at_once() {
    let now = crate::test_clock::epoch();
    let mut txn = InviteServerTxn::new(true, t());
    txn.send_response(486, Bytes::from_static(b"486"), now);
    assert_eq!(txn.poll_timeout(), Some(now + ms(32_000)), "only timer H");
    let out = txn.on_ack(now + ms(10));
    assert_eq!(out.event, Some(TxnEvent::Terminated));
}

#[test]
fn invite_retransmission_in_proceeding_resends_the_last_provisional() {
    let now = crate::test_clock::epoch();
    let mut txn = InviteServerTxn::new(false, t());
    assert_eq!(txn.on_retransmitted_request(), TxnOutput::none());
    txn.send_response(180, Bytes::from_static(b"180"), now);
    let out = txn.on_retransmitted_request();
    assert_eq!(out.transmit, Some(Bytes::from_static(b"180")));
    assert!(out.retransmission);
}

#[test]
fn two_hundred_moves_to_accepted_and_timer_l_ends_it() {
    // RFC 6026 §7.1: Accepted absorbs INVITE retransmissions; Timer L = 64*T1.
    let now = crate::test_clock::epoch();
    let mut txn = InviteServerTxn::new(false, t());
    txn.send_response(200, Bytes::from_static(b"200"), now);
    assert_eq!(txn.state(), ServerInviteState::Accepted);
    assert_eq!(txn.on_retransmitted_request(), TxnOutput::none());
    // A 2xx retransmitted by the TU still goes out (RFC 6026 §8.5).
    assert!(
        txn.send_response(200, Bytes::from_static(b"200"), now + ms(500))
            .transmit
            .is_some()
    );
    // A late non-2xx is not sent.
    assert!(
        txn.send_response(500, Bytes::from_static(b"500"), now)
            .transmit
            .is_none()
    );
    let outs = run(&mut txn, now, Duration::from_secs(60));
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].0, ms(32_000));
    assert_eq!(outs[0].1.event, Some(TxnEvent::Terminated));
}

// ---- non-INVITE server (RFC 3261 §17.2.2) ----

#[test]
fn non_invite_server_absorbs_in_trying_and_resends_in_completed_until_timer_j() {
    let now = crate::test_clock::epoch();
    let mut txn = NonInviteServerTxn::new(false, t());
    assert_eq!(txn.on_retransmitted_request(), TxnOutput::none());
    txn.send_response(200, Bytes::from_static(b"200"), now);
    assert_eq!(txn.state(), ServerNonInviteState::Completed);
    assert_eq!(
        txn.on_retransmitted_request().transmit,
        Some(Bytes::from_static(b"200"))
    );
    let outs = run(&mut txn, now, Duration::from_secs(60));
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].0, ms(32_000), "timer J = 64*T1");
    assert!(txn.is_terminated());
}

#[test]
fn non_invite_server_over_tcp_terminates_on_the_final_response() {
    let now = crate::test_clock::epoch();
    let mut txn = NonInviteServerTxn::new(true, t());
    let out = txn.send_response(200, Bytes::from_static(b"200"), now);
    assert_eq!(out.event, Some(TxnEvent::Terminated));
    assert!(txn.is_terminated());
}

// ---- INVITE client (RFC 3261 §17.1.1, RFC 6026 §7.2) ----

#[test]
fn timer_a_doubles_without_cap_until_timer_b() {
    let now = crate::test_clock::epoch();
    let (mut txn, first) = InviteClientTxn::start(request(INVITE), false, t(), now);
    assert!(first.transmit.is_some());
    let outs = run(&mut txn, now, Duration::from_secs(40));
    let resends: Vec<u64> = outs
        .iter()
        .filter(|(_, o)| o.retransmission)
        .map(|(d, _)| d.as_millis() as u64)
        .collect();
    assert_eq!(resends, vec![500, 1500, 3500, 7500, 15500, 31500]);
    let (at, last) = outs.last().unwrap();
    assert_eq!(*at, ms(32_000), "timer B = 64*T1");
    assert_eq!(last.event, Some(TxnEvent::Timeout));
}

#[test]
fn provisional_stops_timers_a_and_b() {
    let now = crate::test_clock::epoch();
    let req = request(INVITE);
    let (mut txn, _) = InviteClientTxn::start(req.clone(), false, t(), now);
    let (pass, _) = txn.on_response(&response(&req, 180), now + ms(100));
    assert!(pass);
    assert_eq!(txn.state(), ClientInviteState::Proceeding);
    assert_eq!(txn.poll_timeout(), None);
}

#[test]
fn non_2xx_final_sends_ack_and_timer_d_ends_it() {
    let now = crate::test_clock::epoch();
    let req = request(INVITE);
    let (mut txn, _) = InviteClientTxn::start(req.clone(), false, t(), now);
    let busy = response(&req, 486);
    let (pass, out) = txn.on_response(&busy, now);
    assert!(pass);
    let ack = out.transmit.expect("ACK sent");
    let ack = match parse_datagram(&ack, &Limits::default()) {
        Ok(SipMessage::Request(a)) => a,
        other => panic!("{other:?}"),
    };
    // RFC 3261 §17.1.1.3: same branch, CSeq number, To from the response.
    assert_eq!(ack.method, crate::sip::msg::Method::Ack);
    assert_eq!(ack.core.top_via.branch.as_deref(), Some("z9hG4bKabc"));
    assert_eq!(ack.core.cseq.seq, 1);
    assert_eq!(ack.core.to_tag.as_deref(), Some("totag"));
    // A retransmitted final is answered with the ACK again, not passed up.
    let (pass, again) = txn.on_response(&busy, now + ms(500));
    assert!(!pass);
    assert!(again.retransmission);
    let outs = run(&mut txn, now, Duration::from_secs(60));
    assert_eq!(outs.last().unwrap().0, ms(32_000), "timer D >= 32 s");
    assert!(txn.is_terminated());
}

#[test]
fn two_hundred_moves_to_accepted_passes_retransmissions_and_timer_m_ends_it() {
    let now = crate::test_clock::epoch();
    let req = request(INVITE);
    let (mut txn, _) = InviteClientTxn::start(req.clone(), false, t(), now);
    let ok = response(&req, 200);
    assert!(txn.on_response(&ok, now).0);
    assert_eq!(txn.state(), ClientInviteState::Accepted);
    assert!(
        txn.on_response(&ok, now + ms(500)).0,
        "2xx retransmissions reach the TU"
    );
    let outs = run(&mut txn, now, Duration::from_secs(60));
    assert_eq!(outs.last().unwrap().0, ms(32_000), "timer M = 64*T1");
    assert!(txn.is_terminated());
}

// ---- non-INVITE client (RFC 3261 §17.1.2) ----

#[test]
fn timer_e_doubles_to_t2_and_timer_f_times_out() {
    let now = crate::test_clock::epoch();
    let (mut txn, _) = NonInviteClientTxn::start(request(BYE), false, t(), now);
    let outs = run(&mut txn, now, Duration::from_secs(40));
    let resends: Vec<u64> = outs
        .iter()
        .filter(|(_, o)| o.retransmission)
        .map(|(d, _)| d.as_millis() as u64)
        .collect();
    assert_eq!(&resends[..6], &[500, 1500, 3500, 7500, 11500, 15500]);
    let (at, last) = outs.last().unwrap();
    assert_eq!(*at, ms(32_000), "timer F = 64*T1");
    assert_eq!(last.event, Some(TxnEvent::Timeout));
}

#[test]
fn timer_e_uses_t2_in_proceeding() {
    let now = crate::test_clock::epoch();
    let req = request(BYE);
    let (mut txn, _) = NonInviteClientTxn::start(req.clone(), false, t(), now);
    assert!(txn.on_response(&response(&req, 100), now + ms(100)));
    let outs = run(&mut txn, now, Duration::from_secs(5));
    let resends: Vec<u64> = outs
        .iter()
        .filter(|(_, o)| o.retransmission)
        .map(|(d, _)| d.as_millis() as u64)
        .collect();
    // The first E (0.5 s) fires in Proceeding and re-arms with T2.
    assert_eq!(resends, vec![500, 4500]);
}

#[test]
fn final_response_starts_timer_k() {
    let now = crate::test_clock::epoch();
    let req = request(BYE);
    let (mut txn, _) = NonInviteClientTxn::start(req.clone(), false, t(), now);
    assert!(txn.on_response(&response(&req, 200), now + ms(50)));
    assert!(
        !txn.on_response(&response(&req, 200), now + ms(60)),
        "retransmitted final absorbed"
    );
    let outs = run(&mut txn, now, Duration::from_secs(10));
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].0, ms(50) + t().t4, "timer K = T4");
}

#[test]
fn reliable_client_has_no_retransmissions_and_zero_timer_k() {
    let now = crate::test_clock::epoch();
    let req = request(BYE);
    let (mut txn, _) = NonInviteClientTxn::start(req.clone(), true, t(), now);
    assert_eq!(txn.poll_timeout(), Some(now + ms(32_000)), "only timer F");
    txn.on_response(&response(&req, 200), now);
    assert_eq!(txn.poll_timeout(), Some(now));
}

// ---- keys (RFC 3261 §17.2.3) ----

#[test]
fn ack_matches_the_invite_key_and_cancel_finds_it() {
    let invite = request(INVITE);
    let ack = request(&INVITE.replace("INVITE sip", "ACK sip").replace("1 INVITE", "1 ACK"));
    let cancel = request(
        &INVITE
            .replace("INVITE sip", "CANCEL sip")
            .replace("1 INVITE", "1 CANCEL"),
    );
    assert_eq!(ServerKey::of_request(&ack), ServerKey::of_request(&invite));
    assert_ne!(ServerKey::of_request(&cancel), ServerKey::of_request(&invite));
    assert_eq!(ServerKey::cancelled_invite(&cancel), ServerKey::of_request(&invite));
}

#[test]
fn rfc2543_requests_match_on_the_fallback_key() {
    let old = INVITE.replace(";branch=z9hG4bKabc", "");
    let invite = request(&old);
    assert!(matches!(ServerKey::of_request(&invite), ServerKey::Rfc2543 { .. }));
    let retrans = request(&old);
    assert_eq!(ServerKey::of_request(&invite), ServerKey::of_request(&retrans));
    let other_cseq = request(&old.replace("CSeq: 1", "CSeq: 2"));
    assert_ne!(ServerKey::of_request(&invite), ServerKey::of_request(&other_cseq));
}
