//! The CDR journal: an append-only, checksummed log of [`JournalEntry`]s on local disk. Every
//! record goes here first, in one `write` call, before anything talks to PostgreSQL; the
//! writer tails it into the database and advances a checkpoint. So the journal is also the
//! spool: when PostgreSQL is down or slow the journal simply grows, and on restart everything
//! after the checkpoint is replayed, in order. A record handed to the journal survives a kill
//! of the process at once (it is in the kernel), and a power loss once the writer's next
//! `fdatasync` (at most one batch, 100 ms, later) has run.
//!
//! Layout under the journal directory: `segment-000001.log`, ... (a new segment after
//! [`SEGMENT_BYTES`]), `checkpoint` (`<segment> <offset>`, replaced atomically), and `lock`
//! (held by the one process that appends). Each entry is framed as `len: u32 LE`,
//! `crc32: u32 LE`, then `len` bytes of JSON; a torn last frame after a crash is cut off when
//! the journal is next opened.

use super::model::JournalEntry;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A new segment is started once the current one is this large.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Frames larger than this are corrupt (a record is a few hundred bytes).
const MAX_FRAME: u32 = 1024 * 1024;

/// A place in the journal: segment number and byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("segment-{segment:06}.log"))
}

/// Segment numbers present in `dir`, ascending.
pub fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out: Vec<u64> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("segment-")?.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// Frames `entry` into `out`.
pub fn frame(entry: &JournalEntry, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    // Serialising our own types into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, entry);
    let len = (out.len() - start - 8) as u32;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What reading one frame from a buffer found.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// A good entry and the bytes it used.
    Entry(Box<JournalEntry>, usize),
    /// Not enough bytes yet (or a torn tail).
    Incomplete,
    /// A frame whose checksum or content is wrong: skip this many bytes.
    Corrupt(usize),
    /// Garbage where a frame header should be: nothing after it can be trusted.
    Garbage,
}

/// Reads one frame from the start of `buf`.
pub fn read_frame(buf: &[u8]) -> Frame {
    if buf.len() < 8 {
        return Frame::Incomplete;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > MAX_FRAME {
        return Frame::Garbage;
    }
    let end = 8 + len as usize;
    if buf.len() < end {
        return Frame::Incomplete;
    }
    let body = &buf[8..end];
    if crc32fast::hash(body) != crc {
        return Frame::Corrupt(end);
    }
    match serde_json::from_slice(body) {
        Ok(e) => Frame::Entry(Box::new(e), end),
        Err(_) => Frame::Corrupt(end),
    }
}

/// The appending side. One per journal directory (the `lock` file enforces it).
pub struct Journal {
    dir: PathBuf,
    file: File,
    segment: u64,
    len: u64,
    /// Framed bytes a failed write left behind; written before anything newer.
    backlog: Vec<u8>,
    buf: Vec<u8>,
    _lock: File,
}

/// Errors opening the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
    #[error("{0}: another tolk process is using this CDR journal")]
    Locked(String),
}

