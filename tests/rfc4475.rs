//! RFC 4475 torture tests: all 49 messages (copied from `../shared/conformance/rfc4475/` into
//! `tests/fixtures/rfc4475/`), with the RFC's expected treatment for a UAS asserted twice:
//! by the parser alone, and end to end against a running gateway over UDP.
//! `tests/fixtures/rfc4475/TREATMENT.md` explains each expectation.

mod common;
use common::{Gateway, header, status_of};
use std::net::UdpSocket;
use std::time::{Duration, Instant};
use tolk::sip::msg::{Limits, ParseError, SipMessage, parse_datagram};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parse {
    /// A request the parser accepts.
    Request,
    /// A response the parser accepts (a UAS then drops it: it matches no transaction).
    Response,
    /// A malformed request answered straight from the parser with this status.
    Rejected(u16),
    /// Unanswerable: dropped.
    Dropped,
}

/// (file, parser outcome, final status the gateway sends over UDP; None = no response).
const CASES: &[(&str, Parse, Option<u16>)] = &[
    // §3.1.1 valid messages
    // wsinv's To carries a tag: an in-dialog INVITE for a dialog we do not have (§12.2.2).
    ("wsinv", Parse::Request, Some(481)),
    ("intmeth", Parse::Request, Some(501)),
    ("esc01", Parse::Request, Some(404)),
    ("escnull", Parse::Request, Some(405)),
    ("esc02", Parse::Request, Some(501)),
    ("lwsdisp", Parse::Request, Some(200)),
    ("longreq", Parse::Request, Some(404)),
    ("dblreq", Parse::Request, Some(405)),
    ("semiuri", Parse::Request, Some(200)),
    ("transports", Parse::Request, Some(200)),
    ("mpart01", Parse::Request, Some(405)),
    ("unreason", Parse::Response, None),
    ("noreason", Parse::Response, None),
    // §3.1.2 invalid messages
    ("badinv01", Parse::Rejected(400), Some(400)),
    ("clerr", Parse::Rejected(400), Some(400)),
    ("ncl", Parse::Rejected(400), Some(400)),
    ("scalar02", Parse::Rejected(400), Some(400)),
    ("scalarlg", Parse::Dropped, None),
    ("quotbal", Parse::Rejected(400), Some(400)),
    ("ltgtruri", Parse::Rejected(400), Some(400)),
    ("lwsruri", Parse::Rejected(400), Some(400)),
    ("lwsstart", Parse::Rejected(400), Some(400)),
    ("trws", Parse::Rejected(400), Some(400)),
    ("escruri", Parse::Rejected(400), Some(400)),
    ("baddate", Parse::Request, Some(404)),
    ("regbadct", Parse::Request, Some(405)),
    ("badaspec", Parse::Rejected(400), Some(400)),
    ("baddn", Parse::Rejected(400), Some(400)),
    ("badvers", Parse::Rejected(505), Some(505)),
    ("mismatch01", Parse::Rejected(400), Some(400)),
    ("mismatch02", Parse::Request, Some(501)),
    ("bigcode", Parse::Dropped, None),
    // §3.2 transaction layer
    ("badbranch", Parse::Rejected(400), Some(400)),
    // §3.3 application layer
    ("insuf", Parse::Rejected(400), Some(400)),
    ("unkscm", Parse::Request, Some(416)),
    ("novelsc", Parse::Request, Some(416)),
    ("unksm2", Parse::Request, Some(405)),
    ("bext01", Parse::Request, Some(420)),
    ("invut", Parse::Request, Some(415)),
    ("regaut01", Parse::Request, Some(405)),
    ("multi01", Parse::Rejected(400), Some(400)),
    ("mcl01", Parse::Rejected(400), Some(400)),
    ("bcast", Parse::Response, None),
    ("zeromf", Parse::Request, Some(200)),
    ("cparam01", Parse::Request, Some(405)),
    ("cparam02", Parse::Request, Some(405)),
    ("regescrt", Parse::Request, Some(405)),
    ("sdp01", Parse::Request, Some(406)),
    // §3.4 backward compatibility
    ("inv2543", Parse::Request, Some(404)),
];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/rfc4475/{name}.dat", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse_outcome(bytes: &[u8]) -> Parse {
    match parse_datagram(bytes, &Limits::default()) {
        Ok(SipMessage::Request(_)) => Parse::Request,
        Ok(SipMessage::Response(_)) => Parse::Response,
        Err(ParseError::Reject(r)) => Parse::Rejected(r.status),
        Err(ParseError::Drop(_)) => Parse::Dropped,
    }
}

