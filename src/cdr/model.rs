//! What a call detail record holds, and the entries of the CDR journal.
//!
//! A call is written more than once: when it is accepted (so a crash mid-call still leaves
//! a record), on answer when that comes later, and at the end. Each write carries a higher
//! `revision`; the database keeps the highest, so replays and out-of-order writes never move a
//! record backwards and never duplicate it (the id is stable).

use crate::number::DialledKind;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::clock::{Micros, now_micros};

/// How a call ended, as admins read it in reports (documented in `docs/cdr.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Still going (or the gateway died before it ended: see `Interrupted`).
    InProgress,
    /// Answered and ended normally by either side.
    Answered,
    /// The caller hung up before we answered.
    Abandoned,
    /// We refused it (unknown number, no capacity, no common codec...): see `sip_status`.
    Rejected,
    /// Answered, then ended by a failure: no ACK, session timer expiry, dialog lost, no RTP.
    Failed,
    /// The gateway stopped (crash or kill) while the call was up; `ended_at` is the last time
    /// the gateway was known alive.
    Interrupted,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::InProgress => "in_progress",
            Disposition::Answered => "answered",
            Disposition::Abandoned => "abandoned",
            Disposition::Rejected => "rejected",
            Disposition::Failed => "failed",
            Disposition::Interrupted => "interrupted",
        }
    }
}

/// Which side ended the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupBy {
    Caller,
    Gateway,
}

impl HangupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            HangupBy::Caller => "caller",
            HangupBy::Gateway => "gateway",
        }
    }
}

/// The caller's identity as a record may hold it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallerIdentity {
    /// HMAC-SHA256 pseudonym (hex) of the E.164 number; `None` for anonymous callers.
    pub pseudonym: Option<String>,
    /// `+1800555****`: safe to show to admins.
    pub masked: Option<String>,
    /// The number in clear, only when the retention class allows and the caller has not
    /// opted out of retention.
    pub number: Option<String>,
    /// The caller withheld their identity (RFC 3323 `Privacy: id`) or sent none.
    pub anonymous: bool,
}

/// Media quality over the call (from the leg's RTP/RTCP statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub packets_received: u32,
    pub packets_lost: i32,
    pub jitter_ms: f64,
    /// The E-model MOS; `None` when nothing was received to judge (a call without RTP).
    pub mos: Option<f64>,
    pub rtt_ms: Option<f64>,
}

/// One call leg's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub id: Uuid,
    /// Which write this is; the database keeps the highest.
    pub revision: i16,
    /// The gateway instance that owns the call (crash recovery closes only its own calls).
    pub node: String,
    pub tenant: Option<String>,
    pub trunk: Option<String>,
    /// `inbound` (from a trunk) or `outbound`.
    pub direction: String,
    pub caller: CallerIdentity,
    pub dialled: String,
    pub dialled_kind: DialledKind,
    pub sip_call_id: String,
    pub started_at: Micros,
    pub answered_at: Option<Micros>,
    pub ended_at: Option<Micros>,
    pub disposition: Disposition,
    pub sip_status: Option<i16>,
    /// ITU-T Q.850 cause (RFC 3398 mapping from the SIP status).
    pub q850_cause: Option<i16>,
    pub hangup_by: Option<HangupBy>,
    pub codec: Option<String>,
    pub quality: Option<Quality>,
    pub flow: Option<String>,
    pub room: Option<String>,
    pub room_session: Option<Uuid>,
    pub role: Option<String>,
    pub language: Option<String>,
    pub recording_id: Option<Uuid>,
    /// Consent state (`{"record": false}`...).
    pub consent: serde_json::Value,
    pub tags: serde_json::Value,
    pub retention_class: String,
    pub expires_at: Option<Micros>,
}

impl CallRecord {
    /// Wall time from start to end (ring time included).
    pub fn duration_ms(&self) -> Option<i64> {
        self.ended_at.map(|e| (e - self.started_at).max(0) / 1000)
    }

    /// Billable time: from answer to end, never ring time.
    pub fn billable_ms(&self) -> Option<i64> {
        match (self.answered_at, self.ended_at) {
            (Some(a), Some(e)) => Some((e - a).max(0) / 1000),
            (None, Some(_)) => Some(0),
            _ => None,
        }
    }
}