impl Journal {
    /// Opens (creating) the journal in `dir`, takes its lock, and cuts a torn last frame off
    /// the newest segment. Returns the journal and how many torn bytes were removed.
    pub fn open(dir: &Path) -> Result<(Journal, u64), JournalError> {
        let io = |e| JournalError::Io(dir.display().to_string(), e);
        crate::private_files::create_dir(dir).map_err(io)?;
        let lock = crate::private_files::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(JournalError::Locked(dir.display().to_string())),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let segment = segments(dir).map_err(io)?.last().copied().unwrap_or(1);
        let path = segment_path(dir, segment);
        let mut file = crate::private_files::options()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let good = valid_prefix(&bytes);
        let torn = bytes.len() as u64 - good;
        if torn > 0 {
            file.set_len(good).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        Ok((
            Journal {
                dir: dir.to_path_buf(),
                file,
                segment,
                len: good,
                backlog: Vec::new(),
                buf: Vec::with_capacity(4096),
                _lock: lock,
            },
            torn,
        ))
    }

    /// Appends entries in one write. On an I/O error (disk full) the bytes are kept and
    /// written before the next append; the error is returned so the caller can raise an alarm.
    pub fn append(&mut self, entries: &[JournalEntry]) -> io::Result<()> {
        self.buf.clear();
        for e in entries {
            frame(e, &mut self.buf);
        }
        if self.len >= SEGMENT_BYTES && self.backlog.is_empty() {
            self.rotate()?;
        }
        let mut pending = std::mem::take(&mut self.backlog);
        pending.extend_from_slice(&self.buf);
        match self.file.write_all(&pending) {
            Ok(()) => {
                self.len += pending.len() as u64;
                Ok(())
            }
            Err(e) => {
                // A partial write may have landed: cut it back so frames stay whole.
                let _ = self.file.set_len(self.len);
                self.backlog = pending;
                Err(e)
            }
        }
    }

    /// Bytes waiting because writes failed.
    pub fn backlog_bytes(&self) -> usize {
        self.backlog.len()
    }

    /// Starts a new segment (the writer removes the old ones once they are in the database).
    pub fn rotate(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let next = self.segment + 1;
        self.file = crate::private_files::options()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(segment_path(&self.dir, next))?;
        self.segment = next;
        self.len = 0;
        Ok(())
    }

    /// A handle that can `fdatasync` the current segment from another thread.
    pub fn sync_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Where the next entry will go.
    pub fn end(&self) -> Position {
        Position {
            segment: self.segment,
            offset: self.len,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The length of the run of whole, valid frames at the start of `bytes`.
fn valid_prefix(bytes: &[u8]) -> u64 {
    let mut at = 0usize;
    loop {
        match read_frame(&bytes[at..]) {
            Frame::Entry(_, n) => at += n,
            _ => return at as u64,
        }
    }
}

/// The checkpoint: everything before it is in the database.
pub fn load_checkpoint(dir: &Path) -> Position {
    let text = std::fs::read_to_string(dir.join("checkpoint")).unwrap_or_default();
    let mut parts = text.split_whitespace().map(|p| p.parse::<u64>());
    match (parts.next(), parts.next()) {
        (Some(Ok(segment)), Some(Ok(offset))) => Position { segment, offset },
        // No checkpoint yet: from the first segment there is.
        _ => Position {
            segment: segments(dir).ok().and_then(|s| s.first().copied()).unwrap_or(1),
            offset: 0,
        },
    }
}

/// Stores the checkpoint atomically (write, fsync, rename) and removes segments before it.
pub fn store_checkpoint(dir: &Path, pos: Position) -> io::Result<()> {
    let tmp = dir.join("checkpoint.tmp");
    {
        let mut f = crate::private_files::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        writeln!(f, "{} {}", pos.segment, pos.offset)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, dir.join("checkpoint"))?;
    for s in segments(dir)? {
        if s < pos.segment {
            std::fs::remove_file(segment_path(dir, s))?;
        }
    }
    Ok(())
}

/// Bytes in the journal after `pos` (the spool backlog).
pub fn bytes_after(dir: &Path, pos: Position) -> u64 {
    segments(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|&s| s >= pos.segment)
        .map(|s| {
            let len = std::fs::metadata(segment_path(dir, s)).map(|m| m.len()).unwrap_or(0);
            if s == pos.segment {
                len.saturating_sub(pos.offset)
            } else {
                len
            }
        })
        .sum()
}

/// Reads entries from a position on.
pub struct JournalReader {
    dir: PathBuf,
    pos: Position,
    file: Option<File>,
    buf: Vec<u8>,
    /// Frames skipped for a bad checksum.
    pub corrupt_frames: u64,
}

impl JournalReader {
    pub fn new(dir: &Path, pos: Position) -> Self {
        JournalReader {
            dir: dir.to_path_buf(),
            pos,
            file: None,
            buf: Vec::with_capacity(64 * 1024),
            corrupt_frames: 0,
        }
    }

    /// The position after the last entry returned.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// Up to `max` entries after the current position, each with the position after it.
    /// Moves on to the next segment when this one is exhausted and a newer one exists.
    pub fn read(&mut self, max: usize) -> io::Result<Vec<(JournalEntry, Position)>> {
        let mut out = Vec::new();
        while out.len() < max {
            if self.file.is_none() {
                match File::open(segment_path(&self.dir, self.pos.segment)) {
                    Ok(mut f) => {
                        f.seek(SeekFrom::Start(self.pos.offset))?;
                        self.file = Some(f);
                        self.buf.clear();
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        // A checkpoint past a removed segment: go to the next one there is.
                        match segments(&self.dir)?.into_iter().find(|&s| s > self.pos.segment) {
                            Some(s) => {
                                self.pos = Position { segment: s, offset: 0 };
                                continue;
                            }
                            None => return Ok(out),
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(file) = self.file.as_mut() else { return Ok(out) };
            let mut chunk = [0u8; 32 * 1024];
            loop {
                match read_frame(&self.buf) {
                    Frame::Entry(e, n) => {
                        self.buf.drain(..n);
                        self.pos.offset += n as u64;
                        out.push((*e, self.pos));
                        if out.len() >= max {
                            return Ok(out);
                        }
                    }
                    Frame::Corrupt(n) => {
                        self.buf.drain(..n);
                        self.pos.offset += n as u64;
                        self.corrupt_frames += 1;
                    }
                    Frame::Incomplete | Frame::Garbage => {
                        let n = file.read(&mut chunk)?;
                        if n == 0 {
                            break;
                        }
                        self.buf.extend_from_slice(&chunk[..n]);
                    }
                }
            }
            // The end of this segment's bytes. If a newer segment exists, the appender has
            // moved on; one more read catches bytes written just before it did.
            let newer = segments(&self.dir)?.into_iter().find(|&s| s > self.pos.segment);
            match newer {
                Some(s) => {
                    let n = file.read(&mut chunk)?;
                    if n > 0 {
                        self.buf.extend_from_slice(&chunk[..n]);
                        continue;
                    }
                    if !self.buf.is_empty() {
                        // A torn frame in a finished segment cannot complete: skip it.
                        self.corrupt_frames += 1;
                    }
                    self.pos = Position { segment: s, offset: 0 };
                    self.file = None;
                    self.buf.clear();
                }
                None => return Ok(out),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::model::tests::sample;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tolk-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn entry(i: i64) -> JournalEntry {
        let mut r = sample();
        r.started_at = i;
        JournalEntry::Call(Box::new(r))
    }

    fn started(e: &JournalEntry) -> i64 {
        match e {
            JournalEntry::Call(c) => c.started_at,
            _ => -1,
        }
    }

    #[test]
    fn entries_come_back_in_order_and_the_checkpoint_resumes() {
        let d = tmp("order");
        let (mut j, torn) = Journal::open(&d).unwrap();
        assert_eq!(torn, 0);
        for i in 0..10 {
            j.append(&[entry(i)]).unwrap();
        }
        let mut r = JournalReader::new(&d, load_checkpoint(&d));
        let first = r.read(4).unwrap();
        assert_eq!(first.len(), 4);
        store_checkpoint(&d, first.last().unwrap().1).unwrap();
        let mut r = JournalReader::new(&d, load_checkpoint(&d));
        let rest: Vec<i64> = r.read(100).unwrap().into_iter().map(|(e, _)| started(&e)).collect();
        assert_eq!(rest, (4..10).collect::<Vec<_>>());
        assert_eq!(bytes_after(&d, r.position()), 0);
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn room_sessions_and_recordings_come_back_whole() {
        use crate::cdr::model::{RecordingRow, RoomSessionRow};
        let d = tmp("rooms");
        let (mut j, _) = Journal::open(&d).unwrap();
        let session = JournalEntry::RoomSession(RoomSessionRow {
            room: "demo".into(),
            tenant: Some("t".into()),
            session: uuid::Uuid::now_v7(),
            started_at: 1,
            ended_at: Some(2),
            max_members: Some(3),
        });
        let recording = JournalEntry::Recording(Box::new(RecordingRow {
            id: uuid::Uuid::now_v7(),
            call_id: None,
            room: Some("demo".into()),
            room_session: None,
            path: "room-x.ogg".into(),
            started_at: 1,
            ended_at: None,
            seconds: Some(1.5),
            caller_pseudonym: None,
            retention_class: "standard".into(),
            expires_at: Some(9),
        }));
        j.append(&[session.clone(), recording.clone()]).unwrap();
        let back: Vec<JournalEntry> = JournalReader::new(&d, load_checkpoint(&d))
            .read(10)
            .unwrap()
            .into_iter()
            .map(|(e, _)| e)
            .collect();
        assert_eq!(back, [session, recording]);
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_second_appender_is_refused() {
        let d = tmp("lock");
        let (_j, _) = Journal::open(&d).unwrap();
        assert!(matches!(Journal::open(&d), Err(JournalError::Locked(_))));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_corrupt_frame_skipped() {
        let d = tmp("torn");
        {
            let (mut j, _) = Journal::open(&d).unwrap();
            j.append(&[entry(1), entry(2)]).unwrap();
        }
        let path = segment_path(&d, 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let whole = bytes.len();
        // A crash mid-write: half a frame at the end.
        let mut half = Vec::new();
        frame(&entry(3), &mut half);
        bytes.extend_from_slice(&half[..half.len() / 2]);
        std::fs::write(&path, &bytes).unwrap();
        let (mut j, torn) = Journal::open(&d).unwrap();
        assert_eq!(torn as usize, half.len() / 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, whole);
        j.append(&[entry(4)]).unwrap();
        drop(j);
        // Flip a byte inside the first frame's body: it is skipped, the rest survive.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 0x55;
        std::fs::write(&path, &bytes).unwrap();
        let mut r = JournalReader::new(&d, Position { segment: 1, offset: 0 });
        let got: Vec<i64> = r.read(10).unwrap().into_iter().map(|(e, _)| started(&e)).collect();
        assert_eq!(got, vec![2, 4]);
        assert_eq!(r.corrupt_frames, 1);
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn the_reader_follows_segments_and_the_checkpoint_removes_old_ones() {
        let d = tmp("segments");
        let (mut j, _) = Journal::open(&d).unwrap();
        j.append(&[entry(1)]).unwrap();
        j.rotate().unwrap();
        j.append(&[entry(2)]).unwrap();
        j.rotate().unwrap();
        j.append(&[entry(3)]).unwrap();
        let mut r = JournalReader::new(&d, load_checkpoint(&d));
        let got = r.read(10).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[2].1.segment, 3);
        store_checkpoint(&d, got[2].1).unwrap();
        assert_eq!(segments(&d).unwrap(), vec![3]);
        // Nothing new: an empty read, then new entries appear.
        assert!(r.read(10).unwrap().is_empty());
        j.append(&[entry(4)]).unwrap();
        assert_eq!(r.read(10).unwrap().len(), 1);
        std::fs::remove_dir_all(&d).ok();
    }
}
