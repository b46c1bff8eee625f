//! The UAS core against a scripted UAC, in virtual time (quinn-proto's `Pair` idea): every
//! message is really printed and parsed, the clock only moves when the test says so.

use super::*;
use crate::sip::msg::{Limits, SipMessage, parse_datagram};
use crate::sip::sdp::{Codec, Direction, LocalMedia};
use std::time::{Duration, Instant};

const OFFER: &str = "v=0\r\no=uac 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

fn peer() -> Peer {
    Peer {
        transport: TransportKind::Udp,
        remote: "192.0.2.1:5060".parse().unwrap(),
        local: "198.51.100.1:5060".parse().unwrap(),
        connection: None,
    }
}

fn local_media() -> LocalMedia {
    LocalMedia {
        rtp: "198.51.100.1:20000".parse().unwrap(),
        codecs: vec![Codec::Pcmu, Codec::Pcma],
        session_id: 7,
        session_version: 1,
        srtp: None,
    }
}

/// One caller's view of a dialog.
struct Uac {
    call_id: String,
    from_tag: String,
    cseq: u32,
    to_tag: Option<String>,
    last_branch: String,
}

impl Uac {
    fn new() -> Uac {
        Uac {
            call_id: format!("{}@uac", fastrand::u64(..)),
            from_tag: "uactag".into(),
            cseq: 0,
            to_tag: None,
            last_branch: String::new(),
        }
    }

    /// A new request (new branch; CSeq grows except for ACK and CANCEL).
    fn request(&mut self, method: &str, headers: &str, body: &str) -> String {
        if method != "ACK" && method != "CANCEL" {
            self.cseq += 1;
            self.last_branch = format!("z9hG4bK{}", fastrand::u64(..));
        }
        self.request_on_branch(method, headers, body, &self.last_branch.clone())
    }

    fn request_on_branch(&self, method: &str, headers: &str, body: &str, branch: &str) -> String {
        let to_tag = self.to_tag.as_ref().map(|t| format!(";tag={t}")).unwrap_or_default();
        let ctype = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} sip:+15550100300@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n\
From: <sip:+15551234567@192.0.2.1>;tag={}\r\nTo: <sip:+15550100300@198.51.100.1>{to_tag}\r\n\
Call-ID: {}\r\nCSeq: {} {method}\r\nContact: <sip:uac@192.0.2.1:5060>\r\nMax-Forwards: 70\r\n{headers}{ctype}\
Content-Length: {}\r\n\r\n{body}",
            self.from_tag,
            self.call_id,
            self.cseq,
            body.len()
        )
    }
}

struct Harness {
    core: UasCore,
    start: Instant,
    now: Instant,
}

#[derive(Debug, Clone)]
struct Sent {
    at: Duration,
    msg: SipMessage,
    text: String,
}

impl Sent {
    fn code(&self) -> Option<u16> {
        match &self.msg {
            SipMessage::Response(r) => Some(r.code),
            SipMessage::Request(_) => None,
        }
    }

    fn method(&self) -> Option<String> {
        match &self.msg {
            SipMessage::Request(r) => Some(r.method.to_string()),
            SipMessage::Response(_) => None,
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        self.text.split("\r\n\r\n").next()?.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        })
    }

    fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
    }
}

impl Harness {
    fn new() -> Harness {
        Self::with(UasConfig::default())
    }

    fn with(cfg: UasConfig) -> Harness {
        let start = crate::test_clock::epoch();
        Harness {
            core: UasCore::new(cfg),
            start,
            now: start,
        }
    }

    fn deliver(&mut self, text: &str) {
        match parse_datagram(text.as_bytes(), &Limits::default()) {
            Ok(SipMessage::Request(mut r)) => {
                r.stamp_received(peer().remote);
                self.core.handle_request(self.now, r, peer())
            }
            Ok(SipMessage::Response(r)) => self.core.handle_response(self.now, r, peer()),
            Err(e) => panic!("test message does not parse: {e}\n{text}"),
        }
    }

    fn sent(&mut self) -> Vec<Sent> {
        let mut out = Vec::new();
        while let Some(t) = self.core.poll_transmit() {
            let text = String::from_utf8_lossy(&t.bytes).into_owned();
            let msg =
                parse_datagram(&t.bytes, &Limits::default()).unwrap_or_else(|e| panic!("we sent junk: {e}\n{text}"));
            out.push(Sent {
                at: self.now - self.start,
                msg,
                text,
            });
        }
        out
    }

    fn events(&mut self) -> Vec<UasEvent> {
        std::iter::from_fn(|| self.core.poll_event()).collect()
    }

    /// The peer answers a request we sent.
    fn answer(&mut self, request: &Sent, code: u16) {
        let SipMessage::Request(req) = &request.msg else {
            panic!("not a request: {}", request.text)
        };
        let resp = crate::sip::msg::response_to(req, code, "", None).to_bytes();
        self.deliver(std::str::from_utf8(&resp).expect("we print UTF-8"));
    }

