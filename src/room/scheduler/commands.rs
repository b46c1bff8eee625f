//! What reaches a mixer thread ([`Command`], a call's [`Seat`]) and what a room tells a
//! member's call ([`MemberReport`]).

use super::*;

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
    /// Where the member talks and what it hears (interpretation rooms).
    Place(crate::room::interpretation::Placement),
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
        on_done: crate::room::recording::OnDone,
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
    /// Several members' placements at once, between two ticks (a hand-over swaps two
    /// microphones with no frame of both and none of neither). A member not here yet gets
    /// its placement when it arrives.
    Place {
        room: Arc<str>,
        placements: Vec<(u64, crate::room::interpretation::Placement)>,
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
