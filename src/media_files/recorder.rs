//! Recording to WAV (PCM16 mono), streamed to disk without holding the call in memory, and
//! recoverable after a crash.
//!
//! The RIFF and data sizes in the header are rewritten every second of audio (and at the end),
//! so a file cut short by a crash is at most a second out of date; [`repair`] fixes the sizes
//! from the file's length at start-up, and a file that is not a WAV we wrote is reported and
//! moved aside (`.corrupt`), never kept silently as if it were a recording. Ogg Opus
//! recordings ([`OggOpusRecorder`], RFC 7845) flush a page every second; [`repair_ogg`] cuts a
//! torn tail back to the last whole page.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const HEADER_LEN: u64 = 44;

/// Errors while recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The two recording formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    /// PCM16 mono WAV: large, universally readable.
    Wav,
    /// Ogg Opus (RFC 7845): about a tenth of the size.
    OggOpus,
}

impl RecordFormat {
    /// The format a file name asks for: `.ogg`/`.opus` is Ogg Opus, anything else WAV.
    pub fn from_path(path: &Path) -> RecordFormat {
        match crate::config::RecordFormat::from_path(path) {
            crate::config::RecordFormat::Ogg => RecordFormat::OggOpus,
            crate::config::RecordFormat::Wav => RecordFormat::Wav,
        }
    }
}

/// A recording in either format, fed 20 ms frames.
pub enum Recorder {
    Wav(WavRecorder),
    /// Boxed: the Opus encoder's state is large beside a WAV writer.
    OggOpus(Box<OggOpusRecorder>),
}

impl Recorder {
    /// Creates `path` (never overwriting) for mono PCM at `rate`.
    pub fn create(path: &Path, format: RecordFormat, rate: u32) -> Result<Recorder, RecordError> {
        Ok(match format {
            RecordFormat::Wav => Recorder::Wav(WavRecorder::create(path, rate)?),
            RecordFormat::OggOpus => Recorder::OggOpus(Box::new(OggOpusRecorder::create(path, rate)?)),
        })
    }

    /// Appends one 20 ms frame.
    pub fn write(&mut self, pcm: &[i16]) -> Result<(), RecordError> {
        match self {
            Recorder::Wav(w) => w.write(pcm),
            Recorder::OggOpus(o) => o.write(pcm),
        }
    }

    /// Finalises the file (sizes, end of stream) and syncs it to disk.
    pub fn finish(self) -> Result<PathBuf, RecordError> {
        match self {
            Recorder::Wav(w) => w.finish(),
            Recorder::OggOpus(o) => (*o).finish(),
        }
    }
}

/// A WAV file being written.
pub struct WavRecorder {
    path: PathBuf,
    out: BufWriter<File>,
    rate: u32,
    samples: u64,
    since_header: u64,
}

fn header(rate: u32, data_bytes: u32) -> [u8; 44] {
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36u32.wrapping_add(data_bytes)).to_le_bytes());
    h[8..16].copy_from_slice(b"WAVEfmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&1u16.to_le_bytes()); // mono
    h[24..28].copy_from_slice(&rate.to_le_bytes());
    h[28..32].copy_from_slice(&(rate * 2).to_le_bytes());
    h[32..34].copy_from_slice(&2u16.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_bytes.to_le_bytes());
    h
}

impl WavRecorder {
    /// Creates `path` (its directory must exist) for mono PCM16 at `rate`.
    pub fn create(path: &Path, rate: u32) -> Result<Self, RecordError> {
        let io = |source| RecordError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = crate::private_files::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io)?;
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        out.write_all(&header(rate, 0)).map_err(io)?;
        Ok(WavRecorder {
            path: path.to_path_buf(),
            out,
            rate,
            samples: 0,
            since_header: 0,
        })
    }

    /// Appends a frame.
    pub fn write(&mut self, pcm: &[i16]) -> Result<(), RecordError> {
        let mut bytes = [0u8; 2 * 960];
        for chunk in pcm.chunks(960) {
            for (i, s) in chunk.iter().enumerate() {
                bytes[2 * i..2 * i + 2].copy_from_slice(&s.to_le_bytes());
            }
            self.out
                .write_all(&bytes[..2 * chunk.len()])
                .map_err(|source| self.io(source))?;
        }
        self.samples += pcm.len() as u64;
        self.since_header += pcm.len() as u64;
        if self.since_header >= self.rate as u64 {
            self.update_header()?;
        }
        Ok(())
    }

    fn io(&self, source: std::io::Error) -> RecordError {
        RecordError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn update_header(&mut self) -> Result<(), RecordError> {
        self.since_header = 0;
        let data = (self.samples * 2).min(u32::MAX as u64 - 36) as u32;
        self.out.flush().map_err(|e| self.io(e))?;
        let file = self.out.get_mut();
        let r = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&header(self.rate, data)))
            .and_then(|_| file.seek(SeekFrom::End(0)).map(|_| ()));
        r.map_err(|e| self.io(e))
    }

    /// Samples written so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Writes the final sizes and syncs the file to disk.
    pub fn finish(mut self) -> Result<PathBuf, RecordError> {
        self.update_header()?;
        self.out.get_ref().sync_all().map_err(|e| self.io(e))?;
        Ok(self.path.clone())
    }
}

