//! The first call path end to end over real sockets: a scripted UAC calls the echo number,
//! sends RTP, gets it back, holds, resumes, hangs up. Also: 404 for other numbers, and the
//! graceful shutdown on SIGTERM, and that the contrib dashboard and alerts watch metrics
//! tolk really exports.

mod common;
use common::{Gateway, Uac, body, dialplan_with, header, http_get, sdp_audio_port, sdp_offer};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

/// Decodes the PCMA packets that arrive within `within` (A-law expansion per G.711).
fn receive_pcma(rtp: &UdpSocket, within: Duration) -> Vec<i16> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    rtp.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let until = std::time::Instant::now() + within;
    while std::time::Instant::now() < until {
        if let Ok((n, _)) = rtp.recv_from(&mut buf)
            && n > 12
            && buf[1] & 0x7f == 8
        {
            out.extend(
                buf[12..n]
                    .iter()
                    .map(|&c| tolk::media::codec::g711::ALAW_TO_LINEAR[c as usize]),
            );
        }
    }
    out
}

fn power_at(x: &[i16], freq: f64) -> f64 {
    tolk::media::analysis::tone_power(x, freq, 8000)
}

fn rtp_packet(seq: u16, ssrc: u32, pt: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt, (seq >> 8) as u8, seq as u8, 0, 0, 0, 160, 0, 0, 0, 0];
    p[4..8].copy_from_slice(&(seq as u32 * 160).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Sends `n` packets paced at 20 ms and counts the echoes that carry one of the sent
/// payloads, with the right payload type and another SSRC. The echo comes back through the
/// jitter buffer and a decode/encode, so it lags by a few frames.
fn echo_round(rtp: &UdpSocket, to: SocketAddr, pt: u8, n: u16) -> usize {
    echo_round_from(rtp, to, pt, n, 0x1234_5678, 0)
}

/// Like [`echo_round`], from source `ssrc`, sequence numbers (and timestamps) from `seq0`.
fn echo_round_from(rtp: &UdpSocket, to: SocketAddr, pt: u8, n: u16, ssrc: u32, seq0: u16) -> usize {
    let base = fastrand::u8(..);
    let payloads: Vec<Vec<u8>> = (0..n)
        .map(|seq| {
            (0..160)
                .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seq as u8).wrapping_add(base))
                .collect()
        })
        .collect();
    let mut echoed = std::collections::HashSet::new();
    let mut buf = [0u8; 2048];
    rtp.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut check = |len: usize, buf: &[u8]| {
        if len == 172
            && buf[1] & 0x7f == pt
            && buf[8..12] != ssrc.to_be_bytes()
            && let Some(i) = payloads.iter().position(|p| p[..] == buf[12..len])
        {
            echoed.insert(i);
        }
    };
    for (seq, payload) in payloads.iter().enumerate() {
        rtp.send_to(&rtp_packet(seq0.wrapping_add(seq as u16), ssrc, pt, payload), to)
            .unwrap();
        if let Ok((len, _)) = rtp.recv_from(&mut buf) {
            check(len, &buf);
        }
    }
    let until = std::time::Instant::now() + Duration::from_millis(400);
    while std::time::Instant::now() < until {
        if let Ok((len, _)) = rtp.recv_from(&mut buf) {
            check(len, &buf);
        }
    }
    echoed.len()
}