    /// Runs every timer up to `t` after the start, collecting what is sent.
    fn run_until(&mut self, t: Duration) -> Vec<Sent> {
        let end = self.start + t;
        let mut out = Vec::new();
        while let Some(at) = self.core.poll_timeout() {
            if at > end {
                break;
            }
            self.now = self.now.max(at);
            self.core.handle_timeout(self.now);
            out.extend(self.sent());
        }
        self.now = self.now.max(end);
        out
    }

    fn incoming(&mut self) -> CallRef {
        for e in self.events() {
            if let UasEvent::Incoming(inc) = e {
                return inc.call;
            }
        }
        panic!("no incoming call");
    }

    /// INVITE, answer, ACK: a confirmed call.
    fn established(&mut self, uac: &mut Uac, invite_headers: &str) -> CallRef {
        let invite = uac.request("INVITE", invite_headers, OFFER);
        self.deliver(&invite);
        let call = self.incoming();
        self.core.answer(call, local_media(), self.now).unwrap();
        let ok = self.sent().into_iter().find(|s| s.code() == Some(200)).expect("200");
        let SipMessage::Response(r) = &ok.msg else {
            unreachable!()
        };
        uac.to_tag = r.core.to_tag.clone();
        let ack = uac.request("ACK", "", "");
        self.deliver(&ack);
        assert_eq!(self.core.call_state(call), Some(CallState::Confirmed));
        call
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn invite_gets_100_at_once_and_200_with_sdp_and_tag_on_answer() {
    let mut h = Harness::new();
    let mut uac = Uac::new();
    h.deliver(&uac.request("INVITE", "", OFFER));
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].code(), Some(100));
    let call = h.incoming();
    let media = h.core.answer(call, local_media(), h.now).unwrap().unwrap();
    assert_eq!(media.codec, Codec::Pcmu);
    let sent = h.sent();
    let ok = &sent[0];
    assert_eq!(ok.code(), Some(200));
    assert!(ok.header("To").unwrap().contains(";tag="));
    assert!(ok.header("Contact").unwrap().contains("198.51.100.1:5060"));
    assert_eq!(ok.header("Content-Type").as_deref(), Some("application/sdp"));
    assert!(ok.body().contains("m=audio 20000 RTP/AVP 0 101"));
    // The Via came back stamped (RFC 3261 §18.2.1).
    assert!(
        ok.header("Via").unwrap().contains("received=192.0.2.1")
            || ok.header("Via").unwrap().contains("192.0.2.1:5060")
    );
}

#[test]
fn ended_calls_leave_no_timers_behind() {
    // Each call has a 4-hour longest-life deadline (sip.max_call_secs) and, with a session
    // timer, a refresh deadline: once the calls and their transactions are gone, nothing of
    // them may wait in the timer queue (it once held every deadline until it passed).
    let mut h = Harness::new();
    for i in 0..40 {
        let mut uac = Uac::new();
        let headers = if i % 2 == 0 {
            "Supported: timer\r\nSession-Expires: 1800\r\n"
        } else {
            ""
        };
        h.established(&mut uac, headers);
        h.deliver(&uac.request("BYE", "", ""));
        h.sent();
        h.events();
    }
    let busy = h.core.stats();
    assert!(
        busy.timers <= busy.server_transactions + busy.client_transactions + busy.calls,
        "{busy:?}"
    );
    // Past Timer J and the INVITE transactions' ends (64*T1 = 32 s).
    h.run_until(secs(40));
    let idle = h.core.stats();
    assert_eq!(idle, core::CoreStats::default(), "nothing left: {idle:?}");
    assert_eq!(h.core.poll_timeout(), None);
}

#[test]
fn bye_from_caller_is_answered_and_ends_the_call() {
    let mut h = Harness::new();
    let mut uac = Uac::new();
    let call = h.established(&mut uac, "");
    h.deliver(&uac.request("BYE", "", ""));
    assert_eq!(h.sent().last().and_then(Sent::code), Some(200));
    assert!(
        h.events()
            .iter()
            .any(|e| matches!(e, UasEvent::Ended { call: c, reason: EndReason::RemoteBye } if *c == call))
    );
    // RFC 3261 §12.2.2: a request for a dialog that no longer exists is 481.
    h.deliver(&uac.request("BYE", "", ""));
    assert_eq!(h.sent().last().and_then(Sent::code), Some(481));
}

#[test]
fn hangup_sends_bye_within_the_dialog() {
    let mut h = Harness::new();
    let mut uac = Uac::new();
    let call = h.established(&mut uac, "");
    h.core.hangup(call, h.now).unwrap();
    let bye = h
        .sent()
        .into_iter()
        .find(|s| s.method().as_deref() == Some("BYE"))
        .expect("BYE");
    // RFC 3261 §12.2.1.1: Request-URI is the remote target, tags swapped.
    let SipMessage::Request(r) = &bye.msg else {
        unreachable!()
    };
    assert_eq!(r.uri.raw(), "sip:uac@192.0.2.1:5060");
    assert_eq!(r.core.to_tag.as_deref(), Some("uactag"));
    assert_eq!(r.core.from_tag, uac.to_tag);
    assert!(h.events().iter().any(|e| matches!(
        e,
        UasEvent::Ended {
            reason: EndReason::LocalBye,
            ..
        }
    )));
    // The BYE is retransmitted on Timer E until answered.
    let resent = h.run_until(ms(600));
    assert!(resent.iter().any(|s| s.method().as_deref() == Some("BYE")));
}