#[test]
fn all_49_messages_are_covered() {
    assert_eq!(CASES.len(), 49);
    let dir = format!("{}/tests/fixtures/rfc4475", env!("CARGO_MANIFEST_DIR"));
    let files = std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "dat"))
        .count();
    assert_eq!(files, 49);
}

#[test]
fn parser_treats_each_message_as_rfc4475_expects() {
    let mut wrong = Vec::new();
    for (name, expected, _) in CASES {
        let got = parse_outcome(&fixture(name));
        if got != *expected {
            wrong.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn valid_messages_survive_print_and_reparse() {
    // RFC 4475 §3.1.1: a parser must accept them; our printer must keep them parseable.
    for (name, expected, _) in CASES {
        if *expected != Parse::Request {
            continue;
        }
        let Ok(SipMessage::Request(r)) = parse_datagram(&fixture(name), &Limits::default()) else {
            unreachable!()
        };
        let printed = r.to_bytes();
        match parse_datagram(&printed, &Limits::default()) {
            Ok(SipMessage::Request(again)) => {
                assert_eq!(again.to_bytes(), printed, "{name}: print is not stable");
                assert_eq!(again.core.call_id, r.core.call_id, "{name}");
                assert_eq!(again.body, r.body, "{name}");
            }
            other => panic!("{name}: reprint does not parse: {other:?}"),
        }
    }
}

/// Over UDP the responses go where RFC 3261 §18.2.2 says: to the source IP and the top Via's
/// port (5060 by default; `quotbal` says 5050), or the source port with `rport`. The test
/// sends from 127.0.0.1:5060 and also listens on 127.0.0.1:5050.
///
/// Several messages share a branch and sent-by (`cparam01`/`cparam02`, `escnull`/`regescrt`,
/// `unkscm`/`novelsc`), which makes the later one a retransmission of the earlier under
/// RFC 3261 §17.2.3. T1 is set to 1 ms so each transaction has ended (Timer J = 64*T1)
/// before the next message is sent.
#[test]
fn gateway_answers_each_message_over_udp_and_keeps_running() {
    let gw = Gateway::start(&[("TOLK_SIP_T1_MS", "1")]);
    let main = UdpSocket::bind("127.0.0.1:5060").expect("this test needs 127.0.0.1:5060 free (RFC 3261 default port)");
    let alt = UdpSocket::bind("127.0.0.1:5050").expect("this test needs 127.0.0.1:5050 free");
    main.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    alt.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut wrong = Vec::new();
    for (name, _, expected) in CASES {
        let bytes = fixture(name);
        main.send_to(&bytes, gw.sip).unwrap();
        let call_id = String::from_utf8_lossy(&bytes)
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                let n = n.trim();
                (n.eq_ignore_ascii_case("call-id") || n.eq_ignore_ascii_case("i")).then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        let deadline = Instant::now() + Duration::from_millis(if expected.is_some() { 2000 } else { 300 });
        let mut got: Option<(u16, String)> = None;
        let mut buf = vec![0u8; 65535];
        while Instant::now() < deadline && got.is_none() {
            for s in [&main, &alt] {
                if let Ok((n, _)) = s.recv_from(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let Some(code) = status_of(&text) else { continue };
                    // Skip 100 Trying and stray retransmissions for earlier messages.
                    let same_call = call_id.is_empty() || header(&text, "Call-ID").is_some_and(|c| c == call_id);
                    if code >= 200 && same_call {
                        got = Some((code, text));
                    }
                }
            }
        }
        let code = got.as_ref().map(|(c, _)| *c);
        std::thread::sleep(Duration::from_millis(150));
        if code != *expected {
            wrong.push(format!("{name}: expected {expected:?}, got {code:?}"));
        }
        if let (Some((_, text)), "bext01") = (&got, *name) {
            assert_eq!(
                header(text, "Unsupported").as_deref(),
                Some("nothingSupportsThis, nothingSupportsThisEither")
            );
        }
        if let (Some((_, text)), "invut") = (&got, *name) {
            assert!(header(text, "Accept").unwrap_or_default().contains("application/sdp"));
        }
        if let (Some((_, text)), "intmeth" | "mpart01") = (&got, *name) {
            assert!(header(text, "Allow").unwrap_or_default().contains("INVITE"));
        }
    }
    assert!(wrong.is_empty(), "{}\nlog:\n{}", wrong.join("\n"), gw.log_text());
    // Still alive and answering.
    let mut uac = common::Uac::new(gw.sip, "+15550100300");
    let options = uac.request("OPTIONS", "", "");
    uac.send(&options);
    assert_eq!(uac.final_response(Duration::from_secs(2)).map(|(c, _)| c), Some(200));
}