#[test]
fn echo_number_plays_back_rtp_and_honours_hold() {
    let gw = Gateway::start(&[]);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    rtp.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut uac = Uac::new(gw.sip, "+15550100300");
    // PCMA only: the answer must pick it.
    let invite = uac.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "8 101", ""));
    uac.send(&invite);
    let (code, ok) = uac.final_response(Duration::from_secs(3)).expect("a final response");
    assert_eq!(code, 200, "{ok}");
    let answer = body(&ok);
    assert!(answer.contains("a=rtpmap:8 PCMA/8000"), "{answer}");
    assert!(answer.contains("a=rtpmap:101 telephone-event/8000"), "{answer}");
    assert!(header(&ok, "Contact").is_some());
    let media = SocketAddr::from(([127, 0, 0, 1], sdp_audio_port(answer).unwrap()));
    let ack = uac.request("ACK", "", "");
    uac.send(&ack);

    // The echo test starts with a 200 ms beep at 1 kHz, sent to the address in our offer.
    let beep = receive_pcma(&rtp, Duration::from_millis(400));
    assert!(beep.len() >= 1200, "about 200 ms of beep ({} samples)", beep.len());
    assert!(power_at(&beep, 1000.0) > 100.0 * power_at(&beep, 440.0), "a 1 kHz beep");

    // G.711 decode then encode gives back every code exactly (the codec tests prove it), so
    // the echoed payloads equal the sent ones; a few may fall to jitter-buffer start or to a
    // busy machine's scheduling (the count is not a timing assertion, the match is).
    assert!(echo_round(&rtp, media, 8, 25) >= 20, "packets echoed");

    // Hold: we send sendonly, tolk answers recvonly and stops sending.
    let reinvite = uac.request(
        "INVITE",
        "",
        &sdp_offer(rtp.local_addr().unwrap(), "8 101", "a=sendonly\r\n"),
    );
    uac.send(&reinvite);
    let (code, ok) = uac.final_response(Duration::from_secs(3)).unwrap();
    assert_eq!(code, 200);
    assert!(body(&ok).contains("a=recvonly"), "{}", body(&ok));
    let ack = uac.request("ACK", "", "");
    uac.send(&ack);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(echo_round(&rtp, media, 8, 5), 0, "nothing sent while held");

    // Resume.
    let reinvite = uac.request(
        "INVITE",
        "",
        &sdp_offer(rtp.local_addr().unwrap(), "8 101", "a=sendrecv\r\n"),
    );
    uac.send(&reinvite);
    let (code, ok) = uac.final_response(Duration::from_secs(3)).unwrap();
    assert_eq!(code, 200);
    assert!(body(&ok).contains("a=sendrecv"));
    let ack = uac.request("ACK", "", "");
    uac.send(&ack);
    std::thread::sleep(Duration::from_millis(100));
    assert!(echo_round(&rtp, media, 8, 15) >= 10, "echo resumes");
    // The caller's source changes mid-stream (a new SSRC whose sequence and timestamps go
    // back, as after a carrier failover): tolk treats it as a new stream and keeps echoing.
    // Without that, every packet of the new source would be "late" and dropped.
    for k in 0..10u16 {
        rtp.send_to(&rtp_packet(5000 + k, 0x1234_5678, 8, &[0xd5; 160]), media)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        echo_round_from(&rtp, media, 8, 15, 0x7777_0001, 4990) >= 10,
        "echo after an SSRC change"
    );

    let bye = uac.request("BYE", "", "");
    uac.send(&bye);
    assert_eq!(uac.final_response(Duration::from_secs(3)).map(|(c, _)| c), Some(200));
    // The dialog is gone: a second BYE is 481.
    let bye = uac.request("BYE", "", "");
    uac.send(&bye);
    assert_eq!(uac.final_response(Duration::from_secs(3)).map(|(c, _)| c), Some(481));
}

#[test]
fn other_numbers_get_404_and_no_numbers_in_logs() {
    let gw = Gateway::start(&[]);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut uac = Uac::new(gw.sip, "+18885550123");
    let invite = uac.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    uac.send(&invite);
    assert_eq!(uac.final_response(Duration::from_secs(3)).map(|(c, _)| c), Some(404));
    let log = gw.log_text();
    assert!(log.contains("incoming call"), "{log}");
    assert!(
        !log.contains("+18885550123") && !log.contains("+15551234567"),
        "full numbers in log:\n{log}"
    );
    // The dialled number (the service's) is shown masked; the caller not even masked.
    assert!(log.contains("+1888555****"), "{log}");
    assert!(!log.contains("+1555123****") && log.contains("caller=number"), "{log}");
}

#[test]
fn offer_without_common_codec_gets_488() {
    let gw = Gateway::start(&[]);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut uac = Uac::new(gw.sip, "+15550100300");
    let offer = sdp_offer(rtp.local_addr().unwrap(), "18", "a=rtpmap:18 G729/8000\r\n");
    let invite = uac.request("INVITE", "", &offer);
    uac.send(&invite);
    assert_eq!(uac.final_response(Duration::from_secs(3)).map(|(c, _)| c), Some(488));
}

