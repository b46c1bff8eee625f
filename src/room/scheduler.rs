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

use super::mixer::{MemberOptions, Mixer, MixerConfig};
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

/// What the thread does after a tick that ended at `done` (ns), `next` being the next tick's
/// deadline: that deadline (already passed when catching up) and how many ticks it skips.
fn after_tick(next: u64, done: u64, period: u64) -> (u64, u64) {
    if done <= next {
        return (next, 0);
    }
    // Deadlines passed: `next` and every period after it up to `done`.
    let overdue = (done - next) / period + 1;
    if overdue <= CATCH_UP_TICKS {
        (next, 0)
    } else {
        (next + overdue * period, overdue)
    }
}

/// What a room tells a member's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberReport {
    /// What the member's stream found (digits pressed, digits sent).
    Stream(StreamEvent),
    /// A prompt to the member finished.
    PlaybackDone { what: String, ok: bool },
    /// The member started or stopped talking.
    Talking(bool),
    /// No RTP from the member for the seat's `rtp_timeout`.
    TimedOut,
}

/// Takes a member's reports without blocking; false when one could not be taken (it is
/// offered again where that matters: the RTP timeout).
pub type ReportSink = Box<dyn Fn(MemberReport) -> bool + Send>;

/// A call's media, handed to a room.
pub struct Seat {
    /// The member's call (the key of every command about it).
    pub call: u64,
    pub stream: Box<MediaStream>,
    /// Duplicates of the leg's RTP and RTCP sockets, non-blocking.
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    /// Where the stream goes back when the member leaves.
    pub give_back: oneshot::Sender<Box<MediaStream>>,
    pub reports: ReportSink,
    pub rtp_timeout: Duration,
}

/// A change to one member.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemberChange {
    Muted(bool),
    Deaf(bool),
    /// Gain on what the member hears (1.0 = as is).
    ListenGain(f32),
    TalkGain(f32),
}

/// Control for a mixer thread.
pub enum Command {
    Join {
        room: Arc<str>,
        seat: Box<Seat>,
        opts: MemberOptions,
        /// The room waits for a moderator (applies when this join creates the room).
        waiting: bool,
    },
    /// Members hear music on hold instead of each other until a moderator joins.
    Waiting {
        room: Arc<str>,
        waiting: bool,
    },
    /// Record the room's mix (members who opted out left out) to `path`, a new file. Sent
    /// before the room's first member arrives, it waits for it (ten seconds at most).
    Record {
        room: Arc<str>,
        path: std::path::PathBuf,
        on_done: super::recording::OnDone,
        /// Played to the whole room when the recording starts.
        notice: Option<Arc<[i16]>>,
    },
    /// Pause or resume the recording (paused time is not in the file).
    PauseRecording {
        room: Arc<str>,
        paused: bool,
    },
    /// Finalise the recording.
    StopRecording {
        room: Arc<str>,
    },
    /// The member leaves; its stream goes back through `give_back`.
    Leave {
        call: u64,
    },
    /// The call's session changed (re-INVITE: hold, resume, codec, address).
    Media {
        call: u64,
        media: Option<NegotiatedMedia>,
    },
    Change {
        call: u64,
        change: MemberChange,
    },
    /// Play PCM at the room's rate to one member, over what it hears from the room; reported
    /// as `PlaybackDone { what }` when it ends or is replaced.
    PlayTo {
        call: u64,
        pcm: Arc<[i16]>,
        what: String,
    },
    /// Stop what plays to one member.
    StopTo {
        call: u64,
    },
    /// Play PCM at the room's rate to every member of a room (join and leave tones).
    PlayRoom {
        room: Arc<str>,
        pcm: Arc<[i16]>,
    },
}

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

/// Tick statistics for `/metrics`, shared by every mixer thread (atomics, no locks).
pub struct TickStats {
    lateness: Histogram,
    duration: Histogram,
    overruns: AtomicU64,
    catch_ups: AtomicU64,
    members: AtomicU64,
    rooms: AtomicU64,
    encodes: AtomicU64,
    sends: AtomicU64,
    joins: AtomicU64,
    decodes: AtomicU64,
    decodes_skipped: AtomicU64,
}

/// A fixed-bucket histogram of seconds in atomics (Prometheus `histogram` semantics).
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

/// Upper bounds, seconds.
const BUCKETS: [f64; 10] = [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1];

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            counts: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn record(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS.iter().position(|&b| s <= b).unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

pub static TICK_STATS: TickStats = TickStats {
    lateness: Histogram::new(),
    duration: Histogram::new(),
    overruns: AtomicU64::new(0),
    catch_ups: AtomicU64::new(0),
    members: AtomicU64::new(0),
    rooms: AtomicU64::new(0),
    encodes: AtomicU64::new(0),
    sends: AtomicU64::new(0),
    joins: AtomicU64::new(0),
    decodes: AtomicU64::new(0),
    decodes_skipped: AtomicU64::new(0),
};

/// Appends the mixer threads' metrics in the Prometheus text format.
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write;
    let s = &TICK_STATS;
    s.lateness.render(
        "mixer_tick_lateness_seconds",
        "How late a mixer tick started after its 20 ms deadline",
        out,
    );
    s.duration.render(
        "mixer_tick_duration_seconds",
        "Time a mixer tick took (all its rooms)",
        out,
    );
    let counters = [
        (
            "mixer_tick_overruns_total",
            "Ticks skipped because the thread fell more than 3 ticks behind",
            &s.overruns,
        ),
        (
            "mixer_tick_catch_ups_total",
            "Ticks started after their deadline had passed (run late, back to back, after a slow tick)",
            &s.catch_ups,
        ),
        (
            "mixer_encodes_total",
            "Frames encoded by the mixer (one per group, not per member)",
            &s.encodes,
        ),
        (
            "mixer_decodes_total",
            "Frames the mixer decoded or concealed",
            &s.decodes,
        ),
        (
            "mixer_decodes_skipped_total",
            "Opus frames of quiet members left undecoded (their VAD flags said no speech)",
            &s.decodes_skipped,
        ),
        (
            "mixer_packets_sent_total",
            "RTP packets the mixer sent to members",
            &s.sends,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Ordering::Relaxed)
        );
    }
    for (name, help, v) in [
        ("mixer_members", "Members in rooms on the mixer threads", &s.members),
        ("mixer_rooms", "Rooms on the mixer threads", &s.rooms),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
            v.load(Ordering::Relaxed)
        );
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until the absolute `CLOCK_MONOTONIC` time `deadline_ns` (retrying on signals).
fn sleep_until(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: the request points at a timespec we own; no remainder is asked for
        // (TIMER_ABSTIME does not write one).
        let r = unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut()) };
        if r != libc::EINTR {
            return;
        }
    }
}

/// A member on a mixer thread.
struct Member {
    call: u64,
    seat: Box<Seat>,
    /// The codec's rate -> the room's rate.
    to_room: Resampler,
    /// The room's rate -> the codec's rate, for what this member alone hears.
    from_room: Resampler,
    playback: Option<(PromptPlayer, String)>,
    /// Muted by a person (keypad, API, flow); a held member is also kept out of the mix.
    muted: bool,
    deaf: bool,
    held: bool,
    timed_out: bool,
    /// Whether this member's own encoder made its last frame: the far end's decoder is in
    /// step with it, not with the shared encoder.
    own_last_tick: bool,
    /// Ticks spent on the own encoder since the member could have joined a shared encoding.
    handover_ticks: u16,
    /// Whether last tick's frame went through `to_room` into the mix.
    pushed_last_tick: bool,
}

