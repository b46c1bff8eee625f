//! Room events the CDRs keep, filed as they come off the room ledger (`Rooms::ledger`, which
//! drops none): member changes on the member's record, room sessions, room recordings.

use crate::call::Accounting;
use crate::room::{RoomEvent, Rooms};

/// What the CDRs keep of room events, all through the CDR journal (so an outage or a crash
/// loses none): member changes (joins and leaves are written by the flow path) on the
/// member's record; a room session in `room_sessions` (and its room in `rooms`); a room
/// recording in `recordings` (retention of the room's first member's record) and named on
/// every member's record.
pub(super) fn file_room_event(e: &RoomEvent, rooms: &Rooms, accounting: Option<&mut Accounting>) {
    use crate::cdr::model::{CallEventKind, JournalEntry, RecordingRow, RoomSessionRow};
    use crate::room::RoomEventKind as K;
    use crate::sip::dialog::CallRef;
    let Some(a) = accounting else { return };
    match &e.kind {
        K::SessionStarted { session } | K::SessionEnded { session, .. } => {
            let (ended_at, max_members) = match &e.kind {
                K::SessionEnded { peak_members, .. } => {
                    (Some(e.at), Some((*peak_members).min(i32::MAX as usize) as i32))
                }
                _ => (None, None),
            };
            let tenant = e.call.and_then(|c| a.record(CallRef(c))).and_then(|r| r.tenant.clone());
            a.journal(JournalEntry::RoomSession(RoomSessionRow {
                room: e.room.clone(),
                tenant,
                session: *session,
                // The end's entry repeats no start: the upsert keeps the first one's.
                started_at: e.at,
                ended_at,
                max_members,
            }));
        }
        K::Muted | K::Unmuted | K::Held | K::Resumed => {
            let Some(call) = e.call else { return };
            let room = e.room.clone();
            let kind = match e.kind {
                K::Muted => CallEventKind::Muted { room },
                K::Unmuted => CallEventKind::Unmuted { room },
                K::Held => CallEventKind::Held { room },
                K::Resumed => CallEventKind::Resumed { room },
                _ => return,
            };
            a.event(CallRef(call), kind);
        }
        K::Interpretation(ev) => {
            use crate::room::interpretation::Event as I;
            let room = e.room.clone();
            // Named as the room names it now: a report long after still says the language.
            let language = |bus| {
                rooms
                    .interpretation_layout(&room)
                    .and_then(|l| l.language(bus).map(str::to_string))
            };
            let (call, kind) = match *ev {
                I::ChannelChosen { member, hears } => (
                    member,
                    CallEventKind::ChannelChosen {
                        channel: hears.number(),
                        language: language(hears),
                        room,
                    },
                ),
                I::LiveStarted { member, booth } => (
                    member,
                    CallEventKind::InterpreterLive {
                        language: language(crate::room::mixer::Bus::Channel(booth)),
                        booth,
                        room,
                    },
                ),
                I::LiveEnded { member, booth } => (member, CallEventKind::InterpreterOff { room, booth }),
                _ => return,
            };
            a.event(CallRef(call), kind);
        }
        K::Recording { id, file } | K::RecordingDone { id, file, .. } => {
            let room = rooms.get(&e.room);
            let members: Vec<u64> = room
                .as_ref()
                .map(|r| r.members.iter().map(|m| m.call).collect())
                .unwrap_or_default();
            let seconds = match &e.kind {
                K::RecordingDone { seconds, .. } => Some(*seconds),
                _ => None,
            };
            if seconds.is_none() {
                for &call in &members {
                    a.event(
                        CallRef(call),
                        CallEventKind::RoomRecording {
                            id: id.to_string(),
                            room: e.room.clone(),
                            recorded: None,
                        },
                    );
                }
            }
            let first = members.first().and_then(|&c| a.record(CallRef(c)));
            let row = RecordingRow {
                id: *id,
                call_id: None,
                room: Some(e.room.clone()),
                room_session: room.map(|r| r.session),
                path: file.clone(),
                started_at: e.at,
                ended_at: seconds.map(|_| e.at),
                seconds,
                caller_pseudonym: None,
                // A room recording is kept as long as its first member's record; with
                // no member left, for the configured default class.
                retention_class: first
                    .map(|r| r.retention_class.clone())
                    .unwrap_or_else(|| a.default_retention_class().to_string()),
                expires_at: first.and_then(|r| r.expires_at),
            };
            a.journal(JournalEntry::Recording(Box::new(row)));
        }
        _ => {}
    }
}