/// A timeline entry of a call (joined a room, muted, opted out...), as journalled and as
/// stored in `call_events`: `kind` is a [`CallEventKind::name`], `detail` its
/// [`CallEventKind::detail`]. Made by [`CallEvent::new`] from a typed kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallEvent {
    pub id: Uuid,
    pub call_id: Uuid,
    pub at: Micros,
    pub kind: String,
    pub detail: serde_json::Value,
}

impl CallEvent {
    pub fn new(call_id: Uuid, at: Micros, kind: &CallEventKind) -> CallEvent {
        CallEvent {
            id: Uuid::now_v7(),
            call_id,
            at,
            kind: kind.name().to_string(),
            detail: kind.detail(),
        }
    }
}

/// What can happen on a call's timeline. Numbers in here are masked already; PINs and
/// digits never appear.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEventKind {
    /// The flow transferred the call (REFER) to `to` (masked).
    Transfer {
        to: String,
    },
    /// The caller opted out of `scope` (`source`: who recorded the choice, e.g. "flow").
    OptOut {
        scope: String,
        source: &'static str,
    },
    /// The caller undid an opt-out of `scope` themselves (`source`: "keypad").
    Consent {
        scope: String,
        source: &'static str,
    },
    /// The flow spoke text-to-speech to the call from `file` in the TTS cache (erasure
    /// removes it: the spoken text may be personal).
    Spoken {
        file: String,
    },
    /// The call recorded itself (`record` verb) into `file` under the recordings directory.
    Recording {
        id: String,
        file: String,
    },
    /// The call joined a room as `role`.
    JoinedRoom {
        room: String,
        role: String,
        muted: bool,
    },
    /// The call left its room (`reason`: hung up, ejected, left by key...).
    LeftRoom {
        room: String,
        reason: String,
    },
    /// The call was in a room while it was recorded; `recorded` is None when not known
    /// (the recording started after the join), Some(false) when the caller's opt-out kept
    /// them out of it.
    RoomRecording {
        id: String,
        room: String,
        recorded: Option<bool>,
    },
    /// Member changes in a room.
    Muted {
        room: String,
    },
    Unmuted {
        room: String,
    },
    Held {
        room: String,
    },
    Resumed {
        room: String,
    },
    /// In an interpretation room: the member now hears `channel` (0: the floor). Listener
    /// minutes per language are the spans between these (and the join and leave).
    ChannelChosen {
        room: String,
        channel: u8,
        /// The channel's language as the room named it then (rooms.toml can change later).
        language: Option<String>,
    },
    /// An interpreter's microphone went live in `booth`, or off again: the live minutes
    /// interpreters are paid by.
    InterpreterLive {
        room: String,
        booth: u8,
        /// The booth's language as the room named it then.
        language: Option<String>,
    },
    InterpreterOff {
        room: String,
        booth: u8,
    },
}

impl CallEventKind {
    /// The `kind` column's value of a call's own recording (erasure looks for it).
    pub const RECORDING: &'static str = "recording";
    /// The `kind` of a text-to-speech file spoken to the call (erasure looks for it).
    pub const SPOKEN: &'static str = "spoken";
    /// The `kind` of a room recording the call was in (erasure looks for it).
    pub const ROOM_RECORDING: &'static str = "room_recording";

    /// The `kind` column's value.
    pub fn name(&self) -> &'static str {
        use CallEventKind::*;
        match self {
            Transfer { .. } => "transfer",
            OptOut { .. } => "opt_out",
            Consent { .. } => "consent",
            Spoken { .. } => Self::SPOKEN,
            Recording { .. } => Self::RECORDING,
            JoinedRoom { .. } => "joined_room",
            LeftRoom { .. } => "left_room",
            RoomRecording { .. } => Self::ROOM_RECORDING,
            Muted { .. } => "muted",
            Unmuted { .. } => "unmuted",
            Held { .. } => "held",
            Resumed { .. } => "resumed",
            ChannelChosen { .. } => "channel_chosen",
            InterpreterLive { .. } => "interpreter_live",
            InterpreterOff { .. } => "interpreter_off",
        }
    }

    /// The `detail` column's value (the JSON shape reports and erasure read).
    pub fn detail(&self) -> serde_json::Value {
        use CallEventKind::*;
        use serde_json::json;
        match self {
            Transfer { to } => json!({ "to": to }),
            OptOut { scope, source } | Consent { scope, source } => json!({ "scope": scope, "source": source }),
            Spoken { file } => json!({ "file": file }),
            Recording { id, file } => json!({ "id": id, "file": file }),
            JoinedRoom { room, role, muted } => json!({ "room": room, "role": role, "muted": muted }),
            LeftRoom { room, reason } => json!({ "room": room, "reason": reason }),
            RoomRecording {
                id,
                room,
                recorded: Some(recorded),
            } => json!({ "id": id, "room": room, "recorded": recorded }),
            RoomRecording {
                id,
                room,
                recorded: None,
            } => json!({ "id": id, "room": room }),
            Muted { room } | Unmuted { room } | Held { room } | Resumed { room } => json!({ "room": room }),
            ChannelChosen {
                room,
                channel,
                language,
            } => {
                json!({ "room": room, "channel": channel, "language": language })
            }
            InterpreterLive { room, booth, language } => json!({ "room": room, "booth": booth, "language": language }),
            InterpreterOff { room, booth } => json!({ "room": room, "booth": booth }),
        }
    }
}

