//! Unit tests of parsing and printing; the RFC 4475 suite lives in `tests/rfc4475.rs`.

use super::*;

fn parse(s: &str) -> Result<SipMessage, ParseError> {
    parse_datagram(s.as_bytes(), &Limits::default())
}

fn request(s: &str) -> Request {
    match parse(s) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("expected a request, got {other:?}"),
    }
}

fn rejected(s: &str) -> u16 {
    match parse(s) {
        Err(ParseError::Reject(r)) => r.status,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

const INVITE: &str = "INVITE sip:+15550100300@tolk.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:+15550100300@tolk.example>\r\n\
From: \"Alice\" <sip:+15551234567@carrier.example>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@192.0.2.1>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n";

#[test]
fn parses_a_plain_invite() {
    let r = request(INVITE);
    assert_eq!(r.method, Method::Invite);
    assert_eq!(r.uri.user(), Some("+15550100300"));
    assert_eq!(r.core.call_id, "a84b4c76e66710@pc33.example");
    assert_eq!(r.core.cseq.seq, 314159);
    assert_eq!(r.core.from_tag.as_deref(), Some("1928301774"));
    assert_eq!(r.core.to_tag, None);
    assert_eq!(r.core.top_via.branch.as_deref(), Some("z9hG4bK776asdhds"));
    assert_eq!(r.core.top_via.rport, Some(None));
    assert_eq!(r.max_forwards, Some(70));
    assert_eq!(&r.body[..], b"v=0\n");
    assert_eq!(r.content_type(), Some("application/sdp"));
}

#[test]
fn print_then_parse_gives_the_same_request() {
    let r = request(INVITE);
    let printed = r.to_bytes();
    let again = match parse_datagram(&printed, &Limits::default()) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(again.to_bytes(), printed);
    assert_eq!(again.core.vias, r.core.vias);
    assert_eq!(again.body, r.body);
}

#[test]
fn compact_forms_and_folding_are_understood() {
    // RFC 3261 §7.3.1 (folding), §7.3.3 (compact forms)
    let r = request(
        "OPTIONS sip:u@h SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKa\r\n ,SIP/2.0/TCP g;branch=z9hG4bKb\r\n\
f: <sip:a@b>;tag=x\r\nt: sip:u@h\r\ni: cid\r\nCSeq:\r\n 1 OPTIONS\r\nl: 0\r\n\r\n",
    );
    assert_eq!(r.core.vias.len(), 2);
    assert_eq!(r.core.vias[1], "SIP/2.0/TCP g;branch=z9hG4bKb");
    assert_eq!(r.core.cseq.seq, 1);
}

#[test]
fn content_length_shorter_than_datagram_truncates() {
    // RFC 3261 §18.3: extra bytes after the body are discarded.
    let msg = INVITE.to_string() + "TRAILING";
    assert_eq!(&request(&msg).body[..], b"v=0\n");
}

#[test]
fn content_length_longer_than_datagram_is_400() {
    let msg = INVITE.replace("Content-Length: 4", "Content-Length: 400");
    assert_eq!(rejected(&msg), 400);
}

#[test]
fn negative_or_garbage_content_length_is_400() {
    assert_eq!(
        rejected(&INVITE.replace("Content-Length: 4", "Content-Length: -4")),
        400
    );
    assert_eq!(
        rejected(&INVITE.replace("Content-Length: 4", "Content-Length: four")),
        400
    );
}

#[test]
fn missing_content_length_on_udp_takes_the_rest() {
    let r = request(&INVITE.replace("Content-Length: 4\r\n", ""));
    assert_eq!(&r.body[..], b"v=0\n");
}

#[test]
fn message_over_the_size_limit_is_513() {
    let limits = Limits {
        max_message_bytes: 200,
        ..Limits::default()
    };
    match parse_datagram(INVITE.as_bytes(), &limits) {
        Err(ParseError::Reject(r)) => assert_eq!(r.status, 513),
        other => panic!("{other:?}"),
    }
}

#[test]
fn too_many_headers_is_400() {
    let limits = Limits {
        max_headers: 5,
        ..Limits::default()
    };
    match parse_datagram(INVITE.as_bytes(), &limits) {
        Err(ParseError::Reject(r)) => assert_eq!(r.status, 400),
        Err(ParseError::Drop(_)) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn header_longer_than_the_limit_is_400() {
    let long = format!("X-Long: {}\r\n", "a".repeat(9000));
    let msg = INVITE.replace("Contact:", &format!("{long}Contact:"));
    assert_eq!(rejected(&msg), 400);
}

#[test]
fn cseq_method_mismatch_is_400() {
    assert_eq!(
        rejected(&INVITE.replace("CSeq: 314159 INVITE", "CSeq: 314159 ACK")),
        400
    );
}

#[test]
fn a_broken_ack_is_dropped_not_answered() {
    // RFC 3261 §17.2.1: no response to an ACK, whatever is wrong with it.
    let ack = INVITE
        .replace("INVITE sip:", "ACK sip:")
        .replace("314159 INVITE", "314159 ACK");
    let broken = ack.replacen("SIP/2.0\r\n", "SIP/2.0 extra\r\n", 1);
    // The same fault in an INVITE is answered.
    assert!(rejected(&INVITE.replacen("SIP/2.0\r\n", "SIP/2.0 extra\r\n", 1)) >= 400);
    assert!(matches!(
        parse_datagram(broken.as_bytes(), &Limits::default()),
        Err(ParseError::Drop(_))
    ));
}

#[test]
fn cseq_at_2_pow_31_is_400() {
    // RFC 3261 §8.1.1.5
    assert_eq!(rejected(&INVITE.replace("314159", "2147483648")), 400);
    assert_eq!(
        request(&INVITE.replace("314159", "2147483647")).core.cseq.seq,
        2147483647
    );
}

#[test]
fn other_sip_version_is_505() {
    assert_eq!(rejected(&INVITE.replacen("SIP/2.0\r\n", "SIP/7.0\r\n", 1)), 505);
}

#[test]
fn unknown_uri_scheme_is_kept_for_a_416() {
    let r = request(&INVITE.replacen("sip:+15550100300@tolk.example SIP", "mailto:x@y SIP", 1));
    assert!(matches!(r.uri, RequestUri::Other { ref scheme, .. } if scheme == "mailto"));
}

#[test]
fn tel_request_uri_gives_the_number() {
    let r = request(&INVITE.replacen("sip:+15550100300@tolk.example SIP", "tel:+15550100300 SIP", 1));
    assert_eq!(r.uri.user(), Some("+15550100300"));
}

#[test]
fn garbage_is_dropped_not_answered() {
    assert!(matches!(parse("\x00\x01\x02"), Err(ParseError::Drop(_))));
    assert!(matches!(parse("hello world"), Err(ParseError::Drop(_))));
    assert!(matches!(parse(""), Err(ParseError::Drop(_))));
}

#[test]
fn response_gets_tag_and_copies_core_headers() {
    // RFC 3261 §8.2.6.2
    let r = request(INVITE);
    let resp = response_to(&r, 180, "", Some("abc"));
    assert_eq!(resp.core.to_tag.as_deref(), Some("abc"));
    assert!(resp.core.to.ends_with(";tag=abc"));
    let trying = response_to(&r, 100, "", Some("abc"));
    assert_eq!(trying.core.to_tag, None);
    let bytes = resp.to_bytes();
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(text.starts_with("SIP/2.0 180 Ringing\r\n"));
    assert!(text.contains("CSeq: 314159 INVITE\r\n"));
    match parse_datagram(&bytes, &Limits::default()) {
        Ok(SipMessage::Response(p)) => assert_eq!(p.code, 180),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejection_response_stamps_received_and_rport() {
    // RFC 3581 §4
    let msg = INVITE.replace("CSeq: 314159 INVITE", "CSeq: 314159 BYE");
    let Err(ParseError::Reject(r)) = parse(&msg) else {
        panic!()
    };
    let bytes = r.response_bytes("198.51.100.7:40000".parse().unwrap());
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(text.starts_with("SIP/2.0 400 "), "{text}");
    assert!(text.contains("rport=40000;received=198.51.100.7"), "{text}");
}

#[test]
fn a_retransmitted_bad_request_gets_the_same_to_tag() {
    // RFC 3261 §8.2.6.2: the tag of a stateless answer is the same for the same request.
    let msg = INVITE.replace("CSeq: 314159 INVITE", "CSeq: 314159 BYE");
    let tag_of = |m: &str| {
        let Err(ParseError::Reject(r)) = parse(m) else { panic!() };
        let text = String::from_utf8(r.response_bytes("198.51.100.7:40000".parse().unwrap()).to_vec()).unwrap();
        let to = text.lines().find(|l| l.starts_with("To:")).unwrap().to_string();
        param_of(&to, "tag").expect("a To tag")
    };
    assert_eq!(tag_of(&msg), tag_of(&msg));
    let other = msg.replace("CSeq: 314159 BYE", "CSeq: 314160 BYE");
    assert_ne!(tag_of(&msg), tag_of(&other), "another request, another tag");
}

#[test]
fn via_parses_ipv6_and_params() {
    let v = Via::parse("SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas3;received=2001:db8::9:255").unwrap();
    assert_eq!(v.host, "[2001:db8::9:1]");
    assert_eq!(v.port, Some(5070));
    assert!(v.host_ip.is_some());
    assert!(v.has_rfc3261_branch());
}

#[test]
fn tag_is_found_in_name_addr_and_addr_spec() {
    assert_eq!(
        param_of("\"A;tag=no\" <sip:a@b;tag=no>;tag=yes", "tag").as_deref(),
        Some("yes")
    );
    assert_eq!(param_of("sip:a@b;tag=yes", "tag").as_deref(), Some("yes"));
    assert_eq!(param_of("<sip:a@b;tag=no>", "tag"), None);
}

#[test]
fn user_of_sip_and_tel_uris() {
    assert_eq!(addr_spec_user("sip:%2B1555@h").as_deref(), Some("+1555"));
    assert_eq!(addr_spec_user("tel:+1555;phone-context=x").as_deref(), Some("+1555"));
    assert_eq!(uri_of_name_addr("\"A\" <sip:a@b>;tag=1"), "sip:a@b");
}