#[test]
fn two_hundred_is_retransmitted_until_ack_and_the_call_ends_after_64_t1() {
    // RFC 3261 §13.3.1.4
    let mut h = Harness::new();
    let mut uac = Uac::new();
    h.deliver(&uac.request("INVITE", "", OFFER));
    let call = h.incoming();
    h.core.answer(call, local_media(), h.now).unwrap();
    h.sent();
    let sent = h.run_until(secs(40));
    let retx: Vec<u64> = sent
        .iter()
        .filter(|s| s.code() == Some(200))
        .map(|s| s.at.as_millis() as u64)
        .collect();
    assert_eq!(&retx[..5], &[500, 1500, 3500, 7500, 11500], "T1 doubling to T2");
    assert!(retx.iter().all(|&t| t < 32_000));
    let bye = sent
        .iter()
        .find(|s| s.method().as_deref() == Some("BYE"))
        .expect("BYE after 64*T1");
    assert_eq!(bye.at, secs(32));
    assert!(h.events().iter().any(|e| matches!(
        e,
        UasEvent::Ended {
            reason: EndReason::NoAck,
            ..
        }
    )));
}

#[test]
fn ack_stops_the_2xx_retransmissions() {
    let mut h = Harness::new();
    let mut uac = Uac::new();
    h.established(&mut uac, "");
    let sent = h.run_until(secs(40));
    assert!(sent.iter().all(|s| s.code() != Some(200)), "{sent:?}");
}

#[test]
fn hangup_before_ack_waits_for_the_ack_then_sends_bye() {
    // RFC 3261 §15: no BYE on a dialog before the ACK of our 2xx.
    let mut h = Harness::new();
    let mut uac = Uac::new();
    h.deliver(&uac.request("INVITE", "", OFFER));
    let call = h.incoming();
    h.core.answer(call, local_media(), h.now).unwrap();
    let ok = h.sent().into_iter().find(|s| s.code() == Some(200)).unwrap();
    let SipMessage::Response(r) = &ok.msg else {
        unreachable!()
    };
    uac.to_tag = r.core.to_tag.clone();
    h.core.hangup(call, h.now).unwrap();
    assert!(h.sent().iter().all(|s| s.method().as_deref() != Some("BYE")));
    h.deliver(&uac.request("ACK", "", ""));
    assert!(h.sent().iter().any(|s| s.method().as_deref() == Some("BYE")));
}

#[test]
fn cancel_while_ringing_gets_200_and_the_invite_487() {
    // RFC 3261 §9.2
    let mut h = Harness::new();
    let mut uac = Uac::new();
    let invite = uac.request("INVITE", "", OFFER);
    h.deliver(&invite);
    let call = h.incoming();
    h.core.ring(call, h.now).unwrap();
    assert_eq!(h.sent().last().and_then(Sent::code), Some(180));
    let branch = uac.last_branch.clone();
    h.deliver(&uac.request_on_branch("CANCEL", "", "", &branch));
    let sent = h.sent();
    let codes: Vec<(u16, String)> = sent
        .iter()
        .map(|s| (s.code().unwrap(), s.header("CSeq").unwrap()))
        .collect();
    assert_eq!(codes, vec![(200, "1 CANCEL".into()), (487, "1 INVITE".into())]);
    // The CANCEL's 200 carries the same To tag as the INVITE's responses.
    assert_eq!(sent[0].header("To"), sent[1].header("To"));
    assert!(h.events().iter().any(|e| matches!(
        e,
        UasEvent::Ended {
            reason: EndReason::Cancelled,
            ..
        }
    )));
    // 487 retransmitted on Timer G until the ACK, then silence.
    let resent = h.run_until(ms(600));
    assert!(resent.iter().any(|s| s.code() == Some(487)));
    let SipMessage::Response(r) = &sent[1].msg else {
        unreachable!()
    };
    uac.to_tag = r.core.to_tag.clone();
    h.deliver(&uac.request_on_branch("ACK", "", "", &branch));
    assert!(h.run_until(secs(60)).is_empty());
}

#[test]
fn cancel_after_answer_changes_nothing() {
    // The CANCEL race: the 200 crossed it; the CANCEL gets 200, the call stays (§9.2).
    let mut h = Harness::new();
    let mut uac = Uac::new();
    let invite = uac.request("INVITE", "", OFFER);
    h.deliver(&invite);
    let call = h.incoming();
    h.core.answer(call, local_media(), h.now).unwrap();
    h.sent();
    let branch = uac.last_branch.clone();
    h.deliver(&uac.request_on_branch("CANCEL", "", "", &branch));
    let codes: Vec<u16> = h.sent().iter().filter_map(Sent::code).collect();
    assert_eq!(codes, vec![200]);
    assert_eq!(h.core.call_state(call), Some(CallState::Accepted));
}