/// A room session's row (and its room's), journalled when the session starts (`ended_at`
/// None) and again when it ends. Applied as an upsert keyed by `session`, so a replay never
/// duplicates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomSessionRow {
    pub room: String,
    pub tenant: Option<String>,
    pub session: Uuid,
    pub started_at: Micros,
    pub ended_at: Option<Micros>,
    /// The most members it had at once (known when it ends).
    pub max_members: Option<i32>,
}

/// A recording's row in `recordings`: a call's (`call_id`, with the caller's pseudonym so
/// erasure finds it) or a room's (`room`, `room_session`). Journalled when the file is
/// opened and again when it is finalised (`seconds`); an upsert keyed by `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingRow {
    pub id: Uuid,
    pub call_id: Option<Uuid>,
    pub room: Option<String>,
    pub room_session: Option<Uuid>,
    /// The file name under the recordings directory.
    pub path: String,
    pub started_at: Micros,
    pub ended_at: Option<Micros>,
    pub seconds: Option<f64>,
    pub caller_pseudonym: Option<String>,
    pub retention_class: String,
    pub expires_at: Option<Micros>,
}

impl RecordingRow {
    /// "ogg" or "wav", from the file name.
    pub fn format(&self) -> &'static str {
        crate::config::RecordFormat::from_path(std::path::Path::new(&self.path)).extension()
    }
}

/// An erasure request kept in the journal until PostgreSQL can carry it out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedErasure {
    pub pseudonym: String,
    /// The configuration's, when it was asked (`action`, `room_recordings`).
    #[serde(flatten)]
    pub policy: super::erasure::ErasurePolicy,
    pub requested_by: String,
    pub requested_at: Micros,
}

/// What the journal holds, applied to the database in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum JournalEntry {
    Call(Box<CallRecord>),
    Event(CallEvent),
    RoomSession(RoomSessionRow),
    Recording(Box<RecordingRow>),
    /// An erasure asked for while PostgreSQL was unreachable: carried out by the writer, in
    /// order, when it is back (`cdr::erasure`).
    Erasure(Box<QueuedErasure>),
    /// Calls of `node` started before `started_before` and still in progress were cut off by a
    /// crash: close them as interrupted at `alive_at` (the last time the node was alive).
    CloseInterrupted {
        node: String,
        started_before: Micros,
        alive_at: Micros,
    },
}

