//! Malformed INVITEs get a clear 4xx from a real `tolk serve` and never a 200: broken SDP
//! (NUL bytes, a port past 65535, no connection address), broken header lines. Each is sent
//! as a scanner or a broken carrier would, over UDP on loopback.

mod common;
use common::{Gateway, Uac, sdp_offer};
use std::time::Duration;

/// Sends `invite` (from a fresh UAC) and returns the final status.
fn status_for(gw: &Gateway, build: impl Fn(&mut Uac, &str) -> String) -> (u16, String) {
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let offer = sdp_offer(rtp.local_addr().unwrap(), "0", "");
    let mut uac = Uac::new(gw.sip, "+15550100300");
    let invite = build(&mut uac, &offer);
    uac.send(&invite);
    match uac.final_response(Duration::from_secs(3)) {
        Some((code, msg)) => {
            if code >= 200 {
                // Let the transaction complete (an ACK for a non-2xx, or the end of the call).
                let ack = uac.request("ACK", "", "");
                uac.send(&ack);
                if code < 300 {
                    let bye = uac.request("BYE", "", "");
                    uac.send(&bye);
                }
            }
            (code, msg)
        }
        None => (0, String::new()),
    }
}

#[test]
fn broken_offers_and_header_lines_get_4xx_not_200() {
    let gw = Gateway::start(&[]);
    type Case = (&'static str, fn(&str) -> String, &'static [u16]);
    let cases: &[Case] = &[
        ("NUL in the SDP", |o| o.replacen("s=-", "s=\0-", 1), &[400, 488]),
        (
            "NUL in an attribute",
            |o| o.replacen("a=rtpmap:0 PCMU/8000", "a=rtpmap:0 PC\0MU/8000", 1),
            &[400, 488],
        ),
        (
            "port past 65535",
            |o| {
                let m = o.lines().find(|l| l.starts_with("m=")).unwrap().to_string();
                let port = m.split(' ').nth(1).unwrap();
                o.replacen(&m, &m.replacen(port, "70000", 1), 1)
            },
            &[400, 488],
        ),
        (
            "no c= line anywhere",
            |o| {
                o.lines()
                    .filter(|l| !l.starts_with("c="))
                    .map(|l| format!("{l}\r\n"))
                    .collect()
            },
            &[400, 488],
        ),
        (
            "a c= line with no address",
            |o| {
                let c = o.lines().find(|l| l.starts_with("c=")).unwrap().to_string();
                o.replacen(&c, "c=IN IP4", 1)
            },
            &[400, 488],
        ),
    ];
    for (what, mutate, want) in cases {
        let (code, msg) = status_for(&gw, |uac, offer| uac.request("INVITE", "", &mutate(offer)));
        assert!(want.contains(&code), "{what}: got {code}\n{msg}");
    }
    // A header line without a colon.
    let (code, msg) = status_for(&gw, |uac, offer| {
        let invite = uac.request("INVITE", "", offer);
        invite.replacen(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nThis line has no colon\r\n",
            1,
        )
    });
    assert_eq!(code, 400, "a header line without a colon\n{msg}");
    // A well-formed one still works.
    let (code, msg) = status_for(&gw, |uac, offer| uac.request("INVITE", "", offer));
    assert_eq!(code, 200, "{msg}");
}