#[test]
fn cancel_matching_nothing_is_481() {
    let mut h = Harness::new();
    let mut uac = Uac::new();
    uac.cseq = 1;
    h.deliver(&uac.request_on_branch("CANCEL", "", "", "z9hG4bKnothing"));
    assert_eq!(h.sent().last().and_then(Sent::code), Some(481));
}

#[test]
fn retransmitted_invite_gets_the_last_provisional_and_no_second_call() {
    let mut h = Harness::new();
    let mut uac = Uac::new();
    let invite = uac.request("INVITE", "", OFFER);
    h.deliver(&invite);
    let call = h.incoming();
    h.core.ring(call, h.now).unwrap();
    h.sent();
    h.deliver(&invite);
    assert_eq!(h.sent().iter().filter_map(Sent::code).collect::<Vec<_>>(), vec![180]);
    assert!(h.events().is_empty());
}

#[test]
fn merged_request_is_482() {
    // RFC 3261 §8.2.2.2: same From tag, Call-ID and CSeq on another branch.
    let mut h = Harness::new();
    let mut uac = Uac::new();
    h.deliver(&uac.request("INVITE", "", OFFER));
    h.sent();
    h.deliver(&uac.request_on_branch("INVITE", "", OFFER, "z9hG4bKotherpath"));
    assert_eq!(h.sent().last().and_then(Sent::code), Some(482));
}

#[test]
fn reinvite_sendonly_is_answered_recvonly_and_reported() {
    let mut h = Harness::new();
    let mut uac = Uac::new();
    let call = h.established(&mut uac, "");
    h.events();
    let hold = OFFER.replace("o=uac 1 1", "o=uac 1 2") + "a=sendonly\r\n";
    h.deliver(&uac.request("INVITE", "", &hold));
    let ok = h.sent().into_iter().find(|s| s.code() == Some(200)).expect("200");
    assert!(ok.body().contains("a=recvonly"), "{}", ok.body());
    // Our session version grew because our description changed (RFC 3264 §8).
    assert!(ok.body().contains("o=tolk 7 2 "), "{}", ok.body());
    let media = h
        .events()
        .into_iter()
        .find_map(|e| match e {
            UasEvent::MediaChanged { call: c, media } if c == call => Some(media),
            _ => None,
        })
        .expect("media change");
    assert_eq!(media.direction, Direction::RecvOnly);
    assert!(media.on_hold());
    h.deliver(&uac.request("ACK", "", ""));
    assert!(h.run_until(secs(5)).is_empty(), "2xx to the re-INVITE acknowledged");
}

#[test]
fn second_reinvite_before_the_ack_is_491() {
    // RFC 3261 §14.2
    let mut h = Harness::new();
    let mut uac = Uac::new();
    h.established(&mut uac, "");
    h.deliver(&uac.request("INVITE", "", OFFER));
    h.sent();
    h.deliver(&uac.request("INVITE", "", OFFER));
    assert_eq!(h.sent().last().and_then(Sent::code), Some(491));
}

#[test]
fn unacceptable_reinvite_offer_is_488_and_the_call_stays() {
    let mut h = Harness::new();
    let mut uac = Uac::new();
    let call = h.established(&mut uac, "");
    let g729 = OFFER
        .replace("RTP/AVP 0 101", "RTP/AVP 18")
        .replace("a=rtpmap:0 PCMU/8000\r\n", "");
    h.deliver(&uac.request("INVITE", "", &g729));
    assert_eq!(h.sent().last().and_then(Sent::code), Some(488));
    assert_eq!(h.core.call_state(call), Some(CallState::Confirmed));
}

#[test]
fn invite_without_sdp_gets_our_offer_and_the_ack_brings_the_answer() {
    // RFC 3261 §13.2.1, RFC 3264 §5
    let mut h = Harness::new();
    let mut uac = Uac::new();
    h.deliver(&uac.request("INVITE", "", ""));
    let call = h.incoming();
    assert_eq!(h.core.answer(call, local_media(), h.now).unwrap(), None);
    let ok = h.sent().into_iter().find(|s| s.code() == Some(200)).unwrap();
    assert!(ok.body().contains("m=audio 20000 RTP/AVP 0 8 101"), "{}", ok.body());
    let SipMessage::Response(r) = &ok.msg else {
        unreachable!()
    };
    uac.to_tag = r.core.to_tag.clone();
    h.deliver(&uac.request("ACK", "", OFFER));
    let media = h.events().into_iter().find_map(|e| match e {
        UasEvent::MediaChanged { media, .. } => Some(media),
        _ => None,
    });
    assert_eq!(media.map(|m| m.codec), Some(Codec::Pcmu));
}

#[test]
fn session_expires_below_min_se_is_422() {
    // RFC 4028 §8.2
    let mut h = Harness::new();
    let mut uac = Uac::new();
    h.deliver(&uac.request("INVITE", "Supported: timer\r\nSession-Expires: 60\r\n", OFFER));
    let last = h.sent().pop().unwrap();
    assert_eq!(last.code(), Some(422));
    assert_eq!(last.header("Min-SE").as_deref(), Some("90"));
}

