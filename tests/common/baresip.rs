//! baresip, a real softphone, driven by tests: tone files it sends, WAVs it wrote.

use std::path::Path;

pub fn baresip() -> &'static str {
    for p in ["/usr/bin/baresip", "/usr/local/bin/baresip"] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!("baresip is not installed: run scripts/test.sh, which installs it");
}

pub fn write_tone_wav(path: &Path, freq: f64, secs: usize, rate: u32, channels: u16) {
    let samples: Vec<i16> = (0..rate as usize * secs)
        .flat_map(|i| {
            let v = (8000.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin()) as i16;
            std::iter::repeat_n(v, channels as usize)
        })
        .collect();
    write_wav(path, &samples, rate, channels);
}

/// Writes interleaved PCM16 `samples` as a canonical WAV file.
pub fn write_wav(path: &Path, samples: &[i16], rate: u32, channels: u16) {
    let data_len = (samples.len() * 2) as u32;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&channels.to_le_bytes());
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 2 * channels as u32).to_le_bytes());
    wav.extend_from_slice(&(2 * channels).to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, wav).unwrap();
}

/// The first channel of a canonical PCM16 WAV file, and its sample rate.
pub fn read_wav(path: &Path) -> (Vec<i16>, u32) {
    let bytes = std::fs::read(path).unwrap();
    let channels = u16::from_le_bytes([bytes[22], bytes[23]]).max(1) as usize;
    let rate = u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
    let pos = bytes.windows(4).position(|w| w == b"data").expect("data chunk") + 8;
    let samples = bytes[pos..]
        .chunks_exact(2 * channels)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    (samples, rate)
}

/// Writes a baresip configuration into `dir`: a free SIP port on loopback, `tone` (a WAV at
/// `rate` with `channels`) as the microphone, what it decodes dumped by the sndfile module,
/// one account `user` offering `codec`, and the console on `console` when given.
pub fn write_config(dir: &Path, codec: &str, tone: &Path, rate: u32, channels: u16, user: &str, console: Option<u16>) {
    // baresip also listens for SIP over TLS on the next port up: that one must be free too.
    let sip_port = super::free_port_pair();
    let rtp = super::rtp_block(16);
    let console = console
        .map(|p| format!("module cons.so\ncons_listen 127.0.0.1:{p}\n"))
        .unwrap_or_default();
    let config = format!(
        "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\nrtp_ports {rtp}-{rtp_end}\naudio_player aufile,{d}/unused.wav\naudio_source aufile,{t}\n\
audio_alert aufile,/dev/null\naudio_srate {rate}\naudio_channels {channels}\nmodule_path /usr/lib/baresip/modules\n\
module g711.so\nmodule g722.so\nmodule opus.so\nmodule aufile.so\nmodule sndfile.so\nsnd_path {d}\nmodule menu.so\n{console}\
module account.so\nmodule uuid.so\nmodule_app account.so\nmodule_app menu.so\n",
        d = dir.display(),
        t = tone.display(),
        rtp_end = rtp + 15
    );
    std::fs::write(dir.join("config"), config).unwrap();
    std::fs::write(
        dir.join("accounts"),
        format!("<sip:{user}@127.0.0.1>;regint=0;audio_codecs={codec}\n"),
    )
    .unwrap();
}

/// Makes the baresip in `dir` (after [`write_config`]) send media in SRTP only: its srtp
/// module, loaded before the account module that looks it up, and `mediaenc=srtp-mand`
/// (RTP/SAVP offers with SDES keys, RFC 4568).
pub fn require_srtp(dir: &Path) {
    let config = std::fs::read_to_string(dir.join("config")).unwrap();
    let config = config.replace("module account.so\n", "module srtp.so\nmodule account.so\n");
    std::fs::write(dir.join("config"), config).unwrap();
    let accounts = std::fs::read_to_string(dir.join("accounts")).unwrap();
    std::fs::write(
        dir.join("accounts"),
        accounts.trim_end().to_string() + ";mediaenc=srtp-mand\n",
    )
    .unwrap();
}

/// A baresip process calling the gateway, sending a tone file, dumping what it decodes
/// (`*-dec.wav`, by the sndfile module), and taking commands (`/sndcode 1234#`, `/hold`) on
/// its console socket (the cons module).
pub struct Phone {
    pub dir: std::path::PathBuf,
    child: std::process::Child,
    console: std::net::SocketAddr,
}

impl Phone {
    /// Dials `uri` with `codec` (an `audio_codecs` value such as `PCMU`) sending `tone`
    /// (a WAV at `rate`, mono).
    pub fn dial(dir: &Path, uri: &str, codec: &str, tone: &Path, rate: u32) -> Phone {
        Self::dial_as(dir, uri, codec, tone, rate, "tester")
    }

    /// The same, calling as `user` (a phone number in From, for opt-outs).
    pub fn dial_as(dir: &Path, uri: &str, codec: &str, tone: &Path, rate: u32, user: &str) -> Phone {
        Self::dial_with(dir, uri, codec, tone, rate, user, false)
    }

    /// The same, with `srtp`: media in SRTP only ([`require_srtp`]).
    pub fn dial_with(dir: &Path, uri: &str, codec: &str, tone: &Path, rate: u32, user: &str, srtp: bool) -> Phone {
        std::fs::create_dir_all(dir).unwrap();
        let console_port = super::free_port();
        write_config(dir, codec, tone, rate, 1, user, Some(console_port));
        if srtp {
            require_srtp(dir);
        }
        let log = std::fs::File::create(dir.join("baresip.log")).unwrap();
        let child = std::process::Command::new(baresip())
            .arg("-f")
            .arg(dir)
            .args(["-e", &format!("/dial {uri}"), "-t", "60"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run baresip");
        Phone {
            dir: dir.to_path_buf(),
            child,
            console: std::net::SocketAddr::from(([127, 0, 0, 1], console_port)),
        }
    }

    /// Waits (15 s at most) for the call to be established, then keys `digits` (RFC 4733).
    pub fn key_when_connected(&self, digits: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while !self.log().contains("Call established") {
            assert!(std::time::Instant::now() < deadline, "no call: {}", self.log());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        self.command(&format!("/sndcode {digits}"));
    }

    /// Sends a console command (`/sndcode 1234#`, `/hold`).
    pub fn command(&self, cmd: &str) {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.send_to(format!("{cmd}\n").as_bytes(), self.console).unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("baresip.log")).unwrap_or_default()
    }

    /// Hangs up and quits; returns what baresip decoded (samples, rate).
    pub fn finish(mut self) -> (Vec<i16>, u32) {
        self.command("/quit");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let heard = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .unwrap_or_else(|| panic!("baresip dumped what it decoded; its log:\n{}", self.log()));
        read_wav(&heard)
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A window of what a phone decoded, `from_end` seconds before its end, `secs` long.
pub fn window(samples: &[i16], rate: u32, from_end: f64, secs: f64) -> &[i16] {
    let end = samples.len().saturating_sub((from_end * rate as f64) as usize);
    let start = end.saturating_sub((secs * rate as f64) as usize);
    &samples[start..end]
}
