//! Talk-off: real synthetic speech (espeak-ng, a male and a female voice, over a minute each)
//! through the in-band DTMF detector must give no digits (ITU-T Q.24 asks detectors not to
//! be fooled by speech). espeak-ng is installed by scripts/test.sh.

use std::path::Path;
use std::process::Command;
use tolk::media::dtmf::inband::InbandDetector;
use tolk::media::resample::Resampler;

const TEXT: &str = "Good morning, and thank you for calling. Please listen carefully, as our menu \
options have recently changed. If you know the extension of the person you are calling, you may \
dial it at any time. For sales, press one. For support, press two. To hear these options again, \
stay on the line. Our offices are open Monday through Friday from nine in the morning until six \
in the evening. The conference you are joining has already started; you are the fifth person to \
join. Your call is important to us, and a representative will be with you shortly. Seven, eight, \
nine, zero, star, pound: numbers spoken aloud are not key presses. ";

fn espeak() -> &'static str {
    for p in ["/usr/bin/espeak-ng", "/usr/local/bin/espeak-ng"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!("espeak-ng is not installed: run scripts/test.sh, which installs it");
}

/// Mono PCM16 and rate of a canonical WAV (espeak-ng writes 22,050 Hz mono).
fn read_wav(path: &Path) -> (Vec<i16>, u32) {
    let bytes = std::fs::read(path).unwrap();
    let rate = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
    let pos = bytes.windows(4).position(|w| w == b"data").expect("data chunk") + 8;
    (
        bytes[pos..]
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect(),
        rate,
    )
}

fn speech_8k(voice: &str) -> Vec<i16> {
    let path = std::env::temp_dir().join(format!(
        "tolk-talkoff-{}-{}.wav",
        std::process::id(),
        voice.replace('+', "_")
    ));
    let text = TEXT.repeat(3);
    let status = Command::new(espeak())
        .args(["-v", voice, "-s", "165", "-w"])
        .arg(&path)
        .arg(&text)
        .status()
        .expect("run espeak-ng");
    assert!(status.success());
    let (pcm, rate) = read_wav(&path);
    let _ = std::fs::remove_file(&path);
    let mut r = Resampler::new(rate, 8000);
    let mut out = Vec::new();
    r.process(&pcm, &mut out);
    // Normalise to a loud but unclipped telephone level (peak -3 dBFS).
    let peak = out.iter().map(|&s| (s as i32).abs()).max().unwrap_or(1).max(1) as f64;
    out.iter().map(|&s| (s as f64 * 23_000.0 / peak) as i16).collect()
}

#[test]
fn a_minute_of_speech_in_two_voices_gives_no_digits() {
    for voice in ["en-us", "en-us+f3"] {
        let pcm = speech_8k(voice);
        assert!(
            pcm.len() > 8000 * 60,
            "{voice}: at least a minute of speech ({} s)",
            pcm.len() / 8000
        );
        let mut d = InbandDetector::default();
        let digits: String = pcm.chunks(160).flat_map(|f| d.process(f)).collect();
        assert_eq!(digits, "", "{voice}: false digits from speech");
    }
}