/// What [`repair`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairOutcome {
    /// The header matched the data: nothing to do.
    Intact,
    /// The sizes were stale (a crash mid-call); fixed. `samples` now in the file.
    Repaired { samples: u64 },
    /// A torn tail (a crash mid-write) was cut off at the last whole Ogg page.
    Truncated { bytes_removed: u64 },
    /// Not a WAV we wrote; moved to `moved_to` and reported.
    Corrupt { reason: &'static str, moved_to: PathBuf },
}

/// Checks and, if needed, repairs a recording after a crash (RIFF/data sizes from the file
/// length; a trailing odd byte dropped).
pub fn repair(path: &Path) -> std::io::Result<RepairOutcome> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    let mut h = [0u8; 44];
    let readable = len >= HEADER_LEN && f.read_exact(&mut h).is_ok();
    let reason = if !readable {
        Some("shorter than a WAV header")
    } else if &h[0..4] != b"RIFF" || &h[8..16] != b"WAVEfmt " || &h[36..40] != b"data" {
        Some("not a RIFF/WAVE file with a data chunk where tolk writes it")
    } else if u16::from_le_bytes([h[20], h[21]]) != 1 || u16::from_le_bytes([h[34], h[35]]) != 16 {
        Some("not PCM16")
    } else {
        None
    };
    if let Some(reason) = reason {
        drop(f);
        let moved_to = path.with_extension("wav.corrupt");
        std::fs::rename(path, &moved_to)?;
        return Ok(RepairOutcome::Corrupt { reason, moved_to });
    }
    let data_len = (len - HEADER_LEN) & !1;
    let declared = u32::from_le_bytes([h[40], h[41], h[42], h[43]]) as u64;
    if declared == data_len && len == HEADER_LEN + data_len {
        return Ok(RepairOutcome::Intact);
    }
    f.set_len(HEADER_LEN + data_len)?;
    let rate = u32::from_le_bytes([h[24], h[25], h[26], h[27]]);
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&header(rate, data_len.min(u32::MAX as u64 - 36) as u32))?;
    f.sync_all()?;
    Ok(RepairOutcome::Repaired { samples: data_len / 2 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("tolk-rec-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn frames(n: usize) -> Vec<Vec<i16>> {
        (0..n)
            .map(|k| (0..160).map(|i| ((k * 160 + i) % 30_000) as i16).collect())
            .collect()
    }

    #[test]
    fn a_finished_recording_reads_back_sample_for_sample() {
        let d = dir();
        let path = d.join("a.wav");
        let mut r = WavRecorder::create(&path, 8000).unwrap();
        for f in frames(500) {
            r.write(&f).unwrap();
        }
        r.finish().unwrap();
        let reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.spec().sample_rate, 8000);
        let got: Vec<i16> = reader.into_samples::<i16>().map(|s| s.unwrap()).collect();
        assert_eq!(got, frames(500).concat());
        assert_eq!(repair(&path).unwrap(), RepairOutcome::Intact);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_crash_mid_recording_is_repaired_with_every_sample_on_disk() {
        let d = dir();
        let path = d.join("crash.wav");
        let mut r = WavRecorder::create(&path, 8000).unwrap();
        for f in frames(130) {
            r.write(&f).unwrap();
        }
        // The process dies: buffers flushed by the OS, no final header update.
        r.out.flush().unwrap();
        std::mem::forget(r);
        // Plus a torn last write: one odd byte.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[7])
            .unwrap();
        assert_eq!(repair(&path).unwrap(), RepairOutcome::Repaired { samples: 130 * 160 });
        let got: Vec<i16> = hound::WavReader::open(&path)
            .unwrap()
            .into_samples::<i16>()
            .map(|s| s.unwrap())
            .collect();
        assert_eq!(got, frames(130).concat());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_file_that_is_not_our_wav_is_reported_and_moved_aside() {
        let d = dir();
        let path = d.join("junk.wav");
        std::fs::write(&path, b"this is not a wav file at all, just some bytes........").unwrap();
        match repair(&path).unwrap() {
            RepairOutcome::Corrupt { moved_to, .. } => {
                assert!(moved_to.exists());
                assert!(!path.exists());
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(d.join("short.wav"), b"RIFF").unwrap();
        assert!(matches!(
            repair(&d.join("short.wav")).unwrap(),
            RepairOutcome::Corrupt { .. }
        ));
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let d = dir();
        let path = d.join("exists.wav");
        std::fs::write(&path, b"keep").unwrap();
        assert!(WavRecorder::create(&path, 8000).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// An Ogg Opus recording (RFC 7845): mono, encoded as it streams, a page flushed every
/// second so a crash loses at most that; [`repair_ogg`] cuts a torn file back to its last
/// whole page.
pub struct OggOpusRecorder {
    path: PathBuf,
    writer: ogg::writing::PacketWriter<'static, BufWriter<File>>,
    encoder: crate::media::codec::opus::OpusEncoder,
    serial: u32,
    /// Samples per 20 ms at the input rate, and the 48 kHz granule step per frame.
    frame: usize,
    granule: u64,
    held: Option<Vec<u8>>,
    packets: u64,
    /// The frame padded to 20 ms, reused.
    frame_buf: Vec<i16>,
}

/// Opus pre-skip we declare (RFC 7845 §4.2): libopus's usual encoder look-ahead at 48 kHz.
const PRE_SKIP: u16 = 312;

impl OggOpusRecorder {
    /// Creates `path` for mono PCM at `rate` (8, 12, 16, 24 or 48 kHz), 20 ms frames.
    pub fn create(path: &Path, rate: u32) -> Result<Self, RecordError> {
        let io = |source| RecordError::Io {
            path: path.display().to_string(),
            source,
        };
        let encoder = crate::media::codec::opus::OpusEncoder::new(rate)
            .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())))?;
        let file = crate::private_files::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io)?;
        let mut writer = ogg::writing::PacketWriter::new(BufWriter::with_capacity(64 * 1024, file));
        let serial = fastrand::u32(..);
        // RFC 7845 §5.1 identification header.
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(1); // channels
        head.extend_from_slice(&PRE_SKIP.to_le_bytes());
        head.extend_from_slice(&rate.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // mapping family
        writer
            .write_packet(head, serial, ogg::writing::PacketWriteEndInfo::EndPage, 0)
            .map_err(io)?;
        // RFC 7845 §5.2 comment header.
        let vendor = b"tolk";
        let mut tags = Vec::with_capacity(16 + vendor.len());
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        writer
            .write_packet(tags, serial, ogg::writing::PacketWriteEndInfo::EndPage, 0)
            .map_err(io)?;
        Ok(OggOpusRecorder {
            path: path.to_path_buf(),
            writer,
            encoder,
            serial,
            frame: (rate / 50) as usize,
            granule: PRE_SKIP as u64,
            held: None,
            packets: 0,
            frame_buf: Vec::with_capacity((rate / 50) as usize),
        })
    }

    fn io(&self, source: std::io::Error) -> RecordError {
        RecordError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Appends one 20 ms frame.
    pub fn write(&mut self, pcm: &[i16]) -> Result<(), RecordError> {
        use crate::media::codec::Encoder as _;
        // The packet is handed to the Ogg writer, so it is one allocation per 20 ms frame;
        // the padded input frame is reused.
        let mut packet = Vec::with_capacity(200);
        self.frame_buf.clear();
        self.frame_buf.extend_from_slice(&pcm[..pcm.len().min(self.frame)]);
        self.frame_buf.resize(self.frame, 0);
        self.encoder.encode(&self.frame_buf, &mut packet);
        // Hold one packet back so the last one can carry the end-of-stream flag.
        if let Some(prev) = self.held.replace(packet) {
            self.granule += 960;
            self.packets += 1;
            let end = if self.packets.is_multiple_of(50) {
                ogg::writing::PacketWriteEndInfo::EndPage
            } else {
                ogg::writing::PacketWriteEndInfo::NormalPacket
            };
            let (serial, granule) = (self.serial, self.granule);
            self.writer
                .write_packet(prev, serial, end, granule)
                .map_err(|e| self.io(e))?;
            if end == ogg::writing::PacketWriteEndInfo::EndPage {
                self.writer.inner_mut().flush().map_err(|e| self.io(e))?;
            }
        }
        Ok(())
    }

    /// Ends the stream and syncs the file.
    pub fn finish(mut self) -> Result<PathBuf, RecordError> {
        let last = self.held.take().unwrap_or_default();
        self.granule += 960;
        let (serial, granule) = (self.serial, self.granule);
        self.writer
            .write_packet(last, serial, ogg::writing::PacketWriteEndInfo::EndStream, granule)
            .map_err(|e| self.io(e))?;
        let mut out = self.writer.into_inner();
        out.flush().map_err(|e| RecordError::Io {
            path: self.path.display().to_string(),
            source: e,
        })?;
        out.get_ref().sync_all().map_err(|e| RecordError::Io {
            path: self.path.display().to_string(),
            source: e,
        })?;
        Ok(self.path)
    }
}

/// Cuts an Ogg file back to its last whole page (a crash can leave a torn one). Returns the
/// bytes removed; a file that does not start with an Ogg page is moved aside like a corrupt
/// WAV. Page CRCs are not checked: a torn write shows as a short page, which is what a crash
/// leaves.
pub fn repair_ogg(path: &Path) -> std::io::Result<RepairOutcome> {
    let bytes = std::fs::read(path)?;
    let mut offset = 0usize;
    while offset + 27 <= bytes.len() && &bytes[offset..offset + 4] == b"OggS" {
        let segments = bytes[offset + 26] as usize;
        if offset + 27 + segments > bytes.len() {
            break;
        }
        let body: usize = bytes[offset + 27..offset + 27 + segments]
            .iter()
            .map(|&b| b as usize)
            .sum();
        let size = 27 + segments + body;
        if offset + size > bytes.len() {
            break;
        }
        offset += size;
    }
    if offset == 0 {
        let moved_to = path.with_extension("ogg.corrupt");
        std::fs::rename(path, &moved_to)?;
        return Ok(RepairOutcome::Corrupt {
            reason: "does not start with a whole Ogg page",
            moved_to,
        });
    }
    if offset == bytes.len() {
        return Ok(RepairOutcome::Intact);
    }
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(offset as u64)?;
    f.sync_all()?;
    Ok(RepairOutcome::Truncated {
        bytes_removed: (bytes.len() - offset) as u64,
    })
}

#[cfg(test)]
mod ogg_tests {
    use super::*;
    use crate::media::codec::Decoder as _;
    use crate::media::codec::opus::OpusDecoder;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("tolk-ogg-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn speechy(n: usize) -> Vec<i16> {
        crate::media::codec::test_signal::speechy(16_000, n as f32 / 16_000.0)
    }

    fn read_packets(path: &Path) -> Vec<ogg::Packet> {
        let mut r = ogg::reading::PacketReader::new(std::fs::File::open(path).unwrap());
        let mut out = Vec::new();
        while let Ok(Some(p)) = r.read_packet() {
            out.push(p);
        }
        out
    }

    #[test]
    fn an_ogg_opus_recording_has_rfc7845_headers_and_decodes_back() {
        let d = dir();
        let path = d.join("a.opus");
        let pcm = speechy(16_000 * 2);
        let mut rec = OggOpusRecorder::create(&path, 16_000).unwrap();
        for f in pcm.chunks(320) {
            rec.write(f).unwrap();
        }
        rec.finish().unwrap();
        let packets = read_packets(&path);
        assert!(packets[0].data.starts_with(b"OpusHead"));
        assert!(packets[1].data.starts_with(b"OpusTags"));
        assert_eq!(packets.len() - 2, 100, "one packet per 20 ms");
        assert!(packets.last().unwrap().last_in_stream());
        let mut dec = OpusDecoder::new(16_000).unwrap();
        let mut back = Vec::new();
        for p in &packets[2..] {
            dec.decode(&p.data, &mut back);
        }
        let snr = crate::media::codec::test_signal::snr_db_aligned(&pcm, &back, 2000);
        assert!(snr > 4.0, "SNR {snr:.1} dB");
        assert_eq!(repair_ogg(&path).unwrap(), RepairOutcome::Intact);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_torn_ogg_file_is_cut_back_to_whole_pages() {
        let d = dir();
        let path = d.join("crash.opus");
        let pcm = speechy(16_000 * 3);
        let mut rec = OggOpusRecorder::create(&path, 16_000).unwrap();
        for f in pcm.chunks(320) {
            rec.write(f).unwrap();
        }
        // The process dies mid-page: flushed pages on disk plus half a page.
        rec.writer.inner_mut().flush().unwrap();
        std::mem::forget(rec);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"OggS\0\0\0\0partial").unwrap();
        drop(f);
        assert!(matches!(repair_ogg(&path).unwrap(), RepairOutcome::Truncated { bytes_removed } if bytes_removed > 0));
        let packets = read_packets(&path);
        assert!(
            packets.len() >= 2 + 100,
            "at least two seconds survive: {} packets",
            packets.len()
        );
        std::fs::write(d.join("junk.opus"), b"not ogg").unwrap();
        assert!(matches!(
            repair_ogg(&d.join("junk.opus")).unwrap(),
            RepairOutcome::Corrupt { .. }
        ));
        std::fs::remove_dir_all(d).unwrap();
    }
}