#[test]
fn session_not_refreshed_by_the_uac_ends_with_bye_before_expiry() {
    // RFC 4028 §10: BYE at expires - min(32, SE/3).
    let mut h = Harness::new();
    let mut uac = Uac::new();
    let invite = uac.request(
        "INVITE",
        "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n",
        OFFER,
    );
    h.deliver(&invite);
    let call = h.incoming();
    h.core.answer(call, local_media(), h.now).unwrap();
    let ok = h.sent().into_iter().find(|s| s.code() == Some(200)).unwrap();
    assert_eq!(ok.header("Session-Expires").as_deref(), Some("90;refresher=uac"));
    assert_eq!(ok.header("Require").as_deref(), Some("timer"));
    let SipMessage::Response(r) = &ok.msg else {
        unreachable!()
    };
    uac.to_tag = r.core.to_tag.clone();
    h.deliver(&uac.request("ACK", "", ""));
    let sent = h.run_until(secs(100));
    let bye = sent.iter().find(|s| s.method().as_deref() == Some("BYE")).expect("BYE");
    assert_eq!(bye.at, secs(60));
    assert!(h.events().iter().any(|e| matches!(
        e,
        UasEvent::Ended {
            reason: EndReason::SessionExpired,
            ..
        }
    )));
}

#[test]
fn update_refreshes_the_session() {
    let mut h = Harness::new();
    let mut uac = Uac::new();
    h.established(&mut uac, "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n");
    assert!(h.run_until(secs(50)).is_empty());
    h.deliver(&uac.request(
        "UPDATE",
        "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n",
        "",
    ));
    let ok = h.sent().pop().unwrap();
    assert_eq!(ok.code(), Some(200));
    assert_eq!(ok.header("Session-Expires").as_deref(), Some("90;refresher=uac"));
    // Not at 60 s any more, but 60 s after the refresh.
    let sent = h.run_until(secs(200));
    let bye = sent.iter().find(|s| s.method().as_deref() == Some("BYE")).expect("BYE");
    assert_eq!(bye.at, secs(110));
}

#[test]
fn without_timer_support_we_refresh_with_update_at_half_the_interval() {
    // RFC 4028 §9: the UAC did not say Supported: timer, so the UAS refreshes.
    let mut h = Harness::new();
    let mut uac = Uac::new();
    h.established(
        &mut uac,
        "Session-Expires: 120\r\nAllow: INVITE, ACK, BYE, CANCEL, UPDATE\r\n",
    );
    let sent = h.run_until(secs(61));
    let update = sent
        .iter()
        .find(|s| s.method().as_deref() == Some("UPDATE"))
        .expect("UPDATE");
    assert_eq!(update.at, secs(60));
    assert_eq!(update.header("Session-Expires").as_deref(), Some("120;refresher=uas"));
    // Answer it: the session is refreshed and no BYE follows at the old deadline.
    h.answer(update, 200);
    let sent = h.run_until(secs(115));
    assert!(sent.iter().all(|s| s.method().as_deref() != Some("BYE")), "{sent:?}");
}

#[test]
fn refresh_answered_481_ends_the_call() {
    // RFC 3261 §12.2.1.2
    let mut h = Harness::new();
    let mut uac = Uac::new();
    h.established(&mut uac, "Session-Expires: 120\r\nAllow: UPDATE\r\n");
    let sent = h.run_until(secs(61));
    let update = sent.iter().find(|s| s.method().as_deref() == Some("UPDATE")).unwrap();
    h.answer(update, 481);
    assert!(h.events().iter().any(|e| matches!(
        e,
        UasEvent::Ended {
            reason: EndReason::DialogLost,
            ..
        }
    )));
}

#[test]
fn required_100rel_gets_a_reliable_180_until_prack() {
    // RFC 3262 §3
    let mut h = Harness::new();
    let mut uac = Uac::new();
    h.deliver(&uac.request("INVITE", "Require: 100rel\r\n", OFFER));
    let call = h.incoming();
    h.sent();
    h.core.ring(call, h.now).unwrap();
    let ringing = h.sent().pop().unwrap();
    assert_eq!(ringing.code(), Some(180));
    assert_eq!(ringing.header("Require").as_deref(), Some("100rel"));
    assert_eq!(ringing.header("RSeq").as_deref(), Some("1"));
    let SipMessage::Response(r) = &ringing.msg else {
        unreachable!()
    };
    uac.to_tag = r.core.to_tag.clone();
    let resent = h.run_until(ms(1600));
    let at: Vec<u64> = resent
        .iter()
        .filter(|s| s.code() == Some(180))
        .map(|s| s.at.as_millis() as u64)
        .collect();
    assert_eq!(at, vec![500, 1500]);
    // A PRACK for another RSeq is 481; the right one is 200 and stops the retransmissions.
    h.deliver(&uac.request("PRACK", "RAck: 7 1 INVITE\r\n", ""));
    assert_eq!(h.sent().pop().and_then(|s| s.code()), Some(481));
    h.deliver(&uac.request("PRACK", "RAck: 1 1 INVITE\r\n", ""));
    assert_eq!(h.sent().pop().and_then(|s| s.code()), Some(200));
    assert!(h.run_until(secs(10)).iter().all(|s| s.code() != Some(180)));
}