#[test]
fn sigterm_refuses_new_calls_then_drains_and_exits() {
    let mut gw = Gateway::start(&[("TOLK_SHUTDOWN_DRAIN_SECS", "2")]);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut caller = Uac::new(gw.sip, "+15550100300");
    let invite = caller.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    caller.send(&invite);
    assert_eq!(caller.final_response(Duration::from_secs(3)).map(|(c, _)| c), Some(200));
    let ack = caller.request("ACK", "", "");
    caller.send(&ack);

    gw.terminate();
    std::thread::sleep(Duration::from_millis(300));
    // New calls: 503 with Retry-After.
    let mut late = Uac::new(gw.sip, "+15550100300");
    let invite = late.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    late.send(&invite);
    let (code, resp) = late
        .final_response(Duration::from_secs(3))
        .expect("an answer while draining");
    assert_eq!(code, 503);
    assert!(header(&resp, "Retry-After").is_some());
    // The call in progress is ended by tolk with a BYE after the drain time.
    let bye = caller
        .recv(Duration::from_secs(5))
        .expect("BYE from tolk after the drain");
    assert!(bye.starts_with("BYE "), "{bye}");
    caller.respond_ok(&bye);
    assert_eq!(
        gw.wait_exit(Duration::from_secs(10)),
        Some(0),
        "exits cleanly:\n{}",
        gw.log_text()
    );
}

/// An RTP socket on an even port with its RTCP socket on the next one (RFC 3550 §11).
fn rtp_pair() -> (UdpSocket, UdpSocket) {
    for _ in 0..100 {
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rtp.local_addr().unwrap().port();
        if !port.is_multiple_of(2) {
            continue;
        }
        if let Ok(rtcp) = UdpSocket::bind(("127.0.0.1", port + 1)) {
            return (rtp, rtcp);
        }
    }
    panic!("no free RTP/RTCP port pair");
}

#[test]
fn rtcp_reports_arrive_during_the_call_and_bye_at_the_end() {
    let gw = Gateway::start(&[]);
    let (rtp, rtcp) = rtp_pair();
    rtcp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut uac = Uac::new(gw.sip, "+15550100300");
    let invite = uac.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    uac.send(&invite);
    let (code, ok) = uac.final_response(Duration::from_secs(3)).unwrap();
    assert_eq!(code, 200);
    let media = SocketAddr::from(([127, 0, 0, 1], sdp_audio_port(body(&ok)).unwrap()));
    let ack = uac.request("ACK", "", "");
    uac.send(&ack);
    // Keep media flowing so the leg latches and sends (and therefore reports as a sender).
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    let mut report = None;
    let mut seq = 0u16;
    let mut buf = [0u8; 1500];
    while std::time::Instant::now() < deadline && report.is_none() {
        rtp.send_to(&rtp_packet(seq, 0x4242_4242, 0, &[0xff; 160]), media)
            .unwrap();
        seq += 1;
        if let Ok((n, _)) = rtcp.recv_from(&mut buf) {
            report = Some(buf[..n].to_vec());
        }
    }
    let report = report.expect("an RTCP report within the first interval (RFC 3550 §6.2)");
    // V=2, first packet SR (200) or RR (201), and an SDES (202) follows in the compound.
    assert_eq!(report[0] >> 6, 2);
    assert!(report[1] == 200 || report[1] == 201, "{:?}", &report[..4]);
    let first_len = (u16::from_be_bytes([report[2], report[3]]) as usize + 1) * 4;
    assert_eq!(report[first_len + 1], 202, "SDES after the report");
    let bye = uac.request("BYE", "", "");
    uac.send(&bye);
    assert_eq!(uac.final_response(Duration::from_secs(3)).map(|(c, _)| c), Some(200));
    // RFC 3550 §6.6: the leg says goodbye.
    let mut saw_bye = false;
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < until && !saw_bye {
        if let Ok((n, _)) = rtcp.recv_from(&mut buf) {
            let mut at = 0;
            while at + 4 <= n {
                if buf[at + 1] == 203 {
                    saw_bye = true;
                }
                at += (u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize + 1) * 4;
            }
        }
    }
    assert!(saw_bye, "RTCP BYE after the call");
}

fn logged_digits(log: &str, source: &str) -> String {
    log.lines()
        .filter(|l| l.contains(" digit ") && l.contains(source))
        .filter_map(|l| l.split("digit=").nth(1)?.chars().next())
        .collect()
}

