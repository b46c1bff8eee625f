//! Parse and print of SIP messages: a carrier INVITE with SDP, and RFC 4475's long request;
//! and the CDR record every new call gets (its pseudonyms and opt-out check), without and
//! with a tenant (`cdr.tenant_pseudonyms`: one more key derivation and HMAC).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use tolk::sip::msg::{Limits, SipMessage, parse_datagram};

const INVITE: &[u8] = b"INVITE sip:+15550100300@198.51.100.10:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK4f2a9c1e;rport\r\n\
Max-Forwards: 69\r\n\
From: \"CARRIER\" <sip:+15551234567@203.0.113.5>;tag=as6f1d2e3c\r\n\
To: <sip:+15550100300@198.51.100.10>\r\n\
Call-ID: 5c1f6f2a7b3d4e1a9f0c@203.0.113.5\r\n\
CSeq: 102 INVITE\r\n\
Contact: <sip:+15551234567@203.0.113.5:5060>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, UPDATE, PRACK\r\n\
Supported: replaces, timer, 100rel\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Min-SE: 90\r\n\
P-Asserted-Identity: <sip:+15551234567@203.0.113.5>\r\n\
User-Agent: CarrierSBC 5.1\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 252\r\n\r\n\
v=0\r\no=SBC 1234 1234 IN IP4 203.0.113.5\r\ns=SBC\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
m=audio 31000 RTP/AVP 0 8 9 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:9 G722/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let longreq = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rfc4475/longreq.dat"
    ))
    .expect("fixture");
    let mut g = c.benchmark_group("sip_msg");
    for (name, msg) in [("invite", INVITE), ("longreq", &longreq[..])] {
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_function(format!("parse/{name}"), |b| {
            b.iter(|| parse_datagram(black_box(msg), &limits))
        });
        let parsed = match parse_datagram(msg, &limits) {
            Ok(SipMessage::Request(r)) => r,
            other => panic!("{name} does not parse: {other:?}"),
        };
        g.bench_function(format!("print/{name}"), |b| b.iter(|| black_box(&parsed).to_bytes()));
        g.bench_function(format!("parse+print/{name}"), |b| {
            b.iter(|| match parse_datagram(black_box(msg), &limits) {
                Ok(SipMessage::Request(r)) => r.to_bytes(),
                _ => unreachable!(),
            })
        });
    }
    g.finish();
}

fn call_record(c: &mut Criterion) {
    use tolk::cdr::{RecordPolicy, privacy::PseudonymKey, subject::OptOuts};
    let registry = OptOuts {
        loaded_at: Some(tolk::clock::now_micros()),
        ..OptOuts::default()
    };
    let policy = RecordPolicy {
        key: PseudonymKey::from_bytes([7; 32]),
        node: "bench".into(),
        default_class: "standard".into(),
        policies: tolk::config::Config::default().retention_policies(),
        opt_outs: std::sync::Arc::new(std::sync::RwLock::new(registry)),
    };
    let mut g = c.benchmark_group("call_record");
    for (name, tenant) in [("no_tenant", None), ("tenant", Some("acme"))] {
        g.bench_function(name, |b| {
            b.iter(|| {
                policy.inbound(
                    Some("+18005550100"),
                    black_box(Some("+14155550123")),
                    black_box(tenant),
                    "c1",
                    tolk::clock::now_micros(),
                )
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, call_record);
criterion_main!(benches);