#[test]
fn unknown_required_extension_is_420_with_unsupported() {
    // RFC 3261 §8.2.2.3
    let mut h = Harness::new();
    let mut uac = Uac::new();
    h.deliver(&uac.request("INVITE", "Require: 100rel, foo\r\n", OFFER));
    let last = h.sent().pop().unwrap();
    assert_eq!(last.code(), Some(420));
    assert_eq!(last.header("Unsupported").as_deref(), Some("foo"));
}

#[test]
fn info_dtmf_relay_is_reported_as_a_digit() {
    let mut h = Harness::new();
    let mut uac = Uac::new();
    let call = h.established(&mut uac, "");
    h.events();
    let info = uac.request("INFO", "", "").replace(
        "Content-Length: 0\r\n\r\n",
        "Content-Type: application/dtmf-relay\r\nContent-Length: 24\r\n\r\nSignal=5\r\nDuration=160\r\n",
    );
    h.deliver(&info);
    assert_eq!(h.sent().pop().and_then(|s| s.code()), Some(200));
    let got = h.events().into_iter().find_map(|e| match e {
        UasEvent::InfoDtmf {
            call: c,
            digit,
            duration_ms,
        } if c == call => Some((digit, duration_ms)),
        _ => None,
    });
    assert_eq!(got, Some(('5', 160)));
    let other = uac.request("INFO", "", "").replace(
        "Content-Length: 0\r\n\r\n",
        "Content-Type: application/x-foo\r\nContent-Length: 1\r\n\r\nx",
    );
    h.deliver(&other);
    assert_eq!(h.sent().pop().and_then(|s| s.code()), Some(415));
}

#[test]
fn options_is_200_with_allow_accept_and_supported() {
    let mut h = Harness::new();
    let mut uac = Uac::new();
    h.deliver(&uac.request("OPTIONS", "", ""));
    let ok = h.sent().pop().unwrap();
    assert_eq!(ok.code(), Some(200));
    assert_eq!(ok.header("Allow").as_deref(), Some(ALLOW));
    assert!(ok.header("Accept").unwrap().contains("application/sdp"));
    assert_eq!(ok.header("Supported").as_deref(), Some(SUPPORTED));
}

#[test]
fn refusing_new_calls_gives_503_with_retry_after() {
    let mut h = Harness::new();
    h.core.set_refuse_new_calls(true);
    let mut uac = Uac::new();
    h.deliver(&uac.request("INVITE", "", OFFER));
    let last = h.sent().pop().unwrap();
    assert_eq!(last.code(), Some(503));
    assert!(last.header("Retry-After").is_some());
}

#[test]
fn calls_beyond_max_calls_or_while_overloaded_get_a_fast_503() {
    let mut h = Harness::with(UasConfig {
        max_calls: 1,
        ..UasConfig::default()
    });
    let mut first = Uac::new();
    h.deliver(&first.request("INVITE", "", OFFER));
    assert_eq!(h.sent().pop().and_then(|s| s.code()), Some(100));
    let mut second = Uac::new();
    second.from_tag = "second".into();
    h.deliver(&second.request("INVITE", "", OFFER));
    let refused = h.sent().pop().unwrap();
    assert_eq!(refused.code(), Some(503));
    assert!(refused.header("Retry-After").is_some());
    let mut h = Harness::new();
    h.core.set_overloaded(true);
    let mut third = Uac::new();
    h.deliver(&third.request("INVITE", "", OFFER));
    assert_eq!(h.sent().pop().and_then(|s| s.code()), Some(503));
    h.core.set_overloaded(false);
    let mut fourth = Uac::new();
    fourth.from_tag = "fourth".into();
    h.deliver(&fourth.request("INVITE", "", OFFER));
    assert_eq!(h.sent().pop().and_then(|s| s.code()), Some(100));
}

#[test]
fn lower_cseq_inside_the_dialog_is_500() {
    // RFC 3261 §12.2.2
    let mut h = Harness::new();
    let mut uac = Uac::new();
    h.established(&mut uac, "");
    uac.cseq = 0;
    h.deliver(&uac.request("INFO", "", ""));
    assert_eq!(h.sent().pop().and_then(|s| s.code()), Some(500));
}

#[test]
fn request_for_an_unknown_dialog_is_481() {
    let mut h = Harness::new();
    let mut uac = Uac::new();
    uac.to_tag = Some("nosuch".into());
    h.deliver(&uac.request("BYE", "", ""));
    assert_eq!(h.sent().pop().and_then(|s| s.code()), Some(481));
}