#[test]
fn inband_and_sip_info_digits_join_the_call_digit_stream() {
    // A G.711 caller without telephone-event keys 1, 5, # in-band, then 9 by SIP INFO.
    // No beep (its tone would be echoed into the detector); digits are logged at debug.
    let dir = dialplan_with(&[("echo", "answer(); echo(3600);")]);
    let gw = Gateway::start(&[
        ("TOLK_DIALPLAN_DIR", dir.to_str().unwrap()),
        ("TOLK_LOG_LEVEL", "info,tolk::call::controller=debug"),
    ]);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut uac = Uac::new(gw.sip, "+15550100300");
    let invite = uac.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    uac.send(&invite);
    let (code, ok) = uac.final_response(Duration::from_secs(3)).unwrap();
    assert_eq!(code, 200);
    assert!(!body(&ok).contains("telephone-event"), "none offered, none answered");
    let media = SocketAddr::from(([127, 0, 0, 1], sdp_audio_port(body(&ok)).unwrap()));
    let ack = uac.request("ACK", "", "");
    uac.send(&ack);
    let mut pcm = Vec::new();
    for key in ['1', '5', '#'] {
        pcm.extend(tolk::media::dtmf::inband::generate(key, 80, -10.0, 0.0, 0.0));
        pcm.extend(std::iter::repeat_n(0i16, 8 * 80));
    }
    pcm.extend(std::iter::repeat_n(0i16, 8 * 200));
    for (seq, frame) in pcm.chunks(160).enumerate() {
        let payload: Vec<u8> = frame
            .iter()
            .map(|&s| tolk::media::codec::g711::linear_to_ulaw(s))
            .collect();
        rtp.send_to(&rtp_packet(seq as u16, 0x0bad_cafe, 0, &payload), media)
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let info = uac.request("INFO", "", "").replace(
        "Content-Length: 0\r\n\r\n",
        "Content-Type: application/dtmf-relay\r\nContent-Length: 24\r\n\r\nSignal=9\r\nDuration=160\r\n",
    );
    uac.send(&info);
    assert_eq!(uac.final_response(Duration::from_secs(3)).map(|(c, _)| c), Some(200));
    std::thread::sleep(Duration::from_millis(200));
    let log = gw.log_text();
    assert_eq!(logged_digits(&log, "\"inband\""), "15#", "{log}");
    assert_eq!(logged_digits(&log, "\"sip_info\""), "9", "{log}");
    let metrics = gw.metrics();
    assert!(metrics.contains("dtmf_digits_total{source=\"inband\"} 3"), "{metrics}");
    assert!(
        metrics.contains("dtmf_digits_total{source=\"sip_info\"} 1"),
        "{metrics}"
    );
}

#[test]
fn recordings_cut_short_by_a_crash_are_repaired_at_start() {
    // A WAV with a stale header (as a crash leaves it) and a file that is no recording,
    // placed where tolk keeps recordings, before it starts.
    let dir = std::env::temp_dir().join(format!("tolk-rec-start-{}-{}", std::process::id(), fastrand::u64(..)));
    let recordings = dir.join("recordings");
    std::fs::create_dir_all(&recordings).unwrap();
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&36u32.to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&16000u32.to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&0u32.to_le_bytes()); // stale: no data declared
    wav.extend(std::iter::repeat_n(0x11u8, 1600)); // 800 samples on disk
    std::fs::write(recordings.join("call.wav"), &wav).unwrap();
    std::fs::write(recordings.join("junk.wav"), b"not a wav").unwrap();
    let data_dir = dir.to_string_lossy().into_owned();
    let gw = Gateway::start(&[("TOLK_DATA_DIR", &data_dir)]);
    let fixed = std::fs::read(recordings.join("call.wav")).unwrap();
    assert_eq!(
        u32::from_le_bytes([fixed[40], fixed[41], fixed[42], fixed[43]]),
        1600,
        "data size repaired"
    );
    assert!(recordings.join("junk.wav.corrupt").exists());
    let log = gw.log_text();
    assert!(log.contains("header repaired") && log.contains("moved aside"), "{log}");
    drop(gw);
    let _ = std::fs::remove_dir_all(dir);
}

/// The metric names `text` (PromQL in the contrib files) uses: tolk's prefixes only.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    const PREFIXES: &[&str] = &[
        "sip_", "cdr_", "calls_", "flows_", "flow_", "mixer_", "pin_", "optout_", "room_", "srtp_", "dtmf_",
    ];
    text.split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| PREFIXES.iter().any(|p| w.starts_with(p)) && w.len() > 6)
        .map(|w| w.strip_suffix("_bucket").unwrap_or(w).to_string())
        .collect()
}

