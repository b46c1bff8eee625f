//! What a flow asks of its call, and what the call answers: the boundary between the script
//! thread and whatever carries out the verbs (the call task of a real SIP call, or the
//! simulated caller of `tolk flow run`). Verbs in [`super::api`] are built from these
//! primitives, so gather/menu logic is the same for both.

use std::time::Duration;

/// Something to play to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A catalog prompt name (`conf-enter-pin`) or a `.wav` path under the sounds directory.
    Prompt(String),
    /// Text spoken through espeak-ng.
    Say(String),
    /// A tone specification or a named tone (`media::tone`).
    Tone(String),
}

/// A request from the flow to its call. Each is answered once; the flow thread waits.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Answer the call (200 OK with SDP); the media leg starts.
    Answer,
    /// Ring (180) for this long before answering.
    Ring(Duration),
    /// Play, and with `barge_in` stop at the first keypad digit (which stays buffered for the
    /// next [`Request::Collect`]). Digits pressed while playing are always kept (type-ahead).
    Play { source: Source, barge_in: bool },
    /// Collect digits: up to `max`, ending early at one of `terminators`; `first` is how long
    /// to wait for the first digit, `between` for each next one.
    Collect {
        max: usize,
        terminators: String,
        first: Duration,
        between: Duration,
    },
    /// Record what the caller says.
    Record {
        max: Duration,
        beep: bool,
        silence: Duration,
    },
    /// Send the caller's audio back to them (the echo test) for at most `max`.
    Echo { max: Duration },
    /// Join a conference room; answered when the member leaves it.
    JoinConference { room: String, role: String, muted: bool },
    /// Join an interpretation room as `role` (speaker, interpreter, listener, moderator),
    /// hearing `language` first (a channel's number or language; an interpreter's booth is
    /// its PIN's); answered when the member leaves it.
    JoinInterpretation {
        room: String,
        role: String,
        language: Option<String>,
    },
    /// The role `pin` gives in `room`: answered with [`Reply::Role`].
    RoomRole { room: String, pin: String },
    /// Transfer the call (SIP REFER, RFC 3515) to a number or URI.
    Transfer { target: String },
    /// Hang up with this SIP status (before answer) or a BYE (after), Q.850 `cause`.
    Hangup { cause: u16 },
    /// CDR and registry annotations.
    Note(Note),
    /// A line for the call's log (the simulator prints it).
    Log(String),
}

/// What a flow writes into the call's record (and, for opt-outs, the registry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Tag {
        key: String,
        value: String,
    },
    Retention(String),
    OptOut(String),
    Consent(String),
    /// Why the flow ended abnormally (a limit, an error): recorded in the CDR's tags.
    FlowError(String),
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Done,
    Played {
        /// Stopped early by a digit.
        interrupted: bool,
    },
    Digits {
        digits: String,
        /// The terminator that ended the input, if any (not included in `digits`).
        terminator: Option<char>,
        timed_out: bool,
    },
    Recorded {
        id: String,
        seconds: f64,
    },
    /// `moderator`, `participant`, or empty when the PIN opens nothing.
    Role(String),
    /// Left the room: `left` (keypad), `ended` (room closed), `ejected`.
    Left {
        reason: String,
    },
}

/// Why a request was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// The caller hung up (or the call is otherwise gone): the flow ends at once.
    #[error("the caller hung up")]
    HungUp,
    /// The request failed; the script may handle it (a catchable error).
    #[error("{0}")]
    Failed(String),
}

/// Facts about the call a flow may read (`caller()`); never the number in clear.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallInfo {
    /// `+1555010****` or `anonymous`.
    pub masked: String,
    /// HMAC pseudonym (hex), empty for anonymous callers.
    pub pseudonym: String,
    pub anonymous: bool,
    /// The dialled number (E.164) and whether it is toll-free.
    pub dialled: String,
    pub toll_free: bool,
    pub trunk: String,
    pub tenant: String,
}

/// The call as a flow sees it.
pub trait CallPort: Send {
    fn request(&mut self, req: Request) -> Result<Reply, PortError>;
}