/// Q.850 cause for a final SIP status (RFC 3398 §8.2.6.1, with the common additions for
/// normal clearing).
pub fn q850_for_status(status: u16) -> i16 {
    match status {
        200..=299 => 16,
        400 | 401 | 402 | 403 | 407 | 603 => 21,
        404 | 485 | 604 => 1,
        405 | 406 | 501 => 79,
        408 | 504 => 102,
        410 => 22,
        413 | 414 | 416 | 420 | 421 | 488 | 606 => 127,
        480 => 18,
        484 => 28,
        486 | 600 => 17,
        487 => 16,
        500 | 580 => 41,
        502 => 38,
        503 => 41,
        _ => 31,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn billable_time_starts_at_answer() {
        let mut r = sample();
        r.started_at = 1_000_000;
        r.answered_at = Some(4_000_000);
        r.ended_at = Some(64_000_000);
        assert_eq!(r.duration_ms(), Some(63_000));
        assert_eq!(r.billable_ms(), Some(60_000));
        r.answered_at = None;
        assert_eq!(r.billable_ms(), Some(0));
        r.ended_at = None;
        assert_eq!(r.billable_ms(), None);
    }

    /// Reports and erasure read `kind` and `detail` as stored: the typed kinds keep the
    /// names and JSON shapes the rows had when they were built by hand.
    #[test]
    fn call_event_kinds_keep_their_stored_names_and_shapes() {
        use serde_json::json;
        let cases = [
            (
                CallEventKind::Transfer {
                    to: "+4420****89".into(),
                },
                "transfer",
                json!({"to": "+4420****89"}),
            ),
            (
                CallEventKind::OptOut {
                    scope: "recording".into(),
                    source: "flow",
                },
                "opt_out",
                json!({"scope": "recording", "source": "flow"}),
            ),
            (
                CallEventKind::Recording {
                    id: "r1".into(),
                    file: "calls/r1.wav".into(),
                },
                CallEventKind::RECORDING,
                json!({"id": "r1", "file": "calls/r1.wav"}),
            ),
            (
                CallEventKind::JoinedRoom {
                    room: "sales".into(),
                    role: "participant".into(),
                    muted: true,
                },
                "joined_room",
                json!({"room": "sales", "role": "participant", "muted": true}),
            ),
            (
                CallEventKind::LeftRoom {
                    room: "sales".into(),
                    reason: "hangup".into(),
                },
                "left_room",
                json!({"room": "sales", "reason": "hangup"}),
            ),
            (
                CallEventKind::RoomRecording {
                    id: "r2".into(),
                    room: "sales".into(),
                    recorded: Some(false),
                },
                "room_recording",
                json!({"id": "r2", "room": "sales", "recorded": false}),
            ),
            (
                CallEventKind::RoomRecording {
                    id: "r2".into(),
                    room: "sales".into(),
                    recorded: None,
                },
                "room_recording",
                json!({"id": "r2", "room": "sales"}),
            ),
            (CallEventKind::Muted { room: "a".into() }, "muted", json!({"room": "a"})),
            (
                CallEventKind::Unmuted { room: "a".into() },
                "unmuted",
                json!({"room": "a"}),
            ),
            (CallEventKind::Held { room: "a".into() }, "held", json!({"room": "a"})),
            (
                CallEventKind::Resumed { room: "a".into() },
                "resumed",
                json!({"room": "a"}),
            ),
        ];
        for (kind, name, detail) in cases {
            let event = CallEvent::new(Uuid::nil(), 7, &kind);
            assert_eq!(event.kind, name, "{kind:?}");
            assert_eq!(event.detail, detail, "{kind:?}");
            assert_eq!(event.at, 7);
        }
    }

    #[test]
    fn journal_entries_round_trip_through_json() {
        let e = JournalEntry::Call(Box::new(sample()));
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<JournalEntry>(&s).unwrap(), e);
    }

    #[test]
    fn causes_follow_rfc_3398() {
        assert_eq!(q850_for_status(404), 1);
        assert_eq!(q850_for_status(486), 17);
        assert_eq!(q850_for_status(200), 16);
        assert_eq!(q850_for_status(503), 41);
    }

    pub(crate) fn sample() -> CallRecord {
        CallRecord {
            id: Uuid::now_v7(),
            revision: 1,
            node: "n1".into(),
            tenant: Some("demo".into()),
            trunk: None,
            direction: "inbound".into(),
            caller: CallerIdentity {
                pseudonym: Some("ab".into()),
                masked: Some("+1555010****".into()),
                number: None,
                anonymous: false,
            },
            dialled: "+18005550100".into(),
            dialled_kind: DialledKind::TollFree,
            sip_call_id: "abc@host".into(),
            started_at: 1_700_000_000_000_000,
            answered_at: None,
            ended_at: None,
            disposition: Disposition::InProgress,
            sip_status: None,
            q850_cause: None,
            hangup_by: None,
            codec: Some("PCMU".into()),
            quality: None,
            flow: None,
            room: None,
            room_session: None,
            role: None,
            language: None,
            recording_id: None,
            consent: serde_json::json!({}),
            tags: serde_json::json!({"k": "v"}),
            retention_class: "standard".into(),
            expires_at: None,
        }
    }
}