#[test]
fn the_contrib_dashboard_and_alerts_name_only_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let alerts = std::fs::read_to_string(root.join("contrib/prometheus/alerts.yml")).unwrap();
    let dashboard = std::fs::read_to_string(root.join("contrib/grafana/tolk-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: String = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string() + "\n")
        .collect();
    let used: std::collections::BTreeSet<String> =
        metric_names(&alerts).into_iter().chain(metric_names(&exprs)).collect();
    assert!(used.len() >= 15, "{used:?}");

    // One call, then what /metrics shows.
    let gw = Gateway::start(&[]);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut uac = Uac::new(gw.sip, "+15550100300");
    let invite = uac.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    uac.send(&invite);
    assert_eq!(uac.final_response(Duration::from_secs(3)).map(|(c, _)| c), Some(200));
    let ack = uac.request("ACK", "", "");
    uac.send(&ack);
    let exported = http_get(gw.admin, "/metrics").expect("/metrics");
    let bye = uac.request("BYE", "", "");
    uac.send(&bye);
    // Counters of rare events appear at their first event; every name must still be one
    // the source emits, and the ones a call makes must be on /metrics now.
    let mut sources = String::new();
    let mut dirs = vec![root.join("src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                sources.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    for name in &used {
        assert!(
            sources.contains(&format!("\"{name}\"")),
            "`{name}` is not a metric tolk emits"
        );
    }
    for live in [
        "calls_total",
        "sip_dialogs_active",
        "flows_active",
        "sip_requests_received_total",
        "mixer_tick_lateness_seconds",
    ] {
        assert!(used.contains(live), "the contrib files watch {live}");
        assert!(
            exported.lines().any(|l| l.starts_with(live)),
            "`{live}` is not on /metrics after a call:\n{exported}"
        );
    }
}

/// HEP v3 export: the INVITE tolk received and the 200 it sent reach a collector, each
/// with its addresses, ports, SIP protocol type, capture id and the Call-ID.
#[test]
fn sip_messages_are_copied_to_a_hep_collector() {
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let dest = collector.local_addr().unwrap().to_string();
    let gw = Gateway::start(&[("TOLK_HEP_DESTINATION", dest.as_str()), ("TOLK_HEP_CAPTURE_ID", "77")]);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut uac = Uac::new(gw.sip, "+15550100300");
    let invite = uac.request("INVITE", "", &sdp_offer(rtp.local_addr().unwrap(), "0", ""));
    uac.send(&invite);
    assert_eq!(uac.final_response(Duration::from_secs(3)).map(|(c, _)| c), Some(200));
    let ack = uac.request("ACK", "", "");
    uac.send(&ack);
    let bye = uac.request("BYE", "", "");
    uac.send(&bye);
    let mut packets = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline && packets.len() < 6 {
        if let Ok(n) = collector.recv(&mut buf) {
            packets.push(buf[..n].to_vec());
        }
    }
    // An independent reading of each packet (HEP3: id, length, vendor/type/length chunks).
    let decode = |p: &[u8]| -> std::collections::HashMap<u16, Vec<u8>> {
        assert_eq!(&p[..4], b"HEP3");
        assert_eq!(u16::from_be_bytes([p[4], p[5]]) as usize, p.len());
        let (mut at, mut out) = (6, std::collections::HashMap::new());
        while at < p.len() {
            let kind = u16::from_be_bytes([p[at + 2], p[at + 3]]);
            let len = u16::from_be_bytes([p[at + 4], p[at + 5]]) as usize;
            out.insert(kind, p[at + 6..at + len].to_vec());
            at += len;
        }
        out
    };
    let decoded: Vec<_> = packets.iter().map(|p| decode(p)).collect();
    let with_start = |start: &str| {
        decoded
            .iter()
            .find(|c| c.get(&0x000f).is_some_and(|v| v.starts_with(start.as_bytes())))
            .unwrap_or_else(|| panic!("no copy of `{start}` among {} packets", decoded.len()))
    };
    let port = |c: &std::collections::HashMap<u16, Vec<u8>>, k| u16::from_be_bytes([c[&k][0], c[&k][1]]);
    let got = with_start("INVITE ");
    assert_eq!(port(got, 0x0007), uac.local().port(), "source: the caller");
    assert_eq!(port(got, 0x0008), gw.sip.port(), "destination: tolk");
    assert_eq!(
        (got[&0x0001].clone(), got[&0x0002].clone(), got[&0x000b].clone()),
        (vec![2], vec![17], vec![1])
    );
    assert_eq!(got[&0x000c], 77u32.to_be_bytes());
    assert_eq!(got[&0x0011], uac.call_id.as_bytes(), "correlated by Call-ID");
    let ok = with_start("SIP/2.0 200");
    assert_eq!(port(ok, 0x0007), gw.sip.port(), "source: tolk");
    assert_eq!(port(ok, 0x0008), uac.local().port());
    let exported = http_get(gw.admin, "/metrics").unwrap();
    assert!(exported.contains("hep_packets_sent_total"), "{exported}");
}
