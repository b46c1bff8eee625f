//! baresip, a real softphone, calls the echo number with PCMU, G.722 and Opus: it sends a
//! 440 Hz tone and must hear the same tone back (checked by the spectrum of what it decoded),
//! after tolk decoded, jitter-buffered and re-encoded it.

mod common;
use common::baresip::{baresip, read_wav, require_srtp, write_config, write_tone_wav};
use common::{Gateway, Uac, sdp_offer, status_of};
use std::process::Command;
use std::time::Duration;

fn goertzel(samples: &[i16], freq: f64, rate: f64) -> f64 {
    tolk::media::analysis::tone_power(samples, freq, rate as u32)
}

/// One call from baresip with `codec` (`PCMU` at 8 kHz mono, or `opus/48000/2` at 48 kHz
/// stereo, as baresip's Opus module wants): returns what baresip decoded and its rate.
fn call_echo(codec: &str, rate: u32, channels: u16) -> (Vec<i16>, u32) {
    call_echo_over(codec, rate, channels, Wire::Udp)
}

/// How baresip reaches the gateway.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wire {
    Udp,
    /// SIP over TLS: baresip trusts the gateway's self-signed first-start certificate
    /// (`data_dir/tls/cert.pem`) and dials `;transport=tls`.
    Tls,
    /// TLS, and media in SRTP only (baresip's `mediaenc=srtp-mand`: RTP/SAVP with SDES keys)
    /// to a gateway whose `sip.srtp` is "required".
    TlsSrtp,
}

fn call_echo_over(codec: &str, rate: u32, channels: u16, wire: Wire) -> (Vec<i16>, u32) {
    let tls = wire != Wire::Udp;
    let srtp_env: &[(&str, &str)] = if wire == Wire::TlsSrtp {
        &[("TOLK_SIP_SRTP", "required")]
    } else {
        &[]
    };
    let gw = Gateway::start(srtp_env);
    let dir = gw.data_dir.join("baresip");
    std::fs::create_dir_all(&dir).unwrap();
    let tone = dir.join("tone.wav");
    write_tone_wav(&tone, 440.0, 6, rate, channels);
    write_config(&dir, codec, &tone, rate, channels, "tester", None);
    let target = if tls {
        let cert = gw.data_dir.join("tls").join("cert.pem");
        assert!(cert.exists(), "the first start made a certificate");
        let mut config = std::fs::read_to_string(dir.join("config")).unwrap();
        config.push_str(&format!("sip_cafile {}\n", cert.display()));
        std::fs::write(dir.join("config"), config).unwrap();
        if wire == Wire::TlsSrtp {
            require_srtp(&dir);
        }
        format!("sip:+15550100300@{};transport=tls", gw.sip_tls)
    } else {
        format!("sip:+15550100300@{}", gw.sip)
    };
    let out = Command::new(baresip())
        .arg("-f")
        .arg(&dir)
        .args(["-e", &format!("/dial {target}"), "-t", "5"])
        .output()
        .expect("run baresip");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + String::from_utf8_lossy(&out.stderr).as_ref();
    assert!(
        text.contains("Call established"),
        "baresip output:\n{text}\ntolk log:\n{}",
        gw.log_text()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(gw.metrics().contains("calls_total{outcome=\"answered\"} 1"));
    if tls {
        assert!(
            gw.metric("sip_tls_handshakes_total{outcome=\"ok\"}") >= 1,
            "the call came over TLS"
        );
    }
    let heard = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .expect("baresip dumped what it decoded");
    let log = gw.log_text();
    assert!(log.contains("media quality"), "{log}");
    let srtp_line = log
        .lines()
        .any(|l| l.contains("media quality") && l.contains("srtp=true"));
    assert_eq!(
        srtp_line,
        wire == Wire::TlsSrtp,
        "the stream ran SRTP exactly when asked:\n{log}"
    );
    if wire == Wire::TlsSrtp {
        // Keys travel in SDP: they must never reach the log.
        let answer_key = log.lines().any(|l| l.contains("inline:"));
        assert!(!answer_key, "an SDES key was logged:\n{log}");
        assert_eq!(
            gw.metric("srtp_packets_rejected_total{reason=\"auth\"}"),
            0,
            "baresip's packets all authenticated"
        );
        // The same gateway refuses a plain-RTP offer: SRTP is required.
        let mut uac = Uac::new(gw.sip, "+15550100300");
        let invite = uac.request("INVITE", "", &sdp_offer(uac.local(), "0 101", ""));
        uac.send(&invite);
        let status = std::iter::from_fn(|| uac.recv(Duration::from_secs(5)))
            .take(5)
            .filter_map(|m| status_of(&m))
            .find(|s| *s >= 200);
        assert_eq!(status, Some(488), "plain RTP where SRTP is required");
    }
    read_wav(&heard)
}

fn assert_tone_440(samples: &[i16], rate: u32) {
    assert!(
        samples.len() > rate as usize,
        "at least a second of audio came back ({} samples)",
        samples.len()
    );
    // Skip the first half second (the echo starts a round trip and a jitter buffer late).
    let tail = &samples[rate as usize / 2..];
    let at_tone = goertzel(tail, 440.0, rate as f64);
    let off_tone = goertzel(tail, 1000.0, rate as f64);
    assert!(
        at_tone > 1000.0 * off_tone,
        "440 Hz {at_tone:.0} vs 1000 Hz {off_tone:.0}"
    );
}

#[test]
fn baresip_hears_its_own_tone_over_pcmu() {
    let (samples, rate) = call_echo("PCMU", 8000, 1);
    assert_eq!(rate, 8000);
    assert_tone_440(&samples, rate);
}

#[test]
fn baresip_hears_its_own_tone_over_tls() {
    let (samples, rate) = call_echo_over("PCMU", 8000, 1, Wire::Tls);
    assert_eq!(rate, 8000);
    assert_tone_440(&samples, rate);
}

#[test]
fn baresip_hears_its_own_tone_over_tls_with_mandatory_srtp() {
    let (samples, rate) = call_echo_over("PCMU", 8000, 1, Wire::TlsSrtp);
    assert_eq!(rate, 8000);
    assert_tone_440(&samples, rate);
}

#[test]
fn baresip_hears_its_own_tone_over_g722() {
    let (samples, rate) = call_echo("G722/16000/1", 16_000, 1);
    assert_eq!(rate, 16_000);
    assert_tone_440(&samples, rate);
}

#[test]
fn baresip_hears_its_own_tone_over_opus() {
    let (samples, rate) = call_echo("opus/48000/2", 48_000, 2);
    assert_eq!(rate, 48_000);
    assert_tone_440(&samples, rate);
}
