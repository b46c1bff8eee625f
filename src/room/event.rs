//! What happens in a room, typed ([`RoomEvent`], [`RoomEventKind`]). Observers read it as JSON
//! on the admin event stream (`/api/v1/rooms/events`: `room`, `call`, `event`, `at`,
//! `detail`, the shape documented in docs/conference.md); the call path files it in the CDRs.

use serde::ser::SerializeStruct;
use uuid::Uuid;

/// Something that happened in a room, at `at` (Unix microseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct RoomEvent {
    pub room: String,
    /// The member's call (absent for room-wide events).
    pub call: Option<u64>,
    pub kind: RoomEventKind,
    pub at: i64,
}

/// The kinds of room events, with what each carries.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomEventKind {
    Joined,
    Left,
    Muted,
    Unmuted,
    Deafened,
    Undeafened,
    Held,
    Resumed,
    Talking,
    Quiet,
    Locked,
    Unlocked,
    /// The room waits for its moderator.
    Waiting,
    /// The room's media starts (its moderator is in, or none is needed).
    Started,
    /// The moderator left a room that ends with them.
    Ended,
    /// An alarm: so many wrong PINs for the room (from all callers together) that its PIN
    /// entry is locked for a while (`room.pin_room_failures`).
    PinGuessing,
    /// A session is a room's life from its first member in to its last out.
    SessionStarted {
        session: Uuid,
    },
    SessionEnded {
        session: Uuid,
        peak_members: usize,
    },
    Recording {
        id: Uuid,
        file: String,
    },
    RecordingPaused {
        id: Uuid,
    },
    RecordingResumed {
        id: Uuid,
    },
    RecordingStopped {
        id: Uuid,
    },
    /// Booths, channels and interpreters of an interpretation room.
    Interpretation(crate::room::interpretation::Event),
    /// The file is finalised (`seconds` of audio) or could not be written (`error`).
    RecordingDone {
        id: Uuid,
        file: String,
        seconds: f64,
        error: Option<String>,
    },
}

impl RoomEventKind {
    /// The event's name on the event stream.
    pub fn name(&self) -> &'static str {
        use RoomEventKind::*;
        match self {
            Joined => "joined",
            Left => "left",
            Muted => "muted",
            Unmuted => "unmuted",
            Deafened => "deafened",
            Undeafened => "undeafened",
            Held => "held",
            Resumed => "resumed",
            Talking => "talking",
            Quiet => "quiet",
            Locked => "locked",
            Unlocked => "unlocked",
            Waiting => "waiting",
            Started => "started",
            Ended => "ended",
            PinGuessing => "pin_guessing",
            SessionStarted { .. } => "session_started",
            SessionEnded { .. } => "session_ended",
            Recording { .. } => "recording",
            RecordingPaused { .. } => "recording_paused",
            RecordingResumed { .. } => "recording_resumed",
            RecordingStopped { .. } => "recording_stopped",
            RecordingDone { .. } => "recording_done",
            Interpretation(e) => e.name(),
        }
    }

    /// What the event carries, as the stream's `detail` object (none for most).
    pub fn detail(&self) -> Option<serde_json::Value> {
        use RoomEventKind::*;
        Some(match self {
            SessionStarted { session } => serde_json::json!({ "session": session }),
            SessionEnded { session, peak_members } => {
                serde_json::json!({ "session": session, "peak_members": peak_members })
            }
            Recording { id, file } => serde_json::json!({ "id": id, "file": file }),
            RecordingPaused { id } | RecordingResumed { id } | RecordingStopped { id } => {
                serde_json::json!({ "id": id })
            }
            RecordingDone {
                id,
                file,
                seconds,
                error,
            } => {
                serde_json::json!({ "id": id, "file": file, "seconds": seconds, "error": error })
            }
            Interpretation(e) => e.detail(),
            _ => return None,
        })
    }
}

impl RoomEvent {
    /// Whether the ledger (the call path, which files sessions, recordings and member
    /// changes in the CDRs) needs it; who is talking is for observers only.
    pub fn for_ledger(&self) -> bool {
        match &self.kind {
            RoomEventKind::Talking | RoomEventKind::Quiet => false,
            RoomEventKind::Interpretation(e) => e.for_ledger(),
            _ => true,
        }
    }

    /// The event's name on the event stream.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }
}

impl serde::Serialize for RoomEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let detail = self.kind.detail();
        let fields = 3 + usize::from(self.call.is_some()) + usize::from(detail.is_some());
        let mut st = s.serialize_struct("RoomEvent", fields)?;
        st.serialize_field("room", &self.room)?;
        if let Some(call) = self.call {
            st.serialize_field("call", &call)?;
        }
        st.serialize_field("event", self.kind.name())?;
        st.serialize_field("at", &self.at)?;
        if let Some(detail) = detail {
            st.serialize_field("detail", &detail)?;
        }
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_shape_is_kept() {
        let id = Uuid::nil();
        let e = RoomEvent {
            room: "demo".into(),
            call: None,
            kind: RoomEventKind::RecordingDone {
                id,
                file: "room-x.wav".into(),
                seconds: 1.5,
                error: None,
            },
            at: 7,
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({
                "room": "demo", "event": "recording_done", "at": 7,
                "detail": { "id": id, "file": "room-x.wav", "seconds": 1.5, "error": null }
            })
        );
        let joined = RoomEvent {
            room: "demo".into(),
            call: Some(3),
            kind: RoomEventKind::Joined,
            at: 8,
        };
        assert_eq!(
            serde_json::to_value(&joined).unwrap(),
            serde_json::json!({ "room": "demo", "call": 3, "event": "joined", "at": 8 })
        );
    }
}
