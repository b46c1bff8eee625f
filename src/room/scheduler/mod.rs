//! The mixer threads (I/O shell around [`super::mixer`]). Each thread owns a shard of the
//! rooms and ticks on absolute 20 ms deadlines of `CLOCK_MONOTONIC` (`clock_nanosleep` with
//! `TIMER_ABSTIME`, so lateness does not accumulate). A call that joins a room hands its
//! whole RTP stream ([`MediaStream`]) and a duplicate of its sockets to the room's thread;
//! each tick the thread drains every member's socket (non-blocking), plays out and decodes
//! one frame per member, mixes, encodes once per group of members who hear the same thing
//! (per codec), and sends. Leaving hands the stream back to the call's leg task.
//!
//! Control reaches a thread through a bounded queue read with `try_recv` at the start of a
//! tick; what a member's call must know ([`MemberReport`]) goes out through the seat's sink,
//! which must not block (the call's leg gives a bounded channel's `try_send`). Nothing in a
//! tick blocks or logs; buffers are kept and reused, so a steady room does not allocate
//! (membership changes do). Tick lateness and tick duration are histograms at `/metrics`.

use super::mixer::{HearKey, MemberOptions, Mixer, MixerConfig};
use crate::media::codec::Encoder;
use crate::media::codec::pair::{encoder, rate_in_room};
use crate::media::prompt::{PromptPlayer, resampled};
use crate::media::resample::Resampler;
use crate::media::session::{Codec, NegotiatedMedia};
use crate::media::stream::{self, MediaStream, Pull, StreamEvent};
use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

mod commands;
mod live;
mod stats;
#[cfg(test)]
mod tests;
mod thread;

pub use commands::{Command, MemberChange, MemberReport, ReportSink, Seat};
use live::*;
pub use live::{LiveRoom, Scratch};
pub use stats::{Histogram, TICK_STATS, TickStats, render_metrics};
use thread::*;

/// The tick period.
pub const TICK: Duration = Duration::from_millis(20);
/// Commands queued per mixer thread before senders are refused.
const QUEUE: usize = 4096;
/// Deadlines a mixer thread may fall behind by and still catch up on, running the overdue
/// ticks back to back (late) instead of skipping them. A single slow tick (a stall of the
/// machine, a burst of joins) then costs the members a few milliseconds of delay, which
/// their jitter buffers absorb, rather than a lost frame each. A thread further behind is
/// overloaded: it skips to the present so the delay does not grow without bound.
const CATCH_UP_TICKS: u64 = 3;

/// The mixer threads.
pub struct Scheduler {
    shards: Vec<SyncSender<Command>>,
    cfg: MixerConfig,
}

/// A room's thread, as seen by the calls in it.
#[derive(Clone)]
pub struct Shard(SyncSender<Command>);

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shard")
    }
}

impl Shard {
    /// Queues a command; false (and the command back is dropped) when the thread is gone or
    /// its queue is full.
    pub fn send(&self, cmd: Command) -> Result<(), Command> {
        self.0.try_send(cmd).map_err(|e| match e {
            TrySendError::Full(c) | TrySendError::Disconnected(c) => c,
        })
    }
}

impl Scheduler {
    /// Starts `threads` mixer threads (0: one per core).
    pub fn start(threads: usize, cfg: MixerConfig) -> std::io::Result<Scheduler> {
        let n = if threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            threads
        };
        let mut shards = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = sync_channel(QUEUE);
            std::thread::Builder::new()
                .name(format!("tolk-mixer-{i}"))
                .spawn(move || run(rx, cfg))?;
            shards.push(tx);
        }
        Ok(Scheduler { shards, cfg })
    }

    pub fn mixer_config(&self) -> MixerConfig {
        self.cfg
    }

    /// The thread that runs `room` (rooms are sharded by a hash of their name).
    pub fn shard_for(&self, room: &str) -> Shard {
        // FNV-1a: stable across runs, so a room always lands on the same thread.
        let h = room.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        Shard(self.shards[(h % self.shards.len() as u64) as usize].clone())
    }
}

/// The codec's id inside the mixer (members of one codec may share an encoding).
pub fn codec_id(codec: Codec) -> u8 {
    match codec {
        Codec::Pcmu => 0,
        Codec::Pcma => 1,
        Codec::G722 => 2,
        Codec::Opus => 3,
    }
}