impl Member {
    /// Resamplers between the member's codec rate and the room's `room_rate`, fresh.
    fn fit_resamplers(&mut self, room_rate: u32) {
        let own = self.seat.stream.pcm_rate();
        self.to_room = Resampler::new(own, room_rate);
        self.from_room = Resampler::new(room_rate, own);
    }
}

/// Ticks between a member's RTCP reads and sends (and RTP-timeout checks): 500 ms.
const RTCP_EVERY: u64 = 25;

/// Ticks a member who stopped talking may stay on its own encoder, waiting for a quiet mix
/// to change over to the shared one in (then it changes over anyway).
const HANDOVER_MAX_TICKS: u16 = 250;

/// One encoding shared by every member of a group (same codec, same mix).
struct SharedEncoder {
    codec: Codec,
    listen_gain: f32,
    from_room: Resampler,
    enc: Box<dyn Encoder>,
    /// This tick's payload (groups sharing the encoder in one tick reuse it: the encoder
    /// must see exactly one frame per tick).
    payload: Vec<u8>,
    tick: u64,
}

/// One room's media on a mixer thread: its members' streams, the mixer, and the shared
/// encoders. Public so benches can drive a tick without a thread.
pub struct Room {
    name: Arc<str>,
    /// The configured mixer settings; `cfg.rate` is the rate of a room with a wideband
    /// member, prompts arrive at it and recordings are made at it.
    cfg: MixerConfig,
    /// Mixes at `cfg.rate`, or at 8 kHz while every member is narrowband ([`Room::retune`]).
    mixer: Mixer,
    /// Brings the mix up to `cfg.rate` for the recording while the room mixes at 8 kHz.
    record_up: Option<Resampler>,
    members: Vec<Member>,
    index: HashMap<u64, usize>,
    shared: Vec<SharedEncoder>,
    playback: Option<PromptPlayer>,
    /// Music on hold while the room waits for a moderator (None: the room is live).
    waiting: Option<PromptPlayer>,
    /// The music, made once per room.
    music: Option<Arc<[i16]>>,
    recorder: Option<super::recording::RoomRecorder>,
    /// Frames encoded so far (one per group per tick, not one per member).
    encodes: u64,
    /// The highest loss a member reported over RTCP since the last update, and the loss the
    /// shared encoders were last told (percent: it sets their in-band FEC).
    peer_loss: u8,
    shared_loss: u8,
    /// Frames of quiet members left undecoded so far.
    decodes_skipped: u64,
}

impl Room {
    pub fn new(name: &str, cfg: MixerConfig) -> Room {
        Room {
            name: Arc::from(name),
            cfg,
            mixer: Mixer::new(cfg),
            record_up: None,
            members: Vec::new(),
            index: HashMap::new(),
            shared: Vec::new(),
            playback: None,
            waiting: None,
            music: None,
            recorder: None,
            encodes: 0,
            peer_loss: 0,
            shared_loss: 0,
            decodes_skipped: 0,
        }
    }

    /// Starts recording the room's mix to `path` (a new file).
    pub fn record(&mut self, path: std::path::PathBuf, on_done: super::recording::OnDone) {
        // Recordings are at the configured rate whatever the room mixes at now (a new one
        // starts without the last one's audio in the upsampler).
        let rate = self.cfg.rate;
        if let Some(up) = self.record_up.as_mut() {
            up.restart();
        }
        // A recording already running is finalised first.
        self.recorder = None;
        // A writer thread that cannot start leaves the room unrecorded (on_done is dropped
        // with it; the gateway's registration then has no length).
        self.recorder = super::recording::RoomRecorder::start(path, rate, on_done).ok();
        self.mixer.set_recording(self.recorder.is_some());
    }

    /// Finalises the recording, if any.
    pub fn stop_recording(&mut self) {
        self.recorder = None;
        self.mixer.set_recording(false);
    }

    /// Waits for a moderator (members hear music on hold, not each other) or goes live.
    pub fn set_waiting(&mut self, waiting: bool) {
        self.waiting = if waiting {
            let rate = self.mixer.config().rate;
            let music = self
                .music
                .get_or_insert_with(|| Arc::from(crate::media::tone::music_on_hold(rate)));
            Some(PromptPlayer::new(music.clone()))
        } else {
            None
        };
    }

    /// Adds a member with its stream.
    pub fn join(&mut self, seat: Box<Seat>, mut opts: MemberOptions) {
        let cfg = self.cfg;
        let room_rate = self.rate();
        let mut seat = seat;
        seat.stream.set_opus_rate(cfg.rate, Some(cfg.opus_complexity));
        let call = seat.call;
        let rate = seat.stream.pcm_rate();
        let held = seat.stream.held();
        let member = Member {
            call,
            to_room: Resampler::new(rate, room_rate),
            from_room: Resampler::new(room_rate, rate),
            playback: None,
            muted: opts.muted,
            deaf: opts.deaf,
            held,
            timed_out: false,
            own_last_tick: false,
            handover_ticks: 0,
            pushed_last_tick: false,
            seat,
        };
        opts.codec = member.seat.stream.codec().map(codec_id).unwrap_or(0);
        self.mixer.add(call, opts);
        self.members.push(member);
        TICK_STATS.members.fetch_add(1, Ordering::Relaxed);
        self.reindex();
        let i = self.members.len() - 1;
        self.apply(i);
        self.retune();
    }

    /// The rate the room mixes at now.
    pub fn rate(&self) -> u32 {
        self.mixer.config().rate
    }

    /// Mixes at 8 kHz while every member is narrowband (G.711), at the configured rate
    /// otherwise, as Asterisk's softmix picks its mixing rate from its members: a room of
    /// telephone callers then resamples nothing and mixes half the samples (resampling was
    /// the largest single cost of a 16 kHz G.711 room). Called when members come and go or
    /// change codec; a change rebuilds the room's rate-dependent state between ticks.
    fn retune(&mut self) {
        let narrowband = !self.members.is_empty() && self.members.iter().all(|m| m.seat.stream.pcm_rate() == 8000);
        let want = if narrowband { 8000 } else { self.cfg.rate };
        if want != self.rate() {
            self.set_rate(want);
        }
    }

    fn set_rate(&mut self, rate: u32) {
        let old = self.rate();
        self.mixer = self.mixer.at_rate(MixerConfig { rate, ..self.cfg });
        for m in &mut self.members {
            m.fit_resamplers(rate);
            if let Some((p, what)) = m.playback.take() {
                m.playback = Some((PromptPlayer::new(resampled(p.remaining(), old, rate)), what));
            }
        }
        // Shared encodings start afresh (their resamplers are rate-bound).
        self.shared.clear();
        self.playback = self
            .playback
            .take()
            .map(|p| PromptPlayer::new(resampled(p.remaining(), old, rate)));
        self.music = None;
        if self.waiting.is_some() {
            self.set_waiting(true);
        }
        self.record_up = (rate != self.cfg.rate).then(|| Resampler::new(rate, self.cfg.rate));
    }

