//! baresip, a real softphone, calls the echo number: it sends a 440 Hz tone and must hear
//! the same tone back (checked by spectrum of what it decoded).

mod common;
use common::{Gateway, free_port};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn baresip() -> &'static str {
    for p in ["/usr/bin/baresip", "/usr/local/bin/baresip"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!("baresip is not installed: run scripts/test.sh, which installs it");
}

fn write_tone_wav(path: &Path, freq: f64, secs: usize) {
    let rate = 8000u32;
    let samples: Vec<i16> = (0..rate as usize * secs)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin()) as i16)
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, wav).unwrap();
}

/// PCM16 samples of a canonical WAV file (the data chunk found by name).
fn read_wav(path: &Path) -> Vec<i16> {
    let bytes = std::fs::read(path).unwrap();
    let pos = bytes.windows(4).position(|w| w == b"data").expect("data chunk") + 8;
    bytes[pos..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// Power at `freq` by the Goertzel algorithm, normalised by length.
fn goertzel(samples: &[i16], freq: f64, rate: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in samples {
        let s = x as f64 + k * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - k * s1 * s2) / samples.len().max(1) as f64
}

#[test]
fn baresip_hears_its_own_tone_from_the_echo_number() {
    let gw = Gateway::start(&[]);
    let dir = gw.data_dir.join("baresip");
    std::fs::create_dir_all(&dir).unwrap();
    let tone = dir.join("tone.wav");
    write_tone_wav(&tone, 440.0, 6);
    let port = free_port();
    let config = format!(
        "poll_method epoll\nsip_listen 127.0.0.1:{port}\naudio_player aufile,{d}/unused.wav\naudio_source aufile,{t}\n\
audio_alert aufile,/dev/null\naudio_srate 8000\naudio_channels 1\nmodule_path /usr/lib/baresip/modules\n\
module g711.so\nmodule aufile.so\nmodule sndfile.so\nsnd_path {d}\nmodule menu.so\nmodule account.so\nmodule uuid.so\n\
module_app account.so\nmodule_app menu.so\n",
        d = dir.display(),
        t = tone.display()
    );
    std::fs::write(dir.join("config"), config).unwrap();
    std::fs::write(
        dir.join("accounts"),
        "<sip:tester@127.0.0.1>;regint=0;audio_codecs=PCMU\n",
    )
    .unwrap();
    let out = Command::new(baresip())
        .arg("-f")
        .arg(&dir)
        .args(["-e", &format!("/dial sip:+15550100300@{}", gw.sip), "-t", "5"])
        .output()
        .expect("run baresip");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("Call established"),
        "baresip output:\n{text}\ntolk log:\n{}",
        gw.log_text()
    );
    let heard = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .expect("baresip dumped what it decoded");
    let samples = read_wav(&heard);
    assert!(
        samples.len() > 8000,
        "at least a second of audio came back ({} samples)",
        samples.len()
    );
    // Skip the first half second (the echo starts one round trip late).
    let tail = &samples[4000..];
    let at_tone = goertzel(tail, 440.0, 8000.0);
    let off_tone = goertzel(tail, 1000.0, 8000.0);
    assert!(
        at_tone > 1000.0 * off_tone,
        "440 Hz {at_tone:.0} vs 1000 Hz {off_tone:.0}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(gw.metrics().contains("calls_total{outcome=\"answered\"} 1"));
}