#[test]
fn rejected_invite_is_retransmitted_until_ack() {
    let mut h = Harness::new();
    let mut uac = Uac::new();
    let invite = uac.request("INVITE", "", OFFER);
    h.deliver(&invite);
    let call = h.incoming();
    h.core.reject(call, 404, h.now).unwrap();
    let first = h.sent().pop().unwrap();
    assert_eq!(first.code(), Some(404));
    let SipMessage::Response(r) = &first.msg else {
        unreachable!()
    };
    uac.to_tag = r.core.to_tag.clone();
    assert!(h.run_until(ms(600)).iter().any(|s| s.code() == Some(404)), "Timer G");
    h.deliver(&uac.request("ACK", "", ""));
    assert!(h.run_until(secs(60)).is_empty());
    assert_eq!(h.core.stats().server_transactions, 0, "Timer I ended the transaction");
}

#[test]
fn record_route_is_echoed_and_becomes_the_route_of_our_bye() {
    // RFC 3261 §12.1.1 (copy Record-Route into the 2xx) and §12.2.1.1 (Route of our requests).
    let mut h = Harness::new();
    let mut uac = Uac::new();
    let invite = uac.request(
        "INVITE",
        "Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n",
        OFFER,
    );
    h.deliver(&invite);
    let call = h.incoming();
    h.core.answer(call, local_media(), h.now).unwrap();
    let ok = h.sent().into_iter().find(|s| s.code() == Some(200)).unwrap();
    assert!(
        ok.text
            .contains("Record-Route: <sip:p1.example;lr>\r\nRecord-Route: <sip:p2.example;lr>\r\n"),
        "{}",
        ok.text
    );
    let SipMessage::Response(r) = &ok.msg else {
        unreachable!()
    };
    uac.to_tag = r.core.to_tag.clone();
    h.deliver(&uac.request("ACK", "", ""));
    h.core.hangup(call, h.now).unwrap();
    let bye = h
        .sent()
        .into_iter()
        .find(|s| s.method().as_deref() == Some("BYE"))
        .unwrap();
    assert!(
        bye.text.starts_with("BYE sip:uac@192.0.2.1:5060 SIP/2.0\r\n"),
        "{}",
        bye.text
    );
    assert!(
        bye.text
            .contains("Route: <sip:p1.example;lr>\r\nRoute: <sip:p2.example;lr>\r\n"),
        "{}",
        bye.text
    );
}

#[test]
fn without_update_we_refresh_with_a_reinvite_and_ack_its_2xx() {
    // RFC 4028 §7.4 with a peer that does not allow UPDATE: a re-INVITE carrying our current
    // SDP (same version: the session did not change, RFC 3264 §8), then the dialog's ACK for
    // the 2xx (RFC 3261 §13.2.2.4: same CSeq number, method ACK, a new branch).
    let mut h = Harness::new();
    let mut uac = Uac::new();
    let call = h.established(&mut uac, "Session-Expires: 120\r\nAllow: INVITE, ACK, BYE, CANCEL\r\n");
    let sent = h.run_until(secs(61));
    let reinvite = sent
        .iter()
        .find(|s| s.method().as_deref() == Some("INVITE"))
        .expect("re-INVITE refresh");
    assert_eq!(reinvite.at, secs(60));
    assert!(
        reinvite.body().contains("o=tolk 7 1 "),
        "same session version: {}",
        reinvite.body()
    );
    assert_eq!(reinvite.header("Session-Expires").as_deref(), Some("120;refresher=uas"));
    let SipMessage::Request(req) = &reinvite.msg else {
        unreachable!()
    };
    h.answer(reinvite, 200);
    let ack = h
        .sent()
        .into_iter()
        .find(|s| s.method().as_deref() == Some("ACK"))
        .expect("ACK for the 2xx");
    let SipMessage::Request(ack_req) = &ack.msg else {
        unreachable!()
    };
    assert_eq!(ack_req.core.cseq.seq, req.core.cseq.seq);
    assert_ne!(ack_req.core.top_via.branch, req.core.top_via.branch);
    // Refreshed: no BYE at the old deadline, and the call is still up.
    assert!(
        h.run_until(secs(115))
            .iter()
            .all(|s| s.method().as_deref() != Some("BYE"))
    );
    assert_eq!(h.core.call_state(call), Some(CallState::Confirmed));
}

fn transfer_results(h: &mut Harness) -> Vec<u16> {
    h.events()
        .into_iter()
        .filter_map(|e| match e {
            UasEvent::TransferResult { status, .. } => Some(status),
            _ => None,
        })
        .collect()
}

fn notify(uac: &mut Uac, event: &str, sipfrag: &str) -> String {
    uac.request("NOTIFY", "", "").replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Event: {event}\r\nSubscription-State: active\r\nContent-Type: message/sipfrag;version=2.0\r\nContent-Length: {}\r\n\r\n{sipfrag}",
            sipfrag.len()
        ),
    )
}