    /// A prompt rendered at the configured rate, at the rate the room mixes at now.
    fn at_room_rate(&self, pcm: Arc<[i16]>) -> Arc<[i16]> {
        if self.rate() == self.cfg.rate {
            pcm
        } else {
            resampled(&pcm, self.cfg.rate, self.rate())
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Frames encoded since the room started.
    pub fn encodes(&self) -> u64 {
        self.encodes
    }

    /// Frames of quiet Opus members left undecoded so far.
    pub fn decodes_skipped(&self) -> u64 {
        self.decodes_skipped
    }

    /// One 20 ms tick: receive, mix, encode per group, send.
    pub fn tick(&mut self, now: Instant, tick_no: u64, scratch: &mut Scratch) {
        tick_room(self, now, tick_no, scratch);
    }

    fn reindex(&mut self) {
        self.index = self.members.iter().enumerate().map(|(i, m)| (m.call, i)).collect();
    }

    /// Mixer options from what people asked and the call's state: a held member is neither
    /// heard (their hold music stays out of the room) nor sent anything.
    fn apply(&mut self, i: usize) {
        let m = &self.members[i];
        let (muted, deaf) = (m.muted || m.held, m.deaf || m.held);
        let codec = m.seat.stream.codec().map(codec_id).unwrap_or(0);
        self.mixer.set(m.call, |o| {
            o.muted = muted;
            o.deaf = deaf;
            o.codec = codec;
        });
    }
}

/// Scratch buffers of one thread, shared by its rooms.
#[derive(Default)]
pub struct Scratch {
    batch: super::batch::RecvBatch,
    room_pcm: Vec<i16>,
    mixed: Vec<i16>,
    codec_pcm: Vec<i16>,
    room_tone: Vec<i16>,
    music: Vec<i16>,
}

/// Commands for a room or a call this thread has not seen join yet (the registry acts before
/// the call's leg hands its stream over), with when they expire. They are carried out, in
/// order, when the room or the call arrives.
type PendingRecords = Vec<(Command, Instant)>;

/// How long a command may wait for its room or call.
const PENDING_FOR: Duration = Duration::from_secs(10);

/// The room or call a command is for.
enum Target<'a> {
    Room(&'a str),
    Call(u64),
}

fn target(cmd: &Command) -> Option<Target<'_>> {
    Some(match cmd {
        Command::Waiting { room, .. }
        | Command::Record { room, .. }
        | Command::PauseRecording { room, .. }
        | Command::StopRecording { room }
        | Command::PlayRoom { room, .. } => Target::Room(room),
        Command::Leave { call }
        | Command::Media { call, .. }
        | Command::Change { call, .. }
        | Command::PlayTo { call, .. }
        | Command::StopTo { call } => Target::Call(*call),
        Command::Join { .. } => return None,
    })
}

/// Drops pending commands past their time (a recording's owner is told).
fn expire(pending: &mut PendingRecords, now: Instant) {
    for (cmd, _) in pending.extract_if(.., |p| p.1 <= now) {
        if let Command::Record { on_done, .. } = cmd {
            on_done(0.0, Some("the room did not start".into()));
        }
    }
}

fn run(rx: Receiver<Command>, cfg: MixerConfig) {
    let mut rooms: Vec<Room> = Vec::new();
    let mut pending: PendingRecords = Vec::new();
    let mut scratch = Scratch::default();
    let mut tick_no: u64 = 0;
    let period = TICK.as_nanos() as u64;
    let mut next = monotonic_ns() + period;
    loop {
        if rooms.is_empty() {
            // Nothing to mix: wait for a command instead of ticking (waking now and then to
            // let pending commands expire).
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(cmd) => handle(cmd, &mut rooms, &mut pending, cfg),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
            expire(&mut pending, Instant::now());
            next = monotonic_ns() + period;
            continue;
        }
        sleep_until(next);
        let woke = monotonic_ns();
        TICK_STATS
            .lateness
            .record(Duration::from_nanos(woke.saturating_sub(next)));
        for _ in 0..QUEUE {
            match rx.try_recv() {
                Ok(cmd) => handle(cmd, &mut rooms, &mut pending, cfg),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    for room in rooms.drain(..) {
                        room.members.into_iter().for_each(hand_back);
                    }
                    return;
                }
            }
        }
        let now = Instant::now();
        if !pending.is_empty() {
            expire(&mut pending, now);
        }
        for room in &mut rooms {
            tick_room(room, now, tick_no, &mut scratch);
        }
        tick_no += 1;
        let done = monotonic_ns();
        TICK_STATS.duration.record(Duration::from_nanos(done - woke));
        let (deadline, skipped) = after_tick(next + period, done, period);
        if skipped > 0 {
            TICK_STATS.overruns.fetch_add(skipped, Ordering::Relaxed);
        } else if deadline < done {
            TICK_STATS.catch_ups.fetch_add(1, Ordering::Relaxed);
        }
        next = deadline;
    }
}

fn find(rooms: &mut [Room], call: u64) -> Option<(&mut Room, usize)> {
    rooms
        .iter_mut()
        .find_map(|r| r.index.get(&call).copied().map(|i| (r, i)))
}

fn end_playback(m: &mut Member) {
    if let Some((_, what)) = m.playback.take() {
        (m.seat.reports)(MemberReport::PlaybackDone { what, ok: true });
    }
}

/// Passes on what a member's stream found (digits pressed, digits sent).
fn forward_events(seat: &mut Seat) {
    while let Some(e) = seat.stream.poll_event() {
        (seat.reports)(MemberReport::Stream(e));
    }
}

fn handle(cmd: Command, rooms: &mut Vec<Room>, pending: &mut PendingRecords, cfg: MixerConfig) {
    // A command for a room or call not here yet waits for it.
    let known = match target(&cmd) {
        Some(Target::Room(room)) => rooms.iter().any(|r| &*r.name == room),
        Some(Target::Call(call)) => rooms.iter().any(|r| r.index.contains_key(&call)),
        None => true,
    };
    if !known {
        pending.push((cmd, Instant::now() + PENDING_FOR));
        return;
    }
    let joined = match &cmd {
        Command::Join { room, seat, .. } => Some((room.clone(), seat.call)),
        _ => None,
    };
    apply(cmd, rooms, cfg);
    // What waited for this room or this call now applies, in order.
    if let Some((room, call)) = joined {
        expire(pending, Instant::now());
        let ready: Vec<Command> = pending
            .extract_if(.., |(c, _)| match target(c) {
                Some(Target::Room(r)) => r == &*room,
                Some(Target::Call(c)) => c == call,
                None => false,
            })
            .map(|(c, _)| c)
            .collect();
        for c in ready {
            apply(c, rooms, cfg);
        }
    }
}

