//! A room's recording (I/O shell): the mixer thread hands each tick's recorded mix to a
//! writer thread of its own through a bounded queue, and gets the buffers back for reuse, so
//! the tick neither blocks on the disk nor allocates. The writer streams WAV or Ogg Opus
//! (`media_files::recorder`, by the file's extension) and finalises the file when the recorder is
//! dropped (recording stopped, or the room ended), then says how long it is.

use crate::media_files::recorder::{RecordFormat, Recorder};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

/// Called once by the writer when the file is finalised: seconds written, or why it failed.
pub type OnDone = Box<dyn FnOnce(f64, Option<String>) + Send>;

/// Frames queued for the writer (5 s): beyond it frames are dropped and counted.
const QUEUE: usize = 250;

/// The mixer thread's end of a recording.
pub struct RoomRecorder {
    tx: SyncSender<Vec<i16>>,
    back: Receiver<Vec<i16>>,
    pub paused: bool,
    /// Frames the writer could not keep up with.
    pub dropped: u64,
}

impl RoomRecorder {
    /// Starts the writer thread for `path` at `rate`.
    pub fn start(path: PathBuf, rate: u32, on_done: OnDone) -> std::io::Result<RoomRecorder> {
        let (tx, rx) = sync_channel::<Vec<i16>>(QUEUE);
        let (back_tx, back) = sync_channel::<Vec<i16>>(QUEUE);
        std::thread::Builder::new()
            .name("tolk-room-rec".into())
            .spawn(move || write(path, rate, rx, back_tx, on_done))?;
        Ok(RoomRecorder {
            tx,
            back,
            paused: false,
            dropped: 0,
        })
    }

    /// Queues one frame (copied into a recycled buffer); a full queue drops it.
    pub fn push(&mut self, frame: &[i16]) {
        if self.paused {
            return;
        }
        let mut buf = self.back.try_recv().unwrap_or_else(|_| Vec::with_capacity(frame.len()));
        buf.clear();
        buf.extend_from_slice(frame);
        match self.tx.try_send(buf) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped += 1,
        }
    }
}

fn write(path: PathBuf, rate: u32, rx: Receiver<Vec<i16>>, back: SyncSender<Vec<i16>>, on_done: OnDone) {
    let mut recorder = match Recorder::create(&path, RecordFormat::from_path(&path), rate) {
        Ok(r) => r,
        Err(e) => {
            on_done(0.0, Some(e.to_string()));
            // Drain so the mixer's sends fail fast once the queue is dropped.
            drop(rx);
            return;
        }
    };
    let mut samples = 0u64;
    let mut error = None;
    for frame in rx.iter() {
        if error.is_none() {
            match recorder.write(&frame) {
                Ok(()) => samples += frame.len() as u64,
                Err(e) => error = Some(e.to_string()),
            }
        }
        let _ = back.try_send(frame);
    }
    if let Err(e) = recorder.finish() {
        error.get_or_insert(e.to_string());
    }
    on_done(samples as f64 / rate.max(1) as f64, error);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_reach_the_file_and_the_length_is_reported() {
        let dir = std::env::temp_dir().join(format!("tolk-room-rec-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("room.wav");
        let (tx, rx) = std::sync::mpsc::channel();
        let mut rec = RoomRecorder::start(
            path.clone(),
            16_000,
            Box::new(move |secs, err| {
                let _ = tx.send((secs, err));
            }),
        )
        .unwrap();
        let frame = vec![1000i16; 320];
        for _ in 0..50 {
            rec.push(&frame);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        rec.paused = true;
        rec.push(&frame);
        drop(rec);
        let (secs, err) = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(err, None);
        assert!((secs - 1.0).abs() < 1e-9, "{secs}");
        let (pcm, rate) = crate::media_files::prompts::read_mono_wav(&path).unwrap();
        assert_eq!((pcm.len(), rate), (16_000, 16_000));
        let _ = std::fs::remove_dir_all(dir);
    }
}