#[test]
fn refer_transfers_and_notify_reports_the_outcome() {
    // RFC 3515 §2.4: REFER with Refer-To, 202, then NOTIFYs carrying sipfrag status lines.
    let mut h = Harness::new();
    let mut uac = Uac::new();
    let call = h.established(&mut uac, "");
    h.events();
    h.core.refer(call, "+15550100000", h.now).unwrap();
    let refer = h
        .sent()
        .into_iter()
        .find(|s| s.method().as_deref() == Some("REFER"))
        .expect("REFER");
    let SipMessage::Request(r) = &refer.msg else {
        unreachable!()
    };
    let refer_to = r
        .header(&crate::sip::msg::Name::REFER_TO)
        .unwrap_or_default()
        .to_string();
    assert!(refer_to.starts_with("<sip:+15550100000@"), "{refer_to}");
    assert!(r.header(&crate::sip::msg::Name::CONTACT).is_some());
    // A second transfer while one is out is refused.
    assert!(h.core.refer(call, "+15550100000", h.now).is_err());
    h.answer(&refer, 202);
    assert!(transfer_results(&mut h).is_empty(), "202 is not the outcome");
    h.deliver(&notify(&mut uac, "refer", "SIP/2.0 100 Trying\r\n"));
    assert_eq!(h.sent().pop().and_then(|s| s.code()), Some(200));
    assert!(transfer_results(&mut h).is_empty(), "100 is progress");
    h.deliver(&notify(&mut uac, "refer;id=2", "SIP/2.0 200 OK\r\n"));
    assert_eq!(h.sent().pop().and_then(|s| s.code()), Some(200));
    assert_eq!(transfer_results(&mut h), vec![200]);
    // Another event package in the dialog: 489 Bad Event (RFC 6665 §8.2.1).
    h.deliver(&notify(&mut uac, "presence", "x"));
    assert_eq!(h.sent().pop().and_then(|s| s.code()), Some(489));
}

#[test]
fn a_refused_or_unanswered_refer_is_a_failed_transfer() {
    let mut h = Harness::new();
    let mut uac = Uac::new();
    let call = h.established(&mut uac, "");
    h.events();
    h.core.refer(call, "sip:operator@192.0.2.9", h.now).unwrap();
    let refer = h
        .sent()
        .into_iter()
        .find(|s| s.method().as_deref() == Some("REFER"))
        .expect("REFER");
    h.answer(&refer, 603);
    assert_eq!(transfer_results(&mut h), vec![603]);
    // No answer at all: Timer F (64*T1) gives 408; the call itself stays up.
    h.core.refer(call, "+15550100000", h.now).unwrap();
    h.run_until(secs(40));
    assert_eq!(transfer_results(&mut h), vec![408]);
    assert!(h.core.call_state(call).is_some());
}

#[test]
fn a_call_past_max_call_duration_is_hung_up_and_a_ringing_one_refused() {
    // sip.max_call_secs: BYE once the limit passes, in virtual time.
    let cfg = UasConfig {
        max_call_duration: Some(secs(60)),
        // No session timer to muddle the timeline.
        session_expires_secs: 3600,
        ..UasConfig::default()
    };
    let mut h = Harness::with(cfg.clone());
    let mut uac = Uac::new();
    let call = h.established(&mut uac, "");
    assert!(
        h.run_until(secs(59))
            .iter()
            .all(|s| s.method().as_deref() != Some("BYE"))
    );
    let sent = h.run_until(secs(61));
    assert!(
        sent.iter().any(|s| s.method().as_deref() == Some("BYE")),
        "BYE after 60 s"
    );
    let ended: Vec<_> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            UasEvent::Ended { call: c, reason } if c == call => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(ended, vec![EndReason::TooLong]);
    // Still ringing at the limit: 480.
    let mut h = Harness::with(cfg);
    let mut ringing = Uac::new();
    h.deliver(&ringing.request("INVITE", "", OFFER));
    let _ = h.incoming();
    let sent = h.run_until(secs(61));
    assert!(sent.iter().any(|s| s.code() == Some(480)), "480 before answer");
}

#[test]
fn refusals_of_the_gate_keep_no_transaction_and_are_not_retransmitted() {
    // A source nobody vouched for: 403 once, statelessly, and nothing held for it.
    let cfg = crate::config::Config::from_parts("tolk.toml", "[sip]\nallow_unknown = []\n", &[]).unwrap();
    let table = crate::sip::trunk::TrunkTable::from_config(&cfg);
    let gate = crate::sip::trunk::Gate::new(table, "tolk", 7);
    let start = crate::test_clock::epoch();
    let mut h = Harness {
        core: UasCore::with_gate(UasConfig::default(), gate),
        start,
        now: start,
    };
    let mut uac = Uac::new();
    let invite = uac.request("INVITE", "", OFFER);
    h.deliver(&invite);
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "one answer, no 100");
    assert_eq!(sent[0].code(), Some(403));
    assert_eq!(h.core.stats().server_transactions, 0);
    assert!(h.run_until(secs(40)).is_empty(), "no retransmission without an ACK");
    // A retransmission of the INVITE gets the same answer, the same To tag.
    h.deliver(&invite);
    let again = h.sent();
    assert_eq!(again[0].code(), Some(403));
    assert_eq!(again[0].header("To"), sent[0].header("To"));
}