fn apply(cmd: Command, rooms: &mut Vec<Room>, cfg: MixerConfig) {
    match cmd {
        Command::Join {
            room,
            seat,
            opts,
            waiting,
        } => {
            TICK_STATS.joins.fetch_add(1, Ordering::Relaxed);
            let ri = match rooms.iter().position(|r| r.name == room) {
                Some(i) => i,
                None => {
                    let mut r = Room::new(&room, cfg);
                    r.set_waiting(waiting);
                    rooms.push(r);
                    TICK_STATS.rooms.fetch_add(1, Ordering::Relaxed);
                    rooms.len() - 1
                }
            };
            rooms[ri].join(seat, opts);
        }
        Command::Record {
            room,
            path,
            on_done,
            notice,
        } => {
            if let Some(r) = rooms.iter_mut().find(|r| r.name == room) {
                r.record(path, on_done);
                // Everyone hears that the room is being recorded.
                if let Some(pcm) = notice {
                    r.playback = Some(PromptPlayer::new(r.at_room_rate(pcm)));
                }
            }
        }
        Command::PauseRecording { room, paused } => {
            if let Some(rec) = rooms
                .iter_mut()
                .find(|r| r.name == room)
                .and_then(|r| r.recorder.as_mut())
            {
                rec.paused = paused;
            }
        }
        Command::StopRecording { room } => {
            if let Some(r) = rooms.iter_mut().find(|r| r.name == room) {
                r.stop_recording();
            }
        }
        Command::Waiting { room, waiting } => {
            if let Some(r) = rooms.iter_mut().find(|r| r.name == room) {
                r.set_waiting(waiting);
            }
        }
        Command::Leave { call } => {
            let Some(ri) = rooms.iter().position(|r| r.index.contains_key(&call)) else {
                return;
            };
            let r = &mut rooms[ri];
            let i = r.index[&call];
            let mut m = r.members.remove(i);
            r.mixer.remove(call);
            r.reindex();
            TICK_STATS.members.fetch_sub(1, Ordering::Relaxed);
            end_playback(&mut m);
            hand_back(m);
            if r.members.is_empty() {
                rooms.remove(ri);
                TICK_STATS.rooms.fetch_sub(1, Ordering::Relaxed);
            } else {
                r.retune();
            }
        }
        Command::Media { call, media } => {
            if let Some((r, i)) = find(rooms, call) {
                let m = &mut r.members[i];
                let old_rate = m.seat.stream.pcm_rate();
                m.seat.stream.set_media(media);
                m.seat.stream.set_opus_rate(r.cfg.rate, Some(r.cfg.opus_complexity));
                m.held = m.seat.stream.held();
                if m.seat.stream.pcm_rate() != old_rate {
                    let room_rate = r.rate();
                    r.members[i].fit_resamplers(room_rate);
                }
                r.apply(i);
                r.retune();
            }
        }
        Command::Change { call, change } => {
            if let Some((r, i)) = find(rooms, call) {
                let m = &mut r.members[i];
                match change {
                    MemberChange::Muted(v) => m.muted = v,
                    MemberChange::Deaf(v) => m.deaf = v,
                    MemberChange::ListenGain(g) => {
                        r.mixer.set(call, |o| o.listen_gain = g);
                    }
                    MemberChange::TalkGain(g) => {
                        r.mixer.set(call, |o| o.talk_gain = g);
                    }
                }
                r.apply(i);
            }
        }
        Command::PlayTo { call, pcm, what } => {
            if let Some((r, i)) = find(rooms, call) {
                let pcm = r.at_room_rate(pcm);
                let m = &mut r.members[i];
                end_playback(m);
                m.playback = Some((PromptPlayer::new(pcm), what));
            }
        }
        Command::StopTo { call } => {
            if let Some((r, i)) = find(rooms, call) {
                end_playback(&mut r.members[i]);
            }
        }
        Command::PlayRoom { room, pcm } => {
            if let Some(r) = rooms.iter_mut().find(|r| r.name == room) {
                r.playback = Some(PromptPlayer::new(r.at_room_rate(pcm)));
            }
        }
    }
}

/// Gives a member's stream back to its leg, at the leg's Opus rate.
fn hand_back(mut m: Member) {
    m.seat.stream.set_opus_rate(48_000, None);
    let _ = m.seat.give_back.send(m.seat.stream);
}

/// Resamples one frame to exactly `want` samples (the first frames of a resampler come out
/// short by its filter delay: padded with silence).
fn convert(r: &mut Resampler, input: &[i16], out: &mut Vec<i16>, want: usize) {
    out.clear();
    r.process(input, out);
    out.resize(want, 0);
}

