//! Deterministic random mutation of real messages through every parser entry point: no
//! input may panic, and what parses must print to something that parses again. (The
//! coverage-guided targets in `fuzz/` go further; this runs in every `cargo test`.)

use tolk::sip::msg::stream::StreamFramer;
use tolk::sip::msg::{Framing, Limits, SipMessage, parse_datagram, parse_message};
use tolk::sip::sdp::SessionDescription;

fn seeds() -> Vec<Vec<u8>> {
    let dir = format!("{}/tests/fixtures/rfc4475", env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "dat"))
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    out.sort();
    out
}

fn mutate(rng: &mut fastrand::Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.usize(1..8) {
        if v.is_empty() {
            v.push(rng.u8(..));
            continue;
        }
        let i = rng.usize(..v.len());
        match rng.u8(0..7) {
            0 => v[i] = rng.u8(..),
            1 => {
                v.remove(i);
            }
            2 => {
                let set = b"\r\n:;,<>\"% \t0";
                v.insert(i, set[rng.usize(..set.len())])
            }
            3 => v.truncate(i),
            4 => {
                let end = (i + rng.usize(0..64)).min(v.len());
                let chunk = v[i..end].to_vec();
                v.splice(i..i, chunk);
            }
            5 => v.insert(i, b"0123456789"[rng.usize(..10)]),
            _ => {
                // A multi-byte UTF-8 character, to catch string slicing off char boundaries.
                let c = ["\u{10f}", "\u{20ac}", "\u{1f600}", "\u{e9}"][rng.usize(..4)];
                v.splice(i..i, c.bytes());
            }
        }
    }
    v
}

#[test]
fn mutated_messages_never_panic_and_round_trip() {
    let mut rng = fastrand::Rng::with_seed(4475);
    let limits = Limits::default();
    let seeds = seeds();
    let mut parsed = 0;
    for _ in 0..30_000 {
        let seed = &seeds[rng.usize(..seeds.len())];
        let input = mutate(&mut rng, seed);
        if let Ok(msg) = parse_datagram(&input, &limits) {
            parsed += 1;
            let printed = match &msg {
                SipMessage::Request(r) => r.to_bytes(),
                SipMessage::Response(r) => r.to_bytes(),
            };
            assert!(
                parse_message(&printed, Framing::Stream, &limits).is_ok(),
                "printed form does not parse:\n{}",
                String::from_utf8_lossy(&printed)
            );
        }
        let _ = SessionDescription::parse(&input);
    }
    assert!(
        parsed > 1000,
        "the mutations should leave many messages valid ({parsed})"
    );
}

#[test]
fn mutated_digest_answers_never_panic_nor_get_in() {
    use tolk::sip::auth::{Algorithm, Authenticator, Verdict, answer_for, parse_authorization};
    let mut rng = fastrand::Rng::with_seed(8760);
    let mut auth = Authenticator::new("tolk", [9; 32]);
    let now = std::time::Instant::now();
    let both = [Algorithm::Sha256, Algorithm::Md5];
    let nonce = auth.nonce(now, 77);
    let seeds: Vec<Vec<u8>> = [Algorithm::Sha256, Algorithm::Md5]
        .iter()
        .map(|a| {
            answer_for(
                *a,
                "carrier",
                "tolk",
                "password1",
                "INVITE",
                "sip:+15550100@x",
                &nonce,
                1,
                "c0ffee",
            )
            .into_bytes()
        })
        .collect();
    let (mut parsed, mut accepted) = (0, 0);
    for _ in 0..20_000 {
        let pick = rng.usize(..seeds.len());
        let input = mutate(&mut rng, &seeds[pick]);
        let Ok(text) = std::str::from_utf8(&input) else {
            continue;
        };
        let Ok(answer) = parse_authorization(text) else {
            continue;
        };
        parsed += 1;
        // A fresh authenticator each time, so a mutation that only touches parts the
        // response does not cover (say, the case of `qop`) is not a replay.
        let mut fresh = Authenticator::new("tolk", [9; 32]);
        let _ = fresh.nonce(now, 0);
        if fresh.check(now, "INVITE", &answer, Some("password1"), &both) == Verdict::Accepted {
            accepted += 1;
        }
        assert_eq!(fresh.check(now, "INVITE", &answer, None, &both), Verdict::Refused);
    }
    assert!(parsed > 1000, "many mutations stay readable ({parsed})");
    // Only mutations that leave the signed parts alone may still get in.
    assert!(accepted < parsed / 2, "{accepted} of {parsed}");
}

/// Inputs the coverage-guided fuzzer found (fuzz/artifacts), kept as regression tests.
#[test]
fn fuzzer_findings_stay_fixed() {
    let limits = Limits::default();
    // A start line with a multi-byte character across byte 4 (string slicing panic).
    let cases: &[&[u8]] = &[&[32, 0, 46, 196, 143, 32, 109, 10, 77, 80, 80, 10, 2]];
    for case in cases {
        let _ = parse_datagram(case, &limits);
        let _ = parse_message(case, Framing::Stream, &limits);
    }
    // 2026-12-06 (sip_message, 7.6 M runs in): a datagram of exactly max_headers headers and
    // no Content-Length parses; its print has Content-Length added (RFC 3261 §20.14), one
    // header over the limit, so the round trip must allow one more.
    let at_limit = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/fuzz/sip_message-00b42fe0"
    ))
    .unwrap();
    let Ok(SipMessage::Request(req)) = parse_datagram(&at_limit, &limits) else {
        panic!("the datagram at the header limit parses");
    };
    let printed = req.to_bytes();
    assert!(parse_message(&printed, Framing::Stream, &limits).is_err());
    let one_more = Limits {
        max_headers: limits.max_headers + 1,
        ..limits
    };
    let again = parse_message(&printed, Framing::Stream, &one_more).expect("prints to a message that parses");
    let SipMessage::Request(again) = again else {
        panic!("a request")
    };
    assert_eq!(again.to_bytes(), printed, "print is stable");
}

#[test]
fn stream_framer_survives_random_chunking_and_garbage() {
    let mut rng = fastrand::Rng::with_seed(5626);
    let limits = Limits::default();
    let seeds = seeds();
    for _ in 0..500 {
        let mut framer = StreamFramer::new(limits);
        let mut stream = Vec::new();
        for _ in 0..rng.usize(1..6) {
            let seed = &seeds[rng.usize(..seeds.len())];
            stream.extend(if rng.bool() {
                mutate(&mut rng, seed)
            } else {
                seed.clone()
            });
        }
        let mut at = 0;
        let mut items = 0;
        while at < stream.len() {
            let n = rng.usize(1..512).min(stream.len() - at);
            framer.push(&stream[at..at + n]);
            at += n;
            while let Some(item) = framer.next_item() {
                items += 1;
                assert!(items < 100_000, "framer loops");
                if let tolk::sip::msg::stream::StreamItem::Message(m) = item {
                    let _ = parse_message(&m, Framing::Stream, &limits);
                }
            }
        }
        assert!(framer.buffered() <= limits.max_message_bytes + 512);
    }
}