fn tick_room(room: &mut Room, now: Instant, tick_no: u64, s: &mut Scratch) {
    // A member whose leg is gone (its call ended and the Leave was lost) is dropped; looked
    // for every tenth tick (an atomic load per member, 1% of a tick when done every tick).
    if tick_no.is_multiple_of(10) && room.members.iter().any(|m| m.seat.give_back.is_closed()) {
        let gone: Vec<u64> = room
            .members
            .iter()
            .filter(|m| m.seat.give_back.is_closed())
            .map(|m| m.call)
            .collect();
        room.members.retain(|m| !m.seat.give_back.is_closed());
        for call in gone {
            room.mixer.remove(call);
            TICK_STATS.members.fetch_sub(1, Ordering::Relaxed);
        }
        room.reindex();
        room.retune();
    }
    let room_frame = room.mixer.config().frame_len();
    let mut buf = [0u8; 2048];
    let (mut decodes, mut skipped) = (0u64, 0u64);
    // 1. Receive and play out one frame per member.
    for (i, m) in room.members.iter_mut().enumerate() {
        let st = &mut m.seat.stream;
        // Everything waiting, in one system call (a burst beyond a batch waits a tick).
        for k in 0..s.batch.recv(&m.seat.rtp) {
            if let Some((bytes, from)) = s.batch.get(k) {
                st.on_rtp(now, from, bytes);
            }
        }
        // RTCP is read and sent every RTCP_EVERY ticks, staggered over the members (its
        // reports are seconds apart: a read per member every tenth tick was 150 system
        // calls a tick at 1,500 members, nearly all finding nothing).
        if (tick_no + i as u64).is_multiple_of(RTCP_EVERY) {
            while let Ok((n, from)) = m.seat.rtcp.recv_from(&mut buf) {
                st.on_rtcp(now, from, &buf[..n]);
            }
            room.peer_loss = room.peer_loss.max(st.peer_loss_percent());
            st.poll_rtcp(now, &m.seat.rtcp);
            // Reported once it gets through (the gateway hangs the call up).
            if !m.timed_out && now.duration_since(st.last_packet()) > m.seat.rtp_timeout {
                m.timed_out = (m.seat.reports)(MemberReport::TimedOut);
            }
        }
        // A member who is not talking may not need decoding at all (Opus packets flagged as
        // no speech); a quiet frame from them is silence to the mixer: it is not resampled or
        // pushed (most members, most of the time).
        let talking = room.mixer.is_talking(m.call);
        // Quiet members' checks are staggered over the members, like the RTCP work.
        let quiet = (!talking && room.mixer.config().skip_quiet_opus)
            .then(|| (tick_no + i as u64).is_multiple_of(stream::QUIET_CHECK_EVERY));
        let pulled = st.pull_for_mix(now, quiet);
        forward_events(&mut m.seat);
        let st = &mut m.seat.stream;
        match pulled {
            Pull::Decoded => decodes += 1,
            Pull::Skipped => skipped += 1,
            Pull::Nothing => {}
        }
        let pushed = pulled == Pull::Decoded && !m.held && (talking || room.mixer.is_loud(st.pcm()));
        if pushed {
            // After frames that were not resampled (quiet), the resampler's history is old
            // audio (the end of the last talk spurt): start it afresh rather than join them.
            if !m.pushed_last_tick {
                m.to_room.restart();
            }
            convert(&mut m.to_room, st.pcm(), &mut s.room_pcm, room_frame);
            room.mixer.push(m.call, &s.room_pcm);
        }
        m.pushed_last_tick = pushed;
    }
    TICK_STATS.decodes.fetch_add(decodes, Ordering::Relaxed);
    TICK_STATS.decodes_skipped.fetch_add(skipped, Ordering::Relaxed);
    room.decodes_skipped += skipped;
    // Shared encoders spend FEC on the worst loss their room's members reported in the last
    // second (a shared payload cannot be tuned per receiver).
    if tick_no.is_multiple_of(50) {
        if room.peer_loss != room.shared_loss {
            for e in &mut room.shared {
                e.enc.set_expected_loss(room.peer_loss);
            }
            room.shared_loss = room.peer_loss;
        }
        room.peer_loss = 0;
    }
    // 2. Mix.
    room.mixer.mix();
    for c in room.mixer.talk_changes() {
        if let Some(&i) = room.index.get(&c.member) {
            let m = &room.members[i];
            (m.seat.reports)(MemberReport::Talking(c.talking));
        }
    }
    // A tone or prompt for the whole room (join and leave tones) goes over every mix.
    s.room_tone.clear();
    if let Some(p) = room.playback.as_mut()
        && !p.next_frame(room_frame, &mut s.room_tone)
    {
        room.playback = None;
    }
    // The recording: the mix without those who opted out, with the room's tones and prompts.
    if let Some(rec) = room.recorder.as_mut()
        && !rec.paused
    {
        s.mixed.clear();
        s.mixed.extend_from_slice(room.mixer.record_frame());
        for (o, t) in s.mixed.iter_mut().zip(&s.room_tone) {
            *o = o.saturating_add(*t);
        }
        match room.record_up.as_mut() {
            Some(up) => {
                convert(up, &s.mixed, &mut s.codec_pcm, room.cfg.frame_len());
                rec.push(&s.codec_pcm);
            }
            None => rec.push(&s.mixed),
        }
    }
    // While the room waits for a moderator, everyone hears the same music instead.
    let mut music = std::mem::take(&mut s.music);
    music.clear();
    if let Some(p) = room.waiting.as_mut()
        && !p.next_frame(room_frame, &mut music)
    {
        // The loop ended: start it again.
        room.set_waiting(true);
    }
    let waiting = room.waiting.is_some();
    let encodes_before = room.encodes;
    let mut sends = 0u64;
    // 3. Encode once per group and send.
    let Room {
        mixer,
        members,
        index,
        shared,
        encodes,
        shared_loss,
        ..
    } = room;
    for g in mixer.groups() {
        let frame = if waiting { &music[..] } else { mixer.frame(g) };
        s.mixed.clear();
        s.mixed.extend_from_slice(frame);
        for (o, t) in s.mixed.iter_mut().zip(&s.room_tone) {
            *o = o.saturating_add(*t);
        }
        // The group's shared encoding is made on first use this tick.
        let mut encoded: Option<usize> = None;
        // Whether the group's frame is loud (worked out on first need).
        let mut loud: Option<bool> = None;
        for id in &g.members {
            let Some(&i) = index.get(id) else { continue };
            let m = &mut members[i];
            let Some(codec) = m.seat.stream.codec() else { continue };
            let want = m.seat.stream.frame_samples();
            // A member who stops talking moves from its own encoder to the group's shared
            // one. With a codec that keeps state (G.722's ADPCM predictors, Opus) the far
            // end's decoder is in step with the own encoder, and the shared stream throws it
            // off for ~100 ms (16 dB SNR in its first frame, 46 dB from the seventh: `g722` tests): so
            // the change waits for a quiet frame of the mix, where that error is inaudible.
            let hand_over_later = g.is_shared()
                && !waiting
                && m.own_last_tick
                && !matches!(codec, Codec::Pcmu | Codec::Pcma)
                && m.handover_ticks < HANDOVER_MAX_TICKS
                && *loud.get_or_insert_with(|| mixer.is_loud(&s.mixed));
            if m.playback.is_some() || (!g.is_shared() && !waiting) || hand_over_later {
                // Only ticks spent waiting for the quiet moment count (not those of a prompt).
                if !hand_over_later {
                    m.handover_ticks = 0;
                } else if m.playback.is_none() {
                    m.handover_ticks += 1;
                }
                m.own_last_tick = true;
                // Heard alone: this member's own encoder (and its prompt over the room).
                let mut own = std::mem::take(&mut s.codec_pcm);
                if let Some((p, _)) = m.playback.as_mut() {
                    let mut prompt = std::mem::take(&mut s.room_pcm);
                    prompt.clear();
                    let more = p.next_frame(room_frame, &mut prompt);
                    for (o, p) in s.mixed.iter().zip(prompt.iter_mut()) {
                        *p = p.saturating_add(*o);
                    }
                    convert(&mut m.from_room, &prompt, &mut own, want);
                    s.room_pcm = prompt;
                    if !more {
                        end_playback(m);
                    }
                } else {
                    convert(&mut m.from_room, &s.mixed, &mut own, want);
                }
                m.seat.stream.send_pcm(now, &own, &m.seat.rtp);
                s.codec_pcm = own;
                *encodes += 1;
                sends += 1;
                continue;
            }
            if encoded.is_none() {
                let gain = g.listen_gain();
                let ei = match shared.iter().position(|e| e.codec == codec && e.listen_gain == gain) {
                    Some(ei) => ei,
                    None => {
                        let rate = rate_in_room(codec, mixer.config().rate);
                        let Some(mut enc) = encoder(codec, rate, Some(mixer.config().opus_complexity)) else {
                            continue;
                        };
                        enc.set_expected_loss(*shared_loss);
                        shared.push(SharedEncoder {
                            codec,
                            listen_gain: gain,
                            from_room: Resampler::new(mixer.config().rate, rate),
                            enc,
                            payload: Vec::with_capacity(1500),
                            tick: u64::MAX,
                        });
                        shared.len() - 1
                    }
                };
                let e = &mut shared[ei];
                if e.tick != tick_no {
                    convert(&mut e.from_room, &s.mixed, &mut s.codec_pcm, want);
                    e.payload.clear();
                    e.enc.encode(&s.codec_pcm, &mut e.payload);
                    e.tick = tick_no;
                    *encodes += 1;
                }
                encoded = Some(ei);
            }
            let Some(ei) = encoded else { continue };
            m.own_last_tick = false;
            m.handover_ticks = 0;
            m.seat.stream.send_payload(now, &shared[ei].payload, &m.seat.rtp);
            sends += 1;
        }
    }
    // Deaf members hear nothing from the room, but still get RTP (silence, or a prompt to
    // them): carriers hang up calls whose media stops.
    for m in members.iter_mut().filter(|m| m.deaf && !m.held) {
        let want = m.seat.stream.frame_samples();
        s.mixed.clear();
        s.mixed.resize(room_frame, 0);
        if let Some((p, _)) = m.playback.as_mut() {
            s.mixed.clear();
            if !p.next_frame(room_frame, &mut s.mixed) {
                end_playback(m);
            }
        }
        convert(&mut m.from_room, &s.mixed, &mut s.codec_pcm, want);
        let pcm = std::mem::take(&mut s.codec_pcm);
        m.own_last_tick = true;
        m.seat.stream.send_pcm(now, &pcm, &m.seat.rtp);
        s.codec_pcm = pcm;
        *encodes += 1;
        sends += 1;
    }
    s.music = music;
    // Shared counters are touched once per room tick, not per packet.
    TICK_STATS
        .encodes
        .fetch_add(*encodes - encodes_before, Ordering::Relaxed);
    TICK_STATS.sends.fetch_add(sends, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::g711::{G711Encoder, Law};
    use crate::media::session::Direction;
    use crate::media::stream::{MediaStream, StreamStart};
    use crate::rtp::packet;

    #[test]
    fn a_slow_tick_is_caught_up_on_and_a_thread_far_behind_skips_to_the_present() {
        const P: u64 = 20_000_000;
        // On time: the next deadline stands.
        assert_eq!(after_tick(2 * P, 2 * P - 5, P), (2 * P, 0));
        // A tick that ran 5 ms past the next deadline: that tick runs at once, late.
        assert_eq!(after_tick(2 * P, 2 * P + 5_000_000, P), (2 * P, 0));
        // Three deadlines passed: still caught up on, back to back.
        assert_eq!(after_tick(2 * P, 4 * P + 1, P), (2 * P, 0));
        // Four passed: the thread is overloaded; it skips them and waits for the fifth.
        assert_eq!(after_tick(2 * P, 5 * P + 1, P), (6 * P, 4));
        // Simulated ticks in virtual time: one tick of 50 ms among 12 ms ticks loses no
        // tick (each deadline still gets its tick), and the schedule is back on time after.
        let mut next = P;
        let mut ticks = Vec::new();
        for n in 0..10u64 {
            let start = next.max(ticks.last().map_or(0, |&(_, end): &(u64, u64)| end));
            let end = start + if n == 3 { 50_000_000 } else { 12_000_000 };
            ticks.push((start, end));
            let (deadline, skipped) = after_tick(next + P, end, P);
            assert_eq!(skipped, 0, "tick {n}");
            next = deadline;
        }
        assert_eq!(next, 11 * P, "every deadline had its tick");
        let (last_start, _) = ticks[9];
        assert_eq!(last_start, 10 * P, "back on time after catching up");
    }

    /// A member's far end: the socket it sends from and receives the mix on.
    struct Phone {
        sock: UdpSocket,
        to: std::net::SocketAddr,
        seq: u16,
        /// The leg's end of the stream's way back (a member whose leg is gone is dropped).
        _back: oneshot::Receiver<Box<MediaStream>>,
    }

    fn member(room: &mut Room, call: u64, codec: Codec, now: Instant) -> Phone {
        let gw = UdpSocket::bind("127.0.0.1:0").unwrap();
        gw.set_nonblocking(true).unwrap();
        let rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
        rtcp.set_nonblocking(true).unwrap();
        let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
        phone.set_nonblocking(true).unwrap();
        let media = NegotiatedMedia {
            remote_rtp: Some(phone.local_addr().unwrap()),
            codec,
            payload_type: match codec {
                Codec::Pcmu => 0,
                Codec::Pcma => 8,
                Codec::G722 => 9,
                Codec::Opus => 111,
            },
            telephone_event: None,
            ptime_ms: 20,
            direction: Direction::SendRecv,
            fmtp: None,
        };
        let to = gw.local_addr().unwrap();
        let start = StreamStart {
            id: call,
            local_port: to.port(),
            now,
            ntp: 0,
            seed: call,
        };
        let stream = MediaStream::new(start, Some(media));
        let (give_back, back) = oneshot::channel();
        let seat = Seat {
            call,
            stream: Box::new(stream),
            rtp: gw,
            rtcp,
            give_back,
            reports: Box::new(|_| true),
            rtp_timeout: Duration::from_secs(60),
        };
        room.join(Box::new(seat), MemberOptions::default());
        Phone {
            sock: phone,
            to,
            seq: 0,
            _back: back,
        }
    }

    impl Phone {
        /// Sends tick `tick`'s 20 ms of a tone (`rate` Hz PCM, RTP clock 8000 as for G.711
        /// and G.722), encoded with `enc`, as payload type `pt`.
        #[allow(clippy::too_many_arguments)]
        fn send_tone(&mut self, enc: &mut dyn Encoder, pt: u8, tick: u64, rate: u32, freq: f64, amp: f64, ssrc: u32) {
            let n = rate as usize / 50;
            let pcm: Vec<i16> = (0..n)
                .map(|k| {
                    let t = (tick as usize * n + k) as f64 / rate as f64;
                    (amp * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16
                })
                .collect();
            let mut payload = Vec::new();
            enc.encode(&pcm, &mut payload);
            let mut pkt = Vec::new();
            packet::build(&mut pkt, pt, tick == 0, self.seq, tick as u32 * 160, ssrc, &payload);
            self.seq += 1;
            self.sock.send_to(&pkt, self.to).unwrap();
        }
    }

    /// Received RTP payloads, oldest first.
    fn drain(p: &Phone) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 2048];
        let mut out = Vec::new();
        while let Ok(n) = p.sock.recv(&mut buf) {
            out.push(packet::parse(&buf[..n]).unwrap().payload.to_vec());
        }
        out
    }

    #[test]
    fn listeners_of_one_codec_share_one_encoding_and_talkers_get_their_own() {
        let cfg = MixerConfig::default();
        let mut room = Room::new("r", cfg);
        let start = Instant::now();
        // Three talkers and five listeners on PCMU, two listeners on Opus.
        let mut phones: Vec<Phone> = (0..8).map(|i| member(&mut room, i, Codec::Pcmu, start)).collect();
        phones.extend((8..10).map(|i| member(&mut room, i, Codec::Opus, start)));
        let mut enc = G711Encoder::new(Law::Ulaw);
        let mut scratch = Scratch::default();
        let mut per_tick = Vec::new();
        for tick in 0..30u64 {
            let now = start + TICK * tick as u32;
            for (i, p) in phones.iter_mut().take(3).enumerate() {
                p.send_tone(
                    &mut enc,
                    0,
                    tick,
                    8000,
                    400.0 + 300.0 * i as f64,
                    8000.0,
                    1000 + i as u32,
                );
            }
            std::thread::sleep(Duration::from_millis(1));
            let before = room.encodes();
            room.tick(now, tick, &mut scratch);
            per_tick.push(room.encodes() - before);
        }
        // Once the jitter buffers play out and the talkers are detected: 3 own encodings, one
        // shared PCMU encoding, one shared Opus encoding.
        assert_eq!(per_tick[20..], [5; 10], "{per_tick:?}");
        // Listeners of one codec received the same payloads; talkers did not.
        let heard: Vec<Vec<Vec<u8>>> = phones.iter().map(drain).collect();
        assert!(
            heard.iter().all(|h| h.len() >= 20),
            "{:?}",
            heard.iter().map(|h| h.len()).collect::<Vec<_>>()
        );
        let last = |i: usize| heard[i][heard[i].len() - 1].clone();
        for i in 4..8 {
            assert_eq!(last(3), last(i), "PCMU listeners {i} and 3 share a payload");
        }
        assert_eq!(last(8), last(9), "Opus listeners share a payload");
        assert_ne!(last(0), last(1));
        assert_ne!(last(0), last(3));
    }

    #[test]
    fn a_g722_member_who_stops_talking_joins_the_shared_encoding_in_a_quiet_moment() {
        use crate::media::codec::g722::G722Encoder;
        let mut room = Room::new("r", MixerConfig::default());
        let start = Instant::now();
        let mut phones: Vec<Phone> = (0..3).map(|i| member(&mut room, i, Codec::G722, start)).collect();
        let mut encoders: Vec<G722Encoder> = (0..3).map(|_| G722Encoder::default()).collect();
        let mut scratch = Scratch::default();
        let mut per_tick = Vec::new();
        // Member 0 talks until tick 40, member 1 until tick 80, member 2 never.
        let talks = |i: usize, tick: u64| (i == 0 && tick < 40) || (i == 1 && tick < 80);
        for tick in 0..130u64 {
            let now = start + TICK * tick as u32;
            for (i, p) in phones.iter_mut().enumerate() {
                let amp = if talks(i, tick) { 8000.0 } else { 0.0 };
                let freq = 400.0 + 300.0 * i as f64;
                p.send_tone(&mut encoders[i], 9, tick, 16_000, freq, amp, 2000 + i as u32);
            }
            std::thread::sleep(Duration::from_millis(1));
            let before = room.encodes();
            room.tick(now, tick, &mut scratch);
            per_tick.push(room.encodes() - before);
        }
        // Both talking: each its own mix, member 2 the shared one.
        assert_eq!(per_tick[25..35], [3; 10], "{per_tick:?}");
        // Member 0 has stopped (hangover over) while member 1 talks on: the mix member 0
        // hears is loud, so it keeps its own encoder rather than jump to the shared stream.
        assert_eq!(per_tick[65..75], [3; 10], "{per_tick:?}");
        // Nobody talks: everyone on the one shared encoding.
        assert_eq!(per_tick[115..], [1; 15], "{per_tick:?}");
        let heard: Vec<Vec<Vec<u8>>> = phones.iter().map(drain).collect();
        let last = |i: usize| heard[i][heard[i].len() - 1].clone();
        assert_eq!(last(0), last(2));
        assert_eq!(last(1), last(2));
    }

    #[test]
    fn a_room_of_g711_callers_mixes_at_8_khz_until_a_wideband_member_joins() {
        use crate::media::analysis::tone_power;
        use crate::media::codec::Decoder;
        use crate::media::codec::g711::G711Decoder;
        use crate::media::codec::g722::{G722Decoder, G722Encoder};
        let cfg = MixerConfig::default();
        assert_eq!(cfg.rate, 16_000);
        let mut rooms = vec![Room::new("r", cfg)];
        let start = Instant::now();
        let mut phones: Vec<Phone> = (0..2).map(|i| member(&mut rooms[0], i, Codec::Pcmu, start)).collect();
        assert_eq!(rooms[0].rate(), 8000, "only narrowband members: no resampling at all");
        let mut ulaw = [G711Encoder::new(Law::Ulaw), G711Encoder::new(Law::Ulaw)];
        let mut wide = G722Encoder::default();
        let mut scratch = Scratch::default();
        let tones = [500.0, 1100.0, 1700.0];
        let mut run = |rooms: &mut Vec<Room>, phones: &mut Vec<Phone>, ticks: std::ops::Range<u64>| {
            for tick in ticks {
                for (i, p) in phones.iter_mut().enumerate() {
                    match i {
                        2 => p.send_tone(&mut wide, 9, tick, 16_000, tones[2], 8000.0, 3002),
                        _ => p.send_tone(&mut ulaw[i], 0, tick, 8000, tones[i], 8000.0, 3000 + i as u32),
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
                rooms[0].tick(start + TICK * tick as u32, tick, &mut scratch);
            }
        };
        // What a phone heard in its last 10 frames, decoded; the power of each tone in it.
        let heard = |p: &Phone, dec: &mut dyn Decoder, rate: u32| -> Vec<f64> {
            let mut pcm = Vec::new();
            for payload in drain(p) {
                dec.decode(&payload, &mut pcm);
            }
            let tail = &pcm[pcm.len() - 10 * rate as usize / 50..];
            tones.iter().map(|&f| tone_power(tail, f, rate)).collect()
        };
        run(&mut rooms, &mut phones, 0..30);
        let p1 = heard(&phones[1], &mut G711Decoder::new(Law::Ulaw), 8000);
        assert!(p1[0] > 100.0 * p1[1], "caller 1 hears caller 0, not itself: {p1:?}");
        // A G.722 caller joins: the room mixes at 16 kHz from now on.
        phones.push(member(&mut rooms[0], 2, Codec::G722, start + TICK * 30));
        assert_eq!(rooms[0].rate(), 16_000);
        run(&mut rooms, &mut phones, 30..60);
        let p1 = heard(&phones[1], &mut G711Decoder::new(Law::Ulaw), 8000);
        assert!(p1[0] > 100.0 * p1[1], "{p1:?}");
        let p2 = heard(&phones[2], &mut G722Decoder::default(), 16_000);
        assert!(
            p2[0] > 100.0 * p2[2] && p2[1] > 100.0 * p2[2],
            "the G.722 caller hears both others, not itself: {p2:?}"
        );
        // Caller 1 hears the wideband caller too (below its 4 kHz band: 1700 Hz passes).
        assert!(p1[2] > 100.0 * p1[1], "{p1:?}");
        // It leaves: back to 8 kHz, and the two still hear each other.
        apply(Command::Leave { call: 2 }, &mut rooms, cfg);
        assert_eq!(rooms[0].rate(), 8000);
        phones.pop();
        run(&mut rooms, &mut phones, 60..90);
        let p0 = heard(&phones[0], &mut G711Decoder::new(Law::Ulaw), 8000);
        assert!(p0[1] > 100.0 * p0[0], "{p0:?}");
    }

    #[test]
    fn quiet_opus_members_are_not_decoded_and_a_tone_their_vad_calls_inactive_is_still_heard() {
        use crate::media::codec::opus::{OpusDecoder, OpusEncoder};
        use crate::media::codec::opus_packet::{Activity, activity};
        use crate::media::codec::{Decoder, Encoder};
        let mut room = Room::new("r", MixerConfig::default());
        let start = Instant::now();
        // 0 sends a steady 700 Hz tone, 1 near-silence, 2 listens.
        let mut phones: Vec<Phone> = (0..3).map(|i| member(&mut room, i, Codec::Opus, start)).collect();
        let encode = |signal: &dyn Fn(usize) -> i16| -> Vec<Vec<u8>> {
            let mut enc = OpusEncoder::new(16_000).unwrap();
            (0..200)
                .map(|f| {
                    let pcm: Vec<i16> = (0..320).map(|k| signal(f * 320 + k)).collect();
                    let mut out = Vec::new();
                    enc.encode(&pcm, &mut out);
                    out
                })
                .collect()
        };
        let tone = encode(&|n| (6000.0 * (2.0 * std::f64::consts::PI * 700.0 * n as f64 / 16_000.0).sin()) as i16);
        let quiet = encode(&|n| ((n * 7919) % 41) as i16 - 20);
        // libopus's VAD adapts to a steady tone and calls it inactive after about a second:
        // from then on the tone's packets say "no speech".
        let tone = &tone[100..];
        let quiet = &quiet[100..];
        assert!(tone.iter().chain(quiet).all(|p| activity(p) == Activity::Inactive));
        let mut scratch = Scratch::default();
        let mut pkt = Vec::new();
        for tick in 0..100u64 {
            for (i, frames) in [tone, quiet].iter().enumerate() {
                let p = &mut phones[i];
                packet::build(
                    &mut pkt,
                    111,
                    tick == 0,
                    p.seq,
                    tick as u32 * 960,
                    50 + i as u32,
                    &frames[tick as usize],
                );
                p.seq += 1;
                p.sock.send_to(&pkt, p.to).unwrap();
            }
            std::thread::sleep(Duration::from_millis(1));
            room.tick(start + TICK * tick as u32, tick, &mut scratch);
        }
        // The quiet member was decoded one frame in QUIET_CHECK_EVERY; the tone's member only
        // until the first check found it loud.
        let skipped = room.decodes_skipped();
        assert!((80..=110).contains(&skipped), "{skipped} frames left undecoded");
        // The listener hears the tone.
        let mut dec = OpusDecoder::new(16_000).unwrap();
        let mut heard = Vec::new();
        for f in drain(&phones[2]) {
            dec.decode(&f, &mut heard);
        }
        let tail = &heard[heard.len() - 16_000..];
        let p700 = crate::media::analysis::tone_power(tail, 700.0, 16_000);
        let p1100 = crate::media::analysis::tone_power(tail, 1100.0, 16_000);
        assert!(p700 > 1000.0 * p1100.max(1.0), "700 Hz {p700} vs 1100 Hz {p1100}");
    }

    #[test]
    fn a_waiting_room_plays_everyone_the_same_music_and_then_the_mix() {
        let mut room = Room::new("r", MixerConfig::default());
        let start = Instant::now();
        let mut phones: Vec<Phone> = (0..2).map(|i| member(&mut room, i, Codec::Pcmu, start)).collect();
        room.set_waiting(true);
        let mut enc = G711Encoder::new(Law::Ulaw);
        let mut scratch = Scratch::default();
        let mut pkt = Vec::new();
        let mut run = |room: &mut Room, phones: &mut [Phone], ticks: std::ops::Range<u64>| {
            for tick in ticks {
                // Member 0 talks (a 1 kHz tone), member 1 is silent.
                let pcm: Vec<i16> = (0..160)
                    .map(|k| (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * k as f64 / 8000.0).sin()) as i16)
                    .collect();
                let mut payload = Vec::new();
                enc.encode(&pcm, &mut payload);
                packet::build(&mut pkt, 0, tick == 0, phones[0].seq, tick as u32 * 160, 7, &payload);
                phones[0].seq += 1;
                phones[0].sock.send_to(&pkt, phones[0].to).unwrap();
                std::thread::sleep(Duration::from_millis(1));
                room.tick(start + TICK * tick as u32, tick, &mut scratch);
            }
        };
        run(&mut room, &mut phones, 0..20);
        let waiting: Vec<Vec<Vec<u8>>> = phones.iter().map(drain).collect();
        // Both hear the same frames (one encoding), and they are music, not silence.
        assert_eq!(waiting[0].last(), waiting[1].last());
        let decode = |frames: &[Vec<u8>]| -> Vec<i16> {
            let mut dec = crate::media::codec::g711::G711Decoder::new(Law::Ulaw);
            let mut out = Vec::new();
            for f in frames {
                crate::media::codec::Decoder::decode(&mut dec, f, &mut out);
            }
            out
        };
        let music = decode(&waiting[1][10..]);
        let energy = music.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / music.len() as f64;
        assert!(energy > 1e5, "music, not silence: {energy}");
        let tone_while_waiting = crate::media::analysis::tone_power(&music, 1000.0, 8000);
        room.set_waiting(false);
        run(&mut room, &mut phones, 20..40);
        let live: Vec<Vec<Vec<u8>>> = phones.iter().map(drain).collect();
        let heard = decode(&live[1][10..]);
        let tone_live = crate::media::analysis::tone_power(&heard, 1000.0, 8000);
        assert!(
            tone_live > 100.0 * tone_while_waiting.max(1.0),
            "the talker is heard once the room is live: {tone_live} vs {tone_while_waiting}"
        );
    }

    #[test]
    fn commands_sent_before_the_member_arrives_wait_for_it() {
        // The registry acts before the call's leg hands its stream over: a recording (with
        // its notice) and a mute for the joining call must not be lost.
        let cfg = MixerConfig::default();
        let mut rooms = Vec::new();
        let mut pending = PendingRecords::new();
        let dir = std::env::temp_dir().join(format!("tolk-pending-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let notice: Arc<[i16]> = (0..16_000)
            .map(|k| (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * k as f64 / 16_000.0).sin()) as i16)
            .collect();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        handle(
            Command::Record {
                room: Arc::from("r"),
                path: dir.join("r.wav"),
                on_done: Box::new(move |secs, err| {
                    let _ = done_tx.send((secs, err));
                }),
                notice: Some(notice),
            },
            &mut rooms,
            &mut pending,
            cfg,
        );
        handle(
            Command::Change {
                call: 5,
                change: MemberChange::Muted(true),
            },
            &mut rooms,
            &mut pending,
            cfg,
        );
        assert!(rooms.is_empty());
        assert_eq!(pending.len(), 2);
        // The member arrives: the room starts recording, plays the notice, the mute applies.
        let start = Instant::now();
        let mut staging = Room::new("staging", cfg);
        let phone = member(&mut staging, 5, Codec::Pcmu, start);
        let seat = staging.members.pop().unwrap().seat;
        handle(
            Command::Join {
                room: Arc::from("r"),
                seat,
                opts: MemberOptions::default(),
                waiting: false,
            },
            &mut rooms,
            &mut pending,
            cfg,
        );
        assert!(pending.is_empty());
        assert!(rooms[0].recorder.is_some());
        assert!(rooms[0].members[0].muted);
        let mut scratch = Scratch::default();
        for tick in 0..10 {
            rooms[0].tick(start + TICK * tick, tick as u64, &mut scratch);
        }
        let heard: Vec<Vec<u8>> = drain(&phone);
        let mut dec = crate::media::codec::g711::G711Decoder::new(Law::Ulaw);
        let mut pcm = Vec::new();
        for f in &heard {
            crate::media::codec::Decoder::decode(&mut dec, f, &mut pcm);
        }
        let tone = crate::media::analysis::tone_power(&pcm, 1000.0, 8000);
        let off = crate::media::analysis::tone_power(&pcm, 1500.0, 8000);
        assert!(tone > 100.0 * off.max(1.0), "the notice is heard: {tone} vs {off}");
        rooms.clear();
        let (secs, err) = done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(err, None);
        assert!(secs > 0.0);
        let _ = std::fs::remove_dir_all(dir);
    }
}
